"""The installer's meter tools through an installed node: the node's own meter, read and set over its USB port.

``phasekit meter scan|set-address|reset-energy|set-alarm|read --node PORT``
does what the ``--port`` form (``phasekit.meter``) does, without rewiring:
the laptop talks to the node's REPL with mpremote (``phasekit.node.deploy.Device``,
the layer ``phasekit deploy`` uses; ``PORT`` is what mpremote's ``connect``
takes: ``/dev/ttyUSB0``, or ``socket://HOST:PORT`` for the virtual board),
and a short snippet (``_SNIPPET``) runs the one operation **on the node**, with
the firmware already there: it loads ``/board.json``, opens the board's meter
UART through the node's HAL (``phasenode.hal.for_board``: ``machine.UART`` with
the board file's pins on an ESP32, the pty in ``PHASENODE_WIRING`` on the
virtual board) and uses the node's PZEM driver (``phasenode.drivers.pzem``),
exactly the requests the ``--port`` form sends. It prints one line,
``PHASEKIT-METER {json}``, which this module turns into the same ``Found``
values and ``MeterToolError`` messages as the direct path.

What the node and the house go through (docs/hardware/pzem004t.md):

1. mpremote enters the raw REPL, which interrupts the node application
   (ctrl-C). The relay outputs keep their level: the house stays on its phase
   while the operation runs. The snippet arms and feeds the board's watchdog
   (where the port lets a second ``machine.WDT`` be made), so if the laptop
   goes away half-way the watchdog restarts the node within ``watchdog_ms``
   (as below);
2. the operation runs (a read takes well under a second, a full scan of
   1..247 about 25-50 s);
3. the tool resets the node, always, also after a failed operation: an
   ESP32 gets ``machine.reset()`` (a soft reset from the raw REPL would not
   run ``main.py``), the virtual board a soft reset, which ends and restarts
   its process. The node boots as after any reset (docs/relay-safety.md,
   "Power cuts, reboots and the restore"): every relay opens at once, and
   after the dead time (``dead_time_ms``, default 2 s) the relay controller
   closes the committed phase again. The house sees **one break** of the boot
   time plus the dead time, and comes back on the **same phase**: the restore
   is not a move (no budget used, nothing written), but the minimum dwell
   starts again from that make.

The tool does not wait for the node to come back (asking the REPL would
interrupt the application again). A node in an unconfirmed firmware trial
(docs/ota.md) treats that reset as a failed trial and rolls back: wait until an
update is confirmed before using ``--node``.

Public: ``scan``, ``set_address``, ``reset_energy``, ``set_alarm``, ``read``, ``MARKER``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from phasecore.errors import quote
from phasekit.meter import GENERAL, Found, MeterToolError

__all__ = ("scan", "set_address", "reset_energy", "set_alarm", "read", "MARKER", "NodeFound")

MARKER = "PHASEKIT-METER "

# Runs on the node (MicroPython, the node's firmware importable). Kept to what
# every deployed firmware has: board.load, hal.for_board, Pzem's public methods.
# asyncio.new_event_loop() drops the interrupted application's tasks (MicroPython
# keeps one global task queue), so only this job runs on the meter UART.
_SNIPPET = """
import json
def _pk_meter(a):
    try:
        import asyncio
        from phasenode import board as B, hal as H
        from phasenode.drivers.pzem import Pzem, METER_ERRORS
    except ImportError as e:
        return {"error": "firmware", "detail": str(e)}
    try:
        b = B.load("board.json")
    except Exception as e:
        return {"error": "board", "detail": str(e)}
    if b.meter_uart is None:
        return {"error": "no-meter", "detail": b.name}
    try:
        h = H.for_board(b)
        u = h.meter_uart()
    except Exception as e:
        return {"error": "uart", "detail": "%s: %s" % (type(e).__name__, e)}
    out = {"board": b.name, "baud": b.meter_uart.baud}
    try:
        with open("config.json") as f:
            out["node_address"] = json.load(f).get("app", {}).get("meter_address", 248)
    except Exception:
        out["node_address"] = None
    try:
        w = h.watchdog()
    except Exception:
        w = None
    def feed():
        if w is not None:
            w.feed()
    t = a["timeout_ms"]
    async def probe(x, retries):
        m = Pzem(u, address=x, timeout_ms=t, retries=retries)
        try:
            await m.read_address()
        except METER_ERRORS:
            return None
        try:
            r = await m.read()
            r = [r.voltage_dv, r.current_ma, r.power_dw, r.energy_wh, r.frequency_dhz, r.pf_centi, 1 if r.alarm else 0]
        except METER_ERRORS:
            r = None
        try:
            al = await m.read_alarm_threshold()
        except METER_ERRORS:
            al = None
        return [x, r, al]
    async def job():
        op = a["op"]
        feed()
        if op == "scan":
            try:
                out["alone"] = await Pzem(u, address=248, timeout_ms=2 * t, retries=1).read_address()
            except METER_ERRORS:
                out["alone"] = None
            found = []
            for x in range(a["first"], a["last"] + 1):
                feed()
                f = await probe(x, 0)
                if f:
                    found.append(f)
            out["found"] = found
            return
        m = Pzem(u, address=a["address"], timeout_ms=t, retries=2)
        step = "op"
        try:
            if op == "set-address":
                step = "general"
                out["old"] = await m.read_address()
                step = "op"
                feed()
                await m.set_address(a["new"])
            elif op == "reset-energy":
                await m.reset_energy()
            elif op == "set-alarm":
                await m.set_alarm_threshold(a["watts"])
        except METER_ERRORS as e:
            out["error"] = step
            out["detail"] = str(e)
            return
        feed()
        out["found"] = [await probe(m.address, 2)]
    asyncio.new_event_loop()
    asyncio.run(job())
    feed()
    return out
try:
    _pk_r = _pk_meter(json.loads(@ARGS@))
except Exception as e:
    _pk_r = {"error": "crash", "detail": "%s: %s" % (type(e).__name__, e)}
print("PHASEKIT-METER " + json.dumps(_pk_r))
"""


class NodeFound(Found):
    """A ``Found`` read through a node, with the node's ``board`` name and the address its
    application polls (``node_address``: config.json ``app.meter_address``, 248 = 0xF8, None unknown)."""

    def __init__(self, address: int, reading: Any, alarm_w: int | None, board: str, node_address: int | None):
        super().__init__(address, reading, alarm_w)
        self.board = board
        self.node_address = node_address


def snippet(args: dict[str, Any]) -> str:
    """The code the node runs for one operation (``args``: op and its numbers)."""
    return _SNIPPET.replace("@ARGS@", repr(json.dumps(args, sort_keys=True)))


def _found(item: Any, board: str, node_address: int | None) -> NodeFound:
    from phasenode.drivers.pzem import Measurement

    address, raw, alarm = item
    m = None
    if raw is not None:
        m = Measurement()
        m.voltage_dv, m.current_ma, m.power_dw, m.energy_wh, m.frequency_dhz, m.pf_centi, alarm_bit = raw
        m.alarm = bool(alarm_bit)
    return NodeFound(address, m, alarm, board, node_address)


def _parse(port: str, out: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            try:
                obj = json.loads(line[len(MARKER) :])
            except ValueError:
                break
            if isinstance(obj, dict):
                return obj
            break
    raise MeterToolError("unexpected answer from the node on %s: %s" % (port, quote(out[-300:])))


_NODE_ERRORS = {
    "firmware": "the node on %s has no phasenode firmware (%s): deploy it with `phasekit deploy`",
    "board": "the node on %s cannot load its board file: %s",
    "no-meter": "the node on %s has no meter: its board file (%s) names no meter UART",
    "uart": "the node on %s cannot open its meter UART: %s",
    "crash": "the meter snippet failed on the node on %s: %s",
}


def run_on_node(
    port: str,
    args: dict[str, Any],
    timeout: float = 30.0,
    echo: Callable[[str], object] | None = None,
) -> dict[str, Any]:
    """Run one operation on the node at ``port`` and reset it; the node's answer (a dict), or MeterToolError.

    The node is reset whatever the operation's outcome (module docstring); when
    mpremote failed, the reset is tried and its own failure not reported.
    """
    from phasekit.node.deploy import DeployError, Device

    dev = Device(port, timeout=timeout, echo=echo or (lambda _s: None))
    try:
        out = dev.exec(snippet(args), "reaching the node's meter through mpremote", timeout=timeout)
    except DeployError as e:
        # mpremote may have reached the node (and stopped its application) before it failed or timed out:
        # try the reset all the same; on a node it never reached, that fails too and says nothing new.
        try:
            _reset(dev)
        except MeterToolError:
            pass
        raise MeterToolError(str(e)) from None
    try:
        answer = _parse(port, out)
    finally:
        _reset(dev)
    kind = answer.get("error")
    if kind in _NODE_ERRORS:
        raise MeterToolError(_NODE_ERRORS[kind] % (port, quote(answer.get("detail"))))
    return answer


def _reset(dev: Any) -> None:
    from phasekit.node.deploy import DeployError

    try:
        dev.reset("restarting the node")
    except DeployError as e:
        raise MeterToolError(
            "the operation ran, but the node on %s was not restarted (%s): its application is stopped; "
            "press its reset button or power it off and on" % (dev.port, e)
        ) from None


def _timeout(timeout_ms: int, requests: int) -> float:
    return 20.0 + requests * 3 * timeout_ms / 1000


def _one(port: str, answer: dict[str, Any], what: str) -> NodeFound:
    found = answer.get("found") or [None]
    if found[0] is None:
        raise MeterToolError(what)
    return _found(found[0], str(answer.get("board")), answer.get("node_address"))


def scan(
    port: str,
    first: int = 1,
    last: int = 247,
    timeout_ms: int = 100,
) -> tuple[int | None, list[Found]]:
    """``(address through 0xF8 or None, meters found at first..last)`` on the node's meter UART."""
    if not 1 <= first <= last <= 247:
        raise MeterToolError("scan range %d..%d: addresses are 1..247" % (first, last))
    a = run_on_node(
        port,
        {"op": "scan", "first": first, "last": last, "timeout_ms": timeout_ms},
        _timeout(timeout_ms, last - first + 4),
    )
    board, node_address = str(a.get("board")), a.get("node_address")
    found: list[Found] = [_found(f, board, node_address) for f in a.get("found") or []]
    return a.get("alone"), found


def set_address(port: str, new: int, timeout_ms: int = 200) -> NodeFound:
    """Give the node's one meter address ``new`` (through 0xF8) and read it back there.

    The application's own meter address (config.json ``app.meter_address``) is
    not changed: ``NodeFound.node_address`` says which address it polls.
    """
    if not 1 <= new <= 247:
        raise MeterToolError("address %d: a PZEM address is 1..247" % new)
    a = run_on_node(
        port, {"op": "set-address", "address": GENERAL, "new": new, "timeout_ms": timeout_ms}, _timeout(timeout_ms, 12)
    )
    if a.get("error") == "general":
        raise MeterToolError(
            "no usable answer at the general address 0xF8 on the node's meter line (%s): the node's meter is "
            "missing, unpowered, or it shares its line with another meter" % a.get("detail")
        )
    if a.get("error") == "op":
        raise MeterToolError(
            "the meter (address %s) refused the new address %d: %s" % (quote(a.get("old")), new, a.get("detail"))
        )
    return _one(port, a, "the meter took address %d but does not answer there" % new)


def reset_energy(port: str, address: int = GENERAL, timeout_ms: int = 200) -> NodeFound:
    """Zero the energy counter of the node's meter at ``address`` (0xF8: the one meter on its line)."""
    a = run_on_node(
        port, {"op": "reset-energy", "address": address, "timeout_ms": timeout_ms}, _timeout(timeout_ms, 12)
    )
    if a.get("error"):
        raise MeterToolError("meter %d: energy not reset: %s" % (address, a.get("detail")))
    return _one(port, a, "meter %d reset its energy but does not answer a reading" % address)


def set_alarm(port: str, address: int, watts: int, timeout_ms: int = 200) -> NodeFound:
    """Set the power alarm threshold (0..25000 W) of the node's meter at ``address`` and read it back."""
    if not 0 <= watts <= 25000:
        raise MeterToolError("alarm threshold %d W: the PZEM takes 0..25000 W" % watts)
    a = run_on_node(
        port,
        {"op": "set-alarm", "address": address, "watts": watts, "timeout_ms": timeout_ms},
        _timeout(timeout_ms, 12),
    )
    if a.get("error"):
        raise MeterToolError("meter %d: alarm threshold not set: %s" % (address, a.get("detail")))
    f = _one(port, a, "meter %d: the threshold reads back as None" % address)
    if f.alarm_w != watts:
        raise MeterToolError("meter %d: the threshold reads back as %s" % (address, quote(f.alarm_w)))
    return f


def read(port: str, address: int = GENERAL, timeout_ms: int = 200) -> NodeFound:
    """One reading (and the alarm threshold) of the node's meter at ``address``."""
    a = run_on_node(port, {"op": "read", "address": address, "timeout_ms": timeout_ms}, _timeout(timeout_ms, 9))
    return _one(port, a, "no meter answers at address %d on the node's meter line" % address)
