"""A wire attacker on RS-485 cannot take a chosen house out of balancing for a day (issue 13, item 9).

The attacker holds no key: it can swallow, corrupt or delay what a node sends
(``SimBus.tamper``, the node modes ``silent``, ``corrupt``, ``noise`` and
``replay`` of ``phasekit.sim.bus_nodes``), and deliver what it withheld later.
Against it: the real bus master over a pty, the registry, the controller, the
balancer, nodes sealing real readings and acks. A suspension for
``suspend_s`` needs the node's own word sealed after it handled the move (or
its ack to a REPORT command); without it a move is only *unconfirmed* and the
house is back after ``unconfirmed_s``.
"""

import asyncio

from controller_support import SITE_KEY, StuckNode, run_site
from controller_support import poll as _poll

from phasecore import codes, frame, msg, seal
from phasekit.sim.bus_nodes import SimNode

SUSPEND_S = 86400
UNCONFIRMED_S = 900


def _site(tmp_path, body, cls=SimNode):
    nodes = [cls(a, SITE_KEY, phase=msg.PHASE_A, current_mA=5000) for a in range(1, 7)]
    return run_site(tmp_path, nodes, body, 90, suspend_s=SUSPEND_S, unconfirmed_s=UNCONFIRMED_S, summary_period_s=10**6)


async def _round(ctl):
    await ctl.balance_round()
    if ctl.moving:
        await asyncio.gather(*list(ctl.moving.values()), return_exceptions=True)


async def _moved(ctl, bus, clock):
    """Three polls, one round: two houses acknowledge their moves; returns their addresses."""
    for _ in range(3):
        await _poll(ctl, bus, clock)
    await _round(ctl)
    moved = sorted(ctl.pending)
    assert len(moved) == 2 and ctl.stats["moves_done"] == 2
    return moved


def _suspended_for(ctl, addr, clock):
    return ctl.suspended.get(addr, clock.t) - clock.t


def _kind(wire):
    """The message kind of a reply, as anyone on the line reads it (the envelope's clear header)."""
    (f,) = frame.Decoder().feed(wire)
    return seal.header(f.payload)[0] if f.payload else None


def _swallow(addrs):
    return lambda addr, wire: None if addr in addrs else wire


async def _attack_then_recover(ctl, bus, clock, journal, sim, moved):
    for _ in range(4):  # 40 s of nothing from the moved nodes: past verify_s
        await _poll(ctl, bus, clock)
    await _round(ctl)  # the Pi asks with REPORT; the attacker swallows the acks too
    assert ctl.stats["moves_failed"] == 0, "no evidence, no failure"
    assert ctl.stats["moves_unconfirmed"] == 2
    for a in moved:
        assert 0 < _suspended_for(ctl, a, clock) <= UNCONFIRMED_S
    assert not journal.events(codes.EV_MOVE_NOT_VERIFIED)
    assert sorted(e[1] for e in journal.events(codes.EV_MOVE_UNCONFIRMED)) == moved
    assert sorted(e[3] for e in journal.events(codes.EV_NODE_SUSPENDED)) == [UNCONFIRMED_S] * 2
    # The attacker stops. Within unconfirmed_s the houses are balanced again, on the phase they report.
    sim.tamper = None
    for n in sim.nodes.values():
        n.mode = "ok"
    clock.t += UNCONFIRMED_S - 40
    for _ in range(4):  # the bus polls a node that stopped answering every 4th round only
        await _poll(ctl, bus, clock)
    await _round(ctl)
    for a in moved:
        assert a not in ctl.suspended
        assert ctl.balancer.node(a)["phase"] == sim.nodes[a].phase != msg.PHASE_A
        assert ctl.balancer.node(a)["status"] == "online"
        assert ctl.registry.nodes[a].phase == sim.nodes[a].phase


def test_swallowing_every_reply_after_a_move_costs_the_houses_minutes_not_a_day(tmp_path):
    async def body(ctl, bus, clock, journal, sim):
        moved = await _moved(ctl, bus, clock)
        sim.tamper = _swallow(moved)
        await _attack_then_recover(ctl, bus, clock, journal, sim, moved)

    _site(tmp_path, body)


def test_corrupting_or_silencing_the_moved_nodes_costs_minutes_not_a_day(tmp_path):
    async def body(ctl, bus, clock, journal, sim):
        moved = await _moved(ctl, bus, clock)
        sim.nodes[moved[0]].mode = "corrupt"  # every frame fails its CRC
        sim.nodes[moved[1]].mode = "silent"  # nothing gets through
        await _attack_then_recover(ctl, bus, clock, journal, sim, moved)

    _site(tmp_path, body)


def test_noise_and_replayed_frames_on_the_line_do_not_stop_the_verification(tmp_path):
    async def body(ctl, bus, clock, journal, sim):
        moved = await _moved(ctl, bus, clock)
        sim.nodes[moved[0]].mode = "noise"  # garbage and false SYNCs before each real reply
        sim.nodes[moved[1]].mode = "replay"  # its first frame again instead of fresh readings
        for _ in range(4):
            await _poll(ctl, bus, clock)
        await _round(ctl)
        # Through the noise the fresh readings verify; the replayed frames are refused and the REPORT ack verifies.
        assert ctl.stats["moves_verified"] == 2 and ctl.stats["moves_failed"] == 0
        assert ctl.registry.nodes[moved[1]].counters["replay"] > 0
        assert not ctl.suspended

    _site(tmp_path, body)


def test_a_withheld_reading_delivered_after_the_move_proves_nothing(tmp_path):
    """The attacker keeps a reading sealed before the move (phase A) and sends it in place of fresh ones."""

    async def body(ctl, bus, clock, journal, sim):
        for _ in range(3):
            await _poll(ctl, bus, clock)
        kept = {}

        def withhold(addr, wire):
            if _kind(wire) != msg.READING:
                return wire  # heartbeats and acks go through: the move is acknowledged
            kept.setdefault(addr, wire)  # each node's next reading: kept, not delivered
            return None

        sim.tamper = withhold
        await _poll(ctl, bus, clock)
        await _round(ctl)
        moved = sorted(ctl.pending)
        assert len(moved) == 2 and ctl.stats["moves_done"] == 2
        before = {a: ctl.registry.nodes[a].reading_seq for a in moved}
        counted = {a: ctl.registry.nodes[a].counters["readings"] for a in moved}

        def late(addr, wire):
            if addr in moved and _kind(wire) == msg.READING:
                return kept.pop(addr, None)  # the old reading, once, in place of the fresh ones
            return wire

        sim.tamper = late
        for _ in range(4):
            await _poll(ctl, bus, clock)
        for a in moved:
            # Accepted by the replay window (it was new to it), yet it sets nothing back in time.
            assert ctl.registry.nodes[a].counters["readings"] == counted[a] + 1
            assert ctl.registry.nodes[a].reading_seq == before[a]
            assert ctl.registry.nodes[a].phase == sim.nodes[a].phase != msg.PHASE_A
            assert a in ctl.pending or a in ctl.moving, "neither verified nor failed by it"
        sim.tamper = None  # the REPORT gets through
        await _round(ctl)
        assert ctl.stats["moves_failed"] == 0 and ctl.stats["moves_verified"] == 2
        assert not ctl.suspended
        # Its energy count, older than the Pi's latest, did not reach the plausibility guard either.
        assert not journal.events(codes.EV_ENERGY_BACKWARDS) and not journal.events(codes.EV_READING_IMPLAUSIBLE)
        assert not ctl.guard.quarantined

    _site(tmp_path, body)


def test_a_move_the_node_itself_says_did_not_take_still_suspends_for_a_day(tmp_path):
    """Evidence the attacker cannot fake: the node's ack to REPORT, even when its readings are swallowed."""

    async def body(ctl, bus, clock, journal, sim):
        moved = await _moved(ctl, bus, clock)

        def readings_only(addr, wire):
            # Swallow the moved nodes' readings; what answers the Pi's heartbeat and REPORT gets through.
            return None if addr in moved and _kind(wire) == msg.READING else wire

        sim.tamper = readings_only
        for _ in range(4):
            await _poll(ctl, bus, clock)
        await _round(ctl)
        assert ctl.stats["moves_failed"] == 2 and ctl.stats["moves_unconfirmed"] == 0
        for a in moved:
            assert _suspended_for(ctl, a, clock) == SUSPEND_S
        assert sorted(e[1] for e in journal.events(codes.EV_MOVE_NOT_VERIFIED)) == moved
        assert all(e[4] for e in journal.events(codes.EV_MOVE_NOT_VERIFIED)), "an alarm"
        reports = [c for a in moved for c in sim.nodes[a].commands if c["op"] == msg.OP_REPORT]
        assert len(reports) == 2

    _site(tmp_path, body, StuckNode)
