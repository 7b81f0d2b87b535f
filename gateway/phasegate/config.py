"""The gateway's one configuration file (TOML), validated at start.

Every error names the file, the line, the table and the key, e.g.
``gateway.toml:14: [bus] baud = 12345: expected one of 9600, 19200, 38400, 57600, 115200``.
Unknown tables and keys are errors too (a typo must not silently fall back to a
default). See docs/install-gateway.md for every key with its default.
"""

import os
from typing import Any

import phaseconf
from phaseconf import REQUIRED, integer, number
from phaseconf import ident as _ident
from phaseconf import one_of as _one_of
from phaseconf import port as _port
from phasecore import balancer as _balancer
from phasecore.balancer.config import MAX_MOVES_PER_ROUND
from phasecore.errors import quote
from phasegate import clock as _clock
from phasegate import plausibility as _plausibility
from phasegate.errors import ConfigError

BAUDS = (9600, 19200, 38400, 57600, 115200)
_ID = phaseconf.IDENT


# The checks take a TOML value of any type (phaseconf.Check) and return what was expected, or None.


def _baud(v: object) -> str | None:
    if v not in BAUDS:
        return "expected one of " + ", ".join(str(b) for b in BAUDS)
    return None


def _operator_ids(v: list[Any]) -> str | None:
    if len(v) > 64:
        return "at most 64 operators"
    for x in v:
        if not isinstance(x, str) or not _ID.match(x):
            return "operator id %s: expected 1-32 letters, digits, '_', '.' or '-'" % (quote(x),)
    if len(set(v)) != len(v):
        return "operator ids repeat"
    return None


def _keepalive(v: object) -> str | None:
    # MQTT keepalive is a 16-bit number of seconds (MQTT 3.1.1 section 3.1.2.10).
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        return "expected seconds 1..65535"
    return None


def _node_ids(v: object) -> str | None:
    if not isinstance(v, list) or not v:
        return "expected a non-empty list of node addresses 1..247"
    for n in v:
        # docs/protocol.md section 1: 0 is the Pi, 1..247 nodes, 248..254 reserved, 255 broadcast.
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 247:
            return "node address %s outside 1..247" % (quote(n),)
    if len(set(v)) != len(v):
        return "node addresses repeat"
    return None


def _node_ids_or_empty(v: object) -> str | None:
    if v == []:
        return None
    return _node_ids(v)


def _extra_lines(v: object) -> str | None:
    """[bus] extra_lines: a list of {port, nodes} tables, more RS-485 lines polled side by side."""
    if not isinstance(v, list):
        return "expected an array of {port, nodes} tables"
    for i, t in enumerate(v):
        if not isinstance(t, dict):
            return "line %d is not a table" % (i + 2)
        unknown = set(t) - {"port", "nodes"}
        if unknown:
            return "line %d: unknown key(s) %s; known: nodes, port" % (
                i + 2,
                ", ".join(sorted(str(k)[:20] for k in unknown)),
            )
        if not isinstance(t.get("port"), str) or not t["port"]:
            return "line %d: port: expected a serial device path" % (i + 2)
        problem = _node_ids(t.get("nodes"))
        if problem:
            return "line %d: nodes: %s" % (i + 2, problem)
    return None


def _byte(v: object) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
        return "expected 0..255"
    return None


# The next four run after phaseconf has checked the value is an int.
def _tx_power(v: int) -> str | None:
    if not 2 <= v <= 20:
        return "expected 2..20 dBm (SX127x PA_BOOST)"
    return None


def _small_int(v: int) -> str | None:
    if not 0 <= v <= 15:
        return "expected 0..15"
    return None


def _spi_hz(v: int) -> str | None:
    # SX127x datasheet: SCK up to 10 MHz.
    if not 100000 <= v <= 10000000:
        return "expected 100000..10000000 Hz"
    return None


def _gpio(v: int) -> str | None:
    if not -1 <= v <= 63:
        return "expected a GPIO line 0..63, or -1 for not connected"
    return None


def _routes(v: object) -> str | None:
    """[lora_gateway] routes: a list of {site, transformer, nodes, pi_dst (optional)} tables."""
    if not isinstance(v, list) or not v:
        return "expected a non-empty array of route tables ([[lora_gateway.routes]])"
    seen: dict[int | tuple[str, int], int] = {}
    for i, r in enumerate(v):
        if not isinstance(r, dict):
            return "route %d is not a table" % i
        unknown = set(r) - {"site", "transformer", "nodes", "pi_dst"}
        if unknown:
            return "route %d: unknown key(s) %s; known: nodes, pi_dst, site, transformer" % (
                i,
                ", ".join(sorted(unknown)),
            )
        for key in ("site", "transformer"):
            if _ident(r.get(key)):
                return "route %d: %s %s: expected 1-32 letters, digits, '_', '.' or '-'" % (i, key, quote(r.get(key)))
        problem = _node_ids(r.get("nodes"))
        if problem:
            return "route %d: nodes: %s" % (i, problem)
        addrs: list[int | tuple[str, int]] = list(r["nodes"])
        if "pi_dst" in r:
            if isinstance(r["pi_dst"], bool) or not isinstance(r["pi_dst"], int) or not 1 <= r["pi_dst"] <= 247:
                return "route %d: pi_dst %s outside 1..247" % (i, quote(r["pi_dst"]))
            addrs.append(("pi", r["pi_dst"]))
        for a in addrs:
            if a in seen:
                return "route %d: %s is already routed by route %d" % (i, quote(a), seen[a])
            seen[a] = i
    return None


_BAL = _balancer.Config().as_dict()
# Every number has a range it is used in (phaseconf refuses NaN, infinities and booleans for all of
# them). A key whose code needs an int is typed int, so a fraction is refused, not truncated later
# (a summary period of 0.5 s became int 0 and divided by zero). The bounds are what the code and
# the hardware can use, not guesses: a reason is given where it is not obvious.
_DAY = 86400
_WEEK = 7 * _DAY
_seconds = number  # a duration in seconds (int or float) lo..hi


def _guard_spec(default: float, lo: float, hi: float) -> phaseconf.Spec:
    # Whole numbers (counts, seconds) as integers, the rest as numbers, each in the guard's own range.
    if isinstance(default, int):
        return (int, default, integer(int(lo), int(hi)))
    return ((int, float), default, number(lo, hi))


# table -> key -> (type, default or REQUIRED, extra check or None): the phaseconf schema format.
SCHEMA: dict[str, dict[str, phaseconf.Spec]] = {
    "site": {
        "id": (str, REQUIRED, _ident),
        "transformer": (str, REQUIRED, _ident),
        # Required on a transformer Pi; a LoRa gateway Pi ([lora_gateway]) holds no keys.
        "key_file": (str, "", None),
        # Distribution transformers: 16 kVA (23 A) to 2.5 MVA (3600 A) per phase at 400 V; the meter
        # refuses readings above 4x the rating.
        "rated_current_a": ((int, float), 400, number(1, 10000, " A")),
    },
    "bus": {
        "port": (str, REQUIRED, None),
        "baud": (int, 115200, _baud),
        "nodes": (list, REQUIRED, _node_ids),
        "reply_timeout_ms": (int, 30, integer(1, 10000, " ms")),
        "retries": (int, 1, integer(0, 5)),
        # A node that failed backoff_after polls in a row is polled without retries, and only every
        # backoff_rounds-th round until it answers: dead nodes cannot stall a round (phasegate.bus).
        "backoff_after": (int, 3, integer(1, 100)),
        "backoff_rounds": (int, 4, integer(1, 100)),
        # Below 50 ms a round of polls would never rest; above a day a node is offline between polls.
        "poll_period_s": ((int, float), 10, _seconds(0.05, _DAY, " s")),
        # "auto": the adapter or HAT switches the transceiver itself; "kernel": the UART
        # driver drives DE from RTS (TIOCSRS485), e.g. the Pi's UART with a MAX485.
        "de": (str, "auto", _one_of("auto", "kernel")),
        # Liveness from the age of a node's last valid reading (phasegate.registry); stale < offline.
        "stale_after_s": ((int, float), 60, _seconds(1, _DAY, " s")),
        "offline_after_s": ((int, float), 300, _seconds(1, _WEEK, " s")),
        # More RS-485 lines on more adapters, each polled by its own master side by side with the
        # first: [{port = "/dev/ttyUSB1", nodes = [...]}, ...]; every other key of [bus] applies to all.
        "extra_lines": (list, [], _extra_lines),
    },
    "lora": {
        "driver": (str, "sx127x", _one_of("sx127x", "sim")),
        # driver = "sim" in a process of its own: the Unix socket of a simulated channel shared by
        # processes (phasekit.sim.lora_hub); tests and simulated sites only.
        "sim_socket": (str, "", None),
        "port": (str, "", None),
        # SX1276/77/78/79 synthesiser range (datasheet table 7: 137-1020 MHz).
        "freq_hz": (int, 865062500, integer(137000000, 1020000000, " Hz")),
        "sf": (int, 7, _one_of(7, 8, 9, 10, 11, 12)),
        "bw_hz": (int, 125000, _one_of(125000, 250000, 500000)),
        "cr": (int, 1, _one_of(1, 2, 3, 4)),
        "sync_word": (int, 0x12, _byte),
        "tx_power_dbm": (int, 14, _tx_power),
        # sx127x HAT wiring (BCM GPIO numbers; -1 = not connected). Defaults: Adafruit LoRa
        # Radio Bonnet (RFM95W: CS on CE1, RESET on GPIO25, DIO0 on GPIO22).
        "spi_bus": (int, 0, _small_int),
        "spi_dev": (int, 1, _small_int),
        "spi_hz": (int, 5000000, _spi_hz),
        "cs_pin": (int, -1, _gpio),
        "reset_pin": (int, 25, _gpio),
        "dio0_pin": (int, 22, _gpio),
        "gpio_chip": (str, "/dev/gpiochip0", None),
        # Node addresses heard on LoRa. Empty only on a LoRa gateway Pi ([lora_gateway]).
        "nodes": (list, [], _node_ids_or_empty),
        "stale_after_s": ((int, float), 180, _seconds(1, _DAY, " s")),
        "offline_after_s": ((int, float), 900, _seconds(1, _WEEK, " s")),
        # The nodes' longest silence between reports (phasenode.link_lora.ReportPolicy.max_s):
        # how long a command may wait for a node's receive window.
        "report_max_s": ((int, float), 300, _seconds(1, _DAY, " s")),
    },
    "relay": {
        # Nodes this Pi hears only through LoRa gateways (phasegate.relay): frames arrive over [uplink].
        "nodes": (list, REQUIRED, _node_ids),
        "stale_after_s": ((int, float), 900, _seconds(1, _DAY, " s")),
        "offline_after_s": ((int, float), 1800, _seconds(1, _WEEK, " s")),
    },
    "lora_gateway": {
        # A relay Pi: forwards sealed frames heard on [lora] to the broker of [uplink], unread.
        "id": (str, REQUIRED, _ident),
        "routes": (list, REQUIRED, _routes),
        "dedup_s": ((int, float), 600, _seconds(1, _DAY, " s")),
        # Entries of 16-byte hashes: a million is ~100 MB of Python objects, the most a Pi should spend.
        "dedup_max": (int, 20000, integer(1, 1000000)),
    },
    "meter": {
        "profile": (str, REQUIRED, None),
        "transport": (str, "rtu", _one_of("rtu", "tcp")),
        "port": (str, "", None),
        "host": (str, "", None),
        "tcp_port": (int, 502, _port),
        "unit": (int, 1, integer(1, 247)),
        "baud": (int, 9600, _baud),
        "timeout_s": ((int, float), 1.0, _seconds(0.05, 60, " s")),
    },
    "balancer": {
        # The control round and the limits of phasecore.balancer.Config (docs/balancer.md).
        "enabled": (bool, True, None),
        "period_s": (int, 60, integer(1, _DAY, " s")),
        # Defaults are the balancer's own (phasecore.balancer.Config), so the two never drift;
        # the bounds are its own too (MAX_MOVES_PER_ROUND, a day's budget in one byte).
        "moves_per_round": (int, _BAL["moves_per_round"], integer(0, MAX_MOVES_PER_ROUND)),
        "min_dwell_s": (int, _BAL["min_dwell_s"], integer(0, 30 * _DAY, " s")),
        "moves_per_day": (int, _BAL["moves_per_day"], integer(0, 255)),
        "multi_share": ((int, float), _BAL["multi_share"], number(0, 1)),
        "persist_rounds": (int, _BAL["persist_rounds"], integer(1, 1000)),
        "min_gain_a": ((int, float), _BAL["min_gain_a"], number(0, 10000, " A")),
        "min_gain_frac": ((int, float), _BAL["min_gain_frac"], number(0, 1)),
        "scarcity": ((int, float), _BAL["scarcity"], number(0, 100)),
        "scarcity_from": ((int, float), _BAL["scarcity_from"], number(0, 0.99)),
        # A reading older than stale_s is not planned on, and a node needs warmup_s of readings
        # before it may be moved: both must outlast one polling round ([bus] poll_period_s).
        "stale_s": (int, _BAL["stale_s"], integer(1, _DAY, " s")),
        "warmup_s": (int, _BAL["warmup_s"], integer(0, _DAY, " s")),
        # Solid-state nodes (their heartbeat says so): their own limits (docs/balancer.md, "Switch kinds").
        "ss_min_dwell_s": (int, _BAL["ss_min_dwell_s"], integer(0, 30 * _DAY, " s")),
        "ss_moves_per_day": (int, _BAL["ss_moves_per_day"], integer(0, 1440)),
        "ss_min_move_gain_a": ((int, float), _BAL["ss_min_move_gain_a"], number(0, 1000)),
        "ss_min_gain_a": ((int, float), _BAL["ss_min_gain_a"], number(0, 1000)),
        # Carrying out a move (phasegate.controller).
        "ack_timeout_s": ((int, float), 5, _seconds(0.1, 600, " s")),
        "verify_s": ((int, float), 60, _seconds(1, _DAY, " s")),
        "suspend_s": (int, 86400, integer(1, _WEEK, " s")),
        # A move neither verified nor shown to have failed by the node itself (issue 13).
        "unconfirmed_s": (int, 900, integer(1, _DAY, " s")),
        # A command's deadline; the node refuses it after. At most an hour: a withheld command must not live long.
        "command_ttl_s": (int, 60, integer(1, 3600, " s")),
        # The Pi's sealed heartbeat (it gives every node the time) to each node this often.
        "heartbeat_s": ((int, float), 300, _seconds(1, _DAY, " s")),
    },
    # phasegate.plausibility: checks of node readings, the meter and influence tests, quarantine.
    "plausibility": {
        "enabled": (bool, True, None),
        **{name: _guard_spec(default, lo, hi) for name, default, lo, hi in _plausibility.FIELDS},
    },
    "store": {
        "path": (str, REQUIRED, None),
        # At ~100 bytes a row, ten million rows is ~1 GB: the most an SD card should hold for it.
        "max_rows": (int, 200000, integer(100, 10000000)),
    },
    "uplink": {
        "host": (str, REQUIRED, None),
        "port": (int, 8883, _port),
        "client_id": (str, "", None),
        "tls": (bool, True, None),
        "ca": (str, "", None),
        "cert": (str, "", None),
        "key": (str, "", None),
        # docs/uplink.md: "interval" sends one aggregate per node and summary period
        # (fits a cellular SIM), "raw" every reading in batches every raw_batch_s.
        "mode": (str, "interval", _one_of("interval", "raw")),
        # Whole seconds: the aggregation divides time by it (and a summary's period_s is 1..86400).
        "summary_period_s": (int, 900, integer(10, _DAY, " s")),
        "raw_batch_s": ((int, float), 300, _seconds(0.1, _DAY, " s")),
        "heartbeat_s": ((int, float), 3600, _seconds(1, _WEEK, " s")),
        "node_heartbeat_s": ((int, float), 21600, _seconds(1, _WEEK, " s")),
        "keepalive_s": (int, 1200, _keepalive),
        # Longest wait between reconnect attempts while the broker is away: a long outage must
        # not leave the backlog waiting minutes after the broker is back (an attempt is one TCP connect).
        "reconnect_max_s": (int, 30, integer(1, 3600)),
        # A batch is also capped at 64 KiB before compression; the server refuses more than 4 MiB inflated.
        "batch_max_records": (int, 1000, integer(1, 10000)),
        # paho's own inflight window is a 16-bit packet id space; a few dozen is plenty on any link.
        "max_inflight": (int, 16, integer(1, 1000)),
        "compress": (bool, True, None),
        # "5": the broker is told the largest packet the Pi takes (MQTT 5 Maximum Packet Size);
        # "3.1.1" for brokers without MQTT 5 (RabbitMQ's MQTT plugin before 3.13), where the
        # Pi's own cap on a command's bytes is the only bound.
        "mqtt_version": (str, "5", _one_of("5", "3.1.1")),
        # Operator ids whose sealed commands this Pi accepts (phasegate.operator); empty: none.
        "operators": (list, [], _operator_ids),
    },
    # Site time (phasegate.clock): only the simulated site (phasekit site run) sets it.
    "clock": _clock.SCHEMA,
    "scada": {
        "enabled": (bool, False, None),
        "bind": (str, "127.0.0.1", None),
        "port": (int, 5020, _port),
    },
}
REQUIRED_TABLES = ("site", "store")


Config = phaseconf.Settings  # ``cfg.table("bus")``, ``cfg.has("lora")``, ``cfg.resolve(path)``


def defaults(name: str) -> dict[str, Any]:
    """The defaults of a table that has no required key (e.g. ``defaults("balancer")``)."""
    return phaseconf.defaults(SCHEMA, name, ConfigError)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate ``path``; raises ConfigError naming file, line and key."""
    cfg = phaseconf.load(path, SCHEMA, REQUIRED_TABLES, ConfigError)
    path = cfg.path
    tables = {name: cfg.table(name) for name in cfg.tables()}
    if "bus" not in tables and "lora" not in tables and "relay" not in tables:
        raise ConfigError("%s: no node link: add a [bus] (RS-485), [lora] or [relay] table" % path)
    if "relay" in tables and "uplink" not in tables:
        raise ConfigError("%s: [relay] needs an [uplink] table (relayed frames arrive through the broker)" % path)
    if "bus" in tables:
        seen: dict[int, int] = {}
        ports = [tables["bus"]["port"]]
        lines = [tables["bus"]["nodes"]] + [t["nodes"] for t in tables["bus"]["extra_lines"]]
        ports += [t["port"] for t in tables["bus"]["extra_lines"]]
        if len(set(ports)) != len(ports):
            raise ConfigError("%s:%d: [bus] extra_lines: a port appears twice" % (path, cfg.line("bus", "extra_lines")))
        for i, nodes in enumerate(lines):
            for a in nodes:
                if a in seen:
                    raise ConfigError(
                        "%s:%d: [bus] node %d is on line %d and line %d"
                        % (path, cfg.line("bus"), a, seen[a] + 1, i + 1)
                    )
                seen[a] = i
    if "lora" in tables and "lora_gateway" not in tables and not tables["lora"]["nodes"]:
        raise ConfigError(
            "%s:%d: [lora] needs 'nodes' (addresses of the LoRa nodes of this transformer)" % (path, cfg.line("lora"))
        )
    if "lora_gateway" not in tables and not tables["site"]["key_file"]:
        raise ConfigError(
            "%s:%d: [site] missing required key 'key_file' (the site key; a transformer Pi needs it)"
            % (path, cfg.line("site"))
        )
    if "lora_gateway" in tables:
        for need in ("lora", "uplink"):
            if need not in tables:
                raise ConfigError("%s: [lora_gateway] needs a [%s] table" % (path, need))
    for name in ("bus", "lora"):
        t = tables.get(name)
        if t is not None and not t["stale_after_s"] < t["offline_after_s"]:
            raise ConfigError(
                "%s:%d: [%s] stale_after_s (%g) must be below offline_after_s (%g)"
                % (path, cfg.line(name, "stale_after_s"), name, t["stale_after_s"], t["offline_after_s"])
            )
    if "meter" in tables:
        m = tables["meter"]
        need = "port" if m["transport"] == "rtu" else "host"
        if not m[need]:
            raise ConfigError(
                "%s:%d: [meter] transport = %s needs '%s'"
                % (path, cfg.line("meter", "transport"), quote(m["transport"]), need)
            )
    return cfg
