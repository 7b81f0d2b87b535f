"""A throw-away PostgreSQL server on a free loopback port, for tests and benchmarks.

``with LocalPostgres() as pg:`` runs ``initdb`` into a private folder and
starts ``postgres`` on 127.0.0.1 (and a Unix socket in that folder), trust
authentication, no other listener; ``pg.create_database(name)`` makes a
database and ``pg.dsn(name)`` is its libpq connection string. ``stop()``
ends the server by its own PID (``pg_ctl stop -m fast``, ``immediate``, then SIGKILL if it
hangs) and removes the folder.

The one thing to know: PostgreSQL refuses to run as root. Run as root (as CI
does), the harness runs initdb and pg_ctl as the ``postgres`` user that
Debian's package creates (``runuser -u postgres``), and the data folder is a
fresh ``mkdtemp`` folder it owns, because a pytest folder under /tmp is not
traversable by that user. The binaries are Debian's (``/usr/lib/postgresql/<v>/bin``);
``scripts/bootstrap`` installs them.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from phasekit.errors import PhasekitError
from phasekit.testing.processes import free_port
from phasekit.testing.processes import pid_alive as _alive

__all__ = ("LocalPostgres", "PostgresError", "bindir", "free_port")


class PostgresError(PhasekitError, RuntimeError):
    """PostgreSQL is missing or did not start."""


def bindir() -> Path:
    """The folder of PostgreSQL's server binaries (the highest installed major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    cand = shutil.which("pg_ctl")
    if cand:
        return Path(os.path.realpath(cand)).parent
    raise PostgresError("PostgreSQL server binaries not found; install them (Debian: apt-get install postgresql)")


class LocalPostgres:
    """PostgreSQL on 127.0.0.1:``port`` with its data in a private temporary folder."""

    def __init__(self, port: int | None = None, fsync: bool = True, settings: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.bin = bindir()
        self.folder: Path | None = None
        self.pid: int | None = None
        self._as_root = os.geteuid() == 0

    # ------------------------------------------------------------ helpers

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
        if check and p.returncode != 0:
            raise PostgresError(
                "%s failed (%d): %s" % (" ".join(args[:2]), p.returncode, (p.stderr or p.stdout)[-1500:])
            )
        return p

    @property
    def data(self) -> Path:
        assert self.folder is not None, "not started"
        return self.folder / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string of database ``dbname`` (TCP on loopback, user postgres)."""
        return "host=%s port=%d user=postgres dbname=%s" % (self.host, self.port, dbname)

    # ------------------------------------------------------------ life cycle

    def start(self) -> LocalPostgres:
        self.folder = Path(tempfile.mkdtemp(prefix="phasekit-pg-"))
        self.folder.chmod(0o755)
        if self._as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-instructions",
        )  # fmt: skip
        opts = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.folder),
            "fsync": "on" if self.fsync else "off",
            "max_connections": "100",
            "shared_buffers": "128MB",
            "max_locks_per_transaction": "256",  # a query over many daily partitions locks each
        }
        opts.update(self.settings)
        conf = "".join("%s = '%s'\n" % (k, v) for k, v in opts.items())
        conf_path = self.data / "postgresql.auto.conf"
        with open(conf_path, "a") as f:
            f.write(conf)
        p = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "postgres.log"), "-w", "-t", "60",
            "start", check=False,
        )  # fmt: skip
        if p.returncode != 0:
            log = (self.folder / "postgres.log").read_text()[-2000:] if (self.folder / "postgres.log").exists() else ""
            self._cleanup()
            raise PostgresError("PostgreSQL did not start: %s %s" % (p.stderr[-500:], log))
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` with psql; returns its output (tuples only, unaligned)."""
        p = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(dbname),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if p.returncode != 0:
            raise PostgresError("psql: %s" % p.stderr[-1000:])
        return p.stdout

    def create_database(self, name: str) -> str:
        """Create database ``name`` (letters, digits, _); returns its DSN."""
        if not name.replace("_", "").isalnum():
            raise PostgresError("database name %r: letters, digits and _ only" % name)
        self.psql("CREATE DATABASE %s" % name)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        if not name.replace("_", "").isalnum():
            raise PostgresError("database name %r: letters, digits and _ only" % name)
        self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)

    def stop(self) -> None:
        """Stop by PID (fast shutdown, immediate after 10 s, SIGKILL last) and remove the folder."""
        if self.folder is None:
            return
        if self.pid is not None and _alive(self.pid):
            # Fast first (clean); a throw-away server that does not finish in 10 s stops immediately
            # (no shutdown checkpoint: its data are about to be removed), then by SIGKILL.
            for mode in ("fast", "immediate"):
                if _alive(self.pid):
                    ctl = str(self.bin / "pg_ctl")
                    self._run(ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "10", "stop", check=False)
            deadline = time.monotonic() + 5
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        self.pid = None
        self._cleanup()

    def _cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
