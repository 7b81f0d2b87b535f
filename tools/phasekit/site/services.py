"""The processes of a simulated site besides the nodes: broker, server, transformer Pi; their files.

- ``SitePki``: the site's PKI (``phasekit.pki``): a CA, the broker's
  certificate, one client certificate each for the transformer Pi, the server,
  the operator, and an intruder (a certificate the broker lets publish
  commands: the holder of a stolen operator certificate, who has no operator
  key). Mosquitto's configuration and ACL come from the same PKI.
- ``SiteBroker``: Mosquitto with TLS and client certificates (the ACL
  confines each certificate to its topics). Where Mosquitto is not installed
  the site says so and stops: see docs/site.md, "Broker".
- ``SiteServer``: the operations server as its own process, in site time.
- ``gateway_toml``: the transformer Pi's TOML: the RS-485 line, the transformer
  meter, the balancer's limits in site time, the buffer, the MQTT uplink and
  the ``[clock]`` table.

Every process is started with ``PR_SET_PDEATHSIG`` (Linux), so none outlives
the site process even if that one is killed outright.

Public: ``SitePki``, ``SiteBroker``, ``SiteServer``, ``gateway_toml``, ``child_setup``, ``free_port``.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasekit.errors import PhasekitError
from phasekit.testing.broker import mosquitto_binary
from phasekit.testing.processes import free_port

if TYPE_CHECKING:
    from phasekit.pki import Issued
    from phasekit.site.clock import SiteClock

__all__ = ("SitePki", "SiteBroker", "SiteServer", "gateway_toml", "child_setup", "free_port", "SiteError")


class SiteError(PhasekitError, RuntimeError):
    """A part of the simulated site could not start or stopped unexpectedly (says which and why)."""


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL(None)
    except (ImportError, OSError):
        return None


_LIBC = _libc() if sys.platform.startswith("linux") else None


def child_setup() -> None:
    """In a child before exec: die with the parent (prctl PR_SET_PDEATHSIG, SIGTERM)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM, 0, 0, 0)


# The utility (tenant) the demo's site belongs to, and the operator account its page is opened with.
TENANT = "demo-utility"
PAGE_USER = "operator"


class SitePki:
    """The site's certificates, made once per run under ``folder``."""

    def __init__(self, folder: Path, site: str, transformer: str, operator: str, lora_gateway: str | None = None):
        from phasekit.pki import Identity, Pki

        self.site = site

        self.pki = Pki.init(folder, site)
        self.broker = self.pki.issue(Identity.broker(dns=["localhost"], ips=["127.0.0.1"]))
        self.pi: Issued = self.pki.issue(Identity.pi(site, transformer))
        self.server: Issued = self.pki.issue(Identity.server("site-server", [site]))
        # The server's command publisher: a connection (and so a certificate name) of its own.
        self.server_commands: Issued = self.pki.issue(Identity.server("site-commands", [site]))
        self.operator: Issued = self.pki.issue(Identity.operator(operator, [site]))
        # The forger: a certificate the broker lets publish commands, without any operator's key.
        self.intruder: Issued = self.pki.issue(Identity.operator("intruder", [site]))
        self.lora_gateway: Issued | None = (
            self.pki.issue(Identity.lora_gateway(site, lora_gateway)) if lora_gateway else None
        )
        self.ca = self.pki.ca_cert


class SiteBroker:
    """Mosquitto on loopback with the site PKI's listener, ACL and CRL; ``start``/``stop`` (an outage)."""

    kind = "mosquitto"

    def __init__(self, folder: Path, pki: SitePki, port: int | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.binary = mosquitto_binary()  # BrokerError (a PhasekitError) when it is not installed
        self.host = "127.0.0.1"
        self.port = port or free_port()
        files = pki.pki.mosquitto(folder / "conf", port=self.port, bind=self.host)
        self.log = folder / "mosquitto.log"
        self.conf = folder / "mosquitto.conf"
        lines = []
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to user "mosquitto", which cannot read our folder.
            lines.append("user %s" % getpass.getuser())
        lines += [
            # The server's session and what is queued for it survive a broker restart (the outage fault).
            "persistence true",
            "persistence_location %s/" % folder,
            "log_dest file %s" % self.log,
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            files.conf.read_text(),
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=child_setup,
        )
        self._proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                assert proc.stderr is not None
                err = proc.stderr.read().decode(errors="replace")
                self._proc = None
                raise SiteError("mosquitto exited at start: %s %s" % (err[-800:], _tail(self.log)))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SiteError("mosquitto did not listen on port %d within %.0f s: %s" % (self.port, timeout, _tail(self.log)))

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL after 5 s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class SiteServer:
    """The operations server in site time: its database, its log, its URL (when it serves HTTP)."""

    def __init__(
        self,
        folder: Path,
        broker: SiteBroker,
        pki: SitePki,
        clock: SiteClock,
        alarms: Mapping[str, float] | None = None,
        operator_key: tuple[str, bytes, bytes] | None = None,
    ):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.db = folder / "server.db"
        self.log_path = folder / "server.log"
        self.broker = broker
        self.pki = pki
        self.clock = clock
        self.alarms = dict(alarms or {})
        # (operator id, key, base IV): the server seals operator commands and audits the Pi's refusals.
        self.operator_key = operator_key
        self.http_port = free_port()
        self.site = pki.site
        # The page's login: an operator of the demo utility, its password in a file of mode 600.
        self.page_user = PAGE_USER
        self.password_file = folder / "operator-password"
        self.config = folder / "server.toml"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's HTTP address: its page, API and /healthz."""
        return "http://127.0.0.1:%d/" % self.http_port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _toml(self) -> str:
        srv = self.pki.server
        t = [
            "[server]",
            'name = "site-server"',
            'http_host = "127.0.0.1"',
            "http_port = %d" % (self.http_port or 0),
            "[storage]",
            'path = "%s"' % self.db,
            "[ingest]",
            'host = "%s"' % self.broker.host,
            "port = %d" % self.broker.port,
            'ca = "%s"' % srv.ca,
            'cert = "%s"' % srv.cert,
            'key = "%s"' % srv.key,
            'client_id = "site-server"',
            "reconnect_max_s = 1",
            self.clock.toml(),
        ]
        if self.alarms:
            t.append("[alarms]")
            t += ["%s = %r" % kv for kv in sorted(self.alarms.items())]
        if self.operator_key is not None:
            from phaseuplink.operator import format_key_file

            oid, key, iv = self.operator_key
            key_file = self.folder / ("%s.key" % oid)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(format_key_file(key, iv))
            cm = self.pki.server_commands
            t += [
                "[commands]",
                "enabled = true",
                'operator_id = "%s"' % oid,
                'key_file = "%s"' % key_file,
                'ca = "%s"' % cm.ca,
                'cert = "%s"' % cm.cert,
                'key = "%s"' % cm.key,
            ]
        return "\n".join(t) + "\n"

    def start(self) -> None:
        self.config.write_text(self._toml())
        log = open(self.log_path, "ab")
        try:
            self._accounts(log)
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "phaseserver", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                preexec_fn=child_setup,
            )
        finally:
            log.close()

    def _accounts(self, log: Any) -> None:
        """The utility, its site and an operator account for the page, as an installer makes them.

        The password is random, in ``operator-password`` (mode 600) beside the server's files;
        ``phasekit server`` (``phaseserver.admin``) audits each step with the actor ``cli:<login>``.
        """
        import secrets

        pw = self.password_file
        if not pw.exists():
            fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(12) + "\n")
        conf = ["--config", str(self.config)]
        steps = [
            ["tenant", "add", *conf, TENANT, "Demo utility"],
            ["site", "assign", *conf, self.site, TENANT],
            ["user", "add", *conf, PAGE_USER, "--role", "operator", "--tenant", TENANT, "--password-file", str(pw)],
        ]
        for step in steps:
            r = subprocess.run(
                [sys.executable, "-m", "phaseserver", *step], stdout=log, stderr=subprocess.STDOUT, timeout=120
            )
            # A second run in the same folder finds them made (the admin tool says so and exits 1).
            if r.returncode not in (0, 1):
                raise SiteError(
                    "server set-up %s failed (code %d): %s" % (" ".join(step[:2]), r.returncode, _tail(self.log_path))
                )

    def check(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise SiteError("the server exited (code %s): %s" % (self._proc.returncode, _tail(self.log_path)))

    def stop(self, timeout: float = 20.0) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        return proc.returncode


def _v(x: object) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, str):
        return '"%s"' % x
    if isinstance(x, (list, tuple)):
        return "[%s]" % ", ".join(_v(y) for y in x)
    if isinstance(x, Mapping):
        return "{%s}" % ", ".join("%s = %s" % (k, _v(v)) for k, v in x.items())
    return repr(x)


def _table(name: str, keys: Mapping[str, object]) -> str:
    return "[%s]\n%s" % (name, "".join("%s = %s\n" % (k, _v(v)) for k, v in keys.items()))


def gateway_toml(
    site: str,
    transformer: str,
    bus: Mapping[str, object],
    meter_port: int | None,
    broker: SiteBroker | None,
    pki: SitePki | None,
    clock: SiteClock,
    balancer: Mapping[str, object],
    uplink: Mapping[str, object],
    operators: list[str],
    store: str = "buffer.db",
) -> str:
    """The transformer Pi's TOML (``phasegate.config``): every key docs/install-gateway.md explains."""
    text = _table("site", {"id": site, "transformer": transformer, "key_file": "site.key"}) + "\n"
    text += _table("bus", bus) + "\n"
    if meter_port is not None:
        text += (
            _table(
                "meter",
                {
                    "profile": "sdm630",
                    "transport": "tcp",
                    "host": "127.0.0.1",
                    "tcp_port": meter_port,
                    "timeout_s": 1.0,
                },
            )
            + "\n"
        )
    text += _table("balancer", balancer) + "\n"
    text += _table("store", {"path": store}) + "\n"
    if broker is not None and pki is not None:
        pi = pki.pi
        up = {
            "host": broker.host,
            "port": broker.port,
            "ca": str(pi.ca),
            "cert": str(pi.cert),
            "key": str(pi.key),
            "operators": operators,
        }
        up.update(uplink)
        text += _table("uplink", up) + "\n"
    text += clock.toml()
    return text
