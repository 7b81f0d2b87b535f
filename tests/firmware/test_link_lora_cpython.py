"""The node application on LoRa against the simulated air (CPython).

The node is ``phasenode.app.Node`` on a host board with an SX1276: the real
``phaseradio.sx127x`` driver talks over the host SPI to the
register-level simulator (``phasekit.sim.sx127x``) on the simulated channel
(``phasegate.lora.channel``: real airtime, half duplex). Its meter is pymodbus
(``phasekit.sim.pzem``). The Pi is another simulated SX1276 with the same
driver: it hears the uplinks and answers inside the node's receive window.
"""

import asyncio
import time

from node_fixtures import BOOT_NONCE, REPO, T0, Pi, fixed_random, provision, rmtree, tmpdir
from phasecore import frame, msg
from phasecore.airtime import airtime_us
from phasegate.lora.channel import SimChannel
from phasekit.sim.pzem import PzemMeter, PzemSim
from phasekit.sim.sx127x import SimSX1276
from phasenode import board as boardmod
from phasenode import relay as R
from phasenode.app import Node, Settings
from phasenode.hal import for_board
from phasenode.hal.pin_host import RelayBoard
from phaseradio.sx127x import SX127x

FREQ = 865062500


def lora_board():
    """boards/host-virtual-lora.json: the virtual board with an SX1276 on SPI instead of RS-485."""
    return boardmod.load(REPO + "/boards/host-virtual-lora.json")


class PiRadio:
    """The Pi's SX1276 (same driver) on the channel: collects uplinks, answers with frames."""

    def __init__(self, channel, pi):
        self.chip = SimSX1276(channel, "pi")
        self.radio = SX127x(self.chip, freq_hz=FREQ)
        self.pi = pi
        self.uplinks = []  # (monotonic s, kind, body, frame length)

    def start(self):
        self.chip.start()
        self.radio.init()
        self.radio.receive()

    async def next_uplink(self, timeout=8.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pkt = self.radio.read_packet()
            if pkt is not None:
                fs = frame.Decoder(frame.LORA_MAX_PAYLOAD).feed(pkt[0])
                assert len(fs) == 1 and fs[0].src == self.pi.addr and fs[0].dst == frame.MASTER, fs
                kind, _, body = self.pi.open(fs[0])
                self.uplinks.append((time.monotonic(), kind, body, len(pkt[0])))
                return kind, body
            await asyncio.sleep(0.002)
        raise AssertionError("no uplink in %.1f s" % timeout)

    async def downlink(self, data):
        self.radio.send(data)
        while not self.radio.tx_done():
            await asyncio.sleep(0.002)
        self.radio.receive()


async def _with_lora_node(body, **settings):
    root = tmpdir("lora")
    store, config = provision(
        root, relay={"dead_time_ms": 100, "min_dwell_s": 1, "lock_hold_s": 0, "settle_ms": 0}, board="host-lora"
    )
    ch = SimChannel(sf=7, bw_hz=125000)
    node_chip = SimSX1276(ch, "node")
    node_chip.start()
    pi_radio = PiRadio(ch, Pi())
    pi_radio.start()
    try:
        async with PzemSim([PzemMeter(address=1, voltage=230.0, current=5.0, power_factor=0.95)]) as sim:
            relays = RelayBoard()
            hal = for_board(lora_board(), {"meter": sim.port, "lora": node_chip, "relays": relays})
            s = {
                "sample_ms": 300,
                "meter_timeout_ms": 150,
                "heartbeat_s": 3600,
                "lora_duty_pm": 1000,
                "lora_report_min_s": 1,
                "lora_report_max_s": 2,
                "lora_rx_window_ms": 400,
            }
            s.update(settings)
            node = Node(lora_board(), hal, config, store, Settings(**s), random=fixed_random)
            assert node.lora is not None and node.rs485 is None
            node.start()
            try:
                return await body(node, sim, relays, pi_radio, ch)
            finally:
                node.stop()
                await asyncio.sleep(0)
                hal.meter_uart().close()
    finally:
        node_chip.stop()
        pi_radio.chip.stop()
        rmtree(root)


def test_lora_node_reports_by_exception_and_obeys_a_command_sent_in_its_window():
    async def body(node, sim, relays, air, ch):
        pi = air.pi
        # Boot heartbeat and events first, then the first reading.
        kinds = []
        while True:
            kind, b = await air.next_uplink()
            kinds.append(kind)
            if kind == msg.READING:
                break
        assert kinds[0] == msg.HEARTBEAT and b["current_mA"] == 5000 and b["phase"] == msg.PHASE_A, (kinds, b)
        # Answer inside the window: the Pi's time.
        await air.downlink(pi.heartbeat(T0))
        # Steady load: the next report is the max_s heartbeat reading, ~2 s later.
        t0 = time.monotonic()
        kind, b = await air.next_uplink()
        while kind != msg.READING:
            kind, b = await air.next_uplink()
        gap = time.monotonic() - t0
        assert 1.2 < gap < 3.5, gap
        assert node.session.now_s() is not None
        # The Pi answers this uplink with a move; the ack is the next uplink.
        await air.downlink(pi.command(msg.OP_MOVE, phase=msg.PHASE_B, expect_phase=msg.PHASE_A, deadline_s=T0 + 600))
        kind, ack = await air.next_uplink()
        assert kind == msg.ACK and ack["outcome"] == msg.ACK_DONE, (kind, ack)
        await asyncio.sleep(0.3)
        assert relays.closed() == [R.PHASE_B] and not relays.ever_two_closed()
        # A current step is news after min_s; the phase change at once.
        sim.meters[0].set(current=9.0)
        seen = []
        for _ in range(6):
            kind, b = await air.next_uplink()
            if kind == msg.READING:
                seen.append((b["phase"], b["current_mA"]))
                if b["current_mA"] == 9000:
                    break
        assert seen and seen[-1] == (msg.PHASE_B, 9000), seen
        # Every uplink fitted a LoRa packet and took its real airtime.
        assert all(n <= 255 for _, _, _, n in air.uplinks)
        assert ch.stats["collided"] == 0 and node.lora.tx_timeouts == 0

    asyncio.run(_with_lora_node(body))


def test_duty_cycle_spaces_uplinks_on_the_air():
    async def body(node, sim, relays, air, ch):
        # Report as often as the policy allows: the duty cycle (10 %) must be what limits it.
        for _ in range(5):
            await air.next_uplink()
            sim.meters[0].set(current=5.0 + len(air.uplinks))  # every sample is news
        times = [t for t, _, _, _ in air.uplinks]
        sizes = [n for _, _, _, n in air.uplinks]
        for i in range(1, len(times)):
            on_air = airtime_us(sizes[i - 1]) / 1e6
            # Off time 9x the previous packet's airtime, measured from its end to the next one's end.
            assert times[i] - times[i - 1] >= 9 * on_air + airtime_us(sizes[i]) / 1e6 - 0.01, (i, times)
        span = times[-1] - times[0]
        on = sum(airtime_us(n) for n in sizes[1:]) / 1e6
        assert on / span <= 0.105, (on, span)

    asyncio.run(_with_lora_node(body, lora_duty_pm=100, lora_report_min_s=0, sample_ms=200))


def test_polled_mode_serves_the_pis_polled_link():
    from phasegate.lora.link import polled_link
    from phasegate.lora.radio import SimChannelRadio

    async def body(node, sim, relays, air, ch):
        assert node.lora.polled
        pi = air.pi
        air.chip.stop()  # the Pi's side is phasegate's bus over a channel radio here
        bus = polled_link(SimChannelRadio(ch.radio("pi-bus")), [7], retries=2, poll_period_s=1.0)
        bus.open()
        try:
            await asyncio.sleep(1.3)
            kinds = []
            reading = None
            for _ in range(6):
                reply = await bus.poll(7)
                assert reply is not None, bus.stats[7].as_dict()
                kind, _, b = pi.open(reply.frame)
                kinds.append(kind)
                if kind == msg.READING:
                    reading = b
            assert reading is not None and reading["current_mA"] == 5000, kinds
            hb = await bus.request(
                7, pi.sealed(msg.HEARTBEAT, {"uptime_s": 1, "fw": "pi", "time_s": T0, "echo": BOOT_NONCE})
            )
            assert hb is not None and pi.open(hb.frame)[0] == msg.HEARTBEAT
            cmd = pi.command(msg.OP_MOVE, phase=msg.PHASE_C, deadline_s=T0 + 600)
            reply = await bus.request(7, cmd[4:-2])
            kind, _, ack = pi.open(reply.frame)
            assert kind == msg.ACK and ack["outcome"] == msg.ACK_DONE, ack
            await asyncio.sleep(0.3)
            assert relays.closed() == [R.PHASE_C]
            reply = None
            for _ in range(4):
                r = await bus.poll(7)
                k, _, b = pi.open(r.frame)
                if k == msg.READING:
                    reply = b
                    break
            assert reply is not None and reply["phase"] == msg.PHASE_C
            # The node never spoke unasked: every frame it sent answered a poll or a request.
            await asyncio.sleep(0.05)  # the node counts an uplink at TxDone, which it polls every 5 ms
            st = bus.stats[7]
            assert st.timeouts == 0 and node.lora.uplinks == st.replies, (st.as_dict(), node.lora.uplinks)
            assert ch.stats["collided"] == 0
        finally:
            bus.close()

    asyncio.run(_with_lora_node(body, lora_polled=1))


def test_standby_turns_the_receiver_off_on_the_register_level_chip():
    """``SX127x.standby()`` writes RegOpMode LoRa + STDBY: the chip stops hearing the channel."""

    async def body():
        ch = SimChannel(sf=7, bw_hz=125000)
        node_chip = SimSX1276(ch, "node")
        other_chip = SimSX1276(ch, "other")
        node_chip.start()
        other_chip.start()
        node = SX127x(node_chip, freq_hz=FREQ)
        other = SX127x(other_chip, freq_hz=FREQ)
        try:
            node.init()
            other.init()
            assert node_chip.regs[0x01] == 0x81  # init ends in LoRa standby
            node.receive()
            assert node_chip.regs[0x01] == 0x85  # LoRa, RXCONTINUOUS
            other.send(b"heard")
            while not other.tx_done():
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.01)
            assert node.read_packet()[0] == b"heard"
            node.standby()
            assert node_chip.regs[0x01] == 0x81  # LoRa, STDBY (datasheet 6.4, RegOpMode)
            other.send(b"missed")
            while not other.tx_done():
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.01)
            assert node.read_packet() is None, "a radio in standby hears nothing"
        finally:
            node_chip.stop()
            other_chip.stop()

    asyncio.run(body())
