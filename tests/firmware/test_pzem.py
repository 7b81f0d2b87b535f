"""PZEM-004T v3 driver and Modbus RTU codec against the recorded frames (both interpreters).

Request bytes are built exactly as recorded; recorded replies decode to the
listed values; every constructed bad reply gives its listed typed error. The
driver itself runs under asyncio against a scripted UART: retries, timeouts,
exception replies, stale bytes, two meters on one bus.
"""

import gc
import random

from phasenode.compat import asyncio
from phasenode.drivers import modbus_rtu as rtu
from phasenode.drivers.pzem import (
    METER_ERRORS,
    BusLock,
    ImplausibleReading,
    Measurement,
    Pzem,
    decode_measurement,
)
from portable import load_vectors, raises, unhex

MEASURE_REQ_1 = unhex("01040000000a700d")
ESPHOME_REPLY = unhex("01041408d1006c000000f400000026000001f4006400005134")


def _pzem_frames():
    return dict((f["name"], f) for f in load_vectors("modbus/pzem004t_v3.json")["frames"])


def _with_crc(body):
    from phasecore.crc import crc16_le

    return bytes(body) + crc16_le(bytes(body))


def _reply_regs(slave, regs, fc=4):
    body = bytearray((slave, fc, 2 * len(regs)))
    for r in regs:
        body.append(r >> 8)
        body.append(r & 0xFF)
    return _with_crc(body)


# --- requests -----------------------------------------------------------------


def test_generic_request_frames_built_exactly():
    for f in load_vectors("modbus/modbus_rtu_frames.json")["frames"]:
        fl = f["fields"]
        if f["direction"] == "request":
            got = rtu.read_request(fl["slave"], fl["function"], fl["start"], fl["count"])
        elif fl["function"] == 6:
            got = rtu.write_single_request(fl["slave"], fl["register"], fl["value"])
        else:
            continue
        assert got == unhex(f["hex"]), f["name"]


def test_pzem_request_frames_built_exactly():
    fr = _pzem_frames()
    assert rtu.read_request(1, 4, 0, 10) == unhex(fr["measurement request, slave 1"]["hex"])
    assert rtu.read_request(0xF8, 4, 0, 10) == unhex(fr["measurement request via general address 0xF8"]["hex"])
    reset = [f for n, f in fr.items() if n.startswith("reset energy")][0]
    assert rtu.command_request(1, 0x42) == unhex(reset["hex"])
    read_addr = [f for n, f in fr.items() if n.startswith("read slave address")][0]
    assert rtu.read_request(1, 3, 2, 1) == unhex(read_addr["hex"])
    set_addr = [f for n, f in fr.items() if n.startswith("set slave address")][0]
    assert rtu.write_single_request(1, 2, 5) == unhex(set_addr["hex"])


def test_request_arguments_are_checked():
    for slave in (0, 249, 255, -1, "1"):
        raises(ValueError, rtu.read_request, slave, 4, 0, 10)
    for count in (0, 126, -1):
        raises(ValueError, rtu.read_request, 1, 4, 0, count)
    raises(ValueError, rtu.read_request, 1, 5, 0, 1)
    raises(ValueError, rtu.read_request, 1, 4, 0x10000, 1)
    raises(ValueError, rtu.write_single_request, 1, 2, 0x10000)
    raises(ValueError, rtu.command_request, 1, 0x80)


# --- replies --------------------------------------------------------------------


def test_recorded_replies_decode_to_listed_values():
    n = 0
    for name, f in _pzem_frames().items():
        if "decoded" not in f:
            continue
        reply = unhex(f["hex"])
        assert len(reply) == f["length"]
        p = rtu.parse_response(rtu.read_request(reply[0], 4, 0, 10), reply)
        d = f["decoded"]
        assert [p.register(i) for i in range(10)] == d["raw_registers"], name
        m = decode_measurement(p.buf, 3)
        assert abs(m.voltage - d["voltage_V"]) < 1e-6, name
        assert abs(m.current - d["current_A"]) < 1e-6, name
        assert abs(m.power - d["power_W"]) < 1e-6, name
        assert m.energy == d["energy_Wh"], name
        assert abs(m.frequency - d["frequency_Hz"]) < 1e-6, name
        assert abs(m.power_factor - d["power_factor"]) < 1e-6, name
        assert m.alarm == bool(d["alarm"]), name
        n += 1
    assert n == 2


def test_exception_replies_give_code_and_name():
    names = {1: "ILLEGAL FUNCTION", 2: "ILLEGAL DATA ADDRESS"}
    for f in load_vectors("modbus/modbus_rtu_frames.json")["frames"]:
        if "exception_code" not in f["fields"]:
            continue
        e = raises(rtu.ModbusExceptionResponse, rtu.parse_response, MEASURE_REQ_1, unhex(f["hex"]))
        assert e.code == f["fields"]["exception_code"] and e.function == 4 and e.slave == 1
        assert e.name == names[e.code]
    assert rtu.exception_name(0x42) == "UNKNOWN"


def _expected_error(expected):
    # pzem_bad_replies.json names kinds of error in prose; map them to our classes.
    kinds = (
        ("CrcError", rtu.ModbusCRCError),
        ("UnexpectedSlave", rtu.ModbusUnexpectedSlave),
        ("UnexpectedFunction", rtu.ModbusUnexpectedFunction),
        ("MeterException", rtu.ModbusExceptionResponse),
        ("Truncated", rtu.ModbusTruncated),
        ("Timeout", rtu.ModbusTimeout),
        ("LengthMismatch", rtu.ModbusLengthError),
        ("TrailingBytes", rtu.ModbusTrailingBytes),
        ("NotAReply", rtu.ModbusEchoError),
        ("Implausible", ImplausibleReading),
    )
    for prefix, cls in kinds:
        if expected.startswith(prefix):
            return cls
    return None


def _parse_and_decode(reply):
    p = rtu.parse_response(MEASURE_REQ_1, reply)
    return decode_measurement(p.buf, 3)


def test_every_bad_reply_gives_its_listed_error():
    items = load_vectors("modbus/pzem_bad_replies.json")["items"]
    assert len(items) == 18
    fields = {
        "voltage": "voltage",
        "pf": "power_factor",
        "frequency": "frequency",
        "current": "current",
        "power vs V*I*PF": "power",
    }
    for it in items:
        reply = unhex(it["hex"])
        cls = _expected_error(it["expected"])
        if cls is None:
            assert it["name"] == "alarm_set"
            assert _parse_and_decode(reply).alarm is True
            continue
        e = raises(cls, _parse_and_decode, reply)
        if cls is rtu.ModbusExceptionResponse:
            assert e.code == 2
        if cls is ImplausibleReading:
            assert e.field == fields[it["expected"][len("Implausible(") : -1]], it["name"]


def test_byte_by_byte_feed_equals_one_shot():
    p = rtu.ResponseParser()
    p.start(MEASURE_REQ_1)
    for i in range(len(ESPHOME_REPLY) - 1):
        assert p.feed(ESPHOME_REPLY[i : i + 1]) is False
    assert p.feed(ESPHOME_REPLY[-1:]) is True
    assert bytes(p.buf[: p.length]) == ESPHOME_REPLY
    raises(rtu.ModbusTrailingBytes, p.feed, b"\x00")
    # feed() honours its byte count: only the first n bytes of the chunk are taken.
    p.start(MEASURE_REQ_1)
    assert p.feed(ESPHOME_REPLY + b"\xff\xff", len(ESPHOME_REPLY)) is True


def test_errors_raise_as_soon_as_the_header_is_wrong():
    p = rtu.ResponseParser()
    p.start(MEASURE_REQ_1)
    raises(rtu.ModbusUnexpectedSlave, p.feed, b"\x07")
    p.start(MEASURE_REQ_1)
    raises(rtu.ModbusUnexpectedFunction, p.feed, b"\x01\x03")
    p.start(MEASURE_REQ_1)
    raises(rtu.ModbusLengthError, p.feed, b"\x01\x04\x13")
    p.start(MEASURE_REQ_1)
    assert p.feed(b"\x01\x04\x00\x00") is False  # could still be our echo
    raises(rtu.ModbusLengthError, p.feed, b"\x01")


def test_write_and_command_replies_must_echo_the_request():
    req = rtu.write_single_request(1, 1, 2300)
    assert rtu.parse_response(req, req).length == 8
    other = rtu.write_single_request(1, 1, 2301)
    raises(rtu.ModbusFrameError, rtu.parse_response, req, other)
    reset = rtu.command_request(1, 0x42)
    assert rtu.parse_response(reset, reset).length == 4
    e = raises(rtu.ModbusExceptionResponse, rtu.parse_response, reset, _with_crc(b"\x01\xc2\x04"))
    assert e.function == 0x42 and e.code == 4 and e.name == "SERVER DEVICE FAILURE"
    raises(rtu.ModbusTruncated, rtu.parse_response, reset, b"\x01\x42\x80")
    raises(rtu.ModbusCRCError, rtu.parse_response, reset, b"\x01\x42\x80\x12")


def test_exception_reply_with_bad_crc_is_a_crc_error():
    raises(rtu.ModbusCRCError, rtu.parse_response, MEASURE_REQ_1, unhex("018402c2c0"))


def test_general_address_accepts_reply_from_the_unit_or_from_0xf8():
    req = rtu.read_request(0xF8, 4, 0, 10)
    for slave in (1, 0x17, 0xF8):
        body = bytearray(ESPHOME_REPLY[:-2])
        body[0] = slave
        assert rtu.parse_response(req, _with_crc(body)).register(0) == 2257
    body = bytearray(ESPHOME_REPLY[:-2])
    body[0] = 0
    raises(rtu.ModbusUnexpectedSlave, rtu.parse_response, req, _with_crc(body))


def test_parser_refuses_misuse():
    p = rtu.ResponseParser(25)
    raises(ValueError, p.feed, b"\x01")
    raises(ValueError, p.start, rtu.read_request(1, 4, 0, 11))  # 27-byte reply > 25-byte buffer
    raises(ValueError, p.start, b"\x01\x04")
    p.start(MEASURE_REQ_1)
    raises(IndexError, p.register, 0)  # not complete yet


# --- decoding and plausibility ------------------------------------------------

GOOD = [2300, 10000, 0, 23000, 0, 123456 & 0xFFFF, 123456 >> 16, 500, 100, 0]


def test_decode_from_registers_equals_decode_from_buffer():
    m1 = decode_measurement(GOOD)
    m2 = decode_measurement(_reply_regs(1, GOOD), 3)
    for name in ("voltage_dv", "current_ma", "power_dw", "energy_wh", "frequency_dhz", "pf_centi", "alarm"):
        assert getattr(m1, name) == getattr(m2, name), name
    assert m1.energy_wh == 123456 and m1.current_ma == 10000 and m1.power == 2300.0
    assert "230.0 V" in repr(m1)


def test_low_word_first_32_bit_values():
    regs = list(GOOD)
    regs[1], regs[2] = 0x86A0, 0x0001  # 100000 mA = 100 A, low word first
    regs[3], regs[4] = 0x3E80, 0x0003  # 0x33E80 = 212608 dW
    regs[7] = 500
    regs[8] = 92
    m = decode_measurement(regs)
    assert m.current_ma == 100000 and m.power_dw == 212608


def test_plausibility_names_the_field():
    cases = (
        (0, 3001, "voltage"),
        (2, 2, "current"),
        (4, 4, "power"),
        (6, 0x99, "energy"),
        (7, 0, "frequency"),
        (7, 449, "frequency"),
        (7, 651, "frequency"),
        (8, 101, "power_factor"),
        (9, 1, "alarm"),
        (3, 2000, "power"),
    )
    for i, value, field in cases:
        regs = list(GOOD)
        regs[i] = value
        e = raises(ImplausibleReading, decode_measurement, regs)
        assert e.field == field, (i, value, e)


def test_no_mains_reading_is_accepted():
    # Meter sees no voltage: frequency 0 is then a reading, not a fault.
    m = decode_measurement([0, 0, 0, 0, 0, 42, 0, 0, 0, 0])
    assert m.voltage == 0 and m.frequency == 0 and m.energy == 42


def test_decode_reuses_into_and_does_not_allocate():
    m = Measurement()
    buf = _reply_regs(1, GOOD)
    assert decode_measurement(buf, 3, m) is m
    if hasattr(gc, "mem_alloc"):  # MicroPython: measure the heap
        gc.collect()
        before = gc.mem_alloc()
        for _ in range(50):
            decode_measurement(buf, 3, m)
        assert gc.mem_alloc() - before == 0, gc.mem_alloc() - before


def test_decode_refuses_wrong_shapes():
    raises(ValueError, decode_measurement, [0] * 9)
    raises(ValueError, decode_measurement, b"\x00" * 22, 3)


def test_random_and_mutated_bytes_give_typed_errors_only():
    rnd = random.Random(20240611) if hasattr(random, "Random") else None
    rng = rnd.getrandbits if rnd else random.getrandbits
    if rnd is None:
        random.seed(20240611)
    p = rtu.ResponseParser()
    outcomes = {}
    for i in range(1500):
        if i % 3 == 0:
            data = bytearray(rng(8) for _ in range(rng(5)))
        else:
            data = bytearray(ESPHOME_REPLY)
            for _ in range(1 + rng(2)):
                data[rng(8) % len(data)] = rng(8)
            if i % 3 == 2:
                data = data[: rng(5)] + data[rng(5) :]
        p.start(MEASURE_REQ_1)
        try:
            if p.feed(data):
                decode_measurement(p.buf, 3)
                kind = "ok"
            else:
                kind = type(p.timeout()).__name__
        except METER_ERRORS as e:
            kind = type(e).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1
    assert outcomes.get("ModbusCRCError", 0) > 100, outcomes
    assert len(outcomes) >= 5, outcomes


# --- the driver against a scripted UART ---------------------------------------


class ScriptedUART:
    """machine.UART subset; each write() pops the next scripted reply (None = silence)."""

    def __init__(self, replies, chunk=7, stale=b""):
        self.replies = list(replies)
        self.chunk = chunk
        self.pending = bytearray(stale)
        self.writes = []

    def write(self, buf):
        self.writes.append(bytes(buf))
        reply = self.replies.pop(0) if self.replies else None
        if reply is not None:
            self.pending += reply
        return len(buf)

    def any(self):
        return min(len(self.pending), self.chunk)

    def readinto(self, buf, nbytes=None):
        n = min(len(self.pending), len(buf) if nbytes is None else nbytes)
        if not n:
            return None
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def _run(coro):
    return asyncio.run(coro)


def test_driver_reads_a_measurement():
    uart = ScriptedUART([ESPHOME_REPLY], stale=b"\x55\xaa")
    meter = Pzem(uart, address=1, timeout_ms=50, retries=0)
    m = _run(meter.read())
    assert uart.writes == [MEASURE_REQ_1]
    assert m.voltage_dv == 2257 and m.current_ma == 108 and m.power_dw == 244 and m.energy_wh == 38
    into = Measurement()
    uart.replies.append(ESPHOME_REPLY)
    assert _run(meter.read(into)) is into and into.frequency_dhz == 500


def test_driver_retries_then_raises_the_last_error():
    bad_crc = ESPHOME_REPLY[:-1] + b"\x35"
    uart = ScriptedUART([bad_crc, None, ESPHOME_REPLY])
    meter = Pzem(uart, address=1, timeout_ms=20, retries=2)
    assert _run(meter.read()).voltage_dv == 2257
    assert len(uart.writes) == 3
    uart = ScriptedUART([None, bad_crc])
    meter = Pzem(uart, address=1, timeout_ms=20, retries=1)
    raises(rtu.ModbusCRCError, _run, meter.read())
    uart = ScriptedUART([bad_crc, ESPHOME_REPLY[:10]])
    meter = Pzem(uart, address=1, timeout_ms=20, retries=1)
    raises(rtu.ModbusTruncated, _run, meter.read())


def test_driver_times_out_on_silence():
    uart = ScriptedUART([])
    meter = Pzem(uart, address=9, timeout_ms=15, retries=2)
    raises(rtu.ModbusTimeout, _run, meter.read())
    assert len(uart.writes) == 3


def test_driver_does_not_retry_an_exception_reply():
    uart = ScriptedUART([unhex("018402c2c1"), ESPHOME_REPLY])
    meter = Pzem(uart, address=1, timeout_ms=20, retries=3)
    e = raises(rtu.ModbusExceptionResponse, _run, meter.read())
    assert e.code == 2 and len(uart.writes) == 1


def test_driver_retries_an_implausible_reply():
    items = dict((it["name"], it) for it in load_vectors("modbus/pzem_bad_replies.json")["items"])
    zero_f = unhex(items["frequency_zero"]["hex"])
    uart = ScriptedUART([zero_f, ESPHOME_REPLY])
    assert _run(Pzem(uart, address=1, timeout_ms=20, retries=1).read()).frequency_dhz == 500
    uart = ScriptedUART([zero_f, zero_f])
    e = raises(ImplausibleReading, _run, Pzem(uart, address=1, timeout_ms=20, retries=1).read())
    assert e.field == "frequency"


def test_driver_holding_registers_address_and_commands():
    set5 = rtu.write_single_request(1, 2, 5)
    uart = ScriptedUART(
        [
            _reply_regs(1, [1], fc=3),
            set5,
            _reply_regs(5, [2300], fc=3),
            rtu.write_single_request(5, 1, 1000),
            rtu.command_request(5, 0x42),
        ]
    )
    meter = Pzem(uart, address=1, timeout_ms=20, retries=0)
    assert _run(meter.read_address()) == 1
    _run(meter.set_address(5))
    assert meter.address == 5
    assert _run(meter.read_alarm_threshold()) == 2300
    _run(meter.set_alarm_threshold(1000))
    _run(meter.reset_energy())
    assert uart.writes == [
        rtu.read_request(1, 3, 2, 1),
        set5,
        rtu.read_request(5, 3, 1, 1),
        rtu.write_single_request(5, 1, 1000),
        rtu.command_request(5, 0x42),
    ]
    raises(ValueError, _run, meter.set_address(0))
    raises(ValueError, _run, meter.set_address(248))
    raises(ValueError, _run, meter.set_alarm_threshold(25001))
    raises(ValueError, Pzem, uart, 0)


def test_two_meters_share_one_bus_without_interleaving():
    r1 = ESPHOME_REPLY
    r2 = _with_crc(b"\x02" + unhex("010414095902040000038500001229000001f300490000d3ea")[1:-2])
    uart = ScriptedUART([r1, r2, r1, r2], chunk=3)
    lock = BusLock()
    m1 = Pzem(uart, address=1, timeout_ms=50, retries=0, lock=lock)
    m2 = Pzem(uart, address=2, timeout_ms=50, retries=0, lock=lock)

    async def both():
        a = asyncio.create_task(m1.read())
        b = asyncio.create_task(m2.read())
        c = asyncio.create_task(m1.read())
        d = asyncio.create_task(m2.read())
        return [await a, await b, await c, await d]

    got = _run(both())
    assert [m.voltage_dv for m in got] == [2257, 2393, 2257, 2393]
    assert [w[0] for w in uart.writes] == [1, 2, 1, 2]
