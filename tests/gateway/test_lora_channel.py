"""The simulated LoRa channel: delivery, collisions, half-duplex, loss, ALOHA capacity."""

import asyncio

from phasegate.lora.channel import SimChannel, simulate_aloha


def test_packet_reaches_every_other_radio_after_its_airtime():
    async def main():
        ch = SimChannel(sf=7)
        a, b, c = ch.radio("a"), ch.radio("b"), ch.radio("c")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await a.send(b"x" * 23)
        took = loop.time() - t0
        return took, await b.recv(), await c.recv(), a.recv_nowait()

    took, got_b, got_c, got_a = asyncio.run(main())
    assert 0.0617 <= took < 0.2
    assert got_b == got_c == (b"x" * 23, "a")
    assert got_a is None


def test_overlapping_transmissions_collide_and_neither_is_heard():
    async def main():
        ch = SimChannel(sf=7)
        a, b, gw = ch.radio("a"), ch.radio("b"), ch.radio("gw")
        await asyncio.gather(a.send(b"one"), b.send(b"two"))
        await asyncio.sleep(0.01)
        return ch.stats, gw.recv_nowait()

    stats, got = asyncio.run(main())
    assert got is None
    assert stats["collided"] == 2 and stats["delivered"] == 0


def test_sequential_transmissions_do_not_collide():
    async def main():
        ch = SimChannel(sf=7, time_scale=0.1)
        a, b, gw = ch.radio("a"), ch.radio("b"), ch.radio("gw")
        await a.send(b"one")
        await b.send(b"two")
        return [gw.recv_nowait(), gw.recv_nowait()]

    assert asyncio.run(main()) == [(b"one", "a"), (b"two", "b")]


def test_loss_is_seeded_and_counted():
    async def main():
        ch = SimChannel(sf=7, loss=0.5, seed=3, time_scale=0.01)
        a, _gw = ch.radio("a"), ch.radio("gw")  # a receiver on the channel, so losses are counted
        for i in range(40):
            await a.send(bytes([i + 1]))
        return ch.stats

    s1, s2 = asyncio.run(main()), asyncio.run(main())
    assert s1 == s2
    assert 5 < s1["lost"] < 35 and s1["lost"] + s1["delivered"] == 40


def test_aloha_matches_theory_and_shows_why_nodes_need_scheduled_slots():
    # Pure ALOHA delivers e^(-2G) of the packets at offered load G. 100 nodes sending a
    # 40-byte frame every minute at SF7 offer G = 0.137: a quarter of the readings would
    # collide, which is why LoRa nodes report in beacon-scheduled slots instead.
    import math

    ok7, util7 = simulate_aloha(100, 60, 40, sf=7)
    assert abs(util7 - 0.137) < 0.01
    assert abs(ok7 - math.exp(-2 * util7)) < 0.03
    ok12, util12 = simulate_aloha(100, 60, 40, sf=12)
    assert util12 > 1.0 and ok12 < 0.01
