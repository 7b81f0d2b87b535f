"""The ``[alarms]`` table of server.toml: thresholds, gaps and hysteresis of the alarm rules.

``SCHEMA`` is the table's phaseconf schema (``phaseserver.config`` merges it
into the file's schema); ``AlarmSettings.from_table(table)`` turns the checked
table into the object the rules and the engine read. The one thing to know:
every threshold here is in the unit of the data it is compared with (the
uplink's integers: deci-amperes become amperes here, per mille stays per
mille), and every default is the one docs/server.md explains.
"""

from typing import Any

from phaseconf import IDENT, REQUIRED, integer, number, positive
from phasecore.errors import quote

__all__ = ("SCHEMA", "AlarmSettings", "DEFAULTS")

_DAY = 86400.0


def _ratings(v: Any) -> str | None:
    """``{"site/transformer" = amperes, ...}``: per-transformer phase ratings."""
    if not isinstance(v, dict):
        return 'expected a table of "site/transformer" = amperes'
    for key, amps in v.items():
        parts = str(key).split("/")
        if len(parts) != 2 or not all(IDENT.match(p) for p in parts):
            return 'key %s is not "site/transformer"' % (quote(str(key)[:40]),)
        if isinstance(amps, bool) or not isinstance(amps, (int, float)) or not 0 < amps <= 100000:
            return "rating of %s must be 0 < amperes <= 100000" % (str(key)[:40],)
    return None


def _fraction(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        return "expected a fraction 0 <= x < 1"
    return None


# key -> (type, default, check); phaseconf fills the defaults and checks types and ranges.
SCHEMA: dict[str, tuple[Any, Any, Any]] = {
    "enabled": (bool, True, None),
    # The periodic sweep (time-driven evaluation, escalation): at most this many wall seconds apart;
    # the engine also wakes at the next moment a silence can start.
    "sweep_s": ((int, float), 5.0, number(0.05, 3600)),
    # Node silence: raw readings polled over RS-485 (the Pi polls every 10 s by default).
    "node_gap_s": ((int, float), 120.0, number(1, _DAY)),
    # LoRa nodes report by exception, at least every lora_report_s (phasenode.link_lora max_s);
    # lora_reports of those may be missing (a class-A uplink is lost to collisions ~25 % of the time).
    "lora_report_s": ((int, float), 300.0, number(1, _DAY)),
    "lora_reports": (int, 3, integer(1, 100)),
    # Interval mode: this many whole aggregation periods without the node's aggregate.
    "interval_periods": (int, 1, integer(1, 100)),
    # How much later than its learned rhythm a transformer's batches may come before the
    # server's clock, not the data, says its nodes are silent.
    "delivery_grace_s": ((int, float), 5.0, number(0, 3600)),
    "lag_max_s": ((int, float), 3600.0, number(1, _DAY)),
    # Pi offline: status "offline" (retained, or the last will) held this long.
    "pi_offline_delay_s": ((int, float), 60.0, number(0, _DAY)),
    # Phase current over rating (the summary's mean phase currents); 0 = off unless in ratings.
    "rating_a": ((int, float), 0.0, number(0, 100000)),
    "ratings": (dict, {}, _ratings),
    "overcurrent_critical": ((int, float), 1.2, number(1, 10)),
    # Unbalance: the summary's CUF (per mille) or neutral current (A) over threshold for unbalance_for_s.
    "cuf_pm": (int, 200, integer(1, 2000)),
    "neutral_a": ((int, float), 0.0, number(0, 100000)),
    "unbalance_for_s": ((int, float), 900.0, number(0, 7 * _DAY)),
    # The Pi's store-and-forward backlog (summary or Pi heartbeat), rows.
    "backlog_max": (int, 10000, integer(1, 1 << 32)),
    # A meter flagged implausible clears after this long of good readings.
    "meter_clear_s": ((int, float), 300.0, number(0, _DAY)),
    # Authentication failures (node AUTH_FAILED / REPLAY_DROPPED, the Pi's operator gate refusing a
    # bad tag, unknown operator or replay): this many within auth_window_s; clear after auth_clear_s quiet.
    "auth_failures": (int, 3, integer(1, 1000000)),
    "auth_window_s": ((int, float), 600.0, positive),
    "auth_clear_s": ((int, float), 1800.0, positive),
    # Value hysteresis: a level alarm clears below threshold x (1 - hysteresis).
    "hysteresis": ((int, float), 0.1, _fraction),
}

DEFAULTS: dict[str, Any] = {k: v[1] for k, v in SCHEMA.items() if v[1] is not REQUIRED}


class AlarmSettings:
    """The checked ``[alarms]`` table as attributes (``AlarmSettings()`` is every default)."""

    enabled: bool
    sweep_s: float
    node_gap_s: float
    lora_report_s: float
    lora_reports: int
    interval_periods: int
    delivery_grace_s: float
    lag_max_s: float
    pi_offline_delay_s: float
    rating_a: float
    ratings: dict[str, float]
    overcurrent_critical: float
    cuf_pm: int
    neutral_a: float
    unbalance_for_s: float
    backlog_max: int
    meter_clear_s: float
    auth_failures: int
    auth_window_s: float
    auth_clear_s: float
    hysteresis: float

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(SCHEMA)
        if unknown:
            raise TypeError("unknown [alarms] keys: %s" % ", ".join(sorted(unknown)))
        merged = dict(DEFAULTS, **values)
        for key, value in merged.items():
            setattr(self, key, dict(value) if isinstance(value, dict) else value)

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> "AlarmSettings":
        """From ``settings.table("alarms")`` (already checked by phaseconf)."""
        return cls(**table)

    def rating(self, site: str, transformer: str) -> float:
        """The phase current rating (A) of a transformer; 0 means no over-current rule."""
        return float(self.ratings.get("%s/%s" % (site, transformer), self.rating_a))
