"""Run the transformer Pi and the server as real processes, and read what they log: for tests and benchmarks.

- ``write_config(folder, site_key, body)``: ``site.key`` (mode 600) and a gateway TOML;
  ``gateway_toml(...)`` builds the usual body, ``uplink_table(broker)`` its [uplink] table
  for a ``phasekit.testing.broker.LocalBroker`` (mutual TLS).
- ``GatewayProc``: ``phasekit gateway run`` restarted as often as a run needs (SIGKILLs,
  crashes), every start appending to one log file.
- ``start_server(children, broker, folder)``: the server's ingest into ``folder/server.db``
  (``server_toml`` writes its config file).
- ``phasekit_popen`` / ``python_popen``: one-off processes of the installed tiers.
- The gateway's log lines that harnesses rely on are formats the gateway exports
  (``phasegate.journal.BUFFERED_READING``, ``phasegate.uplink.CONNECTED``,
  ``phasegate.controller.MOVE_ACKNOWLEDGED``); they are parsed here and nowhere else:
  ``buffered_readings``, ``connect_times``, ``buffered_times``, ``moves_acknowledged``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasegate.controller import MOVE_ACKNOWLEDGED
from phasegate.journal import BUFFERED_READING
from phasegate.uplink import CONNECTED

if TYPE_CHECKING:
    from phasekit.testing.broker import LocalBroker
    from phasekit.testing.processes import Children

PathLike = str | os.PathLike[str]

__all__ = (
    "write_config",
    "gateway_toml",
    "uplink_table",
    "GatewayProc",
    "start_server",
    "server_toml",
    "wait_subscribed",
    "phasekit_popen",
    "python_popen",
    "buffered_readings",
    "buffered_times",
    "connect_times",
    "moves_acknowledged",
    "query_ro",
)

# A log line as `phasekit gateway run` writes it: "2026-12-06 19:29:12,345 LEVEL logger: message".
_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) "


def _pattern(fmt: str) -> str:
    """A %-format of the gateway as a regex: %d a number, %s a word."""
    return re.escape(fmt).replace("%d", r"(\d+)").replace("%s", r"(\S+)")


_BUFFERED = re.compile(_pattern(BUFFERED_READING))
_BUFFERED_STAMPED = re.compile(_STAMP + r"DEBUG phasegate\.journal: " + _pattern(BUFFERED_READING), re.M)
_CONNECTED_STAMPED = re.compile(_STAMP + r"INFO phasegate\.uplink: " + _pattern(CONNECTED), re.M)
_MOVED = re.compile(_pattern(MOVE_ACKNOWLEDGED))


def _stamp(date: str, ms: str) -> float:
    return time.mktime(time.strptime(date, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000.0


def buffered_readings(log_text: str) -> list[tuple[int, int, int]]:
    """``[(addr, generation, seq), ...]`` of every reading the gateway logged as committed to its buffer."""
    return [(int(a), int(g), int(s)) for a, g, s in _BUFFERED.findall(log_text)]


def buffered_times(log_text: str) -> list[float]:
    """The Unix times of the buffered-reading lines, in log order."""
    return [_stamp(m.group(1), m.group(2)) for m in _BUFFERED_STAMPED.finditer(log_text)]


def connect_times(log_text: str) -> list[float]:
    """The Unix times at which the uplink reported a broker session up, in log order."""
    return [_stamp(m.group(1), m.group(2)) for m in _CONNECTED_STAMPED.finditer(log_text)]


def moves_acknowledged(log_text: str) -> list[tuple[int, str, str]]:
    """``[(addr, from_phase_name, to_phase_name), ...]`` of the moves nodes acknowledged as done."""
    return [(int(a), f, t) for a, f, t in _MOVED.findall(log_text)]


def query_ro(db: PathLike, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the SQLite file ``db`` opened read-only; [] while it does not exist or is busy."""
    if not Path(db).exists():
        return []
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def write_config(folder: PathLike, site_key: bytes, body: str, name: str = "gw.toml") -> Path:
    """Write ``site.key`` (mode 600) and ``name`` = ``body`` into ``folder``; returns the config path."""
    folder = Path(folder)
    (folder / "site.key").write_text(site_key.hex())
    os.chmod(folder / "site.key", 0o600)
    path = folder / name
    path.write_text(body)
    return path


def _toml_value(v: object) -> str:
    if isinstance(v, str):
        return '"%s"' % v
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(_toml_value(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def _table(name: str, keys: Mapping[str, object]) -> str:
    return "[%s]\n%s\n" % (name, "".join("%s = %s\n" % (k, _toml_value(v)) for k, v in keys.items() if v is not None))


def uplink_table(broker: LocalBroker, **keys: object) -> str:
    """An [uplink] table for a ``LocalBroker`` (mutual TLS), plus ``keys`` as TOML values."""
    tls = broker.tls
    base: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "ca": str(tls.ca),
        "cert": str(tls.client_cert),
        "key": str(tls.client_key),
    }
    base.update(keys)
    return _table("uplink", base)


def gateway_toml(
    port: PathLike,
    addrs: Iterable[int],
    broker: LocalBroker | None = None,
    site: str = "test-site",
    transformer: str = "tx-1",
    bus: Mapping[str, object] | None = None,
    balancer: Mapping[str, object] | None = None,
    uplink: Mapping[str, object] | None = None,
    store: str = "buffer.db",
) -> str:
    """A gateway config: one RS-485 line on ``port`` polling ``addrs``; [uplink] to ``broker`` when given.

    ``bus``, ``balancer``, ``uplink``: extra keys of those tables (None values left out, so
    the shipped defaults of phasegate.config apply).
    """
    text = _table("site", {"id": site, "transformer": transformer, "key_file": "site.key"}) + "\n"
    text += _table("bus", dict({"port": str(port), "nodes": list(addrs)}, **(bus or {}))) + "\n"
    text += _table("balancer", balancer or {}) + "\n"
    text += _table("store", {"path": store}) + "\n"
    if broker is not None:
        text += uplink_table(broker, **(uplink or {}))
    return text


def _env() -> dict[str, str]:
    # The installed tiers, whatever the caller's working directory holds.
    return dict(os.environ, PYTHONUNBUFFERED="1")


def phasekit_popen(*args: str, **kw: Any) -> subprocess.Popen[Any]:
    """``python -m phasekit.cli ARGS`` as a process of its own."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    return subprocess.Popen([sys.executable, "-m", "phasekit.cli", *args], env=_env(), **kw)


def python_popen(*args: str, **kw: Any) -> subprocess.Popen[Any]:
    """``python ARGS`` (e.g. ``-m phaseserver ...``) as a process of its own."""
    return subprocess.Popen([sys.executable, *args], env=_env(), **kw)


def server_toml(broker: LocalBroker, folder: PathLike, client_id: str = "test-server", **ingest: Any) -> Path:
    """A server.toml for ``folder/server.db`` fed by ``broker`` (a LocalBroker, mutual TLS); returns its path."""
    from phaseserver import config

    tls = broker.tls
    folder = Path(folder)
    keys = {
        "host": broker.host,
        "port": broker.port,
        "ca": str(tls.ca),
        "cert": str(tls.client_cert),
        "key": str(tls.client_key),
        "client_id": client_id,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 1,
    }
    keys.update(ingest)
    path = folder / ("server-%s.toml" % client_id)
    config.write(
        path,
        {
            "server": {"http_port": 0, "log_level": "info"},
            "storage": {"path": str(folder / "server.db"), "retention_raw_days": 3650, "retention_hourly_days": 3650},
            "ingest": keys,
        },
    )
    return path


def wait_subscribed(
    log_path: PathLike, count: int = 1, timeout: float = 60, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until ``log_path`` (a server's log) holds ``count`` granted subscriptions; RuntimeError after ``timeout``.

    A message published before a worker's first subscription reaches no session of it: harnesses
    publish only after this.
    """
    from phaseserver.ingest.mqtt import SUBSCRIBED

    mark = SUBSCRIBED.split("%")[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(log_path).read_text(errors="replace").count(mark) >= count:
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("the server exited at start: %s" % Path(log_path).read_text()[-2000:])
        time.sleep(0.05)
    raise RuntimeError("the server did not subscribe within %.0f s: %s" % (timeout, Path(log_path).read_text()[-2000:]))


def start_server(
    children: Children, broker: LocalBroker, folder: PathLike, client_id: str = "test-server", settle_s: float = 0.2
) -> subprocess.Popen[bytes]:
    """The server's ingest (``python -m phaseserver run``) into ``folder/server.db``, subscribed before it returns.

    Its output goes to ``folder/server.log``. ``children``: a ``processes.Children``.
    """
    folder = Path(folder)
    cfg = server_toml(broker, folder, client_id)
    log_path = folder / "server.log"
    before = log_path.read_text(errors="replace").count("ingest: subscribed to") if log_path.exists() else 0
    with open(log_path, "a") as log:
        p = children.start(["-m", "phaseserver", "run", "--config", str(cfg)], log)
    wait_subscribed(log_path, before + 1, proc=p)
    time.sleep(settle_s)
    return p


class GatewayProc:
    """``phasekit gateway run`` restarted as often as needed, every run appending to one log."""

    def __init__(
        self,
        children: Children,
        cfg: PathLike,
        log_path: PathLike,
        level: str = "debug",
        on_restart: Callable[[str], object] | None = None,
    ):
        self.children = children
        self.cfg = cfg
        self.log_path = Path(log_path)
        self.level = level
        self.on_restart = on_restart  # called with a line of text when a crash is restarted
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_t: float | None = None
        self.crashes: list[tuple[float, int]] = []  # (time, exit code) of exits nobody asked for

    def start(self) -> None:
        """Start ``phasekit gateway run`` (its output appended to the log)."""
        with open(self.log_path, "a") as log:
            self.proc = self.children.start(
                ["-m", "phasekit.cli", "gateway", "run", str(self.cfg), "--log-level", self.level], log
            )
        self.starts += 1
        self.started_t = time.time()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Note an exit nobody asked for (a crash) and start again at once."""
        if self.proc is not None and self.proc.poll() is not None:
            self.crashes.append((time.time(), self.proc.returncode))
            if self.on_restart is not None:
                self.on_restart("gateway exited by itself with code %r: restarting" % self.proc.returncode)
            self.proc = None
            self.start()

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        assert self.proc is not None, "the gateway is not running"
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; returns the exit code."""
        assert self.proc is not None, "the gateway is not running"
        code = self.children.end(self.proc, timeout=30)
        self.proc = None
        return code

    def log_text(self) -> str:
        """Everything every run of the gateway has logged so far."""
        return self.log_path.read_text(errors="replace")
