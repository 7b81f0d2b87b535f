"""Board files: load and validate the JSON that says how a node is wired.

Every pin the firmware touches comes from here (boards/README.md documents the
format, schema 1); nothing in phasenode names a GPIO. A bad file is refused at
boot with a ``BoardError`` that names the file and the key, e.g.
``boards/x.json: relays.pins[1]: GPIO 34 is input-only on esp32, cannot drive
a relay`` -- a wrong pin on a board that switches mains must never be "mostly
working".

Besides types and ranges the loader checks the chip facts a wiring mistake
breaks (ESP32 / ESP32-S3 technical reference manuals, "IO MUX and GPIO"):
GPIOs that do not exist, the SPI-flash pins, input-only pins used as outputs,
strapping pins used for relays (a relay must not click while the chip samples
its boot mode), UART 0 (the REPL that deploy and mpremote need), and one pin
given two jobs. A ``host`` board (the virtual board) names its lines with
strings; the runner wires them at start.

Public: ``load(path)``, ``parse(text, source)``, ``from_dict(obj, source)``,
``Board``, ``UartSpec``, ``RelaySpec``, ``LoraSpec``, ``BoardError``,
``MCUS``, ``CAPABILITIES``.
"""

import json
import os

from phasecore.errors import quote
from phasenode.errors import NodeError

__all__ = (
    "load",
    "parse",
    "from_dict",
    "Board",
    "UartSpec",
    "RelaySpec",
    "LoraSpec",
    "BoardError",
    "MCUS",
    "CAPABILITIES",
    "SCHEMA",
)

SCHEMA = 1
MCUS = ("esp32", "esp32s3", "host")
CAPABILITIES = ("rs485", "lora", "relays", "meter")
LORA_CHIPS = ("sx1276", "sx1262")
_MAX_FILE = 8192  # a board file is well under 2 KB; refuse anything absurd before parsing


def _gpios(*ranges):
    out = []
    for lo, hi in ranges:
        out.extend(range(lo, hi + 1))
    return tuple(out)


# Chip facts, per MCU: existing GPIOs, pins taken by the SPI flash, input-only
# pins and strapping pins (ESP32 TRM section 4.10 / datasheet table 2-1;
# ESP32-S3 TRM section 6 / datasheet section 2.3.4).
_CHIPS = {
    "esp32": {
        "gpio": _gpios((0, 19), (21, 23), (25, 27), (32, 39)),
        "flash": (6, 7, 8, 9, 10, 11),
        "input_only": (34, 35, 36, 37, 38, 39),
        "strapping": (0, 2, 5, 12, 15),
        "uarts": (1, 2),  # UART0 carries the REPL
        "spi": (1, 2),  # machine.SPI: 1 = HSPI, 2 = VSPI
    },
    "esp32s3": {
        "gpio": _gpios((0, 21), (26, 48)),
        "flash": (26, 27, 28, 29, 30, 31, 32),
        "input_only": (),
        "strapping": (0, 3, 45, 46),
        "uarts": (1, 2),
        "spi": (1, 2),
    },
}


class BoardError(NodeError):
    """The board file is missing, not JSON, or breaks the schema. ``.source`` and ``.key`` say where."""

    def __init__(self, source, key, msg):
        self.source = source
        self.key = key
        if key:
            super().__init__("%s: %s: %s" % (source, key, msg))
        else:
            super().__init__("%s: %s" % (source, msg))


class UartSpec:
    """One UART: ``id`` (int on a chip, a line name on the host), ``tx``, ``rx``, ``baud``, ``de_pin``."""

    def __init__(self, uart_id, tx, rx, baud, de_pin=None):
        self.id = uart_id
        self.tx = tx
        self.rx = rx
        self.baud = baud
        self.de_pin = de_pin

    def __repr__(self):
        return "UartSpec(id=%r, tx=%r, rx=%r, baud=%r, de_pin=%r)" % (self.id, self.tx, self.rx, self.baud, self.de_pin)


class RelaySpec:
    """Relay outputs for phases A, B, C (``pins`` in that order) and their polarity.

    ``kind``: ``"mechanical"`` (relays or contactors; the default) or
    ``"solid-state"`` (thyristor/triac gates). A solid-state board also
    names ``zero_cross`` (the zero-cross detector's input, an interrupt every
    half-cycle) and ``conducting`` (three inputs, high while phase A, B, C
    conducts: the board's current-zero detectors). ``kind_index`` is 0 or 1,
    as ``phasecore.balancer`` and the heartbeat number switch kinds.
    """

    def __init__(self, pins, active_high, kind="mechanical", zero_cross=None, conducting=None):
        self.pins = pins
        self.active_high = active_high
        self.kind = kind
        self.zero_cross = zero_cross
        self.conducting = conducting

    @property
    def kind_index(self):
        return 1 if self.kind == "solid-state" else 0

    def level(self, closed):
        """The output level (0 or 1) that makes a relay ``closed`` (True) or open (False)."""
        return 1 if bool(closed) == self.active_high else 0

    @property
    def open_level(self):
        """The level of an open (de-energised, safe) relay: what boot drives first."""
        return self.level(False)


class LoraSpec:
    """LoRa radio wiring: ``chip``, SPI ``bus``/``sck``/``mosi``/``miso``/``cs``, ``reset``, ``irq``, ``busy``."""

    def __init__(self, d):
        self.chip = d["chip"]
        self.bus = d["bus"]
        self.sck = d["sck"]
        self.mosi = d["mosi"]
        self.miso = d["miso"]
        self.cs = d["cs"]
        self.reset = d["reset"]
        self.irq = d["irq"]
        self.busy = d.get("busy")
        self.freq_hz = d["freq_hz"]
        self.tx_power_dbm = d["tx_power_dbm"]


class Board:
    """A validated board. ``meter_uart``, ``bus_uart``, ``relays``, ``lora`` are None when absent."""

    def __init__(
        self, source, name, mcu, description, capabilities, meter_uart, bus_uart, relays, lora, led, watchdog_ms
    ):
        self.source = source
        self.name = name
        self.mcu = mcu
        self.description = description
        self.capabilities = capabilities
        self.meter_uart = meter_uart
        self.bus_uart = bus_uart
        self.relays = relays
        self.lora = lora
        self.led = led
        self.watchdog_ms = watchdog_ms

    def has(self, capability):
        """True when the board lists ``capability`` (``rs485``, ``lora``, ``relays``, ``meter``)."""
        return capability in self.capabilities

    @property
    def is_host(self):
        return self.mcu == "host"

    def __repr__(self):
        return "Board(%r, mcu=%r, capabilities=%r)" % (self.name, self.mcu, self.capabilities)


def load(path):
    """Read and validate the board file at ``path``; raises ``BoardError``."""
    try:
        size = os.stat(path)[6]
        if size > _MAX_FILE:
            raise BoardError(path, None, "%d bytes, larger than %d: not a board file" % (size, _MAX_FILE))
        with open(path) as f:
            text = f.read()  # exactly the file: no 8 KB buffer on a fragmented heap at boot
    except OSError as e:
        raise BoardError(path, None, "cannot read board file (%s)" % (e,))
    return parse(text, path)


def parse(text, source="<board>"):
    """Validate a board file given as JSON text; ``source`` names it in errors."""
    if len(text) > _MAX_FILE:
        raise BoardError(source, None, "larger than %d bytes: not a board file" % _MAX_FILE)
    try:
        obj = json.loads(text)
    except ValueError as e:
        raise BoardError(source, None, "not valid JSON (%s)" % (e,))
    return from_dict(obj, source)


def from_dict(obj, source="<board>"):
    """Validate an already parsed board file (a dict)."""
    return _Checker(source).board(obj)


class _Checker:
    """Walks the dict once, keeping the file name for errors and the pins seen for duplicates."""

    def __init__(self, source):
        self.source = source
        self.used = {}  # pin -> key that took it
        self.chip = None
        self.mcu = None

    def fail(self, key, msg):
        raise BoardError(self.source, key, msg)

    def get(self, d, key, path, kind, required=True):
        """``d[key]`` checked against ``kind`` ("int", "str", "bool", "dict", "list", "pin")."""
        full = path + "." + key if path else key
        if key not in d:
            if required:
                self.fail(full, "missing")
            return None
        v = d[key]
        if kind == "int":
            # bool is an int subclass in Python: refuse true/false where a number belongs.
            if not isinstance(v, int) or isinstance(v, bool):
                self.fail(full, "must be an integer, got %s" % (quote(v),))
        elif kind == "str":
            if not isinstance(v, str) or not v:
                self.fail(full, "must be a non-empty string, got %s" % (quote(v),))
        elif kind == "bool":
            if not isinstance(v, bool):
                self.fail(full, "must be true or false, got %s" % (quote(v),))
        elif kind == "dict":
            if not isinstance(v, dict):
                self.fail(full, "must be an object, got %s" % (quote(v),))
        elif kind == "list":
            if not isinstance(v, list):
                self.fail(full, "must be a list, got %s" % (quote(v),))
        return v

    def pin(self, value, key, role, output, nullable=False):
        """A GPIO number on a chip, a line name on the host; ``output`` pins may not be input-only."""
        if value is None:
            if nullable:
                return None
            self.fail(key, "missing pin for %s" % role)
        if self.chip is None:  # host: lines have names
            if not isinstance(value, str) or not value:
                self.fail(key, "must be a line name (string) on a host board, got %s" % (quote(value),))
        else:
            if not isinstance(value, int) or isinstance(value, bool):
                self.fail(key, "must be a GPIO number, got %s" % (quote(value),))
            if value not in self.chip["gpio"]:
                self.fail(key, "GPIO %d does not exist on %s" % (value, self.mcu))
            if value in self.chip["flash"]:
                self.fail(key, "GPIO %d is wired to the SPI flash on %s" % (value, self.mcu))
            if output and value in self.chip["input_only"]:
                self.fail(key, "GPIO %d is input-only on %s, cannot drive %s" % (value, self.mcu, role))
        if value in self.used:
            self.fail(key, "pin %s already used by %s" % (quote(value), self.used[value]))
        self.used[value] = key
        return value

    def board(self, d):
        if not isinstance(d, dict):
            self.fail(None, "must be a JSON object")
        schema = self.get(d, "schema", "", "int")
        if schema != SCHEMA:
            self.fail("schema", "unsupported board file schema %s (this firmware reads %d)" % (quote(schema), SCHEMA))
        name = self.get(d, "name", "", "str")
        mcu = self.get(d, "mcu", "", "str")
        if mcu not in MCUS:
            self.fail("mcu", "unknown MCU %s (one of %s)" % (quote(mcu), ", ".join(MCUS)))
        self.mcu = mcu
        self.chip = _CHIPS.get(mcu)
        description = self.get(d, "description", "", "str", required=False) or ""
        caps = self.get(d, "capabilities", "", "list")
        for i, c in enumerate(caps):
            if c not in CAPABILITIES:
                self.fail(
                    "capabilities[%d]" % i, "unknown capability %s (one of %s)" % (quote(c), ", ".join(CAPABILITIES))
                )
        caps = tuple(sorted(set(caps)))

        uarts = self.get(d, "uarts", "", "dict", required=False) or {}
        for k in sorted(uarts):
            if k not in ("meter", "bus"):
                self.fail("uarts." + k, "unknown UART role (meter or bus)")
        meter = self.uart(uarts, "meter", False) if uarts.get("meter") is not None else None
        bus = self.uart(uarts, "bus", True) if uarts.get("bus") is not None else None
        if meter is not None and bus is not None and meter.id == bus.id:
            self.fail("uarts.bus.id", "UART %s already used by uarts.meter" % (quote(bus.id),))

        relays = self.relays(d["relays"]) if d.get("relays") is not None else None
        lora = self.lora(d["lora"]) if d.get("lora") is not None else None
        led = self.pin(d.get("led"), "led", "the status LED", True, nullable=True)
        wd = self.get(d, "watchdog_ms", "", "int")
        # Long enough to survive a flash write and a meter timeout, short enough
        # that a hung node lets go of the bus within seconds.
        if not 1000 <= wd <= 60000:
            self.fail("watchdog_ms", "%d outside 1000..60000 ms" % wd)

        # Capabilities and wiring must agree: a listed capability with no wiring
        # would fail at run time, wiring with no capability is a typo.
        for cap, present, key in (
            ("meter", meter, "uarts.meter"),
            ("rs485", bus, "uarts.bus"),
            ("relays", relays, "relays"),
            ("lora", lora, "lora"),
        ):
            if cap in caps and present is None:
                self.fail(key, "missing, but capabilities lists %s" % quote(cap))
            if cap not in caps and present is not None:
                self.fail("capabilities", "%s is wired but %s is not listed" % (key, quote(cap)))
        return Board(self.source, name, mcu, description, caps, meter, bus, relays, lora, led, wd)

    def uart(self, uarts, role, bus):
        path = "uarts." + role
        u = self.get(uarts, role, "uarts", "dict")
        for k in sorted(u):
            if k not in ("id", "tx", "rx", "baud", "de_pin"):
                self.fail(path + "." + k, "unknown key")
        if "id" not in u:
            self.fail(path + ".id", "missing")
        uid = u["id"]
        if self.chip is None:
            if not isinstance(uid, str) or not uid:
                self.fail(path + ".id", "must be a line name (string) on a host board, got %s" % (quote(uid),))
        else:
            if not isinstance(uid, int) or isinstance(uid, bool) or uid not in self.chip["uarts"]:
                self.fail(
                    path + ".id",
                    "UART %s not usable on %s (one of %s; UART 0 is the REPL)"
                    % (quote(uid), self.mcu, ", ".join(str(x) for x in self.chip["uarts"])),
                )
        baud = self.get(u, "baud", path, "int")
        if not 300 <= baud <= 5000000:
            self.fail(path + ".baud", "%d outside 300..5000000" % baud)
        # On a chip both lines are wired; on the host the runner connects the line.
        nullable = self.chip is None
        tx = self.pin(u.get("tx"), path + ".tx", "UART TX", True, nullable)
        rx = self.pin(u.get("rx"), path + ".rx", "UART RX", False, nullable)
        de = None
        if bus:
            if "de_pin" not in u:
                self.fail(path + ".de_pin", "missing (null for an auto-direction transceiver)")
            de = self.pin(u["de_pin"], path + ".de_pin", "the RS-485 driver enable", True, nullable=True)
        elif "de_pin" in u and u["de_pin"] is not None:
            self.fail(path + ".de_pin", "only the RS-485 bus UART has a driver-enable pin")
        return UartSpec(uid, tx, rx, baud, de)

    def relays(self, r):
        if not isinstance(r, dict):
            self.fail("relays", "must be an object, got %s" % (quote(r),))
        for k in sorted(r):
            if k not in ("pins", "active_high", "kind", "zero_cross", "conducting"):
                self.fail("relays." + k, "unknown key")
        kind = r.get("kind", "mechanical")
        if kind not in ("mechanical", "solid-state"):
            self.fail("relays.kind", "must be mechanical or solid-state, got %s" % (quote(kind),))
        pins = self.get(r, "pins", "relays", "list")
        if len(pins) != 3:
            self.fail("relays.pins", "must list 3 pins (phases A, B, C), got %d" % len(pins))
        out = []
        for i, p in enumerate(pins):
            key = "relays.pins[%d]" % i
            out.append(self.pin(p, key, "a relay", True))
            if self.chip is not None and p in self.chip["strapping"]:
                self.fail(key, "GPIO %d is a strapping pin on %s: the relay could click during boot" % (p, self.mcu))
        active_high = self.get(r, "active_high", "relays", "bool")
        zc = None
        cond = None
        if kind == "solid-state":
            # The transfer is sequenced on the board's zero crossings and conduction report.
            zc = self.pin(r.get("zero_cross"), "relays.zero_cross", "the zero-cross detector", False)
            cond_pins = self.get(r, "conducting", "relays", "list")
            if len(cond_pins) != 3:
                self.fail("relays.conducting", "must list 3 inputs (phases A, B, C), got %d" % len(cond_pins))
            cond = tuple(
                self.pin(p, "relays.conducting[%d]" % i, "a conduction sense", False) for i, p in enumerate(cond_pins)
            )
        else:
            for k in ("zero_cross", "conducting"):
                if k in r:
                    self.fail("relays." + k, "only a solid-state board has it")
        return RelaySpec(tuple(out), active_high, kind, zc, cond)

    def lora(self, lo):
        if not isinstance(lo, dict):
            self.fail("lora", "must be an object, got %s" % (quote(lo),))
        known = ("chip", "bus", "sck", "mosi", "miso", "cs", "reset", "irq", "busy", "freq_hz", "tx_power_dbm")
        for k in sorted(lo):
            if k not in known:
                self.fail("lora." + k, "unknown key")
        chip = self.get(lo, "chip", "lora", "str")
        if chip not in LORA_CHIPS:
            self.fail("lora.chip", "unknown radio %s (one of %s)" % (quote(chip), ", ".join(LORA_CHIPS)))
        if self.chip is None:
            bus = self.get(lo, "bus", "lora", "str")
        else:
            bus = self.get(lo, "bus", "lora", "int")
            if bus not in self.chip["spi"]:
                self.fail(
                    "lora.bus",
                    "SPI bus %d not usable on %s (one of %s)"
                    % (bus, self.mcu, ", ".join(str(x) for x in self.chip["spi"])),
                )
        d = {"chip": chip, "bus": bus}
        for k, role, output in (
            ("sck", "SPI SCK", True),
            ("mosi", "SPI MOSI", True),
            ("miso", "SPI MISO", False),
            ("cs", "the radio chip select", True),
            ("reset", "the radio reset", True),
            ("irq", "the radio IRQ (DIO0/DIO1)", False),
        ):
            d[k] = self.pin(lo.get(k), "lora." + k, role, output)
        # SX126x holds BUSY high while it cannot take a command (SX1261/2 datasheet 8.3.1).
        d["busy"] = self.pin(lo.get("busy"), "lora.busy", "the radio BUSY line", False, nullable=chip != "sx1262")
        if chip == "sx1276" and d["busy"] is not None:
            self.fail("lora.busy", "the SX1276 has no BUSY line: use null")
        freq = self.get(lo, "freq_hz", "lora", "int")
        # SX1276: 137-1020 MHz; SX1262: 150-960 MHz (datasheets, "Key features").
        lo_hz, hi_hz = (137000000, 1020000000) if chip == "sx1276" else (150000000, 960000000)
        if not lo_hz <= freq <= hi_hz:
            self.fail("lora.freq_hz", "%d Hz outside the %s range %d..%d" % (freq, chip, lo_hz, hi_hz))
        power = self.get(lo, "tx_power_dbm", "lora", "int")
        # SX1276 PA_BOOST: 2..20 dBm; SX1262: -9..22 dBm.
        p_lo, p_hi = (2, 20) if chip == "sx1276" else (-9, 22)
        if not p_lo <= power <= p_hi:
            self.fail("lora.tx_power_dbm", "%d dBm outside %d..%d for %s" % (power, p_lo, p_hi, chip))
        d["freq_hz"] = freq
        d["tx_power_dbm"] = power
        return LoraSpec(d)
