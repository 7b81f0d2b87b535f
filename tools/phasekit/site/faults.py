"""The fault plan of a simulated site: what goes wrong, when, and for how long (site time of the feeder day).

A plan is a list of ``Fault``s. ``DEFAULT_PLAN`` is what ``phasekit site run``
puts a site through unless told otherwise (``--faults none``: nothing;
``--faults FILE``: a TOML file of the same shape). Times are the feeder day's
clock, ``"HH:MM"`` from its midnight; durations are site minutes.

File format (docs/site.md, "Fault plans")::

    [[fault]]
    kind = "node_silent"      # a node drops off its line: it neither hears nor answers
    at = "03:00"
    for_min = 15
    node = 7                  # optional: the link address; default: one the site picks

    [[fault]]
    kind = "relay_stuck"      # a contact welds; an operator then moves the node: the move
    at = "06:00"              # does not take, the Pi suspends the node and alarms
    node = 12                 # optional
    repair_after_min = 120    # a technician frees the contact, the operator unlocks the node
    retry_after_min = 30      # then moves it again: verified, the relay alarm clears

    [[fault]]
    kind = "forged_command"   # a command sealed with a key no operator holds reaches the Pi
    at = "10:00"

    [[fault]]
    kind = "broker_down"      # the MQTT broker stops, then starts again
    at = "13:00"
    for_min = 30

    [[fault]]
    kind = "pi_kill"          # SIGKILL to the transformer Pi, restarted after down_min
    at = "16:00"
    down_min = 0

The one thing to know: every time is site time, but a few things take wall
time whatever the speed (a process starting, a TLS handshake, a reconnect
back-off): at 720x one wall second is 12 site minutes, so a Pi restarted "at
once" is back some site minutes later (docs/site.md says which).

Public: ``Fault``, ``DEFAULT_PLAN``, ``KINDS``, ``load_plan``, ``parse_plan``, ``describe``, ``PlanError``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from phasekit.errors import UsageError

__all__ = ("Fault", "DEFAULT_PLAN", "KINDS", "load_plan", "parse_plan", "describe", "PlanError")

# kind -> {key: (type, default, lo, hi)}; "at" is common to all.
KINDS: dict[str, dict[str, tuple[type, Any, float, float]]] = {
    "node_silent": {"for_min": (int, 15, 1, 1440), "node": (int, 0, 0, 247)},
    "relay_stuck": {
        "node": (int, 0, 0, 247),
        "repair_after_min": (int, 120, 1, 1440),
        "retry_after_min": (int, 30, 1, 1440),
    },
    "forged_command": {"node": (int, 0, 0, 247)},
    "broker_down": {"for_min": (int, 30, 1, 1440)},
    "pi_kill": {"down_min": (int, 0, 0, 1440)},
}
_AT = re.compile(r"^(\d{1,2}):(\d\d)$")


class PlanError(UsageError):
    """A fault plan that cannot be used: names the file, the fault and the key."""


class Fault:
    """One fault: ``kind``, ``at_min`` (minute of the feeder day) and the kind's parameters in ``params``."""

    def __init__(self, kind: str, at_min: int, **params: int):
        if kind not in KINDS:
            raise PlanError("fault kind %r: expected one of %s" % (kind[:40], ", ".join(sorted(KINDS))))
        self.kind = kind
        self.at_min = at_min
        spec = KINDS[kind]
        for key in params:
            if key not in spec:
                raise PlanError("fault %s: unknown key %r (known: at, %s)" % (kind, key[:40], ", ".join(spec)))
        self.params = {k: params.get(k, d) for k, (_t, d, _lo, _hi) in spec.items()}

    def get(self, key: str) -> int:
        return self.params[key]

    @property
    def end_min(self) -> int:
        """The minute by which this fault's own story is over (the plan's timetable uses it)."""
        p = self.params
        if self.kind == "relay_stuck":
            return self.at_min + p["repair_after_min"] + p["retry_after_min"]
        return self.at_min + p.get("for_min", 0) + p.get("down_min", 0)

    def as_dict(self) -> dict[str, Any]:
        return dict({"kind": self.kind, "at": _hhmm(self.at_min)}, **self.params)

    def __repr__(self) -> str:
        return "Fault(%s at %s, %r)" % (self.kind, _hhmm(self.at_min), self.params)


def _hhmm(minute: int) -> str:
    return "%02d:%02d" % divmod(minute, 60)


DEFAULT_PLAN: tuple[Fault, ...] = (
    Fault("node_silent", 3 * 60, for_min=15),
    Fault("relay_stuck", 5 * 60, repair_after_min=120, retry_after_min=30),
    Fault("forged_command", 10 * 60),
    Fault("broker_down", 12 * 60, for_min=30),
    Fault("pi_kill", 15 * 60, down_min=0),
)


def _value(where: str, key: str, v: object, typ: type, lo: float, hi: float) -> int:
    if isinstance(v, bool) or not isinstance(v, typ) or not lo <= v <= hi:  # type: ignore[operator]
        raise PlanError("%s: %s = %r: expected an integer %g..%g" % (where, key, str(v)[:40], lo, hi))
    return int(v)  # type: ignore[call-overload]


def parse_plan(obj: Mapping[str, Any], source: str = "plan") -> list[Fault]:
    """The faults of a decoded TOML document (``{"fault": [{...}, ...]}``), checked."""
    unknown = set(obj) - {"fault"}
    if unknown:
        raise PlanError(
            "%s: unknown table(s) %s; a plan has only [[fault]] tables" % (source, ", ".join(sorted(unknown)))
        )
    items = obj.get("fault", [])
    if not isinstance(items, list):
        raise PlanError("%s: 'fault' must be an array of tables ([[fault]])" % source)
    out: list[Fault] = []
    for i, t in enumerate(items):
        where = "%s: fault %d" % (source, i + 1)
        if not isinstance(t, dict):
            raise PlanError("%s: not a table" % where)
        kind = t.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise PlanError("%s: kind = %r: expected one of %s" % (where, str(kind)[:40], ", ".join(sorted(KINDS))))
        at = t.get("at")
        m = _AT.match(at) if isinstance(at, str) else None
        if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise PlanError('%s (%s): at = %r: expected "HH:MM" of the feeder day' % (where, kind, str(at)[:40]))
        params: dict[str, int] = {}
        spec = KINDS[kind]
        for key, v in t.items():
            if key in ("kind", "at"):
                continue
            if key not in spec:
                raise PlanError(
                    "%s (%s): unknown key %r (known: kind, at, %s)" % (where, kind, key[:40], ", ".join(spec))
                )
            typ, _d, lo, hi = spec[key]
            params[key] = _value("%s (%s)" % (where, kind), key, v, typ, lo, hi)
        out.append(Fault(kind, int(m.group(1)) * 60 + int(m.group(2)), **params))
    return sorted(out, key=lambda f: f.at_min)


def load_plan(spec: str | None) -> list[Fault]:
    """``None`` or ``"default"``: the default plan; ``"none"``: no fault; else a TOML file's plan."""
    if spec is None or spec == "default":
        return list(DEFAULT_PLAN)
    if spec == "none":
        return []
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PlanError("fault plan %s: cannot read (%s)" % (spec, type(e).__name__)) from None
    try:
        obj = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlanError("fault plan %s: not TOML: %s" % (spec, e)) from None
    return parse_plan(obj, str(path))


_TEXT = {
    "node_silent": "node {node} falls silent for {for_min} min (the silent-node alarm is raised, then cleared)",
    "relay_stuck": "node {node}'s relay contact welds; an operator moves it: the move does not take, the Pi suspends "
    "the node and alarms; repaired and unlocked {repair_after_min} min later, moved again {retry_after_min} min "
    "after that (verified: the alarm clears)",
    "forged_command": "a forged operator command for node {node} reaches the Pi (refused, audited)",
    "broker_down": "the MQTT broker goes away for {for_min} min (the Pi buffers, then backfills with the "
    "original timestamps)",
    "pi_kill": "the transformer Pi is killed (SIGKILL) and restarted {restart} (nothing lost)",
}


def describe(faults: Sequence[Fault], nodes: Mapping[str, int] | None = None) -> list[str]:
    """One line per fault, for the plan printed at start; ``nodes`` maps a kind to the node the site chose."""
    lines = []
    for f in faults:
        p = dict(f.params)
        if "node" in p and not p["node"] and nodes is not None:
            p["node"] = nodes.get(f.kind, 0)
        if f.kind == "pi_kill":
            p["restart"] = "at once" if not p["down_min"] else "after %d min" % p["down_min"]
        lines.append("%s  %s" % (_hhmm(f.at_min), _TEXT[f.kind].format(**p)))
    return lines
