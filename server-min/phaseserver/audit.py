"""The tamper-evident audit log: who did what, to what, when, from where, with the state before and after.

Every entry is one row of ``audit_log``, appended by ``record`` and never
changed: there is no UPDATE or DELETE path in the code, and the database
refuses both (triggers on SQLite and PostgreSQL, migration 0110). Entry ``n``
carries ``hash_n = SHA-256(canonical(entry_n) || hash_{n-1})`` (``entry_hash``;
``hash_0`` is 32 zero bytes), so changing, removing or inserting a row breaks
every hash after it. Rewriting the whole tail after an edit would make a
consistent chain again, and deleting the newest rows leaves one; both are
caught by the **signed heads**: every ``sign_every_s`` (and at shutdown) the
server signs the chain head ``(seq, hash, time)`` with its Ed25519 audit key
and appends it to ``audit_head`` and to a JSON-lines file outside the
database (``[audit] head_file``; ship it off the machine, e.g. by syslog or
a backup job, for the check to survive an attacker who owns the host).
``verify`` walks the whole chain, checks every signed head against it, and
names the first broken entry.

Canonical encoding (hashed, so fixed for ever; ``FORMAT`` 1): the
deterministic CBOR (RFC 8949 section 4.2.1) array
``["phasekit-audit", 1, seq, t_ms, tenant_id|null, actor, source, action,
object, before|null, after|null, prev_hash]``, where ``before``/``after`` are
the JSON texts stored in the row (``json.dumps`` with sorted keys and no
spaces, made once when the entry is recorded: the hash covers the stored
text, so no JSON re-encoding is ever needed to verify). Times are integer
milliseconds of the wall clock: an audit entry says when a person acted, in
real time, whatever the site clock of a demo says.

The one thing to know: ``record`` serialises writers (SQLite: the write
transaction; PostgreSQL: a transaction-scoped advisory lock) because each
entry needs the previous hash; call it inside the transaction that makes the
change it describes, so the change and its entry commit together or not at all.
"""

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from phasecore import cbor
from phaseserver.auth.keyfile import key_id
from phaseserver.errors import AuditError

__all__ = (
    "FORMAT",
    "GENESIS",
    "Entry",
    "record",
    "entry_hash",
    "search",
    "tip",
    "sign_head",
    "head_message",
    "read_head_file",
    "verify",
    "Report",
)

FORMAT = 1
GENESIS = bytes(32)
_TAG = "phasekit-audit"
_HEAD_TAG = "phasekit-audit-head"
# Advisory lock key of the chain on PostgreSQL (any constant the server uses for nothing else).
_PG_LOCK = 0x70686B61
_MAX_TEXT = 256
_MAX_STATE = 65536
_COLUMNS = "seq, t_ms, tenant_id, actor, source, action, object, before_json, after_json, prev_hash, hash"


@dataclass(frozen=True)
class Entry:
    seq: int
    t_ms: int
    tenant_id: str | None
    actor: str
    source: str
    action: str
    object: str
    before: str | None  # canonical JSON text, as stored and hashed
    after: str | None
    prev_hash: str  # hex
    hash: str  # hex

    def public(self) -> dict[str, Any]:
        """The entry as the API shows it (states decoded from their JSON text)."""
        return {
            "seq": self.seq,
            "t_s": self.t_ms / 1000.0,
            "tenant_id": self.tenant_id,
            "actor": self.actor,
            "source": self.source,
            "action": self.action,
            "object": self.object,
            "before": None if self.before is None else json.loads(self.before),
            "after": None if self.after is None else json.loads(self.after),
            "hash": self.hash,
        }


def _row(r: Any) -> Entry:
    return Entry(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10])


def canonical_state(value: Any) -> str | None:
    """The JSON text stored (and hashed) for a before/after state; None stays None."""
    if value is None:
        return None
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise AuditError("audit state is not plain JSON: %s" % e) from e
    if len(text) > _MAX_STATE:
        raise AuditError("audit state of %d characters exceeds %d" % (len(text), _MAX_STATE))
    return text


def entry_hash(
    seq: int,
    t_ms: int,
    tenant_id: str | None,
    actor: str,
    source: str,
    action: str,
    obj: str,
    before: str | None,
    after: str | None,
    prev_hash: bytes,
) -> bytes:
    """SHA-256 of an entry's canonical CBOR encoding (module docstring), chained to ``prev_hash``."""
    item = [_TAG, FORMAT, seq, t_ms, tenant_id, actor, source, action, obj, before, after, prev_hash]
    return hashlib.sha256(cbor.dumps(item)).digest()


def _text(name: str, value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise AuditError("audit %s must be a text of 1..%d characters" % (name, _MAX_TEXT))
    return value


def tip(db: Any) -> tuple[int, bytes]:
    """``(seq, hash)`` of the newest entry; ``(0, GENESIS)`` for an empty log."""
    r = db.fetchone("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    return (0, GENESIS) if r is None else (int(r[0]), bytes.fromhex(r[1]))


def record(
    db: Any,
    actor: str,
    tenant: str | None,
    action: str,
    object: str,
    before: Any,
    after: Any,
    source: str,
    *,
    now: float | None = None,
) -> Entry:
    """Append one entry (inside the caller's transaction when there is one); returns it.

    ``actor``: ``user:NAME``, ``key:ID``, ``cli:USER``, ``pi:SITE/TRANSFORMER`` or ``server``;
    ``tenant``: the tenant id the action concerns (None: system level); ``action``: a dotted
    verb (``login.failed``, ``alarm.ack``, ``command.send``); ``object``: what it acted on
    (``user:alice``, ``transformer:s1/tx1``, ``alarm:42``); ``before``/``after``: plain JSON
    values (None when not applicable); ``source``: the client address or ``cli``;
    ``now``: Unix seconds, the wall clock by default.
    """
    t_ms = int(round((time.time() if now is None else now) * 1000))
    actor, action, obj, source = _text("actor", actor), _text("action", action), _text("object", object), source
    source = (source or "-")[:_MAX_TEXT]
    before_t, after_t = canonical_state(before), canonical_state(after)
    # Joins the caller's transaction (the change it describes commits with it); alone, it is its own.
    with db.transaction():
        if db.engine == "postgres":
            db.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK,))
        seq, prev = tip(db)
        seq += 1
        h = entry_hash(seq, t_ms, tenant, actor, source, action, obj, before_t, after_t, prev)
        db.execute(
            "INSERT INTO audit_log (%s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" % _COLUMNS,
            (seq, t_ms, tenant, actor, source, action, obj, before_t, after_t, prev.hex(), h.hex()),
        )
    return Entry(seq, t_ms, tenant, actor, source, action, obj, before_t, after_t, prev.hex(), h.hex())


def search(
    db: Any,
    tenant_id: str | None,
    t_from: float | None = None,
    t_to: float | None = None,
    obj: str | None = None,
    action: str | None = None,
    before_seq: int | None = None,
    limit: int = 100,
) -> list[Entry]:
    """Entries of one tenant, newest first, within ``[t_from, t_to)`` (Unix s), for an object (exact, or
    a prefix when it ends in ``*``) and an action; ``before_seq`` pages back."""
    where: list[str] = ["tenant_id IS NULL" if tenant_id is None else "tenant_id = ?"]
    args: list[Any] = []
    if tenant_id is not None:
        args.append(tenant_id)
    if t_from is not None:
        where.append("t_ms >= ?")
        args.append(int(t_from * 1000))
    if t_to is not None:
        where.append("t_ms < ?")
        args.append(int(t_to * 1000))
    if obj:
        if obj.endswith("*"):
            where.append("object >= ? AND object < ?")
            stem = obj[:-1]
            args += [stem, stem + "\U0010ffff"]
        else:
            where.append("object = ?")
            args.append(obj)
    if action:
        where.append("action = ?")
        args.append(action)
    if before_seq is not None:
        where.append("seq < ?")
        args.append(before_seq)
    args.append(max(1, min(int(limit), 1000)))
    sql = "SELECT %s FROM audit_log WHERE %s ORDER BY seq DESC LIMIT ?" % (_COLUMNS, " AND ".join(where))
    return [_row(r) for r in db.fetchall(sql, tuple(args))]


# ---- signed heads ---------------------------------------------------------------------------


def head_message(seq: int, hash_: bytes, t_ms: int) -> bytes:
    """The bytes the audit key signs for a head: CBOR ``["phasekit-audit-head", 1, seq, hash, t_ms]``."""
    return cbor.dumps([_HEAD_TAG, FORMAT, seq, hash_, t_ms])


def sign_head(db: Any, key: Ed25519PrivateKey, head_file: str | None, now: float | None = None) -> dict | None:
    """Sign the chain head if it moved since the last signed head: store it and append it to ``head_file``.

    Returns the head (``{"seq", "hash", "t_ms", "key", "sig"}``) or None when
    nothing new was logged. Runs in its own transaction.
    """
    t_ms = int(round((time.time() if now is None else now) * 1000))
    with db.transaction():
        seq, h = tip(db)
        last = db.fetchone("SELECT seq FROM audit_head ORDER BY seq DESC LIMIT 1")
        if seq == 0 or (last is not None and int(last[0]) >= seq):
            return None
        head = {
            "seq": seq,
            "hash": h.hex(),
            "t_ms": t_ms,
            "key": key_id(key),
            "sig": key.sign(head_message(seq, h, t_ms)).hex(),
        }
        db.execute(
            "INSERT INTO audit_head (seq, hash, t_ms, key_id, signature) VALUES (?, ?, ?, ?, ?)",
            (seq, head["hash"], t_ms, head["key"], head["sig"]),
        )
    if head_file:
        line = json.dumps(head, sort_keys=True, separators=(",", ":")) + "\n"
        try:
            fd = os.open(head_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise AuditError("audit head file %s: %s" % (head_file, e)) from e
    return head


def read_head_file(path: str) -> list[dict]:
    """The heads in a head file (JSON lines); AuditError naming the line for a damaged one."""
    heads = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    h = json.loads(line)
                    heads.append(
                        {
                            "seq": int(h["seq"]),
                            "hash": str(h["hash"]),
                            "t_ms": int(h["t_ms"]),
                            "key": str(h["key"]),
                            "sig": str(h["sig"]),
                        }
                    )
                except (ValueError, KeyError, TypeError) as e:
                    raise AuditError("audit head file %s line %d: %s" % (path, n, e)) from e
    except FileNotFoundError:
        return []
    except OSError as e:
        raise AuditError("audit head file %s: %s" % (path, e)) from e
    return heads


# ---- verification ---------------------------------------------------------------------------


@dataclass
class Report:
    """What ``verify`` found: ``ok``, the entries and heads checked, and the first problem."""

    entries: int = 0
    last_seq: int = 0
    heads: int = 0
    first_broken: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def _fail(self, seq: int, what: str) -> None:
        if self.first_broken is None or seq < self.first_broken:
            self.first_broken = seq
        if len(self.problems) < 20:
            self.problems.append(what)

    def summary(self) -> str:
        if self.ok:
            return "audit log intact: %d entries, chain head %d, %d signed heads checked" % (
                self.entries,
                self.last_seq,
                self.heads,
            )
        return "audit log BROKEN at entry %s: %s" % (self.first_broken, "; ".join(self.problems))


def _walk(db: Any, chunk: int = 5000) -> Iterator[Entry]:
    after = 0
    while True:
        rows = db.fetchall("SELECT %s FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?" % _COLUMNS, (after, chunk))
        if not rows:
            return
        for r in rows:
            yield _row(r)
        after = int(rows[-1][0])


def verify(db: Any, public_key: Ed25519PublicKey | None, head_file: str | None = None) -> Report:
    """Check the whole chain and every signed head (table and file); the report names the first broken entry."""
    rep = Report()
    expected, prev = 1, GENESIS
    hashes: dict[int, str] = {}
    heads = [
        {"seq": int(r[0]), "hash": r[1], "t_ms": int(r[2]), "key": r[3], "sig": r[4], "from": "table"}
        for r in db.fetchall("SELECT seq, hash, t_ms, key_id, signature FROM audit_head ORDER BY seq")
    ]
    if head_file:
        heads += [dict(h, **{"from": "file"}) for h in read_head_file(head_file)]
    wanted = {h["seq"] for h in heads}
    for e in _walk(db):
        if e.seq != expected:
            if e.seq > expected:
                rep._fail(expected, "entry %d missing (the next present is %d)" % (expected, e.seq))
            else:
                rep._fail(e.seq, "entry %d out of order" % e.seq)
        if e.prev_hash != prev.hex():
            rep._fail(e.seq, "entry %d: its previous hash is not entry %d's hash" % (e.seq, e.seq - 1))
        try:
            h = entry_hash(
                e.seq, e.t_ms, e.tenant_id, e.actor, e.source, e.action, e.object, e.before, e.after,
                bytes.fromhex(e.prev_hash),
            )  # fmt: skip
        except ValueError:
            h = b""
        if h.hex() != e.hash:
            rep._fail(e.seq, "entry %d: its contents do not match its hash (edited)" % e.seq)
        prev = bytes.fromhex(e.hash) if len(e.hash) == 64 else GENESIS
        if e.seq in wanted:
            hashes[e.seq] = e.hash
        rep.entries += 1
        rep.last_seq = e.seq
        expected = e.seq + 1
    good_below = 0  # the highest signed head that matches the chain: entries up to it are as signed
    for head in sorted(heads, key=lambda x: x["seq"]):
        where = "signed head %d (%s)" % (head["seq"], head["from"])
        if public_key is None:
            rep._fail(head["seq"], "%s: no audit public key to check it with" % where)
            continue
        try:
            message = head_message(head["seq"], bytes.fromhex(head["hash"]), head["t_ms"])
            public_key.verify(bytes.fromhex(head["sig"]), message)
        except (InvalidSignature, ValueError):
            rep._fail(head["seq"], "%s: the signature does not verify" % where)
            continue
        rep.heads += 1
        if head["seq"] > rep.last_seq:
            rep._fail(
                rep.last_seq + 1,
                "%s: the log ends at entry %d, so entries %d..%d were removed (truncated)"
                % (where, rep.last_seq, rep.last_seq + 1, head["seq"]),
            )
        elif hashes.get(head["seq"]) != head["hash"]:
            # The chain was rebuilt after a change: which entry changed is not known, only that it lies
            # after the last head that still matches and at or before this one.
            rep._fail(
                good_below + 1,
                "%s: entry %d's hash differs from the signed one, so an entry in %d..%d was rewritten"
                % (where, head["seq"], good_below + 1, head["seq"]),
            )
        else:
            good_below = max(good_below, head["seq"])
    return rep
