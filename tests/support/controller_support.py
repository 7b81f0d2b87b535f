"""What the controller's tests over real frames share: a clock they drive, a journal they read, a stuck node.

Used by tests/gateway/test_controller.py and test_bus_attacker.py (CPython only: the
controller runs on the Pi).
"""

from phasecore import msg
from phasekit.sim.bus_nodes import SimNode

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
