"""The server's operational numbers, and ``render()`` in the Prometheus text format (version 0.0.4).

``Metrics`` is filled by the ingest core and the maintenance jobs (from their
threads: every update takes a lock) and read by the HTTP layer, which serves
``render()`` at ``/metrics`` and ``health()``/``readiness()`` at ``/healthz``
and ``/readyz``. The one thing to know: these are process-local; with several
ingest workers, Prometheus scrapes each (their ``instance`` label tells them
apart) and ``sum()`` adds them up.

Names (all prefixed ``phaseserver_``):

| metric | type | meaning |
|---|---|---|
| messages_total{outcome} | counter | messages handled: stored, duplicate, refused, dead_letter, ignored, status |
| records_total | counter | records stored (new) |
| duplicates_total | counter | records dropped as copies |
| invalid_records_total | counter | records refused one by one (the rest of their batch stored) |
| refused_batches_total | counter | batches refused whole (dead-lettered) |
| dead_letters_total | counter | messages moved to the dead-letter table |
| redelivered_total | counter | messages the broker delivered again (MQTT DUP, AMQP redelivered) |
| commit_seconds | histogram | one ingest transaction, from BEGIN to COMMIT |
| commits_total | counter | ingest transactions |
| ingest_lag_seconds | gauge | received time minus record time of the newest record of the last commit |
| queue_wait_seconds | gauge | received by the source to committed, of the last commit's oldest message |
| records_per_second | gauge | records stored per second over the last minute |
| queue_bytes | gauge | bytes of messages waiting between the source and the database |
| source_connected | gauge | 1 while the broker connection is up |
| rollup_hours_total | counter | transformer-hours rebuilt by the roll-up job |
| errors_total{where} | counter | failures caught and counted (maintenance, source, commit) |
| up_seconds | gauge | since the process started |
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from phaseserver.clock import Clock

__all__ = ("Metrics", "COMMIT_BUCKETS", "OUTCOMES")

OUTCOMES = ("stored", "duplicate", "refused", "dead_letter", "ignored", "status")
# Commit time buckets (seconds): an fsync on a good disk is ~1 ms, a loaded SD card 100 ms+.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RATE_WINDOW_S = 60.0


class Metrics:
    """Counters and gauges of one server process; thread-safe."""

    def __init__(self, clock: Clock | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock or Clock()
        self._mono = monotonic
        self._start = monotonic()
        self.messages = dict.fromkeys(OUTCOMES, 0)
        self.records = 0
        self.duplicates = 0
        self.invalid_records = 0
        self.refused_batches = 0
        self.dead_letters = 0
        self.redelivered = 0
        self.commits = 0
        self.commit_sum_s = 0.0
        self.commit_buckets = [0] * len(COMMIT_BUCKETS)
        self.ingest_lag_s = 0.0
        self.queue_wait_s = 0.0
        self.queue_bytes = 0
        self.source_connected = 0
        self.rollup_hours = 0
        self.errors: dict[str, int] = collections.defaultdict(int)
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self.ready_checks: list[Callable[[], str | None]] = []

    # ------------------------------------------------------------ updates

    def message(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.messages[outcome] = self.messages.get(outcome, 0) + n

    def commit(
        self,
        seconds: float,
        new: int,
        duplicates: int,
        invalid: int,
        refused: int,
        dead: int,
        lag_s: float | None,
        wait_s: float | None,
    ) -> None:
        """One ingest transaction committed (and its messages about to be acknowledged)."""
        now = self._mono()
        with self._lock:
            self.commits += 1
            self.commit_sum_s += seconds
            for i, b in enumerate(COMMIT_BUCKETS):
                if seconds <= b:
                    self.commit_buckets[i] += 1
            self.records += new
            self.duplicates += duplicates
            self.invalid_records += invalid
            self.refused_batches += refused
            self.dead_letters += dead
            if lag_s is not None:
                self.ingest_lag_s = lag_s
            if wait_s is not None:
                self.queue_wait_s = wait_s
            if new:
                self._recent.append((now, new))
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - _RATE_WINDOW_S:
            self._recent.popleft()

    def delivered_again(self) -> None:
        with self._lock:
            self.redelivered += 1

    def set_queue_bytes(self, n: int) -> None:
        with self._lock:
            self.queue_bytes = n

    def set_connected(self, up: bool) -> None:
        with self._lock:
            self.source_connected = 1 if up else 0

    def rollups(self, hours: int) -> None:
        with self._lock:
            self.rollup_hours += hours

    def error(self, where: str) -> None:
        with self._lock:
            self.errors[where] += 1

    # ------------------------------------------------------------ reading

    def records_per_second(self) -> float:
        now = self._mono()
        with self._lock:
            self._trim(now)
            total = sum(n for _, n in self._recent)
        span = min(_RATE_WINDOW_S, max(1.0, now - self._start))
        return total / span

    def snapshot(self) -> dict[str, object]:
        """The values as a dict (for tests, the CLI and JSON endpoints)."""
        rate = self.records_per_second()
        with self._lock:
            return {
                "messages": dict(self.messages),
                "records": self.records,
                "duplicates": self.duplicates,
                "invalid_records": self.invalid_records,
                "refused_batches": self.refused_batches,
                "dead_letters": self.dead_letters,
                "redelivered": self.redelivered,
                "commits": self.commits,
                "commit_seconds_sum": self.commit_sum_s,
                "ingest_lag_s": self.ingest_lag_s,
                "queue_wait_s": self.queue_wait_s,
                "queue_bytes": self.queue_bytes,
                "source_connected": self.source_connected,
                "records_per_second": rate,
                "rollup_hours": self.rollup_hours,
                "errors": dict(self.errors),
            }

    def health(self) -> tuple[bool, str]:
        """``/healthz``: the process is alive and its loop answers (always true if it can answer)."""
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: every registered check passes (the store answers, the source is connected)."""
        problems = []
        for check in list(self.ready_checks):
            try:
                problem = check()
            except Exception as e:  # a check that fails is a reason not to be ready, not a crash
                problem = "%s: %s" % (getattr(check, "__name__", "check"), str(e)[:200])
            if problem:
                problems.append(problem)
        return (not problems), ("ok" if not problems else "; ".join(problems))

    def render(self) -> str:
        """The Prometheus text exposition format (0.0.4) of every metric."""
        s = self.snapshot()
        out: list[str] = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            full = "phaseserver_" + name
            out.append("# HELP %s %s" % (full, help_))
            out.append("# TYPE %s %s" % (full, kind))
            for labels, value in samples:
                out.append("%s%s %s" % (full, labels, _num(value)))

        msgs = s["messages"]
        assert isinstance(msgs, dict)
        metric(
            "messages_total",
            "counter",
            "Messages handled, by outcome.",
            [('{outcome="%s"}' % k, v) for k, v in sorted(msgs.items())],
        )
        for name, key, help_ in (
            ("records_total", "records", "Records stored (new)."),
            ("duplicates_total", "duplicates", "Records dropped as copies of stored ones."),
            ("invalid_records_total", "invalid_records", "Records refused one by one."),
            ("refused_batches_total", "refused_batches", "Batches refused whole."),
            ("dead_letters_total", "dead_letters", "Messages moved to the dead-letter table."),
            ("redelivered_total", "redelivered", "Messages the broker delivered again."),
            ("commits_total", "commits", "Ingest transactions committed."),
            ("rollup_hours_total", "rollup_hours", "Transformer-hours rebuilt by the roll-up job."),
        ):
            metric(name, "counter", help_, [("", float(s[key]))])  # type: ignore[arg-type]
        with self._lock:
            buckets = list(self.commit_buckets)
            count = self.commits
            total = self.commit_sum_s
        hist = [('{le="%s"}' % _num(b), float(c)) for b, c in zip(COMMIT_BUCKETS, buckets)]
        hist.append(('{le="+Inf"}', float(count)))
        out.append("# HELP phaseserver_commit_seconds One ingest transaction, BEGIN to COMMIT.")
        out.append("# TYPE phaseserver_commit_seconds histogram")
        for labels, v in hist:
            out.append("phaseserver_commit_seconds_bucket%s %s" % (labels, _num(v)))
        out.append("phaseserver_commit_seconds_sum %s" % _num(total))
        out.append("phaseserver_commit_seconds_count %s" % _num(count))
        for name, key, help_ in (
            (
                "ingest_lag_seconds",
                "ingest_lag_s",
                "Received time minus record time, newest record of the last commit.",
            ),
            ("queue_wait_seconds", "queue_wait_s", "Received to committed, oldest message of the last commit."),
            ("records_per_second", "records_per_second", "Records stored per second over the last minute."),
            ("queue_bytes", "queue_bytes", "Bytes of messages waiting between the source and the database."),
            ("source_connected", "source_connected", "1 while the broker connection is up."),
        ):
            metric(name, "gauge", help_, [("", float(s[key]))])  # type: ignore[arg-type]
        errors = s["errors"]
        assert isinstance(errors, dict)
        metric(
            "errors_total",
            "counter",
            "Failures caught and counted, by where.",
            [('{where="%s"}' % k, v) for k, v in sorted(errors.items())] or [('{where="none"}', 0.0)],
        )
        metric("up_seconds", "gauge", "Seconds since the process started.", [("", self._mono() - self._start)])
        return "\n".join(out) + "\n"


def _num(v: float) -> str:
    if float(v).is_integer():
        return "%d" % v
    return "%.6g" % v
