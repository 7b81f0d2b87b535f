"""``phasekit meter scan|set-address|reset-energy|set-alarm|read``: a PZEM-004T v3 on a serial port, or a node's meter.

``--port``: the meter on a USB-TTL adapter (``phasekit.meter``, the node's own
PZEM driver over pyserial). ``--node``: the meter of an installed node, through
the node's USB port (``phasekit.meter_node``: the node runs the operation and is
restarted afterwards, the house sees one break of about the dead time).
Wiring, the addressing procedure and what the house sees:
docs/hardware/pzem004t.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from phasekit.commands import Handler, Subparsers

if TYPE_CHECKING:
    from phasekit.meter import Found

EXAMPLES = """examples:
  phasekit meter scan --port /dev/ttyUSB0
  phasekit meter set-address 3 --port /dev/ttyUSB0          (exactly one meter connected)
  phasekit meter reset-energy --address 3 --port /dev/ttyUSB0
  phasekit meter set-alarm 4600 --address 3 --port /dev/ttyUSB0
  phasekit meter read --address 3 --port /dev/ttyUSB0
  phasekit meter read --node /dev/ttyUSB0                   (the meter of the node on that USB port)
  phasekit meter set-alarm 4600 --node /dev/ttyUSB0         (the node restarts: the house blinks once)
"""


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "meter",
        help="PZEM-004T tools for installers: find meters, set an address, reset energy, set the alarm",
        description=__doc__.split("\n\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="meter_verb", metavar="VERB")
    verbs.required = True

    def common(v: argparse.ArgumentParser) -> None:
        where = v.add_mutually_exclusive_group(required=True)
        where.add_argument("--port", help="the serial port of the USB-TTL adapter (or a pty)")
        where.add_argument(
            "--node",
            metavar="PORT",
            help="the meter of the node on this port, as mpremote's connect takes it (/dev/ttyUSB0, "
            "socket://HOST:PORT): interrupts the node's application, then restarts the node",
        )
        v.add_argument("--baud", type=int, default=None, help="the PZEM-004T v3 speaks 9600 8N1 (default; --port only)")
        v.add_argument("--timeout-ms", type=int, default=200, help="wait for each reply (default 200)")

    s = verbs.add_parser("scan", help="ask 0xF8 and every address for a meter")
    common(s)
    s.add_argument("--from", dest="first", type=int, default=1)
    s.add_argument("--to", dest="last", type=int, default=247)
    s.set_defaults(func=_guarded(_scan), timeout_ms=100)
    a = verbs.add_parser("set-address", help="give the one meter on the line a new address (through 0xF8)")
    a.add_argument("new", type=int, metavar="ADDRESS", help="1..247")
    common(a)
    a.set_defaults(func=_guarded(_set_address))
    r = verbs.add_parser("reset-energy", help="zero a meter's energy counter")
    r.add_argument("--address", type=_address, default=0xF8, help="1..247, or 0xF8 for the one meter (default)")
    common(r)
    r.set_defaults(func=_guarded(_reset))
    al = verbs.add_parser("set-alarm", help="set a meter's power alarm threshold")
    al.add_argument("watts", type=int, metavar="WATTS", help="0..25000")
    al.add_argument("--address", type=_address, default=0xF8)
    common(al)
    al.set_defaults(func=_guarded(_alarm))
    rd = verbs.add_parser("read", help="one reading of a meter")
    rd.add_argument("--address", type=_address, default=0xF8)
    common(rd)
    rd.set_defaults(func=_guarded(_read))


def _address(text: str) -> int:
    try:
        a = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not an address" % text) from None
    if not (1 <= a <= 247 or a == 0xF8):
        raise argparse.ArgumentTypeError("address %d: 1..247, or 0xF8 (248) for the one meter" % a)
    return a


def _guarded(fn: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        from phasekit.meter import MeterToolError

        if args.node is not None and args.baud is not None:
            print("phasekit meter: --baud is for --port; with --node the board file sets the speed", file=sys.stderr)
            return 2
        if args.baud is None:
            args.baud = 9600
        try:
            return fn(args)
        except MeterToolError as e:
            print("phasekit meter: %s" % e, file=sys.stderr)
            return 1

    return run


NODE_NOTE = (
    "meter: through the node on %s: its application stops while the meter is asked (the relays hold), then "
    "the node restarts: the house is off for its boot and the dead time (dead_time_ms, default 2 s), "
    "then back on the same phase"
)


def _note_node(args: argparse.Namespace) -> None:
    if args.node is not None:
        print(NODE_NOTE % args.node)


def _node_after(args: argparse.Namespace, f: object) -> None:
    if args.node is None:
        return
    print("meter: node restarted; its application polls meter address %s" % _polls(getattr(f, "node_address", None)))


def _polls(a: int | None) -> str:
    if a is None:
        return "(unknown: no config.json)"
    return "0xF8 (the one meter on its line)" if a == 0xF8 else str(a)


def _scan(args: argparse.Namespace) -> int:
    from phasekit import meter, meter_node

    n = args.last - args.first + 1
    if args.node is not None:
        _note_node(args)
        print(
            "meter: scanning the node's meter line, addresses %d..%d (%.0f s at most)"
            % (args.first, args.last, n * args.timeout_ms / 1000 + 5)
        )
        alone, found = meter_node.scan(args.node, args.first, args.last, args.timeout_ms)
    else:
        print(
            "meter: scanning %s at %d baud, addresses %d..%d (%.0f s at most)"
            % (args.port, args.baud, args.first, args.last, n * args.timeout_ms / 1000 + 1)
        )
        alone, found = meter.scan(args.port, args.first, args.last, args.timeout_ms, args.baud)
    if alone is None:
        print("meter: nothing sensible at 0xF8: no meter, or more than one on the line")
    else:
        print("meter: 0xF8 answers: one meter on the line, its address is %d" % alone)
    for f in found:
        print("  " + f.describe())
    print("meter: %d meter(s) found" % len(found))
    if found:
        _node_after(args, found[0])
    return 0 if found or alone is not None else 1


def _found(args: argparse.Namespace, via_port: Any, via_node: Any, *values: int) -> "Found":
    """One meter operation: over ``--port`` (a USB-TTL adapter) or ``--node`` (the node's own UART)."""
    if args.node is not None:
        _note_node(args)
        return via_node(args.node, *values, args.timeout_ms)
    return via_port(args.port, *values, args.baud, args.timeout_ms)


def _set_address(args: argparse.Namespace) -> int:
    from phasekit import meter, meter_node

    f = _found(args, meter.set_address, meter_node.set_address, args.new)
    print("meter: the meter now answers at address %d; label it" % f.address)
    print("  " + f.describe())
    _node_after(args, f)
    node_address = getattr(f, "node_address", None)
    if node_address is not None and node_address not in (0xF8, f.address):
        print(
            "meter: WARNING: the node's config.json polls address %d, not %d: set app.meter_address "
            "(phasekit provision) or the node reads no meter" % (node_address, f.address)
        )
    return 0


def _reset(args: argparse.Namespace) -> int:
    from phasekit import meter, meter_node

    f = _found(args, meter.reset_energy, meter_node.reset_energy, args.address)
    print("meter: energy reset")
    print("  " + f.describe())
    _node_after(args, f)
    return 0


def _alarm(args: argparse.Namespace) -> int:
    from phasekit import meter, meter_node

    f = _found(args, meter.set_alarm, meter_node.set_alarm, args.address, args.watts)
    print("meter: alarm threshold %d W" % args.watts)
    print("  " + f.describe())
    _node_after(args, f)
    return 0


def _read(args: argparse.Namespace) -> int:
    from phasekit import meter, meter_node

    f = _found(args, meter.read, meter_node.read, args.address)
    print("  " + f.describe())
    _node_after(args, f)
    return 0
