"""What the controller's tests over real frames share: a clock they drive, a journal they read, a stuck node.

Used by tests/gateway/test_controller.py and test_bus_attacker.py (CPython only: the
controller runs on the Pi).
"""

import asyncio

from phasecore import balancer, msg
from phasegate.bus import Bus, SerialLine
from phasegate.controller import Controller
from phasegate.registry import Registry
from phasekit.sim.bus_nodes import SimBus, SimNode

SITE_KEY = bytes(range(32))  # synthetic


class StepClock:
    """Monotonic and wall time that move only when the test says so."""

    def __init__(self, t=1000.0):
        self.t = t

    def monotonic(self):
        return self.t

    def wall(self):
        return 1_700_000_000 + self.t


class ListJournal:
    """Collects what the controller journals (phasegate.journal.Journal is tested against the store)."""

    def __init__(self):
        self.items = []

    def received(self, m, t):
        self.items.append((msg.KIND_NAMES[m.kind], m.addr, m.seq, m.body))

    def command(self, fields, ack, t):
        self.items.append(("command", fields, ack))

    def pi_ack(self, fields, ack, t):
        self.items.append(("pi_ack", fields, ack))

    def pi_event(self, addr, code, value, alarm, t):
        self.items.append(("pi_event", addr, code, value, alarm))

    def summary(self, fields, t):
        self.items.append(("summary", fields))

    def of(self, kind):
        """Every item of ``kind`` ("pi_event", "command", "reading", ...)."""
        return [i for i in self.items if i[0] == kind]

    def events(self, code):
        """The Pi's events of ``code``: ("pi_event", addr, code, value, alarm)."""
        return [i for i in self.of("pi_event") if i[2] == code]


class StuckNode(SimNode):
    """Acknowledges a MOVE as done but its relay never takes: it stays on its phase."""

    def answer_command(self, payload):
        before = self.phase
        out = super().answer_command(payload)
        self.phase = before
        return out


def balancer_config():
    """The balancer both test files drive: moves at once, two a round, three a day."""
    return balancer.Config(
        moves_per_round=2,
        min_dwell_s=0,
        moves_per_day=3,
        persist_rounds=1,
        warmup_s=0,
        min_gain_a=0.5,
        min_gain_frac=0.01,
        min_move_gain_a=0.1,
        budget_gain_a=0.1,
    )


def run_site(tmp_path, nodes, body, timeout_s, **controller_kw):
    """Nodes on a pty bus, a registry, a controller on a ``StepClock``; returns ``body(ctl, bus, clock, journal, sim)``.

    ``controller_kw`` go to ``Controller`` beside ``journal``, ``clock`` and ``verify_s=30``.
    """

    async def main():
        with SimBus(nodes, baud=115200) as sim:
            addrs = [n.addr for n in nodes]
            bus = Bus(SerialLine(sim.port, 115200), addrs, reply_timeout_s=0.1, retries=1, poll_period_s=10)
            reg = Registry(SITE_KEY, addrs, tmp_path / "pi-seq.txt", tmp_path / "registry.json")
            clock = StepClock()
            journal = ListJournal()
            ctl = Controller(
                reg,
                balancer.Balancer(balancer_config()),
                {"bus": bus},
                journal=journal,
                clock=clock,
                verify_s=30,
                **controller_kw,
            )
            async with bus:
                return await body(ctl, bus, clock, journal, sim)

    return asyncio.run(asyncio.wait_for(main(), timeout_s))


async def poll(ctl, bus, clock, seconds=10):
    """``seconds`` pass, then one poll round whose replies go to the controller."""
    clock.t += seconds
    for addr, reply in await bus.poll_round():
        ctl.on_reply(addr, reply)
