"""phasenode.compat on both interpreters: the shims behave alike, and const() still folds on MicroPython.

The firmware imports ``const`` from ``phasenode.compat`` instead of from
``micropython`` directly. MicroPython's compiler recognises ``NAME =
const(value)`` by the bare name, so a private constant must still vanish from
the module's globals there; on CPython it stays an ordinary global.
"""

import sys

from phasenode.compat import asyncio, const, sleep_ms, ticks_diff, ticks_ms, ticks_us

_MPY = sys.implementation.name == "micropython"


def test_private_constants_are_folded_on_micropython():
    from phasenode import app, link_rs485, relay

    if _MPY:
        # Folded into the bytecode: no global left behind.
        assert not hasattr(app, "_RELAY_TICK_MS") and not hasattr(link_rs485, "_RX_CHUNK")
        assert not hasattr(relay, "_N_LOCKS")
    else:
        assert app._RELAY_TICK_MS == 200 and link_rs485._RX_CHUNK == 64 and relay._N_LOCKS == 6
    # Public constants stay importable from the module that defines them (and from one that imports them).
    from phasecore import codes

    assert codes.PHASE_A == 0 and codes.LOCK_METER == 0x02 and codes.RELAY_REASONS == 12
    assert relay.PHASE_A == codes.PHASE_A and relay.LOCK_METER == codes.LOCK_METER
    assert const(7) == 7


def test_ticks_count_forward_and_diff_gives_the_elapsed_time():
    a = ticks_ms()
    u = ticks_us()
    assert ticks_diff(ticks_ms(), a) >= 0 and ticks_diff(ticks_us(), u) >= 0
    assert ticks_diff(a + 5, a) == 5 and ticks_diff(a, a + 5) == -5


def test_sleep_ms_suspends_the_task_not_the_loop():
    order = []

    async def slow():
        await sleep_ms(30)
        order.append("slow")

    async def quick():
        await sleep_ms(0)
        order.append("quick")

    async def both():
        await asyncio.gather(slow(), quick())

    t0 = ticks_ms()
    asyncio.run(both())
    took = ticks_diff(ticks_ms(), t0)
    assert order == ["quick", "slow"], order
    assert took >= 25, took
