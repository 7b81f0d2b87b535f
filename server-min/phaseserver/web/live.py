"""The live-update channel's hub: one poll per process finds what changed, every open stream hears its part.

The web page keeps one Server-Sent Events stream open (``GET /api/v1/live``,
``phaseserver.api.routes_web``) and reloads what it shows when told that
something changed. ``LiveHub`` is what the streams subscribe to: while at
least one listens it looks in the database every ``[web] live_poll_s`` (and
at once when this process's ingest commits a batch) for

- alarm transitions (``alarm_event`` ids past the last seen, by tenant),
- audit entries (``audit_log`` sequence numbers past the last seen, by tenant),
- transformers whose state changed (newest record, status, backlog, firmware,
  name, rating; only of tenants someone is listening for),

and hands each subscriber the part its tenant and role may see. The one
thing to know: a stream carries *that* something changed, never the data:
the page reloads through the ordinary routes, which check the permission
and filter by tenant in SQL as always, so the channel cannot leak what the
routes would not give. Each subscriber's pending news is a few flags and at
most ``_TX_NAMES`` transformer names (more becomes "all"), so a slow reader
costs bounded memory, and a burst of changes coalesces into one message.

Why Server-Sent Events and not a WebSocket: the updates flow one way (the
page's actions are ordinary POSTs with their CSRF token); an SSE stream is a
plain GET, so the API's one dispatcher authenticates it, checks its
permission, logs it and adds the security headers like any route; the
browser's ``EventSource`` reconnects by itself; and uvicorn needs no extra
WebSocket package.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from phaseserver.errors import ServerError
from phaseserver.web.settings import WebSettings

__all__ = ("LiveHub", "Subscriber", "LiveLimit", "SYSTEM_TENANT", "TOPICS")

log = logging.getLogger(__name__)

# The tenant of the server's own alarms (phaseserver.alarms.store.SYSTEM_TENANT): the system administrator's.
SYSTEM_TENANT = "system"
# What a subscriber may be told about: fleet (transformers), alarms, audit.
TOPICS = ("fleet", "alarms", "audit")
# A subscriber's pending transformer names are capped; past this it is told "all of them".
_TX_NAMES = 256
# Never poll more often than this, however often ingest commits.
_MIN_GAP_S = 0.2


class LiveLimit(ServerError):
    """A new stream would pass ``live_max_streams`` or ``live_streams_per_session``."""


class Subscriber:
    """One open stream: who it is for, and what it has not been told yet (coalesced, bounded)."""

    def __init__(self, key: str, tenant: str, topics: Iterable[str]) -> None:
        self.key = key  # the browser session (its token's hash), for the per-session limit
        self.tenant = tenant
        self.topics = frozenset(topics)
        self.ended: str | None = None  # why the hub ended it (server stopping)
        self.event = asyncio.Event()
        self._alarms = False
        self._audit = False
        self._all_tx = False
        self._tx: set[str] = set()

    def offer(self, alarms: bool, audit: bool, transformers: Iterable[str], all_tx: bool = False) -> None:
        """Add news (only what this subscriber may hear) and wake its stream if there is any."""
        news = False
        if alarms and "alarms" in self.topics:
            self._alarms = news = True
        if audit and "audit" in self.topics:
            self._audit = news = True
        if "fleet" in self.topics:
            if all_tx:
                self._all_tx = news = True
            for name in transformers:
                news = True
                if self._all_tx:
                    break
                self._tx.add(name)
                if len(self._tx) > _TX_NAMES:
                    self._all_tx = True
                    self._tx.clear()
                    break
        if news:
            self.event.set()

    def take(self) -> dict[str, Any] | None:
        """The pending news as the message body (None if nothing), and forget it."""
        self.event.clear()
        if not (self._alarms or self._audit or self._all_tx or self._tx):
            return None
        out: dict[str, Any] = {"alarms": self._alarms, "audit": self._audit}
        if self._all_tx:
            out["transformers"] = "all"
        else:
            out["transformers"] = sorted(self._tx)
        self._alarms = self._audit = self._all_tx = False
        self._tx = set()
        return out

    def end(self, reason: str) -> None:
        self.ended = reason
        self.event.set()


class LiveHub:
    """Subscribers of one process and the one poller that tells them what changed."""

    def __init__(self, db: Any, settings: WebSettings, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.settings = settings
        self._mono = monotonic
        self.subscribers: set[Subscriber] = set()
        self.polls = 0
        self.errors = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        # What the last poll saw.
        self._alarm_event_id: int | None = None
        self._audit_seq: int | None = None
        self._tx: dict[str, dict[str, tuple[Any, ...]]] = {}  # tenant -> "site/tx" -> state

    # ------------------------------------------------------------ subscribers (event loop)

    def open(self, key: str, tenant: str, topics: Iterable[str]) -> Subscriber:
        """A new subscriber, and the poller started if it was idle; LiveLimit past the limits."""
        if self._closed:
            raise LiveLimit("the server is stopping")
        if len(self.subscribers) >= self.settings.live_max_streams:
            raise LiveLimit("%d live streams are open, the most this server keeps" % len(self.subscribers))
        if sum(1 for s in self.subscribers if s.key == key) >= self.settings.live_streams_per_session:
            raise LiveLimit("this session has %d live streams open already" % self.settings.live_streams_per_session)
        sub = Subscriber(key, tenant, topics)
        self.subscribers.add(sub)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._poller(), name="web-live-poller")
        return sub

    def close_one(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers and self._wake is not None:
            self._wake.set()  # the poller sees nobody listens and ends

    def wake(self) -> None:
        """Poll now (from the event loop's thread)."""
        if self._wake is not None:
            self._wake.set()

    def on_committed(self, committed: list[Any]) -> None:
        """The ingest core's listener (any thread): a batch was stored, so poll soon."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or not self.subscribers:
            return
        try:
            loop.call_soon_threadsafe(wake.set)
        except RuntimeError:  # the loop has closed (the server is stopping)
            pass

    # ------------------------------------------------------------ the poller

    async def _poller(self) -> None:
        wake = self._wake
        assert wake is not None
        # The first look only sets the baseline: what exists now is what a new page loads anyway.
        await self._poll_and_tell(baseline=True)
        last = self._mono()
        while self.subscribers and not self._closed:
            try:
                await asyncio.wait_for(wake.wait(), timeout=self.settings.live_poll_s)
            except asyncio.TimeoutError:
                pass
            wake.clear()
            if not self.subscribers or self._closed:
                break
            gap = _MIN_GAP_S - (self._mono() - last)
            if gap > 0:
                await asyncio.sleep(gap)
            last = self._mono()
            await self._poll_and_tell()
        # Nobody listens: forget the baseline, so a later first subscriber starts from the present.
        self._alarm_event_id = self._audit_seq = None
        self._tx = {}

    async def _poll_and_tell(self, baseline: bool = False) -> None:
        tenants = {s.tenant for s in self.subscribers if "fleet" in s.topics}
        try:
            alarms, audit, txs = await asyncio.to_thread(self.poll, tenants)
        except Exception as e:  # the database away: try again at the next round
            self.errors += 1
            log.warning("live: poll failed: %s", str(e)[:200])
            return
        self.polls += 1
        if baseline:
            return
        for sub in list(self.subscribers):
            sub.offer(sub.tenant in alarms, sub.tenant in audit, txs.get(sub.tenant, ()))

    def poll(self, tenants: set[str]) -> tuple[set[str], set[str], dict[str, list[str]]]:
        """One look at the database (a worker thread): the tenants with new alarm transitions, with new
        audit entries, and the changed transformers of ``tenants``. The first look sets the baseline."""
        alarms: set[str] = set()
        audit: set[str] = set()
        newest = _int(self.db.fetchone("SELECT MAX(id) FROM alarm_event"))
        if self._alarm_event_id is not None and newest > self._alarm_event_id:
            # The site's tenant now (a site assigned after the raise takes its alarms along, as the routes
            # say); the event's own tenant for the server's alarms, which have no site.
            rows = self.db.fetchall(
                "SELECT DISTINCT COALESCE(s.tenant_id, e.tenant_id) FROM alarm_event e"
                " JOIN alarm a ON a.id = e.alarm_id LEFT JOIN site s ON s.id = a.site"
                " WHERE e.id > ? AND e.id <= ?",
                (self._alarm_event_id, newest),
            )
            alarms = {str(r[0]) for r in rows}
        self._alarm_event_id = newest
        newest = _int(self.db.fetchone("SELECT MAX(seq) FROM audit_log"))
        if self._audit_seq is not None and newest > self._audit_seq:
            rows = self.db.fetchall(
                "SELECT DISTINCT tenant_id FROM audit_log WHERE seq > ? AND seq <= ? AND tenant_id IS NOT NULL",
                (self._audit_seq, newest),
            )
            audit = {str(r[0]) for r in rows}
        self._audit_seq = newest
        changed: dict[str, list[str]] = {}
        seen: dict[str, dict[str, tuple[Any, ...]]] = {t: {} for t in tenants}
        wanted = sorted(tenants)
        for i in range(0, len(wanted), 100):
            part = wanted[i : i + 100]
            rows = self.db.fetchall(
                "SELECT tenant_id, site, id, last_t_s, last_seen_s, status, status_s, backlog, fw, name, rating_a"
                " FROM transformer WHERE tenant_id IN (%s)" % ", ".join("?" * len(part)),
                part,
            )
            for row in rows:
                seen[str(row[0])]["%s/%s" % (row[1], row[2])] = tuple(row[3:])
        for tenant, now in seen.items():
            before = self._tx.get(tenant)
            if before is None:
                continue  # a tenant first listened for: this look is its baseline
            names = [k for k, v in now.items() if before.get(k) != v]
            names += [k for k in before if k not in now]  # moved to another tenant
            if names:
                changed[tenant] = names
        self._tx = seen
        return alarms, audit, changed

    # ------------------------------------------------------------ the server's extension

    async def run(self, stop: asyncio.Event) -> None:
        """Until the server stops; then end every stream (uvicorn waits for open responses to finish)."""
        await stop.wait()
        self.close()

    def close(self) -> None:
        """End every stream (the page reconnects to whatever serves next) and refuse new ones; any thread."""
        self._closed = True
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            try:
                loop.call_soon_threadsafe(self._end_all)
            except RuntimeError:  # that loop has closed: nothing of it is left to end
                pass
            return
        self._end_all()

    def _end_all(self) -> None:
        for sub in list(self.subscribers):
            sub.end("server stopping")
        if self._wake is not None:
            self._wake.set()


def _int(row: Any) -> int:
    return int(row[0]) if row is not None and row[0] is not None else 0
