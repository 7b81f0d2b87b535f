"""The node's persisted files (both interpreters): config validation, atomic writes, corruption.

Real files in a fresh folder under /tmp. Every way a cut can leave a write
(nothing, a torn tmp, a complete tmp not yet renamed, a FAT rename that
deleted the old file first, the new file) must load as the old or the new
state; garbage of every kind gives the typed error and an event, never a crash.
"""

import json
import os

from node_fixtures import rmtree, tmpdir
from phasecore.codes import PHASE_A, PHASE_B, PHASE_C, PHASE_NONE
from phasecore.crc import crc16
from phasenode import persist as P
from phasenode import settings as S
from phasenode.relay import RelayRules
from portable import raises

GOOD = {
    "format": 1,
    "node": {"id": "feeder7-n042", "address": 42},
    "key": {"file": "node.key", "generation": 3},
    "board": "esp32-devkitc-max485",
    "home_phase": "B",
    "limits": {"overcurrent_ma": 32000},
    "relay": {"dead_time_ms": 3000, "max_per_day": 8},
}

STATE = {
    "phase": PHASE_B,
    "intent": PHASE_NONE,
    "uptime_s": 5000,
    "moves": [100, 4000],
    "locks": 1,
    "n_moves": 7,
    "n_aborts": 0,
}


def _copy(obj):
    return json.loads(json.dumps(obj))


def _put(root, name, data):
    with open(root + "/" + name, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def _file_text(state):
    # The bytes Store.save_relay writes for ``state``.
    root = tmpdir("persist")
    try:
        P.Store(root).save_relay(state)
        with open(root + "/relay.json", "rb") as f:
            return f.read()
    finally:
        rmtree(root)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


# --- config -------------------------------------------------------------------------


def test_config_round_trip_fills_defaults():
    root = tmpdir("persist")
    try:
        st = P.Store(root + "/")  # a trailing slash is fine
        cfg = st.save_config(_copy(GOOD))
        assert not _exists(root + "/config.json.tmp")
        cfg = st.load_config()
        assert cfg.node_id == "feeder7-n042" and cfg.address == 42
        assert cfg.key_file == "node.key" and cfg.key_generation == 3 and cfg.seq_name == "g3"
        assert cfg.board == "esp32-devkitc-max485" and cfg.home_phase == PHASE_B
        assert cfg.limits == {
            "overcurrent_ma": 32000,
            "overvoltage_dv": 2530,
            "undervoltage_dv": 2070,
            "meter_silent_ms": 10000,
        }
        assert isinstance(cfg.rules, RelayRules)
        assert cfg.rules.dead_time_ms == 3000 and cfg.rules.max_per_day == 8 and cfg.rules.min_dwell_s == 900
        minimal = _copy(GOOD)
        del minimal["limits"]
        del minimal["relay"]
        del minimal["key"]["generation"]
        cfg = S.validate_config(minimal)
        assert cfg.key_generation == 0 and cfg.rules.as_dict() == RelayRules().as_dict()
    finally:
        rmtree(root)


def test_missing_or_garbage_config_is_an_error_not_a_crash():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        e = raises(P.ConfigError, st.load_config)
        assert e.file == "config.json" and "provision" in str(e)
        for garbage in (b"", b"\xff\xfe\x00", b"{", b"[]", b'{"format": 1', b"null", b"x" * 9000):
            _put(root, "config.json", garbage)
            e = raises(P.ConfigError, st.load_config)
            assert e.file == "config.json"
        _put(root, "config.json", json.dumps({"format": 1, "node": {"id": "n1"}}))
        assert raises(P.ConfigError, st.load_config).key == "key"
        raises(P.ConfigError, st.save_config, {"format": 1})
        assert not _exists(root + "/config.json.tmp")
        e = raises(P.PersistError, P.Store, root + "/nope")
        assert "does not exist" in str(e)
        raises(ValueError, P.Store, "")
    finally:
        rmtree(root)


def test_node_secret_is_read_by_reference_and_checked():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        cfg = st.save_config(_copy(GOOD))
        e = raises(P.ConfigError, st.read_secret, cfg)
        assert e.file == "node.key"
        secret = bytes(range(32))
        st.write_secret("node.key", secret)
        assert st.read_secret(cfg) == secret
        for bad in (b"", bytes(31), bytes(33)):
            _put(root, "node.key", bad)
            assert raises(P.ConfigError, st.read_secret, cfg).file == "node.key"
        raises(P.ConfigError, st.write_secret, "node.key", bytes(16))
        raises(P.ConfigError, st.write_secret, "../x", secret)
    finally:
        rmtree(root)


# --- relay state ------------------------------------------------------------------


def test_relay_state_round_trip_and_validation_before_writing():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        load, save = st.relay_storage()
        assert load() is None
        save(_copy(STATE))
        got = load()
        assert got == STATE, got
        for key, value in (
            ("phase", 4),
            ("intent", -1),
            ("moves", [5, 3]),
            ("moves", [9000]),
            ("locks", 256),
            ("uptime_s", "1"),
            ("n_moves", None),
            ("moves", "x"),
        ):
            bad = _copy(STATE)
            bad[key] = value
            e = raises(P.CorruptStateError, save, bad)
            assert e.key == key and e.file == "relay.json"
        bad = _copy(STATE)
        del bad["n_aborts"]
        assert raises(P.CorruptStateError, save, bad).key == "n_aborts"
        raises(P.CorruptStateError, save, [1])
        assert load() == STATE  # nothing invalid was written
        assert st.pop_events() == []
    finally:
        rmtree(root)


def test_garbage_relay_state_gives_typed_error_and_an_event():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        cases = [
            b"",
            b"\x00" * 40,
            b"\xff\xfe\xfd",
            b"{",
            b"[1, 2]",
            b"42",
            b'"s"',
            b"{}",
            b'{"format": 2, "phase": 1}',
            b'{"format": "1"}',
            b"[" * 3000 + b"]" * 3000,
            b"x" * 5000,
        ]
        st.save_relay(_copy(STATE))
        with open(root + "/relay.json", "rb") as f:
            text = f.read()
        for cut in (1, len(text) // 2, len(text) - 1):
            cases.append(text[:cut])  # torn writes
        mutated = bytearray(text)
        for i in range(0, len(mutated), 7):
            m = bytearray(mutated)
            m[i] ^= 0x55
            cases.append(bytes(m))  # bit flips
        ok = 0
        for data in cases:
            _put(root, "relay.json", data)
            try:
                st.load_relay()
                ok += 1
            except P.CorruptStateError as e:
                assert e.file == "relay.json"
                ev = st.pop_events()
                assert len(ev) == 1 and ev[0][0] == P.EV_CORRUPT and ev[0][1] == "relay.json", ev
        assert ok == 0, "a damaged file loaded as a state"
    finally:
        rmtree(root)


def test_every_cut_point_of_a_write_loads_old_or_new():
    old = _copy(STATE)
    new = _copy(STATE)
    new["phase"], new["intent"], new["moves"] = 2, 3, [100, 4000, 5000]
    new["uptime_s"] = 5000
    new_text = _file_text(new)
    old_text = _file_text(old)
    # What a cut can leave, write by write: (relay.json, relay.json.tmp), None = absent.
    leftovers = [
        (old_text, None),  # cut before the tmp was created
        (old_text, b""),  # tmp created, nothing in it
        (old_text, new_text[:17]),  # tmp torn
        (old_text, new_text),  # tmp complete, rename not done
        (None, new_text),  # FAT: old deleted by rename, tmp not yet renamed
        (new_text, None),  # done
    ]
    for main, tmp in leftovers:
        root = tmpdir("persist")
        try:
            if main is not None:
                _put(root, "relay.json", main)
            if tmp is not None:
                _put(root, "relay.json.tmp", tmp)
            st = P.Store(root)
            got = st.load_relay()
            assert got == old or got == new, (main, tmp, got)
            if main is None:
                assert got == new and st.pop_events()[0][0] == P.EV_FROM_TMP
            # The next save replaces whatever the cut left.
            st.save_relay(new)
            assert st.load_relay() == new and not _exists(root + "/relay.json.tmp")
        finally:
            rmtree(root)
    root = tmpdir("persist")
    try:
        _put(root, "relay.json", b"garbage")
        _put(root, "relay.json.tmp", new_text)
        st = P.Store(root)
        assert st.load_relay() == new  # a complete tmp rescues a bad file
        _put(root, "relay.json.tmp", new_text[:10])
        raises(P.CorruptStateError, st.load_relay)  # a torn one does not
    finally:
        rmtree(root)


def _format1_text(phase, intent, uptime_s=5000, moves=(100, 4000), locks=0, n_moves=7, n_aborts=1, crc=None):
    # relay.json as format-1 firmware wrote it: phases 0 none, 1 A, 2 B, 3 C, and
    # the crc over "phase,intent,uptime_s,locks,n_moves,n_aborts;moves" of those values.
    if crc is None:
        text = ",".join("%d" % v for v in (phase, intent, uptime_s, locks, n_moves, n_aborts))
        crc = crc16((text + ";" + ",".join("%d" % m for m in moves)).encode())
    return json.dumps(
        {
            "format": 1,
            "phase": phase,
            "intent": intent,
            "uptime_s": uptime_s,
            "moves": list(moves),
            "locks": locks,
            "n_moves": n_moves,
            "n_aborts": n_aborts,
            "crc": crc,
        }
    )


def test_format_1_relay_state_of_older_firmware_loads_in_the_wire_numbering():
    # A node upgraded in the field: its relay.json is format 1, in the relay's old numbering.
    old_to_wire = ((0, PHASE_NONE), (1, PHASE_A), (2, PHASE_B), (3, PHASE_C))
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        for old_phase, phase in old_to_wire:
            for old_intent, intent in old_to_wire:
                _put(root, "relay.json", _format1_text(old_phase, old_intent))
                got = st.load_relay()
                assert (got["phase"], got["intent"]) == (phase, intent), (old_phase, old_intent, got)
                assert got["uptime_s"] == 5000 and got["moves"] == [100, 4000] and got["n_aborts"] == 1
        assert st.pop_events() == []
        # The next save writes format 2, and it reads back as it was.
        _put(root, "relay.json", _format1_text(2, 3, locks=0x21))
        state = st.load_relay()
        assert (state["phase"], state["intent"], state["locks"]) == (PHASE_B, PHASE_C, 0x21)
        st.save_relay(state)
        with open(root + "/relay.json", "rb") as f:
            assert json.loads(f.read())["format"] == P.RELAY_FORMAT == 2
        assert st.load_relay() == state
    finally:
        rmtree(root)


def test_format_1_crc_is_checked_over_the_old_form():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        good = _format1_text(2, 0)
        # A flipped bit in the old form: phase 2 (B) read as 3 (C), crc of 2 kept.
        crc = json.loads(good)["crc"]
        _put(root, "relay.json", _format1_text(3, 0, crc=crc))
        assert raises(P.CorruptStateError, st.load_relay).key == "crc"
        # A format-1 file whose crc covers the values as they are on the wire
        # (a crc over the wrong form) is refused too, not converted.
        text = ",".join("%d" % v for v in (PHASE_B, PHASE_NONE, 5000, 0, 7, 1)) + ";100,4000"
        _put(root, "relay.json", _format1_text(2, 0, crc=crc16(text.encode())))
        assert raises(P.CorruptStateError, st.load_relay).key == "crc"
        # A format-2 file whose "format" reads 1 fails its crc: the crc covers the format.
        st.save_relay(
            {
                "phase": PHASE_A,
                "intent": PHASE_NONE,
                "uptime_s": 5000,
                "moves": [100, 4000],
                "locks": 0,
                "n_moves": 7,
                "n_aborts": 1,
            }
        )
        with open(root + "/relay.json", "rb") as f:
            obj = json.loads(f.read())
        obj["format"] = 1
        _put(root, "relay.json", json.dumps(obj))
        assert raises(P.CorruptStateError, st.load_relay).key == "crc"
        # Formats other than 1 and 2 are unreadable (firmware newer than this one).
        obj["format"] = 3
        _put(root, "relay.json", json.dumps(obj))
        assert raises(P.CorruptStateError, st.load_relay).key == "format"
        _put(root, "relay.json", good)
        assert st.load_relay()["phase"] == PHASE_B
    finally:
        rmtree(root)


# --- sequence bounds ------------------------------------------------------------------


def test_sequence_storage_keeps_two_copies_and_takes_the_larger():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        load, save = st.sequence_storage("g0")
        assert load() is None
        save(256)
        assert load() == 256
        save(512)
        assert load() == 512
        assert _exists(root + "/seq-g0.json") and _exists(root + "/seq-g0.bak.json")
        # A cut between the two copies leaves main newer than the backup.
        _put(root, "seq-g0.bak.json", '{"format": 1, "bound": 256, "crc": %d}' % P._digest((256,), ()))
        assert load() == 512
        _put(root, "seq-g0.json", "torn{")
        assert load() == 256
        codes = [e[0] for e in st.pop_events()]
        assert P.EV_SEQ_COPY_BAD in codes
        _put(root, "seq-g0.bak.json", '{"format": 1, "bound": 256, "crc": 1}')
        e = raises(P.SequenceLostError, load)
        assert "rekey" in str(e) and e.file == "seq-g0.json"
        st.pop_events()
        save(768)  # a save repairs both
        assert load() == 768 and st.pop_events() == []
        other_load, other_save = st.sequence_storage("g1")
        assert other_load() is None  # a new key generation starts its own
        for bad in (-1, 1.5, "7", True, None):
            raises(ValueError, save, bad)
        save(2**40)
        assert load() == 2**40
        for bad in ("", "a/b", "x" * 25, ".hidden", 3):
            raises(P.ConfigError, st.sequence_storage, bad)
    finally:
        rmtree(root)


# --- session state: the Pi's sequence number, the operator lock -----------------------


def test_pi_sequence_is_kept_per_key_generation_in_the_files_older_firmware_wrote():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        st.sequence_storage("pirx-g2")[1](700)  # as firmware before pi_seq_storage saved it
        load, save = st.pi_seq_storage(2)
        assert load() == 700
        save(900)
        assert load() == 900 and st.sequence_storage("pirx-g2")[0]() == 900
        assert st.pi_seq_storage(3)[0]() is None  # a new key generation starts its own
        for name in ("seq-pirx-g2.json", "seq-pirx-g2.bak.json"):
            _put(root, name, b"\x00garbage")
        raises(P.SequenceLostError, load)  # unreadable: the session refuses commands
        for bad in (-1, 65536, True, "g0"):
            raises(P.ConfigError, st.pi_seq_storage, bad)
    finally:
        rmtree(root)


def test_operator_lock_goes_back_to_zero_in_one_atomic_file():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        load, save = st.oplock_storage()
        assert load() == 0  # never locked
        save(8)
        assert load() == 8
        save(0)
        assert load() == 0 and not _exists(root + "/oplock.json.tmp")
        save(256)
        assert load() == 256
        for bad in (-1, 257, True, "1", None):
            raises(ValueError, save, bad)
        assert load() == 256
        # A FAT rename that deleted the old file first: the complete .tmp is used.
        os.rename(root + "/oplock.json", root + "/oplock.json.tmp")
        assert load() == 256 and st.pop_events()[0][0] == P.EV_FROM_TMP
        save(3)
        # A flipped bit that still parses: the CRC catches it.
        with open(root + "/oplock.json", "rb") as f:
            obj = json.loads(f.read().decode())
        obj["oplock"] = 2
        _put(root, "oplock.json", json.dumps(obj))
        e = raises(P.CorruptStateError, load)
        assert e.file == "oplock.json" and e.key == "crc"
        _put(root, "oplock.json", '{"format": 1, "oplock": 999, "crc": %d}' % P._digest((999,), ()))
        assert raises(P.CorruptStateError, load).key == "oplock"
        _put(root, "oplock.json", "torn{")
        raises(P.CorruptStateError, load)
        save(0)  # a save repairs it
        assert load() == 0
    finally:
        rmtree(root)


def test_operator_lock_of_older_firmware_is_read_then_replaced():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        st.sequence_storage("oplock")[1](8)  # how firmware before oplock.json saved a LOCK
        load, save = st.oplock_storage()
        assert load() == 8
        assert not _exists(root + "/oplock.json")  # reading migrates nothing by itself
        save(0)
        assert load() == 0
        assert not _exists(root + "/seq-oplock.json") and not _exists(root + "/seq-oplock.bak.json")
        # Both old copies unreadable, no oplock.json yet: an unreadable lock, not "unlocked".
        os.remove(root + "/oplock.json")
        _put(root, "seq-oplock.json", "torn{")
        _put(root, "seq-oplock.bak.json", b"\xff")
        e = raises(P.CorruptStateError, load)
        assert e.file == "seq-oplock.json"
        # An old value no LOCK can have given.
        st.sequence_storage("oplock")[1](4096)
        assert raises(P.CorruptStateError, load).key == "bound"
    finally:
        rmtree(root)


def test_store_events_are_bounded():
    root = tmpdir("persist")
    try:
        st = P.Store(root)
        _put(root, "relay.json", b"garbage")
        for _ in range(40):
            raises(P.CorruptStateError, st.load_relay)
        assert len(st.pop_events()) == 16 and st.events_dropped == 24 and st.pop_events() == []
    finally:
        rmtree(root)
