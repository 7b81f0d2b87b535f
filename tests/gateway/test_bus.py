"""The RS-485 bus master against simulated nodes that speak the real bytes over a pty pair.

The nodes (``phasekit.sim.bus_nodes``) seal real readings and acks with
``phasecore.seal`` under their own node keys; the Pi side is the real
``phasegate.bus`` over pyserial plus ``phasegate.registry`` opening every reply.
"""

import asyncio
import os
import random
import threading
import time

import pytest

from phasecore import frame, msg
from phasegate.bus import Bus, BusError, SerialLine, line_time_s
from phasegate.registry import CommandError, Registry
from phasekit.sim.bus_nodes import SimBus, SimNode

SITE_KEY = bytes(range(32))  # synthetic test key (docs/security.md section 7)


def make_registry(tmp_path, addrs, **kw):
    return Registry(SITE_KEY, addrs, tmp_path / "pi-seq.txt", tmp_path / "registry.json", **kw)


def run_bus(nodes, body, timeout_s=0.04, retries=1, baud=115200, pace=False, turnaround_s=0.002, **bus_kw):
    """Run ``body(bus, sim)`` with a bus master on a SimBus of ``nodes``."""

    async def main():
        with SimBus(nodes, baud=baud, pace=pace, turnaround_s=turnaround_s) as sim:
            bus = Bus(
                SerialLine(sim.port, baud),
                [n.addr for n in nodes],
                reply_timeout_s=timeout_s,
                retries=retries,
                **bus_kw,
            )
            async with bus:
                return await body(bus, sim)

    return asyncio.run(main())


def test_round_polls_every_node_and_every_reply_opens(tmp_path):
    nodes = [SimNode(a, SITE_KEY, phase=a % 3) for a in range(1, 9)]
    reg = make_registry(tmp_path, [n.addr for n in nodes])

    async def body(bus, sim):
        out = []
        for _ in range(3):
            for addr, r in await bus.poll_round():
                out.append(reg.receive(addr, r.frame.payload, r.t))
        return out, bus.stats, bus.counters

    got, stats, counters = run_bus(nodes, body)
    assert len(got) == 24 and all(m is not None and m.kind == msg.READING for m in got)
    assert [m.body["phase"] for m in got[:8]] == [a % 3 for a in range(1, 9)]
    for n in nodes:
        st = stats[n.addr]
        assert st.polls == 3 and st.replies == 3 and st.timeouts == 0 and st.retries == 0
        assert st.bytes_tx == 3 * frame.OVERHEAD
        assert 3 * 36 <= st.bytes_rx <= 3 * 40  # a sealed reading is at most 40 bytes on the wire
        assert 0.0 <= st.last_rtt_ms < 40.0  # about the node's 2 ms turnaround
        assert reg.nodes[n.addr].counters["readings"] == 3
    assert counters["rounds"] == 3 and counters["late"] == 0 and counters["noise_bytes"] == 0


def test_silent_node_times_out_after_retries_and_backs_off(tmp_path):
    nodes = [SimNode(1, SITE_KEY), SimNode(2, SITE_KEY, mode="silent"), SimNode(3, SITE_KEY)]

    async def body(bus, sim):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await bus.poll(2)
        took = loop.time() - t0
        rounds = [await bus.poll_round() for _ in range(8)]
        return r, took, rounds, bus.stats

    r, took, rounds, stats = run_bus(nodes, body, timeout_s=0.03, retries=2)
    assert r is None
    # three attempts of 30 ms each, plus a little processing
    assert 0.09 <= took < 0.3
    assert all(dict(rd)[1] is not None and dict(rd)[3] is not None for rd in rounds)
    st = stats[2]
    assert st.replies == 0 and st.retries >= 2
    # After 3 failed polls in a row it is polled once (no retries) every 4th round only.
    polled_in = [2 in dict(rd) for rd in rounds]
    assert polled_in[:2] == [True, True] and polled_in.count(True) < 6
    assert st.polls == st.timeouts and st.consecutive_failures >= 3


def test_backed_off_node_is_polled_normally_once_it_answers_again(tmp_path):
    node = SimNode(4, SITE_KEY, mode="silent")

    async def body(bus, sim):
        for _ in range(3):
            await bus.poll(4)
        node.mode = "ok"
        seen = []
        for _ in range(6):
            seen.append(dict(await bus.poll_round()).get(4, "skipped"))
        return seen, bus.stats[4]

    seen, st = run_bus([node], body, timeout_s=0.02, retries=0)
    got = [s for s in seen if s != "skipped"]
    assert got and got[0] is not None
    # once it answered, every later round polls it again
    first = seen.index(got[0])
    assert all(s not in ("skipped", None) for s in seen[first:])
    assert st.consecutive_failures == 0


def test_late_reply_is_not_taken_for_the_next_nodes_reply(tmp_path):
    nodes = [SimNode(1, SITE_KEY, mode="slow", slow_s=0.05), SimNode(2, SITE_KEY)]
    reg = make_registry(tmp_path, [1, 2])

    async def body(bus, sim):
        r1 = await bus.poll(1)
        r2 = await bus.poll(2)
        await asyncio.sleep(0.06)
        r2b = await bus.poll(2)
        return r1, r2, r2b, dict(bus.counters)

    r1, r2, r2b, counters = run_bus(nodes, body, timeout_s=0.02, retries=0)
    assert r1 is None
    assert r2.frame.src == 2 and r2b.frame.src == 2
    assert reg.receive(2, r2.frame.payload, 0) is not None
    assert counters["late"] >= 1


def test_noise_before_reply_is_skipped_and_counted():
    nodes = [SimNode(1, SITE_KEY, mode="noise", noise_bytes=60), SimNode(2, SITE_KEY)]

    async def body(bus, sim):
        return [await bus.poll_round() for _ in range(5)], bus.stats

    rounds, stats = run_bus(nodes, body)
    assert all(r is not None for rd in rounds for _, r in rd)
    assert stats[1].noise_bytes >= 5 * 50  # most of the noise is counted as skipped
    assert stats[1].retries == 0
    assert stats[2].noise_bytes == 0


def test_corrupted_reply_fails_its_crc_is_counted_and_retried_early():
    node = SimNode(1, SITE_KEY, mode="corrupt")

    async def body(bus, sim):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await bus.poll(1)
        return r, loop.time() - t0, bus.stats[1]

    # A 500 ms reply timeout: the attempt must end one quiet gap (20 ms) after the bad frame, not at 500 ms.
    r, took, st = run_bus([node], body, timeout_s=0.5, retries=1)
    assert r is None
    assert st.crc_errors >= 2 and st.timeouts == 2 and st.retries == 1
    assert took < 0.2


def test_line_noise_does_not_stall_the_loop_or_stop_the_polling():
    nodes = [SimNode(a, SITE_KEY) for a in range(1, 6)]
    rng = random.Random(7)

    async def body(bus, sim):
        stop = threading.Event()
        injected = [0]

        def noise():
            while not stop.is_set():
                burst = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 30)))
                if rng.random() < 0.3:
                    burst = b"\xa5\xff" + burst  # a false SYNC with an oversize length
                sim.inject(burst)
                injected[0] += len(burst)
                time.sleep(rng.uniform(0.001, 0.01))

        t = threading.Thread(target=noise)
        t.start()
        lags = []

        async def ticker():
            loop = asyncio.get_running_loop()
            while True:
                t0 = loop.time()
                await asyncio.sleep(0.005)
                lags.append(loop.time() - t0 - 0.005)

        tick = asyncio.create_task(ticker())
        try:
            rounds = [await bus.poll_round() for _ in range(20)]
        finally:
            stop.set()
            t.join()
            tick.cancel()
        return rounds, bus.stats, bus.counters, max(lags), injected[0]

    rounds, stats, counters, max_lag, injected = run_bus(nodes, body, timeout_s=0.03, retries=2)
    answered = sum(r is not None for rd in rounds for _, r in rd)
    assert answered >= 0.9 * 100  # noise collides with some replies; retries recover most
    noise = counters["noise_bytes"] + sum(s.noise_bytes for s in stats.values())
    assert injected > 500 and noise >= 0.5 * injected  # what came off the line was judged and counted
    assert max_lag < 0.05  # the loop never blocked on the serial line


def test_replayed_reading_is_refused_and_counted(tmp_path):
    node = SimNode(5, SITE_KEY, mode="replay")
    reg = make_registry(tmp_path, [5])

    async def body(bus, sim):
        return [reg.receive(5, (await bus.poll(5)).frame.payload, float(i)) for i in range(5)]

    got = run_bus([node], body)
    assert [m is not None for m in got] == [True, True, False, False, False]
    c = reg.nodes[5].counters
    assert c["replay"] == 3 and c["readings"] == 2 and c["bad_tag"] == 0


def test_node_with_the_wrong_key_is_refused_and_counted(tmp_path, caplog):
    nodes = [SimNode(6, SITE_KEY, mode="wrong_key"), SimNode(7, SITE_KEY)]
    reg = make_registry(tmp_path, [6, 7])

    async def body(bus, sim):
        return [(a, reg.receive(a, r.frame.payload, 1.0)) for _ in range(3) for a, r in await bus.poll_round()]

    with caplog.at_level("WARNING"):
        got = run_bus(nodes, body)
    assert all(m is None for a, m in got if a == 6)
    assert all(m is not None for a, m in got if a == 7)
    assert reg.nodes[6].counters["bad_tag"] == 3 and reg.nodes[6].reading is None
    reg.update(2.0)
    assert reg.nodes[6].liveness == "offline" and reg.nodes[7].liveness == "online"
    assert "node 6: frame refused (bad_tag" in caplog.text
    assert SITE_KEY.hex() not in caplog.text


def test_command_is_sealed_acknowledged_and_changes_the_nodes_phase(tmp_path):
    node = SimNode(9, SITE_KEY, phase=msg.PHASE_A)
    reg = make_registry(tmp_path, [9])

    async def body(bus, sim):
        ack = await reg.command(
            bus, 9, {"id": 41, "op": msg.OP_MOVE, "deadline_s": 2000000000, "phase": msg.PHASE_C}, 1.0
        )
        reading = reg.receive(9, (await bus.poll(9)).frame.payload, 2.0)
        return ack, reading, bus.stats[9]

    ack, reading, st = run_bus([node], body)
    assert ack.kind == msg.ACK and ack.body["id"] == 41 and ack.body["outcome"] == msg.ACK_DONE
    assert ack.body["phase"] == msg.PHASE_C and reading.body["phase"] == msg.PHASE_C
    assert node.commands[0]["op"] == msg.OP_MOVE
    assert st.requests == 1 and st.request_replies == 1
    assert reg.nodes[9].counters["acks"] == 1


def test_lost_ack_is_recovered_by_resending_the_same_command_which_runs_once(tmp_path):
    node = SimNode(9, SITE_KEY)
    node.drop_acks = 1
    reg = make_registry(tmp_path, [9])

    async def body(bus, sim):
        ack = await reg.command(bus, 9, {"id": 7, "op": msg.OP_MOVE, "deadline_s": 2000000000, "phase": 1}, 1.0)
        return ack, bus.stats[9]

    ack, st = run_bus([node], body, retries=1)
    assert ack.body["id"] == 7 and st.requests == 2 and st.retries == 1
    assert len(node.commands) == 1  # the node executed it once; the retry was the same bytes


def test_command_to_a_silent_node_raises_command_error(tmp_path):
    node = SimNode(3, SITE_KEY, mode="silent")
    reg = make_registry(tmp_path, [3])

    async def body(bus, sim):
        with pytest.raises(CommandError, match="no reply to command 5"):
            await reg.command(bus, 3, {"id": 5, "op": msg.OP_REPORT, "deadline_s": 1}, 1.0)
        return bus.stats[3]

    st = run_bus([node], body, timeout_s=0.02, retries=1)
    assert st.requests == 2 and st.timeouts == 2


def test_empty_reply_is_a_reply_without_a_reading(tmp_path):
    node = SimNode(2, SITE_KEY, mode="empty")

    async def body(bus, sim):
        return await bus.poll(2), bus.stats[2]

    r, st = run_bus([node], body)
    assert r.frame.payload == b"" and st.empty_replies == 1


def test_run_schedule_calls_back_each_round_and_serves_requests_between_polls(tmp_path):
    nodes = [SimNode(a, SITE_KEY) for a in (1, 2, 3)]
    reg = make_registry(tmp_path, [1, 2, 3])

    async def body(bus, sim):
        seen = []
        stop = asyncio.Event()

        async def on_reply(addr, r):
            seen.append((addr, reg.receive(addr, r.frame.payload, r.t) is not None))
            if len(seen) == 9:
                stop.set()

        runner = asyncio.create_task(bus.run(stop, on_reply))
        await asyncio.sleep(0.01)
        ack = await reg.command(bus, 2, {"id": 1, "op": msg.OP_LOCK, "deadline_s": 5}, 0.0)
        await asyncio.wait_for(runner, 5)
        return seen, ack, bus.counters

    seen, ack, counters = run_bus(nodes, body, poll_period_s=0.05)
    assert seen == [(a, True) for a in (1, 2, 3)] * 3
    assert ack.body["outcome"] == msg.ACK_DONE
    assert counters["rounds"] >= 2 and counters["last_round_s"] < 0.05


def test_missing_port_is_a_clear_bus_error():
    async def main():
        with pytest.raises(BusError, match="cannot open /dev/nonexistent-rs485"):
            async with Bus(SerialLine("/dev/nonexistent-rs485", 9600), [1]):
                pass

    asyncio.run(main())


def test_port_without_a_file_descriptor_is_refused():
    async def main():
        with pytest.raises(BusError, match="no file descriptor"):
            async with Bus(SerialLine("loop://", 9600), [1]):
                pass

    asyncio.run(main())


def test_line_that_goes_away_raises_bus_error_not_a_hang():
    async def main():
        with SimBus([SimNode(1, SITE_KEY)]) as sim:
            bus = Bus(SerialLine(sim.port, 115200), [1], reply_timeout_s=0.05)
            async with bus:
                assert await bus.poll(1) is not None
                sim.stop()  # the far end closes: the master's reads fail with EIO
                with pytest.raises(BusError):
                    for _ in range(5):
                        await bus.poll(1)

    asyncio.run(asyncio.wait_for(main(), 10))


def test_paced_line_round_time_follows_the_baud_rate():
    nodes = [SimNode(a, SITE_KEY) for a in range(1, 11)]

    async def body(bus, sim):
        await bus.poll_round()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rd = await bus.poll_round()
        return loop.time() - t0, rd, bus.stats

    took, rd, stats = run_bus(nodes, body, baud=9600, pace=True, turnaround_s=0.005, timeout_s=0.05)
    assert all(r is not None for _, r in rd)
    model = sum(line_time_s(2 * frame.OVERHEAD + len(r.frame.payload), 9600) + 0.005 for _, r in rd)
    # the line model is the floor; processing adds little on top
    assert model <= took < model * 1.3


def test_from_config_builds_the_bus_from_the_bus_table():
    table = {
        "port": "/dev/ttyUSB7",
        "baud": 9600,
        "nodes": [3, 1, 2],
        "reply_timeout_ms": 40,
        "retries": 2,
        "poll_period_s": 5,
    }
    bus = Bus.from_config(table)
    assert bus.addrs == [3, 1, 2] and bus.reply_timeout_s == 0.04 and bus.retries == 2
    assert bus.line.baud == 9600 and bus.line.port == "/dev/ttyUSB7"
    with pytest.raises(ValueError, match="outside 1..247"):
        Bus(SerialLine("x", 9600), [0])
    with pytest.raises(BusError, match="de = 'rts'"):
        SerialLine("x", 9600, de="rts")
    assert os.path.exists("/dev/ptmx")
