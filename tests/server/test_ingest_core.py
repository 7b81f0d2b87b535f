"""The ingest core against hostile input (issue 13 items 2 and 3): every message gets an outcome, none a crash.

Caps are checked before work (payload bytes, inflated bytes, declared records),
error detail is a bounded summary, every refused message is dead-lettered and
counted, a transient database failure is retried rather than dead-lettered,
and a failing listener costs nothing.
"""

import time
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasecore import cbor
from phasekit.testing.batches import SAMPLE_SUMMARY, encode, readings, topic
from phaseserver.clock import Clock
from phaseserver.errors import StorageError, TransientStorageError
from phaseserver.ingest.core import IngestCore, Limits, Message, decode
from phaseserver.metrics import Metrics
from phaseuplink import records

T = topic("s1", "t1", "reading")
OUTCOMES = {"stored", "duplicate", "status", "ignored", "dead_letter"}


def now():
    return time.time()


@pytest.fixture
def core(store):
    return IngestCore(store, Clock(), Limits(), Metrics())


def plain_batch(
    n_records, record=b"\x84\x01\x01\x00\x88\x19\x08\xfc\x19\x03\xe8\x19\x07\xd0\x19#(\x19\x01\xf4\x18_\x00\x00"
):
    head = bytes([0x83, 0x01, 0x1A]) + int(now()).to_bytes(4, "big")
    if n_records < 24:
        arr = bytes([0x80 | n_records])
    else:
        arr = bytes([0x9A]) + n_records.to_bytes(4, "big")
    return head + arr + record * n_records


def test_genuine_batches_and_copies(core, store):
    t0 = int(now()) - 3600
    payload = encode(readings(5, t0, 4))
    assert core.handle(T, payload).kind == "stored"
    out = core.handle(T, payload)
    assert (out.kind, out.new, out.duplicates) == ("duplicate", 0, 20)
    assert core.handle(topic("s1", "t1", "status"), b"online").kind == "status"
    assert core.handle(topic("s1", "t1", "command"), b"\xff" * 100).kind == "ignored"
    assert core.handle("phasekit/s1/t1/command/7", b"x").kind == "ignored"
    assert store.counters(None) == {"batches": 2, "duplicates": 20, "records": 20}  # commands are not invalid
    assert store.dead_letters(None) == []


@pytest.mark.parametrize(
    "topic_, payload, why",
    [
        (T, lambda: b"\x00" * (256 * 1024 + 1), "exceeds max_payload_bytes"),
        (T, lambda: zlib.compress(b"\x00" * (50 << 20), 9), "inflates beyond"),  # a zip bomb, ~50 kB
        (T, lambda: zlib.compress(plain_batch(2_000_000), 9), "inflates beyond"),  # millions of records, small
        (T, lambda: plain_batch(1_000_000)[:5000], "declares 1000000 records"),  # the count, before any record
        (T, bytes([0x83, 0x01, 0x1A, 0, 0, 0, 1, 0x9F]) + b"\xff", "indefinite"),
        (T, b"\x83\x01\xc2\x59\x27\x10" + b"\xff" * 10000 + b"\x80", "t0"),  # a 10,000-byte bignum t0
        (T, b"\x81" * 50000, "not a CBOR array of 3"),  # nesting 50,000 deep
        (T, b"", "empty"),
        (T, b"\x78\x9c garbage", "zlib"),
        (topic("s1", "t1", "status"), b"o" * 65, "status of 65 bytes"),
        (topic("s1", "t1", "status"), b"\xff\xfe", "internal"),
        (topic("s1", "t1", "status"), b"maybe", "neither online nor offline"),
        (topic("s1", "t1", "gossip"), encode(readings(1, int(now()), 1)), "unknown record kind"),
        ("phasekit/s1/t1/reading/extra", b"x", "not phasekit"),
    ],
)
def test_hostile_messages_are_dead_lettered_with_a_reason(core, store, topic_, payload, why):
    if callable(payload):
        payload = payload()
    tracemalloc.start()
    t = time.perf_counter()
    out = core.handle(topic_, payload)
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.kind == "dead_letter" and why in out.reason, out
    assert len(out.reason) <= 700
    assert seconds < 2.0 and peak < 16 << 20, (seconds, peak)  # work bounded by the caps, not by the input
    (d,) = store.dead_letters(None)
    assert d.payload_len == len(payload) and len(d.payload_prefix) <= 256 and d.reason == out.reason
    assert d.topic == topic_[:200]


def test_huge_integers_in_records_are_refused_one_by_one_never_raised(core, store):
    t0 = int(now()) - 60
    good = encode(readings(2, t0, 1), compress=False)
    body = cbor.loads(good)
    body[2] = body[2] + [
        [2**64 - 1, 1, 0, [1] * 8],  # src beyond any sender
        [1, 2**64 - 1, 0, [1] * 8],  # seq beyond a node's
        [1, 5, 0, [10**30] * 8],  # reading values as bignums
        [1, 6, 0, {"deep": [[[[[[[[[[1]]]]]]]]]]}],
        [1, 7, 0, "x" * 1000],
    ]
    out = core.handle(T, cbor.dumps(body))
    assert (out.kind, out.new, out.invalid) == ("stored", 2, 5)
    assert out.reason.startswith("5 of 7 records refused") and len(out.reason) <= 700
    # A field holding a bignum of 8,000 bytes: an integer of ~19,000 digits, too long for Python to print
    # (ValueError from the int-to-str limit), inside a record: refused as a record (its error quotes the
    # value bounded: phasecore.errors.quote), the batch with nothing valid dead-lettered; never an exception.
    bignum = (
        b"\x83\x01\x1a" + t0.to_bytes(4, "big") + b"\x81\x84\x01\x01\x00\x88"
        + b"\xc2\x59\x1f\x40" + b"\x7f" * 8000 + b"\x00" * 7
    )  # fmt: skip
    out = core.handle(T, bignum)
    assert out.kind == "dead_letter", out
    c = store.counters(None)
    assert c["invalid_records"] == 6 and c["invalid_batches"] == 1


def test_error_detail_is_a_bounded_summary_not_one_string_per_record(core):
    t0 = int(now()) - 60
    bad = [records.reading(1, s, t0, [2300, 1, 1, 1, 500, 95, 0, 0]) for s in range(1500)]
    rows = [(k, top, b"\x82\x01\x02", src, seq, t_s) for k, top, _p, src, seq, t_s in bad]  # bodies break the schema
    t = time.perf_counter()
    out = core.handle(T, encode(rows, compress=False))
    seconds = time.perf_counter() - t
    # A run of refusals stops early: the batch is refused whole after 17 records, not read to its end.
    assert out.kind == "dead_letter" and out.invalid == 1500, out
    assert out.reason.startswith("refused unread after 17 of 1500 records: 17 of 1500 records refused")
    assert len(out.reason) <= 700 and seconds < 0.5


def test_a_few_bad_records_cost_only_themselves(core, store):
    t0 = int(now()) - 600
    items = readings(100, t0, 10)
    rows = [
        (k, top, b"\x82\x01\x02" if i % 100 == 7 else p, src, seq, t_s)
        for i, (k, top, p, src, seq, t_s) in enumerate(items)
    ]
    out = core.handle(T, encode(rows))
    assert (out.kind, out.new, out.invalid) == ("stored", 990, 10)
    assert out.reason.startswith("10 of 1000 records refused: reading record 7:")
    assert len(store.dead_letters(None)) == 1  # the operator sees why


def test_a_compressed_batch_may_not_unfold_far_beyond_its_size(core):
    t0 = int(now()) - 60
    bad = [records.reading(1, 1, t0, [2300, 1, 1, 1, 500, 95, 0, 0])] * 2000  # 2,000 records alike
    rows = [(k, top, b"\x82\x01\x02", src, seq, t_s) for k, top, _p, src, seq, t_s in bad]
    payload = encode(rows)
    assert payload[0] == 0x78 and len(payload) < 600  # 2,000 records in a few hundred bytes
    out = core.handle(T, payload)
    assert out.kind == "dead_letter" and "inflates beyond" in out.reason and "max_inflate_ratio" in out.reason


def test_records_outside_the_accepted_window_are_refused(core, store):
    t = int(now())
    items = readings(1, t - 100 * 86400, 1) + readings(1, t - 60, 1, seq0=2) + readings(1, t + 3 * 86400, 1, seq0=3)
    out = core.handle(T, encode(items))
    assert (out.kind, out.new, out.invalid) == ("stored", 1, 2) and "accepted window" in out.reason
    assert len(store.dead_letters(None)) == 1  # the operator sees why two were refused


def test_a_store_failure_of_one_message_dead_letters_it_alone(core, store, monkeypatch):
    t0 = int(now()) - 600
    good = [encode(readings(3, t0 + 60 * k, 1, seq0=k)) for k in range(3)]
    real = store.add_batch

    def add_batch(site, tx, kind, recs, rx):
        if tx == "bad":
            raise StorageError("value out of range for this column")
        return real(site, tx, kind, recs, rx)

    monkeypatch.setattr(store, "add_batch", add_batch)
    msgs = [
        Message(T, good[0], now()),
        Message(topic("s1", "bad", "reading"), good[1], now()),
        Message(T, good[2], now()),
    ]
    outs = core.handle_many(msgs)
    assert [o.kind for o in outs] == ["stored", "dead_letter", "stored"]
    assert "storage" in outs[1].reason
    assert store.count_rows("reading") == 6


def test_a_transient_database_failure_is_raised_for_a_retry_never_dead_lettered(core, store, monkeypatch):
    def down(*a, **k):
        raise TransientStorageError("the server is restarting")

    monkeypatch.setattr(store, "add_batch", down)
    with pytest.raises(TransientStorageError):
        core.handle_many([Message(T, encode(readings(2, int(now()) - 60, 1)), now())])
    monkeypatch.undo()
    assert store.dead_letters(None) == [] and store.count_rows("reading") == 0


def test_a_failing_listener_costs_nothing(core, store):
    seen = []

    def broken(batches):
        raise ValueError("a bug in an alarm rule")

    core.listeners += [broken, seen.append]
    out = core.handle(T, encode(readings(2, int(now()) - 60, 1)))
    assert out.kind == "stored" and len(seen) == 1 and seen[0][0].new == 2
    assert core.metrics.snapshot()["errors"] == {"listener": 1}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from([*records.KINDS, "status", "command", "x" * 40]),
    payload=st.one_of(
        st.binary(max_size=600),
        st.builds(lambda b: zlib.compress(b), st.binary(max_size=600)),
        st.builds(lambda b: b"\x83\x01\x1a\x00\x00\x00\x01" + b, st.binary(max_size=300)),
    ),
)
def test_decode_never_raises_on_any_bytes(kind, payload):
    d = decode("phasekit/s/t/%s" % kind, payload, now(), Limits())
    assert d.what in ("batch", "status", "ignored", "refused")
    assert len(d.reason) <= 700


def test_summary_and_metrics_in_prometheus_text(core):
    core.handle(T, encode(readings(2, int(now()) - 60, 1)))
    core.handle(T, b"junk")
    core.handle(topic("s1", "t1", "summary"), encode([records.summary(int(now()) - 5, dict(SAMPLE_SUMMARY, time_s=1))]))
    text = core.metrics.render()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
    assert values["phaseserver_records_total"] == 3
    assert values['phaseserver_messages_total{outcome="dead_letter"}'] == 1
    assert values["phaseserver_refused_batches_total"] == 1 and values["phaseserver_dead_letters_total"] == 1
    assert values["phaseserver_commit_seconds_count"] == 3
    assert values['phaseserver_commit_seconds_bucket{le="+Inf"}'] == 3
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            assert line.split()[3] in ("counter", "gauge", "histogram")
    assert core.metrics.health() == (True, "ok")
