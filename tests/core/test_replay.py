"""phasecore.replay: persisted sequence counters and replay windows, on both interpreters."""

from phasecore.errors import PhasecoreError, ReplayError, SequenceExhaustedError
from phasecore.replay import PIV_MAX, ReplayTable, ReplayWindow, SequenceCounter
from portable import raises


class Store:
    """A flash stand-in that records every write."""

    def __init__(self, value=None):
        self.value = value
        self.writes = []

    def load(self):
        return self.value

    def save(self, n):
        self.writes.append(n)
        self.value = n


def test_counter_starts_at_zero_and_writes_once_per_block():
    st = Store()
    c = SequenceCounter(st.load, st.save, block=16)
    assert st.writes == []  # nothing written until a number is needed
    got = [c.next() for _ in range(40)]
    assert got == list(range(40))
    assert st.writes == [16, 32, 48]
    assert c.value == 40 and c.reserved == 48


def test_counter_resumes_at_persisted_bound_after_reboot():
    st = Store()
    c = SequenceCounter(st.load, st.save, block=10)
    used = [c.next() for _ in range(13)]
    # Reboot: the rest of the block 13..19 is skipped, never reused.
    c2 = SequenceCounter(st.load, st.save, block=10)
    assert c2.value == 20
    later = [c2.next() for _ in range(15)]
    assert later == list(range(20, 35))
    assert min(later) > max(used)
    assert st.writes == [10, 20, 30, 40]


def test_reboot_loop_without_sending_writes_nothing():
    st = Store(100)
    for _ in range(5):
        SequenceCounter(st.load, st.save)
    assert st.writes == []


def test_failed_save_hands_out_nothing():
    class Broken(Store):
        def save(self, n):
            raise OSError("flash write failed")

    st = Broken(5)
    c = SequenceCounter(st.load, st.save, block=4)
    raises(OSError, c.next)
    assert c.value == 5 and c.reserved == 5


def test_counter_exhausts_at_piv_max():
    st = Store(PIV_MAX - 2)
    c = SequenceCounter(st.load, st.save, block=256)
    assert [c.next(), c.next(), c.next()] == [PIV_MAX - 2, PIV_MAX - 1, PIV_MAX]
    assert st.value == PIV_MAX + 1  # block clipped at the limit
    e = raises(SequenceExhaustedError, c.next)
    assert "exhausted" in str(e)
    assert issubclass(SequenceExhaustedError, PhasecoreError)
    # And after a reboot it stays exhausted.
    raises(SequenceExhaustedError, SequenceCounter(st.load, st.save).next)


def test_counter_crosses_esp32_small_int_limits():
    # 2**30 is where the ESP32's 31-bit small ints end; 2**31 and 2**32 are
    # where 32-bit arithmetic would wrap. All must count exactly.
    for start in (2**30 - 3, 2**31 - 3, 2**32 - 3, 2**39 - 3):
        st = Store(start)
        c = SequenceCounter(st.load, st.save, block=2)
        got = [c.next() for _ in range(6)]
        assert got == [start + i for i in range(6)], got
        assert st.writes == [start + 2, start + 4, start + 6]


def test_counter_refuses_corrupt_persisted_bound():
    for bad in (-1, PIV_MAX + 2, "12", 1.5):
        raises(PhasecoreError, SequenceCounter, Store(bad).load, Store().save)
    raises(PhasecoreError, SequenceCounter, Store().load, Store().save, 0)


def test_small_limit_for_tests_of_exhaustion():
    st = Store()
    c = SequenceCounter(st.load, st.save, block=3, limit=4)
    assert [c.next() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert st.writes == [3, 5]
    raises(SequenceExhaustedError, c.next)


def test_window_accepts_new_and_refuses_repeats():
    w = ReplayWindow(32)
    w.accept(0)
    raises(ReplayError, w.accept, 0)
    w.accept(5)
    w.accept(3)
    e = raises(ReplayError, w.accept, 3)
    assert "already" in str(e)
    w.accept(4)
    w.accept(1)
    assert w.top == 5


def test_window_refuses_numbers_older_than_width():
    w = ReplayWindow(32)
    w.accept(100)
    w.accept(69)  # 100 - 31: the oldest still inside
    e = raises(ReplayError, w.check, 68)
    assert "older" in str(e)
    w.accept(200)
    raises(ReplayError, w.check, 168)
    w.check(169)


def test_check_does_not_mutate_and_accept_leaves_window_unchanged_on_replay():
    w = ReplayWindow(32)
    w.accept(10)
    before = w.state()
    w.check(11)
    w.check(9)
    assert w.state() == before
    raises(ReplayError, w.accept, 10)
    assert w.state() == before


def test_window_shift_keeps_bits_exactly():
    w = ReplayWindow(8)
    for s in (1, 3, 4):
        w.accept(s)
    w.accept(7)  # shift by 3: bits for 7, 4, 3, 1 -> offsets 0, 3, 4, 6
    assert w.mask == (1 | 1 << 3 | 1 << 4 | 1 << 6)
    w.accept(9)  # 1 (offset 8) falls out of an 8-wide window
    assert w.mask == (1 | 1 << 2 | 1 << 5 | 1 << 6)
    raises(ReplayError, w.check, 1)
    raises(ReplayError, w.check, 3)
    w.accept(2)
    w.accept(100)
    assert w.mask == 1


def test_window_near_piv_max_and_wide_masks():
    w = ReplayWindow(64)
    w.accept(PIV_MAX - 70)
    w.accept(PIV_MAX)
    w.accept(PIV_MAX - 63)
    raises(ReplayError, w.check, PIV_MAX - 64)
    raises(ReplayError, w.check, PIV_MAX + 1)
    raises(ReplayError, w.check, -1)
    w2 = ReplayWindow(1)
    w2.accept(5)
    raises(ReplayError, w2.check, 4)
    raises(ReplayError, w2.check, 5)
    w2.accept(6)


def test_restore_refuses_everything_up_to_top():
    w = ReplayWindow.restore(500)
    for s in (500, 499, 470, 0):
        raises(ReplayError, w.check, s)
    w.accept(501)
    w2 = ReplayWindow(*w.state())
    assert w2.state() == w.state()
    raises(ReplayError, w2.check, 501)
    assert ReplayWindow.restore(-1).top == -1
    raises(PhasecoreError, ReplayWindow, 0)
    raises(PhasecoreError, ReplayWindow, 32, PIV_MAX + 1)


def test_table_is_per_sender_and_bounded():
    t = ReplayTable(max_senders=2, width=16)
    t.accept(b"\x01", 7)
    t.accept(b"\x02", 7)  # the same number from another sender is fine
    raises(ReplayError, t.accept, b"\x01", 7)
    e = raises(ReplayError, t.accept, b"\x03", 1)
    assert "full" in str(e)
    raises(ReplayError, t.check, b"\x03", 1)
    assert len(t) == 2 and b"\x01" in t and b"\x03" not in t
    t.check(b"\x01", 8)
    raises(ReplayError, t.check, b"\x01", 7)
    t.forget(b"\x02")
    t.accept(b"\x03", 1)
    assert t.senders() == [b"\x01", b"\x03"]
    t.add(b"\x03", ReplayWindow.restore(50, 16))
    raises(ReplayError, t.check, b"\x03", 50)
    raises(PhasecoreError, ReplayTable, 0)
