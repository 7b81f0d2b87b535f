"""Child processes of a test or benchmark run: started, measured from /proc, and always ended.

``Children`` starts ``python ARGS`` with this interpreter (the installed
phasekit, so ``-m phasekit.cli`` and ``-m phaseserver`` are the code under
test), keeps every process it started, and ends them all (SIGTERM, then
SIGKILL) however the run ends. ``proc_cpu_s`` and ``proc_status`` read a
process's CPU time and memory from /proc (Linux); ``pid_alive`` says whether a
process (not a zombie) is there; ``free_port`` finds a loopback TCP port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any

__all__ = ("Children", "free_port", "pid_alive", "proc_cpu_s", "proc_status", "say")

CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    """A progress line on stderr, time-stamped (tables go to stdout)."""
    sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), text))
    sys.stderr.flush()


class Children:
    """The subprocesses of one run: started here, each ended here (SIGTERM, then SIGKILL)."""

    def __init__(self, cwd: str | os.PathLike[str] | None = None):
        self.cwd = cwd
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: Sequence[str], log: IO[Any] | int | None, **kw: Any) -> subprocess.Popen[bytes]:
        """``python ARGS`` with output to the file object ``log``; returns the Popen."""
        p = subprocess.Popen([sys.executable, *args], cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def end(self, p: subprocess.Popen[bytes], timeout: float = 20) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop. Returns the exit code."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                say("pid %d did not stop within %d s of SIGTERM: SIGKILL" % (p.pid, timeout))
                p.kill()
                p.wait()
        return p.returncode

    def end_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.end(p, timeout=10)

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end_all()


def free_port() -> int:
    """A TCP port free on loopback now (the OS's choice; another process may take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (someone else's child to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (/proc/<pid>/stat fields 14, 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM in MB, and the thread count, from /proc/<pid>/status."""
    out: dict[str, float] = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
            elif key == "Threads":
                out[key] = int(value)
    return out
