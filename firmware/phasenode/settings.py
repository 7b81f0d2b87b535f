"""The node's settings schema: what config.json may hold, its ranges and defaults, and the validator.

``phasekit provision`` writes config.json, ``phasenode.persist.Store`` reads
it from flash, and both check it here, so a node never boots on a config its
provisioning tool would not have written. The tables here (``DEFAULT_LIMITS``,
``LIMIT_RANGES``, ``APP_SETTINGS``) are the only copy: ``phasenode.checks``
validates a SET_LIMITS command with the same ranges, ``phasenode.app.Settings``
the same application settings. The one thing to know: unknown keys are
refused, so a typo is an error naming the key, not a silently ignored setting.

config.json (written by ``phasekit provision``, read at boot, never written
by the node). One JSON object::

    {
      "format": 1,                         required, this version
      "node": {
        "id": "feeder7-n042",              required, 1..32 chars of A-Z a-z 0-9 . _ -
        "address": 42                      required, link address 1..247 (docs/protocol.md 1)
      },
      "key": {
        "file": "node.key",                required, file in the same folder holding the
                                           32-byte node secret, HKDF-derived from the site
                                           key (docs/protocol.md 4); the config only names it
        "generation": 0                    optional (0), bumped with every new key: the
                                           sequence counter is kept per generation
      },
      "board": "esp32-devkitc-max485",     required, a boards/NAME.json
      "home_phase": "A",                   required, "A" | "B" | "C": the phase the house is
                                           wired to; restored when no relay state is saved
      "limits": {                          optional, each key optional (default shown)
        "overcurrent_ma": 40000,           1000..100000: above it, LOCK_OVERCURRENT
        "overvoltage_dv": 2530,            1500..3000 (0.1 V): above it, LOCK_OVERVOLTAGE
        "undervoltage_dv": 2070,           1000..2600 (0.1 V), below overvoltage_dv
        "meter_silent_ms": 10000           1000..600000 without a good reading: LOCK_METER
      },
      "relay": {                           optional: phasenode.relay.RelayRules, defaults there
        "dead_time_ms": 2000, "min_dwell_s": 900, "max_per_hour": 2, "max_per_day": 6,
        "lock_hold_s": 300, "settle_ms": 5000, "checkpoint_s": 3600
      },
      "app": {                             optional, each key optional: the node application's
        "sample_ms": 2000, ...             settings (phasenode.app.Settings), names, ranges and
      }                                    defaults in APP_SETTINGS below
    }

Voltage defaults are 230 V +-10 % (EN 50160 supply voltage variations).

Public: ``NodeConfig``, ``validate_config``, ``ConfigError``, ``CONFIG_FILE``,
``FORMAT``, ``DEFAULT_LIMITS``, ``LIMIT_RANGES``, ``APP_SETTINGS``, and the
two checks ``phasenode.persist`` shares for its file names and numbers,
``check_name`` and ``check_int``.
"""

from phasecore.codes import PHASE_A, PHASE_B, PHASE_C, PHASE_NAMES
from phasecore.errors import quote
from phasenode.compat import const
from phasenode.errors import ConfigError
from phasenode.relay import RelayRules, RuleError, SolidStateRules

FORMAT = const(1)  # config.json's "format"
CONFIG_FILE = "config.json"

DEFAULT_LIMITS = {
    "overcurrent_ma": 40000,
    "overvoltage_dv": 2530,
    "undervoltage_dv": 2070,
    "meter_silent_ms": 10000,
}
# name, minimum, maximum: what config.json may set, and what a SET_LIMITS
# command may set at run time (phasenode.checks validates with these).
LIMIT_RANGES = (
    ("overcurrent_ma", 1000, 100000),
    ("overvoltage_dv", 1500, 3000),
    ("undervoltage_dv", 1000, 2600),
    ("meter_silent_ms", 1000, 600000),
)
# The node application's settings (config.json "app", phasenode.app.Settings):
# name, minimum, maximum, default.
APP_SETTINGS = (
    ("sample_ms", 100, 600000, 2000),  # meter read period
    ("meter_address", 1, 248, 248),  # PZEM Modbus address; 248 (0xF8) = the one meter on the UART
    ("meter_timeout_ms", 20, 5000, 200),
    ("meter_retries", 0, 5, 1),
    ("heartbeat_s", 10, 86400, 900),  # node heartbeat (counters, firmware) period
    ("seq_block", 16, 65536, 1024),  # sequence numbers per flash write
    ("rx_persist_s", 0, 86400, 300),  # Pi sequence persisted on heartbeats at most this often
    ("bus_poll_ms", 1, 50, 2),  # RS-485 receive poll period
    ("set_samples", 1, 100, 2),  # anomaly checks: samples beyond a limit to set
    ("clear_samples", 1, 100, 3),  # ... and back inside to clear
    ("lora_sf", 7, 12, 7),
    ("lora_bw_hz", 7800, 500000, 125000),
    ("lora_cr", 1, 4, 1),
    ("lora_duty_pm", 1, 1000, 10),  # 10 per mille = 1 % (EU868 g1); India 865-867 MHz has none
    ("lora_rx_window_ms", 100, 10000, 1000),
    ("lora_report_min_s", 0, 86400, 30),
    ("lora_report_max_s", 1, 86400, 300),
    ("lora_delta_ma", 1, 100000, 500),
    ("lora_delta_pm", 0, 1000, 100),
    ("lora_polled", 0, 1, 0),  # 1: answer the Pi's polls (phasegate polled_link), else class A
    ("watchdog_ms", 0, 60000, 0),  # 0: the board file's watchdog_ms
)
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_name(file, key, v, max_len):
    """``v`` if it is 1..``max_len`` characters of A-Z a-z 0-9 . _ - not starting with '.'; else ``ConfigError``."""
    if not isinstance(v, str) or not 1 <= len(v) <= max_len:
        raise ConfigError(file, key, "must be a string of 1..%d characters, got %s" % (max_len, quote(v)))
    for c in v:
        if c not in _NAME_CHARS:
            raise ConfigError(file, key, "character %s not allowed (A-Z a-z 0-9 . _ -)" % quote(c))
    if v[0] == ".":
        raise ConfigError(file, key, "must not start with '.'")
    return v


def check_int(file, key, v, lo, hi):
    """``v`` if it is an integer (not a bool) ``lo..hi``; else ``ConfigError``."""
    if not _is_int(v) or not lo <= v <= hi:
        raise ConfigError(file, key, "must be an integer %d..%d, got %s" % (lo, hi, quote(v)))
    return v


def _check_keys(file, prefix, obj, allowed):
    if not isinstance(obj, dict):
        raise ConfigError(file, prefix.rstrip(".") or None, "must be an object, got %s" % (quote(obj),))
    for k in obj:
        if k not in allowed:
            raise ConfigError(file, prefix + k, "unknown key")


def _phase_of(file, v):
    # config.json names the phase by its letter; the node counts as the wire does (phasecore.codes).
    for p in (PHASE_A, PHASE_B, PHASE_C):
        if v == PHASE_NAMES[p]:
            return p
    raise ConfigError(file, "home_phase", 'must be "A", "B" or "C", got %s' % (quote(v),))


class NodeConfig:
    """A validated config.json: ``node_id``, ``address``, ``key_file``, ``key_generation``,
    ``board``, ``home_phase`` (``phasecore.codes.PHASE_A`` .. ``PHASE_C``), ``limits`` (dict,
    defaults filled), ``rules`` (``RelayRules``), ``app`` (dict of every ``APP_SETTINGS`` name,
    defaults filled), ``seq_name`` (the sequence storage name for the current key), ``raw`` (the
    object as read).
    """

    def __init__(self, raw, file=CONFIG_FILE):
        f = file
        _check_keys(f, "", raw, ("format", "node", "key", "board", "home_phase", "limits", "relay", "app"))
        for k in ("format", "node", "key", "board", "home_phase"):
            if k not in raw:
                raise ConfigError(f, k, "required key missing")
        fmt = raw["format"]
        if not _is_int(fmt) or fmt != FORMAT:
            raise ConfigError(f, "format", "this firmware reads format %d, file has %s" % (FORMAT, quote(fmt)))
        node = raw["node"]
        _check_keys(f, "node.", node, ("id", "address"))
        for k in ("id", "address"):
            if k not in node:
                raise ConfigError(f, "node." + k, "required key missing")
        self.node_id = check_name(f, "node.id", node["id"], 32)
        self.address = check_int(f, "node.address", node["address"], 1, 247)
        key = raw["key"]
        _check_keys(f, "key.", key, ("file", "generation"))
        if "file" not in key:
            raise ConfigError(f, "key.file", "required key missing")
        self.key_file = check_name(f, "key.file", key["file"], 32)
        self.key_generation = check_int(f, "key.generation", key.get("generation", 0), 0, 65535)
        self.board = check_name(f, "board", raw["board"], 48)
        self.home_phase = _phase_of(f, raw["home_phase"])
        limits = raw.get("limits", {})
        _check_keys(f, "limits.", limits, DEFAULT_LIMITS)
        lim = {}
        for k, lo, hi in LIMIT_RANGES:
            lim[k] = check_int(f, "limits." + k, limits.get(k, DEFAULT_LIMITS[k]), lo, hi)
        if lim["undervoltage_dv"] >= lim["overvoltage_dv"]:
            raise ConfigError(
                f,
                "limits.undervoltage_dv",
                "%d must be below overvoltage_dv %d" % (lim["undervoltage_dv"], lim["overvoltage_dv"]),
            )
        self.limits = lim
        relay = raw.get("relay", {})
        if not isinstance(relay, dict):
            raise ConfigError(f, "relay", "must be an object, got %s" % (quote(relay),))
        self._relay = relay
        self._file = f
        try:
            # Keys only a solid-state phase selector has make these its rules.
            solid = "mains_hz" in relay or "zc_timeout_ms" in relay
            self.rules = (SolidStateRules if solid else RelayRules).from_dict(relay)
        except RuleError as e:
            raise ConfigError(f, "relay." + e.key, e.msg)
        self.app = _check_app(f, raw.get("app", {}))
        self.raw = raw

    def rules_for(self, kind):
        """The relay rules for the board's switch kind (``"mechanical"`` or ``"solid-state"``).

        A solid-state board takes the config's ``relay`` object as
        ``SolidStateRules`` (``dead_time_ms`` is left out: its dead time is a
        half-cycle); a mechanical board refuses solid-state keys.
        """
        if kind == "solid-state":
            if isinstance(self.rules, SolidStateRules):
                return self.rules
            d = {}
            for k in self._relay:
                if k != "dead_time_ms":
                    d[k] = self._relay[k]
            try:
                return SolidStateRules.from_dict(d)
            except RuleError as e:
                raise ConfigError(self._file, "relay." + e.key, e.msg)
        if isinstance(self.rules, SolidStateRules):
            raise ConfigError(self._file, "relay", "solid-state rules (mains_hz, zc_timeout_ms) on a relay board")
        return self.rules

    @property
    def seq_name(self):
        return "g%d" % self.key_generation


def _check_app(file, app):
    # The "app" object: every setting in range, defaults filled (phasenode.app.Settings checks the same).
    if not isinstance(app, dict):
        raise ConfigError(file, "app", "must be an object, got %s" % (quote(app),))
    out = {}
    for name, lo, hi, default in APP_SETTINGS:
        out[name] = check_int(file, "app." + name, app.get(name, default), lo, hi)
    for k in app:
        if k not in out:
            raise ConfigError(file, "app." + k, "unknown setting")
    if out["lora_report_min_s"] > out["lora_report_max_s"]:
        raise ConfigError(
            file,
            "app.lora_report_min_s",
            "%d exceeds lora_report_max_s %d" % (out["lora_report_min_s"], out["lora_report_max_s"]),
        )
    return out


def validate_config(obj, file=CONFIG_FILE):
    """Check a config object as the node will (for the provisioning tool); returns a ``NodeConfig``."""
    return NodeConfig(obj, file)
