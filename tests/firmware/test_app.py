"""The node application built from board + config + store, running under asyncio (both interpreters).

``phasenode.app.Node`` is built exactly as ``startup.main`` builds it: the
host board file, the host HAL wired to a scripted PZEM-004T line, a bus line
and the simulated relay board, the real file store. The loop then runs in
real time for a second or two while the test plays the Pi on the bus.
"""

from node_fixtures import T0, Pi, ScriptedMeter, Wire, fixed_random, host_board, provision, rmtree, tmpdir
from phasecore import msg
from phasenode import relay as R
from phasenode.app import AppError, Node, Settings
from phasenode.compat import asyncio, sleep_ms
from phasenode.hal import for_board
from phasenode.hal.pin_host import RelayBoard
from portable import raises

RULES = {"dead_time_ms": 100, "min_dwell_s": 1, "lock_hold_s": 0, "settle_ms": 0}
FAST = dict(sample_ms=100, meter_timeout_ms=30, meter_retries=0, heartbeat_s=3600)


class Rig:
    def __init__(self, key=True, limits=None, **settings):
        self.root = tmpdir("app")
        self.store, self.config = provision(self.root, relay=RULES, limits=limits)
        if not key:
            import os

            os.remove(self.root + "/node.key")
        self.meter = ScriptedMeter()
        self.bus = Wire()
        self.relays = RelayBoard(active_high=True)
        self.hal = for_board(host_board(), {"meter": self.meter, "bus": self.bus, "relays": self.relays})
        s = dict(FAST)
        s.update(settings)
        self.node = Node(host_board(), self.hal, self.config, self.store, Settings(**s), random=fixed_random)
        self.pi = Pi()

    def run(self, body):
        async def main():
            self.node.start()
            try:
                return await body()
            finally:
                self.node.stop()
                await sleep_ms(0)

        try:
            return asyncio.run(main())
        finally:
            rmtree(self.root)

    async def ask(self, data, wait_ms=60):
        """Put a frame on the bus, wait for the node's reply; the opened replies."""
        self.bus.inject(data)
        await sleep_ms(wait_ms)
        return self.pi.replies(self.bus)

    async def reading(self):
        """Poll until a reading comes (queued heartbeats and events come first)."""
        for _ in range(8):
            for kind, _seq, body in await self.ask(self.pi.poll()):
                if kind == msg.READING:
                    return body
        raise AssertionError("no reading in 8 polls")


def test_node_restores_samples_and_answers_polls_with_the_meter_values():
    rig = Rig()

    async def body():
        await sleep_ms(400)
        assert rig.relays.closed() == [R.PHASE_A], "the home phase is restored after the dead time"
        rig.meter.set(v_dV=2314, i_mA=7482, e_Wh=1234567, f_dHz=499, pf=95)
        await sleep_ms(250)
        r = await rig.reading()
        assert (r["voltage_dV"], r["current_mA"], r["energy_Wh"], r["frequency_dHz"], r["pf_centi"]) == (
            2314,
            7482,
            1234567,
            499,
            95,
        ), r
        assert r["phase"] == msg.PHASE_A and r["status"] & msg.ST_LOCKED_MASK == 0, r
        n = rig.node
        assert n.cycles >= 5 and n.meter_errors == 0
        assert n.wdt.feeds >= 1 and n.unhealthy == 0
        assert n.rs485.reply_us_max < 20000, n.rs485.reply_us_max

    rig.run(body)


def test_overcurrent_from_the_meter_shows_in_the_status_and_blocks_moves():
    rig = Rig(limits={"overcurrent_ma": 10000})

    async def body():
        await sleep_ms(300)
        rig.meter.set(i_mA=12000)
        await sleep_ms(400)
        r = await rig.reading()
        assert r["status"] & msg.ST_OVERCURRENT, r
        await rig.ask(rig.pi.heartbeat(T0))
        acks = [b for k, s, b in await rig.ask(rig.pi.command(msg.OP_MOVE, phase=msg.PHASE_B)) if k == msg.ACK]
        assert acks and acks[0]["reason"] == R.R_LOCKED_OUT, acks
        assert rig.relays.closed() == [R.PHASE_A]

    rig.run(body)


def test_a_command_on_the_bus_moves_the_house_through_the_running_loop():
    rig = Rig()

    async def body():
        await sleep_ms(1300)  # restore + the 1 s minimum dwell
        kinds = [k for k, s, b in await rig.ask(rig.pi.heartbeat(T0))]
        assert kinds == [msg.HEARTBEAT], kinds
        out = await rig.ask(rig.pi.command(msg.OP_MOVE, phase=msg.PHASE_C, expect_phase=msg.PHASE_A))
        assert out[0][0] == msg.ACK and out[0][2]["outcome"] == msg.ACK_DONE, out
        await sleep_ms(300)
        assert rig.relays.closed() == [R.PHASE_C] and not rig.relays.ever_two_closed()
        r = await rig.reading()
        assert r["phase"] == msg.PHASE_C and not r["status"] & msg.ST_SWITCHING, r
        # The relay's MOVED event reaches the Pi as an event message.
        codes = []
        for _ in range(6):
            codes += [b["code"] for k, s, b in await rig.ask(rig.pi.poll()) if k == msg.EVENT]
        assert R.EV_MOVED in codes, codes

    rig.run(body)


def test_the_watchdog_is_fed_only_while_every_task_runs():
    rig = Rig()

    async def body():
        await sleep_ms(700)
        feeds = rig.node.wdt.feeds
        assert feeds >= 2
        # The bus task dies (as an uncaught error would kill it): feeding stops at once.
        rig.node._tasks[-1].cancel()
        await sleep_ms(600)
        stopped_at = rig.node.wdt.feeds
        await sleep_ms(600)
        assert rig.node.wdt.feeds == stopped_at and rig.node.unhealthy >= 2
        assert stopped_at <= feeds + 1

    rig.run(body)


def test_without_its_key_the_node_runs_local_only():
    rig = Rig(key=False)
    assert rig.node.local_only and "node.key" in rig.node.local_only
    assert rig.node.links == [] and rig.node.session is None

    async def body():
        await sleep_ms(400)
        assert rig.relays.closed() == [R.PHASE_A], "relay restore and checks run without a link"
        assert rig.node.cycles >= 2 and rig.node.wdt.feeds >= 1
        assert rig.bus.writes == []

    rig.run(body)


def test_settings_are_validated_with_their_names():
    assert Settings().sample_ms == 2000
    e = raises(AppError, Settings, sample_ms=10)
    assert "app.sample_ms" in str(e)
    e = raises(AppError, Settings, poll_rate=3)
    assert "app.poll_rate" in str(e)
    raises(AppError, Settings, lora_report_min_s=400, lora_report_max_s=300)
    raises(AppError, Settings, sample_ms=True)
    assert Settings(**Settings(sample_ms=500).as_dict()).sample_ms == 500

    class Cfg:
        app = {"sample_ms": 1500}

    assert Settings.from_config(Cfg()).sample_ms == 1500
