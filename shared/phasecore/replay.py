"""Sequence numbers that never repeat, and replay windows that refuse old ones.

AES-CCM is broken outright if a (key, nonce) pair is ever used twice, and the
nonce is built from the sender's sequence number (docs/protocol.md section 2,
as OSCORE, RFC 8613 section 5.2). So the sender side must never hand out a
number twice, across reboots and power cuts, and the receiver side must refuse
a number it has already accepted (RFC 8613 section 7.4; the sliding window of
RFC 4303 section 3.4.3).

Public names:

- ``SequenceCounter(load, save, block=256)``: a sender's counter, persisted in
  reserved blocks so flash is written once per ``block`` messages;
- ``ReplayWindow(width=32)``: one sender's sliding window, a bitmask;
  ``check(seq)`` does not change it, ``accept(seq)`` does. The seal layer
  calls ``check`` before and ``accept`` only after the tag verifies, so a
  forged message cannot move the window;
- ``ReplayTable(max_senders, width=32)``: windows per sender id, bounded;
- ``PIV_MAX``: 2**40 - 1, the largest Partial IV (5 bytes on the wire).

Integer size on the ESP32: MicroPython's small ints there are 31-bit, so a
sequence number above 2**30 - 1 is a heap-allocated long int and every
``+ 1`` on it allocates a few dozen bytes. Nothing breaks (the long-int path
is exact and tested up to ``PIV_MAX``); it only costs an allocation per send.
A node sending once a minute reaches 2**30 after two thousand years. The
window's bitmask, 32 bits wide by default, is a long int on the ESP32 for the
same reason; the windows live mostly on the transformer Pi (CPython).
"""

from phasecore.errors import PhasecoreError, ReplayError, SequenceExhaustedError, quote

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = ("PIV_MAX", "SequenceCounter", "ReplayWindow", "ReplayTable")

# The Partial IV is at most 5 bytes (docs/protocol.md section 2; RFC 8613 section 5).
# Not const(): it is a long int on the ESP32 (31-bit small ints).
PIV_MAX = 0xFFFFFFFFFF
DEFAULT_BLOCK = const(256)
DEFAULT_WIDTH = const(32)


def _check_seq(seq):
    if not isinstance(seq, int) or not 0 <= seq <= PIV_MAX:
        raise ReplayError("sequence number %s outside 0..PIV_MAX" % (quote(seq),))


class SequenceCounter:
    """A sender's sequence number, never repeated for one key, persisted in blocks.

    ``load`` and ``save`` are the caller's storage (on the node
    ``phasenode.persist`` keeps them on flash; on the Pi a file or SQLite).
    The contract they must keep, because a broken one reuses AES-CCM nonces:

    - ``load()`` returns the int last passed to ``save`` whose call returned,
      or ``None`` only if ``save`` has never been called for this key (a freshly
      provisioned key). A record that exists but cannot be read (torn write,
      bad checksum) must make ``load`` raise, never return ``None`` or a
      smaller value: the counter would start again at numbers already used.
      Keep two copies with a checksum and a generation so a power cut during
      ``save`` leaves the previous value readable.
    - ``save(n)`` makes ``n`` durable before it returns (write and sync). If it
      raises, the counter hands out no number from the new block and the
      exception propagates to the sender.
    - Values are ints in ``0 ..= PIV_MAX + 1`` and never decrease. Above 2**30
      they are long ints on the ESP32; store them as 5 or 8 bytes, big-endian.
    - Keep one store per key: a new key (re-provisioning) starts a new store.

    ``save(n)`` means "numbers below ``n`` may have been used". On start the
    counter resumes at the loaded bound, skipping whatever was left of the
    block in use before the reboot, and calls ``save`` once per ``block``
    numbers handed out, just before the first number of each new block (a
    device rebooting in a loop and sending nothing writes nothing).
    ``next()`` raises ``SequenceExhaustedError`` after ``PIV_MAX``: the key
    must be replaced.
    """

    def __init__(self, load, save, block=DEFAULT_BLOCK, limit=PIV_MAX):
        if not isinstance(block, int) or block < 1:
            raise PhasecoreError("sequence block %s must be a positive int" % (quote(block),))
        if not isinstance(limit, int) or not 0 <= limit <= PIV_MAX:
            raise PhasecoreError("sequence limit %s outside 0..PIV_MAX" % (quote(limit),))
        bound = load()
        if bound is None:
            bound = 0
        elif not isinstance(bound, int) or isinstance(bound, bool) or not 0 <= bound <= limit + 1:
            raise PhasecoreError(
                "persisted sequence bound %s outside 0..%d: refusing to guess" % (quote(bound), limit + 1)
            )
        self._save = save
        self._block = block
        self._limit = limit
        self._next = bound
        self._reserved = bound

    @property
    def value(self):
        """The number the next ``next()`` returns (if not exhausted)."""
        return self._next

    @property
    def reserved(self):
        """The persisted bound: numbers below it are taken, as stored."""
        return self._reserved

    def next(self):
        """Return a fresh sequence number, persisting a new block first when needed."""
        n = self._next
        if n > self._limit:
            raise SequenceExhaustedError("sequence numbers exhausted at %d: replace the key" % self._limit)
        if n >= self._reserved:
            bound = n + self._block
            if bound > self._limit + 1:
                bound = self._limit + 1
            self._save(bound)
            self._reserved = bound
        self._next = n + 1
        return n


class ReplayWindow:
    """One sender's replay window: a sliding bitmask of recently accepted numbers.

    ``top`` is the highest accepted sequence number (-1 before the first).
    Bit ``i`` of the mask means ``top - i`` was accepted. A number above
    ``top`` is new; one within ``width`` below it is new unless its bit is
    set; anything older is refused (RFC 4303 section 3.4.3, RFC 8613 section
    7.4, whose default window is 32).

    After a restart the receiver must not begin empty, or every message it
    accepted before could be replayed once. Persist ``top`` (the Pi stores
    the readings anyway) and rebuild with ``ReplayWindow.restore(top)``,
    which refuses everything at or below it; or keep ``state()`` and pass it
    back as ``ReplayWindow(width, top, mask)``.
    """

    def __init__(self, width=DEFAULT_WIDTH, top=-1, mask=0):
        if not isinstance(width, int) or not 1 <= width <= 1024:
            raise PhasecoreError("replay window width %s outside 1..1024" % (quote(width),))
        if not isinstance(top, int) or not -1 <= top <= PIV_MAX:
            raise PhasecoreError("replay window top %s outside -1..PIV_MAX" % (quote(top),))
        self.width = width
        self._full = (1 << width) - 1
        self.top = top
        self.mask = (mask & self._full) if top >= 0 else 0

    @classmethod
    def restore(cls, top, width=DEFAULT_WIDTH):
        """A window that refuses every number up to and including ``top``."""
        w = cls(width, top)
        if top >= 0:
            w.mask = w._full
        return w

    def state(self):
        """``(width, top, mask)``, enough to rebuild the window exactly."""
        return (self.width, self.top, self.mask)

    def check(self, seq):
        """Raise ``ReplayError`` if ``seq`` was seen or is too old; change nothing."""
        _check_seq(seq)
        top = self.top
        if seq > top:
            return
        diff = top - seq
        if diff >= self.width:
            raise ReplayError("sequence number %d is older than the window (%d..%d)" % (seq, top - self.width + 1, top))
        if (self.mask >> diff) & 1:
            raise ReplayError("sequence number %d was already accepted" % seq)

    def accept(self, seq):
        """Record ``seq`` as accepted; raise ``ReplayError`` (unchanged) if it is a replay."""
        self.check(seq)
        top = self.top
        if seq > top:
            shift = seq - top
            if top < 0 or shift >= self.width:
                self.mask = 1
            else:
                self.mask = ((self.mask << shift) | 1) & self._full
            self.top = seq
        else:
            self.mask |= 1 << (top - seq)

    def __repr__(self):
        return "ReplayWindow(width=%d, top=%d, mask=0x%x)" % (self.width, self.top, self.mask)


class ReplayTable:
    """Replay windows per sender id, at most ``max_senders`` of them.

    A full table refuses a new sender with ``ReplayError`` rather than
    evicting one: forgetting a window would let that sender's old messages be
    replayed. ``forget(sender)`` is for a sender that was re-keyed or removed.
    """

    def __init__(self, max_senders, width=DEFAULT_WIDTH):
        if not isinstance(max_senders, int) or max_senders < 1:
            raise PhasecoreError("max_senders %s must be a positive int" % (quote(max_senders),))
        ReplayWindow(width)  # validates width
        self.max_senders = max_senders
        self.width = width
        self._windows = {}

    def window(self, sender):
        """The window for ``sender`` (hashable id, e.g. the kid bytes), created on first use."""
        w = self._windows.get(sender)
        if w is None:
            if len(self._windows) >= self.max_senders:
                raise ReplayError(
                    "replay table full (%d senders): refusing new sender %s" % (self.max_senders, quote(sender))
                )
            w = ReplayWindow(self.width)
            self._windows[sender] = w
        return w

    def add(self, sender, window):
        """Install a restored window for ``sender`` (replacing any)."""
        if sender not in self._windows and len(self._windows) >= self.max_senders:
            raise ReplayError(
                "replay table full (%d senders): refusing new sender %s" % (self.max_senders, quote(sender))
            )
        self._windows[sender] = window

    def check(self, sender, seq):
        w = self._windows.get(sender)
        if w is None:
            _check_seq(seq)
            if len(self._windows) >= self.max_senders:
                raise ReplayError(
                    "replay table full (%d senders): refusing new sender %s" % (self.max_senders, quote(sender))
                )
            return
        w.check(seq)

    def accept(self, sender, seq):
        self.window(sender).accept(seq)

    def forget(self, sender):
        self._windows.pop(sender, None)

    def senders(self):
        return sorted(self._windows)

    def __contains__(self, sender):
        return sender in self._windows

    def __len__(self):
        return len(self._windows)
