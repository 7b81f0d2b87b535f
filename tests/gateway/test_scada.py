"""The SCADA Modbus TCP view: documented map, scaling, unknowns, read-only."""

import asyncio
import re
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient

from phasegate.scada import REGISTERS, SIZE, UNKNOWN, ScadaState, encode, server
from phasekit.testing.broker import free_port

DOC = Path(__file__).resolve().parents[2] / "docs" / "scada.md"


def test_doc_table_matches_the_register_map():
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in DOC.read_text().splitlines()
        if re.match(r"^\| \d+ \|", line)
    ]
    assert [(int(a), n, u, d) for a, n, u, d in rows] == [(a, n, u, d) for a, n, _, u, d in REGISTERS]


def test_encode_scales_saturates_and_marks_unknown():
    s = ScadaState()
    s.update(current_a=123.46, cuf=0.153, nodes_online=97, backlog=10**6, meter_ok=True)
    s.updated_s = 0x12345678
    regs = encode(s)
    assert len(regs) == SIZE
    assert regs[0] == 1
    assert regs[1] == 1235 and regs[5] == 153 and regs[9] == 97
    assert regs[16] == UNKNOWN - 1
    assert regs[14] == 1
    assert regs[2] == UNKNOWN  # phase B never set
    assert (regs[17], regs[18]) == (0x1234, 0x5678)


def test_scada_reads_over_modbus_tcp_and_cannot_write():
    async def main():
        state = ScadaState()
        state.update(current_a=100.0, current_b=90.0, current_c=80.0, nodes_online=3)
        port = free_port()
        srv = server(state, port=port)
        task = asyncio.create_task(srv.serve_forever())
        await asyncio.sleep(0.2)
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        await client.connect()
        try:
            rr = await client.read_input_registers(0, count=SIZE, device_id=1)
            assert not rr.isError()
            assert rr.registers[1:4] == [1000, 900, 800]
            state.update(current_a=50.0)
            rr = await client.read_input_registers(1, count=1, device_id=1)
            assert rr.registers == [500]
            wr = await client.write_register(1, 7, device_id=1)
            assert wr.isError()
        finally:
            client.close()
            await srv.shutdown()
            task.cancel()

    asyncio.run(main())
