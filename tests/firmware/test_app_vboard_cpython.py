"""The real node firmware on the virtual board: poll-answer latency and a sealed move (CPython drives it).

``phasekit deploy``'s staging compiles firmware and core to .mpy for the
host target and lays out the flash with the board file and a provisioned
config; ``phasekit.sim.virtual_board`` runs it under the MicroPython unix port
with boot.py and main.py, exactly as a chip boots. Its meter is pymodbus
(9600 baud, paced), its bus UART a paced 115200-baud null-modem pty whose
other end this test drives as the Pi.

Latency is measured at the master: from the write of a poll to the first
byte of the reply. The cable delivers each chunk after its line time, so the
node's own answer time is that minus the poll's and the reply's line time;
issue 3 asks for under 20 ms from the end of the request.
"""

import asyncio
import gc
import os
import time

from node_fixtures import T0, Pi, provision, rmtree, tmpdir
from phasecore import frame, msg
from phasekit import repo
from phasekit.node import deploy
from phasekit.sim import virtual_board as vb_mod
from phasekit.sim.pzem import PzemMeter
from phasenode import relay as R

BAUD = 115200
RULES = {"dead_time_ms": 200, "min_dwell_s": 1, "lock_hold_s": 0, "settle_ms": 0}


def line_s(n):
    return n * 10 / BAUD


class BusMaster:
    """The Pi's end of the cable: raw fd, replies timed on arrival with add_reader."""

    def __init__(self, path):
        import tty

        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.dec = frame.Decoder()
        self._waiter = None
        self._first = None
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def _readable(self):
        try:
            data = os.read(self.fd, 1024)
        except (BlockingIOError, OSError):
            return
        if self._first is None:
            self._first = time.perf_counter()
        frames = self.dec.feed(data)
        if frames and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(frames[0])

    async def transact(self, data, timeout=0.5):
        """Write ``data``; ``(frame, seconds from the write to the reply's first byte)`` or (None, None)."""
        self._waiter = asyncio.get_running_loop().create_future()
        self._first = None
        t0 = time.perf_counter()
        os.write(self.fd, data)
        try:
            f = await asyncio.wait_for(self._waiter, timeout)
        except asyncio.TimeoutError:
            return None, None
        return f, self._first - t0

    def close(self):
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


def test_real_firmware_answers_polls_within_20_ms_and_moves_on_a_sealed_command():
    async def main():
        cfg_dir = tmpdir("vbcfg")
        flash = tmpdir("vbflash")
        rmtree(flash)
        try:
            provision(cfg_dir, relay=RULES)
            deploy.stage(str(repo.board_path("host-virtual")), cfg_dir, flash, host=True)
            vb = vb_mod.VirtualBoard(
                flash, meters=[PzemMeter(address=1, voltage=231.4, current=7.482, power_factor=0.95, energy=1234567)]
            )
            async with vb:
                await vb.wait_for(b"phasenode: running", timeout=30)
                master = BusMaster(vb.bus_port)
                try:
                    return await exchange(vb, master)
                finally:
                    master.close()
        finally:
            rmtree(cfg_dir)
            if os.path.isdir(flash):
                rmtree(flash)

    async def exchange(vb, master):
        pi = Pi()
        poll = pi.poll()
        node_ms = []
        readings = []
        await asyncio.sleep(1.5)  # restore, first samples
        for _ in range(150):
            f, dt = await master.transact(poll)
            assert f is not None, "the node did not answer a poll:\n" + vb.console[-600:].decode("utf-8", "replace")
            node_ms.append((dt - line_s(len(poll)) - line_s(len(f.payload) + frame.OVERHEAD)) * 1000)
            if f.payload:
                kind, _, body = pi.open(f)
                if kind == msg.READING:
                    readings.append(body)
            await asyncio.sleep(0.02)
        # The real firmware draws a random boot nonce: the first heartbeat's answer carries it, and
        # only a heartbeat echoing it gives the node its clock (docs/protocol.md section 3).
        f, _ = await master.transact(pi.heartbeat(T0, echo=None))
        nonce = pi.open(f)[2].get("boot_nonce")
        assert nonce is not None, "a node fresh from boot asks for an echo"
        f, _ = await master.transact(pi.heartbeat(T0, echo=nonce))
        hb = pi.open(f)
        assert "boot_nonce" not in hb[2], "echoed: the node has its clock"
        f, _ = await master.transact(pi.command(msg.OP_MOVE, phase=msg.PHASE_C, expect_phase=msg.PHASE_A))
        ack = pi.open(f)
        await asyncio.sleep(0.6)
        after = None
        for _ in range(10):
            f, _ = await master.transact(poll)
            if f is not None and f.payload:
                kind, _, body = pi.open(f)
                if kind == msg.READING:
                    after = body
                    break
        return node_ms, readings, hb, ack, after, vb.relays_closed(), vb.relay_overlaps, list(vb.resets)

    # The master's own pauses count against the node here: no collector pauses in this process while it times.
    gc.collect()
    gc.disable()
    try:
        node_ms, readings, hb, ack, after, closed, overlaps, resets = asyncio.run(asyncio.wait_for(main(), 120))
    finally:
        gc.enable()
    node_ms.sort()
    p50, p99, worst = node_ms[len(node_ms) // 2], node_ms[int(0.99 * len(node_ms))], node_ms[-1]
    print(
        "virtual board poll answer: p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d polls"
        % (p50, p99, worst, len(node_ms))
    )
    assert p99 < 20.0, (p50, p99, worst)
    r = readings[-1]
    assert (r["voltage_dV"], r["current_mA"], r["energy_Wh"], r["pf_centi"]) == (2314, 7482, 1234567, 95), r
    assert hb[0] == msg.HEARTBEAT and hb[2]["time_s"] == T0
    assert ack[0] == msg.ACK and ack[2]["outcome"] == msg.ACK_DONE, ack
    assert after is not None and after["phase"] == msg.PHASE_C, after
    assert closed == [R.PHASE_C] and overlaps == 0
    assert resets == [], resets  # the watchdog was fed all along
