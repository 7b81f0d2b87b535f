"""Ed25519 verification of a signed manifest: time and heap on CPython and MicroPython, and an ESP32 estimate.

Not yet a ``phasekit bench`` verb; the CLI can wire it as
``add_arguments(parser)`` + ``main(args)``. Until then:

    .venv/bin/python -m phasekit.bench_ed25519 [--manifest-bytes 2048] [--heapsize 100K] [--json]

Prints one table: interpreter, milliseconds per ``phasecore.ed25519.verify``
of a manifest of the given size (SHA-512 share beside it), the heap it needs,
and the extrapolation to an ESP32 at 240 MHz. Exit status 0 when every
measurement ran and the signature verified everywhere, 1 otherwise.

How each number is made (docs/ota-signing.md explains the choices):

- A fresh Ed25519 key signs a pseudo-random manifest with pyca/cryptography
  (the release tool's library); ``phasecore.ed25519.verify`` checks it, and a
  copy with one bit flipped must be refused, on every interpreter.
- CPython: best and median of ``--repeat`` verifies; heap is tracemalloc's peak over one.
- MicroPython unix port: the same bytes, through a temporary file, to a worker run with
  ``-X heapsize=--heapsize`` (the ESP32's ~100 KB, so the collector runs as
  often as on a board); best and median of ``--repeat``. Heap: the smallest
  ``-X heapsize`` (1 KB steps) in which the worker still verifies, and the
  part of it above the worker's baseline (interpreter, modules compiled from
  source -- frozen into the node image they would cost no heap -- and the
  manifest) measured with ``gc.mem_alloc()`` just before verifying; and the
  bytes allocated by one verify with the collector off (churn the GC must
  absorb, not live memory).
- ESP32: the unix-port time times a factor measured on this host each run.
  A reference big-integer workload (the pi spigot in the worker) runs first
  in the timing worker, in its fresh heap, as the pyboard figure was taken.
  MicroPython's own perf_bench ``bm_pidigits`` (same arithmetic in more
  bytecodes: 1.20 to 1.24 times as long on the unix port, measured) took
  104,099 us on a PYBv1.0
  (STM32F405 at 168 MHz, 16-bit big-int digits and 31-bit small ints like the
  ESP32; micropython/micropython pull request 4858). So the spigot would take
  104099 / 1.22 = 85,327 us there, and factor = 85327 us / spigot time here.
  An ESP32 at 240 MHz runs MicroPython 0.8 to 1.2 times as long as that
  pyboard (scruss.com's MicroPython 1.24 board benchmark: PYBv1.1 13.0 s,
  ESP32 at 160 MHz 15.4 s, i.e. 10.3 s at 240 MHz if time scales with the
  clock, 15.4 s if it does not); the table shows 1.0 and that range.
  The estimate scales the best time, as the spigot's best time sets the
  factor: on a shared machine the best time is the one least disturbed.
  ``--factor F`` replaces the measured factor (DESIGN.md's rule of thumb is 100).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from phasekit.testing import micropython

# Published: bm_pidigits, N=100 M=100 (65 digits once), PYBv1.0, us; and the
# measured ratio bm_pidigits / _spigot on the MicroPython unix port.
PYB_PIDIGITS_US = 104099
PIDIGITS_PER_SPIGOT = 1.22
REF_PYB_US = PYB_PIDIGITS_US / PIDIGITS_PER_SPIGOT
ESP32_PER_PYB = (0.8, 1.0, 1.2)  # low, central, high
SPIGOT_DIGITS = 65

# The worker runs under MicroPython. stdin carries one line, "PATH N REPEAT MODE":
# PATH holds the public key (32 bytes), the signature (64) and the N-byte
# manifest, read into one buffer so the manifest is never copied. MODE
# "time" times the reference workload (first, in the fresh heap), then
# verifies; "quick" only verifies; both also refuse a flipped copy. "churn"
# counts the bytes one verify allocates. Prints one RESULT line; times are
# "min median" pairs in microseconds.
_WORKER = r"""
import gc, sys, time

def spigot(n):
    # Gibbons' unbounded spigot for the digits of pi (s of the LFT stays 0).
    q, r, t, k = 1, 0, 1, 1
    out = 0
    for _ in range(n):
        while True:
            y = (3 * q + r) // t
            if y == (4 * q + r) // t:
                break
            j = 2 * k + 1
            r = (2 * q + r) * j
            q *= k
            t *= j
            k += 1
        out = out * 10 + y
        q, r = 10 * q, 10 * (r - y * t)
    return out

def stats(xs):
    xs.sort()
    return "%d %d" % (xs[0], xs[len(xs) // 2])

path, n, repeat, mode = sys.stdin.readline().split()
n = int(n)
repeat = int(repeat)
refs = []
if mode == "time":
    # First, in the fresh heap (as the pyboard figure was taken), before
    # anything else is loaded.
    for _ in range(repeat):
        t0 = time.ticks_us()
        spigot(DIGITS)
        refs.append(time.ticks_diff(time.ticks_us(), t0))

from phasecore import ed25519, sha512
from phasecore.errors import SignatureError

buf = bytearray(96 + n)
f = open(path, "rb")
f.readinto(buf)
f.close()
mv = memoryview(buf)
pk = mv[0:32]
sig = mv[32:96]
msg = mv[96:]
gc.collect()
base = gc.mem_alloc()
if mode == "churn":
    gc.disable()
    ed25519.verify(pk, msg, sig)
    churn = gc.mem_alloc() - base
    gc.enable()
    print("RESULT", churn)
    sys.exit(0)
ed25519.verify(pk, msg, sig)
buf[40] ^= 1
try:
    ed25519.verify(pk, msg, sig)
    refused = 0
except SignatureError:
    refused = 1
buf[40] ^= 1
times = []
for _ in range(repeat):
    t0 = time.ticks_us()
    ed25519.verify(pk, msg, sig)
    times.append(time.ticks_diff(time.ticks_us(), t0))
shas = []
for _ in range(repeat if mode == "time" else 1):
    t0 = time.ticks_us()
    h = sha512.new(sig[0:32])
    h.update(pk)
    h.update(msg)
    h.digest()
    shas.append(time.ticks_diff(time.ticks_us(), t0))
print("RESULT", stats(times), stats(shas), base, refused, stats(refs) if refs else "0 0")
""".replace("DIGITS", str(SPIGOT_DIGITS))

EXAMPLE = """examples:
  phasekit bench ed25519                          2 KB manifest, 100 KB MicroPython heap
  phasekit bench ed25519 --manifest-bytes 8192 --json
  phasekit bench ed25519 --factor 100             the design notes' rule of thumb instead of the measured factor
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``phasekit bench ed25519``."""
    parser.add_argument(
        "--manifest-bytes", type=int, default=2048, metavar="N", help="size of the signed manifest (default 2048)"
    )
    parser.add_argument("--repeat", type=int, default=7, metavar="N", help="verifies per timing (median; default 7)")
    parser.add_argument(
        "--heapsize",
        default="100K",
        help="MicroPython -X heapsize for the timing run (default 100K, an ESP32 without PSRAM)",
    )
    parser.add_argument(
        "--factor", type=float, default=None, help="ESP32/unix-port slowdown to use instead of the one measured"
    )
    parser.add_argument("--no-micropython", action="store_true", help="CPython row only")
    parser.add_argument("--json", action="store_true", help="also print every number as one JSON object")
    parser.add_argument("--seed", type=int, default=1, help="seed of the key and manifest (default 1)")


def _kib(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1, "M": 1024}.get(text[-1:], None)
    return int(text[:-1]) * scale if scale else int(text) // 1024


def _material(size: int, seed: int) -> tuple[bytes, bytes, bytes]:
    """A key, a manifest of ``size`` pseudo-random bytes and its signature, made with pyca/cryptography."""
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"phasekit bench key %d" % seed).digest())
    pk = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    stream = bytearray()
    counter = 0
    while len(stream) < size:
        stream += hashlib.sha256(b"manifest %d %d" % (seed, counter)).digest()
        counter += 1
    msg = bytes(stream[:size])
    return pk, msg, key.sign(msg)


def _cpython(pk: bytes, msg: bytes, sig: bytes, repeat: int) -> dict[str, Any]:
    import tracemalloc

    from phasecore import ed25519
    from phasecore.errors import SignatureError

    ed25519.verify(pk, msg, sig)
    bad = bytearray(sig)
    bad[40] ^= 1
    try:
        ed25519.verify(pk, msg, bytes(bad))
        refused = False
    except SignatureError:
        refused = True
    times: list[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ed25519.verify(pk, msg, sig)
        times.append((time.perf_counter() - t0) * 1e3)
    tracemalloc.start()
    tracemalloc.reset_peak()
    ed25519.verify(pk, msg, sig)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "ms": min(times),
        "ms_median": statistics.median(times),
        "peak_bytes": peak,
        "refused_bad": refused,
        "interpreter": "CPython %d.%d" % sys.version_info[:2],
    }


def _worker(path: str, n: int, repeat: int, mode: str, heapsize: str) -> list[int] | None:
    proc = micropython.run(
        ["-c", _WORKER], heapsize=heapsize, input_text="%s %d %d %s\n" % (path, n, repeat, mode), timeout=600
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return [int(x) for x in line.split()[1:]]
    return None


def _min_heap_kib(path: str, n: int, hi_kib: int) -> int | None:
    """Smallest -X heapsize (KB) in which one verify completes, by bisection; None if even hi_kib fails."""
    if _worker(path, n, 1, "quick", "%dK" % hi_kib) is None:
        return None
    lo = 4  # fails: the interpreter alone needs more
    while hi_kib - lo > 1:
        mid = (lo + hi_kib) // 2
        if _worker(path, n, 1, "quick", "%dK" % mid) is None:
            lo = mid
        else:
            hi_kib = mid
    return hi_kib


def _micropython(pk: bytes, msg: bytes, sig: bytes, repeat: int, heapsize: str) -> dict[str, Any] | None:
    import os
    import tempfile

    fd, path = tempfile.mkstemp(prefix="phasekit-ed25519-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pk + sig + msg)
        n = len(msg)
        r = _worker(path, n, repeat, "time", heapsize)
        if r is None:
            return None
        min_us, med_us, sha_min, sha_med, base, refused, ref_min, ref_med = r
        min_kib = _min_heap_kib(path, n, max(_kib(heapsize), 16))
        churn = _worker(path, n, 1, "churn", "256M")
    finally:
        os.unlink(path)
    version = micropython.run_code("import sys; print('%d.%d' % sys.implementation.version[:2])").stdout.strip()
    return {
        "interpreter": "MicroPython %s unix" % version,
        "heapsize": heapsize,
        "ms": min_us / 1e3,
        "ms_median": med_us / 1e3,
        "sha512_ms": sha_min / 1e3,
        "sha512_ms_median": sha_med / 1e3,
        "baseline_bytes": base,
        "min_heap_kib": min_kib,
        "headroom_kib": (min_kib - base / 1024.0) if min_kib else None,
        "churn_bytes": churn[0] if churn else None,
        "refused_bad": bool(refused),
        "spigot_us": ref_min,
        "spigot_us_median": ref_med,
    }


def _estimate(mpy: dict[str, Any], factor_override: float | None) -> dict[str, Any]:
    if factor_override is not None:
        f = factor_override
        return {"factor": f, "low": f, "high": f, "source": "--factor"}
    pyb = REF_PYB_US / mpy["spigot_us"]
    return {
        "factor": pyb * ESP32_PER_PYB[1],
        "low": pyb * ESP32_PER_PYB[0],
        "high": pyb * ESP32_PER_PYB[2],
        "pyb_factor": pyb,
        "source": "factor measured: spigot %.0f us here, %.0f us on a PYBv1.0" % (mpy["spigot_us"], REF_PYB_US),
    }


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print its table; returns the exit status."""
    try:
        pk, msg, sig = _material(args.manifest_bytes, args.seed)
    except ImportError:
        print(
            "phasekit bench ed25519: needs pyca/cryptography to sign the manifest (pip install 'phasekit[test]')",
            file=sys.stderr,
        )
        return 1
    print("Ed25519 verify of a %d-byte signed manifest (phasecore.ed25519, RFC 8032 PureEdDSA)" % len(msg))
    results: dict[str, Any] = {"manifest_bytes": len(msg), "cpython": _cpython(pk, msg, sig, args.repeat)}
    ok = results["cpython"]["refused_bad"]
    mpy: dict[str, Any] | None = None
    if not args.no_micropython:
        try:
            mpy = _micropython(pk, msg, sig, args.repeat, args.heapsize)
        except micropython.MicroPythonNotFound as e:
            print("MicroPython rows skipped: %s" % e)
        else:
            if mpy is None:
                print("MicroPython worker failed at -X heapsize=%s" % args.heapsize)
                ok = False
            else:
                ok = ok and mpy["refused_bad"]
        results["micropython"] = mpy
    est: dict[str, Any] | None = None
    if mpy is not None or args.factor is not None:
        if mpy is not None and (mpy["spigot_us"] or args.factor is not None):
            base_ms = mpy["ms"]
            est = _estimate(mpy, args.factor)
            est["ms"] = base_ms * est["factor"]
            est["ms_low"] = base_ms * est["low"]
            est["ms_high"] = base_ms * est["high"]
            est["sha512_ms"] = mpy["sha512_ms"] * est["factor"]
        results["esp32_estimate"] = est

    c = results["cpython"]
    print("%-28s %-6s %18s %18s  %s" % ("interpreter", "heap", "ms/verify", "of which SHA-512", "heap use"))
    print(
        "%-28s %-6s %8.2f (%7.2f) %18s  tracemalloc peak %.1f KB"
        % (c["interpreter"], "-", c["ms"], c["ms_median"], "native", c["peak_bytes"] / 1024.0)
    )
    if mpy is not None:
        heap = (
            "needs -X heapsize=%dK: %.1f KB above a %.1f KB baseline; allocates %.0f KB per verify"
            % (mpy["min_heap_kib"], mpy["headroom_kib"], mpy["baseline_bytes"] / 1024.0, mpy["churn_bytes"] / 1024.0)
            if mpy["min_heap_kib"]
            else "did not fit"
        )
        print(
            "%-28s %-6s %8.2f (%7.2f) %8.2f (%7.2f)  %s"
            % (
                mpy["interpreter"],
                mpy["heapsize"],
                mpy["ms"],
                mpy["ms_median"],
                mpy["sha512_ms"],
                mpy["sha512_ms_median"],
                heap,
            )
        )
    if est is not None and mpy is not None:  # an estimate scales a MicroPython time
        print(
            "%-28s %-6s %8.0f %9s %8.0f %9s  x%.0f, range %.0f..%.0f ms (x%.0f..x%.0f); %s"
            % (
                "ESP32 240 MHz (estimate)",
                mpy["heapsize"],
                est["ms"],
                "",
                est["sha512_ms"],
                "",
                est["factor"],
                est["ms_low"],
                est["ms_high"],
                est["low"],
                est["high"],
                est["source"],
            )
        )
    print("times: best (median) of %d; the estimate scales the best unix-port time" % args.repeat)
    print("one bit flipped in S refused: %s" % ("yes" if ok else "NO"))
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return 0 if ok else 1
