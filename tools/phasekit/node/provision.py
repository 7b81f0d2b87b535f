"""Provision a node: its config and key from the site key, ready for ``phasekit deploy --config``.

Writes into ``--out`` (default ``nodes/NODE_ID``) the two files the firmware
reads at boot, in the format ``phasenode.settings`` documents and validated by
it: ``config.json`` (node id and link address, key generation, board, home
phase, the release public key firmware updates are checked against, limits,
relay rules) and ``node.key`` (the node's 32-byte secret,
``phasecore.keys.node_secret(site_key, address, generation)``, HKDF-SHA256 of
the site key; docs/security.md). The site key is read from a file (64 hex
digits, the transformer Pi's format), used in memory and never printed or
written anywhere else; only the node's own secret leaves this command.

A replaced or wiped node gets ``--generation`` one higher than before: the
same (address, generation) with a fresh sequence counter would repeat AES-CCM
nonces (docs/security.md, "Key generations"). Existing files are not
overwritten without ``--force``.

``phasekit provision --new-site-key FILE`` makes a site key (CSPRNG, mode 0600).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phasekit.errors import UsageError

if TYPE_CHECKING:
    from phasenode.settings import NodeConfig

KEY_FILE = "node.key"


def _usage(msg: str) -> UsageError:
    return UsageError(msg)


def read_site_key(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte site key from ``path``: 64 hex digits, whitespace ignored (as the Pi reads it)."""
    try:
        text = Path(path).read_text(encoding="ascii")
        mode = os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise _usage("site key %s: cannot read (%s)" % (path, type(e).__name__)) from None
    try:
        key = bytes.fromhex("".join(text.split()))
    except ValueError:
        raise _usage("site key %s: not hex (expected 64 hex digits)" % path) from None
    if len(key) != 32:
        raise _usage("site key %s: %d bytes, expected 32" % (path, len(key)))
    if mode & 0o077:
        print(
            "phasekit provision: warning: site key %s is readable by group or others (mode %o); chmod 600"
            % (path, mode & 0o777),
            file=sys.stderr,
        )
    return key


def new_site_key(path: str | os.PathLike[str]) -> None:
    """Write a fresh site key (64 hex digits) to ``path`` with mode 0600; refuses to overwrite."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _usage(
            "%s exists: a site key is never overwritten (every node of the site depends on it)" % path
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_bytes(32).hex() + "\n")


def build_config(
    node_id: str,
    address: int,
    board_name: str,
    home_phase: str,
    generation: int = 0,
    limits: Mapping[str, int] | None = None,
    relay: Mapping[str, int] | None = None,
    release_key: bytes | None = None,
    app: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The config.json object (not yet validated); ``app``: the node application's settings."""
    cfg: dict[str, Any] = {
        "format": 1,
        "node": {"id": node_id, "address": address},
        "key": {"file": KEY_FILE, "generation": generation},
        "board": board_name,
        "home_phase": home_phase,
    }
    if release_key is not None:
        cfg["release_key"] = release_key.hex()
    if limits:
        cfg["limits"] = dict(limits)
    if relay:
        cfg["relay"] = dict(relay)
    if app:
        cfg["app"] = dict(app)
    return cfg


def provision(
    site_key: bytes,
    out_dir: str | os.PathLike[str],
    node_id: str,
    address: int,
    board_name: str,
    home_phase: str,
    generation: int = 0,
    limits: Mapping[str, int] | None = None,
    relay: Mapping[str, int] | None = None,
    force: bool = False,
    release_key: bytes | None = None,
    app: Mapping[str, int] | None = None,
) -> NodeConfig:
    """Validate, derive and write config.json + node.key into ``out_dir``; returns the NodeConfig."""
    from phasecore import keys
    from phasecore.errors import CryptoError
    from phasenode import persist, settings

    obj = build_config(node_id, address, board_name, home_phase, generation, limits, relay, release_key, app)
    out = Path(out_dir)
    try:
        cfg = settings.validate_config(obj, str(out / settings.CONFIG_FILE))
    except settings.ConfigError as e:
        raise _usage(str(e)) from None
    existing = [n for n in (settings.CONFIG_FILE, KEY_FILE) if (out / n).exists()]
    if existing and not force:
        raise _usage(
            "%s already holds %s: use --force to replace them (and a new --generation if that node "
            "has run: re-using a key generation repeats nonces)" % (out, ", ".join(existing))
        )
    try:
        secret = keys.node_secret(site_key, address, generation)
    except CryptoError as e:
        raise _usage(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    store = persist.Store(str(out))
    store.write_secret(KEY_FILE, secret)
    (out / KEY_FILE).chmod(0o600)
    store.save_config(obj)
    return cfg
