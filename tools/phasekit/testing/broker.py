"""A local Mosquitto broker with mutual TLS, for tests, benchmarks and the simulated site.

``with LocalBroker(workdir) as broker:`` generates a throw-away CA, a server
certificate for 127.0.0.1/localhost and a client certificate, writes a
mosquitto.conf that requires client certificates, starts ``mosquitto`` on a
free loopback port and stops it on exit. ``stop()``/``start()`` simulate an
outage. The keys live only in ``workdir`` (a temporary folder), never in git.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from phasekit.errors import PhasekitError
from phasekit.testing.processes import free_port

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ObjectIdentifier


class BrokerError(PhasekitError, RuntimeError):
    """Mosquitto is missing or did not start."""


def mosquitto_binary() -> str:
    """Path of the ``mosquitto`` executable (PATH, then Debian's /usr/sbin)."""
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and Path(cand).exists():
            return cand
    raise BrokerError("mosquitto not found; install it (Debian: apt-get install mosquitto)")


class TlsFiles:
    """Paths of a CA, a server and a client certificate with their keys."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self.ca = self.folder / "ca.crt"
        self.server_cert = self.folder / "server.crt"
        self.server_key = self.folder / "server.key"
        self.client_cert = self.folder / "client.crt"
        self.client_key = self.folder / "client.key"


def make_tls_files(folder: str | os.PathLike[str], client_cn: str = "phasegate-test") -> TlsFiles:
    """Generate a CA, a server cert (localhost, 127.0.0.1) and a client cert into ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("phasekit test CA"))
        .issuer_name(name("phasekit test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(
        cn: str, usage: ObjectIdentifier, sans: list[x509.GeneralName] | None
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    key, cert = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    write_key(files.server_key, key)
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key, cert = leaf(client_cn, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    write_key(files.client_key, key)
    files.client_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


class LocalBroker:
    """Mosquitto on 127.0.0.1 with a TLS listener requiring client certificates."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port: int | None = None,
        persistence: bool = False,
        max_queued: int = 100000,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.tls = make_tls_files(self.workdir / "tls")
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self.conf.write_text(
            # Mosquitto started as root drops to user "mosquitto", which cannot read our
            # private temp folder: keep the invoking user instead.
            "user %s\n"
            "per_listener_settings true\n"
            "persistence %s\npersistence_location %s/\n"
            "log_dest file %s\n"
            "listener %d 127.0.0.1\n"
            "allow_anonymous true\n"
            "cafile %s\ncertfile %s\nkeyfile %s\n"
            "require_certificate true\nuse_identity_as_username true\n"
            "max_inflight_messages 0\nmax_queued_messages %d\n"
            % (
                getpass.getuser(),
                "true" if persistence else "false",
                self.workdir,
                self.log,
                self.port,
                self.tls.ca,
                self.tls.server_cert,
                self.tls.server_key,
                max_queued,
            )
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto (if it is not running) and wait until it accepts connections."""
        if self._proc is not None:
            return
        proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._proc = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                assert proc.stderr is not None  # stderr=PIPE
                err = proc.stderr.read().decode(errors="replace")
                self._proc = None
                raise BrokerError("mosquitto exited at start: %s %s" % (err, self._tail_log()))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError("mosquitto did not listen on port %d within %.0f s" % (self.port, timeout))

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL after 5 s); nothing if it is not running."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _tail_log(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
