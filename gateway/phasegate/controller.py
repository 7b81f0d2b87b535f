"""The transformer Pi's control loop: readings in, balancing decisions, sealed commands out.

The controller owns no I/O of its own. Links (``phasegate.bus.Bus``, the LoRa
link) move frames and call ``on_reply`` with what a node sent; the registry
(``phasegate.registry``) opens and seals; the meter (``phasegate.meter``)
reads the transformer; the balancer (``phasecore.balancer``) decides; the
journal (``phasegate.journal``) buffers everything for the uplink. It runs
with no server at all: nothing here waits for the broker (edge autonomy).

One round every ``period_s``:

1. liveness and lock-outs from the registry go to the balancer (an offline,
   stale, locked-out, suspended or switching node is never moved);
2. the transformer meter is read (a failed read is an event, and the round
   balances on node readings alone);
3. the balancer plans; each move is carried out in turn: a Pi heartbeat
   gives the node the time (it refuses commands it cannot date), then the
   sealed MOVE with ``expect_phase``, ``ref_seq`` and a ``deadline_s``; the
   node's ack says DONE, REFUSED (its relay layer's reason) or EXPIRED;
4. a DONE move is *verified* from the node's next messages: the reported
   phase must become the target within ``verify_s``. A suspension needs
   evidence a wire attacker cannot fake (issue 13): a message the node
   sealed *after* its ack (a higher sequence number) still reporting another
   phase once ``verify_s`` is over, or the node's ack to a REPORT command the
   Pi sends when the time is over without such a message (the ack answers
   that command's id, so it is fresh). With that evidence the move failed:
   the balancer learns the phase the node is really on, the node is
   suspended from balancing for ``suspend_s`` and an alarm goes up. Without
   it (replies dropped, corrupted or delayed: an attacker on the line, or a
   noisy one) the move is *unconfirmed*: MOVE_UNCONFIRMED, and the node is
   kept out for ``unconfirmed_s`` only, after which its readings (whose phase
   the balancer takes) bring it back. A message sealed before the ack (a
   reading an attacker withheld and delivers late) proves nothing either
   way. The node's own relay layer has already done the safe thing; the Pi
   only stops asking.

An operator may pause the balancer of the whole transformer (PAUSE, RESUME
sealed for node 0, ``phasegate.operator``), e.g. during field work: while
paused the round plans no automatic moves; polling, verification, alarms and
operator node commands go on (an operator MOVE still passes the node's
safety). The pause outlives a restart: ``pause_path`` (``balancer.json``
beside the buffer, with a CRC-32, written atomically before the command is
answered). Fail closed: a damaged file leaves the balancer paused, with an
error logged, until an operator resumes it. Each pause and resume is a Pi
event (BALANCER_PAUSED, BALANCER_RESUMED) and an ack record from the Pi
itself (src 0), so the server sees the command done; the period's summary
sets its flag bit 2 while paused.

Every reading passes the plausibility guard (``phasegate.plausibility``)
before the balancer sees it; each round the meter's phase currents go to it
too, and a plan made without a meter is vetted by it (the moves one node's
claims may cause are bounded). A quarantined node is removed from the
balancer: never moved, its claims not counted; NODE_QUARANTINED says why.

Time: the balancer and liveness run on the clock's monotonic seconds (whole
seconds); only what leaves the Pi (command deadlines, the node's clock,
records) carries Unix time. Both come from ``clock`` (``phasegate.clock``:
wall time on a Pi in the field, site time on the simulated site, where the
round's period is waited as ``clock.real(period_s)``), so tests can drive them.

Public: ``Controller``, ``Clock``, the ``EV_*`` event codes it journals, and the
types of what it is given: ``NodeLink``, ``Meter``, ``Components``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import zlib
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from phasecore import balancer as _bal
from phasecore import codes, metrics, msg
from phasecore.errors import quote
from phasegate.clock import Clock
from phasegate.errors import ConfigError, ProtocolError
from phasegate.operator import REASONS as _operator_reasons
from phasegate.operator import TRANSFORMER_OPS
from phasegate.plausibility import Guard
from phasegate.registry import CommandError

if TYPE_CHECKING:
    from phasegate.bus import OnReply, Reply
    from phasegate.journal import Journal
    from phasegate.meter import ThreePhaseReading
    from phasegate.operator import OperatorGate
    from phasegate.registry import Incoming, Registry

log = logging.getLogger(__name__)

__all__ = (
    "Controller",
    "MOVE_ACKNOWLEDGED",
    "Clock",
    "EV_MOVE_VERIFIED",
    "EV_MOVE_FAILED",
    "EV_MOVE_REFUSED",
    "EV_NO_ACK",
    "EV_METER_FAILED",
    "EV_LIVENESS",
    "EV_SUSPENDED",
    "EV_MOVE_UNCONFIRMED",
    "EV_PAUSED",
    "EV_RESUMED",
    "read_pause_state",
    "PauseStateError",
    "write_pause_state",
    "NodeLink",
    "Meter",
    "Components",
)

# Logged (INFO) when a node acknowledges a move as done; harnesses count moves
# from it (phasekit.testing.gateway parses it). Keep the format stable.
MOVE_ACKNOWLEDGED = "node %d: move %s -> %s acknowledged"

# The Pi's event codes it journals (phasecore.codes, 32 on), by what they mean here:
EV_LIVENESS = (codes.EV_NODE_ONLINE, codes.EV_NODE_STALE, codes.EV_NODE_OFFLINE)  # by liveness index
EV_MOVE_FAILED = codes.EV_MOVE_NOT_VERIFIED  # value: the phase the node reports
EV_METER_FAILED = codes.EV_TRANSFORMER_METER_FAULT
EV_MOVE_VERIFIED = codes.EV_MOVE_VERIFIED  # value: the new phase
EV_MOVE_REFUSED = codes.EV_MOVE_REFUSED  # value: the ack's reason (or outcome)
EV_NO_ACK = codes.EV_COMMAND_UNANSWERED  # value: the command id
EV_SUSPENDED = codes.EV_NODE_SUSPENDED  # value: seconds the node is kept out of balancing
EV_MOVE_UNCONFIRMED = codes.EV_MOVE_UNCONFIRMED  # value: the target phase; a short suspension follows
EV_OPERATOR_REFUSED = codes.EV_OPERATOR_REFUSED  # value: index of the reason in OPERATOR_REASONS
OPERATOR_REASONS = _operator_reasons
EV_PAUSED = codes.EV_BALANCER_PAUSED  # value: 0
EV_RESUMED = codes.EV_BALANCER_RESUMED  # value: seconds the balancer was paused (0 if not known)
# The pause state file's format (balancer.json: paused or not, since when, a CRC-32).
PAUSE_FORMAT = 1
# A refused operator command is journaled as an alarm at most once per reason in this many seconds
# (the rest are counted): a flood on the command topic must not fill the buffer with alarms.
_REFUSAL_EVENT_S = 60.0

FW_VERSION = "phasegate 0.1"
_NO_PHASE = msg.PHASE_NONE

# Per-phase active and reactive current, (ip_a, iq_a, ip_b, iq_b, ip_c, iq_c), as the balancer plans on.
Components = tuple[float, ...]


class NodeLink(Protocol):
    """A link to nodes as the controller uses it: ``phasegate.bus.Bus``, ``phasegate.lora.link.ClassALink``.

    Optional, read with ``getattr``/``hasattr``: ``poll_period_s``, ``verify_s``,
    ``command_timeout_s``, ``push(addr, payload, timeout_s)`` (class A), ``open()``, ``close()``,
    ``downlink`` (False: its nodes cannot be commanded, ``phasegate.relay.RelayLink``).
    """

    async def run(self, stop: asyncio.Event, on_reply: OnReply, /) -> None: ...
    async def request(self, addr: int, payload: bytes, /) -> Reply | None: ...


class Meter(Protocol):
    """The transformer meter: ``phasegate.meter.ModbusMeter``."""

    async def read(self) -> ThreePhaseReading: ...


class _Pending:
    """A move the node acknowledged DONE (or did not answer), waiting for its messages to confirm it.

    ``ack_seq``: the sequence number of the node's DONE ack (None: no ack came);
    only a message sealed after it (``seq > ack_seq``) is evidence of a failure.
    ``evidence``: the phase the latest such message reported.
    """

    __slots__ = ("frm", "to", "deadline", "ack_seq", "evidence")

    def __init__(self, frm: int, to: int, deadline: float, ack_seq: int | None = None):
        self.frm, self.to, self.deadline = frm, to, deadline
        self.ack_seq = ack_seq
        self.evidence: int | None = None


class Controller:
    """``Controller(registry, balancer, links, meter=None, journal=None, ...)``; ``await ctl.run(stop)``.

    ``links`` maps a registry link name (``"bus"``, ``"lora"``) to an object
    with ``run(stop, on_reply)`` and ``request(addr, payload)`` (the node's
    reply or None). ``meter`` has ``async read() -> ThreePhaseReading``.
    ``journal`` (``phasegate.journal.Journal``) buffers what nodes sent, command
    outcomes, the Pi's events and the period summaries for the uplink.
    """

    def __init__(
        self,
        registry: Registry,
        balancer: _bal.Balancer,
        links: Mapping[str, NodeLink],
        meter: Meter | None = None,
        journal: Journal | None = None,
        period_s: float = 60,
        ack_timeout_s: float = 5.0,
        verify_s: float | None = None,
        suspend_s: float = 86400,
        unconfirmed_s: float = 900,
        heartbeat_s: float = 300,
        summary_period_s: float = 900,
        command_ttl_s: float = 60,
        clock: Clock | None = None,
        guard: Guard | bool = True,
        pause_path: str | os.PathLike[str] | None = None,
    ):
        if period_s <= 0 or summary_period_s <= 0 or heartbeat_s <= 0:
            raise ConfigError("period_s, summary_period_s and heartbeat_s must be positive")
        self.registry = registry
        self.balancer = balancer
        self.links = dict(links)
        self.meter = meter
        self.journal = journal
        self.period_s = period_s
        self.ack_timeout_s = ack_timeout_s
        # Long enough for the node's dead time and at least two readings after it.
        self.verify_s = verify_s if verify_s is not None else max(3 * _poll_period(self.links), 30.0)
        self.suspend_s = suspend_s
        self.unconfirmed_s = unconfirmed_s
        self.heartbeat_s = heartbeat_s
        self.summary_period_s = summary_period_s
        self.command_ttl_s = command_ttl_s
        self.clock = clock or Clock()
        self.operator_gate: OperatorGate | None = None  # set by the app when operators exist
        # Plausibility and quarantine of node readings (phasegate.plausibility); False: none.
        self.guard: Guard | None = guard if isinstance(guard, Guard) else Guard() if guard else None
        self.pending: dict[int, _Pending] = {}
        self.moving: dict[int, asyncio.Task[bool]] = {}  # a task carrying out a move (command not yet answered)
        self.suspended: dict[int, float] = {}  # monotonic time until which the node is not balanced
        self.stats = {
            "rounds": 0,
            "moves_planned": 0,
            "moves_done": 0,
            "moves_verified": 0,
            "moves_failed": 0,
            "moves_unconfirmed": 0,
            "moves_refused": 0,
            "no_ack": 0,
            "meter_failures": 0,
            "readings": 0,
            "message_failures": 0,  # messages from outside whose handling failed (dead letters)
            "operator_refused": 0,
            "operator_refusals_unjournaled": 0,
        }
        self._refusal_journaled: dict[str, float] = {}  # reason -> monotonic time of its last alarm
        self._next_id = int(self.clock.wall()) & 0xFFFFFF00  # distinct across restarts, wraps within u32
        self._period = _Period()
        self.last_meter: ThreePhaseReading | None = None  # the transformer meter's last reading (None: none or failed)
        self.last_components: Components | None = None  # per-phase (ip, iq) the last round planned on
        self._t_start: float | None = None
        # The operator's pause of the balancer (module docstring); None: not persisted (tests, tools).
        self.pause_path = str(pause_path) if pause_path is not None else None
        self.paused = False
        self.paused_since: int | None = None  # Unix time of the pause, None if not known
        if self.pause_path is not None:
            try:
                self.paused, self.paused_since = read_pause_state(self.pause_path)
            except PauseStateError as e:
                self.paused, self.paused_since = True, None
                log.error("%s: the balancer stays paused until an operator resumes it", e)
            if self.paused:
                log.warning("balancer paused by an operator: no automatic moves until RESUME")
        for addr in sorted(registry.nodes):
            self._add_to_balancer(addr)

    # ------------------------------------------------------------ wiring

    def _add_to_balancer(self, addr: int) -> None:
        if addr in self.balancer.nodes() or (self.guard is not None and self.guard.is_quarantined(addr)):
            return
        node = self.registry.nodes[addr]
        phase = node.phase if node.phase in (msg.PHASE_A, msg.PHASE_B, msg.PHASE_C) else msg.PHASE_A
        kind = node.switch if node.switch in (_bal.MECHANICAL, _bal.SOLID_STATE) else _bal.MECHANICAL
        self.balancer.add_node(addr, phase, kind=kind)
        # Not known to be on a phase yet: kept out until its first reading says where it is.
        self.balancer.set_status(addr, _bal.OFFLINE)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every link, balance every ``period_s``, until ``stop`` (an asyncio.Event) is set."""
        self._t_start = self.clock.monotonic()
        tasks: list[asyncio.Future[None] | asyncio.Task[bool]] = [
            asyncio.ensure_future(link.run(stop, self.on_reply)) for link in self.links.values()
        ]
        tasks.append(asyncio.ensure_future(self._every(stop, self.period_s, self.balance_round)))
        tasks.append(asyncio.ensure_future(self._every(stop, self.heartbeat_s, self.heartbeat_round)))
        try:
            done, _ = await asyncio.wait(
                tasks + [asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            for t in done:
                # A task cancelled from outside has no exception to ask for: exception() would raise.
                if t.cancelled():
                    continue
                exc = t.exception()
                if exc is not None:
                    raise exc
        finally:
            stop.set()
            tasks.extend(self.moving.values())
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.registry.save_state()

    async def _every(self, stop: asyncio.Event, period_s: float, job: Callable[[], Awaitable[None]]) -> None:
        # A site period is waited in wall time (phasegate.clock); a clock without real() runs at wall speed.
        real = getattr(self.clock, "real", None)
        wait_s = real(period_s) if real is not None else period_s
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait_s)
                return
            except asyncio.TimeoutError:
                pass
            await job()

    # ------------------------------------------------------------ receive

    def on_reply(self, addr: int, reply: Reply | None) -> None:
        """Called by a link for every poll: the node's reply, or None after timeouts and retries.

        One reply can never stop the polling: whatever its handling raises is
        counted, logged (cut) and kept as a dead letter, and the link goes on.
        """
        if reply is None or not reply.frame.payload:
            return
        payload = reply.frame.payload
        try:
            now = self.clock.monotonic()
            self.registry.last_refusal = None
            m = self.registry.receive(addr, payload, now)
            if m is None:
                if self.registry.last_refusal is not None:
                    self._dead_letter("node:%d" % addr, payload, self.registry.last_refusal, count=False)
                return
            self._handle(m, now)
        except Exception as e:  # noqa: BLE001 - one message must not stop the Pi (module docstring of store)
            self._message_failed("node:%d" % addr, payload, e)

    def _message_failed(self, source: str, payload: bytes, err: BaseException) -> None:
        self.stats["message_failures"] += 1
        n = self.stats["message_failures"]
        if n <= 10 or n % 1000 == 0:
            log.error(
                "%s: message not handled (%d so far): %s: %s", source, n, type(err).__name__, quote(str(err), 200)
            )
        self._dead_letter(source, payload, "%s: %s" % (type(err).__name__, quote(str(err), 200)), count=False)

    def _dead_letter(self, source: str, payload: bytes, error: str, count: bool = True) -> None:
        if count:
            self.stats["message_failures"] += 1
        store = getattr(self.journal, "store", None)
        if store is not None:
            try:
                store.dead_letter(source, payload, error, self.clock.wall())
            except Exception as e:  # noqa: BLE001 - keeping a dead letter must not fail the message loop
                log.error("dead letter of %s not kept: %s", source, quote(str(e), 200))

    def _handle(self, m: Incoming, now: float) -> None:
        if m.kind == msg.READING:
            self._on_reading(m, now)
            return
        if m.kind == msg.EVENT and self.guard is not None:
            self.guard.node_event(m.addr, m.body["code"])
        if m.kind == msg.HEARTBEAT and "phase" in m.body:
            self._verify(m.addr, m.body["phase"], m.seq, now)
        if m.kind in (msg.EVENT, msg.HEARTBEAT) and self.journal is not None:
            self.journal.received(m, self.clock.wall())
        if m.kind == msg.HEARTBEAT and "switch" in m.body:
            self._set_switch_kind(m.addr, m.body["switch"])

    def _set_switch_kind(self, addr: int, kind: int) -> None:
        """The node said what switches it (its heartbeat): the balancer holds it to that kind's limits.

        Until a node says, it is held to the mechanical limits, the strictest.
        """
        if addr not in self.balancer.nodes():
            self._add_to_balancer(addr)
        if self.balancer.switch_kind(addr) != kind:
            log.info("node %d: %s switch", addr, _bal.SWITCH_KINDS[kind])
            self.balancer.set_switch_kind(addr, kind)

    def _on_reading(self, m: Incoming, now: float) -> None:
        self.stats["readings"] += 1
        body = m.body
        addr = m.addr
        if self.journal is not None:
            self.journal.received(m, self.clock.wall())
        if self.registry.nodes[addr].reading_seq != m.seq:
            # Older than the node's latest (delivered late: withheld on the line): a record, not the present.
            return
        if not self._plausible(addr, body):
            self._verify(addr, body["phase"], m.seq, now)
            return
        if addr not in self.balancer.nodes():
            self._add_to_balancer(addr)
        phase = body["phase"]
        current_a = body["current_mA"] / 1000.0
        if body["power_dW"] < 0:
            current_a = -current_a  # the house exports (meters that see direction)
        pf = body["pf_centi"] / 100.0 if body["pf_centi"] > 0 else None
        if self.guard is not None:
            # A node at its influence limit counts only up to its envelope (phasegate.plausibility).
            current_a = self.guard.balance_a(addr, current_a, self.clock.wall())
        # A node with no path down (heard through a LoRa gateway: phasegate.relay) cannot be commanded.
        self.balancer.set_switchable(addr, not body["status"] & msg.ST_NOT_SWITCHABLE and self._downlink(addr))
        try:
            self.balancer.reading(addr, int(now), current_a, pf, phase if phase != _NO_PHASE else None)
        except _bal.BalancerError as e:
            log.warning("node %d: reading not used by the balancer: %s", addr, e)
        self._verify(addr, phase, m.seq, now)

    # ------------------------------------------------------------ verification (evidence, issue 13)

    def _verify(self, addr: int, phase: int | None, seq: int, now: float) -> None:
        """An authentic message from ``addr`` reporting ``phase``, sealed with sequence number ``seq``."""
        p = self.pending.get(addr)
        if p is None:
            return
        if phase == p.to:
            del self.pending[addr]
            self.stats["moves_verified"] += 1
            log.info("node %d: move %s -> %s verified", addr, _name(p.frm), _name(p.to))
            self._event(addr, EV_MOVE_VERIFIED, p.to)
            return
        if p.ack_seq is None or seq <= p.ack_seq:
            return  # sealed before the node handled the move (or no ack to order it by): no evidence
        p.evidence = phase
        if now >= p.deadline:
            del self.pending[addr]
            self._fail(addr, p, phase, now)  # the node itself says, after the move, it is not there

    def _overdue(self, addr: int, p: _Pending, now: float) -> None:
        """``verify_s`` is over and the move is not verified: fail on evidence, else ask the node."""
        del self.pending[addr]
        if p.evidence is not None:
            self._fail(addr, p, p.evidence, now)
            return
        task = asyncio.ensure_future(self._confirm(addr, p))
        self.moving[addr] = task  # kept out of balancing while the Pi asks
        task.add_done_callback(functools.partial(self._moved, addr))

    async def _confirm(self, addr: int, p: _Pending) -> bool:
        """A REPORT command: its ack, bound to the command's id, says where the node is now."""
        node = self.registry.nodes.get(addr)
        if node is None:
            return False
        deadline_s = int(self.clock.wall() + self.command_ttl_s)
        ack = await self._command(addr, self.links[node.link], {"op": msg.OP_REPORT, "deadline_s": deadline_s})
        now = self.clock.monotonic()
        if ack is None:
            self._unconfirmed(addr, p, now)
            return False
        phase = ack.body["phase"]
        if phase == p.to:
            self.stats["moves_verified"] += 1
            log.info("node %d: move %s -> %s verified by its report", addr, _name(p.frm), _name(p.to))
            self._event(addr, EV_MOVE_VERIFIED, p.to)
            return True
        self._fail(addr, p, phase, now)
        return False

    def _unconfirmed(self, addr: int, p: _Pending, now: float) -> None:
        """No authentic word either way: a short suspension only (an attacker on the line must not cost a day)."""
        self.stats["moves_unconfirmed"] += 1
        log.warning(
            "node %d: move %s -> %s unconfirmed (no authentic reply since); kept out of balancing for %d s",
            addr,
            _name(p.frm),
            _name(p.to),
            self.unconfirmed_s,
        )
        self.suspended[addr] = max(self.suspended.get(addr, now), now + self.unconfirmed_s)
        self._event(addr, EV_MOVE_UNCONFIRMED, p.to)
        self._event(addr, EV_SUSPENDED, self.unconfirmed_s)

    def _fail(self, addr: int, p: _Pending, phase: int | None, now: float) -> None:
        self.stats["moves_failed"] += 1
        self._period.failed += 1
        log.warning(
            "node %d: move %s -> %s did not take (node reports %s); suspended from balancing for %d s",
            addr,
            _name(p.frm),
            _name(p.to),
            _name(phase),
            self.suspend_s,
        )
        if phase in (msg.PHASE_A, msg.PHASE_B, msg.PHASE_C):
            self.balancer.set_phase(addr, phase)
        self.suspended[addr] = now + self.suspend_s
        # No phase known (a node re-keyed or re-added while its move was pending starts from a fresh
        # NodeState): the event says "no phase" rather than failing the round on int(None).
        self._event(addr, EV_MOVE_FAILED, _NO_PHASE if phase is None else phase, alarm=True)
        self._event(addr, EV_SUSPENDED, self.suspend_s)

    # ------------------------------------------------------------ plausibility (phasegate.plausibility)

    def _plausible(self, addr: int, body: dict[str, Any]) -> bool:
        """Whether a reading may reach the balancer: the guard's checks, and no quarantine."""
        if self.guard is None:
            return True
        ok = self.guard.reading(addr, body, self.clock.wall())
        self._guard_report()
        return ok and not self.guard.is_quarantined(addr)

    def _guard_report(self) -> None:
        """Journal the guard's findings; take quarantined nodes out of the balancer, put released ones back."""
        guard = self.guard
        if guard is None:
            return
        for addr, code, value, alarm in guard.take_findings():
            self._event(addr, code, value, alarm=alarm)
        entered, left = guard.take_transitions()
        for addr in entered:
            # Removed, not locked: without a meter a locked node's estimate still counts as load.
            if addr in self.balancer.nodes():
                self.balancer.remove_node(addr)
            self.pending.pop(addr, None)
        for addr in left:
            if addr in self.registry.nodes:
                self._add_to_balancer(addr)

    # ------------------------------------------------------------ rounds

    async def balance_round(self) -> None:
        """One control round: statuses, meter, plan, moves; then the period's summary when due."""
        now = self.clock.monotonic()
        self.stats["rounds"] += 1
        for addr, old, new in self.registry.update(now):
            log.info("node %d: %s -> %s", addr, old, new)
            self._event(addr, EV_LIVENESS[("online", "stale", "offline").index(new)], 0)
        for addr in [a for a, p in self.pending.items() if now >= p.deadline]:
            self._overdue(addr, self.pending[addr], now)
        if self.guard is not None:
            self.guard.tick(self.clock.wall())
            self._guard_report()
        self._sync_statuses(now)
        meter = await self._read_meter()
        if meter is not None and self.guard is not None:
            self.guard.meter_round(self.clock.wall(), (meter[0], meter[2], meter[4]))
            self._guard_report()
        # Paused by an operator: no plan at all (the balancer counts nothing it did not do).
        moves = [] if self.paused else self.balancer.plan(int(now), meter)
        if moves and meter is None and self.guard is not None:
            # No meter this round: bound what one node's claims can move (phasegate.plausibility).
            moves = self.guard.vet(self.balancer, int(now), moves, self.clock.wall())
            self._guard_report()
        self.last_components = self._period.add_round(self, meter)
        started = []
        for addr, frm, to in moves:
            self.stats["moves_planned"] += 1
            task = asyncio.ensure_future(self.move(addr, frm, to))
            self.moving[addr] = task
            task.add_done_callback(functools.partial(self._moved, addr))
            started.append(task)
        if started:
            # On RS-485 a move is answered within milliseconds; on a class-A LoRa link the
            # command waits for the node's next uplink window, and the round goes on meanwhile.
            await asyncio.wait(started, timeout=self.ack_timeout_s)
        self.registry.save_state()
        if self.guard is not None:
            self.guard.save()
        if self._period.elapsed(now, self.summary_period_s):
            self._summary(now)

    def _moved(self, addr: int, task: asyncio.Task[bool]) -> None:
        if self.moving.get(addr) is task:
            del self.moving[addr]
        if not task.cancelled() and task.exception() is not None:
            log.error("node %d: move failed with %s", addr, quote(task.exception()))

    def _sync_statuses(self, now: float) -> None:
        for addr in self.balancer.nodes():
            node = self.registry.nodes.get(addr)
            if node is None:
                continue
            if addr in self.suspended and now >= self.suspended[addr]:
                del self.suspended[addr]
                log.info("node %d: suspension over, balancing it again", addr)
            if node.liveness == "offline" or node.phase is None:
                status = _bal.OFFLINE
            elif node.liveness == "stale":
                status = _bal.STALE
            elif (
                node.locked_out
                or addr in self.suspended
                or addr in self.pending
                or addr in self.moving
                or node.phase == _NO_PHASE
                or node.status & msg.ST_SWITCHING
            ):
                status = _bal.LOCKED
            else:
                status = _bal.ONLINE
            self.balancer.set_status(addr, status)

    async def _read_meter(self) -> Components | None:
        self.last_meter = None
        if self.meter is None:
            return None
        try:
            r = await self.meter.read()
        except Exception as e:  # noqa: BLE001 - any meter failure: balance on node readings, say so
            self.stats["meter_failures"] += 1
            self._period.meter_fault = True
            log.warning("transformer meter read failed: %s", quote(str(e), 300))
            self._dead_letter("meter", b"", "%s: %s" % (type(e).__name__, quote(str(e), 200)), count=False)
            self._event(0, EV_METER_FAILED, 0)
            return None
        self._period.meter = r
        self.last_meter = r
        return meter_components(r, self.balancer.config.default_pf)

    async def move(self, addr: int, frm: int, to: int, deadline_s: int | None = None) -> bool:
        """Carry out one move: time heartbeat, sealed MOVE, ack; DONE moves wait for verification."""
        node = self.registry.nodes[addr]
        link = self.links[node.link]
        verify_s = max(self.verify_s, getattr(link, "verify_s", 0.0))
        if deadline_s is None:
            deadline_s = int(self.clock.wall() + max(self.command_ttl_s, self._command_timeout(link)))
        fields: dict[str, Any] = {"op": msg.OP_MOVE, "deadline_s": deadline_s, "phase": to, "expect_phase": frm}
        if node.reading_seq is not None:
            fields["ref_seq"] = node.reading_seq
        ack = await self._command(addr, link, fields)
        if ack is None:
            # It may have moved all the same: verify from its messages like a DONE move (without an
            # ack to order them by, only its report to a REPORT command can say it failed).
            self.pending[addr] = _Pending(frm, to, self.clock.monotonic() + verify_s)
            return False
        outcome = ack.body["outcome"]
        if outcome == msg.ACK_DONE:
            self.stats["moves_done"] += 1
            self._period.moves += 1
            self.pending[addr] = _Pending(frm, to, self.clock.monotonic() + verify_s, ack.seq)
            log.info(MOVE_ACKNOWLEDGED, addr, _name(frm), _name(to))
            return True
        self.stats["moves_refused"] += 1
        self._period.failed += 1
        reason = ack.body.get("reason")
        log.info(
            "node %d: move %s -> %s %s (%s)",
            addr,
            _name(frm),
            _name(to),
            _label(msg.OUTCOME_NAMES, outcome),
            _label(msg.REASON_NAMES, reason),
        )
        if ack.body["phase"] in (msg.PHASE_A, msg.PHASE_B, msg.PHASE_C):
            self.balancer.set_phase(addr, ack.body["phase"])
        self._event(addr, EV_MOVE_REFUSED, reason if reason is not None else outcome)
        return False

    def on_operator_command(self, payload: bytes) -> asyncio.Task[bool] | None:
        """An operator command from the uplink (``phasegate.operator`` payload); verified, then carried out."""
        if self.operator_gate is None:
            log.warning("operator command refused: no operators configured ([uplink] operators)")
            return None
        from phasegate.operator import OperatorRefused

        try:
            addr, fields = self.operator_gate.open(payload, self.clock.wall())
            if addr != 0 and addr not in self.registry.nodes:
                raise OperatorRefused("unknown_node", "node %d is not in the registry" % addr)
        except OperatorRefused as e:
            self._operator_refused(e.reason, payload, str(e))
            return None
        except Exception as e:  # noqa: BLE001 - the gate raises only refusals; anything else is one bad message
            self._message_failed("command", payload, e)
            return None
        return asyncio.ensure_future(self.operator_command(addr, fields))

    def on_oversize_command(self, size: int) -> None:
        """A command payload the uplink refused unread for its size (``phasegate.uplink``)."""
        self._operator_refused("too_large", b"", "command of %d bytes refused unread" % size)

    def _operator_refused(self, reason: str, payload: bytes, detail: str) -> None:
        """Count a refusal; an alarm at most once per reason a minute, a (rate-limited) dead letter."""
        self.stats["operator_refused"] += 1
        now = self.clock.monotonic()
        last = self._refusal_journaled.get(reason)
        if last is None or now - last >= _REFUSAL_EVENT_S:
            self._refusal_journaled[reason] = now
            index = OPERATOR_REASONS.index(reason) if reason in OPERATOR_REASONS else 0
            self._event(0, EV_OPERATOR_REFUSED, index, alarm=True)
        else:
            self.stats["operator_refusals_unjournaled"] += 1
        self._dead_letter("command", payload, detail, count=False)

    async def operator_command(self, addr: int, fields: dict[str, Any]) -> bool:
        """Carry out an operator command that ``OperatorGate`` accepted, through the node's own safety.

        ``addr`` 0: the transformer's own command (PAUSE or RESUME of the balancer), carried out here.
        """
        if addr == 0:
            return self.set_paused(fields)
        node = self.registry.nodes[addr]
        if fields["op"] == msg.OP_MOVE:
            if node.phase not in (msg.PHASE_A, msg.PHASE_B, msg.PHASE_C) or addr in self.moving:
                self._event(addr, EV_OPERATOR_REFUSED, OPERATOR_REASONS.index("no_phase"), alarm=True)
                return False
            phase = node.phase
            assert phase is not None  # A, B or C: checked above
            task = asyncio.ensure_future(self.move(addr, phase, fields["phase"], deadline_s=fields["deadline_s"]))
            self.moving[addr] = task
            task.add_done_callback(lambda t: self._moved(addr, t))
            return await task
        fields = dict(fields)
        del fields["id"]  # the Pi numbers what it sends to the node
        ack = await self._command(addr, self.links[node.link], fields)
        if ack is None:
            return False
        done = ack.body["outcome"] == msg.ACK_DONE
        if done and fields["op"] == msg.OP_UNLOCK and self.suspended.pop(addr, None) is not None:
            log.info("node %d: operator unlock also ends its suspension from balancing", addr)
        if done and fields["op"] == msg.OP_UNLOCK and self.guard is not None:
            if self.guard.release(addr, self.clock.wall()):
                log.info("node %d: operator unlock also ends its quarantine", addr)
            self._guard_report()
        return done

    def set_paused(self, fields: Mapping[str, Any]) -> bool:
        """PAUSE or RESUME the balancer (an operator command for node 0); persisted, journaled; True if done.

        A pause takes effect even if it cannot be saved (the safe side); a resume
        that cannot be saved leaves the balancer paused. Either failure is
        answered FAILED (reason PERSIST), as a node answers a lock it cannot save.
        """
        op = fields["op"]
        if op not in TRANSFORMER_OPS:
            raise ValueError("not a balancer command: op %s" % quote(op))
        pause = op == msg.OP_PAUSE
        now = int(self.clock.wall())
        since = self.paused_since
        was = self.paused
        outcome, reason = msg.ACK_DONE, 0
        if pause:
            self.paused = True
            self.paused_since = since if was else now
        if self.pause_path is not None:
            try:
                write_pause_state(self.pause_path, pause, self.paused_since if pause else None)
            except OSError as e:
                log.error("balancer %s not saved to %s: %s", "pause" if pause else "resume", self.pause_path, e)
                outcome, reason = msg.ACK_FAILED, codes.R_PERSIST
        if not pause and outcome == msg.ACK_DONE:
            self.paused, self.paused_since = False, None
        if self.paused != was:
            if self.paused:
                log.warning("balancer paused by an operator: no automatic moves until RESUME")
                self._event(0, EV_PAUSED, 0)
            else:
                log.warning("balancer resumed by an operator")
                self._event(0, EV_RESUMED, max(0, now - since) if since is not None else 0)
        if self.journal is not None:
            ack = {"id": fields["id"], "outcome": outcome, "phase": _NO_PHASE}
            if reason:
                ack["reason"] = reason
            self.journal.pi_ack(dict(fields), ack, self.clock.wall())
        return outcome == msg.ACK_DONE

    async def command(self, addr: int, fields: Mapping[str, Any]) -> Incoming | None:
        """A command to node ``addr`` over its link: time heartbeat, numbered, sealed, journaled; its ack or None."""
        node = self.registry.nodes[addr]
        return await self._command(addr, self.links[node.link], dict(fields))

    async def heartbeat(self, addr: int) -> None:
        """The time heartbeat to node ``addr`` (echoing its boot nonce), its answer journaled."""
        node = self.registry.nodes[addr]
        await self._send_heartbeat(addr, self.links[node.link])

    def event(self, addr: int, code: int, value: float, alarm: bool = False) -> None:
        """Journal an event of the Pi's own about node ``addr`` (0: the Pi or the transformer)."""
        self._event(addr, code, value, alarm)

    def handle(self, m: Incoming) -> None:
        """A node message that reached the Pi outside the polling (a reply to a request): journaled as a poll's."""
        self._handle(m, self.clock.monotonic())

    def hold(self, addr: int, seconds: float) -> None:
        """Keep node ``addr`` out of balancing for ``seconds`` (a firmware update reboots it)."""
        self.suspended[addr] = max(self.suspended.get(addr, 0.0), self.clock.monotonic() + seconds)

    def release(self, addr: int) -> None:
        """End a ``hold`` (and any suspension) of node ``addr``."""
        self.suspended.pop(addr, None)

    def _downlink(self, addr: int) -> bool:
        """Whether the Pi can send to ``addr`` (not a node heard only through a LoRa gateway)."""
        node = self.registry.nodes.get(addr)
        return node is not None and getattr(self.links.get(node.link), "downlink", True)

    def _command_timeout(self, link: NodeLink) -> float:
        # A class-A LoRa link reaches a node only after its next uplink: the link says how long that may take.
        return getattr(link, "command_timeout_s", self.ack_timeout_s)

    async def _command(self, addr: int, link: NodeLink, fields: dict[str, Any]) -> Incoming | None:
        """Time heartbeat, then the sealed command (numbered here) and its ack, journaled; None if none came."""
        await self._send_heartbeat(addr, link)
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        fields["id"] = self._next_id
        try:
            ack = await asyncio.wait_for(
                self.registry.command(link, addr, fields, self.clock.monotonic()), self._command_timeout(link)
            )
        except (CommandError, asyncio.TimeoutError) as e:
            self.stats["no_ack"] += 1
            log.warning("node %d: no valid ack for %s: %s", addr, msg.OP_NAMES.get(fields["op"]), e)
            self._event(addr, EV_NO_ACK, fields["id"])
            ack = None
        if self.journal is not None:
            self.journal.command(fields, ack, self.clock.wall())
        return ack

    async def heartbeat_round(self) -> None:
        """A Pi heartbeat (with the time) to every node that is not offline; nodes answer with theirs."""
        for addr in sorted(self.registry.nodes):
            node = self.registry.nodes[addr]
            if node.liveness == "offline" or not self._downlink(addr):
                continue
            await self._send_heartbeat(addr, self.links[node.link])

    async def _send_heartbeat(self, addr: int, link: NodeLink) -> None:
        """A sealed Pi heartbeat with the time, echoing the node's boot nonce (its proof of freshness).

        A node that rebooted answers with a new nonce: on a polled link a second
        heartbeat echoes it at once, so the command that follows is not refused NO_TIME.
        """
        now = self.clock.monotonic()
        echoed = self.registry.nodes[addr].boot_nonce
        reply_nonce = await self._heartbeat_to(addr, link, now, echoed)
        if reply_nonce is not None and reply_nonce != echoed:
            await self._heartbeat_to(addr, link, now, reply_nonce)

    async def _heartbeat_to(self, addr: int, link: NodeLink, now: float, echo: int | None) -> int | None:
        uptime = int(now - self._t_start) if self._t_start is not None else 0
        fields: dict[str, Any] = {"uptime_s": max(0, uptime), "fw": FW_VERSION, "time_s": int(self.clock.wall())}
        if echo is not None:
            fields["echo"] = echo
        payload = self.registry.seal(addr, msg.HEARTBEAT, fields)
        if hasattr(link, "push"):
            # Class-A LoRa: the heartbeat rides the node's next receive window and nothing answers it.
            await link.push(addr, payload, self._command_timeout(link))
            return None
        reply = await link.request(addr, payload)
        if reply is not None and reply.frame.payload:
            m = self.registry.receive(addr, reply.frame.payload, self.clock.monotonic())
            if m is not None:
                self._handle(m, now)
                if m.kind == msg.HEARTBEAT:
                    nonce: int | None = m.body.get("boot_nonce")
                    return nonce
        return None

    # ------------------------------------------------------------ journal

    def _event(self, addr: int, code: int, value: float, alarm: bool = False) -> None:
        if self.journal is not None:
            self.journal.pi_event(addr, code, value, alarm, self.clock.wall())

    def _summary(self, now: float) -> None:
        fields = self._period.summary(self, now)
        self._period = _Period(start=now)
        if fields is not None and self.journal is not None:
            self.journal.summary(fields, self.clock.wall())


class _Period:
    """What one summary period saw: per-round phase currents, unbalance and moves."""

    def __init__(self, start: float | None = None):
        self.start = start
        self.rounds = 0
        self.sum_i = [0.0, 0.0, 0.0]
        self.sum_n = 0.0
        self.sum_cuf = 0.0
        self.max_cuf = 0.0
        self.sum_v = [0.0, 0.0, 0.0]
        self.sum_p = [0.0, 0.0, 0.0]
        self.v_rounds = 0
        self.p_rounds = 0
        self.moves = 0
        self.failed = 0
        self.meter: ThreePhaseReading | None = None
        self.meter_fault = False
        self.no_meter = False

    def elapsed(self, now: float, period_s: float) -> bool:
        if self.start is None:
            self.start = now
        return now - self.start >= period_s

    def add_round(self, ctl: Controller, meter: Components | None) -> Components | None:
        """Phase currents of this round: the meter's, or the sum of fresh node readings without one."""
        if meter is None:
            self.no_meter = ctl.meter is None
            out = ctl.guard.quarantined if ctl.guard is not None else ()
            comps = node_components(ctl.registry, ctl.balancer.config.default_pf, exclude=out)
        else:
            comps = meter
        if comps is None:
            return None
        pa, qa, pb, qb, pc, qc = comps
        mags = metrics.phase_magnitudes(pa, qa, pb, qb, pc, qc)
        self.rounds += 1
        for i in range(3):
            self.sum_i[i] += mags[i]
        self.sum_n += metrics.neutral_rel(pa, qa, pb, qb, pc, qc)
        c = metrics.cuf(*mags)
        self.sum_cuf += c
        self.max_cuf = max(self.max_cuf, c)
        r = self.meter
        if meter is not None and r is not None:
            self.v_rounds += 1
            for i in range(3):
                self.sum_v[i] += r.voltages[i]
            if r.powers is not None:
                self.p_rounds += 1
                for i in range(3):
                    self.sum_p[i] += r.powers[i]
        self.meter = None
        return comps

    def summary(self, ctl: Controller, now: float) -> dict[str, int | list[int]] | None:
        """Fields of a phasecore.msg summary, or None if no round had any current to report."""
        if self.rounds == 0:
            return None
        start = self.start
        assert start is not None  # elapsed() set it before the controller asks for the summary
        n = float(self.rounds)
        fields: dict[str, int | list[int]] = {
            "time_s": int(ctl.clock.wall()),
            "period_s": max(1, min(86400, int(round(now - start)))),
            "i_dA": [_clip(round(10 * x / n), 0, 100000) for x in self.sum_i],
            "i_n_dA": _clip(round(10 * self.sum_n / n), 0, 100000),
            "cuf_pm": _clip(round(1000 * self.sum_cuf / n), 0, 2000),
            "cuf_max_pm": _clip(round(1000 * self.max_cuf), 0, 2000),
            "nodes": ctl.registry.counts(),
            "moves": min(self.moves, 65535),
            "moves_failed": min(self.failed, 65535),
            "flags": (1 if self.no_meter else 0) | (2 if self.meter_fault else 0) | (4 if ctl.paused else 0),
        }
        if self.v_rounds:
            fields["v_dV"] = [_clip(round(10 * x / self.v_rounds), 0, 3000) for x in self.sum_v]
        if self.p_rounds:
            fields["p_W"] = [_clip(round(x / self.p_rounds), -(10**7), 10**7) for x in self.sum_p]
        return fields


class PauseStateError(ProtocolError, ValueError):
    """The pause state file is damaged or unreadable: the balancer stays paused."""


def _pause_crc(paused: bool, since: int | None) -> str:
    core = json.dumps({"format": PAUSE_FORMAT, "paused": paused, "since_s": since}, sort_keys=True)
    return "%08x" % zlib.crc32(core.encode("utf-8"))


def read_pause_state(path: str | os.PathLike[str]) -> tuple[bool, int | None]:
    """``(paused, since Unix s or None)`` from the pause state file; not paused if it is missing.

    ``PauseStateError`` if it is damaged or unreadable (the caller keeps the balancer paused).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except FileNotFoundError:
        return False, None
    except OSError as e:
        raise PauseStateError("balancer state %s cannot be read: %s" % (path, e)) from e
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise PauseStateError("balancer state %s is damaged (not JSON: %s)" % (path, quote(str(e)))) from None
    if not isinstance(data, dict) or type(data.get("format")) is not int or data["format"] != PAUSE_FORMAT:
        raise PauseStateError("balancer state %s is damaged or of an unknown format" % path)
    paused, since = data.get("paused"), data.get("since_s")
    if type(paused) is not bool or not (since is None or (type(since) is int and 0 <= since <= 0xFFFFFFFF)):
        raise PauseStateError("balancer state %s is damaged (paused or since_s)" % path)
    if data.get("crc") != _pause_crc(paused, since):
        raise PauseStateError("balancer state %s is damaged (checksum does not match)" % path)
    return paused, since


def write_pause_state(path: str | os.PathLike[str], paused: bool, since: int | None) -> None:
    """Write the pause state atomically (temporary file, fsync, rename, fsync of the folder); OSError if not."""
    path = str(path)
    data = {"format": PAUSE_FORMAT, "paused": paused, "since_s": since, "crc": _pause_crc(paused, since)}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def meter_components(r: ThreePhaseReading, default_pf: float = 0.95) -> Components:
    """Per-phase active and reactive current (P/V, Q/V) from a ThreePhaseReading, as the balancer wants."""
    out: list[float] = []
    for i in range(3):
        current = r.currents[i]
        v = r.voltages[i]
        if r.powers is not None and v > 1.0:
            ip = r.powers[i] / v
            # |ip| may exceed the measured current by rounding; reactive part cannot be negative.
            iq = math.sqrt(max(current * current - ip * ip, 0.0))
        else:
            pf = r.pfs[i] if r.pfs is not None and 0.0 < abs(r.pfs[i]) <= 1.0 else default_pf
            ip = current * abs(pf)
            iq = current * math.sqrt(1.0 - pf * pf)
        out.extend((ip, iq))
    return tuple(out)


def node_components(registry: Registry, default_pf: float = 0.95, exclude: Container[int] = ()) -> Components | None:
    """Per-phase (ip, iq) summed over fresh node readings (a site without a transformer meter).

    ``exclude``: addresses left out (quarantined nodes: their claims are not counted).
    """
    tot = [0.0] * 6
    seen = False
    for node in registry.nodes.values():
        r = node.reading
        if r is None or node.liveness != "online" or r["phase"] not in (0, 1, 2) or node.addr in exclude:
            continue
        pf = r["pf_centi"] / 100.0 if r["pf_centi"] > 0 else default_pf
        i = r["current_mA"] / 1000.0 * (-1.0 if r["power_dW"] < 0 else 1.0)
        ip, iq = metrics.load_components(i, pf)
        tot[2 * r["phase"]] += ip
        tot[2 * r["phase"] + 1] += iq
        seen = True
    return tuple(tot) if seen else None


def _poll_period(links: Mapping[str, NodeLink]) -> float:
    periods = [getattr(link, "poll_period_s", 10.0) for link in links.values()]
    return max(periods) if periods else 10.0


def _clip(x: float, lo: int, hi: int) -> int:
    return lo if x < lo else hi if x > hi else int(x)


def _label(names: Sequence[str], code: object) -> str:
    return names[code] if isinstance(code, int) and 0 <= code < len(names) else str(code)


def _name(phase: object) -> str:
    return "ABC-"[phase] if isinstance(phase, int) and 0 <= phase <= 3 else "?"
