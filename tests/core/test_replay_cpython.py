"""phasecore.replay under hypothesis: reboots and power cuts at random points, windows vs a set model."""

from hypothesis import given, settings
from hypothesis import strategies as st

from phasecore.errors import ReplayError
from phasecore.replay import ReplayWindow, SequenceCounter


class PowerCut(Exception):
    pass


class Flash:
    """Durable storage whose write can be cut before or after it lands."""

    def __init__(self):
        self.value = None
        self.cut = None  # None, "before" or "after": what the next save does
        self.writes = 0

    def load(self):
        return self.value

    def save(self, n):
        if self.cut == "before":
            self.cut = None
            raise PowerCut()
        self.value = n
        self.writes += 1
        if self.cut == "after":
            self.cut = None
            raise PowerCut()


# A run is a list of (messages sent, how the boot ends).
runs = st.lists(
    st.tuples(st.integers(0, 60), st.sampled_from(["reboot", "cut-before", "cut-after"])), min_size=1, max_size=25
)


@settings(max_examples=200, deadline=None)
@given(runs, st.integers(1, 20))
def test_counter_never_repeats_across_reboots_and_power_cuts(run, block):
    flash = Flash()
    used = []
    for sends, ending in run:
        c = SequenceCounter(flash.load, flash.save, block=block)
        try:
            for _ in range(sends):
                used.append(c.next())
            if ending != "reboot":
                flash.cut = ending[4:]
                used.append(c.next())
        except PowerCut:
            pass
        flash.cut = None
    assert len(used) == len(set(used))
    assert used == sorted(used)
    # Flash wear: at most one write per block of numbers used, plus one per boot.
    assert flash.writes <= len(used) // block + len(run) + 1


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 70), st.lists(st.integers(0, 300), max_size=80))
def test_window_agrees_with_set_model(width, seqs):
    w = ReplayWindow(width)
    seen = set()
    top = -1
    for s in seqs:
        fresh = s not in seen and s > top - width
        try:
            w.check(s)
            ok = True
        except ReplayError:
            ok = False
        assert ok == fresh, (s, w)
        if fresh:
            w.accept(s)
            seen.add(s)
            top = max(top, s)
        assert w.top == top
