"""The node on a simulated site's faster clock (both interpreters): line timing stays wall time.

On ``phasekit site run`` a node's clock runs ``speed`` times faster than the
wall (``phasenode.app.Node(speed=...)``, ``phasenode.hal.host.HostHal.clock``).
What is bound to the wire must not shrink with it: the RS-485 idle gap after
which a half-received frame is dropped is wall time, so on a 720x clock it spans
720 times more of the clock's milliseconds; the house-side sense of the host
relay board reports what the contacts do.
"""

from node_fixtures import ADDR, Clock, Pi, Wire, provision, rmtree, tmpdir
from phasecore import keys, msg
from phasecore.replay import SequenceCounter
from phasenode.checks import Checks
from phasenode.events import EventQueue
from phasenode.hal.pin_host import RelayBoard
from phasenode.link_rs485 import Rs485Link
from phasenode.session import Session

SPEED = 720


def _link(speed):
    root = tmpdir("siteclock")
    store, config = provision(root)
    clock = Clock(1000)
    events = EventQueue()
    checks = Checks(config.limits, None, events, clock.t)
    nk = keys.NodeKeys(store.read_secret(config), ADDR)
    counter = SequenceCounter(*store.sequence_storage("g0"), block=16)
    session = Session(
        nk.node_context(),
        counter=counter,
        rx_storage=store.pi_seq_storage(0),
        oplock_storage=store.oplock_storage(),
        relay=None,
        checks=checks,
        events=events,
        now_ms=clock.t,
    )
    wire = Wire()
    return root, clock, Rs485Link(wire, session, ADDR, clock=clock, speed=speed), wire


def test_the_idle_gap_is_wall_time_on_a_fast_clock():
    root, clock, link, wire = _link(SPEED)
    try:
        poll = Pi().poll()
        wire.inject(bytes(poll[:4]))  # half a frame: the rest is on its way
        link.service(clock.t)
        assert link.decoder.buffered == 4
        # 100 ms of a 720x clock is 0.14 ms of wall time: far inside the line's idle gap.
        clock.t += 100
        link.service(clock.t)
        assert link.decoder.buffered == 4 and link.flushed == 0
        # The idle gap (5 ms at 115200 baud) in wall time is 3600 ms of this clock.
        clock.t += link.idle_ms * SPEED
        link.service(clock.t)
        assert link.decoder.buffered == 0
    finally:
        rmtree(root)


def test_speed_one_keeps_the_idle_gap():
    root, clock, link, wire = _link(1)
    try:
        wire.inject(bytes(Pi().poll()[:4]))
        link.service(clock.t)
        clock.t += link.idle_ms + 1
        link.service(clock.t)
        assert link.decoder.buffered == 0
    finally:
        rmtree(root)


def test_the_sense_sees_a_welded_contact():
    rb = RelayBoard()
    rb.pins[msg.PHASE_B].value(1)
    assert rb.live()
    rb.weld(msg.PHASE_B)
    rb.pins[msg.PHASE_B].value(0)
    assert rb.live()  # welded: still live with its input off
    rb.unweld()
    assert not rb.live()
