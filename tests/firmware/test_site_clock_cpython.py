"""The host HAL's site clock from PHASENODE_CLOCK, and its house-side sense (CPython: environment)."""

import time

import pytest

from node_fixtures import host_board
from phasenode.hal import HalError
from phasenode.hal.host import CLOCK_ENV, HostHal


def test_no_variable_is_the_plain_tick_counter(monkeypatch):
    monkeypatch.delenv(CLOCK_ENV, raising=False)
    ticks, speed = HostHal(host_board(), wiring={}).clock()
    assert speed == 1
    assert abs(ticks() - int(time.monotonic() * 1000)) < 50


def test_the_site_clock_runs_speed_times_faster(monkeypatch):
    monkeypatch.setenv(CLOCK_ENV, '{"speed": 720, "epoch_s": 1700000000, "start_s": 1700000000}')
    ticks, speed = HostHal(host_board(), wiring={}).clock()
    assert speed == 720
    a = ticks()
    time.sleep(0.05)
    b = ticks()
    assert 0.04 * 720 * 1000 < b - a < 0.2 * 720 * 1000


@pytest.mark.parametrize("bad", ["720", "{", '{"speed": 0}', '{"speed": true}', '{"speed": 1e9}'])
def test_a_malformed_clock_is_refused(monkeypatch, bad):
    monkeypatch.setenv(CLOCK_ENV, bad)
    with pytest.raises(HalError, match=CLOCK_ENV):
        HostHal(host_board(), wiring={})


def test_relay_sense_only_when_wired():
    hal = HostHal(host_board(), wiring={})
    assert hal.relay_sense() is None
    hal = HostHal(host_board(), wiring={"sense": True})
    sense = hal.relay_sense()
    pins = hal.relay_pins()
    assert sense() is True  # all open: the house side is dead
    pins[0].value(1)
    assert sense() is False
