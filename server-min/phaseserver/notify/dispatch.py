"""The notification outbox and its worker: one notification per alarm episode and transition, retried until
delivered, never in the way of ingest or the alarm engine.

Two halves:

- ``Dispatcher.enqueue(db, alarm, transition, now)`` is called by the engine
  inside the transaction that changes the alarm: it writes one ``notification``
  row per channel and target (``INSERT .. ON CONFLICT DO NOTHING`` on the
  UNIQUE (alarm, transition, channel, target) key, so a repeated transition of
  one episode is never a second notification) and returns at once.
- ``await Dispatcher.run(stop)`` delivers what is due, ``concurrency`` at a
  time, each attempt in a worker thread (smtplib and http.client block), logs
  every attempt in ``delivery``, and schedules a failed one again after
  ``backoff`` (exponential, jittered) until ``max_attempts``.

The one thing to know: the outbox is bounded. When ``queue_max``
notifications are pending (a channel down for long, an alarm storm), new
ones are written as ``dropped`` (visible in the log), counted in
``stats["dropped"]``, and ``backlogged`` tells the engine to raise the
server's ``notify_backlog`` alarm; nothing waits for room.

Who hears what: ``raised`` goes to ``email_to`` and ``webhook_url`` when the
alarm's worst severity reaches ``min_severity`` (an alarm that worsens later
is notified then); ``escalated`` (not acknowledged within
``escalate_after_s``) to ``email_escalate_to`` and ``webhook_escalate_url``
(or ``webhook_url``); ``cleared`` to everyone who heard of the episode.
Each of these four is the alarm's tenant's own when its
``[notify.tenants."TENANT"]`` sets it (a tenant's webhooks signed with its
own secret), else the server-wide one; an outbox row names only the target
("to", "url", ...), resolved from the alarm's ``tenant_id`` when it is
written (which targets exist) and again when it is sent (the addresses).
Times: the alarm's are site time (the injected clock); retry scheduling is
wall time (a receiver's outage does not run faster in the accelerated demo).
"""

import asyncio
import logging
import random
import threading
import time
from typing import Any, Callable

from phaseserver.alarms.store import AlarmStore
from phaseserver.notify.email import EmailChannel
from phaseserver.notify.message import Notice
from phaseserver.notify.settings import NotifySettings
from phaseserver.notify.webhook import Outcome, WebhookChannel, backoff

log = logging.getLogger(__name__)

__all__ = ("Dispatcher", "notification_log")

_FETCH = 64  # due notifications read per pass, at most


class Dispatcher:
    """``Dispatcher(db, settings, clock)``: ``enqueue`` (engine, in its transaction), ``run`` (the worker)."""

    def __init__(
        self,
        db: Any,
        settings: NotifySettings,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        email: EmailChannel | None = None,
        webhook: WebhookChannel | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self._wall = wall
        self._rng = rng or random.Random()
        s = settings
        self.email = email
        if self.email is None and s.email_host:
            self.email = EmailChannel(
                s.email_host,
                s.email_from,
                port=s.email_port,
                security=s.email_security,
                username=s.email_username,
                password=s.email_password,
                timeout_s=s.email_timeout_s,
                ca_file=s.email_ca_file or None,
                wall=wall,
            )
        self.webhook = webhook
        if self.webhook is None and s.webhook_url:
            self.webhook = WebhookChannel(
                s.webhook_url,
                s.webhook_secret,
                timeout_s=s.webhook_timeout_s,
                ca_file=s.webhook_ca_file or None,
                wall=wall,
            )
        # A tenant's own webhooks: one channel per tenant that sets a webhook URL, signed with its secret.
        self.tenant_webhooks: dict[str, WebhookChannel] = {}
        for tenant, secret in s.tenant_secrets.items():
            own = s.tenants.get(tenant, {})
            url = own.get("webhook_url") or own.get("webhook_escalate_url")
            if url:
                self.tenant_webhooks[tenant] = WebhookChannel(
                    url, secret, timeout_s=s.webhook_timeout_s, ca_file=s.webhook_ca_file or None, wall=wall
                )
        self.stats = {"enqueued": 0, "dropped": 0, "sent": 0, "failed": 0, "retried": 0, "attempts": 0}
        self.backlogged = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._inflight: set[int] = set()

    # ------------------------------------------------------------ the engine's side

    @property
    def min_severity(self) -> int:
        return self.settings.min_severity_level

    @property
    def escalate_after_s(self) -> float:
        return self.settings.escalate_after_s

    def targets(self, alarm: dict[str, Any], transition: str) -> list[tuple[str, str]]:
        """``(channel, target)`` pairs a transition of ``alarm`` goes to (before the de-duplication)."""
        tenant = alarm.get("tenant_id")
        r = self.settings.recipients(tenant)
        out: list[tuple[str, str]] = []
        escalation = transition == "escalated" or (transition == "cleared" and alarm.get("escalated_s") is not None)
        if self.email is not None:
            if transition != "escalated" and r.email_to:
                out.append(("email", "to"))
            if escalation and r.email_escalate_to:
                out.append(("email", "escalate_to"))
        url = self._webhook(tenant, "url") is not None
        if transition != "escalated" and url:
            out.append(("webhook", "url"))
        if escalation and self._webhook(tenant, "escalate_url") is not None:
            out.append(("webhook", "escalate_url"))
        elif transition == "escalated" and url:
            out.append(("webhook", "url"))
        return out

    def _webhook(self, tenant: str | None, target: str) -> tuple[WebhookChannel, str | None] | None:
        """The channel and URL (None: the channel's own) of a webhook target for ``tenant``'s alarms, if any."""
        s = self.settings
        own = s.tenants.get(tenant or "", {})
        key = "webhook_escalate_url" if target == "escalate_url" else "webhook_url"
        if key in own:
            # The tenant's own value, even "" (no webhook of this kind for it), signed with its own secret.
            channel = self.tenant_webhooks.get(tenant or "")
            return (channel, own[key]) if own[key] and channel is not None else None
        if self.webhook is None:
            return None
        if target == "escalate_url":
            return (self.webhook, s.webhook_escalate_url) if s.webhook_escalate_url else None
        return (self.webhook, None)

    def enqueue(self, db: Any, alarm: dict[str, Any], transition: str, now: float) -> int:
        """Outbox rows for one transition (call inside the engine's transaction); returns rows written."""
        if not self.settings.enabled:
            return 0
        if transition == "cleared":
            # Only an episode someone heard of gets a notice of its end.
            if not db.fetchone(
                "SELECT 1 FROM notification WHERE alarm_id = ? AND transition = 'raised'", (alarm["id"],)
            ):
                return 0
        elif alarm["max_severity"] < self.min_severity:
            return 0
        pairs = self.targets(alarm, transition)
        if not pairs:
            return 0
        pending = db.fetchone("SELECT COUNT(*) FROM notification WHERE state = 'pending'")[0]
        room = self.settings.queue_max - pending
        wall = self._wall()
        written = 0
        for channel, target in pairs:
            state = "pending" if room > 0 else "dropped"
            n = db.execute(
                "INSERT INTO notification (alarm_id, tenant_id, transition, channel, target, state, attempts,"
                " created_s, next_wall_s, done_wall_s, last_status) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"
                " ON CONFLICT (alarm_id, transition, channel, target) DO NOTHING",
                (
                    alarm["id"],
                    alarm["tenant_id"],
                    transition,
                    channel,
                    target,
                    state,
                    now,
                    wall,
                    None if state == "pending" else wall,
                    None if state == "pending" else "queue full",
                ),
            )
            if n <= 0:
                continue  # this episode's transition already has its notification
            written += 1
            with self._lock:
                if state == "pending":
                    room -= 1
                    self.stats["enqueued"] += 1
                else:
                    self.stats["dropped"] += 1
                    self.backlogged = True
                    log.warning(
                        "notify: outbox full (%d pending): %s of alarm %s to %s/%s dropped",
                        pending,
                        transition,
                        alarm["id"],
                        channel,
                        target,
                    )
        return written

    def pending(self) -> int:
        """Notifications waiting to be delivered (the outbox's fill)."""
        return int(self.db.fetchone("SELECT COUNT(*) FROM notification WHERE state = 'pending'")[0])

    def wake(self) -> None:
        """Deliver now rather than at the next poll (any thread; after the engine's commit)."""
        loop, ev = self._loop, self._wake
        if loop is not None and ev is not None and not loop.is_closed():
            loop.call_soon_threadsafe(ev.set)

    # ------------------------------------------------------------ the worker

    async def run(self, stop: asyncio.Event, poll_s: float = 1.0) -> None:
        """Deliver until ``stop`` is set; wakes on ``wake()`` or every ``poll_s`` (retries that came due)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                self._wake.clear()
                room = self.settings.concurrency - len(tasks)
                if room > 0:
                    for row in await asyncio.to_thread(self._due, room):
                        self._inflight.add(row[0])
                        t = asyncio.ensure_future(self._deliver(row))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
                done, rest = await asyncio.wait(
                    waits + list(tasks), timeout=poll_s, return_when=asyncio.FIRST_COMPLETED
                )
                for w in waits:
                    w.cancel()
        finally:
            if tasks:
                await asyncio.wait(
                    tasks, timeout=max(self.settings.email_timeout_s, self.settings.webhook_timeout_s) + 1
                )

    async def deliver_due(self) -> int:
        """One pass without the loop: deliver everything due now (tests, the CLI); returns attempts made."""
        rows = await asyncio.to_thread(self._due, _FETCH)
        for row in rows:
            self._inflight.add(row[0])
        await asyncio.gather(*(self._deliver(r) for r in rows))
        return len(rows)

    def _due(self, limit: int) -> list[tuple[Any, ...]]:
        rows = self.db.fetchall(
            "SELECT id, alarm_id, transition, channel, target, attempts FROM notification"
            " WHERE state = 'pending' AND next_wall_s <= ? ORDER BY next_wall_s, id LIMIT ?",
            (self._wall(), limit + len(self._inflight)),
        )
        return [r for r in rows if r[0] not in self._inflight][:limit]

    async def _deliver(self, row: tuple[Any, ...]) -> None:
        nid, alarm_id, transition, channel, target, attempts = row
        try:
            alarm = await asyncio.to_thread(AlarmStore(self.db).get, alarm_id)
            t0 = time.monotonic()
            if alarm is None:
                outcome = Outcome(False, False, "gone", "alarm %s no longer exists" % alarm_id)
            else:
                notice = Notice(nid, transition, channel, target, alarm, self.settings.base_url)
                outcome = await asyncio.to_thread(self._send, notice)
            duration_ms = (time.monotonic() - t0) * 1000.0
            await asyncio.to_thread(self._record, nid, attempts + 1, outcome, duration_ms)
        except Exception:
            # A storage failure here must not end the worker: the row stays pending and is tried again.
            log.exception("notify: delivery of notification %s failed unexpectedly", nid)
        finally:
            self._inflight.discard(nid)

    def _send(self, notice: Notice) -> Outcome:
        # Recipients from the alarm's tenant now (its override, else the server-wide lists).
        tenant = notice.alarm.get("tenant_id")
        if notice.channel == "email" and self.email is not None:
            r = self.settings.recipients(tenant)
            recipients = r.email_escalate_to if notice.target == "escalate_to" else r.email_to
            if recipients:
                return self.email.send(notice, list(recipients))
        if notice.channel == "webhook":
            hook = self._webhook(tenant, notice.target)
            if hook is not None:
                return hook[0].send(notice, hook[1])
        return Outcome(False, False, "config", "channel %s/%s is not configured" % (notice.channel, notice.target))

    def _record(self, nid: int, attempt: int, outcome: Outcome, duration_ms: float) -> None:
        s = self.settings
        wall = self._wall()
        if outcome.ok:
            state, next_wall = "sent", wall
        elif outcome.retry and attempt < s.max_attempts:
            wait = backoff(attempt, s.backoff_s, s.backoff_max_s, self._rng)
            if outcome.retry_after_s is not None:
                wait = max(wait, min(outcome.retry_after_s, s.backoff_max_s))
            state, next_wall = "pending", wall + wait
        else:
            state, next_wall = "failed", wall
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO delivery (notification_id, attempt, wall_s, duration_ms, ok, status, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (nid, attempt, wall, duration_ms, int(outcome.ok), outcome.status, outcome.detail),
            )
            self.db.execute(
                "UPDATE notification SET state = ?, attempts = ?, next_wall_s = ?, done_wall_s = ?,"
                " last_status = ?, last_detail = ? WHERE id = ?",
                (
                    state,
                    attempt,
                    next_wall,
                    None if state == "pending" else wall,
                    outcome.status,
                    outcome.detail,
                    nid,
                ),
            )
        with self._lock:
            self.stats["attempts"] += 1
            key = {"sent": "sent", "failed": "failed", "pending": "retried"}[state]
            self.stats[key] += 1
        if state == "failed":
            log.warning(
                "notify: notification %s failed for good after %d attempt(s): %s %s",
                nid,
                attempt,
                outcome.status,
                outcome.detail,
            )
        elif state == "pending":
            log.info(
                "notify: notification %s attempt %d failed (%s), next in %.1f s",
                nid,
                attempt,
                outcome.status,
                next_wall - wall,
            )

    # ------------------------------------------------------------ reads for the API and tests

    def log_of(self, alarm_id: int) -> list[dict[str, Any]]:
        """The alarm's notifications with their delivery attempts (``notification_log``)."""
        return notification_log(self.db, alarm_id)


def notification_log(db: Any, alarm_id: int) -> list[dict[str, Any]]:
    """An alarm's notifications, each with its delivery attempts, oldest first."""
    rows = db.fetchall(
        "SELECT n.id, n.transition, n.channel, n.target, n.state, n.attempts, d.attempt, d.wall_s, d.ok,"
        " d.status, d.detail FROM notification n LEFT JOIN delivery d ON d.notification_id = n.id"
        " WHERE n.alarm_id = ? ORDER BY n.id, d.attempt",
        (alarm_id,),
    )
    out: dict[int, dict[str, Any]] = {}
    for nid, tr, ch, tg, state, attempts, att, wall, ok, status, detail in rows:
        n = out.setdefault(
            nid,
            {"id": nid, "transition": tr, "channel": ch, "target": tg, "state": state, "attempts": attempts, "log": []},
        )
        if att is not None:
            n["log"].append({"attempt": att, "wall_s": wall, "ok": bool(ok), "status": status, "detail": detail})
    return list(out.values())
