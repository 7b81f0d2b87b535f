"""An operator pauses and resumes the balancer of a whole transformer (PAUSE/RESUME sealed for node 0).

The real stack as in test_controller.py (a bus master on a pty, sealed
simulated nodes, the balancer planning) with the real operator gate: while
paused no round plans a move, but an operator MOVE still goes through; the
pause outlives a restart, and a damaged state file leaves the balancer paused.
"""

import asyncio
import logging

from controller_support import SITE_KEY, ListJournal, StepClock, balancer_config, poll

from phasecore import balancer, codes, msg
from phasegate.bus import Bus, SerialLine
from phasegate.controller import (
    EV_PAUSED,
    EV_RESUMED,
    OPERATOR_REASONS,
    Controller,
    read_pause_state,
    write_pause_state,
)
from phasegate.operator import OperatorGate, operator_key, reset_state, seal_command
from phasegate.registry import Registry
from phasekit.sim.bus_nodes import SimBus, SimNode

KEY, IV = operator_key(SITE_KEY, "ops-1")


def _nodes():
    # Six houses all on phase A: the balancer wants moves at once.
    return [SimNode(a, SITE_KEY, phase=msg.PHASE_A, current_mA=5000) for a in range(1, 7)]


def _controller(tmp_path, bus, addrs, clock, journal):
    reg = Registry(SITE_KEY, addrs, tmp_path / "pi-seq.txt", tmp_path / "registry.json")
    ctl = Controller(
        reg,
        balancer.Balancer(balancer_config()),
        {"bus": bus},
        journal=journal,
        clock=clock,
        verify_s=30,
        summary_period_s=120,
        pause_path=tmp_path / "balancer.json",
    )
    if not (tmp_path / "operators.json").exists():
        reset_state(tmp_path / "operators.json", 0)
    ctl.operator_gate = OperatorGate(SITE_KEY, "s1", "tx1", ["ops-1"], tmp_path / "operators.json", nodes=addrs)
    return ctl


def _site(tmp_path, body):
    async def main():
        nodes = _nodes()
        with SimBus(nodes, baud=115200) as sim:
            addrs = [n.addr for n in nodes]
            bus = Bus(SerialLine(sim.port, 115200), addrs, reply_timeout_s=0.1, retries=1, poll_period_s=10)
            clock = StepClock()
            journal = ListJournal()
            async with bus:
                return await body(bus, addrs, clock, journal, sim)

    return asyncio.run(asyncio.wait_for(main(), 60))


class _Seq:
    def __init__(self):
        self.n = 0

    def seal(self, clock, node, op, **kw):
        self.n += 1
        fields = {"id": self.n, "op": op, "deadline_s": int(clock.wall()) + 60, **kw}
        return seal_command(KEY, IV, "ops-1", self.n, "s1", "tx1", node, fields)


def test_a_paused_balancer_moves_nothing_but_an_operator_move_goes_and_resume_balances_again(tmp_path):
    async def body(bus, addrs, clock, journal, sim):
        ctl = _controller(tmp_path, bus, addrs, clock, journal)
        ops = _Seq()
        assert not ctl.paused
        assert await ctl.on_operator_command(ops.seal(clock, 0, msg.OP_PAUSE)) is True
        assert ctl.paused and read_pause_state(tmp_path / "balancer.json")[0] is True
        (paused,) = journal.events(EV_PAUSED)
        assert paused[1] == 0 and not paused[4]
        (ack,) = journal.of("pi_ack")
        assert ack[1]["op"] == msg.OP_PAUSE and ack[2]["outcome"] == msg.ACK_DONE
        for _ in range(4):  # unbalanced rounds: nothing planned while paused, polling goes on
            await poll(ctl, bus, clock)
            await ctl.balance_round()
        assert ctl.stats["moves_planned"] == 0 and ctl.stats["rounds"] == 4
        assert not [c for n in sim.nodes.values() for c in n.commands]
        assert ctl.stats["readings"] >= 6 * 4
        assert ctl._period.summary(ctl, clock.monotonic())["flags"] & 4  # summary flag bit 2: paused
        # An operator MOVE still goes through the node's safety while the balancer is paused.
        assert await ctl.on_operator_command(ops.seal(clock, 3, msg.OP_MOVE, phase=msg.PHASE_C)) is True
        assert sim.nodes[3].phase == msg.PHASE_C
        # A second pause is answered done, with no second event.
        assert await ctl.on_operator_command(ops.seal(clock, 0, msg.OP_PAUSE)) is True
        assert len(journal.events(EV_PAUSED)) == 1
        # Wrong scope at the gate: a LOCK for node 0 and a PAUSE for a node change nothing.
        assert ctl.on_operator_command(ops.seal(clock, 0, msg.OP_LOCK)) is None
        assert ctl.on_operator_command(ops.seal(clock, 2, msg.OP_RESUME)) is None
        assert ctl.paused and ctl.stats["operator_refused"] == 2
        refusal = journal.events(codes.EV_OPERATOR_REFUSED)[0]
        assert refusal[1] == 0 and refusal[3] == OPERATOR_REASONS.index("wrong_scope")
        clock.t += 100
        assert await ctl.on_operator_command(ops.seal(clock, 0, msg.OP_RESUME)) is True
        assert not ctl.paused and read_pause_state(tmp_path / "balancer.json") == (False, None)
        (resumed,) = journal.events(EV_RESUMED)
        assert resumed[3] >= 100  # seconds it was paused
        await poll(ctl, bus, clock)
        await ctl.balance_round()
        assert ctl.stats["moves_planned"] > 0
        # Node commands were journaled as before; the Pi's own answers as pi_ack records.
        assert [a[1]["op"] for a in journal.of("pi_ack")] == [msg.OP_PAUSE, msg.OP_PAUSE, msg.OP_RESUME]

    _site(tmp_path, body)


def test_the_pause_outlives_a_restart_and_a_damaged_state_file_stays_paused(tmp_path, caplog):
    async def body(bus, addrs, clock, journal, sim):
        ctl = _controller(tmp_path, bus, addrs, clock, journal)
        ops = _Seq()
        assert await ctl.on_operator_command(ops.seal(clock, 0, msg.OP_PAUSE)) is True
        since = read_pause_state(tmp_path / "balancer.json")[1]
        assert since == int(clock.wall())
        # A restart: the new controller comes up paused and plans nothing.
        again = _controller(tmp_path, bus, addrs, clock, ListJournal())
        assert again.paused and again.paused_since == since
        for _ in range(3):
            await poll(again, bus, clock)
            await again.balance_round()
        assert again.stats["moves_planned"] == 0
        # Damage: a flipped value with a stale CRC, truncation, garbage, a folder in its place: paused, logged.
        path = tmp_path / "balancer.json"
        write_pause_state(path, False, None)
        good = path.read_text()
        for damaged in (good.replace("false", "true"), good[:-5], "\x00" * 30, '{"format": 1}'):
            path.write_text(damaged)
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="phasegate.controller"):
                c = _controller(tmp_path, bus, addrs, clock, ListJournal())
            assert c.paused, damaged
            assert any("stays paused" in r.getMessage() for r in caplog.records)
        # An operator's RESUME repairs it.
        j = ListJournal()
        c = _controller(tmp_path, bus, addrs, clock, j)
        ops.n += 100
        assert await c.on_operator_command(ops.seal(clock, 0, msg.OP_RESUME)) is True
        assert not c.paused and read_pause_state(path) == (False, None)
        assert len(j.events(EV_RESUMED)) == 1 and j.events(EV_RESUMED)[0][3] == 0  # since not known
        # A missing file is the first start: not paused.
        path.unlink()
        assert not _controller(tmp_path, bus, addrs, clock, ListJournal()).paused

    _site(tmp_path, body)


def test_a_pause_that_cannot_be_saved_still_pauses_and_a_resume_that_cannot_stays_paused(tmp_path):
    async def body(bus, addrs, clock, journal, sim):
        ctl = _controller(tmp_path, bus, addrs, clock, journal)
        ops = _Seq()
        (tmp_path / "balancer.json.tmp").mkdir()  # the atomic write's temporary file cannot be created
        assert await ctl.on_operator_command(ops.seal(clock, 0, msg.OP_PAUSE)) is False
        assert ctl.paused  # the safe side
        assert journal.of("pi_ack")[-1][2] == {
            "id": 1,
            "outcome": msg.ACK_FAILED,
            "reason": codes.R_PERSIST,
            "phase": msg.PHASE_NONE,
        }
        assert await ctl.on_operator_command(ops.seal(clock, 0, msg.OP_RESUME)) is False
        assert ctl.paused and journal.events(EV_RESUMED) == []
        (tmp_path / "balancer.json.tmp").rmdir()
        assert await ctl.on_operator_command(ops.seal(clock, 0, msg.OP_RESUME)) is True
        assert not ctl.paused

    _site(tmp_path, body)
