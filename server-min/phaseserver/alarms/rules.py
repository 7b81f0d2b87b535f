"""Alarm types from the data: what the records a transformer Pi sends say is wrong, as conditions.

Sans-IO: ``Rules`` takes decoded uplink records (``phaseuplink.records.Record``),
status messages and the time, and returns ``Condition``s, each saying of one
(object, type) that it is active (with a severity, a value and since when) or
that it has ended. It reads no clock, no database and no socket; the engine
(``phaseserver.alarms.engine``) turns conditions into alarms. The one thing
to know: rules are edge-triggered, so a condition is reported when it starts,
when its severity or value moves, and when it ends, never again while it
holds (``forget`` re-arms one after an operator cleared its alarm).

Types (``TYPES``: object kind, default severity, whether only an event or a
person clears it):

- ``node_silent`` (node): no record from the node for its allowed gap, in
  the transformer's *data time* (below). Gap: ``node_gap_s`` (120 s) for raw
  readings polled over RS-485; ``lora_reports`` x ``lora_report_s`` (3 x 300
  s) for a LoRa node, known from its heartbeat carrying ``rssi_dBm`` (only a
  node on a radio reports it); ``interval_periods`` x the aggregate's own
  ``period_s`` in interval mode, counted from the end of the last aggregated
  period. Cleared by the node's next record. Not raised while the
  transformer's Pi is offline (the Pi's alarm says why).
- ``pi_offline`` (transformer): status ``offline`` (retained, or the broker's
  last will) held for ``pi_offline_delay_s``; cleared by ``online``.
- ``overcurrent`` (transformer): a summary's mean phase current over the
  transformer's rating; critical over ``overcurrent_critical`` x rating.
- ``unbalance`` (transformer): the summary's CUF over ``cuf_pm`` or neutral
  current over ``neutral_a`` for ``unbalance_for_s`` (the over-threshold
  summaries' periods, back to back); major at twice the threshold.
- ``relay_fault`` (node, latched): the Pi's MOVE_NOT_VERIFIED or
  NODE_SUSPENDED about the node; a later MOVE_VERIFIED clears it, else a person.
- ``meter_implausible`` (node): the node's IMPLAUSIBLE_READING or
  METER_SILENT event, a reading with the METER status bit, or an aggregate
  with ``n_bad``; cleared after ``meter_clear_s`` of good readings.
- ``auth_failures`` (transformer): ``auth_failures`` authentication failures
  within ``auth_window_s``: a node's AUTH_FAILED or REPLAY_DROPPED, the Pi's
  operator gate refusing an unknown operator, a bad tag or a replay
  (OPERATOR_REFUSED); cleared after ``auth_clear_s`` without one.
- ``backlog`` (transformer): the Pi's store-and-forward backlog (summary or
  Pi heartbeat) over ``backlog_max`` rows.
- ``notify_backlog`` (the server): raised by the notifier, not here.

Level rules clear with hysteresis: below threshold x (1 - ``hysteresis``).

Data time. A node is silent when the transformer's data has moved on by the
gap without it: ``ref - last_seen >= gap``, where ``ref`` is the newest
reading or aggregate time of the transformer (capped at arrival), advanced by
the server's clock only when the transformer's next batch is overdue (no
batch for longer than its learned arrival rhythm plus ``delivery_grace_s``).
So a Pi that batches readings every 5 minutes does not make its nodes look
silent between batches, a server restart does not raise a silence before the
broker's queued batches are in, and a transformer whose whole bus went quiet
is still noticed by the clock.
"""

from collections import deque
from typing import Any, Iterable, NamedTuple

from phasecore import codes
from phasecore.errors import quote
from phaseserver.alarms.settings import AlarmSettings
from phaseuplink.operator import REFUSAL_REASONS
from phaseuplink.records import Record

__all__ = (
    "Obj",
    "Condition",
    "Rules",
    "TYPES",
    "SEVERITY_NAMES",
    "WARNING",
    "MINOR",
    "MAJOR",
    "CRITICAL",
    "NODE_SILENT",
    "PI_OFFLINE",
    "OVERCURRENT",
    "UNBALANCE",
    "RELAY_FAULT",
    "METER_IMPLAUSIBLE",
    "AUTH_FAILURES",
    "BACKLOG",
    "NOTIFY_BACKLOG",
    "SERVER",
    "severity_name",
    "parse_key",
)

WARNING, MINOR, MAJOR, CRITICAL = 1, 2, 3, 4
SEVERITY_NAMES = {WARNING: "warning", MINOR: "minor", MAJOR: "major", CRITICAL: "critical"}

NODE_SILENT = "node_silent"
PI_OFFLINE = "pi_offline"
OVERCURRENT = "overcurrent"
UNBALANCE = "unbalance"
RELAY_FAULT = "relay_fault"
METER_IMPLAUSIBLE = "meter_implausible"
AUTH_FAILURES = "auth_failures"
BACKLOG = "backlog"
NOTIFY_BACKLOG = "notify_backlog"

# type -> (object kind, default severity, latched: only an event or a person clears it)
TYPES: dict[str, tuple[str, int, bool]] = {
    NODE_SILENT: ("node", MAJOR, False),
    PI_OFFLINE: ("transformer", CRITICAL, False),
    OVERCURRENT: ("transformer", MAJOR, False),
    UNBALANCE: ("transformer", MINOR, False),
    RELAY_FAULT: ("node", MAJOR, True),
    METER_IMPLAUSIBLE: ("node", MINOR, False),
    AUTH_FAILURES: ("transformer", MAJOR, False),
    BACKLOG: ("transformer", WARNING, False),
    NOTIFY_BACKLOG: ("server", MAJOR, False),
}

# The Pi's operator gate refusing for these reasons (OPERATOR_REFUSED's value is the index in
# phaseuplink.operator.REFUSAL_REASONS) is an authentication failure.
_OPERATOR_AUTH_REASONS = tuple(REFUSAL_REASONS.index(r) for r in ("unknown_operator", "bad_tag", "replay"))
_NODE_AUTH_EVENTS = (codes.EV_AUTH_FAILED, codes.EV_REPLAY_DROPPED)
_RELAY_EVENTS = (codes.EV_MOVE_NOT_VERIFIED, codes.EV_NODE_SUSPENDED)
_METER_EVENTS = (codes.EV_IMPLAUSIBLE_READING, codes.EV_METER_SILENT)
_ARRIVALS_KEPT = 8  # inter-arrival times a transformer's rhythm is learned from
_BACKLOG_MINOR = 10  # backlog over 10 x backlog_max: minor


def severity_name(severity: int) -> str:
    """``"warning"`` .. ``"critical"`` for 1..4."""
    return SEVERITY_NAMES.get(severity, str(severity))


class Obj(NamedTuple):
    """What an alarm is about: a site, a transformer of it, a node (link address) of that, or the server."""

    site: str
    transformer: str | None = None
    node: int | None = None

    @property
    def key(self) -> str:
        """``site``, ``site/transformer``, ``site/transformer/addr``; ``server`` for the server itself."""
        if not self.site:
            return "server"
        if self.transformer is None:
            return self.site
        if self.node is None:
            return "%s/%s" % (self.site, self.transformer)
        return "%s/%s/%d" % (self.site, self.transformer, self.node)

    @property
    def kind(self) -> str:
        """``server``, ``site``, ``transformer`` or ``node``."""
        if not self.site:
            return "server"
        if self.transformer is None:
            return "site"
        return "transformer" if self.node is None else "node"


SERVER = Obj("")


def parse_key(key: str) -> Obj:
    """The ``Obj`` of an object key (``Obj.key``); ValueError for a key that is none."""
    if key == "server":
        return SERVER
    parts = key.split("/")
    if len(parts) == 1 and parts[0]:
        return Obj(parts[0])
    if len(parts) == 2 and all(parts):
        return Obj(parts[0], parts[1])
    if len(parts) == 3 and parts[0] and parts[1] and parts[2].isdigit():
        return Obj(parts[0], parts[1], int(parts[2]))
    raise ValueError("not an alarm object key: %s" % (quote(key[:80]),))


class Condition(NamedTuple):
    """One rule's verdict on one (object, type): active with severity/value/since, or ended."""

    obj: Obj
    type: str
    active: bool
    severity: int = 0
    value: float | None = None
    since_s: float | None = None
    detail: dict[str, Any] = {}

    @property
    def key(self) -> tuple[str, str]:
        return (self.obj.key, self.type)


class _Node:
    __slots__ = ("last_s", "period_s", "lora", "generation", "dirty", "bad_s", "good_from", "good_to", "relay_s")

    def __init__(self) -> None:
        self.last_s: float | None = None
        self.period_s = 0  # > 0: interval mode, the aggregation period
        self.lora = False
        self.generation = 0
        self.dirty = False
        self.bad_s: float | None = None  # meter: newest bad reading
        self.good_from: float | None = None  # meter: first good reading after it
        self.good_to: float | None = None
        self.relay_s: float | None = None  # newest relay event

    def gap(self, s: AlarmSettings) -> float:
        if self.period_s:
            return float(self.period_s * s.interval_periods)
        if self.lora:
            return float(s.lora_report_s * s.lora_reports)
        return float(s.node_gap_s)


class _Transformer:
    __slots__ = (
        "nodes",
        "data_s",
        "arrival_s",
        "arrivals",
        "allow_s",
        "offline_since",
        "summary_s",
        "backlog_s",
        "unb_onset",
        "auth",
        "dirty",
    )

    def __init__(self, now: float) -> None:
        self.nodes: dict[int, _Node] = {}
        self.data_s: float | None = None  # newest reading/aggregate time (capped at arrival)
        self.arrival_s = now  # when the last reading/interval batch arrived (server clock)
        self.arrivals: deque[float] = deque(maxlen=_ARRIVALS_KEPT)
        self.allow_s: float | None = None  # learned arrival rhythm (None: not yet known)
        self.offline_since: float | None = None
        self.summary_s = -1.0
        self.backlog_s = -1.0
        self.unb_onset: float | None = None
        self.auth: deque[float] = deque()
        self.dirty = False


class Rules:
    """``Rules(settings)``: ``observe`` each committed batch, ``observe_status``, ``sweep(now)`` periodically."""

    def __init__(self, settings: AlarmSettings) -> None:
        self.settings = settings
        self._tr: dict[tuple[str, str], _Transformer] = {}
        self._active: dict[tuple[str, str], int] = {}  # (object key, type) -> severity reported

    # ------------------------------------------------------------ state the engine keeps for us

    def restore_active(self, keys: Iterable[tuple[str, str, int]]) -> None:
        """Alarms active in the database at start (object key, type, severity), so their end is reported."""
        for obj_key, typ, severity in keys:
            self._active[(obj_key, typ)] = severity

    def forget(self, obj_key: str, typ: str) -> None:
        """The alarm was cleared by a person: report the condition again if it still holds."""
        self._active.pop((obj_key, typ), None)
        if typ == RELAY_FAULT:
            pass  # latched: raised again only by a new event
        elif typ == AUTH_FAILURES:
            try:
                o = parse_key(obj_key)
            except ValueError:
                return
            tr = self._tr.get((o.site, o.transformer or ""))
            if tr is not None:
                tr.auth.clear()

    def is_active(self, obj_key: str, typ: str) -> bool:
        """Whether the rules last reported (object, type) active."""
        return (obj_key, typ) in self._active

    def set_active(self, obj_key: str, typ: str, severity: int | None) -> None:
        """For conditions the engine raises itself (the notifier's backlog): active at ``severity``, or ended."""
        if severity is None:
            self._active.pop((obj_key, typ), None)
        else:
            self._active[(obj_key, typ)] = severity

    def restore_nodes(self, nodes: Iterable[dict[str, Any]], streams: Iterable[dict[str, Any]], now: float) -> None:
        """Node and transformer state saved by ``export`` before a restart."""
        for row in streams:
            tr = self._transformer(row["site"], row["transformer"], now)
            tr.data_s = row["data_s"]
            tr.allow_s = row["allow_s"]
        for row in nodes:
            tr = self._transformer(row["site"], row["transformer"], now)
            n = tr.nodes.setdefault(int(row["addr"]), _Node())
            n.last_s = row["last_s"]
            n.period_s = int(row["period_s"] or 0)
            n.lora = bool(row["lora"])
            n.generation = int(row["generation"] or 0)

    def export(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(nodes, streams)`` changed since the last export, as rows for the engine to save."""
        nodes: list[dict[str, Any]] = []
        streams: list[dict[str, Any]] = []
        for (site, trn), tr in self._tr.items():
            for addr, n in tr.nodes.items():
                if n.dirty and n.last_s is not None:
                    n.dirty = False
                    nodes.append(
                        {
                            "site": site,
                            "transformer": trn,
                            "addr": addr,
                            "generation": n.generation,
                            "last_s": n.last_s,
                            "period_s": n.period_s,
                            "lora": int(n.lora),
                        }
                    )
            if tr.dirty and tr.data_s is not None:
                tr.dirty = False
                streams.append({"site": site, "transformer": trn, "data_s": tr.data_s, "allow_s": tr.allow_s})
        return nodes, streams

    def last_seen(self, site: str, transformer: str, addr: int) -> float | None:
        """When node ``addr`` of the transformer was last heard (data time), None if never."""
        tr = self._tr.get((site, transformer))
        n = tr.nodes.get(addr) if tr is not None else None
        return n.last_s if n is not None else None

    # ------------------------------------------------------------ inputs

    def observe(
        self, site: str, transformer: str, kind: str, records: list[Record], received_s: float
    ) -> list[Condition]:
        """One committed batch of ``kind`` from a transformer, received at ``received_s`` (server clock)."""
        out: list[Condition] = []
        if not records:
            return out
        tr = self._transformer(site, transformer, received_s)
        if kind in ("reading", "interval"):
            self._arrival(tr, received_s)
        handler = getattr(self, "_on_" + kind, None)
        for r in records:
            if kind not in ("heartbeat", "summary") and r.src:
                self._heard(tr, r, kind, received_s)
            if handler is not None:
                handler(site, transformer, tr, r, received_s, out)
        self._silence(site, transformer, tr, received_s, out)
        return out

    def observe_status(self, site: str, transformer: str, online: bool, now: float) -> list[Condition]:
        """The Pi's retained status (``online``, or ``offline`` from a clean stop or the last will)."""
        out: list[Condition] = []
        tr = self._transformer(site, transformer, now)
        obj = Obj(site, transformer)
        if online:
            tr.offline_since = None
            self._end(out, obj, PI_OFFLINE)
            # Batches stopped while it was away: its rhythm restarts now, not at the last batch.
            tr.arrival_s = max(tr.arrival_s, now)
        elif tr.offline_since is None:
            tr.offline_since = now
        self._pi_offline(obj, tr, now, out)
        return out

    def sweep(self, now: float) -> list[Condition]:
        """Time-driven evaluation: silences, Pi offline after its delay, quiet authentication."""
        out: list[Condition] = []
        for (site, trn), tr in self._tr.items():
            obj = Obj(site, trn)
            self._pi_offline(obj, tr, now, out)
            self._silence(site, trn, tr, now, out)
            if tr.auth and now - tr.auth[-1] >= self.settings.auth_clear_s:
                tr.auth.clear()
                self._end(out, obj, AUTH_FAILURES)
        return out

    def next_due(self, now: float) -> float | None:
        """The earliest time after ``now`` at which ``sweep`` could report something new (None: nothing pending)."""
        due: float | None = None
        s = self.settings
        for (site, trn), tr in self._tr.items():
            if tr.offline_since is not None and (Obj(site, trn).key, PI_OFFLINE) not in self._active:
                due = _earliest(due, tr.offline_since + s.pi_offline_delay_s)
            if tr.data_s is None or tr.offline_since is not None:
                continue
            allow = self._allow(tr)
            for addr, n in tr.nodes.items():
                if n.last_s is None or (Obj(site, trn, addr).key, NODE_SILENT) in self._active:
                    continue
                # ref(t) = data_s + max(0, t - arrival_s - allow) reaches last_s + gap at:
                due = _earliest(due, tr.arrival_s + allow + n.last_s + n.gap(s) - tr.data_s)
            if tr.auth:
                due = _earliest(due, tr.auth[-1] + s.auth_clear_s)
        return None if due is None else max(due, now)

    # ------------------------------------------------------------ per kind

    def _on_reading(self, site: str, trn: str, tr: _Transformer, r: Record, now: float, out: list[Condition]) -> None:
        t = min(float(r.t_s), now)
        if r.body["status"] & codes.ST_METER:
            self._meter_bad(site, trn, tr, r.src & 0xFF, t, "reading status METER", out)
        else:
            self._meter_good(site, trn, tr, r.src & 0xFF, t, t, out)

    def _on_interval(self, site: str, trn: str, tr: _Transformer, r: Record, now: float, out: list[Condition]) -> None:
        f = r.body
        end = min(float(r.t_s + f["period_s"]), now)
        if f.get("n_bad") or f["status"] & codes.ST_METER:
            what = "%d of %d readings of the period with METER" % (f.get("n_bad", 0), f["n"])
            self._meter_bad(site, trn, tr, r.src & 0xFF, end, what, out)
        else:
            self._meter_good(site, trn, tr, r.src & 0xFF, float(r.t_s), end, out)

    def _on_summary(self, site: str, trn: str, tr: _Transformer, r: Record, now: float, out: list[Condition]) -> None:
        f = r.body
        t = float(f["time_s"])
        if "backlog" in f:
            self._backlog(site, trn, tr, t, f["backlog"], "summary", out)
        if t <= tr.summary_s:
            return  # an older summary arriving late says nothing about now
        tr.summary_s = t
        s = self.settings
        obj = Obj(site, trn)
        h = 1.0 - s.hysteresis
        currents = [i / 10.0 for i in f["i_dA"]]
        i_max = max(currents)
        rating = s.rating(site, trn)
        if rating > 0:
            detail = {"i_a": currents, "rating_a": rating}
            if i_max > rating:
                sev = CRITICAL if i_max > rating * s.overcurrent_critical else MAJOR
                self._raise(out, obj, OVERCURRENT, sev, i_max, t - f["period_s"], detail, update=True)
            elif i_max < rating * h:
                self._end(out, obj, OVERCURRENT)
        cuf = f["cuf_pm"]
        neutral = f["i_n_dA"] / 10.0 if "i_n_dA" in f else None
        n_lim = s.neutral_a
        over_n = n_lim > 0 and neutral is not None and neutral > n_lim
        over = cuf > s.cuf_pm or over_n
        under = cuf < s.cuf_pm * h and not (n_lim > 0 and neutral is not None and neutral >= n_lim * h)
        key = (obj.key, UNBALANCE)
        if over:
            if tr.unb_onset is None:
                tr.unb_onset = t - f["period_s"]
            if t - tr.unb_onset >= s.unbalance_for_s:
                twice = cuf > 2 * s.cuf_pm or (over_n and neutral is not None and neutral > 2 * n_lim)
                detail = {"cuf_pm": cuf, "cuf_max_pm": f.get("cuf_max_pm"), "i_n_a": neutral}
                self._raise(out, obj, UNBALANCE, MAJOR if twice else MINOR, cuf, tr.unb_onset, detail, update=True)
        elif under or key not in self._active:
            # Below the clear threshold, or in the band without an alarm: the over-threshold run is broken.
            tr.unb_onset = None
            self._end(out, obj, UNBALANCE)

    def _on_heartbeat(self, site: str, trn: str, tr: _Transformer, r: Record, now: float, out: list[Condition]) -> None:
        self._backlog(site, trn, tr, float(r.t_s), r.body["backlog"], "Pi heartbeat", out)

    def _on_node_heartbeat(
        self, site: str, trn: str, tr: _Transformer, r: Record, now: float, out: list[Condition]
    ) -> None:
        n = tr.nodes.setdefault(r.src & 0xFF, _Node())
        lora = "rssi_dBm" in r.body
        if lora != n.lora:
            n.lora = lora
            n.dirty = True

    def _on_event(self, site: str, trn: str, tr: _Transformer, r: Record, now: float, out: list[Condition]) -> None:
        f = r.body
        code = f["code"]
        t = float(r.t_s)
        if r.src:  # the node's own event
            addr = r.src & 0xFF
            if code in _NODE_AUTH_EVENTS:
                self._auth(site, trn, tr, t, {"node": addr, "event": codes.EVENT_NAMES.get(code, code)}, out)
            elif code in _METER_EVENTS:
                self._meter_bad(site, trn, tr, addr, min(t, now), codes.EVENT_NAMES[code], out)
            return
        node = f.get("node")
        if code in _RELAY_EVENTS or code == codes.EV_MOVE_VERIFIED:
            obj = Obj(site, trn, node) if node else Obj(site, trn)
            n = tr.nodes.setdefault(node, _Node()) if node else None
            if n is not None and n.relay_s is not None and t < n.relay_s:
                return  # older than what the alarm already says
            if n is not None:
                n.relay_s = t
            if code == codes.EV_MOVE_VERIFIED:
                self._end(out, obj, RELAY_FAULT)
            else:
                detail = {"event": codes.EVENT_NAMES[code], "value": f.get("value")}
                self._raise(out, obj, RELAY_FAULT, MAJOR, f.get("value"), t, detail, update=True)
        elif code == codes.EV_OPERATOR_REFUSED and f.get("value") in _OPERATOR_AUTH_REASONS:
            why = {"node": node, "event": codes.EVENT_NAMES[code], "reason": REFUSAL_REASONS[f["value"]]}
            self._auth(site, trn, tr, t, why, out)

    _on_alarm = _on_event

    # ------------------------------------------------------------ rules

    def _heard(self, tr: _Transformer, r: Record, kind: str, now: float) -> None:
        addr = r.src & 0xFF
        n = tr.nodes.setdefault(addr, _Node())
        if kind == "interval":
            t = float(r.t_s + r.body["period_s"])
            if n.period_s != r.body["period_s"]:
                n.period_s = r.body["period_s"]
        else:
            t = float(r.t_s)
            if kind == "reading" and n.period_s:
                n.period_s = 0  # the Pi switched to raw mode
        t = min(t, now)  # a Pi clock ahead of ours must not postpone silences
        if n.last_s is None or t > n.last_s:
            n.last_s = t
            n.generation = r.src >> 8
            n.dirty = True
        if kind in ("reading", "interval") and (tr.data_s is None or t > tr.data_s):
            tr.data_s = t
            tr.dirty = True

    def _arrival(self, tr: _Transformer, now: float) -> None:
        gap = now - tr.arrival_s
        if gap > 0:
            tr.arrivals.append(gap)
            allow = min(max(tr.arrivals), self.settings.lag_max_s)
            if allow != tr.allow_s:
                tr.allow_s = allow
                tr.dirty = True
        tr.arrival_s = max(tr.arrival_s, now)

    def _allow(self, tr: _Transformer) -> float:
        learned = tr.allow_s if tr.allow_s is not None else self.settings.lag_max_s
        return learned + self.settings.delivery_grace_s

    def _silence(self, site: str, trn: str, tr: _Transformer, now: float, out: list[Condition]) -> None:
        if tr.data_s is None:
            return
        ref = tr.data_s + max(0.0, now - tr.arrival_s - self._allow(tr))
        s = self.settings
        for addr, n in tr.nodes.items():
            if n.last_s is None:
                continue
            obj = Obj(site, trn, addr)
            silent_for = ref - n.last_s
            gap = n.gap(s)
            if silent_for >= gap:
                if tr.offline_since is None:
                    detail = {"gap_s": gap, "last_seen_s": n.last_s, "mode": _mode(n)}
                    self._raise(out, obj, NODE_SILENT, MAJOR, silent_for, n.last_s, detail)
            else:
                self._end(out, obj, NODE_SILENT)

    def _pi_offline(self, obj: Obj, tr: _Transformer, now: float, out: list[Condition]) -> None:
        since = tr.offline_since
        if since is not None and now - since >= self.settings.pi_offline_delay_s:
            self._raise(out, obj, PI_OFFLINE, CRITICAL, now - since, since, {"status": "offline"})

    def _backlog(
        self, site: str, trn: str, tr: _Transformer, t: float, backlog: int, source: str, out: list[Condition]
    ) -> None:
        if t < tr.backlog_s:
            return
        tr.backlog_s = t
        s = self.settings
        obj = Obj(site, trn)
        if backlog > s.backlog_max:
            sev = MINOR if backlog > _BACKLOG_MINOR * s.backlog_max else WARNING
            detail = {"backlog": backlog, "max": s.backlog_max, "source": source}
            self._raise(out, obj, BACKLOG, sev, backlog, t, detail, update=True)
        elif backlog < s.backlog_max * (1.0 - s.hysteresis):
            self._end(out, obj, BACKLOG)

    def _meter_bad(
        self, site: str, trn: str, tr: _Transformer, addr: int, t: float, what: str, out: list[Condition]
    ) -> None:
        n = tr.nodes.setdefault(addr, _Node())
        if n.bad_s is None or t >= n.bad_s:
            n.bad_s = t
            n.good_from = n.good_to = None
        self._raise(out, Obj(site, trn, addr), METER_IMPLAUSIBLE, MINOR, None, t, {"why": what})

    def _meter_good(
        self, site: str, trn: str, tr: _Transformer, addr: int, t0: float, t1: float, out: list[Condition]
    ) -> None:
        n = tr.nodes.setdefault(addr, _Node())
        if n.bad_s is None or t0 <= n.bad_s:
            return
        n.good_from = t0 if n.good_from is None else min(n.good_from, t0)
        n.good_to = t1 if n.good_to is None else max(n.good_to, t1)
        if n.good_to - n.good_from >= self.settings.meter_clear_s:
            self._end(out, Obj(site, trn, addr), METER_IMPLAUSIBLE)

    def _auth(
        self, site: str, trn: str, tr: _Transformer, t: float, detail: dict[str, Any], out: list[Condition]
    ) -> None:
        s = self.settings
        tr.auth.append(t)
        # Keep only what the window and the count need (bounded: auth_failures entries at most).
        while len(tr.auth) > s.auth_failures or (tr.auth and t - tr.auth[0] > s.auth_window_s):
            tr.auth.popleft()
        if len(tr.auth) >= s.auth_failures:
            detail = dict(detail, count=len(tr.auth), window_s=s.auth_window_s)
            self._raise(out, Obj(site, trn), AUTH_FAILURES, MAJOR, len(tr.auth), tr.auth[0], detail)

    # ------------------------------------------------------------ edges

    def _raise(
        self,
        out: list[Condition],
        obj: Obj,
        typ: str,
        severity: int,
        value: float | None,
        since: float | None,
        detail: dict[str, Any],
        update: bool = False,
    ) -> None:
        key = (obj.key, typ)
        if key in self._active and self._active[key] == severity and not update:
            return
        self._active[key] = severity
        out.append(Condition(obj, typ, True, severity, value, since, detail))

    def _end(self, out: list[Condition], obj: Obj, typ: str) -> None:
        if self._active.pop((obj.key, typ), None) is not None:
            out.append(Condition(obj, typ, False))

    def _transformer(self, site: str, transformer: str, now: float) -> _Transformer:
        tr = self._tr.get((site, transformer))
        if tr is None:
            tr = self._tr[(site, transformer)] = _Transformer(now)
        return tr


def _mode(n: _Node) -> str:
    if n.period_s:
        return "interval %d s" % n.period_s
    return "raw, LoRa" if n.lora else "raw"


def _earliest(a: float | None, b: float) -> float:
    return b if a is None or b < a else a
