"""Operator commands through the server: sealed end to end for one node, sent to its Pi, tracked to the node's answer.

An operator (role-checked by the API) asks for a command on one node of one
of its tenant's transformers:

| API op | node command (phasecore.msg) | what it does |
|---|---|---|
| ``move`` | MOVE to ``phase`` | switch the house to another phase, through the node's relay safety |
| ``lock`` | LOCK | pause balancing of the node: its relay stays where it is, the balancer skips it |
| ``unlock`` | UNLOCK | resume balancing of the node (also ends a suspension after a failed move) |
| ``set_limits`` | SET_LIMITS | change the node's limits (current, voltage, switching budget, dwell) |
| ``report`` | REPORT | ask the node for its state now |
| ``pause`` | PAUSE (node 0) | pause the transformer's balancer: no automatic moves (operator moves still go) |
| ``resume`` | RESUME (node 0) | resume the transformer's balancer |

``pause`` and ``resume`` are for the transformer, not a node: they are
sealed for node 0 (the Pi itself, ``TRANSFORMER_OPS``), and every other op
needs a node 1..247. The Pi carries them out itself, persists the pause and
answers with an ack record of its own (src 0), which makes them ``done``.

The server is an operator like ``phasekit operator send``: it holds only its
operator key file (``phasekit operator key --operator server-1``), never the
site key, and seals each command with ``phaseuplink.operator`` under its
persisted sequence number; only the addressed Pi, which lists the server's
operator id in ``[uplink] operators``, accepts it, and only for that node.
The command is stored (state ``sealed``) and audited in one transaction
before it is published, so nothing leaves the server unrecorded; the broker's
PUBACK makes it ``sent``. ``Tracker.poll`` then reads the Pi's uplink records
that ingest stored (``record`` table): the ack record of the node's answer
gives ``done``, ``refused``, ``failed``, ``expired`` or ``unsupported`` (with
the node's reason), the Pi's record of a command without a reply gives
``no_ack``, and a command still open ``grace_s`` after its deadline becomes
``timeout``. An ack is matched to its command by (site, transformer, op,
deadline, and the node that answered): the Pi carries the operator's
``deadline_s`` into the command it seals for the node, and the server never
has two commands with the same (site, transformer, op, deadline): it moves
the deadline on by a second when it would.

Every refusal the Pi reports (an ``OPERATOR_REFUSED`` event: forged, replayed,
unknown operator, expired, ...) is audited once (``command.refused_at_pi``),
whoever sent the refused bytes.

The one thing to know: the sequence number must never repeat under the
operator key (AES-CCM nonce reuse), so the counter is persisted in blocks
(``phasecore.replay.SequenceCounter``) in ``counter_file`` *and* checked
against the highest number in the ``command`` table at start: restoring
either one from an old backup cannot bring a used number back. Two server
processes must never share an operator id.
"""

import json
import logging
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from phasecore import cbor, codes, msg
from phasecore.errors import PhasecoreError, quote
from phasecore.replay import SequenceCounter
from phaseserver import audit
from phaseserver.errors import CommandError
from phaseuplink import operator, topics

__all__ = (
    "OPS",
    "TRANSFORMER_OPS",
    "STATES",
    "OPEN_STATES",
    "LIMITS",
    "CommandSettings",
    "CounterFile",
    "Sealer",
    "CommandService",
    "NotFound",
    "Command",
    "MqttPublisher",
    "build_service",
    "build_fields",
)

log = logging.getLogger("phaseserver.commands")

OPS = {
    "move": msg.OP_MOVE,
    "lock": msg.OP_LOCK,
    "unlock": msg.OP_UNLOCK,
    "set_limits": msg.OP_SET_LIMITS,
    "report": msg.OP_REPORT,
    "pause": msg.OP_PAUSE,
    "resume": msg.OP_RESUME,
}
# The ops for the transformer itself (node 0: its Pi carries them out), not for a node.
TRANSFORMER_OPS = ("pause", "resume")
_OP_NAME = {v: k for k, v in OPS.items()}
# SET_LIMITS fields and their bounds (phasecore.msg's command schema).
LIMITS = {
    "i_max_mA": (1, 100000),
    "v_min_dV": (0, 3000),
    "v_max_dV": (0, 3000),
    "max_per_hour": (0, 60),
    "max_per_day": (0, 1440),
    "min_dwell_s": (0, 604800),
    "dead_time_ms": (0, 10000),
}
OUTCOME_STATES = ("done", "refused", "failed", "expired", "unsupported")  # by phasecore ACK_* code
STATES = ("sealed", "sent", "send_failed", *OUTCOME_STATES, "no_ack", "timeout")
OPEN_STATES = ("sealed", "sent")
# The Pi's refusal reasons, by the value of its OPERATOR_REFUSED event (phasegate.controller.OPERATOR_REASONS).
REFUSAL_REASONS = operator.REFUSAL_REASONS
_OPERATOR_LOCK_REASON = 1  # LOCK's reason field: set by an operator (any nonzero value the node keeps)
_COUNTER_MAGIC = "phasekit-server-seq"
_COLUMNS = (
    "id, tenant_id, site, transformer, node, op, fields, operator_id, seq, deadline_s, requested_by, source,"
    " requested_s, sent_s, state, outcome_s, ack, detail"
)


class NotFound(CommandError):
    """The transformer or node is not one of the caller's tenant (or does not exist: the same answer)."""


@dataclass(frozen=True)
class CommandSettings:
    operator_id: str
    key_file: str
    counter_file: str
    ttl_s: int = 300  # how long a command stays valid (its deadline_s)
    grace_s: int = 120  # how long after its deadline an unanswered command turns to timeout
    publish_timeout_s: float = 10.0


@dataclass(frozen=True)
class Command:
    id: int
    tenant_id: str
    site: str
    transformer: str
    node: int
    op: str
    fields: dict
    operator_id: str
    seq: int
    deadline_s: int
    requested_by: str
    source: str
    requested_s: float
    sent_s: float | None
    state: str
    outcome_s: float | None
    ack: dict | None
    detail: str | None

    def public(self) -> dict[str, Any]:
        """What the API shows: no sequence number or operator internals beyond the id."""
        return {
            "id": self.id,
            "site": self.site,
            "transformer": self.transformer,
            "node": self.node,
            "op": self.op,
            "params": _params_of(self.op, self.fields),
            "deadline_s": self.deadline_s,
            "requested_by": self.requested_by,
            "requested_s": self.requested_s,
            "sent_s": self.sent_s,
            "state": self.state,
            "outcome_s": self.outcome_s,
            "ack": self.ack,
            "detail": self.detail,
        }


def _row(r: Any) -> Command:
    return Command(
        int(r[0]), r[1], r[2], r[3], int(r[4]), r[5], json.loads(r[6]), r[7], int(r[8]), int(r[9]), r[10], r[11],
        float(r[12]), None if r[13] is None else float(r[13]), r[14], None if r[15] is None else float(r[15]),
        None if r[16] is None else json.loads(r[16]), r[17],
    )  # fmt: skip


def _params_of(op: str, fields: dict) -> dict[str, Any]:
    if op == "move":
        return {"phase": codes.PHASE_NAMES[fields["phase"]]}
    if op == "set_limits":
        return {k: fields[k] for k in LIMITS if k in fields}
    return {}


class CounterFile:
    """``load``/``save`` of the server's operator counter: one line ``phasekit-server-seq <bound> <crc32>``.

    ``load`` returns None only when the file does not exist; a damaged file raises CommandError
    (the counter must never guess low). ``save`` writes a temporary file, fsyncs it and renames it.
    """

    def __init__(self, path: str):
        self.path = str(path)

    def load(self) -> int | None:
        try:
            with open(self.path, encoding="ascii") as f:
                line = f.read(200)
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError("operator counter %s: cannot read: %s" % (self.path, e)) from e
        parts = line.strip().split(" ")
        try:
            if len(parts) != 3 or parts[0] != _COUNTER_MAGIC:
                raise ValueError("not a counter file")
            bound, crc = int(parts[1]), int(parts[2], 16)
            if bound < 0 or crc != zlib.crc32(("%s %d" % (_COUNTER_MAGIC, bound)).encode()):
                raise ValueError("checksum does not match")
        except ValueError as e:
            raise CommandError("operator counter %s: %s; refusing to guess" % (self.path, e)) from e
        return bound

    def save(self, n: int) -> None:
        body = "%s %d" % (_COUNTER_MAGIC, n)
        tmp = self.path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write("%s %08x\n" % (body, zlib.crc32(body.encode())))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            raise CommandError("operator counter %s: cannot write: %s" % (self.path, e)) from e


class Sealer:
    """The server's operator identity: its key, its persisted counter; ``seal`` never repeats a sequence number."""

    def __init__(self, settings: CommandSettings, floor: int = 0):
        self.operator_id = settings.operator_id
        operator.check_id(self.operator_id)
        self._key, self._iv = operator.read_key_file(settings.key_file)
        self._file = CounterFile(settings.counter_file)
        # Whichever is higher, the file or what the database says was used, so that neither restored
        # from an older backup can bring a used number back (module docstring).
        stored = self._file.load()
        start = max(stored or 0, floor)
        if stored is None or start > stored:
            self._file.save(start)
        self._counter = SequenceCounter(self._file.load, self._file.save, block=16)
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            return self._counter.next()

    def seal(self, seq: int, site: str, transformer: str, node: int, fields: dict) -> bytes:
        return operator.seal_command(self._key, self._iv, self.operator_id, seq, site, transformer, node, fields)

    def __repr__(self) -> str:
        return "Sealer(operator %s)" % self.operator_id


Publish = Callable[[str, bytes], None]  # (topic, payload): returns after the broker's PUBACK, raises otherwise


def build_fields(op: str, params: dict, deadline_s: int, command_id: int) -> dict[str, Any]:
    """The phasecore.msg command fields for an API op; CommandError naming what is wrong."""
    if op not in OPS:
        raise CommandError("unknown command %s (one of %s)" % (quote(str(op)[:20]), ", ".join(OPS)))
    fields: dict[str, Any] = {"id": command_id & 0xFFFFFFFF, "op": OPS[op], "deadline_s": deadline_s}
    if op == "move":
        phase = params.get("phase")
        if phase not in ("A", "B", "C"):
            raise CommandError("a move needs phase A, B or C")
        fields["phase"] = codes.PHASE_NAMES.index(phase)
    elif op == "lock":
        fields["reason"] = _OPERATOR_LOCK_REASON
    elif op == "set_limits":
        limits = {k: params[k] for k in LIMITS if k in params}
        if not limits:
            raise CommandError("set_limits needs at least one of %s" % ", ".join(LIMITS))
        fields.update(limits)
    extra = set(params) - ({"phase"} if op == "move" else set(LIMITS) if op == "set_limits" else set())
    if extra:
        raise CommandError("%s takes no %s" % (op, ", ".join(sorted(extra))))
    try:
        msg.encode(msg.COMMAND, fields)
    except PhasecoreError as e:
        raise CommandError("command %s: %s" % (op, e)) from e
    return fields


class CommandService:
    """Request, list and track operator commands over one database (blocking calls: run them in a thread)."""

    def __init__(
        self,
        db: Any,
        sealer: Sealer,
        publish: Publish,
        settings: CommandSettings,
        wall: Callable[[], float],
    ):
        self.db = db
        self.sealer = sealer
        self.publish = publish
        self.settings = settings
        self.wall = wall
        self.counters = {"sent": 0, "send_failed": 0, "resolved": 0, "refusals_audited": 0}

    def close(self) -> None:
        """Release the publisher's connection (``build_service`` sets it)."""

    @staticmethod
    def floor(db: Any, operator_id: str) -> int:
        """One above the highest sequence number the database says this operator used (0 if none)."""
        r = db.fetchone("SELECT MAX(seq) FROM command WHERE operator_id = ?", (operator_id,))
        return 0 if r is None or r[0] is None else int(r[0]) + 1

    def _check_target(self, tenant: str, site: str, transformer: str, node: int) -> None:
        # The tenant filter is in SQL: another tenant's transformer is "not found", exactly like a missing one.
        if not self.db.fetchone(
            "SELECT 1 FROM transformer WHERE tenant_id = ? AND site = ? AND id = ?", (tenant, site, transformer)
        ):
            raise NotFound("no transformer %s/%s" % (site, transformer))
        if node == 0:  # the transformer itself (pause, resume)
            return
        if not self.db.fetchone(
            "SELECT 1 FROM node WHERE tenant_id = ? AND site = ? AND transformer = ? AND addr = ?",
            (tenant, site, transformer, node),
        ):
            raise NotFound("no node %d on %s/%s" % (node, site, transformer))

    def request(
        self, tenant: str, actor: str, source: str, site: str, transformer: str, node: int, op: str, params: dict
    ) -> Command:
        """Seal, record, audit and publish one command; the Command as stored after the broker's answer."""
        now = self.wall()
        if op in TRANSFORMER_OPS and node != 0:
            raise CommandError("%s is for the whole transformer: no node (or node 0), not node %s" % (op, quote(node)))
        if op in OPS and op not in TRANSFORMER_OPS and not 1 <= node <= 247:
            raise CommandError("%s needs a node 1..247, not %s" % (op, quote(node)))
        self._check_target(tenant, site, transformer, node)
        build_fields(op, params, int(now) + self.settings.ttl_s, 0)  # refuse bad input before using a number
        topic = topics.topic_for(site, transformer, topics.COMMAND_KIND)
        with self.db.transaction():
            deadline = int(now) + self.settings.ttl_s
            # No two commands share (site, transformer, op, deadline): that key finds the ack, even the Pi's
            # record of a command the node never answered, which does not name the node.
            while self.db.fetchone(
                "SELECT 1 FROM command WHERE site = ? AND transformer = ? AND op = ? AND deadline_s = ?",
                (site, transformer, op, deadline),
            ):
                deadline += 1
            seq = self.sealer.next_seq()
            fields = build_fields(op, params, deadline, seq)
            payload = self.sealer.seal(seq, site, transformer, node, fields)
            r = self.db.fetchone(
                "INSERT INTO command (tenant_id, site, transformer, node, op, fields, operator_id, seq, deadline_s,"
                " requested_by, source, requested_s, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'sealed')"
                " RETURNING id",
                (tenant, site, transformer, node, op, json.dumps(fields, sort_keys=True), self.sealer.operator_id,
                 seq, deadline, actor, source[:64], now),
            )  # fmt: skip
            cid = int(r[0])
            target = "node:%s/%s/%d" % (site, transformer, node) if node else "transformer:%s/%s" % (site, transformer)
            audit.record(
                self.db, actor, tenant, "command.request", target, None,
                {"command": cid, "op": op, "params": _params_of(op, fields), "deadline_s": deadline}, source, now=now,
            )  # fmt: skip
        try:
            self.publish(topic, payload)
        except Exception as e:  # any failure of the broker path: the command is recorded as not sent
            self.counters["send_failed"] += 1
            log.warning("command %d to %s: not sent: %s", cid, topic, e)
            self.db.execute(
                "UPDATE command SET state = 'send_failed', outcome_s = ?, detail = ? WHERE id = ?",
                (self.wall(), ("not sent: %s" % e)[:200], cid),
            )
        else:
            self.counters["sent"] += 1
            self.db.execute(
                "UPDATE command SET state = 'sent', sent_s = ? WHERE id = ? AND state = 'sealed'", (self.wall(), cid)
            )
        got = self.get(tenant, cid)
        assert got is not None
        return got

    def get(self, tenant: str, command_id: int) -> Command | None:
        r = self.db.fetchone("SELECT %s FROM command WHERE tenant_id = ? AND id = ?" % _COLUMNS, (tenant, command_id))
        return _row(r) if r is not None else None

    def list(
        self, tenant: str, site: str | None = None, transformer: str | None = None, limit: int = 100
    ) -> list[Command]:
        where: list[str] = ["tenant_id = ?"]
        args: list[Any] = [tenant]
        if site is not None:
            where.append("site = ?")
            args.append(site)
        if transformer is not None:
            where.append("transformer = ?")
            args.append(transformer)
        args.append(max(1, min(limit, 1000)))
        sql = "SELECT %s FROM command WHERE %s ORDER BY id DESC LIMIT ?" % (_COLUMNS, " AND ".join(where))
        return [_row(r) for r in self.db.fetchall(sql, tuple(args))]

    # ---- tracking ----------------------------------------------------------------------------

    def poll(self) -> int:
        """Resolve open commands from the stored ack records, time out stale ones, audit the Pis' refusals.

        Returns how many commands changed state. Safe to call often (a few indexed queries).
        """
        now = self.wall()
        changed = 0
        # A command recorded send_failed may still have reached the broker (a PUBACK lost with the connection,
        # then paho's retransmission): its ack is looked for too, until its deadline has passed.
        rows = self.db.fetchall(
            "SELECT %s FROM command WHERE state = 'sent' OR (state = 'send_failed' AND deadline_s + ? >= ?)" % _COLUMNS,
            (self.settings.grace_s, int(now)),
        )
        for c in [_row(r) for r in rows]:
            outcome = self._find_ack(c)
            if outcome is not None:
                state, ack, detail = outcome
                n = self.db.execute(
                    "UPDATE command SET state = ?, outcome_s = ?, ack = ?, detail = ? WHERE id = ? AND state = ?",
                    (state, now, None if ack is None else json.dumps(ack, sort_keys=True), detail, c.id, c.state),
                )
                changed += max(n, 0)
            elif c.state == "sent" and now > c.deadline_s + self.settings.grace_s:
                n = self.db.execute(
                    "UPDATE command SET state = 'timeout', outcome_s = ?, detail = ? WHERE id = ? AND state = 'sent'",
                    (now, "no answer from the Pi by its deadline", c.id),
                )
                changed += max(n, 0)
        self.counters["resolved"] += changed
        self._audit_refusals(now)
        return changed

    def _find_ack(self, c: Command) -> tuple[str, dict | None, str | None] | None:
        rows = self.db.fetchall(
            "SELECT src, body FROM record"
            " WHERE site = ? AND transformer = ? AND kind = 'ack' AND t_s >= ? AND t_s <= ?",
            (c.site, c.transformer, int(c.requested_s) - 60, c.deadline_s + self.settings.grace_s),
        )
        for src, body in rows:
            cmd, ack = _ack_body(body)
            if cmd is None or cmd.get("op") != OPS[c.op] or cmd.get("deadline_s") != c.deadline_s:
                continue
            if c.op == "move" and cmd.get("phase") != c.fields.get("phase"):
                continue
            if src and src % 256 != c.node:  # a node's ack comes from it (link address + 256 x generation)
                continue
            if ack is None:
                return "no_ack", None, "the Pi got no valid answer from the node"
            outcome = ack.get("outcome")
            state = OUTCOME_STATES[outcome] if isinstance(outcome, int) and 0 <= outcome < len(OUTCOME_STATES) else None
            if state is None:
                continue
            reason = ack.get("reason")
            detail = None
            if isinstance(reason, int) and 0 < reason < len(codes.REASON_NAMES):
                detail = codes.REASON_NAMES[reason]
            shown = {"outcome": codes.OUTCOME_NAMES[outcome], "reason": detail}
            if isinstance(ack.get("phase"), int) and 0 <= ack["phase"] < len(codes.PHASE_NAMES):
                shown["phase"] = codes.PHASE_NAMES[ack["phase"]]
            return state, shown, detail
        return None

    def _audit_refusals(self, now: float) -> None:
        rows = self.db.fetchall(
            "SELECT r.tenant_id, r.site, r.transformer, r.kind, r.t_s, r.src, r.seq, r.value, r.node FROM record r"
            " WHERE r.kind IN ('event', 'alarm') AND r.code = ? AND r.t_s >= ? AND NOT EXISTS ("
            "SELECT 1 FROM command_refusal c WHERE c.site = r.site AND c.transformer = r.transformer"
            " AND c.kind = r.kind AND c.t_s = r.t_s AND c.src = r.src AND c.seq = r.seq)",
            (codes.EV_OPERATOR_REFUSED, int(now) - 7 * 86400),
        )
        for tenant, site, tx, kind, t_s, src, seq, value, node in rows:
            reason = REFUSAL_REASONS[value] if isinstance(value, int) and 0 <= value < len(REFUSAL_REASONS) else value
            with self.db.transaction():
                self.db.execute(
                    "INSERT INTO command_refusal (site, transformer, kind, t_s, src, seq, audited_s)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (site, tx, kind, t_s, src, seq, now),
                )
                obj = "node:%s/%s/%d" % (site, tx, node) if node else "transformer:%s/%s" % (site, tx)
                audit.record(
                    self.db, "pi:%s/%s" % (site, tx), tenant, "command.refused_at_pi", obj, None,
                    {"reason": reason, "t_s": t_s}, "uplink", now=now,
                )  # fmt: skip
            self.counters["refusals_audited"] += 1


def _ack_body(body: Any) -> tuple[dict | None, dict | None]:
    """The (command, ack) maps of a stored ack record's body (JSON), keys as field names; (None, None) if not one."""
    try:
        item = json.loads(body) if isinstance(body, (str, bytes)) else body
    except ValueError:
        return None, None
    if isinstance(item, dict) and "command" in item:
        item = [item.get("command"), item.get("ack")]
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], dict):
        return None, None
    cmd = _names(item[0], msg.COMMAND)
    ack = _names(item[1], msg.ACK) if isinstance(item[1], dict) else None
    return cmd, ack


def _names(m: dict, kind: int) -> dict:
    """A msg map with integer keys (as the Pi sends it) as field names; maps already named pass through."""
    if all(isinstance(k, str) and not k.isdigit() for k in m):
        return m
    try:
        return msg.decode(kind, cbor.dumps({int(k): v for k, v in m.items()}))
    except (PhasecoreError, ValueError, TypeError):
        return {}


class MqttPublisher:
    """Publishes sealed commands with QoS 1 over its own MQTT/TLS connection; ``__call__`` returns after PUBACK.

    A command is never queued while the connection is down (paho would send it
    later, perhaps after its purpose passed): it is refused at once and recorded
    ``send_failed``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        ca: str | None,
        cert: str | None,
        key: str | None,
        tls: bool = True,
        timeout_s: float = 10.0,
    ):
        from phaseuplink.tls import mqtt_client

        self.timeout_s = timeout_s
        self.client = mqtt_client(client_id, ca=ca, cert=cert, key=key, tls=tls, clean_session=True)
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(host, port, keepalive=60)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if not getattr(reason, "is_failure", False):
            self._connected.set()
        else:
            log.warning("command publisher: the broker refused the connection: %s", reason)

    def _on_disconnect(self, client: Any, userdata: Any, *args: Any) -> None:
        self._connected.clear()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def __call__(self, topic: str, payload: bytes) -> None:
        if not self._connected.wait(min(self.timeout_s, 2.0)):
            raise CommandError("not connected to the broker")
        info = self.client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as e:
            raise CommandError("publish failed: %s" % e) from e
        if not info.is_published():
            raise CommandError("the broker did not acknowledge within %.0f s" % self.timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def build_service(cfg: Any, db: Any, wall: Callable[[], float]) -> CommandService:
    """The command service of a server configuration (``[commands]``, broker defaults from ``[ingest]``)."""
    c, ing = cfg.table("commands"), cfg.table("ingest")
    key_file = str(cfg.resolve(c["key_file"]))
    settings = CommandSettings(
        operator_id=c["operator_id"],
        key_file=key_file,
        counter_file=str(cfg.resolve(c["counter_file"])) if c["counter_file"] else key_file + ".seq",
        ttl_s=c["ttl_s"],
        grace_s=c["grace_s"],
    )
    sealer = Sealer(settings, CommandService.floor(db, settings.operator_id))

    def path(v: str) -> str | None:
        return str(cfg.resolve(v)) if v else None

    publisher = MqttPublisher(
        c["host"] or ing["host"],
        c["port"] or ing["port"],
        c["client_id"],
        path(c["ca"] or ing["ca"]),
        path(c["cert"] or ing["cert"]),
        path(c["key"] or ing["key"]),
        tls=ing["tls"],
        timeout_s=settings.publish_timeout_s,
    )
    service = CommandService(db, sealer, publisher, settings, wall)
    service.close = publisher.close  # type: ignore[method-assign]
    return service
