"""Simulated 3-phase relay board for hosts: Pin-like relay inputs that record every contact move.

Used by the relay tests and benchmark, and by the virtual board, wherever the
node's relay pins would be ``machine.Pin`` objects. It answers what a test
wants to know about the physical side: which phases are closed now, were two
ever closed at once, what was the shortest time between one phase opening and
another closing (the dead time actually achieved).

The physical model (the one docs/relay-safety.md assumes):

- monostable relays with normally-open contacts, as on the usual 3-channel opto
  relay boards: a contact is closed only while the board has power AND its
  input is driven to the active level (``active_high`` from the board file);
- an input that is not driven (MCU unpowered or in reset, GPIO not yet an
  output) is inactive: the opto-coupler's LED stays dark, the relay open;
- ``power_cut()``: the coils lose power, every contact opens at that instant,
  and the MCU's pins stop driving; after ``power_on()`` they stay undriven
  until firmware writes them;
- ``soft_reset()``: a MicroPython soft reboot keeps GPIO levels, so nothing
  moves; the next controller finds the relays as they were;
- contacts move instantly when the input changes (a real relay takes 5-15 ms,
  far inside the controller's dead time of seconds);
- ``weld(phase)``: a closed contact welds shut (the failure of a relay that
  broke too much current): it stays closed whatever the input or the power,
  until ``unweld()`` (a repair). ``live()`` is what a voltage sense on the
  house side reads: True while any contact is closed.

Phases are numbered as on the wire (``phasecore.codes``: relay 0 is phase A,
1 B, 2 C; ``PHASE_NONE`` 3 when the house is on none), as the relay
controller numbers them.

Fault injection: ``board.trip`` may be set to a callable ``trip(phase, level)``
called before every pin write; raising from it (``PowerCut``) makes the write
not happen, which is how the tests cut power between any two steps.

Public: ``RelayBoard``, ``HostPin``, ``PowerCut``.
"""

from phasecore.codes import PHASE_NAMES as _NAMES
from phasecore.codes import PHASE_NONE
from phasecore.errors import quote
from phasenode.compat import ticks_ms as _ticks_ms

_POWER = 1  # cause of a transition: the board lost power
_PIN = 0  # cause of a transition: a pin write


class PowerCut(Exception):
    """Raised by a fault-injection ``trip`` to stop the firmware mid-step (power lost)."""


class HostPin:
    """One relay input with the ``machine.Pin`` subset: ``value([v])``, ``on()``, ``off()``, ``()``.

    Made by ``RelayBoard``; ``level`` is None while the pin is not driven.
    """

    OUT = 1
    IN = 0

    def __init__(self, board, index, pin_id):
        self._board = board
        self.index = index
        self.id = pin_id
        self.level = None

    def value(self, v=None):
        if v is None:
            return self.level
        self._board._write(self, 1 if v else 0)
        return None

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def init(self, mode=-1, pull=-1, value=None):
        if value is not None:
            self.value(value)

    def __repr__(self):
        return "HostPin(%s, relay %s, level=%r)" % (self.id, _NAMES[self.index], self.level)


class _PinFactory:
    # ``machine.Pin``-shaped constructor bound to one board: Pin(id, Pin.OUT, value=1).
    OUT = HostPin.OUT
    IN = HostPin.IN

    def __init__(self, board):
        self._board = board

    def __call__(self, pin_id, mode=-1, pull=-1, value=None):
        for p in self._board.pins:
            if p.id == pin_id:
                if value is not None:
                    p.value(value)
                return p
        raise ValueError(
            "no relay pin %s on this board (has %s)" % (quote(pin_id), ", ".join(str(p.id) for p in self._board.pins))
        )


class RelayBoard:
    """Three relays for phases A, B, C behind ``pins`` (also ``Pin(id, ...)``, ``machine.Pin``-style).

    ``clock()`` gives the time in ms stamped on transitions (default: the
    host's monotonic clock); ``keep`` bounds the ``transitions`` list (the
    counters and safety checks below are kept incrementally and stay exact).
    Each transition is ``(t_ms, phase 0..2, closed, cause)``, cause 0 for a
    pin write and 1 for a power cut.
    """

    def __init__(self, active_high=True, clock=None, ids=("relay_a", "relay_b", "relay_c"), keep=10000):
        if len(ids) != 3:
            raise ValueError("a relay board has 3 relays, got ids %s" % (quote(ids),))
        self.active_high = bool(active_high)
        self._active = 1 if active_high else 0
        self._clock = clock if clock is not None else _ticks_ms
        self._keep = keep
        self.pins = [HostPin(self, i, ids[i]) for i in range(3)]
        self.Pin = _PinFactory(self)
        self.powered = True
        self.trip = None
        self.transitions = []
        self.dropped = 0
        self._closed = [False, False, False]
        self._last_open = [None, None, None]
        self._close_at = [None, None, None]
        self._welded = [False, False, False]
        self.operations = [0, 0, 0]  # closes per relay: contact wear
        self.overlaps = 0  # makes while another phase was closed
        self.max_closed = 0
        self.min_gap_ms = None  # shortest open-of-one to close-of-another
        self.first_violation = None
        self.boots = 0

    # --- physical state ---------------------------------------------------------

    def closed(self):
        """The phases closed now, as a list of phases (0..2)."""
        return [i for i in range(3) if self._closed[i]]

    def closed_mask(self):
        """Bit i set when phase i is closed."""
        m = 0
        for i in range(3):
            if self._closed[i]:
                m |= 1 << i
        return m

    def connected(self):
        """The one phase the house is on, ``PHASE_NONE`` when disconnected; ValueError if two are closed."""
        c = self.closed()
        if len(c) > 1:
            raise ValueError("phases %s closed at once" % "+".join(_NAMES[p] for p in c))
        return c[0] if c else PHASE_NONE

    def live(self):
        """True while the house side has voltage (any contact closed): a voltage sense."""
        return self._closed[0] or self._closed[1] or self._closed[2]

    def welded(self):
        """The phases whose contact is welded shut, as a list of phases (0..2)."""
        return [i for i in range(3) if self._welded[i]]

    def weld(self, phase):
        """Weld the (closed) contact of ``phase``: it no longer opens."""
        if not self._closed[phase]:
            raise ValueError("only a closed contact welds; %s is open" % _NAMES[phase])
        self._welded[phase] = True

    def unweld(self):
        """Repair: every contact follows its input (and the board's power) again."""
        t = self._clock()
        for i in range(3):
            if self._welded[i]:
                self._welded[i] = False
                want = self.powered and self.pins[i].level == self._active
                if want != self._closed[i]:
                    self._set_contact(i, want, t, _PIN)

    def last_close_ms(self, phase):
        """When ``phase`` last closed (None if never or not closed now)."""
        if not self._closed[phase]:
            return None
        return self._close_at[phase]

    # --- safety checks ------------------------------------------------------------

    def ever_two_closed(self):
        """True if two phases were ever closed at the same instant."""
        return self.overlaps > 0

    def dead_time_ok(self, dead_time_ms):
        """True if every make came at least ``dead_time_ms`` after any other phase opened."""
        return self.overlaps == 0 and (self.min_gap_ms is None or self.min_gap_ms >= dead_time_ms)

    # --- power ------------------------------------------------------------------

    def power_cut(self):
        """The board loses power: every contact opens now, the pins stop driving."""
        t = self._clock()
        for i in range(3):
            if self._closed[i] and not self._welded[i]:
                self._set_contact(i, False, t, _POWER)
        self.powered = False
        for p in self.pins:
            p.level = None

    def power_on(self):
        """Power returns; the MCU boots with its relay pins undriven (all relays open)."""
        self.powered = True
        self.boots += 1

    def soft_reset(self):
        """A soft reboot: the firmware restarts, GPIO levels and contacts stay as they are."""
        self.boots += 1

    # --- internals ----------------------------------------------------------------

    def _write(self, pin, level):
        if self.trip is not None:
            self.trip(pin.index, level)
        pin.level = level
        want = self.powered and level == self._active
        if want != self._closed[pin.index] and not self._welded[pin.index]:
            self._set_contact(pin.index, want, self._clock(), _PIN)

    def _set_contact(self, i, closed, t, cause):
        if closed:
            for j in range(3):
                if j == i:
                    continue
                if self._closed[j]:
                    self.overlaps += 1
                    if self.first_violation is None:
                        self.first_violation = "t=%d ms: %s closed while %s closed" % (t, _NAMES[i], _NAMES[j])
                elif self._last_open[j] is not None:
                    gap = t - self._last_open[j]
                    if self.min_gap_ms is None or gap < self.min_gap_ms:
                        self.min_gap_ms = gap
            self.operations[i] += 1
            self._close_at[i] = t
        else:
            self._last_open[i] = t
        self._closed[i] = closed
        n = 0
        for c in self._closed:
            if c:
                n += 1
        if n > self.max_closed:
            self.max_closed = n
        tr = self.transitions
        if self._keep is not None and len(tr) >= self._keep:
            tr.pop(0)
            self.dropped += 1
        tr.append((t, i, closed, cause))

    def __repr__(self):
        return "RelayBoard(closed=%s, operations=%r, max_closed=%d, min_gap_ms=%r)" % (
            "+".join(_NAMES[p] for p in self.closed()) or "none",
            self.operations,
            self.max_closed,
            self.min_gap_ms,
        )


class SolidStateBoard(RelayBoard):
    """Three thyristor/triac switches for phases A, B, C behind gate ``pins``: the solid-state phase selector.

    As ``RelayBoard`` ("closed" meaning "conducting"), with the one
    difference that matters for safety: a switch whose gate is removed goes
    on conducting until its current next crosses zero -- ``zero_cross()``,
    which the test rig calls every half-cycle, ends the conduction of every
    ungated switch. A gated switch conducts at once. ``weld`` is a switch
    that failed short (it conducts whatever its gate). A power cut stops
    every gate, and so every switch within a half-cycle (here: at once).
    ``conducting_mask()`` is the board's conduction report (bit i: phase i),
    ``at_zc`` is True while the rig hands a zero crossing to the firmware,
    and ``makes_off_zc`` counts gates that started a phase conducting
    outside one (a transfer must not).
    """

    def __init__(self, active_high=True, clock=None, ids=("gate_a", "gate_b", "gate_c"), keep=10000):
        super().__init__(active_high, clock, ids, keep)
        self.at_zc = False
        self.makes_off_zc = 0
        self.zero_crossings = 0
        # Every start of conduction: (t_ms, phase, at a reported zero crossing, ms since any other phase stopped).
        self.makes = []

    def conducting_mask(self):
        return self.closed_mask()

    def zero_cross(self):
        """A zero crossing of the current: every switch without gate drive stops conducting."""
        self.zero_crossings += 1
        t = self._clock()
        for i in range(3):
            gated = self.powered and self.pins[i].level == self._active
            if self._closed[i] and not gated and not self._welded[i]:
                self._set_contact(i, False, t, _PIN)

    def _write(self, pin, level):
        if self.trip is not None:
            self.trip(pin.index, level)
        pin.level = level
        want = self.powered and level == self._active
        i = pin.index
        if want and not self._closed[i]:
            if not self.at_zc:
                self.makes_off_zc += 1
            t = self._clock()
            stops = [self._last_open[j] for j in range(3) if j != i and self._last_open[j] is not None]
            self.makes.append((t, i, self.at_zc, t - max(stops) if stops else None))
            self._set_contact(i, True, t, _PIN)
        # Gate removed: it conducts on until the next zero crossing (zero_cross()).
