"""A register-level SX1276 simulator on a simulated LoRa channel.

It answers the same SPI bytes a real SX1276 does (register reads and writes
with address auto-increment, the FIFO behind register 0x00, mode changes,
IRQ flags cleared by writing ones), so the real ``phaseradio.sx127x``
driver runs unchanged against it. The air is ``phasegate.lora.channel``: a
packet reaches another chip only if both are on the channel's frequency,
spreading factor, bandwidth and sync word, exactly as radios behave.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from phaseradio import sx127x as reg

if TYPE_CHECKING:
    from phasegate.lora.channel import SimChannel

_BW_FROM_CODE = {7: 125000, 8: 250000, 9: 500000, 6: 62500}


class SimSX1276:
    """One simulated chip: ``transfer(buf)`` is the SPI bus; ``start()`` inside a running loop."""

    def __init__(self, channel: SimChannel, name: str, rssi_dbm: int = -90, snr_db: float = 8.0):
        self.channel = channel
        self.radio = channel.radio(name)
        self.regs = bytearray(0x80)
        self.fifo = bytearray(256)
        self.regs[reg.REG_VERSION] = reg.SILICON_VERSION
        self.regs[reg.REG_OP_MODE] = 0x09  # reset value: FSK, low-frequency mode, standby
        self.regs[reg.REG_SYNC_WORD] = 0x12
        self.rssi_dbm = rssi_dbm
        self.snr_db = snr_db
        self.transfers = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening on the channel (call inside the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._receive_loop())

    def stop(self) -> None:
        """Stop listening."""
        if self._task:
            self._task.cancel()

    # the SPI bus
    def transfer(self, buf: bytes | bytearray) -> bytes:
        """One SPI transaction: ``buf[0]`` the address (bit 7: write), then data; returns the bytes clocked out."""
        self.transfers += 1
        out = bytearray(len(buf))
        addr = buf[0] & 0x7F
        write = buf[0] & 0x80
        for i in range(1, len(buf)):
            if addr == reg.REG_FIFO:
                ptr = self.regs[reg.REG_FIFO_ADDR_PTR]
                if write:
                    self.fifo[ptr] = buf[i]
                else:
                    out[i] = self.fifo[ptr]
                self.regs[reg.REG_FIFO_ADDR_PTR] = (ptr + 1) & 0xFF
                continue
            if write:
                self._write(addr, buf[i])
            else:
                out[i] = self.regs[addr]
            addr = (addr + 1) & 0x7F
        return bytes(out)

    def _write(self, addr: int, value: int) -> None:
        if addr == reg.REG_VERSION:
            return  # read-only
        if addr == reg.REG_IRQ_FLAGS:
            self.regs[addr] &= ~value & 0xFF  # write one to clear
            return
        if addr == reg.REG_OP_MODE:
            old = self.regs[addr]
            # The LoRa/FSK bit can only change in sleep mode (datasheet, RegOpMode).
            if (old ^ value) & reg.MODE_LONG_RANGE and (old & 0x07) != reg.MODE_SLEEP:
                value = (value & ~reg.MODE_LONG_RANGE) | (old & reg.MODE_LONG_RANGE)
            self.regs[addr] = value
            if self._lora() and (value & 0x07) == reg.MODE_TX:
                asyncio.get_running_loop().create_task(self._transmit())
            return
        self.regs[addr] = value

    def _lora(self) -> bool:
        return bool(self.regs[reg.REG_OP_MODE] & reg.MODE_LONG_RANGE)

    def _mode(self) -> int:
        return self.regs[reg.REG_OP_MODE] & 0x07

    def _on_channel(self) -> bool:
        r = self.regs
        frf = (r[reg.REG_FRF_MSB] << 16) | (r[reg.REG_FRF_MSB + 1] << 8) | r[reg.REG_FRF_MSB + 2]
        freq = frf * 32000000 // (1 << 19)
        return (
            self._lora()
            and abs(freq - self.channel.freq_hz) < 1000
            and r[reg.REG_MODEM_CONFIG2] >> 4 == self.channel.sf
            and _BW_FROM_CODE.get(r[reg.REG_MODEM_CONFIG1] >> 4) == self.channel.bw_hz
            and r[reg.REG_SYNC_WORD] == self.channel.sync_word
        )

    async def _transmit(self) -> None:
        n = self.regs[reg.REG_PAYLOAD_LENGTH]
        base = self.regs[reg.REG_FIFO_TX_BASE]
        payload = bytes(self.fifo[(base + i) & 0xFF] for i in range(n))
        if self._on_channel() and n:
            await self.radio.send(payload)
        else:
            # Off-channel: the packet goes out where nobody listens; it takes its airtime all the same.
            await asyncio.sleep(self.channel.airtime_s(max(n, 1)))
        self.regs[reg.REG_IRQ_FLAGS] |= reg.IRQ_TX_DONE
        self.regs[reg.REG_OP_MODE] = (self.regs[reg.REG_OP_MODE] & ~0x07) | reg.MODE_STDBY

    async def _receive_loop(self) -> None:
        while True:
            payload, _sender = await self.radio.recv()
            if not (self._on_channel() and self._mode() == reg.MODE_RX_CONTINUOUS):
                continue
            base = self.regs[reg.REG_FIFO_RX_BASE]
            for i, b in enumerate(payload):
                self.fifo[(base + i) & 0xFF] = b
            self.regs[reg.REG_FIFO_RX_CURRENT] = base
            self.regs[reg.REG_RX_NB_BYTES] = len(payload)
            self.regs[reg.REG_PKT_RSSI] = max(0, min(255, self.rssi_dbm + 157))
            self.regs[reg.REG_PKT_SNR] = int(self.snr_db * 4) & 0xFF
            self.regs[reg.REG_IRQ_FLAGS] |= reg.IRQ_RX_DONE
