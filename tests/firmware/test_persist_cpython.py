"""phasenode.persist on the node's real file systems, and against hostile files (CPython drives).

- Power cut at every block write: the MicroPython unix port mounts LittleFS v2
  (the ESP32 default) and FAT on a RAM block device that stops writing at
  operation k (tearing that one), for every k through a relay-state save and a
  sequence-bound save; remounted, the files must load as the old or the new
  state, never fail. On FAT, whose rename deletes the old file first, some cut
  points must be rescued by the complete ``.tmp`` (the fallback is needed).
- Hypothesis: arbitrary bytes and arbitrary JSON in every file give a valid
  value or the typed error, never anything else.
- CPython durability: the file and its folder are fsynced.
"""

import json
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phasecore.codes import PHASE_A, PHASE_B, PHASE_C
from phasekit.testing import micropython
from phasenode import persist as P
from phasenode import settings as S

CUT_SCRIPT = r'''
import os
from phasenode import persist as P

class CutDev:
    """RAM block device that loses power at block operation ``limit`` (torn), none after."""
    def __init__(self, bs, n):
        self.bs = bs
        self.data = bytearray(bs * n)
        self.ops = 0
        self.limit = -1
    def _alive(self):
        if self.limit < 0:
            return 2
        self.ops += 1
        if self.ops < self.limit:
            return 2
        return 1 if self.ops == self.limit else 0
    def readblocks(self, b, buf, off=0):
        a = b * self.bs + off
        buf[:] = self.data[a:a + len(buf)]
    def writeblocks(self, b, buf, off=None):
        alive = self._alive()
        if alive:
            a = b * self.bs + (off or 0)
            n = len(buf) if alive == 2 else len(buf) // 2
            self.data[a:a + n] = buf[:n]
    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.bs
        if op == 5:
            return self.bs
        if op == 6 and self._alive():
            a = arg * self.bs
            self.data[a:a + self.bs] = b"\xff" * self.bs
        return 0

STATES = []
for i in range(4):
    STATES.append({"phase": 1 + i % 3, "intent": (i % 2) * 2, "uptime_s": 1000 + i, "moves": [5, 900 + i],
                   "locks": i, "n_moves": 10 + i, "n_aborts": 0})

def run(kind, vfs, blocks):
    points = olds = news = rescued = 0
    k = 1
    while True:
        dev = CutDev(512, blocks)
        vfs.mkfs(dev)
        os.mount(vfs(dev), "/cut")
        st = P.Store("/cut")
        for s in STATES[:3]:
            st.save_relay(s)
        save = st.sequence_storage("g0")[1]
        save(512)
        dev.ops = 0
        dev.limit = k
        try:
            st.save_relay(STATES[3])
            save(768)
        except OSError:
            pass
        finished = dev.ops < k
        os.umount("/cut")
        dev.limit = -1
        os.mount(vfs(dev), "/cut")
        st = P.Store("/cut")
        got = st.load_relay()
        bound = st.sequence_storage("g0")[0]()
        if got != STATES[2] and got != STATES[3]:
            print("BAD %s cut %d: relay state %r" % (kind, k, got))
        if bound not in (512, 768):
            print("BAD %s cut %d: sequence bound %r" % (kind, k, bound))
        if got == STATES[3]:
            news += 1
        else:
            olds += 1
        rescued += len([e for e in st.pop_events() if e[0] == P.EV_FROM_TMP])
        os.umount("/cut")
        points += 1
        if finished:
            break
        k += 1
    print("%s points=%d old=%d new=%d rescued=%d" % (kind, points, olds, news, rescued))

run("lfs2", os.VfsLfs2, 48)
run("fat", os.VfsFat, 128)
'''


def test_power_cut_at_every_block_write_on_littlefs_and_fat(tmp_path):
    script = tmp_path / "cut.py"
    script.write_text(CUT_SCRIPT)
    proc = micropython.run([script], heapsize="8M", timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "BAD" not in out, out
    found = dict(
        (m.group(1), [int(x) for x in m.groups()[1:]])
        for m in re.finditer(r"^(\w+) points=(\d+) old=(\d+) new=(\d+) rescued=(\d+)$", out, re.M)
    )
    assert set(found) == {"lfs2", "fat"}, out
    for kind, (points, old, new, _rescued) in found.items():
        assert points > 10 and old > 0 and new > 0, (kind, out)
    assert found["fat"][3] > 0, "FAT cut points should need the .tmp fallback:\n" + out


def _store(tmp_path):
    root = tmp_path / "flash"
    root.mkdir(exist_ok=True)
    for p in root.iterdir():
        p.unlink()
    return P.Store(str(root), fsync=False), root


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=20,
)
_STATE_LIKE = st.fixed_dictionaries(
    {
        "format": st.sampled_from([1, 1, 1, 2, "1"]),
        "phase": st.integers(-1, 5),
        "intent": st.integers(-1, 5),
        "uptime_s": st.integers(-1, 10**6),
        "moves": st.lists(st.integers(-1, 10**6), max_size=4),
        "locks": st.integers(-1, 300),
        "n_moves": st.integers(-1, 5),
        "n_aborts": st.integers(-1, 5),
        "crc": st.integers(0, 0xFFFF),
    },
    optional={"extra": _JSON},
)


@_SETTINGS
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_give_a_state_or_the_typed_error(tmp_path, data):
    store, root = _store(tmp_path)
    (root / "relay.json").write_bytes(data)
    (root / "seq-g0.json").write_bytes(data)
    try:
        store.load_relay()
    except P.CorruptStateError as e:
        assert e.file == "relay.json"
    try:
        store.sequence_storage("g0")[0]()
    except P.SequenceLostError as e:
        assert e.file == "seq-g0.json"
    for name in ("config.json",):
        (root / name).write_bytes(data)
        try:
            store.load_config()
        except P.ConfigError as e:
            assert e.file == "config.json"


@_SETTINGS
@given(obj=st.one_of(_JSON, _STATE_LIKE))
def test_arbitrary_json_gives_a_valid_state_or_the_typed_error(tmp_path, obj):
    store, root = _store(tmp_path)
    (root / "relay.json").write_text(json.dumps(obj))
    try:
        got = store.load_relay()
    except P.CorruptStateError:
        return
    # Whatever loads is a state the controller can use as it is.
    assert 0 <= got["phase"] <= 3 and 0 <= got["intent"] <= 3 and got["moves"] == sorted(got["moves"])
    assert all(0 <= t <= got["uptime_s"] for t in got["moves"])
    # ... and whose crc is the file's, over the values as that format numbers them.
    if obj["format"] == 1:
        old = dict(got, phase=(got["phase"] + 1) & 3, intent=(got["intent"] + 1) & 3)  # 0 none, 1 A, 2 B, 3 C
        assert P._relay_digest(old, 1) == obj["crc"]
    else:
        assert P._relay_digest(got, P.RELAY_FORMAT) == obj["crc"]


@_SETTINGS
@given(obj=_JSON, node=st.dictionaries(st.sampled_from(["id", "address", "x"]), _JSON, max_size=3))
def test_arbitrary_config_objects_give_a_config_or_a_named_error(obj, node):
    for candidate in (obj, {"format": 1, "node": node, "key": {"file": "k"}, "board": "b", "home_phase": "A"}):
        try:
            cfg = S.validate_config(candidate)
        except P.ConfigError as e:
            assert e.file == "config.json"
            assert str(e).startswith("config.json: ")
        else:
            assert 1 <= cfg.address <= 247 and cfg.home_phase in (PHASE_A, PHASE_B, PHASE_C)


def test_writes_fsync_the_file_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.fstat(fd).st_mode)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store = P.Store(str(tmp_path))
    store.save_relay({"phase": 1, "intent": 0, "uptime_s": 0, "moves": [], "locks": 0, "n_moves": 0, "n_aborts": 0})
    import stat

    assert [stat.S_ISREG(m) for m in synced] == [True, False]  # the file, then its folder
    synced.clear()
    P.Store(str(tmp_path), fsync=False).save_relay(store.load_relay())
    assert synced == []
