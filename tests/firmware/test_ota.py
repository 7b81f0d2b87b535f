"""phasenode.ota (both interpreters): download, verify, activate, confirm, resume and every typed refusal.

The real updater on real files (``phaseboot.PosixFs`` in a fresh folder),
fed the signed bundles of tests/vectors/ota as the Pi cuts them into chunks;
one test goes through the sealed session (OTA command op 6, kind 6 in,
kind 7 out) exactly as the RS-485 link hands frames to it.
"""

import phaseboot

from node_fixtures import ADDR, BOOT_NONCE, SITE_KEY, T0, Clock, Pi, fixed_random, rmtree, tmpdir
from phasecore import codes, keys, msg, ota
from phasecore.replay import SequenceCounter
from phasenode.events import EventQueue
from phasenode.hal.pin_host import RelayBoard
from phasenode.ota import DL_FILE, Updater
from phasenode.relay import RelayController, RelayRules
from phasenode.session import Session
from portable import load_vectors, unhex

V = load_vectors("ota/bundles.json")
KEY = unhex(V["release_key"])
RUNNING = tuple(V["running"])
CHUNK = 100  # smaller than the default, so the head and the files cross chunk boundaries


def _bundle(name):
    return unhex(V["bundles"][name])


class FakeSession:
    """What the health check reads of a session: the Pi's time and whether a reading went out."""

    def __init__(self):
        self.time = None
        self.rebooted = True

    def now_s(self):
        return self.time


def _updater(root, key=KEY, session=None, relay=None, resets=None, events=None, now_ms=0):
    return Updater(
        phaseboot.PosixFs(root, fsync=False),
        key,
        "host",
        events if events is not None else EventQueue(),
        session,
        relay,
        reset=(lambda: resets.append(1)) if resets is not None else None,
        confirm_s=60,
        now_ms=now_ms,
        mpy=None,
        version=RUNNING,
        min_version=tuple(V["running_min"]),
    )


def _begin(u, data, chunk=CHUNK):
    return u.command(
        {"ota": codes.OTA_BEGIN, "ota_id": ota.bundle_id(_manifest(data)), "ota_size": len(data), "ota_chunk": chunk}, 0
    )


def _manifest(data):
    n = ota.envelope_len(data)
    return ota.decode_envelope(data[ota.HEAD_FIXED : ota.HEAD_FIXED + n])[0]


def _send(u, data, start=None, stop=None, chunk=CHUNK):
    """Chunks from the node's own ``next`` on (as the Pi sends them); returns (last status, chunks sent)."""
    oid = ota.bundle_id(_manifest(data))
    st = u.data(oid, 0, b"", 0)
    sent = 0
    while st["state"] == ota.RECEIVING and (stop is None or sent < stop):
        i = st["next"] if start is None else start
        start = None
        st = u.data(oid, i, data[i * chunk : (i + 1) * chunk], 0)
        sent += 1
    return st, sent


def test_a_good_bundle_is_received_verified_activated_and_confirmed():
    root = tmpdir("ota")
    try:
        data = _bundle("good")
        ev = EventQueue()
        resets = []
        u = _updater(root, events=ev, resets=resets)
        assert _begin(u, data) == (0, 0)
        st, sent = _send(u, data)
        assert st["state"] == ota.READY and sent == (len(data) + CHUNK - 1) // CHUNK  # nothing sent twice
        assert ev.pop() == (codes.EV_OTA_READY, ota.pack_version((1, 1, 0)), ota.bundle_id(_manifest(data)))
        fs = phaseboot.PosixFs(root, fsync=False)
        slot = u.dl["slot"]
        assert slot == "a" and fs.size("fw/a/lib/phasenode/__init__.mpy") == 0
        assert fs.size("fw/a/lib/phasenode/sub/deep.mpy") == 230
        # Activation: the trial is written at once, the reset comes once the ack has had time to leave.
        assert u.command({"ota": codes.OTA_ACTIVATE, "ota_id": ota.bundle_id(_manifest(data))}, 1000) == (0, 0)
        assert phaseboot.load(fs)["trial"] == "a" and fs.size(DL_FILE) == -1
        assert u.status()["state"] == ota.ACTIVATING
        u.tick(1500)
        assert resets == []
        u.tick(3100)
        assert resets == [1]
        # The trial boot: the boot selector picks slot a; the health check confirms once the Pi talked.
        path = []
        sel = phaseboot.select(fs, power_on=False, path=path)
        sel.booted()
        assert sel.slot == "a" and sel.trial and path == [fs.path("fw/a/lib")]
        s = FakeSession()
        u2 = _updater(root, session=s, events=ev)
        assert u2.trial and u2.status()["state"] == ota.TRIAL
        u2.tick(1000)
        assert phaseboot.load(fs)["trial"] == "a"  # no Pi contact yet
        s.time = T0
        s.rebooted = False
        u2.tick(2000)
        st = phaseboot.load(fs)
        assert (st["confirmed"], st["trial"]) == ("a", None)
        assert ev.pop()[0] == codes.EV_OTA_CONFIRMED
        assert u2.status()["state"] == ota.IDLE
    finally:
        rmtree(root)


def test_a_download_resumes_after_a_reboot_without_resending_what_arrived():
    root = tmpdir("ota")
    try:
        data = _bundle("good")
        u = _updater(root)
        _begin(u, data)
        st, sent = _send(u, data, stop=9)  # the head and part of the files
        assert st["state"] == ota.RECEIVING and st["next"] == 9
        u = _updater(root)  # a reboot: a new updater reads the download back from flash
        assert _begin(u, data) == (0, 0)  # the same bundle again: resumed, not restarted
        st, more = _send(u, data)
        assert st["state"] == ota.READY and sent + more == (len(data) + CHUNK - 1) // CHUNK
        # A chunk out of order is not written; the status says which one is wanted.
        u = _updater(root)
        assert u.status()["state"] == ota.READY
    finally:
        rmtree(root)


def test_a_file_cut_short_on_flash_is_completed_from_its_length():
    root = tmpdir("ota")
    try:
        data = _bundle("good")
        u = _updater(root)
        _begin(u, data)
        _send(u, data)
        fs = phaseboot.PosixFs(root, fsync=False)
        # What a cut mid-download leaves on LittleFS: a file with the length of its last whole append.
        whole = fs.read("fw/a/lib/phasecore/cbor.mpy", 4096)
        fs.remove("fw/a/lib/phasecore/cbor.mpy")
        fs.append("fw/a/lib/phasecore/cbor.mpy", whole[:333])
        dl = fs.read(DL_FILE, 512).replace(b'"state": 2', b'"state": 1')
        fs.write_atomic(DL_FILE, dl)  # (the checksum now fails: the download is forgotten)
        u = _updater(root)
        assert u.dl is None
        _begin(u, data)  # a fresh download of the same bundle...
        st, sent = _send(u, data)
        assert st["state"] == ota.READY and sent == (len(data) + CHUNK - 1) // CHUNK
    finally:
        rmtree(root)


def test_every_kind_of_bad_bundle_is_refused_with_its_typed_reason_before_a_file_is_written():
    cases = [
        ("same", codes.R_OTA_SAME_VERSION),
        ("old", codes.R_OTA_DOWNGRADE),
        ("too_old", codes.R_OTA_TOO_OLD),
        ("other_key", codes.R_OTA_WRONG_KEY),
        ("unsigned", codes.R_OTA_BAD_SIGNATURE),
        ("esp32", codes.R_OTA_WRONG_TARGET),
    ]
    for name, reason in cases:
        root = tmpdir("ota")
        try:
            data = _bundle(name)
            ev = EventQueue()
            u = _updater(root, events=ev)
            assert _begin(u, data) == (0, 0), name
            st, _ = _send(u, data)
            assert (st["state"], st.get("reason")) == (ota.REFUSED, reason), (name, st)
            fs = phaseboot.PosixFs(root, fsync=False)
            assert fs.size("fw/a/lib") == -1, name  # the slot is emptied; no file of it was ever written
            assert ev.pop() == (codes.EV_OTA_REFUSED, reason, ota.bundle_id(_manifest(data)))
            # Asked again, it is refused at once with the same reason (no second download).
            assert _begin(_updater(root), data) == (1, reason), name
        finally:
            rmtree(root)


def _flip(data, at):
    b = bytearray(data)
    b[at] ^= 0x01
    return bytes(b)


def test_one_changed_byte_anywhere_is_refused_typed():
    good = _bundle("good")
    n = ota.envelope_len(good)
    m, kid, sig = ota.decode_envelope(good[ota.HEAD_FIXED : ota.HEAD_FIXED + n])
    head = ota.Head(n, m, kid, sig)
    table_at = head.table_at
    files_at = head.files_at
    m_at = good.index(m)
    cases = [
        (files_at + 5, codes.R_OTA_BAD_HASH),  # a byte of the first file
        (len(good) - 1, codes.R_OTA_BAD_HASH),  # the last byte of the last file
        (table_at + 3, codes.R_OTA_BAD_HASH),  # the file table
        (m_at + m.index(head.manifest["table_sha256"]) + 4, codes.R_OTA_BAD_SIGNATURE),  # the manifest
        (table_at - 2, codes.R_OTA_BAD_SIGNATURE),  # the signature
        (table_at - 64 - 3, codes.R_OTA_WRONG_KEY),  # the key id
        (0, codes.R_OTA_BAD_BUNDLE),  # the magic
    ]
    for at, reason in cases:
        root = tmpdir("ota")
        try:
            data = _flip(good, at)
            u = _updater(root)
            # The Pi names the bundle by the id of what it sends (the manifest as it is).
            oid = ota.bundle_id(_manifest(data)) if at else ota.bundle_id(m)
            assert u.command({"ota": codes.OTA_BEGIN, "ota_id": oid, "ota_size": len(data), "ota_chunk": CHUNK}, 0) == (
                0,
                0,
            )
            st, _ = _send(u, data) if at else _send_raw(u, oid, data)
            assert (st["state"], st.get("reason")) == (ota.REFUSED, reason), (at, st)
            assert u.command({"ota": codes.OTA_ACTIVATE, "ota_id": oid}, 0) == (1, codes.R_OTA_NOT_READY)
        finally:
            rmtree(root)


def _send_raw(u, oid, data, chunk=CHUNK):
    st = u.data(oid, 0, b"", 0)
    while st["state"] == ota.RECEIVING:
        i = st["next"]
        st = u.data(oid, i, data[i * chunk : (i + 1) * chunk], 0)
    return st, 0


def test_commands_out_of_place_are_refused_typed():
    root = tmpdir("ota")
    try:
        data = _bundle("good")
        oid = ota.bundle_id(_manifest(data))
        assert _begin(_updater(root, key=None), data) == (1, codes.R_OTA_NO_KEY)
        u = _updater(root)
        assert u.command({"ota": codes.OTA_ACTIVATE, "ota_id": oid}, 0) == (1, codes.R_OTA_UNKNOWN)
        assert u.data(oid, 0, b"x", 0)["reason"] == codes.R_OTA_UNKNOWN
        _begin(u, data)
        assert u.command({"ota": codes.OTA_ACTIVATE, "ota_id": oid}, 0) == (1, codes.R_OTA_NOT_READY)
        big = ota.MAX_FILES_LEN + 20000
        assert u.command({"ota": codes.OTA_BEGIN, "ota_id": 5, "ota_size": big, "ota_chunk": CHUNK}, 0) == (
            1,
            codes.R_OTA_NO_SPACE,
        )
        # A chunk of the wrong length, or past the end, is ignored: the status says what is wanted.
        assert u.data(oid, 0, data[: CHUNK - 1], 0)["next"] == 0
        assert u.data(oid, 10000, data[:CHUNK], 0)["next"] == 0
        # Cancel: the download and its slot are gone.
        assert u.command({"ota": codes.OTA_CANCEL, "ota_id": oid}, 0) == (0, 0)
        assert u.dl is None and phaseboot.PosixFs(root, fsync=False).size("fw/a") == -1
        # During an unconfirmed trial nothing new is begun.
        fs = phaseboot.PosixFs(root, fsync=False)
        fs.makedirs("fw/b/lib")
        phaseboot.activate(fs, "b", (1, 1, 0))
        assert _begin(_updater(root), data) == (1, codes.R_OTA_BUSY)
    finally:
        rmtree(root)


def test_an_unhealthy_trial_fails_at_its_deadline_and_resets_only_when_the_relay_allows():
    root = tmpdir("ota")
    try:
        fs = phaseboot.PosixFs(root, fsync=False)
        fs.makedirs("fw/a/lib")
        phaseboot.activate(fs, "a", (1, 1, 0))
        phaseboot.select(fs, power_on=False, path=[]).booted()
        clock = Clock(0)
        board = RelayBoard(True, clock=clock)
        saved = {}
        rules = RelayRules(dead_time_ms=100, min_dwell_s=120, settle_ms=0)
        relay = RelayController(board.pins, True, lambda: saved.get("s"), lambda s: saved.update(s=s), 0, rules, 0)
        relay.tick(200)  # the restore after boot: the house back on A after the dead time
        resets = []
        u = _updater(root, session=FakeSession(), relay=relay, resets=resets)
        clock.t = 30000
        relay.tick(clock.t)
        u.tick(clock.t)
        assert phaseboot.load(fs)["failed"] == 0 and resets == []
        clock.t = 61000  # past the 60 s deadline: failed, but the relay's dwell (120 s since the make) holds the reset
        relay.tick(clock.t)
        u.tick(clock.t)
        assert phaseboot.load(fs)["failed"] == ota.RB_HEALTH and resets == []
        assert board.closed() == [0]  # the house stays on its phase meanwhile
        clock.t = 121000
        relay.tick(clock.t)
        u.tick(clock.t)
        assert resets == [1]
        sel = phaseboot.select(fs, power_on=True, path=[])
        sel.booted()
        assert (sel.slot, sel.rolled_back) == ("lib", ota.RB_HEALTH)
        # The next boot reports the rollback once, as an event with the reason and the version.
        ev = EventQueue()
        _updater(root, events=ev)
        assert ev.pop() == (codes.EV_OTA_ROLLED_BACK, ota.RB_HEALTH, ota.pack_version((1, 1, 0)))
        ev = EventQueue()
        u = _updater(root, events=ev)
        assert len(ev) == 0 and u.status()["rollback"] == ota.RB_HEALTH
    finally:
        rmtree(root)


def test_the_sealed_path_op_6_kind_6_in_kind_7_out_and_retries_get_the_same_status():
    root = tmpdir("ota")
    try:
        data = _bundle("good")
        oid = ota.bundle_id(_manifest(data))
        store = {}
        nk = keys.NodeKeys.from_site_key(SITE_KEY, ADDR, 0)
        made = []

        def factory():
            made.append(1)
            return _updater(root)

        s = Session(
            nk.node_context(),
            SequenceCounter(lambda: store.get("seq"), lambda n: store.update(seq=n)),
            (lambda: store.get("rx"), lambda n: store.update(rx=n)),
            random=fixed_random,
            ota=factory,
        )
        pi = Pi()
        assert not made  # nothing loaded until an update begins
        pi.frames([])
        hb = pi.sealed(msg.HEARTBEAT, {"uptime_s": 1, "fw": "pi", "time_s": T0, "echo": BOOT_NONCE})
        s.handle(hb, 0)
        cmd = pi.sealed(
            msg.COMMAND,
            {
                "id": 1,
                "op": msg.OP_OTA,
                "deadline_s": T0 + 60,
                "ota": 1,
                "ota_id": oid,
                "ota_size": len(data),
                "ota_chunk": 200,
            },
        )
        kind, _, ack = _open(pi, s.handle(cmd, 0))
        assert (kind, ack["outcome"], made) == (msg.ACK, msg.ACK_DONE, [1])
        nxt = 0
        while True:
            chunk = pi.sealed(msg.OTA_DATA, {"ota_id": oid, "index": nxt, "data": data[nxt * 200 : (nxt + 1) * 200]})
            reply = s.handle(chunk, 0)
            assert s.handle(chunk, 0) == reply  # the Pi's retry of the same bytes: the same status, nothing twice
            kind, _, st = _open(pi, reply)
            assert kind == msg.OTA_STATUS and st["ota_id"] == oid and st["version"] == RUNNING
            if st["state"] != ota.RECEIVING:
                break
            nxt = st["next"]
        assert st["state"] == ota.READY
        # A node without the factory (deployed before updates) says UNSUPPORTED.
        plain = Session(
            nk.node_context(),
            SequenceCounter(lambda: None, lambda n: None),
            (lambda: None, lambda n: None),
            random=fixed_random,
        )
        pi = Pi()  # a node of its own, its counter from 0
        plain.handle(pi.sealed(msg.HEARTBEAT, {"uptime_s": 1, "fw": "pi", "time_s": T0, "echo": BOOT_NONCE}), 0)
        cmd = pi.sealed(msg.COMMAND, {"id": 2, "op": msg.OP_OTA, "deadline_s": T0 + 60, "ota": 2, "ota_id": oid})
        assert _open(pi, plain.handle(cmd, 0))[2]["outcome"] == msg.ACK_UNSUPPORTED
    finally:
        rmtree(root)


def _open(pi, payload):
    from phasecore import seal

    kind, seq, plain = seal.open_raw(payload, seal.kid_of(ADDR), pi.gw.recipients)
    return kind, seq, msg.decode(kind, plain)
