"""The ingest core: one uplink message in, one ``Outcome`` out; nothing one message does can stop it.

Sans-IO as far as messages go: the core never reads a socket or a clock. A
source (``ingest.mqtt``, ``ingest.amqp``, a test, a benchmark) hands it
``(topic, payload, received_s)``; the core decodes, validates, commits through
the ``Store`` it was given, and returns what happened. The source
acknowledges the message to its broker only after ``handle``/``handle_many``
returned, so what was acknowledged is committed (or dead-lettered) for good.

The one thing to know: every failure of one message, of whatever kind (a
typed ``RecordError``, an untyped error deep in a decoder, an integer too long
to print), is caught, counted, logged (cut short) and turns into a
``dead_letter`` outcome: the message is written to the dead-letter table an
operator can read (``phasekit server dead-letters``) and then acknowledged.
A poison message redelivered by a broker is therefore handled once and never
again; it cannot crash-loop the server. Only a failure of the database itself
(it does not answer) propagates, as ``StorageError``: then nothing is
acknowledged and the source retries, so no good record is dead-lettered
because the disk was full for a minute.

Work per message is bounded before anything is decoded (issue 13, item 3):

- payload bytes per topic kind (``max_payload_bytes`` for batches,
  ``max_status_bytes`` for the status topic);
- bytes a compressed batch may inflate to: ``max_inflate_ratio`` times its
  own size (above a 2 KiB floor), never more than ``max_plain_bytes`` (itself
  at most ``phaseuplink.records.MAX_BATCH_PLAIN``), checked while inflating.
  Work grows with the inflated bytes, so this keeps a message's CPU
  proportional to its size: a 66-byte message can no longer unfold into 2,000
  records to refuse one by one (40 ms of CPU);
- records per batch (``max_records``), read from the batch's CBOR array head
  before one record is decoded (a definite length is required; the Pi never
  sends another);
- error detail: a bounded summary per batch (the count, the first few
  reasons, cut), never one string per record kept;
- record times inside the accepted window (not older than raw retention,
  not further ahead than ``max_future_s``): a record outside would either be
  dropped at once or create partitions for an attacker's chosen dates.

Topics (docs/uplink.md section 2): ``phasekit/<site>/<transformer>/<kind>``
with a record kind carries a batch; ``.../status`` the Pi's retained
online/offline; ``.../command`` (and anything below it) is the operator's
path to the Pi, not records: skipped, not counted as invalid. Any other topic
under the subscription is dead-lettered.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from phasecore import cbor
from phasecore.errors import quote
from phaseserver.clock import Clock
from phaseserver.errors import StorageError, TransientStorageError
from phaseserver.metrics import Metrics
from phaseserver.store.base import Store
from phaseuplink import records, topics
from phaseuplink.errors import UplinkError
from phaseuplink.records import Record

log = logging.getLogger(__name__)

__all__ = ("IngestCore", "Limits", "Message", "Outcome", "Committed", "Decoded", "decode", "summarise")

_REASON_MAX = 600
_ERRORS_KEPT = 3
_ERROR_CUT = 160


class Limits(NamedTuple):
    """Caps per message and per transaction (``[ingest]``, docs/server.md)."""

    max_payload_bytes: int = 256 * 1024
    max_status_bytes: int = 64
    max_plain_bytes: int = 1 << 20
    max_inflate_ratio: int = 16
    max_records: int = 2000
    commit_max_messages: int = 200
    commit_max_records: int = 20000
    max_future_s: int = 86400
    max_age_s: int = 90 * 86400
    dead_letter_bytes: int = 256
    max_queue_bytes: int = 16 << 20

    @classmethod
    def from_config(cls, ingest: Mapping[str, Any], storage: Mapping[str, Any]) -> Limits:
        return cls(
            max_payload_bytes=int(ingest["max_payload_bytes"]),
            max_status_bytes=int(ingest["max_status_bytes"]),
            max_plain_bytes=min(int(ingest["max_plain_bytes"]), records.MAX_BATCH_PLAIN),
            max_inflate_ratio=int(ingest["max_inflate_ratio"]),
            max_records=int(ingest["max_records"]),
            commit_max_messages=int(ingest["commit_max_messages"]),
            commit_max_records=int(ingest["commit_max_records"]),
            max_future_s=int(ingest["max_future_s"]),
            max_age_s=int(storage["retention_raw_days"]) * 86400,
            dead_letter_bytes=int(ingest["dead_letter_bytes"]),
            max_queue_bytes=int(ingest["max_queue_bytes"]),
        )


class Message(NamedTuple):
    """One message as a source received it; ``ack`` (if any) is called once it is committed."""

    topic: str
    payload: bytes
    received_s: float
    ack: Callable[[], None] | None = None
    source: str = "mqtt"


class Outcome(NamedTuple):
    """What happened to one message.

    ``kind``: ``stored`` (at least one new record), ``duplicate`` (every record
    was stored before), ``status``, ``ignored`` (a command topic),
    ``dead_letter`` (nothing stored; the message is in the dead-letter table).
    A stored batch with records refused one by one is ``stored`` with
    ``invalid`` > 0, and is dead-lettered too so an operator sees why.
    """

    kind: str
    new: int = 0
    duplicates: int = 0
    invalid: int = 0
    reason: str = ""


class Decoded(NamedTuple):
    """A message decoded and validated, before anything is written (``decode``)."""

    what: str  # batch, status, ignored, refused
    site: str | None = None
    transformer: str | None = None
    kind: str | None = None
    records: tuple[Record, ...] = ()
    invalid: int = 0
    total: int = 0
    reason: str = ""
    status: str = ""


class Committed(NamedTuple):
    """What a listener (the alarm engine) hears after a commit: one batch's valid records."""

    site: str
    transformer: str
    kind: str
    records: tuple[Record, ...]
    new: int
    received_s: float


def _safe(e: BaseException) -> str:
    """``Type: message``, cut; never raises (a message may hold an integer too long to print)."""
    try:
        text = str(e)
    except Exception:  # str() itself failed: the type is all we can say
        text = "(unprintable)"
    text = " ".join(text.split())
    if len(text) > _ERROR_CUT:
        text = text[:_ERROR_CUT] + "..."
    return "%s: %s" % (type(e).__name__, text)


def _cut(text: str, limit: int = _REASON_MAX) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def summarise(n_errors: int, total: int, first: Sequence[str]) -> str:
    """The bounded error summary of one batch: the count and the first few reasons, cut."""
    head = "%d of %d records refused" % (n_errors, total)
    if not first:
        return head
    return _cut(head + ": " + "; ".join(_cut(m, _ERROR_CUT) for m in first[:_ERRORS_KEPT]))


# ------------------------------------------------------------------ decoding (pure)


def _head(data: bytes, pos: int) -> tuple[int, int, int]:
    """One CBOR head at ``pos``: (major type, argument, next position); definite lengths only."""
    if pos >= len(data):
        raise records.RecordError("batch ends inside its header at byte %d" % pos)
    b = data[pos]
    mt, ai = b >> 5, b & 0x1F
    if ai < 24:
        return mt, ai, pos + 1
    if ai > 27:
        raise records.RecordError("indefinite or reserved length at byte %d (the uplink sends definite ones)" % pos)
    size = 1 << (ai - 24)
    if pos + 1 + size > len(data):
        raise records.RecordError("batch ends inside its header at byte %d" % pos)
    return mt, int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


def _inflate(payload: bytes, limit: int) -> bytes:
    if not payload:
        raise records.RecordError("empty batch")
    if payload[0] != 0x78:
        return payload
    d = zlib.decompressobj()
    try:
        plain = d.decompress(payload, limit)
    except zlib.error as e:
        raise records.RecordError("not a valid zlib stream: %s" % _safe(e)) from e
    if d.unconsumed_tail:
        raise records.RecordError(
            "inflates beyond %d bytes (caps: max_inflate_ratio x its size, max_plain_bytes)" % limit
        )
    if not d.eof or d.unused_data:
        raise records.RecordError("zlib stream truncated or followed by other bytes")
    return plain


# Small compressed batches may always inflate this far, whatever the ratio (a few records).
INFLATE_FLOOR = 2048


def inflate_limit(payload_len: int, limits: Limits) -> int:
    """Bytes a compressed payload of ``payload_len`` may inflate to: the ratio cap, above a small floor."""
    return min(limits.max_plain_bytes, max(INFLATE_FLOOR, limits.max_inflate_ratio * payload_len))


def _check_shape(kind: str, plain: bytes, max_records: int) -> int:
    """Read ``[1, t0, [n records...]]``'s heads; returns n. Refuses n above the cap before decoding."""
    mt, n, pos = _head(plain, 0)
    if mt != 4 or n != 3:
        raise records.RecordError("%s batch is not a CBOR array of 3 [version, t0, records]" % kind)
    mt, version, pos = _head(plain, pos)
    if mt != 0 or version != records.BATCH_VERSION:
        raise records.RecordError("%s batch version is not %d" % (kind, records.BATCH_VERSION))
    mt, _t0, pos = _head(plain, pos)
    if mt != 0 or _t0 > 0xFFFFFFFF:
        raise records.RecordError("%s batch t0 is not an unsigned 32-bit integer" % kind)
    mt, count, pos = _head(plain, pos)
    if mt != 4:
        raise records.RecordError("%s batch records are not a CBOR array" % kind)
    if count > max_records:
        raise records.RecordError("%s batch declares %d records; at most %d are taken" % (kind, count, max_records))
    if count == 0:
        raise records.RecordError("%s batch holds no records" % kind)
    return count


# A batch whose records are refused one after another is refused whole once more than this many are,
# and more than half of those read so far: a bomb of bad records costs a few dozen refusals, not thousands.
ABANDON_AFTER = 16


def _decode_records(
    kind: str, plain: bytes, received_s: float, limits: Limits
) -> tuple[list[Record], int, list[str], int]:
    """Validate the records of a plain batch one by one: (good, refused, first reasons, stopped at or 0).

    The batch and each record are the contract's (``phaseuplink.records``: the same checks as
    ``decode_batch``, record by record, so a run of refusals can stop early); records outside the
    accepted time window are refused here too.
    """
    b = cbor.loads(plain)
    if type(b) is not list or len(b) != 3 or type(b[1]) is not int or type(b[2]) is not list:
        raise records.RecordError("%s batch must be an array [version, t0, records]" % kind)
    t0 = b[1]
    lo = received_s - limits.max_age_s
    hi = received_s + limits.max_future_s
    good: list[Record] = []
    first: list[str] = []
    n_bad = 0
    for i, rec in enumerate(b[2]):
        why = None
        try:
            r = records._decode_record(kind, t0, rec)  # the contract's per-record check (decode_batch's own)
            if lo <= r.t_s <= hi:
                good.append(r)
            else:
                why = "src %d seq %d: time %d outside the accepted window %d..%d" % (r.src, r.seq, r.t_s, lo, hi)
        except records.RecordError as e:
            why = str(e)
        if why is not None:
            n_bad += 1
            if len(first) < _ERRORS_KEPT:
                first.append("%s record %d: %s" % (kind, i, _cut(why, _ERROR_CUT)))
            if n_bad > ABANDON_AFTER and 2 * n_bad > i + 1:
                return good, n_bad, first, i + 1
    return good, n_bad, first, 0


def decode(topic: str, payload: bytes, received_s: float, limits: Limits) -> Decoded:
    """Decode and validate one message; never raises (any failure is a ``refused`` result)."""
    site = transformer = kind = None
    try:
        if not isinstance(topic, str):
            raise records.RecordError("topic is not text")
        levels = topic.split("/")
        if len(levels) >= 4 and levels[0] == topics.ROOT and levels[3] == topics.COMMAND_KIND:
            return Decoded("ignored", levels[1], levels[2], topics.COMMAND_KIND)
        site, transformer, kind = topics.parse(topic)
        payload = bytes(payload)
        if kind == topics.STATUS_KIND:
            if len(payload) > limits.max_status_bytes:
                raise records.RecordError("status of %d bytes (cap %d)" % (len(payload), limits.max_status_bytes))
            text = payload.decode("ascii", "strict")
            if text not in ("online", "offline"):
                raise records.RecordError("status %s is neither online nor offline" % quote(_cut(text, 40)))
            return Decoded("status", site, transformer, kind, status=text)
        if kind not in records.KINDS:
            raise records.RecordError("unknown record kind %s" % quote(_cut(kind, 40)))
        if len(payload) > limits.max_payload_bytes:
            raise records.RecordError(
                "payload of %d bytes exceeds max_payload_bytes %d" % (len(payload), limits.max_payload_bytes)
            )
        plain = _inflate(payload, inflate_limit(len(payload), limits))
        total = _check_shape(kind, plain, limits.max_records)
        good, n_bad, first, stopped = _decode_records(kind, plain, received_s, limits)
        reason = summarise(n_bad, total, first) if n_bad else ""
        if stopped:
            reason = _cut("refused unread after %d of %d records: %s" % (stopped, total, reason))
            return Decoded("refused", site, transformer, kind, invalid=total, total=total, reason=reason)
        if not good:
            return Decoded("refused", site, transformer, kind, invalid=n_bad, total=total, reason=reason)
        return Decoded("batch", site, transformer, kind, tuple(good), n_bad, total, reason)
    except Exception as e:  # every failure of one message is an outcome, never a crash (issue 13)
        typed = isinstance(e, UplinkError)
        why = _cut(str(e.args[0])) if typed and e.args and isinstance(e.args[0], str) else _safe(e)
        if not typed:
            why = "internal: " + why
        return Decoded("refused", site, transformer, kind, reason=why)


# ------------------------------------------------------------------ the core


class IngestCore:
    """Decode, validate, commit, dead-letter; the caller acknowledges after ``handle_many`` returns."""

    def __init__(self, store: Store, clock: Clock, limits: Limits | None = None, metrics: Metrics | None = None):
        self.store = store
        self.clock = clock
        self.limits = limits or Limits()
        self.metrics = metrics or Metrics(clock)
        # Called after each commit with the batches it stored (the alarm engine); a failing
        # listener is logged and counted, never undoes or blocks the commit.
        self.listeners: list[Callable[[list[Committed]], None]] = []

    def handle(self, topic: str, payload: bytes, received_s: float | None = None) -> Outcome:
        """One message, one transaction."""
        now = self.clock.now() if received_s is None else received_s
        return self.handle_many([Message(topic, bytes(payload), now)])[0]

    def handle_many(self, messages: Sequence[Message]) -> list[Outcome]:
        """Several messages in one transaction (the throughput path); outcomes in the same order.

        Raises ``StorageError`` only when the database fails for every message alike
        (it does not answer): then nothing was committed and nothing may be acknowledged.
        """
        decoded = [decode(m.topic, m.payload, m.received_s, self.limits) for m in messages]
        try:
            outcomes, committed, seconds = self._commit(messages, decoded)
        except TransientStorageError:
            raise  # nothing is wrong with the messages: the caller retries them all
        except StorageError as e:
            if len(messages) == 1:
                return [self._alone(messages[0], decoded[0], e)]
            log.warning("ingest: a transaction of %d messages failed (%s); one by one", len(messages), _safe(e))
            outcomes = []
            for m, d in zip(messages, decoded):
                try:
                    out, comm, secs = self._commit([m], [d])
                    outcomes.extend(out)
                    self._notify(comm)
                except TransientStorageError:
                    raise  # those committed alone so far come again as copies: harmless
                except StorageError as e1:
                    outcomes.append(self._alone(m, d, e1))
            return outcomes
        self._notify(committed)
        return outcomes

    def _alone(self, m: Message, d: Decoded, e: StorageError) -> Outcome:
        # This message alone fails to commit: dead-letter it. If that fails too, the database
        # itself is down: propagate, and nothing is acknowledged.
        reason = "storage: " + _safe(e)
        self.store.dead_letter(
            _cut(m.topic, 200),
            m.payload[: self.limits.dead_letter_bytes],
            reason,
            m.received_s,
            len(m.payload),
            m.source,
        )
        self.metrics.commit(0.0, 0, 0, 0, 1, 1, None, None)
        self.metrics.message("dead_letter")
        self.metrics.error("commit")
        log.warning("ingest: %s: dead-lettered: %s", _cut(m.topic, 120), reason)
        return Outcome("dead_letter", reason=reason)

    def _commit(
        self, messages: Sequence[Message], decoded: Sequence[Decoded]
    ) -> tuple[list[Outcome], list[Committed], float]:
        committed: list[Committed] = []
        t0 = time.perf_counter()
        new_total = dup_total = invalid_total = refused = dead = 0
        newest_lag: float | None = None
        oldest_rx = min((m.received_s for m in messages), default=None)
        spans = [(d.kind, min(r.t_s for r in d.records), max(r.t_s for r in d.records)) for d in decoded if d.records]
        if spans:
            self.store.prepare([s for s in spans if s[0] is not None])  # type: ignore[misc]
        # One lock order for every worker: rows of (site, transformer) are written in that order, so two
        # workers committing batches of the same transformers at once cannot deadlock on each other.
        order = sorted(range(len(messages)), key=lambda i: (decoded[i].site or "", decoded[i].transformer or "", i))
        by_index: dict[int, Outcome] = {}
        with self.store.db.transaction():
            for i in order:
                m, d = messages[i], decoded[i]
                if d.what == "ignored":
                    by_index[i] = Outcome("ignored")
                elif d.what == "status":
                    assert d.site is not None and d.transformer is not None
                    self.store.set_status(d.site, d.transformer, d.status, m.received_s)
                    by_index[i] = Outcome("status")
                elif d.what == "batch":
                    assert d.site is not None and d.transformer is not None and d.kind is not None
                    new, dup = self.store.add_batch(d.site, d.transformer, d.kind, d.records, m.received_s)
                    if d.invalid:
                        self.store.count_invalid(d.site, d.transformer, records=d.invalid)
                    new_total += new
                    dup_total += dup
                    invalid_total += d.invalid
                    lag = m.received_s - max(r.t_s for r in d.records)
                    newest_lag = lag if newest_lag is None else min(newest_lag, lag)
                    committed.append(Committed(d.site, d.transformer, d.kind, d.records, new, m.received_s))
                    if d.invalid:
                        self._dead_letter(m, d)
                        dead += 1
                    by_index[i] = Outcome("stored" if new else "duplicate", new, dup, d.invalid, d.reason)
                else:  # refused: nothing stored
                    refused += 1
                    dead += 1
                    invalid_total += d.invalid
                    self.store.count_invalid(d.site or "", d.transformer or "", batches=1, records=d.invalid)
                    self._dead_letter(m, d)
                    by_index[i] = Outcome("dead_letter", invalid=d.invalid, reason=d.reason)
        outcomes = [by_index[i] for i in range(len(messages))]
        seconds = time.perf_counter() - t0
        wait = None if oldest_rx is None else max(0.0, self.clock.now() - oldest_rx)
        self.metrics.commit(seconds, new_total, dup_total, invalid_total, refused, dead, newest_lag, wait)
        for o in outcomes:
            self.metrics.message(o.kind)
        return outcomes, committed, seconds

    def _dead_letter(self, m: Message, d: Decoded) -> None:
        reason = d.reason or "refused"
        self.store.dead_letter(
            _cut(m.topic, 200),
            m.payload[: self.limits.dead_letter_bytes],
            reason,
            m.received_s,
            len(m.payload),
            m.source,
        )
        # Logged cut short: the topic and reason may be an attacker's; the payload is never logged.
        log.warning("ingest: %s: %s", _cut(m.topic, 120), _cut(reason, 300))

    def _notify(self, committed: list[Committed]) -> None:
        if not committed:
            return
        for listener in list(self.listeners):
            try:
                listener(committed)
            except Exception as e:  # a listener's bug must not cost the ingest
                self.metrics.error("listener")
                log.error("ingest listener %s failed: %s", getattr(listener, "__name__", listener), _safe(e))

    def close(self) -> None:
        self.store.close()
