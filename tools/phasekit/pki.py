"""Site PKI for the MQTT/TLS uplink: a CA, the certificates every party needs, the CRL, and the broker's ACL.

A PKI folder holds one site CA (EC P-256) and what it issued: the broker's
server certificate, a client certificate per transformer Pi, per server
instance, per operator and per LoRa gateway relay; an index of them
(``index.json``), a CRL regenerated on every revocation, and everything
Mosquitto needs (``Pki.mosquitto``): a TLS listener that requires a client
certificate, takes the certificate's Common Name as the MQTT user name and
client id, and an ACL that confines each user to its own topics
(docs/pki.md).

The one thing to know: **the CN is the ACL user name**, and it is built, never
typed: ``pi:<site>:<transformer>``, ``lora-gateway:<site>:<name>``,
``server:<name>``, ``operator:<name>``. Names are 1-32 of ``A-Z a-z 0-9 _ .
-`` (as the gateway config), so they can hold neither the ``:`` that joins
them nor an MQTT wildcard or level separator; the map from identity to CN is
one-to-one, and no choice of names makes one Pi's CN, or its topics, another's.

Use::

    pki = Pki.init("pki", site="feeder-12")                # CA, empty CRL, index
    pki = Pki("pki")                                       # an existing folder
    issued = pki.issue(Identity.pi("feeder-12", "tx-0457"))
    issued.record.serial, issued.cert, issued.key          # the key file is mode 0600
    pki.revoke("pi:feeder-12:tx-0457")                     # every certificate of that CN; or a serial
    pki.mosquitto("broker-conf", port=8883)                # conf, ACL, CA, CRL, broker cert and key

Private keys are written once, with mode 0600, in folders of mode 0700; they
are never returned as text, printed or logged. Re-issuing for an identity
makes a new key and certificate and leaves the older ones valid until they
are revoked or expire (rotation without a flag day).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence, Union

if TYPE_CHECKING:
    from cryptography import x509

PathLike = Union[str, "os.PathLike[str]"]

__all__ = (
    "PkiError",
    "Pki",
    "Identity",
    "CertRecord",
    "Issued",
    "MosquittoFiles",
    "ROLES",
    "ALL_SITES",
    "CA_DAYS",
    "DEFAULT_DAYS",
    "REASONS",
    "validate_name",
)

ROLES = ("broker", "pi", "server", "operator", "lora-gateway")
# The scope of a server or operator that covers every site (an MQTT single-level wildcard in its ACL).
ALL_SITES = "*"
# Lifetimes (docs/pki.md, "Lifetimes"): the CA outlives the hardware it signs for; a leaf's lifetime
# bounds how long a lost key works where revocation does not reach (the Pis never fetch a CRL, so the
# broker's certificate is the shortest).
CA_DAYS = 3650
DEFAULT_DAYS = {"broker": 365, "server": 365, "operator": 365, "pi": 730, "lora-gateway": 730}
# Clock skew between the issuing machine and a Pi whose clock came from NTP a minute ago.
BACKDATE = datetime.timedelta(minutes=5)
REASONS = ("unspecified", "key-compromise", "superseded", "cessation-of-operation", "affiliation-changed")

FORMAT = 1
INDEX = "index.json"
CA_CERT = "ca.crt"
CA_KEY = "private/ca.key"
CRL = "crl.pem"
ISSUED = "issued"
# File stems of an issued bundle, by role: the gateway TOML's example names ``tls/gateway.crt`` etc.
STEM = {"broker": "broker", "pi": "gateway", "lora-gateway": "gateway", "server": "server", "operator": "operator"}

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_HEX = re.compile(r"(?:0x)?[0-9a-fA-F]{8,40}\Z")
_MAX_QUOTE = 40


class PkiError(ValueError):
    """A bad name, a missing or damaged PKI folder, an unknown serial: the message says what and where."""


def _q(value) -> str:
    """``repr`` of untrusted input, truncated."""
    text = repr(value)
    return text if len(text) <= _MAX_QUOTE else text[: _MAX_QUOTE - 3] + "..."


def validate_name(value: object, what: str) -> str:
    """``value`` if it is 1-32 of ``A-Z a-z 0-9 _ . -``, else ``PkiError`` naming ``what``.

    The same set as the gateway config's ids (``[site] id``, ``transformer``), so every topic the
    ACL names is one a Pi can have; it excludes ``:`` (the CN separator), ``/``, ``+``, ``#`` and
    ``$`` (MQTT levels, wildcards, system topics) and everything outside ASCII.
    """
    if not isinstance(value, str) or not _NAME.match(value):
        raise PkiError("%s %s: expected 1-32 letters, digits, '_', '.' or '-'" % (what, _q(value)))
    return value


def _validate_dns(value) -> str:
    if not isinstance(value, str) or len(value) > 253 or not all(_LABEL.match(p) for p in value.split(".")):
        raise PkiError("DNS name %s: expected dot-separated labels of letters, digits and '-'" % _q(value))
    return value.lower()


def _validate_ip(value) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise PkiError("IP address %s: not an IPv4 or IPv6 address" % _q(value)) from None


class Identity:
    """Whom a certificate names: role, site, name and scope. ``cn`` is its MQTT user name.

    Build one with ``Identity.pi``, ``.lora_gateway``, ``.server``, ``.operator`` or ``.broker``;
    each validates its names.
    """

    __slots__ = ("role", "site", "name", "sites", "dns", "ips")

    def __init__(
        self,
        role: str,
        site: Optional[str] = None,
        name: str = "",
        sites: Sequence[str] = (),
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
    ):
        if role not in ROLES:
            raise PkiError("role %s: expected one of %s" % (_q(role), ", ".join(ROLES)))
        self.role = role
        self.site = site
        self.name = name
        self.sites = tuple(sites)
        self.dns = tuple(dns)
        self.ips = tuple(ips)
        if role in ("pi", "lora-gateway"):
            validate_name(site, "site")
            validate_name(name, "transformer" if role == "pi" else "gateway name")
        elif role in ("server", "operator"):
            validate_name(name, role + " name")
            if not self.sites:
                raise PkiError("%s %s: needs at least one site (or %r for all)" % (role, name, ALL_SITES))
            if ALL_SITES in self.sites and len(self.sites) > 1:
                raise PkiError("%s %s: %r (all sites) cannot be combined with named sites" % (role, name, ALL_SITES))
            for s in self.sites:
                if s != ALL_SITES:
                    validate_name(s, "site")
        else:
            if not self.dns and not self.ips:
                raise PkiError("broker: needs at least one DNS name or IP address")
            self.dns = tuple(_validate_dns(d) for d in self.dns)
            self.ips = tuple(_validate_ip(i) for i in self.ips)

    @classmethod
    def pi(cls, site: str, transformer: str) -> "Identity":
        """A transformer Pi: publishes under ``phasekit/<site>/<transformer>/``, reads its command topic."""
        return cls("pi", site, transformer)

    @classmethod
    def lora_gateway(cls, site: str, name: str) -> "Identity":
        """A LoRa gateway relay: publishes under ``phasekit/<site>/<name>/`` (its ``[site] transformer``)."""
        return cls("lora-gateway", site, name)

    @classmethod
    def server(cls, name: str, sites: Sequence[str]) -> "Identity":
        """A server-min instance: reads the uplink of ``sites``, publishes commands to their Pis."""
        return cls("server", None, name, sites=sites)

    @classmethod
    def operator(cls, name: str, sites: Sequence[str]) -> "Identity":
        """An operator (``phasekit operator send``): publishes commands to the Pis of ``sites``, reads nothing."""
        return cls("operator", None, name, sites=sites)

    @classmethod
    def broker(cls, dns: Sequence[str] = (), ips: Sequence[str] = ()) -> "Identity":
        """The broker's server certificate: CN the first DNS name (else IP), every name in the SAN."""
        return cls("broker", dns=dns, ips=ips)

    @property
    def cn(self) -> str:
        """The certificate's Common Name, which Mosquitto makes the user name and the client id."""
        if self.role in ("pi", "lora-gateway"):
            return "%s:%s:%s" % (self.role, self.site, self.name)
        if self.role in ("server", "operator"):
            return "%s:%s" % (self.role, self.name)
        return (self.dns or self.ips)[0]

    @property
    def label(self) -> str:
        """What ``pki list`` shows: ``feeder-12/tx-0457``, ``ops-1 (sites: feeder-12)``, the broker's names."""
        if self.role in ("pi", "lora-gateway"):
            return "%s/%s" % (self.site, self.name)
        if self.role in ("server", "operator"):
            return "%s (sites: %s)" % (self.name, ",".join(self.sites))
        return ",".join(self.dns + self.ips)

    def to_json(self) -> dict:
        """The identity's fields as the index stores them."""
        return {
            "role": self.role,
            "site": self.site,
            "name": self.name,
            "sites": list(self.sites),
            "dns": list(self.dns),
            "ip": list(self.ips),
        }

    @classmethod
    def from_json(cls, d: dict) -> "Identity":
        return cls(d["role"], d.get("site"), d.get("name", ""), d.get("sites", ()), d.get("dns", ()), d.get("ip", ()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.cn)

    def __repr__(self) -> str:
        return "Identity(%s)" % self.cn


class CertRecord:
    """One issued certificate as the index keeps it (never its key)."""

    __slots__ = ("serial", "identity", "not_before", "not_after", "revoked_at", "reason", "folder")

    def __init__(
        self,
        serial: int,
        identity: Identity,
        not_before: datetime.datetime,
        not_after: datetime.datetime,
        revoked_at: Optional[datetime.datetime] = None,
        reason: Optional[str] = None,
        folder: str = "",
    ):
        self.serial = serial
        self.identity = identity
        self.not_before = not_before
        self.not_after = not_after
        self.revoked_at = revoked_at
        self.reason = reason
        self.folder = folder

    @property
    def serial_hex(self) -> str:
        return "%016x" % self.serial

    @property
    def cn(self) -> str:
        return self.identity.cn

    @property
    def role(self) -> str:
        return self.identity.role

    def valid_at(self, now: datetime.datetime) -> bool:
        """Not revoked and inside its validity window at ``now``."""
        return self.revoked_at is None and self.not_before <= now < self.not_after

    def to_json(self) -> dict:
        d = {
            "serial": self.serial_hex,
            "cn": self.cn,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "revoked": _iso(self.revoked_at) if self.revoked_at else None,
            "reason": self.reason,
            "folder": self.folder,
        }
        d.update(self.identity.to_json())
        return d

    @classmethod
    def from_json(cls, d: dict) -> "CertRecord":
        identity = Identity.from_json(d)
        if identity.cn != d["cn"]:
            raise PkiError("index: serial %s: CN %s does not match its identity" % (_q(d["serial"]), _q(d["cn"])))
        return cls(
            int(d["serial"], 16),
            identity,
            _parse_iso(d["not_before"]),
            _parse_iso(d["not_after"]),
            _parse_iso(d["revoked"]) if d.get("revoked") else None,
            d.get("reason"),
            d.get("folder", ""),
        )

    def __repr__(self) -> str:
        return "CertRecord(%s, %s, until %s%s)" % (
            self.serial_hex,
            self.cn,
            _iso(self.not_after),
            ", revoked" if self.revoked_at else "",
        )


class Issued:
    """What ``Pki.issue`` wrote: the record, and the paths of the certificate, key (None with a CSR) and CA."""

    __slots__ = ("record", "cert", "key", "ca", "folder")

    def __init__(self, record: CertRecord, cert: Path, key: Optional[Path], ca: Path, folder: Path):
        self.record, self.cert, self.key, self.ca, self.folder = record, cert, key, ca, folder

    def __repr__(self) -> str:
        return "Issued(%r, %s)" % (self.record, self.folder)


class MosquittoFiles:
    """What ``Pki.mosquitto`` wrote (paths in the output folder) and the broker certificate it used."""

    __slots__ = ("conf", "acl", "ca", "cert", "key", "crl", "broker", "users")

    def __init__(
        self, conf: Path, acl: Path, ca: Path, cert: Path, key: Path, crl: Path, broker: CertRecord, users: list[str]
    ):
        self.conf, self.acl, self.ca, self.cert, self.key, self.crl = conf, acl, ca, cert, key, crl
        self.broker = broker
        self.users = users

    def __repr__(self) -> str:
        return "MosquittoFiles(%s, %d users)" % (self.conf, len(self.users))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def _utc(t: datetime.datetime, what: str) -> datetime.datetime:
    if t.tzinfo is None:
        raise PkiError("%s: a timezone-aware datetime is needed, got a naive one" % what)
    return t.astimezone(datetime.timezone.utc).replace(microsecond=0)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (no window in which it is readable); never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)  # the umask may have narrowed it
    os.replace(tmp, path)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _x509() -> tuple:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise PkiError("the PKI needs the 'cryptography' package: pip install 'phasekit[fast]'") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


class Pki:
    """A PKI folder: ``Pki.init(folder, site)`` makes one, ``Pki(folder)`` opens one.

    Every change (issue, revoke) holds an exclusive lock on the folder and rewrites the index
    atomically, so two commands run at once cannot lose a certificate.
    """

    def __init__(self, folder: PathLike):
        self.folder = Path(folder)
        index = self.folder / INDEX
        if not index.is_file():
            raise PkiError("%s: not a PKI folder (no %s; make one with 'phasekit pki init')" % (self.folder, INDEX))
        self._load()

    # ------------------------------------------------------------------ creation

    @classmethod
    def init(
        cls, folder: PathLike, site: str, ca_days: int = CA_DAYS, now: Optional[datetime.datetime] = None
    ) -> "Pki":
        """Make a new CA for ``site`` in ``folder`` (empty or missing), with an empty index and CRL."""
        x509, hashes, serialization, ec, _eku, NameOID = _x509()
        validate_name(site, "site")
        if not 1 <= ca_days <= 36500:
            raise PkiError("CA lifetime %s days: expected 1..36500" % _q(ca_days))
        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise PkiError("%s exists and is not an empty folder; a CA is never overwritten" % folder)
        _private_dir(folder)
        _private_dir(folder / "private")
        now = _utc(now, "now") if now else _now()
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phasekit"),
                x509.NameAttribute(NameOID.COMMON_NAME, "phasekit %s CA" % site),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(_random_serial(()))
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=ca_days))
            # pathlen 0: this CA signs leaves only, never another CA (RFC 5280 section 4.2.1.9).
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(
            folder / CA_KEY,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
        _write_atomic(folder / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        _private_dir(folder / ISSUED)
        index = {"format": FORMAT, "site": site, "crl_number": 0, "certs": []}
        _write_atomic(folder / INDEX, json.dumps(index, indent=1).encode())
        pki = cls(folder)
        with pki._locked():
            pki._write_crl(now)
        return pki

    # ------------------------------------------------------------------ reading

    def _load(self) -> None:
        path = self.folder / INDEX
        try:
            d = json.loads(path.read_text())
            if d.get("format") != FORMAT:
                raise PkiError("%s: format %s, this phasekit reads %d" % (path, _q(d.get("format")), FORMAT))
            self.site = validate_name(d["site"], "site")
            self._crl_number = int(d["crl_number"])
            self._records = [CertRecord.from_json(c) for c in d["certs"]]
        except PkiError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise PkiError("%s: damaged index (%s: %s)" % (path, type(e).__name__, str(e)[:80])) from None

    def _save(self) -> None:
        d = {
            "format": FORMAT,
            "site": self.site,
            "crl_number": self._crl_number,
            "certs": [r.to_json() for r in self._records],
        }
        _write_atomic(self.folder / INDEX, json.dumps(d, indent=1).encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl  # POSIX only: imported here so that ``phasekit --help`` works everywhere

        fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._load()  # what another process wrote before we got the lock
            yield
        finally:
            os.close(fd)

    @property
    def ca_cert(self) -> Path:
        return self.folder / CA_CERT

    @property
    def crl(self) -> Path:
        return self.folder / CRL

    def records(self) -> list[CertRecord]:
        """Every certificate ever issued, oldest first."""
        return list(self._records)

    def ca_not_after(self) -> datetime.datetime:
        x509 = _x509()[0]
        return _utc(x509.load_pem_x509_certificate(self.ca_cert.read_bytes()).not_valid_after_utc, "CA")

    def find(self, target: str) -> list[CertRecord]:
        """The records ``target`` names: a serial (hex, 8+ digits, a unique prefix) or a CN (all its certificates)."""
        if not isinstance(target, str) or not target:
            raise PkiError("certificate %s: expected a serial (hex) or a CN" % _q(target))
        by_cn = [r for r in self._records if r.cn == target]
        by_serial = []
        if _HEX.match(target):
            prefix = target.lower()[2:] if target.lower().startswith("0x") else target.lower()
            by_serial = [r for r in self._records if r.serial_hex.startswith(prefix)]
            if len(by_serial) > 1:
                raise PkiError("serial %s: matches %d certificates; give more digits" % (_q(target), len(by_serial)))
        if by_cn and by_serial:
            raise PkiError("%s: is both a serial and a CN; give the full serial" % _q(target))
        if not by_cn and not by_serial:
            raise PkiError("%s: no certificate with this serial or CN in %s" % (_q(target), self.folder))
        return by_cn or by_serial

    # ------------------------------------------------------------------ issuing

    def _ca(self) -> tuple:
        x509, _h, serialization, _ec, _eku, _n = _x509()
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            key = serialization.load_pem_private_key((self.folder / CA_KEY).read_bytes(), password=None)
        except (OSError, ValueError) as e:
            raise PkiError("%s: cannot load the CA (%s)" % (self.folder, type(e).__name__)) from None
        return cert, key

    def issue(
        self,
        identity: Identity,
        days: Optional[int] = None,
        csr: Optional[bytes] = None,
        out: Optional[PathLike] = None,
        not_before: Optional[datetime.datetime] = None,
        not_after: Optional[datetime.datetime] = None,
        now: Optional[datetime.datetime] = None,
    ) -> Issued:
        """Issue a certificate for ``identity``; write ``ca.crt``, ``<stem>.crt`` and ``<stem>.key`` (0600).

        ``days`` defaults to ``DEFAULT_DAYS[role]``; a leaf never outlives the CA (capped).
        ``csr`` (PEM): sign the request's public key instead of making a key (the key stays
        where the request was made; its subject is ignored, the CN is the identity's).
        ``out``: the bundle's folder (default ``<pki>/issued/<serial>``, created, must not exist).
        ``not_before``/``not_after`` override the window outright (tests: an expired certificate).
        Older certificates of the same identity stay valid until revoked or expired.
        """
        x509, hashes, serialization, ec, EKU, NameOID = _x509()
        now = _utc(now, "now") if now else _now()
        days = DEFAULT_DAYS[identity.role] if days is None else days
        if not isinstance(days, int) or not 1 <= days <= 36500:
            raise PkiError("lifetime %s days: expected 1..36500" % _q(days))
        public_key = None
        if csr is not None:
            public_key = self._csr_key(csr)
        with self._locked():
            self._check_namespace(identity)
            ca_cert, ca_key = self._ca()
            ca_end = _utc(ca_cert.not_valid_after_utc, "CA")
            start = _utc(not_before, "not_before") if not_before else now - BACKDATE
            end = _utc(not_after, "not_after") if not_after else min(now + datetime.timedelta(days=days), ca_end)
            if end <= start:
                raise PkiError("validity window %s..%s is empty" % (_iso(start), _iso(end)))
            key = None
            if public_key is None:
                key = ec.generate_private_key(ec.SECP256R1())
                public_key = key.public_key()
            serial = _random_serial(r.serial for r in self._records)
            cert = self._build(identity, public_key, serial, start, end, ca_cert, ca_key)
            rel = Path(ISSUED) / ("%016x" % serial)
            folder = Path(out) if out is not None else self.folder / rel
            if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
                raise PkiError("%s exists and is not empty; certificates and keys are never overwritten" % folder)
            _private_dir(folder)
            stem = STEM[identity.role]
            key_path = None
            if key is not None:
                key_path = folder / (stem + ".key")
                _write_private(
                    key_path,
                    key.private_bytes(
                        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                    ),
                )
            cert_path = folder / (stem + ".crt")
            _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            ca_path = folder / CA_CERT
            _write_atomic(ca_path, self.ca_cert.read_bytes())
            # The issued certificate is also kept beside the index, whatever ``out`` was: the CA's
            # own record of what it signed.
            keep = self.folder / ISSUED / ("%016x.crt" % serial)
            _write_atomic(keep, cert.public_bytes(serialization.Encoding.PEM))
            # The bundle's place, relative to the PKI folder when inside it (the folder can move).
            record = CertRecord(serial, identity, start, end, folder=str(rel if out is None else folder.resolve()))
            self._records.append(record)
            self._save()
        return Issued(record, cert_path, key_path, ca_path, folder)

    def _csr_key(self, csr: bytes) -> object:
        x509, _h, _s, ec, _eku, _n = _x509()
        try:
            req = x509.load_pem_x509_csr(csr)
        except ValueError:
            raise PkiError("certificate request: not a PEM CSR") from None
        if not req.is_signature_valid:
            raise PkiError("certificate request: its signature does not verify")
        key = req.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise PkiError(
                "certificate request: expected an EC P-256 key (openssl -newkey ec "
                "-pkeyopt ec_paramgen_curve:prime256v1)"
            )
        return key

    def _check_namespace(self, identity: Identity) -> None:
        # A Pi and a LoRa gateway both publish under phasekit/<site>/<name>/: one name, one owner.
        if identity.role not in ("pi", "lora-gateway"):
            return
        for r in self._records:
            other = r.identity
            if (
                other.role in ("pi", "lora-gateway")
                and other.role != identity.role
                and (other.site, other.name) == (identity.site, identity.name)
            ):
                raise PkiError(
                    "phasekit/%s/%s/ already belongs to %s (serial %s); a Pi and a LoRa gateway "
                    "cannot share a name" % (identity.site, identity.name, other.cn, r.serial_hex)
                )

    def _build(
        self,
        identity: Identity,
        public_key,
        serial: int,
        start: datetime.datetime,
        end: datetime.datetime,
        ca_cert,
        ca_key,
    ):
        x509, hashes, _s, _ec, EKU, NameOID = _x509()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phasekit"),
                x509.NameAttribute(NameOID.COMMON_NAME, identity.cn),
            ]
        )
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if identity.role == "broker":
            sans = [x509.DNSName(d) for d in identity.dns] + [
                x509.IPAddress(ipaddress.ip_address(i)) for i in identity.ips
            ]
            # serverAuth only: a broker certificate cannot log in as a client, a client's cannot serve
            # (OpenSSL checks the purpose on both sides of a TLS handshake).
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH]), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([EKU.CLIENT_AUTH]), critical=False)
        return b.sign(ca_key, hashes.SHA256())

    # ------------------------------------------------------------------ revoking

    def revoke(
        self, target: str, reason: str = "unspecified", now: Optional[datetime.datetime] = None
    ) -> list[CertRecord]:
        """Revoke what ``target`` names (a serial, or a CN: all its unrevoked certificates); rewrite the CRL.

        Returns the records revoked. The broker refuses them once it reads the new CRL
        (``Pki.mosquitto`` again, then reload or restart Mosquitto: docs/pki.md).
        """
        if reason not in REASONS:
            raise PkiError("reason %s: expected one of %s" % (_q(reason), ", ".join(REASONS)))
        now = _utc(now, "now") if now else _now()
        with self._locked():
            found = self.find(target)
            todo = [r for r in found if r.revoked_at is None]
            if not todo:
                raise PkiError("%s: already revoked (%s)" % (_q(target), ", ".join(r.serial_hex for r in found)))
            for r in todo:
                r.revoked_at = now
                r.reason = reason
            self._save()
            self._write_crl(now)
        return todo

    def write_crl(self, now: Optional[datetime.datetime] = None) -> Path:
        """Sign the CRL again (every revoked serial); ``revoke`` and ``init`` call it."""
        now = _utc(now, "now") if now else _now()
        with self._locked():
            return self._write_crl(now)

    def _write_crl(self, now: datetime.datetime) -> Path:
        x509, hashes, serialization, _ec, _eku, _n = _x509()
        ca_cert, ca_key = self._ca()
        self._crl_number += 1
        # nextUpdate is the CA's own end. The only relying party is the broker, reading a local file
        # it is handed on every change; OpenSSL refuses *every* client once a CRL's nextUpdate has
        # passed, so a short one would lock the whole fleet out the day someone forgets to re-sign it.
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - BACKDATE)
            .next_update(max(_utc(ca_cert.not_valid_after_utc, "CA"), now + datetime.timedelta(days=1)))
            .add_extension(x509.CRLNumber(self._crl_number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        for r in self._records:
            if r.revoked_at is None:
                continue
            rb = x509.RevokedCertificateBuilder().serial_number(r.serial).revocation_date(r.revoked_at)
            if r.reason and r.reason != "unspecified":  # RFC 5280 5.3.1: leave out "unspecified"
                rb = rb.add_extension(x509.CRLReason(_reason_flag(r.reason)), critical=False)
            b = b.add_revoked_certificate(rb.build())
        crl = b.sign(ca_key, hashes.SHA256())
        self._save()
        _write_atomic(self.crl, crl.public_bytes(serialization.Encoding.PEM))
        return self.crl

    # ------------------------------------------------------------------ Mosquitto

    def acl(self, now: Optional[datetime.datetime] = None) -> str:
        """The Mosquitto ACL file: one ``user`` block per CN with a valid certificate at ``now``.

        A CN with no valid certificate gets no block, so nothing; there are no lines for all users,
        and patterns are not used (every topic is literal but for ``+``/``#`` inside the user's own
        namespace). The scope of a server or operator is the union over its valid certificates.
        """
        now = _utc(now, "now") if now else _now()
        users: dict[str, list[CertRecord]] = {}
        for r in self._records:
            if r.role != "broker" and r.valid_at(now):
                users.setdefault(r.cn, []).append(r)
        lines = [
            "# Mosquitto ACL of the phasekit site %s, written by 'phasekit pki mosquitto' at %s."
            % (self.site, _iso(now)),
            "# Regenerate it, do not edit it: each user is a certificate CN (docs/pki.md).",
            "# Every user not listed here may neither publish nor subscribe.",
        ]
        for cn in sorted(users):
            identity = users[cn][-1].identity
            sites = sorted({s for r in users[cn] for s in r.identity.sites})
            lines += [""] + ["# " + c for c in _acl_comment(identity, sites)] + ["user " + cn]
            lines += ["topic %s %s" % rule for rule in _acl_rules(identity, sites)]
        return "\n".join(lines) + "\n"

    def mosquitto(
        self,
        out: PathLike,
        port: int = 8883,
        bind: Optional[str] = None,
        install_dir: Optional[str] = None,
        broker: Optional[str] = None,
        now: Optional[datetime.datetime] = None,
    ) -> MosquittoFiles:
        """Write into ``out``: ``phasekit.conf``, ``phasekit.acl``, ``ca.crt``, ``crl.pem``, ``broker.crt``,
        ``broker.key`` (0600).

        ``phasekit.conf`` is a drop-in for ``/etc/mosquitto/conf.d/``: one TLS listener on ``port``
        (on ``bind`` or every address), client certificates required and checked against the CRL,
        the CN as user name and client id, no anonymous access, the ACL. Paths in it are
        ``install_dir`` (default: ``out`` itself) joined with the file names, so the folder can be
        written on an admin machine and copied. ``broker`` picks the broker certificate by CN when
        several are valid; the newest valid one is used. Existing files in ``out`` are replaced.
        """
        now = _utc(now, "now") if now else _now()
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise PkiError("port %s: expected 1..65535" % _q(port))
        if bind is not None:
            try:
                bind = _validate_ip(bind)
            except PkiError:
                bind = _validate_dns(bind)
        self._load()
        brokers = [
            r for r in self._records if r.role == "broker" and r.valid_at(now) and (broker is None or r.cn == broker)
        ]
        if not brokers:
            raise PkiError(
                "no valid broker certificate%s in %s: 'phasekit pki issue %s broker --dns HOST' first"
                % (" for " + _q(broker) if broker else "", self.folder, self.folder)
            )
        if broker is None and len({r.cn for r in brokers}) > 1:
            raise PkiError("several brokers (%s): choose one by CN" % ", ".join(sorted({r.cn for r in brokers})))
        chosen = max(brokers, key=lambda r: (r.not_before, r.serial))
        src = self.folder / chosen.folder  # an absolute record stays absolute
        try:
            cert_pem = (src / "broker.crt").read_bytes()
            key_pem = (src / "broker.key").read_bytes()
        except OSError:
            raise PkiError(
                "broker certificate %s: its files are not in %s (issued from a CSR? give the "
                "broker its own key on the broker host)" % (chosen.serial_hex, src)
            ) from None
        out = Path(out)
        _private_dir(out)
        base = Path(install_dir) if install_dir else out.resolve()
        files = {
            "ca": "ca.crt",
            "crl": "crl.pem",
            "cert": "broker.crt",
            "key": "broker.key",
            "acl": "phasekit.acl",
            "conf": "phasekit.conf",
        }
        _write_atomic(out / files["ca"], self.ca_cert.read_bytes())
        _write_atomic(out / files["crl"], self.crl.read_bytes())
        _write_atomic(out / files["cert"], cert_pem)
        _write_atomic(out / files["key"], key_pem, mode=0o600)
        acl = self.acl(now)
        _write_atomic(out / files["acl"], acl.encode())
        conf = _mosquitto_conf(self.site, port, bind, {k: base / v for k, v in files.items()}, now)
        _write_atomic(out / files["conf"], conf.encode())
        users = [line[5:] for line in acl.splitlines() if line.startswith("user ")]
        return MosquittoFiles(
            out / files["conf"],
            out / files["acl"],
            out / files["ca"],
            out / files["cert"],
            out / files["key"],
            out / files["crl"],
            broker=chosen,
            users=users,
        )


def _random_serial(taken: Iterable[int]) -> int:
    # 63 random bits: RFC 5280 allows up to 20 octets, and the CA/Browser Forum's 64-bit entropy rule
    # is about collisions an attacker could exploit; 63 bits keep the DER integer positive in 8 octets.
    used = set(taken)
    while True:
        serial = secrets.randbits(63)
        if serial and serial not in used:
            return serial


def _reason_flag(reason: str) -> x509.ReasonFlags:
    x509 = _x509()[0]
    return {
        "key-compromise": x509.ReasonFlags.key_compromise,
        "superseded": x509.ReasonFlags.superseded,
        "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
        "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    }[reason]


def _acl_rules(identity: Identity, sites: Sequence[str]) -> list[tuple[str, str]]:
    """(access, topic) pairs of one user; topics of docs/uplink.md section 2 and phasegate.operator."""
    if identity.role == "pi":
        own = "phasekit/%s/%s" % (identity.site, identity.name)
        # write: its uplink kinds and its retained status (the last will is checked as a write at
        # CONNECT); read: its command topic and the frames LoRa gateways relay for its nodes, which
        # only it holds the keys to (phasegate.relay). Writing its own command or relay topics gains
        # it nothing: commands are sealed for it (phasegate.operator), frames by its nodes.
        return [("write", own + "/#"), ("read", own + "/command"), ("read", own + "/relay/+")]
    if identity.role == "lora-gateway":
        # Its own records and status, and the frames it relays, to the relay topic of each transformer
        # of its site, named for itself (phaseuplink.topics.relay_topic): it reads nothing.
        return [
            ("write", "phasekit/%s/%s/#" % (identity.site, identity.name)),
            ("write", "phasekit/%s/+/relay/%s" % (identity.site, identity.name)),
        ]
    levels = ["+" if s == ALL_SITES else s for s in sites]
    if identity.role == "server":
        # Everything of its sites but the relayed frames: those are for the owning Pi alone (Mosquitto
        # applies deny before read, whatever the order).
        return [
            r
            for s in levels
            for r in (
                ("deny", "phasekit/%s/+/relay/#" % s),
                ("read", "phasekit/%s/+/#" % s),
                ("write", "phasekit/%s/+/command" % s),
            )
        ]
    return [("write", "phasekit/%s/+/command" % s) for s in levels]  # operator


def _acl_comment(identity: Identity, sites: Sequence[str]) -> list[str]:
    where = "every site" if ALL_SITES in sites else "site " + ", ".join(sites)
    return {
        "pi": [
            "transformer Pi %s/%s: publishes its uplink and status, reads its commands and relayed frames"
            % (identity.site, identity.name)
        ],
        "lora-gateway": [
            "LoRa gateway %s/%s: publishes its status and the frames it relays to its site's Pis"
            % (identity.site, identity.name)
        ],
        "server": [
            "server %s: reads the uplink of %s (not relayed frames), publishes commands to its Pis"
            % (identity.name, where)
        ],
        "operator": ["operator %s: publishes commands to the Pis of %s, reads nothing" % (identity.name, where)],
    }[identity.role]


def _mosquitto_conf(site: str, port: int, bind: Optional[str], paths: dict, now: datetime.datetime) -> str:
    listener = "listener %d%s" % (port, " " + bind if bind else "")
    return "\n".join(
        [
            "# Mosquitto listener for the phasekit site %s, written by 'phasekit pki mosquitto' at %s."
            % (site, _iso(now)),
            "# Drop into /etc/mosquitto/conf.d/ (docs/pki.md); regenerate it, do not edit it.",
            listener,
            "cafile %s" % paths["ca"],
            "certfile %s" % paths["cert"],
            "keyfile %s" % paths["key"],
            # Revoked client certificates are refused; the CRL is read at start and on reload (SIGHUP).
            "crlfile %s" % paths["crl"],
            # TLS 1.2 or newer only.
            "tls_version tlsv1.2",
            # Every client shows a certificate of this CA; its CN is the user name the ACL knows ...
            "require_certificate true",
            "use_identity_as_username true",
            # ... and its client id, so no client can take over (and wipe) another's session by its id.
            "use_username_as_clientid true",
            "allow_anonymous false",
            "acl_file %s" % paths["acl"],
            "",
        ]
    )
