"""The alarm engine: conditions from the rules become alarms with a lifecycle, propagate up the tree, and notify.

``AlarmEngine(db, settings, clock, dispatcher)``:

- ``on_batch(site, transformer, kind, records)`` after ingest committed a
  batch, ``on_status(site, transformer, text)`` for the Pi's retained status:
  evaluation driven by the data;
- ``sweep()`` (and ``await run(stop)``, which calls it every ``sweep_s`` and
  at the next moment a silence can start): evaluation driven by time, read
  from the injected clock (``phaseserver.clock``) so site time works;
  escalation of unacknowledged alarms; the notifier's backlog alarm;
- ``acknowledge`` and ``clear`` (the API's; they return the alarm before and
  after, for the audit log).

Lifecycle: raised -> acknowledged -> cleared, each with who, when and a
comment (``alarm_event`` keeps every step). One active alarm per (object,
type): a condition that holds again while its alarm is active updates it in
place (severity, value, detail); once cleared, the next occurrence is a new
episode. The rules clear with hysteresis; a person may clear any alarm (a
condition that still holds is raised again as a new episode; a latched one,
a relay fault, only by a new event). Propagation: ``worst(alarms)`` gives each
node, transformer and site the worst active alarm of itself and its
children.

The one thing to know: the engine is quick when nothing changes (the rules
are edge-triggered and in memory: a batch that changes no condition costs no
SQL), and every change is one transaction holding the alarm row, its history
and its notifications' outbox rows, so a crash cannot notify an alarm that was
not stored, nor store one without its notification.
"""

import asyncio
import logging
import threading
import time
from typing import Any, Callable, Iterable, NamedTuple

from phasecore.errors import quote
from phaseserver.alarms.rules import NOTIFY_BACKLOG, SERVER, TYPES, Condition, Obj, Rules
from phaseserver.alarms.settings import AlarmSettings
from phaseserver.alarms.store import AlarmStore, obj_of
from phaseserver.errors import ServerError
from phaseuplink.records import Record

log = logging.getLogger(__name__)

__all__ = ("AlarmEngine", "AlarmNotFound", "AlarmStateError", "Worst", "worst")

_SAVE_EVERY_S = 60.0  # wall seconds between saves of the rules' memory
_RATINGS_EVERY_S = 300.0  # wall seconds between reloads of installer-set ratings
_STATUS_WORDS = {"online": True, "offline": False}
_RETRY_MAX = 10000  # condition changes kept for the next transaction when one fails (the database was away)

# Called inside the transaction of an acknowledgement or clear: (database, before, after); the API's audit entry.
OnChange = Callable[[Any, dict[str, Any], dict[str, Any]], None]


class AlarmNotFound(ServerError, LookupError):
    """No alarm with that id in the caller's tenant."""


class AlarmStateError(ServerError, ValueError):
    """The alarm is not in a state that allows the action (already acknowledged or cleared)."""


class Worst(NamedTuple):
    """The worst active alarm of an object and its children: its severity, id and type, and how many there are."""

    severity: int
    alarm_id: int
    type: str
    alarms: int


def worst(alarms: Iterable[dict[str, Any]]) -> dict[str, Worst]:
    """Propagation node -> transformer -> site: object key -> ``Worst`` over itself and its children.

    ``alarms`` are active alarm rows; ties in severity go to the oldest alarm.
    """
    out: dict[str, Worst] = {}
    for a in sorted(alarms, key=lambda a: a["id"]):
        o = obj_of(a)
        keys = [o.key]
        if o.node is not None:
            keys.append(Obj(o.site, o.transformer).key)
        if o.transformer is not None:
            keys.append(Obj(o.site).key)
        for k in keys:
            w = out.get(k)
            if w is None:
                out[k] = Worst(a["severity"], a["id"], a["type"], 1)
            elif a["severity"] > w.severity:
                out[k] = Worst(a["severity"], a["id"], a["type"], w.alarms + 1)
            else:
                out[k] = w._replace(alarms=w.alarms + 1)
    return out


class AlarmEngine:
    """Alarms from the data, with lifecycle and notifications; see the module docstring."""

    def __init__(
        self,
        db: Any,
        settings: AlarmSettings,
        clock: Any,
        dispatcher: Any = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self.dispatcher = dispatcher
        self.store = AlarmStore(db)
        self.rules = Rules(settings)
        self._lock = threading.RLock()
        self._monotonic = monotonic
        self._saved_at = monotonic()
        self._ratings_at = -_RATINGS_EVERY_S
        self._base_ratings = dict(settings.ratings)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = {"raised": 0, "updated": 0, "cleared": 0, "acknowledged": 0, "escalated": 0, "errors": 0}
        self.started = False
        self._status_s = -1.0  # the newest transformer.status_s seen (statuses are read from the table)
        self._retry: list[Condition] = []

    # ------------------------------------------------------------ start

    def start(self) -> None:
        """Load what survives a restart: active alarms (so their end is seen) and the rules' memory."""
        with self._lock:
            active = self.store.active()
            self.rules.restore_active((a["object"], a["type"], a["severity"]) for a in active)
            nodes, streams = self.store.load_memory()
            self.rules.restore_nodes(nodes, streams, self.clock.now())
            self._reload_ratings()
            self.started = True

    # ------------------------------------------------------------ evaluation driven by the data

    def on_batch(
        self, site: str, transformer: str, kind: str, records: list[Record], received_s: float | None = None
    ) -> int:
        """A committed batch; returns the number of alarm changes it caused. Never raises (counted, logged)."""
        now = self.clock.now()
        # The rules reason with the arrival time; the alarm's own times say when it changed (now).
        arrived = now if received_s is None else received_s
        try:
            with self._lock:
                return self._apply(self.rules.observe(site, transformer, kind, records, arrived), now)
        except Exception:
            self.stats["errors"] += 1
            log.exception("alarms: evaluation of a %s batch from %s/%s failed", kind, site, transformer)
            return 0

    def on_committed(self, committed: list[Any]) -> None:
        """The ingest core's listener (``IngestCore.listeners``): each committed batch, on the ingest thread.

        It does not wake the sweep (that would cost a sweep per batch): what a batch shows is evaluated
        here, and new data moves the clock's next silence of a known node only later, so the sweep's
        plan errs early; a node first heard between sweeps is planned by the next one, ``sweep_s`` on.
        """
        for c in committed:
            if c.kind == "status":
                self.on_status(c.site, c.transformer, getattr(c, "status", ""), c.received_s)
            else:
                self.on_batch(c.site, c.transformer, c.kind, list(c.records), c.received_s)

    def on_status(self, site: str, transformer: str, text: str, received_s: float | None = None) -> int:
        """The Pi's retained status message (``online`` / ``offline``); other text is ignored."""
        online = _STATUS_WORDS.get(text.strip().lower())
        if online is None:
            log.warning("alarms: status %s of %s/%s is neither online nor offline", quote(text), site, transformer)
            return 0
        arrived = self.clock.now() if received_s is None else received_s
        try:
            with self._lock:
                return self._apply(self.rules.observe_status(site, transformer, online, arrived), self.clock.now())
        except Exception:
            self.stats["errors"] += 1
            log.exception("alarms: status of %s/%s failed", site, transformer)
            return 0

    # ------------------------------------------------------------ evaluation driven by time

    def sweep(self) -> int:
        """Silences, Pi offline, quiet authentication, escalation, the notifier's backlog; saves memory."""
        now = self.clock.now()
        with self._lock:
            changes = self._poll_status()
            changes += self._apply(self.rules.sweep(now), now)
            changes += self._escalate(now)
            changes += self._notify_backlog(now)
            mono = self._monotonic()
            if mono - self._saved_at >= _SAVE_EVERY_S:
                self.save()
            if mono - self._ratings_at >= _RATINGS_EVERY_S:
                self._reload_ratings()
        return changes

    def save(self) -> None:
        """Save the rules' memory of nodes (also at a clean stop)."""
        with self._lock:
            nodes, streams = self.rules.export()
            if nodes or streams:
                with self.db.transaction():
                    self.store.save_memory(nodes, streams)
            self._saved_at = self._monotonic()

    def next_sweep_s(self) -> float:
        """Wall seconds until the sweep should run: ``sweep_s`` or sooner when a silence is due."""
        now = self.clock.now()
        with self._lock:
            due = self.rules.next_due(now)
        wait = self.settings.sweep_s
        if due is not None:
            wall_delay = getattr(self.clock, "wall_delay", None)
            until = wall_delay(due - now) if wall_delay else due - now
            wait = min(wait, until)
        return max(0.0, wait)

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep until ``stop`` is set (in a worker thread: the SQL must not stall the event loop)."""
        if not self.started:
            await asyncio.to_thread(self.start)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            while not stop.is_set():
                try:
                    await asyncio.to_thread(self.sweep)
                except Exception:
                    self.stats["errors"] += 1
                    log.exception("alarms: sweep failed")
                wait = self.next_sweep_s()
                self._wake.clear()
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
                await asyncio.wait(waits, timeout=max(wait, 0.01), return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        finally:
            await asyncio.to_thread(self.save)

    def wake(self) -> None:
        """Re-plan the next sweep now (any thread): new data may move the next silence earlier."""
        loop, ev = self._loop, self._wake
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    # ------------------------------------------------------------ people

    def acknowledge(
        self, alarm_id: int, tenant: str | None, actor: str, comment: str = "", on_change: OnChange | None = None
    ) -> tuple[dict, dict]:
        """Acknowledge an alarm (active or cleared) of ``tenant`` (None: any); returns ``(before, after)``.

        ``on_change(db, before, after)`` runs inside the same transaction (the audit entry), so the
        acknowledgement and its record commit together or not at all.
        """
        now = self.clock.now()
        with self._lock:
            with self.db.transaction():
                before = self.store.get(alarm_id, tenant)
                if before is None:
                    raise AlarmNotFound("no alarm %d" % alarm_id)
                if before["acked_s"] is not None:
                    raise AlarmStateError("alarm %d was acknowledged by %s" % (alarm_id, before["acked_by"]))
                self.store.acknowledge(alarm_id, actor, comment, now)
                self.store.event(alarm_id, before["tenant_id"], now, "acknowledged", actor, comment or None, None)
                after = self.store.get(alarm_id)
                assert after is not None
                if on_change is not None:
                    on_change(self.db, before, after)
            self.stats["acknowledged"] += 1
        assert after is not None
        return before, after

    def clear(
        self, alarm_id: int, tenant: str | None, actor: str, comment: str = "", on_change: OnChange | None = None
    ) -> tuple[dict, dict]:
        """Clear an active alarm by hand; returns ``(before, after)``; notifies the end like any clear.

        ``on_change`` as for ``acknowledge``.
        """
        now = self.clock.now()
        with self._lock:
            with self.db.transaction():
                before = self.store.get(alarm_id, tenant)
                if before is None:
                    raise AlarmNotFound("no alarm %d" % alarm_id)
                if before["cleared_s"] is not None:
                    raise AlarmStateError("alarm %d was cleared by %s" % (alarm_id, before["cleared_by"]))
                after = self._clear(before, actor, comment or None, now)
                if on_change is not None:
                    on_change(self.db, before, after)
            self.rules.forget(before["object"], before["type"])
        self._wake_dispatcher()
        return before, after

    # ------------------------------------------------------------ applying conditions

    def _apply(self, conditions: list[Condition], now: float) -> int:
        if self._retry:
            # The rules are edge-triggered: changes a failed transaction lost are applied first, in order.
            conditions, self._retry = self._retry + conditions, []
        if not conditions:
            return 0
        changes = 0
        try:
            with self.db.transaction():
                for c in conditions:
                    changes += self._one(c, now)
        except Exception:
            self._retry = conditions[-_RETRY_MAX:]
            raise
        if changes:
            self._wake_dispatcher()
        return changes

    def _one(self, c: Condition, now: float) -> int:
        current = self.store.find_active(c.obj.key, c.type)
        if c.active:
            if current is None:
                alarm = self.store.insert(c, self.store.tenant_of(c.obj.site), now)
                if alarm is None:  # raised meanwhile by another process: update that one
                    current = self.store.find_active(c.obj.key, c.type)
                    if current is None:
                        return 0
                else:
                    self.stats["raised"] += 1
                    log.info("alarms: raised %s %s (severity %d)", c.type, c.obj.key, c.severity)
                    self._notify(alarm, "raised", now)
                    return 1
            alarm = self.store.update(current, c, now)
            self.stats["updated"] += 1
            if alarm["max_severity"] > current["max_severity"]:
                self._notify(alarm, "raised", now)  # it may have reached the notified severities just now
            return 1
        if current is None:
            return 0
        self._clear(current, "system", None, now)
        return 1

    def _clear(self, alarm: dict[str, Any], actor: str, comment: str | None, now: float) -> dict[str, Any]:
        self.store.clear(alarm["id"], actor, comment, now)
        self.store.event(alarm["id"], alarm["tenant_id"], now, "cleared", actor, comment, None)
        after = self.store.get(alarm["id"])
        assert after is not None
        self.stats["cleared"] += 1
        log.info("alarms: cleared %s %s by %s", alarm["type"], alarm["object"], actor)
        self._notify(after, "cleared", now)
        return after

    def _notify(self, alarm: dict[str, Any], transition: str, now: float) -> None:
        if self.dispatcher is not None:
            self.dispatcher.enqueue(self.db, alarm, transition, now)

    def _wake_dispatcher(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def _escalate(self, now: float) -> int:
        d = self.dispatcher
        if d is None or not d.escalate_after_s:
            return 0
        due = self.store.escalation_due(now - d.escalate_after_s, d.min_severity)
        if not due:
            return 0
        with self.db.transaction():
            for a in due:
                self.store.escalated(a["id"], now)
                self.store.event(a["id"], a["tenant_id"], now, "escalated", "system", None, a["severity"])
                after = self.store.get(a["id"])
                assert after is not None
                d.enqueue(self.db, after, "escalated", now)
        self.stats["escalated"] += len(due)
        self._wake_dispatcher()
        return len(due)

    def _notify_backlog(self, now: float) -> int:
        d = self.dispatcher
        if d is None:
            return 0
        active = self.rules.is_active(SERVER.key, NOTIFY_BACKLOG)
        if d.backlogged and not active:
            pending = d.pending()
            self.rules.set_active(SERVER.key, NOTIFY_BACKLOG, TYPES[NOTIFY_BACKLOG][1])
            detail = {"pending": pending, "queue_max": d.settings.queue_max, "dropped": d.stats["dropped"]}
            c = Condition(SERVER, NOTIFY_BACKLOG, True, TYPES[NOTIFY_BACKLOG][1], pending, now, detail)
            return self._apply([c], now)
        if active and d.pending() < d.settings.queue_max / 2:
            d.backlogged = False
            self.rules.set_active(SERVER.key, NOTIFY_BACKLOG, None)
            return self._apply([Condition(SERVER, NOTIFY_BACKLOG, False)], now)
        return 0

    def _poll_status(self) -> int:
        # The ingest stores each Pi's retained status in server-core's transformer table; reading the
        # changes here (rather than hearing them) also sees those another ingest worker stored.
        try:
            rows = self.db.fetchall(
                "SELECT site, id, status, status_s FROM transformer WHERE status_s > ? ORDER BY status_s",
                (self._status_s,),
            )
        except Exception as e:
            log.debug("alarms: statuses not read: %s", e)
            return 0
        changes = 0
        for site, tr, status, status_s in rows:
            self._status_s = max(self._status_s, float(status_s))
            if status:
                changes += self.on_status(site, tr, str(status), float(status_s))
        return changes

    def _reload_ratings(self) -> None:
        try:
            merged = dict(self._base_ratings)
            merged.update(self.store.ratings())
            self.settings.ratings = merged
        except Exception as e:  # a store without server-core's transformer table: the config's ratings only
            log.debug("alarms: ratings not reloaded: %s", e)
        self._ratings_at = self._monotonic()
