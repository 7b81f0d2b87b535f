"""The node application in-process against real peers (CPython).

The meter is ``phasekit.sim.pzem`` (pymodbus as a PZEM-004T, paced at 9600
baud over a pty); the node reaches it through pyserial (``HostUART``), as a
host HAL wired to a device path does. The RS-485 bus is a pty pair: the node
opens one end with pyserial, the test plays the Pi as bus master on the
other, writing real frames and timing the replies.
"""

import asyncio
import os
import pty
import time
import tty

from node_fixtures import T0, Pi, fixed_random, host_board, provision, rmtree, tmpdir
from phasecore import frame, msg
from phasekit.sim.pzem import PzemMeter, PzemSim
from phasenode import relay as R
from phasenode.app import Node, Settings
from phasenode.hal import for_board
from phasenode.hal.pin_host import RelayBoard

RULES = {"dead_time_ms": 100, "min_dwell_s": 1, "lock_hold_s": 0, "settle_ms": 0}


class Master:
    """The Pi's end of the bus pty: write a frame, wait for the reply frame, time it."""

    def __init__(self, fd):
        self.fd = fd
        self.dec = frame.Decoder()

    async def transact(self, data, timeout=0.25):
        loop = asyncio.get_running_loop()
        os.write(self.fd, data)
        t0 = time.perf_counter()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                chunk = os.read(self.fd, 512)
            except BlockingIOError:
                chunk = b""
            if chunk:
                frames = self.dec.feed(chunk)
                if frames:
                    return frames[0], time.perf_counter() - t0
            await asyncio.sleep(0.0005)
        return None, None


async def _with_node(body, meters=None, limits=None, **settings):
    root = tmpdir("appcpy")
    store, config = provision(root, relay=RULES, limits=limits)
    master_fd, slave_fd = pty.openpty()
    tty.setraw(slave_fd)
    tty.setraw(master_fd)
    os.set_blocking(master_fd, False)
    try:
        async with PzemSim(
            meters or [PzemMeter(address=1, voltage=231.4, current=7.482, power_factor=0.95, energy=1234567)]
        ) as sim:
            relays = RelayBoard()
            hal = for_board(host_board(), {"meter": sim.port, "bus": os.ttyname(slave_fd), "relays": relays})
            s = {"sample_ms": 300, "meter_timeout_ms": 150, "meter_retries": 1, "heartbeat_s": 3600}
            s.update(settings)
            node = Node(host_board(), hal, config, store, Settings(**s), random=fixed_random)
            node.start()
            try:
                return await body(node, sim, relays, Master(master_fd), Pi())
            finally:
                node.stop()
                await asyncio.sleep(0)
                hal.meter_uart().close()
                hal.bus_uart().close()
    finally:
        os.close(master_fd)
        os.close(slave_fd)
        rmtree(root)


async def _reading(master, pi):
    for _ in range(8):
        f, _ = await master.transact(pi.poll())
        if f is not None and f.payload:
            kind, seq, body = pi.open(f)
            if kind == msg.READING:
                return body
    raise AssertionError("no reading")


def test_polls_get_the_meters_values_within_20_ms():
    async def body(node, sim, relays, master, pi):
        await asyncio.sleep(1.0)
        r = await _reading(master, pi)
        assert (r["voltage_dV"], r["current_mA"], r["energy_Wh"], r["pf_centi"]) == (2314, 7482, 1234567, 95), r
        assert r["phase"] == msg.PHASE_A
        lat = []
        for _ in range(40):
            f, dt = await master.transact(pi.poll())
            assert f is not None and f.src == 7 and f.dst == frame.MASTER
            lat.append(dt)
            pi.open(f)  # every reply opens, none is a replay
            await asyncio.sleep(0.01)
        lat.sort()
        # While the meter is read at 9600 baud in the same loop.
        assert sim.meters[0].requests >= 4
        assert lat[int(0.95 * len(lat))] < 0.020, ["%.1f ms" % (x * 1000) for x in lat]
        assert node.rs485.reply_us_max < 20000

    asyncio.run(_with_node(body))


def test_a_sealed_move_goes_through_pymodbus_meter_and_pty_bus():
    async def body(node, sim, relays, master, pi):
        await asyncio.sleep(1.3)
        f, _ = await master.transact(pi.heartbeat(T0))
        assert pi.open(f)[0] == msg.HEARTBEAT
        cmd = pi.command(msg.OP_MOVE, phase=msg.PHASE_B, expect_phase=msg.PHASE_A)
        f, _ = await master.transact(cmd)
        kind, _, ack = pi.open(f)
        assert kind == msg.ACK and ack["outcome"] == msg.ACK_DONE, ack
        # The Pi did not hear the ack and sends the same bytes again: same ack, one move.
        f2, _ = await master.transact(cmd)
        assert f2.payload == f.payload
        await asyncio.sleep(0.4)
        assert relays.closed() == [R.PHASE_B] and not relays.ever_two_closed()
        assert node.relay.stats()["moves_total"] == 1
        r = await _reading(master, pi)
        assert r["phase"] == msg.PHASE_B

    asyncio.run(_with_node(body))


def test_meter_exceptions_and_silence_lock_the_node_out():
    async def body(node, sim, relays, master, pi):
        await asyncio.sleep(0.8)
        sim.meters[0].fail_with = 4  # SERVER DEVICE FAILURE on every request
        await asyncio.sleep(1.6)
        r = await _reading(master, pi)
        assert r["status"] & msg.ST_METER and r["current_mA"] == 0, r
        assert node.meter_errors >= 3 and node.relay.locks & R.LOCK_METER
        sim.meters[0].fail_with = None
        await asyncio.sleep(1.6)
        r = await _reading(master, pi)
        assert not r["status"] & msg.ST_METER and r["current_mA"] == 7482, r

    asyncio.run(_with_node(body, limits={"meter_silent_ms": 1000}))


def test_overvoltage_on_the_meter_blocks_a_move_with_its_reason():
    async def body(node, sim, relays, master, pi):
        await asyncio.sleep(1.3)
        sim.meters[0].set(voltage=262.0)
        await asyncio.sleep(1.0)
        r = await _reading(master, pi)
        assert r["status"] & msg.ST_OVERVOLTAGE, r
        await master.transact(pi.heartbeat(T0))
        f, _ = await master.transact(pi.command(msg.OP_MOVE, phase=msg.PHASE_C))
        _, _, ack = pi.open(f)
        assert (ack["outcome"], ack["reason"]) == (msg.ACK_REFUSED, R.R_LOCKED_OUT), ack
        assert relays.closed() == [R.PHASE_A]

    asyncio.run(_with_node(body))


def test_a_board_whose_radio_has_no_driver_still_restores_and_checks(tmp_path):
    import json as _json

    from node_fixtures import REPO, ScriptedMeter
    from phasenode import board as boardmod

    d = _json.loads(open(REPO + "/boards/host-virtual.json").read())
    d["name"] = "host-sx1262"
    d["capabilities"] = ["lora", "relays", "meter"]
    del d["uarts"]["bus"]
    d["lora"] = {
        "chip": "sx1262",
        "bus": "spi",
        "sck": "sck",
        "mosi": "mosi",
        "miso": "miso",
        "cs": "cs",
        "reset": "rst",
        "irq": "dio1",
        "busy": "busy",
        "freq_hz": 865062500,
        "tx_power_dbm": 14,
    }
    board = boardmod.from_dict(d, "host-sx1262.json")
    root = tmpdir("sx1262")
    try:
        store, config = provision(root, relay=RULES, board="host-sx1262")
        relays = RelayBoard()
        hal = for_board(board, {"meter": ScriptedMeter(), "relays": relays})
        node = Node(
            board,
            hal,
            config,
            store,
            Settings(sample_ms=100, meter_timeout_ms=30, meter_retries=0),
            random=fixed_random,
        )
        assert node.links == [] and "sx1262" in node.local_only

        async def body():
            node.start()
            try:
                await asyncio.sleep(0.4)
            finally:
                node.stop()
                await asyncio.sleep(0)

        asyncio.run(body())
        assert relays.closed() == [R.PHASE_A] and node.checks.valid >= 2
    finally:
        rmtree(root)
