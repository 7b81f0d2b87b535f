"""A bounded, preallocated queue of node events waiting to go upstream.

The anomaly checks (``phasenode.checks``), the relay controller's drained
events and the secure session's own notes (a forged or replayed frame) all end
up as kind-5 event messages (docs/protocol.md section 3; codes are
``phasecore.msg.EVENT_NAMES``). They are produced in the sampling loop and
sent much later (an RS-485 poll, a LoRa uplink), so they wait here.

The one thing to know: the queue never grows. Its ``size`` slots are
allocated once; when it is full the oldest event is dropped and counted in
``dropped`` (an alarm that cannot be sent is still visible as the status bits
of the next reading). ``add`` allocates nothing, so the checks can call it
from the steady loop.

Public: ``EventQueue``.
"""

from phasecore.errors import quote
from phasenode.compat import const

__all__ = ("EventQueue",)

_DEFAULT_SIZE = const(16)


class EventQueue:
    """``EventQueue(size=16)``: ``add(code, value, value2)``, ``pop() -> (code, value, value2)`` or None."""

    def __init__(self, size=_DEFAULT_SIZE):
        if not isinstance(size, int) or size < 1:
            raise ValueError("event queue size must be a positive int, got %s" % (quote(size),))
        self.size = size
        self._code = [0] * size
        self._a = [0] * size
        self._b = [0] * size
        self._head = 0  # index of the oldest event
        self._n = 0
        self.added = 0
        self.dropped = 0

    def __len__(self):
        return self._n

    def add(self, code, value=0, value2=0):
        """Queue an event (``code`` 1..65535, two int arguments); drops the oldest when full."""
        size = self.size
        if self._n == size:
            self._head = (self._head + 1) % size
            self._n -= 1
            self.dropped += 1
        i = (self._head + self._n) % size
        self._code[i] = code
        self._a[i] = value
        self._b[i] = value2
        self._n += 1
        self.added += 1

    def peek(self):
        """The oldest event as ``(code, value, value2)`` without removing it, or None."""
        if not self._n:
            return None
        h = self._head
        return (self._code[h], self._a[h], self._b[h])

    def pop(self):
        """Remove and return the oldest event as ``(code, value, value2)``, or None when empty."""
        ev = self.peek()
        if ev is not None:
            self._head = (self._head + 1) % self.size
            self._n -= 1
        return ev

    def clear(self):
        self._head = 0
        self._n = 0

    def __repr__(self):
        return "EventQueue(%d/%d, dropped=%d)" % (self._n, self.size, self.dropped)
