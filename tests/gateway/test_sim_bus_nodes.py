"""The simulated RS-485 nodes answer the Pi's heartbeat as the firmware does, so a heartbeat round costs no timeouts.

The firmware on a bus UART answers a sealed Pi heartbeat with a sealed
heartbeat of its own (``phasenode.session``, ``answer_heartbeats``). A
stand-in that stayed silent made every controller heartbeat round cost
``reply_timeout x (retries + 1)`` per node: 12 s at 100 nodes, overrunning a
10 s polling period every 5 minutes (seen in phasekit bench gateway-cpu).
"""

import asyncio

from phasecore import balancer, msg
from phasegate.bus import Bus, SerialLine
from phasegate.controller import Controller
from phasegate.registry import Registry
from phasekit.sim.bus_nodes import SimBus, SimNode

SITE_KEY = bytes(range(32))  # synthetic test key (docs/security.md section 7)


def _registry(tmp_path, addrs):
    return Registry(SITE_KEY, addrs, tmp_path / "pi-seq.txt", tmp_path / "registry.json")


def test_a_node_on_the_bus_answers_a_pi_heartbeat_with_its_own_sealed_heartbeat(tmp_path):
    node = SimNode(4, SITE_KEY, phase=msg.PHASE_C)
    reg = _registry(tmp_path, [4])

    async def main():
        with SimBus([node]) as sim:
            bus = Bus(SerialLine(sim.port, 115200), [4], reply_timeout_s=0.05, retries=1)
            async with bus:
                hb = reg.seal(4, msg.HEARTBEAT, {"uptime_s": 5, "fw": "phasegate", "time_s": 1700000000})
                reply = await bus.request(4, hb)
                return reply, bus.stats[4]

    reply, st = asyncio.run(main())
    assert reply is not None and st.timeouts == 0 and st.retries == 0
    m = reg.receive(4, reply.frame.payload, reply.t)
    assert m is not None and m.kind == msg.HEARTBEAT
    assert m.body["phase"] == msg.PHASE_C and m.body["fw"] == "phasekit-sim"
    assert node.heartbeats == 1 and node.command_errors == 0


def test_off_the_bus_a_node_leaves_a_pi_heartbeat_unanswered_as_class_a_firmware_does(tmp_path):
    node = SimNode(4, SITE_KEY)
    reg = _registry(tmp_path, [4])
    hb = reg.seal(4, msg.HEARTBEAT, {"uptime_s": 5, "fw": "phasegate", "time_s": 1700000000})
    assert node.answer_command(hb) is None and node.heartbeats == 0


def test_the_controllers_heartbeat_round_gets_every_nodes_heartbeat_without_a_timeout(tmp_path):
    nodes = [SimNode(a, SITE_KEY, phase=a % 3) for a in range(1, 21)]
    addrs = [n.addr for n in nodes]
    reg = _registry(tmp_path, addrs)
    got = []

    class Journal:
        def received(self, m, t):
            got.append(m)

        def pi_event(self, *a):
            pass

    async def main():
        with SimBus(nodes) as sim:
            bus = Bus(SerialLine(sim.port, 115200), addrs, reply_timeout_s=0.05, retries=1)
            async with bus:
                ctl = Controller(
                    reg, balancer.Balancer(balancer.Config(), capacity=20), {"bus": bus}, journal=Journal()
                )
                for addr, r in await bus.poll_round():  # a reading each: the nodes are online
                    ctl.on_reply(addr, r)
                loop = asyncio.get_running_loop()
                reg.update(loop.time())
                got.clear()
                t0 = loop.time()
                await ctl.heartbeat_round()
                return loop.time() - t0, bus.stats

    took, stats = asyncio.run(main())
    assert sorted(m.addr for m in got if m.kind == msg.HEARTBEAT) == addrs
    assert all(stats[a].timeouts == 0 for a in addrs)
    assert took < 20 * 0.05  # one exchange per node, not a timeout each
