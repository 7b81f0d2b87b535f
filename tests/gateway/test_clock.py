"""phasegate.clock: site time for the simulated site, the [clock] table, and the periods it scales."""

import asyncio

import pytest

from phasegate import config
from phasegate.clock import Clock
from phasegate.errors import ConfigError


class FakeWall:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


def test_site_time_is_epoch_plus_scaled_wall_time():
    wall = FakeWall(1000.0)
    c = Clock(speed=720, epoch_s=1_700_000_000, start_s=1000.0, wall=wall)
    assert c.wall() == 1_700_000_000
    wall.t = 1000.5
    assert c.wall() == pytest.approx(1_700_000_000 + 360)
    assert c.real(3600) == pytest.approx(5.0)
    assert c.real(-1) == 0
    assert not c.is_wall


def test_default_and_empty_table_are_the_wall_clock():
    wall = FakeWall(1234.0)
    c = Clock(wall=wall)
    assert c.is_wall and c.wall() == 1234.0 and c.real(10) == 10
    c = Clock.from_table({"speed": 1, "epoch_s": 0, "start_s": 0})
    assert c.is_wall
    assert Clock.from_table(None).speed == 1.0


@pytest.mark.parametrize("speed", [0, 0.5, 10001, True, "2"])
def test_bad_speed_is_refused(speed):
    with pytest.raises(ValueError):
        Clock(speed=speed)


def test_monotonic_runs_speed_times_the_loop_clock():
    async def main():
        c = Clock(speed=100)
        loop = asyncio.get_running_loop()
        a, la = c.monotonic(), loop.time()
        await asyncio.sleep(0.05)
        b, lb = c.monotonic(), loop.time()
        return (b - a) / (lb - la)

    assert asyncio.run(main()) == pytest.approx(100, rel=1e-3)


def _write(tmp_path, extra):
    (tmp_path / "site.key").write_text("00" * 32)
    (tmp_path / "site.key").chmod(0o600)
    p = tmp_path / "gw.toml"
    p.write_text(
        '[site]\nid = "s"\ntransformer = "t"\nkey_file = "site.key"\n'
        '[bus]\nport = "/dev/null"\nnodes = [1]\n[store]\npath = "b.db"\n' + extra
    )
    return p


def test_the_gateway_config_takes_a_clock_table(tmp_path):
    cfg = config.load(_write(tmp_path, "[clock]\nspeed = 720\nepoch_s = 1700000000\nstart_s = 1700000000.5\n"))
    c = Clock.from_table(cfg.table("clock"))
    assert c.speed == 720 and c.epoch_s == 1_700_000_000 and c.start_s == 1_700_000_000.5


@pytest.mark.parametrize(
    "bad", ["speed = 0", "speed = 20000", "speed = nan", 'speed = "fast"', "epoch_s = -1", "x = 1"]
)
def test_a_bad_clock_table_names_the_key(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"\[clock\]"):
        config.load(_write(tmp_path, "[clock]\n" + bad + "\n"))


def test_the_bus_waits_its_polling_period_in_site_time():
    """A polling period of 36 site seconds at 720x is a 50 ms wait between rounds."""
    from phasegate.bus import Bus

    class NullLine:
        port = "null"
        baud = 115200

        def open(self):
            pass

        def close(self):
            pass

        def take(self):
            return b""

        async def send(self, data):
            return asyncio.get_running_loop().time()

        async def receive(self, deadline):
            await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
            return b"", asyncio.get_running_loop().time()

    async def main():
        bus = Bus(NullLine(), [1], reply_timeout_s=0.001, retries=0, poll_period_s=36, speed=720, backoff_after=1000)
        bus.open()
        stop = asyncio.Event()
        starts = []

        def on_reply(addr, reply):
            starts.append(asyncio.get_running_loop().time())

        task = asyncio.ensure_future(bus.run(stop, on_reply))
        await asyncio.sleep(0.33)
        stop.set()
        await task
        return starts

    starts = asyncio.run(main())
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) >= 3, gaps
    # Never sooner than the period (36 site s = 50 ms); typically the period (a loaded machine adds latency).
    assert all(g > 0.045 for g in gaps), gaps
    assert 0.045 < sorted(gaps)[len(gaps) // 2] < 0.1, gaps
