"""The Pi's LoRa radio interface, with the simulated channel and the SX127x HAT behind it.

Everything above this module (``phasegate.lora.link``, ``phasegate.lora_gateway``)
sees one small interface::

    radio = open_radio(cfg.table("lora"))          # or SimChannelRadio(channel.radio("pi"))
    await radio.start()
    await radio.send(payload)                      # returns once the packet has left the antenna
    pkt = await radio.recv()                       # RxPacket: payload, rssi_dbm, snr_db, t (loop time)
    radio.airtime_s(n)                             # time on air of an n-byte packet on this channel
    await radio.close()

Implementations:

- ``SimChannelRadio``: a radio on ``phasegate.lora.channel.SimChannel``
  (airtime, collisions, half duplex, loss), for tests and the simulated site;
  ``SocketChannelRadio`` one on a channel another process serves over a
  Unix socket (``phasekit.sim.lora_hub``), so gateway processes share it.
- ``SX127xRadio``: the SX1276/77/78/79 driver shared with the node
  (``phaseradio.sx127x``) over an SPI object with ``transfer(buf)``.
  On a Pi that is ``SpidevSPI`` (``spidev``, imported only when used, so tests
  and non-Pi machines need neither it nor ``gpiod``); in tests it is the
  register-level simulator ``phasekit.sim.sx127x.SimSX1276``. Packets are
  picked up when DIO0 rises (RxDone/TxDone, datasheet table 18) through a
  ``gpiod`` edge-event descriptor watched by the event loop, or, with no DIO0
  wired, by polling RegIrqFlags every ``poll_s``.

Half duplex: while the radio transmits it hears nothing (the chip is in TX
mode); ``send`` puts it back into continuous receive as soon as TxDone is
set. Pins come from the gateway TOML ``[lora]`` table (BCM numbers), never
from code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from phasecore.airtime import airtime_us
from phasecore.errors import quote
from phasegate.errors import DeviceError
from phaseradio import sx127x as _sx

if TYPE_CHECKING:
    from phasegate.lora.channel import SimChannel, SimRadio

__all__ = (
    "Radio",
    "SPI",
    "RxPacket",
    "SimChannelRadio",
    "SX127xRadio",
    "SocketChannelRadio",
    "SpidevSPI",
    "GpioLines",
    "RadioError",
    "open_radio",
    "recv_or_stop",
)


class RadioError(DeviceError, _sx.RadioError):
    """The Pi's radio cannot be used: no chip answering, no SPI or GPIO, TxDone never set, no such driver.

    Also the driver's ``phaseradio.sx127x.RadioError`` (an OSError), as this
    name always was: ``start()`` raises this class for what the driver
    refuses, so ``except`` either of them (or OSError) still catches it.
    """


class RxPacket:
    """One received LoRa packet."""

    __slots__ = ("payload", "rssi_dbm", "snr_db", "t")

    def __init__(self, payload: bytes, rssi_dbm: float | None, snr_db: float | None, t: float):
        self.payload = payload
        self.rssi_dbm = rssi_dbm
        self.snr_db = snr_db
        self.t = t

    def __repr__(self) -> str:
        return "RxPacket(%d bytes, rssi=%r, snr=%r)" % (len(self.payload), self.rssi_dbm, self.snr_db)


class Radio(Protocol):
    """The interface of the module docstring: ``SimChannelRadio``, ``SX127xRadio``."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def send(self, payload: bytes, /) -> None: ...
    async def recv(self) -> RxPacket: ...
    def airtime_s(self, n: int, /) -> float: ...


async def recv_or_stop(radio: Radio, stopper: asyncio.Future[Any]) -> asyncio.Task[RxPacket] | None:
    """The next ``radio.recv()`` as a done task (``.result()`` is the packet or raises), or None once
    ``stopper`` is done first (the receive is then cancelled)."""
    recv = asyncio.get_running_loop().create_task(radio.recv())
    done, _ = await asyncio.wait((recv, stopper), return_when=asyncio.FIRST_COMPLETED)
    if recv not in done:
        recv.cancel()
        return None
    return recv


class SPI(Protocol):
    """What ``phaseradio.sx127x.SX127x`` talks to the chip through: a full-duplex transfer with chip select."""

    def transfer(self, buf: bytearray, /) -> bytes: ...


class SimChannelRadio:
    """A radio on the simulated channel (``SimChannel.radio(name)``)."""

    def __init__(self, sim_radio: SimRadio):
        self._r = sim_radio
        self.sent = 0
        self.received = 0

    @property
    def name(self) -> str:
        return self._r.name

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def airtime_s(self, n: int) -> float:
        return self._r.channel.airtime_s(n)

    async def send(self, payload: bytes) -> None:
        await self._r.send(payload)
        self.sent += 1

    async def recv(self) -> RxPacket:
        payload, _sender = await self._r.recv()
        self.received += 1
        # The simulated channel has no signal model: no RSSI or SNR to report.
        return RxPacket(payload, None, None, asyncio.get_running_loop().time())


class SocketChannelRadio:
    """A radio on a simulated channel in another process (``phasekit.sim.lora_hub``), over a Unix socket.

    The hub runs a ``SimChannel`` (airtime, collisions, half duplex, loss) and
    gives each connection a radio on it, so a ``phasekit gateway run`` process
    and simulated nodes elsewhere share one channel. Wire: the client names
    itself (one length byte, ASCII), then packets go both ways as a 2-byte
    big-endian length and the payload; an empty packet from the hub says the
    last send has left the (simulated) antenna.
    """

    def __init__(self, path: str, name: str = "pi", sf: int = 7, bw_hz: int = 125000):
        self.path = path
        self.name = name
        self.sf, self.bw_hz = sf, bw_hz
        self.sent = 0
        self.received = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._rx: asyncio.Queue[RxPacket] = asyncio.Queue(256)
        self._done: asyncio.Queue[None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(self.path)
        except OSError as e:
            raise RadioError("[lora] sim_socket %s: cannot connect: %s" % (self.path, e)) from e
        name = self.name.encode("ascii", "replace")[:255]
        self._writer.write(bytes((len(name),)) + name)
        await self._writer.drain()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        reader = self._reader
        assert reader is not None
        try:
            while True:
                head = await reader.readexactly(2)
                n = int.from_bytes(head, "big")
                if n == 0:
                    self._done.put_nowait(None)
                    continue
                payload = await reader.readexactly(n)
                try:
                    self._rx.put_nowait(RxPacket(payload, None, None, asyncio.get_running_loop().time()))
                except asyncio.QueueFull:
                    pass  # a real radio's FIFO overflows the same way
        except (asyncio.IncompleteReadError, OSError):
            return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()

    def airtime_s(self, n: int) -> float:
        return airtime_us(n, sf=self.sf, bw_hz=self.bw_hz) / 1e6

    async def send(self, payload: bytes) -> None:
        if not 0 < len(payload) <= 255:
            raise RadioError("LoRa payload must be 1..255 bytes, got %d" % len(payload))
        writer = self._writer
        if writer is None:
            raise RadioError("radio not started")
        async with self._lock:
            writer.write(len(payload).to_bytes(2, "big") + bytes(payload))
            await writer.drain()
            await self._done.get()
        self.sent += 1

    async def recv(self) -> RxPacket:
        pkt = await self._rx.get()
        self.received += 1
        return pkt


class SX127xRadio:
    """An SX127x behind ``phaseradio.sx127x.SX127x``, driven from the asyncio loop.

    ``driver`` is an ``SX127x`` (not yet initialised); ``lines`` a
    ``GpioLines`` (reset, DIO0) or None; with no DIO0 line the chip's IRQ
    flags are polled every ``poll_s`` seconds.
    """

    def __init__(
        self,
        driver: _sx.SX127x,
        lines: GpioLines | None = None,
        poll_s: float = 0.005,
        queue_size: int = 64,
        tx_timeout_s: float | None = None,
        time_scale: float = 1.0,
    ):
        self.driver = driver
        # < 1 only against a simulated chip on a time-scaled SimChannel (tests, benchmarks).
        self.time_scale = time_scale
        self.lines = lines
        self.poll_s = poll_s
        self.queue_size = queue_size
        self.tx_timeout_s = tx_timeout_s
        self.sent = 0
        self.received = 0
        self.dropped_rx = 0
        # Made by start(), on the running loop.
        self._rx: asyncio.Queue[RxPacket] | None = None
        self._tx = False
        self._task: asyncio.Task[None] | None = None
        self._irq: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def crc_errors(self) -> int:
        return self.driver.crc_errors

    def airtime_s(self, n: int) -> float:
        d = self.driver
        return airtime_us(n, sf=d.sf, bw_hz=d.bw_hz) / 1e6 * self.time_scale

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._rx = asyncio.Queue(self.queue_size)
        self._irq = asyncio.Event()
        if self.lines is not None:
            await self.lines.reset()
        try:
            self.driver.init()
        except _sx.RadioError as e:
            raise RadioError(str(e)) from e
        self.driver.receive()
        if self.lines is not None and self.lines.has_dio0:
            self.lines.watch_dio0(self._loop, self._irq.set)
        self._task = self._loop.create_task(self._service())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.lines is not None:
            self.lines.close()

    async def _wait_irq(self, timeout: float) -> None:
        irq = self._irq
        assert irq is not None  # made by start(), before anything waits on it
        try:
            await asyncio.wait_for(irq.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        irq.clear()

    async def _service(self) -> None:
        # With DIO0 the poll period only bounds the latency of a missed edge.
        period = self.poll_s if self.lines is None or not self.lines.has_dio0 else 0.25
        while True:
            await self._wait_irq(period)
            if self._tx:
                continue
            while True:
                pkt = self.driver.read_packet()
                if pkt is None:
                    break
                self.received += 1
                rx, loop = self._rx, self._loop
                assert rx is not None and loop is not None  # this task is started by start(), which made them
                try:
                    rx.put_nowait(RxPacket(pkt[0], pkt[1], pkt[2], loop.time()))
                except asyncio.QueueFull:
                    self.dropped_rx += 1

    async def send(self, payload: bytes) -> None:
        """Transmit ``payload``; return when TxDone is set, with the chip back in receive."""
        if self._task is None:
            raise RadioError("SX127x radio not started")
        loop = self._loop
        assert loop is not None  # start() set it with _task
        self._tx = True
        try:
            self.driver.send(payload)
            air = self.airtime_s(len(payload))
            deadline = loop.time() + (self.tx_timeout_s or 2 * air + 0.1)
            # Nothing to do until the packet can have left: sleep most of its airtime first.
            await asyncio.sleep(air * 0.9)
            while not self.driver.tx_done():
                if loop.time() > deadline:
                    raise RadioError(
                        "SX127x: TxDone not set %.0f ms after a %d-byte send (check DIO/SPI)"
                        % ((loop.time() - deadline + air) * 1e3, len(payload))
                    )
                await self._wait_irq(min(self.poll_s, 0.002))
            self.sent += 1
        finally:
            self._tx = False
            self.driver.receive()

    async def recv(self) -> RxPacket:
        rx = self._rx
        assert rx is not None, "start() the radio first"
        return await rx.get()


class SpidevSPI:
    """``transfer(buf) -> bytes`` over Linux spidev (``/dev/spidevBUS.DEV``), SPI mode 0.

    ``cs`` is an optional ``GpioLines`` whose chip-select line is driven by
    hand, for HATs whose NSS is not on the kernel's CE0/CE1.
    """

    def __init__(self, bus: int = 0, dev: int = 1, hz: int = 5000000, cs: GpioLines | None = None):
        try:
            import spidev
        except ImportError:
            raise RadioError("the sx127x driver needs the 'spidev' package on the Pi (pip install spidev)") from None
        self._spi = spidev.SpiDev()
        try:
            self._spi.open(bus, dev)
        except OSError as e:
            raise RadioError("cannot open /dev/spidev%d.%d: %s (enable SPI with raspi-config)" % (bus, dev, e)) from e
        self._spi.max_speed_hz = hz
        self._spi.mode = 0  # SX127x datasheet 4.3: CPOL = 0, CPHA = 0
        self._cs = cs
        if cs is not None:
            self._spi.no_cs = True

    def transfer(self, buf: bytearray) -> bytes:
        if self._cs is not None:
            self._cs.select(True)
        try:
            return bytes(self._spi.xfer2(list(buf)))
        finally:
            if self._cs is not None:
                self._cs.select(False)

    def close(self) -> None:
        self._spi.close()


class GpioLines:
    """RESET, DIO0 and an optional hand-driven NSS of an SX127x HAT, through libgpiod (``gpiod`` 2.x)."""

    def __init__(self, chip: str = "/dev/gpiochip0", reset_pin: int = -1, dio0_pin: int = -1, cs_pin: int = -1):
        try:
            import gpiod
            from gpiod.line import Direction, Edge, Value
        except ImportError:
            raise RadioError("the sx127x driver needs the 'gpiod' package (libgpiod 2.x bindings) on the Pi") from None
        self._Value = Value
        cfg: dict[int, gpiod.LineSettings] = {}
        if reset_pin >= 0:
            cfg[reset_pin] = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.ACTIVE)
        if cs_pin >= 0:
            cfg[cs_pin] = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.ACTIVE)
        if dio0_pin >= 0:
            cfg[dio0_pin] = gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.RISING)
        try:
            self._req = gpiod.request_lines(chip, consumer="phasekit-lora", config=cfg) if cfg else None
        except OSError as e:
            raise RadioError("cannot claim GPIO lines %s on %s: %s" % (sorted(cfg), chip, e)) from e
        self.reset_pin = reset_pin
        self.dio0_pin = dio0_pin
        self.cs_pin = cs_pin
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def has_dio0(self) -> bool:
        return self.dio0_pin >= 0

    async def reset(self) -> None:
        if self.reset_pin < 0:
            return
        req = self._req
        assert req is not None  # the reset line is requested when reset_pin >= 0
        # SX1276 datasheet 7.2.2: NRESET low for more than 100 us, then 5 ms before the chip is ready.
        req.set_value(self.reset_pin, self._Value.INACTIVE)
        await asyncio.sleep(0.001)
        req.set_value(self.reset_pin, self._Value.ACTIVE)
        await asyncio.sleep(0.006)

    def select(self, on: bool) -> None:
        req = self._req
        assert req is not None  # used as chip select only when cs_pin >= 0, whose line is requested
        req.set_value(self.cs_pin, self._Value.INACTIVE if on else self._Value.ACTIVE)

    def watch_dio0(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
        req = self._req
        assert req is not None  # called when has_dio0, whose line is requested
        self._loop = loop

        def on_edge() -> None:
            req.read_edge_events()
            callback()

        loop.add_reader(req.fd, on_edge)

    def close(self) -> None:
        if self._req is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._req.fd)
            self._req.release()
            self._req = None


def open_radio(
    table: Mapping[str, Any], channel: SimChannel | None = None, name: str = "pi", spi: SPI | None = None
) -> SimChannelRadio | SocketChannelRadio | SX127xRadio:
    """The radio the ``[lora]`` table describes.

    ``driver = "sim"`` needs ``channel`` (a ``SimChannel``), or ``sim_socket``
    (a channel another process serves: ``SocketChannelRadio``); ``"sx127x"``
    opens spidev and the GPIO lines unless ``spi`` (anything with
    ``transfer``) is given, e.g. the register-level simulator in tests.
    """
    driver = table.get("driver", "sim")
    if driver == "sim" and channel is None and table.get("sim_socket"):
        return SocketChannelRadio(table["sim_socket"], name, sf=table.get("sf", 7), bw_hz=table.get("bw_hz", 125000))
    if driver == "sim":
        if channel is None:
            raise RadioError("[lora] driver = 'sim' needs a simulated channel (tests and the simulated site only)")
        return SimChannelRadio(channel.radio(name))
    if driver == "sx127x":
        lines = None
        if spi is None:
            lines = GpioLines(
                table.get("gpio_chip", "/dev/gpiochip0"),
                table.get("reset_pin", -1),
                table.get("dio0_pin", -1),
                table.get("cs_pin", -1),
            )
            spi = SpidevSPI(
                table.get("spi_bus", 0),
                table.get("spi_dev", 1),
                table.get("spi_hz", 5000000),
                lines if table.get("cs_pin", -1) >= 0 else None,
            )
        chip = _sx.SX127x(
            spi,
            freq_hz=table["freq_hz"],
            sf=table["sf"],
            bw_hz=table["bw_hz"],
            cr=table.get("cr", 1),
            tx_power_dbm=table.get("tx_power_dbm", 14),
            sync_word=table.get("sync_word", 0x12),
        )
        return SX127xRadio(chip, lines)
    raise RadioError("[lora] driver = %s is not implemented on the Pi (use 'sx127x' or 'sim')" % (quote(driver),))
