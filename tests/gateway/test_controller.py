"""The control loop against real frames: a bus master on a pty, sealed nodes on the far end.

Time is the one thing the tests drive (``StepClock``); everything else is the
real stack: phasegate.bus over pyserial, the registry opening and sealing with
phasecore, the balancer planning, the nodes answering with sealed readings and
acks (phasekit.sim.bus_nodes).
"""

import asyncio

from controller_support import SITE_KEY, StepClock, StuckNode, balancer_config, run_site
from controller_support import poll as _poll

from phasecore import balancer, msg
from phasegate.controller import EV_MOVE_FAILED, EV_MOVE_VERIFIED, Controller, meter_components
from phasegate.meter import ThreePhaseReading
from phasegate.registry import Registry
from phasekit.sim.bus_nodes import SimNode


def _site(tmp_path, nodes, body, meter=None):
    return run_site(tmp_path, nodes, body, 60, meter=meter, summary_period_s=120)


def _unbalanced_nodes(cls=SimNode):
    # Six houses all on phase A: 30 A on A, nothing on B and C.
    return [cls(a, SITE_KEY, phase=msg.PHASE_A, current_mA=5000) for a in range(1, 7)]


def test_unbalanced_site_gets_moves_that_are_acknowledged_and_verified(tmp_path):
    async def body(ctl, bus, clock, journal, sim):
        for _ in range(3):
            await _poll(ctl, bus, clock)
        await ctl.balance_round()
        assert ctl.stats["moves_planned"] == 2 and ctl.stats["moves_done"] == 2
        assert len(ctl.pending) == 2
        moved = sorted(ctl.pending)
        await _poll(ctl, bus, clock)
        assert ctl.pending == {}
        assert ctl.stats["moves_verified"] == 2
        phases = {n.addr: n.phase for n in sim.nodes.values()}
        assert {phases[a] for a in moved} == {msg.PHASE_B, msg.PHASE_C}
        verified = [i for i in journal.of("pi_event") if i[2] == EV_MOVE_VERIFIED]
        assert sorted(i[1] for i in verified) == moved
        # Every command the nodes opened was a MOVE that named the phase the node was on.
        cmds = [c for n in sim.nodes.values() for c in n.commands if c["op"] == msg.OP_MOVE]
        assert len(cmds) == 2 and all(c["expect_phase"] == msg.PHASE_A for c in cmds)
        assert all(c["deadline_s"] > clock.wall() for c in cmds)

    _site(tmp_path, _unbalanced_nodes(), body)


def test_a_move_that_does_not_take_suspends_the_node_and_raises_an_alarm(tmp_path):
    async def body(ctl, bus, clock, journal, sim):
        for _ in range(3):
            await _poll(ctl, bus, clock)
        await ctl.balance_round()
        stuck = sorted(ctl.pending)
        assert len(stuck) == 2
        for _ in range(4):  # readings keep saying phase A past verify_s
            await _poll(ctl, bus, clock)
        assert ctl.stats["moves_failed"] == 2 and ctl.pending == {}
        assert sorted(ctl.suspended) == stuck
        failed = [i for i in journal.of("pi_event") if i[2] == EV_MOVE_FAILED]
        assert sorted(i[1] for i in failed) == stuck
        # A suspended node is not planned again while it is suspended.
        before = ctl.stats["moves_planned"]
        await ctl.balance_round()
        planned_again = [c for a in stuck for c in sim.nodes[a].commands if c["op"] == msg.OP_MOVE]
        assert len(planned_again) == 2  # only the first command each
        assert ctl.stats["moves_planned"] - before <= 2

    _site(tmp_path, _unbalanced_nodes(StuckNode), body)


def test_balanced_site_is_left_alone_and_summarised(tmp_path):
    nodes = [SimNode(a, SITE_KEY, phase=(a - 1) % 3, current_mA=5000) for a in range(1, 7)]

    async def body(ctl, bus, clock, journal, sim):
        for i in range(20):
            await _poll(ctl, bus, clock)
            if i % 6 == 5:
                await ctl.balance_round()
        assert ctl.stats["moves_planned"] == 0
        assert all(not n.commands or all(c["op"] != msg.OP_MOVE for c in n.commands) for n in sim.nodes.values())
        summaries = journal.of("summary")
        assert summaries, "a summary per summary_period_s"
        s = summaries[-1][1]
        assert s["nodes"] == [6, 0, 0, 0]
        assert s["cuf_pm"] < 50 and s["flags"] & 1  # no transformer meter on this site
        msg.encode(msg.SUMMARY, s)  # the schema accepts it as it is

    _site(tmp_path, nodes, body)


def test_silent_node_goes_offline_and_is_never_commanded(tmp_path):
    nodes = _unbalanced_nodes()
    nodes[0].mode = "silent"

    async def body(ctl, bus, clock, journal, sim):
        for _ in range(40):  # 400 s: past offline_after_s (300 s)
            await _poll(ctl, bus, clock)
        await ctl.balance_round()
        assert ctl.registry.nodes[1].liveness == "offline"
        assert sim.nodes[1].commands == []

    _site(tmp_path, nodes, body)


class _Meter:
    def __init__(self, reading=None, error=None):
        self.reading, self.error = reading, error

    async def read(self):
        if self.error:
            raise self.error
        return self.reading


def test_meter_failure_is_an_event_and_the_round_goes_on(tmp_path):
    from phasegate.meter import MeterError

    async def body(ctl, bus, clock, journal, sim):
        for _ in range(3):
            await _poll(ctl, bus, clock)
        await ctl.balance_round()
        assert ctl.stats["meter_failures"] == 1
        assert ctl.stats["moves_planned"] == 2  # balanced on node readings alone

    _site(tmp_path, _unbalanced_nodes(), body, meter=_Meter(error=MeterError("no answer")))


def test_meter_components_use_power_when_the_meter_gives_it():
    r = ThreePhaseReading((230.0, 230.0, 230.0), (10.0, 20.0, 5.0), powers=(2185.0, -4600.0, 1150.0))
    pa, qa, pb, qb, pc, qc = meter_components(r)
    assert abs(pa - 9.5) < 1e-9 and abs(qa - (100 - 90.25) ** 0.5) < 1e-9
    assert abs(pb + 20.0) < 1e-9 and qb == 0.0  # export
    assert abs(pc - 5.0) < 1e-9 and qc == 0.0
    r = ThreePhaseReading((230.0, 230.0, 230.0), (10.0, 10.0, 10.0), pfs=(0.8, 0.8, 0.8))
    pa, qa = meter_components(r)[:2]
    assert abs(pa - 8.0) < 1e-9 and abs(qa - 6.0) < 1e-9


def test_a_nodes_heartbeat_sets_the_limits_it_is_held_to(tmp_path):
    from phasegate.registry import Incoming

    async def body(ctl, bus, clock, journal, sim):
        await _poll(ctl, bus, clock)
        assert ctl.balancer.switch_kind(1) == balancer.MECHANICAL  # until it says: the stricter limits
        hb = msg.decode(msg.HEARTBEAT, msg.encode(msg.HEARTBEAT, {"uptime_s": 5, "fw": "phasenode", "switch": 1}))
        ctl._handle(Incoming(1, msg.HEARTBEAT, 9, hb, clock.t), clock.t)
        assert ctl.balancer.switch_kind(1) == balancer.SOLID_STATE
        assert ctl.balancer.switch_kind(2) == balancer.MECHANICAL

    _site(tmp_path, _unbalanced_nodes(), body)


def test_a_reply_whose_handling_fails_is_counted_and_polling_goes_on(tmp_path):
    # A real failure: the buffer cannot be written (an SD card remounted read-only) while readings
    # arrive. Each failed reply is counted; the next round is polled and, once the store is back, buffered.
    from phasegate.journal import Journal
    from phasegate.store import Store

    nodes = [SimNode(a, SITE_KEY, phase=msg.PHASE_A, current_mA=1000) for a in (1, 2)]

    async def body(ctl, bus, clock, journal, sim):
        store = Store(tmp_path / "buf.db")
        ctl.journal = Journal(store, ctl.registry)
        store._db.execute("PRAGMA query_only = ON")
        await _poll(ctl, bus, clock)
        failed = ctl.stats["message_failures"]
        store._db.execute("PRAGMA query_only = OFF")
        await _poll(ctl, bus, clock)
        store.close()
        return failed, ctl.stats["readings"]

    failed, readings = _site(tmp_path, nodes, body)
    assert failed == 2 and readings == 4


def test_run_ends_quietly_when_a_link_task_is_cancelled_from_outside(tmp_path):
    class CancelledLink:
        async def run(self, stop, on_reply):
            raise asyncio.CancelledError  # as when the task running it is cancelled by its owner

        async def request(self, addr, payload):
            return None

    async def main():
        reg = Registry(SITE_KEY, [1], tmp_path / "pi-seq.txt", tmp_path / "registry.json")
        ctl = Controller(reg, balancer.Balancer(balancer_config()), {"bus": CancelledLink()}, clock=StepClock())
        await asyncio.wait_for(ctl.run(asyncio.Event()), 10)  # raised CancelledError before the fix
        return True

    assert asyncio.run(main())


def test_a_rebooted_node_gets_its_boot_nonce_echoed_before_the_command(tmp_path):
    # The node (as the firmware) refuses commands NO_TIME until a Pi heartbeat echoes its boot
    # nonce; the controller's heartbeat before a command learns the nonce and echoes it at once.
    nodes = [SimNode(1, SITE_KEY, phase=msg.PHASE_A, current_mA=5000, freshness=True)]

    async def body(ctl, bus, clock, journal, sim):
        await _poll(ctl, bus, clock)
        ok = await ctl.move(1, msg.PHASE_A, msg.PHASE_B)
        return ok, nodes[0].boot_nonce, ctl.registry.nodes[1].boot_nonce, nodes[0].phase

    ok, left, learned, phase = _site(tmp_path, nodes, body)
    assert ok and left is None and learned is not None and phase == msg.PHASE_B
