"""Between a message source and the ingest core: a bounded queue and one worker thread.

A source's network thread ``put``s each message (with its acknowledgement
callback); the worker takes what is waiting, up to ``commit_max_messages``
messages (and about ``commit_max_records`` records' worth of bytes), hands
them to ``IngestCore.handle_many`` as one transaction, and only then calls
each message's ``ack``. Grouping is what makes ingest fast: one commit (one
fsync) for hundreds of messages.

The one thing to know: the queue is bounded in bytes (``max_queue_bytes``).
When it is full, ``put`` blocks the source's network thread, which stops
reading its socket: the broker holds what comes next (TCP back-pressure, and
for QoS 1 the MQTT 5 receive maximum or the AMQP prefetch). A flood of any
size costs the server at most the queue, never memory without bound. When
the database fails (``StorageError``: it does not answer), the worker keeps
the messages, waits (back-off up to 30 s) and retries them; nothing is
acknowledged until it is committed. On ``stop`` the worker finishes the
transaction it is in, acknowledges it, and leaves the rest unacknowledged:
the broker delivers them again to the next session.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from phaseserver.errors import StorageError
from phaseserver.ingest.core import IngestCore, Message

log = logging.getLogger(__name__)

__all__ = ("Pump",)

# Bytes of payload per record, roughly, in a compressed batch: to stop a group near commit_max_records.
_BYTES_PER_RECORD = 4


class Pump:
    """``Pump(core)``: ``start()``, ``put(message)`` from any thread, ``stop()``."""

    def __init__(self, core: IngestCore, retry_min_s: float = 0.2, retry_max_s: float = 30.0) -> None:
        self.core = core
        self.limits = core.limits
        self.metrics = core.metrics
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self._queue: collections.deque[Message] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.handled = 0  # messages committed and acknowledged
        self.failed_commits = 0

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="ingest-pump", daemon=True)
        self._thread.start()

    def put(self, message: Message, timeout_s: float | None = None) -> bool:
        """Queue ``message``; blocks while the queue is full. False when stopping (not queued, not acked)."""
        size = len(message.payload) + len(message.topic)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while not self._stopping and self._bytes and self._bytes + size > self.limits.max_queue_bytes:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(timeout=left if left is not None else 0.5)
            if self._stopping:
                return False
            self._queue.append(message)
            self._bytes += size
            self.metrics.set_queue_bytes(self._bytes)
            self._cond.notify_all()
        return True

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def _take(self) -> list[Message]:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait(timeout=0.5)
            if self._stopping:
                return []
            group: list[Message] = []
            budget = self.limits.commit_max_records * _BYTES_PER_RECORD
            size = 0
            while self._queue and len(group) < self.limits.commit_max_messages:
                m = self._queue[0]
                if group and size + len(m.payload) > budget:
                    break
                self._queue.popleft()
                group.append(m)
                size += len(m.payload)
                self._bytes -= len(m.payload) + len(m.topic)
            self.metrics.set_queue_bytes(self._bytes)
            self._cond.notify_all()
            return group

    def _work(self) -> None:
        while True:
            group = self._take()
            if not group:
                return
            delay = self.retry_min_s
            while True:
                try:
                    self.core.handle_many(group)
                    break
                except StorageError as e:
                    # The database does not answer: keep the messages, unacknowledged, and retry.
                    self.failed_commits += 1
                    self.metrics.error("commit")
                    log.error("ingest: commit failed, retrying in %.1f s: %s", delay, str(e)[:300])
                except Exception as e:  # a bug in the core must not end ingest; the messages wait for a retry
                    self.failed_commits += 1
                    self.metrics.error("core")
                    log.exception("ingest: unexpected failure, retrying in %.1f s: %s", delay, str(e)[:200])
                with self._cond:
                    if self._stopping:
                        return  # not committed: not acknowledged; the broker delivers them again
                    self._cond.wait(timeout=delay)
                delay = min(self.retry_max_s, delay * 2)
            for m in group:
                if m.ack is not None:
                    try:
                        m.ack()
                    except Exception as e:  # the connection went away: the broker redelivers, dedup absorbs it
                        self.metrics.error("ack")
                        log.warning("ingest: acknowledgement failed: %s", str(e)[:200])
            self.handled += len(group)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish (and acknowledge) the transaction in progress; leave the rest to the broker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        with self._cond:
            self._queue.clear()
            self._bytes = 0
            self.metrics.set_queue_bytes(0)
