"""Ed25519 key files of the server (the access-token key, the audit key): made once, mode 600, never printed.

The one thing to know: ``load_or_create`` creates the file with ``O_EXCL``
and mode 600 when it does not exist (first start), and otherwise refuses a
file that others can read or that is not an Ed25519 private key in PEM
(PKCS#8), so a misplaced or loosened key stops the server instead of being
used. The public half is what a verifier needs (``public_pem``).
"""

import os
import stat

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from phaseserver.errors import AuthError

__all__ = ("load_or_create", "load_public", "public_pem", "key_id")


def load_or_create(path: str, what: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path``, made there (mode 600) when the file does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _load(path, what)
    except OSError as e:
        raise AuthError("%s key %s: cannot create: %s" % (what, path, e)) from e
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return key


def _load(path: str, what: str) -> Ed25519PrivateKey:
    try:
        st = os.stat(path)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AuthError("%s key %s: readable by others (mode %o); chmod 600 it" % (what, path, st.st_mode & 0o777))
        with open(path, "rb") as f:
            data = f.read(4096)
        key = serialization.load_pem_private_key(data, password=None)
    except AuthError:
        raise
    except (OSError, ValueError, TypeError) as e:
        raise AuthError("%s key %s: %s" % (what, path, e)) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise AuthError("%s key %s: not an Ed25519 key" % (what, path))
    return key


def load_public(path: str, what: str) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (SubjectPublicKeyInfo), or the public half of a private key file."""
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except OSError as e:
        raise AuthError("%s key %s: %s" % (what, path, e)) from e
    try:
        pub = serialization.load_pem_public_key(data)
    except ValueError:
        pub = _load(path, what).public_key()
    if not isinstance(pub, Ed25519PublicKey):
        raise AuthError("%s key %s: not an Ed25519 key" % (what, path))
    return pub


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The PEM of the public half."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """A short stable name of a key: the first 8 bytes of its raw public key, hex (JWT ``kid``, audit heads)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)[:8].hex()
