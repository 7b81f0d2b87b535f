"""Firmware updates: delivery over a shared RS-485 line, randomized runs with power cuts and Pi restarts,
tampered bundles, and the node's signature check (issue 16's targets).

    phasekit bench ota [--runs 1000] [--tamper-trials 20] [--skip-delivery] [--skip-signature]

Four parts, each a table; exit status 1 when a target is missed.

1. Delivery: the real firmware bundle (``phasekit release build``, the esp32
   target, signed with a fresh key) to one node while the Pi polls 100 nodes
   at 115200 baud over a paced pseudo-terminal (``phasekit.sim.bus_nodes``:
   99 simulated nodes and one ``FirmwareNode``, the real firmware session and
   updater in-process). The real bus master (``phasegate.bus``) and roll-out
   engine (``phasegate.ota``) run as in the gateway. Measured: the time until
   the node holds the whole bundle verified (target < 60 s), until it runs
   it confirmed, and every polling round meanwhile (target: each < 2 s).
2. Randomized runs (``phasekit.testing.ota_rig``): power cuts at the node at
   any flash write (a quarter of the runs with FAT-like torn writes), Pi
   restarts at any request, tampered bundles and bad new versions; every
   node must end on the old or the new version, verified, never a mix, and
   no relay may move (target: 0 problems).
3. Tampered bundles fed to the node's updater: one changed byte at random
   places in each part (files, file table, manifest, signature, key id,
   magic), an old version, another signing key, no signature, a version
   below the bundle's minimum, the running version, another target; each
   must be refused with its typed reason every time.
4. The signature check on the MicroPython unix port in a 100 KB heap for
   the real manifest's size, with the extrapolation to an ESP32
   (``phasekit bench ed25519``'s method and factor).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
from typing import Any

EXAMPLE = """example:
  phasekit bench ota --runs 1000
  phasekit bench ota --runs 50 --tamper-trials 5 --skip-delivery
"""

TARGET_DELIVERY_S = 60.0
TARGET_ROUND_S = 2.0
SITE_KEY = bytes(range(32))  # synthetic
FW_ADDR = 100


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Options of ``phasekit bench ota``."""
    ap.add_argument("--runs", type=int, default=1000, help="randomized update runs (default 1000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tamper-trials", type=int, default=20, help="random byte positions per part (default 20)")
    ap.add_argument("--nodes", type=int, default=100, help="nodes on the line in the delivery part (default 100)")
    ap.add_argument("--poll-period-s", type=float, default=10.0, help="polling period (default 10, as gateway.toml)")
    ap.add_argument("--chunks-per-gap", type=int, default=160)
    ap.add_argument("--skip-delivery", action="store_true")
    ap.add_argument("--skip-signature", action="store_true")
    ap.add_argument("--json", action="store_true", help="also print every number as one JSON object")


def _say(text: str) -> None:
    print(".. " + text, file=sys.stderr, flush=True)


# ---- the real bundle ---------------------------------------------------------------------------------------


def real_bundle(folder: str, target: str = "esp32") -> tuple[str, bytes, Any]:
    """Build and sign the node firmware as a release would; returns (path, public key, private key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from phasecore import ota
    from phasekit import release
    from phasenode.version import VERSION

    v = (VERSION[0], VERSION[1], VERSION[2] + 1)
    path = os.path.join(folder, "bundle.pkb")
    release.build(path, ota.version_text(v), ota.version_text(VERSION), target)
    key = Ed25519PrivateKey.generate()
    key_path = os.path.join(folder, "release.key")
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    release.sign(path, key_path)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return path, pub, key


# ---- 1. delivery --------------------------------------------------------------------------------------------


async def _delivery(
    bundle_path: str, pub: bytes, nodes: int, period_s: float, per_gap: int, folder: str
) -> dict[str, Any]:
    import logging

    from phasegate.bus import Bus, SerialLine
    from phasegate.ota import Engine, read_plan, request_push
    from phasegate.registry import Registry
    from phasekit.sim.bus_nodes import FirmwareNode, SimBus, SimNode

    logging.getLogger("phasegate").setLevel(logging.ERROR)
    root = os.path.join(folder, "fwnode")
    os.mkdir(root)
    fw = FirmwareNode(FW_ADDR, SITE_KEY, root, pub, target="esp32")
    sims: list[Any] = [SimNode(a, SITE_KEY) for a in range(1, nodes) if a != FW_ADDR] + [fw]
    addrs = sorted(n.addr for n in sims)
    reg = Registry(SITE_KEY, addrs, os.path.join(folder, "seq.txt"), os.path.join(folder, "reg.json"))
    rounds: list[float] = []
    out: dict[str, Any] = {}
    with SimBus(sims, baud=115200, turnaround_s=0.005, pace=True) as sim:
        bus = Bus(SerialLine(sim.port, 115200), addrs, reply_timeout_s=0.03, retries=1, poll_period_s=period_s)
        async with bus:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            seen = [0]

            def on_reply(addr: int, r: Any) -> None:
                if r is not None and r.frame.payload:
                    reg.receive(addr, r.frame.payload, loop.time())
                n = bus.counters["rounds"]
                if n != seen[0]:
                    seen[0] = n
                    rounds.append(bus.counters["last_round_s"] or 0.0)

            engine = Engine(os.path.join(folder, "ota"), reg, bus, idle_poll_s=0.2, watch_period_s=1.0)
            polling = asyncio.ensure_future(bus.run(stop, on_reply))
            await asyncio.sleep(period_s + 1)  # a first round and its gap: the line is in its steady state
            request_push(os.path.join(folder, "ota"), bundle_path, [FW_ADDR], canary=1, chunks_per_gap=per_gap)
            t0 = loop.time()
            running = asyncio.ensure_future(engine.run(stop))
            ready_at = done_at = None
            r0 = len(rounds)
            while loop.time() - t0 < 600:
                await asyncio.sleep(0.2)
                plan = read_plan(os.path.join(folder, "ota"))
                st = plan["nodes"][str(FW_ADDR)]["state"] if plan else "pending"
                if ready_at is None and st in ("ready", "activating", "done"):
                    ready_at = loop.time() - t0
                    out["rounds_during_transfer"] = list(rounds[r0:])
                if plan is not None and st in ("done", "failed", "skipped"):
                    done_at = loop.time() - t0
                    out["final"] = st
                    out["error"] = plan["nodes"][str(FW_ADDR)]["error"]
                    break
            stop.set()
            await asyncio.gather(polling, running, return_exceptions=True)
    during = out.get("rounds_during_transfer") or rounds[r0:]
    bundle_size = os.path.getsize(bundle_path)
    out.update(
        {
            "bundle_bytes": bundle_size,
            "chunks": engine.stats["chunks"],
            "chunk_replies": engine.stats["chunk_replies"],
            "gaps": engine.stats["gaps"],
            "ready_s": ready_at,
            "done_s": done_at,
            "rounds": len(during),
            "round_max_s": max(during) if during else None,
            "round_mean_s": statistics.mean(during) if during else None,
            "fw_version": fw.version,
            "fw_boots": fw.boots,
            "period_s": period_s,
            "per_gap": per_gap,
            "nodes": nodes,
        }
    )
    return out


# ---- 3. tampered bundles ----------------------------------------------------------------------------------------


def _feed(data: bytes, pub: bytes, target: str, oid: int | None = None) -> tuple[int, int]:
    """Begin and stream ``data`` into a fresh updater; ``(state, reason)`` at the end."""
    import phaseboot

    from phasecore import codes, ota
    from phasenode.ota import Updater

    root = tempfile.mkdtemp(prefix="phasekit-ota-tamper-")
    try:
        u = Updater(
            phaseboot.PosixFs(root, fsync=False), pub, target, mpy=None, version=(0, 1, 0), min_version=(0, 1, 0)
        )
        if oid is None:
            try:
                n = ota.envelope_len(data)
                oid = ota.bundle_id(ota.decode_envelope(data[ota.HEAD_FIXED : ota.HEAD_FIXED + n])[0])
            except ota.OtaRefused:
                oid = 1
        chunk = ota.DEFAULT_CHUNK
        outcome, reason = u.command(
            {"ota": codes.OTA_BEGIN, "ota_id": oid, "ota_size": len(data), "ota_chunk": chunk}, 0
        )
        if outcome:
            return ota.REFUSED, reason
        st = u.data(oid, 0, b"", 0)
        while st["state"] == ota.RECEIVING:
            i = st["next"]
            st = u.data(oid, i, data[i * chunk : (i + 1) * chunk], 0)
        return st["state"], st.get("reason", 0)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def tamper_matrix(path: str, pub: bytes, key: Any, trials: int, seed: int) -> list[dict[str, Any]]:
    """Every kind of bad bundle, ``trials`` random positions per changed part; what the node said each time."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from phasecore import codes, ota
    from phasekit.release import bundle_bytes

    rng = random.Random(seed)
    good = open(path, "rb").read()
    head = ota.parse_head(good)
    m = head.manifest
    files: list[tuple[str, bytes]] = []
    at = head.files_at
    for p, size, _h in head.files:
        files.append((p, good[at : at + size]))
        at += size
    m_at = good.index(head.manifest_bytes)
    sig_at = head.table_at - ota.SIG_LEN
    kid_at = sig_at - 2 - ota.KID_LEN  # the signature's bstr head (0x58 0x40) sits between them

    def flip(i: int) -> bytes:
        b = bytearray(good)
        b[i] ^= 1 << rng.randrange(8)
        return bytes(b)

    R = codes
    rows: list[dict[str, Any]] = []

    def run(kind: str, samples: list[tuple[bytes, int | None]], ok: tuple[int, ...]) -> None:
        seen: dict[str, int] = {}
        typed = 0
        for data, oid in samples:
            state, reason = _feed(data, pub, m["target"], oid)
            name = codes.OTA_REASON_NAMES.get(reason, "state %d reason %d" % (state, reason))
            seen[name] = seen.get(name, 0) + 1
            typed += state == ota.REFUSED and reason in ok
        rows.append({"kind": kind, "trials": len(samples), "typed": typed, "reasons": seen})

    run(
        "one byte of a file",
        [(flip(rng.randrange(head.files_at, head.total)), None) for _ in range(trials)],
        (R.R_OTA_BAD_HASH,),
    )
    run(
        "one byte of the file table",
        [(flip(rng.randrange(head.table_at, head.files_at)), None) for _ in range(trials)],
        (R.R_OTA_BAD_HASH, R.R_OTA_BAD_BUNDLE),
    )
    # The manifest: any byte. The Pi names a bundle by the id of the manifest it sends; a manifest that no
    # longer decodes is named by the original id (the node refuses it as malformed: BAD_BUNDLE).
    run(
        "one byte of the manifest",
        [(flip(m_at + rng.randrange(len(head.manifest_bytes))), None) for _ in range(trials)],
        (R.R_OTA_BAD_SIGNATURE, R.R_OTA_BAD_BUNDLE),
    )
    run(
        "one byte of the signature",
        [(flip(sig_at + rng.randrange(ota.SIG_LEN)), None) for _ in range(trials)],
        (R.R_OTA_BAD_SIGNATURE,),
    )
    run(
        "one byte of the key id",
        [(flip(kid_at + rng.randrange(ota.KID_LEN)), None) for _ in range(trials)],
        (R.R_OTA_WRONG_KEY,),
    )
    run(
        "one byte of magic or envelope length",
        [(flip(rng.randrange(ota.HEAD_FIXED)), head.id) for _ in range(trials)],
        (R.R_OTA_BAD_BUNDLE,),
    )
    v = m["version"]
    other = Ed25519PrivateKey.generate()
    t = m["target"]
    run(
        "an old version (below the running minimum)",
        [(bundle_bytes(files, (0, 0, 9), (0, 0, 9), t, m["mpy"], None, key), None)],
        (R.R_OTA_DOWNGRADE,),
    )
    run(
        "signed by another key",
        [(bundle_bytes(files, v, m["min_version"], t, m["mpy"], None, other), None)],
        (R.R_OTA_WRONG_KEY,),
    )
    run(
        "not signed",
        [(bundle_bytes(files, v, m["min_version"], t, m["mpy"], None, None), None)],
        (R.R_OTA_BAD_SIGNATURE,),
    )
    run(
        "running version below its minimum",
        [(bundle_bytes(files, (9, 0, 0), (8, 0, 0), t, m["mpy"], None, key), None)],
        (R.R_OTA_TOO_OLD,),
    )
    run(
        "the running version again",
        [(bundle_bytes(files, (0, 1, 0), (0, 1, 0), t, m["mpy"], None, key), None)],
        (R.R_OTA_SAME_VERSION,),
    )
    run(
        "built for the other target",
        [(bundle_bytes(files, v, m["min_version"], "host" if t == "esp32" else "esp32", m["mpy"], None, key), None)],
        (R.R_OTA_WRONG_TARGET,),
    )
    return rows


# ---- main ------------------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """Run the four parts and print their tables; 1 if a target was missed."""
    import json

    from phasecore import ota
    from phasekit.testing import ota_rig

    ok = True
    report: dict[str, Any] = {}
    folder = tempfile.mkdtemp(prefix="phasekit-bench-ota-")
    try:
        _say("building and signing the node firmware bundle (mpy-cross)")
        path, pub, key = real_bundle(folder)
        head = ota.parse_head(open(path, "rb").read())
        report["bundle"] = {
            "bytes": head.total,
            "files": head.manifest["n_files"],
            "manifest": len(head.manifest_bytes),
        }
        print(
            "bundle: %d bytes, %d files, manifest %d bytes (signed), chunk %d bytes: %d chunks"
            % (
                head.total,
                head.manifest["n_files"],
                len(head.manifest_bytes),
                ota.DEFAULT_CHUNK,
                (head.total + ota.DEFAULT_CHUNK - 1) // ota.DEFAULT_CHUNK,
            )
        )

        if not args.skip_delivery:
            _say("delivery: %d nodes at 115200 baud, one of them the real firmware" % args.nodes)
            d = asyncio.run(_delivery(path, pub, args.nodes, args.poll_period_s, args.chunks_per_gap, folder))
            report["delivery"] = d
            met_d = d["ready_s"] is not None and d["ready_s"] < TARGET_DELIVERY_S
            met_r = d["round_max_s"] is not None and d["round_max_s"] < TARGET_ROUND_S
            ok = ok and met_d and met_r and d.get("final") == "done"
            print()
            print(
                "delivery over RS-485, 115200 baud, paced: %d nodes polled every %g s, %d chunks per gap at most"
                % (d["nodes"], d["period_s"], d["per_gap"])
            )
            print(
                "  %-52s %s" % ("bundle received and verified by the node", _s(d["ready_s"], TARGET_DELIVERY_S, met_d))
            )
            print("  %-52s %s" % ("node runs it, confirmed healthy (%s)" % d.get("final"), _s(d["done_s"])))
            print(
                "  %-52s %d, mean %.2f s, max %s"
                % (
                    "polling rounds during the transfer",
                    d["rounds"],
                    d["round_mean_s"] or 0,
                    _s(d["round_max_s"], TARGET_ROUND_S, met_r),
                )
            )
            print("  %-52s %d sent, %d answered, %d gaps" % ("chunks", d["chunks"], d["chunk_replies"], d["gaps"]))
            print(
                "  %-52s %s (boots %d)"
                % ("firmware node's version at the end", ota.version_text(d["fw_version"]), d["fw_boots"])
            )

        _say("tampered bundles: %d random positions per part" % args.tamper_trials)
        rows = tamper_matrix(path, pub, key, args.tamper_trials, args.seed)
        report["tamper"] = rows
        print()
        print("tampered bundles fed to the node's updater (refused with the expected typed reason / trials)")
        for r in rows:
            met = r["typed"] == r["trials"]
            ok = ok and met
            reasons = ", ".join("%s %d" % kv for kv in sorted(r["reasons"].items()))
            print("  %-46s %3d/%-3d %-7s %s" % (r["kind"], r["typed"], r["trials"], "ok" if met else "MISSED", reasons))

        _say("randomized runs: %d" % args.runs)
        import logging

        logging.disable(logging.WARNING)
        try:
            tot = ota_rig.run(args.runs, args.seed, progress=_progress)
        finally:
            logging.disable(logging.NOTSET)
        report["runs"] = {k: v for k, v in vars(tot).items() if k != "failures"}
        report["runs"]["failures"] = [{"seed": s, "problems": p} for s, p in tot.failures]
        ok = ok and not tot.failures
        print()
        print("randomized update runs: power cuts at the node (at any flash write), Pi restarts (at any request)")
        print(
            "  %-52s %d (seeds %d..%d), %.0f s" % ("runs", tot.runs, args.seed, args.seed + tot.runs - 1, tot.seconds)
        )
        print("  %-52s %s" % ("ended on the new version, verified", tot.on.get("new", 0)))
        print("  %-52s %s" % ("ended on the old version, verified", tot.on.get("old", 0)))
        print(
            "  %-52s %s"
            % (
                "ended on anything else (a mix, a broken slot)",
                sum(v for k, v in tot.on.items() if k not in ("new", "old")),
            )
        )
        print("  %-52s %s" % ("tampered bundles among them (refused typed)", _kv(tot.tamper)))
        print("  %-52s %s" % ("bad new versions among them (rolled back)", _kv(tot.bad)))
        print("  %-52s %d" % ("power cuts at the node", tot.node_cuts))
        print("  %-52s %d" % ("Pi restarts", tot.pi_restarts))
        print(
            "  %-52s %d resets, %d crashes"
            % ("node reboots by the update (activate, roll back)", tot.resets, tot.crashes)
        )
        print("  %-52s %d" % ("requests from the Pi", tot.requests))
        print(
            "  %-52s %d ms (relay dead time %d ms)"
            % ("longest house outage of a reboot (no power cut)", tot.max_outage_ms, ota_rig.DEAD_TIME_MS)
        )
        print(
            "  %-52s %d %s"
            % (
                "runs with a problem (mix, relay move, wrong outcome)",
                len(tot.failures),
                "ok" if not tot.failures else "MISSED",
            )
        )
        for seed, problems in tot.failures[:10]:
            print("    seed %d: %s" % (seed, "; ".join(problems)))

        if not args.skip_signature:
            _say("signature check on the MicroPython unix port (100 KB heap)")
            from phasekit.bench import ed25519 as edb

            mpy = edb._micropython(pub, head.manifest_bytes, head.signature, 9, "100K")
            cp = edb._cpython(pub, head.manifest_bytes, head.signature, 9)
            report["signature"] = {"cpython": cp, "micropython": mpy}
            print()
            print("release signature check of this manifest (%d bytes)" % len(head.manifest_bytes))
            print("  %-52s %.2f ms" % ("CPython", cp["ms"]))
            if mpy is None:
                print("  MicroPython: not measured (the worker failed)")
                ok = False
            else:
                est = edb._estimate(mpy, None)
                report["signature"]["esp32"] = est
                print(
                    "  %-52s %.2f ms (median %.2f), heap needed %s KB"
                    % (
                        "MicroPython unix port, 100 KB heap",
                        mpy["ms"],
                        mpy["ms_median"],
                        "%.0f" % mpy["headroom_kib"] if mpy["headroom_kib"] is not None else "?",
                    )
                )
                print(
                    "  %-52s %.2f s (%.2f..%.2f), factor %.0f measured here"
                    % (
                        "ESP32 240 MHz, estimated",
                        mpy["ms"] * est["factor"] / 1e3,
                        mpy["ms"] * est["low"] / 1e3,
                        mpy["ms"] * est["high"] / 1e3,
                        est["factor"],
                    )
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(report, default=str, sort_keys=True))
    return 0 if ok else 1


def _progress(i: int, tot: Any) -> None:
    if i % 50 == 0:
        _say("%d runs, %d with a problem" % (i, len(tot.failures)))


def _s(v: float | None, target: float | None = None, met: bool | None = None) -> str:
    if v is None:
        return "not reached" + ("  MISSED" if target is not None else "")
    text = "%.1f s" % v
    if target is not None:
        text += "  (target < %g s) %s" % (target, "ok" if met else "MISSED")
    return text


def _kv(d: dict[str, int]) -> str:
    return ", ".join("%s %d" % kv for kv in sorted(d.items())) or "none"


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser()
    add_arguments(p)
    sys.exit(main(p.parse_args()))
