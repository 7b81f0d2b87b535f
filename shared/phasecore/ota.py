"""Firmware bundles for over-the-air updates: the signed manifest, the file table, the byte stream, and
the two message kinds that carry a bundle to a node (docs/ota.md).

A bundle is one byte stream, the same on the release machine's disk, on the
Pi and, cut into chunks, on the wire::

    offset 0   b"PKOT"                                       magic
           4   envelope length, u16 big-endian
           6   envelope: CBOR [manifest, key_id, signature]  bstr, bstr 8, bstr 64 (b"" until signed)
           .   file table: CBOR [[path, size, sha256], ...]  table_len bytes (manifest key 7)
           .   the files' bytes, in table order, back to back files_len bytes (manifest key 8)

The one thing to know: only the manifest is signed (Ed25519, RFC 8032, over
its bytes exactly, ``phasecore.ed25519``), and it is small (about 100
bytes): the node verifies with a pure-Python SHA-512 whose cost grows with
the message (docs/ota-signing.md). The manifest names the file table by its
SHA-256 and the table names every file by its SHA-256, both computed with
the interpreter's native ``hashlib``. One signature check and one SHA-256
per file establish every byte the node installs.

Manifest (a CBOR map with integer keys, deterministic encoding):

| key | field | value |
|---|---|---|
| 1 | format | 1 |
| 2 | version | [major, minor, patch], each 0..65535 |
| 3 | min_version | [major, minor, patch] <= version: the oldest version it replaces, the floor once it runs |
| 4 | target | "esp32" or "host": which HAL the files carry |
| 5 | mpy | the .mpy major version the files need (6 for MicroPython 1.22 on), 0..255 |
| 6 | table_sha256 | SHA-256 of the file table, 32 bytes |
| 7 | table_len | bytes of the file table, 1..MAX_TABLE |
| 8 | files_len | bytes of all files together, 0..MAX_FILES_LEN |
| 9 | n_files | entries in the table, 1..MAX_FILES |
| 10 | time_s | build time, Unix seconds (optional) |

File table: a CBOR array of ``[path, size, sha256]``, sorted by path, paths
unique, each ``lib/...`` of at most 64 characters of ``A-Z a-z 0-9 _ . / -``
with no empty, ``.`` or ``..`` component (``check_path``): a node writes
every file under its update slot and nowhere else.

Kind 6, OTA data (Pi -> node), a CBOR array ``[ota_id, index, data]``: chunk
``index`` of bundle ``ota_id`` (``bundle_id``: the first four bytes of the
manifest's SHA-256), ``data`` the stream bytes from ``index * chunk`` on
(``chunk`` as the OTA BEGIN command set it; only the last chunk is shorter).
An empty ``data`` asks for the node's status.

Kind 7, OTA status (node -> Pi), a map: 0 schema version (1), 1 ota_id R,
2 state R (``STATE_NAMES``), 3 next R (the chunk index the node wants next),
4 reason O (``phasecore.codes.R_OTA_*`` when refused), 5 version O (the
running version, [major, minor, patch]), 6 rollback O (``RB_*``, why the
last trial of a new version went back), 7 index O (the index of the OTA data
message this answers: frames carry no request id, and a late answer must not
pass for the next one's).

Everything here is portable and sans-IO; ``OtaRefused`` (``phasecore.errors``)
carries the ``R_OTA_*`` reason of any bundle the node or the tools refuse.

Public: ``MAGIC``, ``FORMAT``, ``HEAD_FIXED``, ``CHUNK_MAX``, ``DEFAULT_CHUNK``,
``MAX_FILES``, ``MAX_TABLE``, ``MAX_FILES_LEN``, ``MAX_PATH``, ``TARGETS``,
the states ``IDLE`` .. ``TRIAL`` with ``STATE_NAMES``, the rollback reasons
``RB_*`` with ``ROLLBACK_NAMES``, ``encode``, ``decode``, ``encode_data``,
``decode_data``, ``encode_manifest``, ``decode_manifest``,
``encode_envelope``, ``decode_envelope``, ``encode_table``, ``decode_table``,
``check_path``, ``key_id``, ``bundle_id``, ``verify_signature``,
``check_versions``, ``pack_version``, ``version_text``, ``parse_version``,
``Head``, ``parse_head``, ``OtaRefused``.
"""

import hashlib

from phasecore import cbor, codes
from phasecore.codes import (
    OTA_DATA,
    OTA_STATUS,
    R_OTA_BAD_BUNDLE,
    R_OTA_BAD_HASH,
    R_OTA_BAD_SIGNATURE,
    R_OTA_DOWNGRADE,
    R_OTA_SAME_VERSION,
    R_OTA_TOO_OLD,
    R_OTA_WRONG_KEY,
)
from phasecore.errors import CBORError, OtaRefused, SchemaError, quote

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


__all__ = (
    "MAGIC",
    "FORMAT",
    "HEAD_FIXED",
    "CHUNK_MAX",
    "DEFAULT_CHUNK",
    "MAX_FILES",
    "MAX_TABLE",
    "MAX_FILES_LEN",
    "MAX_PATH",
    "MAX_ENVELOPE",
    "TARGETS",
    "IDLE",
    "RECEIVING",
    "READY",
    "REFUSED",
    "ACTIVATING",
    "TRIAL",
    "STATE_NAMES",
    "RB_RESET",
    "RB_HEALTH",
    "RB_APP",
    "RB_BOOTS",
    "ROLLBACK_NAMES",
    "encode",
    "decode",
    "encode_data",
    "decode_data",
    "encode_manifest",
    "decode_manifest",
    "encode_envelope",
    "decode_envelope",
    "encode_table",
    "decode_table",
    "check_path",
    "key_id",
    "bundle_id",
    "verify_signature",
    "check_versions",
    "pack_version",
    "version_text",
    "parse_version",
    "Head",
    "parse_head",
    "OtaRefused",
)

MAGIC = b"PKOT"
FORMAT = const(1)
HEAD_FIXED = const(6)  # magic + envelope length
# A chunk's data at most: a frame carries 250 payload bytes (docs/protocol.md 1), 249 on LoRa; the
# seal adds 1 + 5 (PIV) + 8 (tag), the body's CBOR 1 + 5 (id) + 5 (index) + 2 (bstr head).
CHUNK_MAX = const(222)
DEFAULT_CHUNK = const(222)
MAX_FILES = const(96)
MAX_TABLE = const(8192)
MAX_FILES_LEN = const(1048576)  # 1 MB: what a node's update slot may hold
MAX_PATH = const(64)
MAX_ENVELOPE = const(512)  # manifest (about 100 bytes), key id and signature with room to spare
MAX_MANIFEST = const(256)
SIG_LEN = const(64)
KID_LEN = const(8)
TARGETS = ("esp32", "host")

# The node's download states and the rollback reasons: phasecore.codes' (the one table), by short names.
IDLE = codes.OTA_IDLE
RECEIVING = codes.OTA_RECEIVING
READY = codes.OTA_READY
REFUSED = codes.OTA_REFUSED
ACTIVATING = codes.OTA_ACTIVATING
TRIAL = codes.OTA_TRIAL
STATE_NAMES = codes.OTA_STATE_NAMES
RB_RESET = codes.RB_RESET
RB_HEALTH = codes.RB_HEALTH
RB_APP = codes.RB_APP
RB_BOOTS = codes.RB_BOOTS
ROLLBACK_NAMES = codes.ROLLBACK_NAMES

_U32 = 0xFFFFFFFF
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/"
_STATUS = (
    (1, "ota_id"),
    (2, "state"),
    (3, "next"),
    (4, "reason"),
    (5, "version"),
    (6, "rollback"),
    (7, "index"),
)


def _refuse(reason, text):
    raise OtaRefused(reason, text)


def _bad(what):
    raise OtaRefused(R_OTA_BAD_BUNDLE, "bundle: " + what)


def _is_int(v):
    return type(v) is int


def _clip(v):
    # A short form of a value for an error message (never a whole hostile input).
    return quote(v, 40)


# ---------------------------------------------------------------- versions


def _check_version(name, v):
    if type(v) is not list or len(v) != 3:
        _bad("manifest %s must be [major, minor, patch], got %s" % (name, _clip(v)))
    for x in v:
        if not _is_int(x) or not 0 <= x <= 65535:
            _bad("manifest %s has a part outside 0..65535: %s" % (name, _clip(v)))
    return (v[0], v[1], v[2])


def pack_version(v):
    """``(major, minor, patch)`` as one integer (event values): ``major << 32 | minor << 16 | patch``."""
    return (v[0] << 32) | (v[1] << 16) | v[2]


def version_text(v):
    """``(0, 2, 1)`` -> ``"0.2.1"``."""
    return "%d.%d.%d" % (v[0], v[1], v[2])


def parse_version(text):
    """``"0.2.1"`` -> ``(0, 2, 1)``; SchemaError unless three integers 0..65535 joined by dots."""
    if type(text) is not str:
        raise SchemaError("version must be text like 0.2.1, got %s" % _clip(text))
    parts = text.split(".")
    if len(parts) != 3:
        raise SchemaError("version %s: expected MAJOR.MINOR.PATCH" % _clip(text))
    out = []
    for p in parts:
        if not p or len(p) > 5 or not all("0" <= c <= "9" for c in p):
            raise SchemaError("version %s: each part is a number 0..65535" % _clip(text))
        n = int(p)
        if n > 65535:
            raise SchemaError("version %s: each part is a number 0..65535" % _clip(text))
        out.append(n)
    return (out[0], out[1], out[2])


def check_versions(manifest, running, running_min):
    """Raise ``OtaRefused`` unless a node running ``running`` (whose own minimum is ``running_min``) may install it.

    ``DOWNGRADE``: the bundle's version is below ``running_min``, the floor the
    running firmware set (its state may not be readable by older code, or it
    closed a hole they have). ``TOO_OLD``: the running version is below the
    bundle's ``min_version`` (install the release between first).
    ``SAME_VERSION``: nothing to do.
    """
    v = manifest["version"]
    if v < running_min:
        _refuse(
            R_OTA_DOWNGRADE,
            "version %s is below %s, the running firmware's minimum" % (version_text(v), version_text(running_min)),
        )
    if running < manifest["min_version"]:
        _refuse(
            R_OTA_TOO_OLD,
            "running version %s is below %s, the oldest this bundle replaces"
            % (version_text(running), version_text(manifest["min_version"])),
        )
    if v == running:
        _refuse(R_OTA_SAME_VERSION, "version %s is already running" % version_text(v))


# ---------------------------------------------------------------- manifest, envelope, table


def encode_manifest(fields):
    """The manifest's bytes from a dict (the names of ``decode_manifest``), validated the same way."""
    m = {
        1: FORMAT,
        2: list(fields["version"]),
        3: list(fields["min_version"]),
        4: fields["target"],
        5: fields["mpy"],
        6: bytes(fields["table_sha256"]),
        7: fields["table_len"],
        8: fields["files_len"],
        9: fields["n_files"],
    }
    if fields.get("time_s") is not None:
        m[10] = fields["time_s"]
    data = cbor.dumps(m)
    decode_manifest(data)
    return data


def decode_manifest(data):
    """The manifest's fields (versions as tuples); ``OtaRefused`` (BAD_BUNDLE) naming the field if malformed."""
    if len(data) > MAX_MANIFEST:
        _bad("manifest of %d bytes exceeds %d" % (len(data), MAX_MANIFEST))
    try:
        m = cbor.loads(data, 2)
    except CBORError as e:
        _bad("manifest is not CBOR: %s" % e)
    if type(m) is not dict:
        _bad("manifest must be a map")
    for k in m:
        if not _is_int(k) or not 1 <= k <= 10:
            _bad("manifest key %s unknown" % _clip(k))
    for k in range(1, 10):
        if k not in m:
            _bad("manifest key %d missing" % k)
    if m[1] != FORMAT or not _is_int(m[1]):
        _bad("manifest format %s, this node reads %d" % (_clip(m[1]), FORMAT))
    out = {
        "version": _check_version("version", m[2]),
        "min_version": _check_version("min_version", m[3]),
        "target": m[4],
        "mpy": m[5],
        "table_sha256": m[6],
        "table_len": m[7],
        "files_len": m[8],
        "n_files": m[9],
        "time_s": m.get(10),
    }
    if out["min_version"] > out["version"]:
        _bad("manifest min_version is above its version")
    if out["target"] not in TARGETS:
        _bad("manifest target %s is not one of %s" % (_clip(out["target"]), ", ".join(TARGETS)))
    if not _is_int(out["mpy"]) or not 0 <= out["mpy"] <= 255:
        _bad("manifest mpy %s outside 0..255" % _clip(out["mpy"]))
    if type(out["table_sha256"]) is not bytes or len(out["table_sha256"]) != 32:
        _bad("manifest table_sha256 must be 32 bytes")
    for name, lo, hi in (("table_len", 1, MAX_TABLE), ("files_len", 0, MAX_FILES_LEN), ("n_files", 1, MAX_FILES)):
        if not _is_int(out[name]) or not lo <= out[name] <= hi:
            _bad("manifest %s %s outside %d..%d" % (name, _clip(out[name]), lo, hi))
    t = out["time_s"]
    if t is not None and (not _is_int(t) or not 0 <= t <= _U32):
        _bad("manifest time_s %s outside 0..2**32-1" % _clip(t))
    return out


def encode_envelope(manifest, kid, signature):
    """The envelope's bytes: ``[manifest, key id, signature]`` (``signature`` b"" before signing)."""
    if len(kid) != KID_LEN or len(signature) not in (0, SIG_LEN):
        raise SchemaError("envelope: key id must be 8 bytes and the signature 64 (or empty)")
    data = cbor.dumps([bytes(manifest), bytes(kid), bytes(signature)])
    if len(data) > MAX_ENVELOPE:
        raise SchemaError("envelope of %d bytes exceeds %d" % (len(data), MAX_ENVELOPE))
    return data


def decode_envelope(data):
    """``(manifest bytes, key id, signature)``; ``OtaRefused`` (BAD_BUNDLE) if malformed."""
    if len(data) > MAX_ENVELOPE:
        _bad("envelope of %d bytes exceeds %d" % (len(data), MAX_ENVELOPE))
    try:
        e = cbor.loads(data, 1)
    except CBORError as err:
        _bad("envelope is not CBOR: %s" % err)
    if type(e) is not list or len(e) != 3 or not all(type(x) is bytes for x in e):
        _bad("envelope must be [manifest, key id, signature] as byte strings")
    if len(e[1]) != KID_LEN:
        _bad("envelope key id must be %d bytes, got %d" % (KID_LEN, len(e[1])))
    if len(e[2]) not in (0, SIG_LEN):
        _bad("envelope signature must be %d bytes, got %d" % (SIG_LEN, len(e[2])))
    return e[0], e[1], e[2]


def check_path(path):
    """``path`` if a node may write it (``lib/...``, see the module docstring); else ``OtaRefused`` BAD_BUNDLE."""
    if type(path) is not str or not 5 <= len(path) <= MAX_PATH:
        _bad("file path %s must be 5..%d characters" % (_clip(path), MAX_PATH))
    for c in path:
        if c not in _PATH_CHARS:
            _bad("file path %s has character %s" % (_clip(path), quote(c)))
    parts = path.split("/")
    if parts[0] != "lib" or len(parts) < 2:
        _bad("file path %s is not under lib/" % _clip(path))
    for p in parts:
        if p in ("", ".", ".."):
            _bad("file path %s has an empty, '.' or '..' component" % _clip(path))
    return path


def encode_table(entries):
    """The file table's bytes from ``[(path, size, sha256), ...]`` (sorted by path here)."""
    rows = sorted([[check_path(p), n, bytes(h)] for p, n, h in entries])
    return cbor.dumps(rows)


def decode_table(data, n_files, files_len):
    """``[(path, size, sha256), ...]`` checked against the manifest's counts; ``OtaRefused`` if malformed."""
    if len(data) > MAX_TABLE:
        _bad("file table of %d bytes exceeds %d" % (len(data), MAX_TABLE))
    try:
        rows = cbor.loads(data, 2)
    except CBORError as e:
        _bad("file table is not CBOR: %s" % e)
    if type(rows) is not list or len(rows) != n_files:
        _bad("file table must list %d files" % n_files)
    out = []
    total = 0
    prev = ""
    for r in rows:
        if type(r) is not list or len(r) != 3:
            _bad("file table entry must be [path, size, sha256]")
        path, size, h = r
        check_path(path)
        if path <= prev:
            _bad("file table paths must be sorted and unique (%s)" % _clip(path))
        prev = path
        if not _is_int(size) or not 0 <= size <= MAX_FILES_LEN:
            _bad("file %s size %s outside 0..%d" % (path, _clip(size), MAX_FILES_LEN))
        if type(h) is not bytes or len(h) != 32:
            _bad("file %s sha256 must be 32 bytes" % path)
        total += size
        out.append((path, size, h))
    if total != files_len:
        _bad("files add up to %d bytes, the manifest says %d" % (total, files_len))
    return out


# ---------------------------------------------------------------- ids and the signature


def key_id(public_key):
    """The 8 bytes naming a release key: SHA-256 of the 32-byte public key, truncated."""
    return hashlib.sha256(bytes(public_key)).digest()[:KID_LEN]


def bundle_id(manifest):
    """The bundle's id on the wire: the first four bytes of SHA-256(manifest) as an unsigned integer."""
    d = hashlib.sha256(bytes(manifest)).digest()
    return (d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]


def verify_signature(manifest, kid, signature, public_key):
    """Raise ``OtaRefused`` WRONG_KEY or BAD_SIGNATURE unless ``signature`` is the release key's over ``manifest``.

    Imports ``phasecore.ed25519`` only here: a node loads the verifier (and
    its SHA-512) for the second it needs it.
    """
    if len(signature) != SIG_LEN:
        _refuse(R_OTA_BAD_SIGNATURE, "bundle is not signed")
    if bytes(kid) != key_id(public_key):
        _refuse(R_OTA_WRONG_KEY, "bundle signed by key %s, not the node's release key" % _hex(kid))
    from phasecore import ed25519
    from phasecore.errors import SignatureError

    try:
        ed25519.verify(public_key, manifest, signature)
    except SignatureError as e:
        _refuse(R_OTA_BAD_SIGNATURE, "manifest signature does not verify (%s)" % e.reason)


def _hex(b):
    return "".join("%02x" % x for x in b)


# ---------------------------------------------------------------- the stream's head


class Head:
    """The parsed head of a bundle stream: ``manifest`` (dict), ``manifest_bytes``, ``kid``, ``signature``,
    ``files`` (``[(path, size, sha256)]``), ``id``, and the offsets ``table_at``, ``files_at``, ``total``.
    """

    def __init__(self, env_len, manifest_bytes, kid, signature):
        self.manifest_bytes = manifest_bytes
        self.kid = kid
        self.signature = signature
        self.manifest = decode_manifest(manifest_bytes)
        self.id = bundle_id(manifest_bytes)
        self.table_at = HEAD_FIXED + env_len
        self.files_at = self.table_at + self.manifest["table_len"]
        self.total = self.files_at + self.manifest["files_len"]
        self.files = None

    def set_table(self, table):
        """Check the table's bytes against the manifest (SHA-256, counts) and keep its entries."""
        if hashlib.sha256(bytes(table)).digest() != self.manifest["table_sha256"]:
            _refuse(R_OTA_BAD_HASH, "file table does not match its SHA-256 in the manifest")
        self.files = decode_table(table, self.manifest["n_files"], self.manifest["files_len"])
        return self.files


def envelope_len(prefix):
    """The envelope length from the stream's first ``HEAD_FIXED`` bytes; ``OtaRefused`` if not a bundle."""
    if len(prefix) < HEAD_FIXED or bytes(prefix[:4]) != MAGIC:
        _bad("does not start with PKOT")
    n = (prefix[4] << 8) | prefix[5]
    if not 3 <= n <= MAX_ENVELOPE:
        _bad("envelope length %d outside 3..%d" % (n, MAX_ENVELOPE))
    return n


def parse_head(stream):
    """The ``Head`` of a whole stream in memory (tools and the Pi; the node parses as bytes arrive)."""
    n = envelope_len(stream)
    if len(stream) < HEAD_FIXED + n:
        _bad("ends inside its envelope")
    manifest, kid, sig = decode_envelope(stream[HEAD_FIXED : HEAD_FIXED + n])
    head = Head(n, manifest, kid, sig)
    if len(stream) < head.files_at:
        _bad("ends inside its file table")
    head.set_table(stream[head.table_at : head.files_at])
    if len(stream) != head.total:
        _bad("is %d bytes, its manifest says %d" % (len(stream), head.total))
    return head


# ---------------------------------------------------------------- the two message kinds


def encode_data(ota_id, index, data):
    """Kind 6 body: chunk ``index`` of bundle ``ota_id`` (``data`` at most ``CHUNK_MAX`` bytes, b"" to ask)."""
    if not _is_int(ota_id) or not 0 <= ota_id <= _U32 or not _is_int(index) or not 0 <= index <= _U32:
        raise SchemaError("ota_data: ota_id and index must be 0..2**32-1")
    if len(data) > CHUNK_MAX:
        raise SchemaError("ota_data: %d bytes exceed CHUNK_MAX %d" % (len(data), CHUNK_MAX))
    return cbor.dumps([ota_id, index, bytes(data)])


def decode_data(body):
    """``(ota_id, index, data)`` from a kind-6 body; SchemaError names what is wrong."""
    r = cbor.loads(body, 1)
    if type(r) is not list or len(r) != 3:
        raise SchemaError("ota_data body must be [ota_id, index, data]")
    ota_id, index, data = r
    if not _is_int(ota_id) or not 0 <= ota_id <= _U32:
        raise SchemaError("ota_data field ota_id = %s outside 0..2**32-1" % _clip(ota_id))
    if not _is_int(index) or not 0 <= index <= _U32:
        raise SchemaError("ota_data field index = %s outside 0..2**32-1" % _clip(index))
    if type(data) is not bytes or len(data) > CHUNK_MAX:
        raise SchemaError("ota_data field data must be at most %d bytes" % CHUNK_MAX)
    return ota_id, index, data


def _encode_status(fields):
    m = {0: 1}
    for key, name in _STATUS:
        if name in fields and fields[name] is not None:
            m[key] = list(fields[name]) if name == "version" else fields[name]
    for name in fields:
        if name not in ("ota_id", "state", "next", "reason", "version", "rollback", "index"):
            raise SchemaError("ota_status has no field %s" % name)
    data = cbor.dumps(m)
    _decode_status(data)
    return data


def _decode_status(body):
    m = cbor.loads(body, 2)
    if type(m) is not dict:
        raise SchemaError("ota_status body must be a map")
    if m.get(0) != 1:
        raise SchemaError("ota_status schema version %s, expected 1" % _clip(m.get(0)))
    out = {}
    for k in m:
        if not _is_int(k) or not 0 <= k <= 7:
            raise SchemaError("ota_status key %s unknown" % _clip(k))
    for key, name in _STATUS:
        if key not in m:
            if key <= 3:
                raise SchemaError("ota_status field %s is required" % name)
            continue
        v = m[key]
        if key == 5:
            if type(v) is not list or len(v) != 3 or not all(_is_int(x) and 0 <= x <= 65535 for x in v):
                raise SchemaError("ota_status field version = %s is not [major, minor, patch]" % _clip(v))
            v = (v[0], v[1], v[2])
        elif not _is_int(v) or not 0 <= v <= (len(STATE_NAMES) - 1 if key == 2 else 255 if key in (4, 6) else _U32):
            raise SchemaError("ota_status field %s = %s out of range" % (name, _clip(v)))
        out[name] = v
    return out


def encode(kind, fields):
    """Encode a kind-6 (``ota_id``, ``index``, ``data``) or kind-7 message from a dict of fields."""
    if kind == OTA_DATA:
        for name in fields:
            if name not in ("ota_id", "index", "data"):
                raise SchemaError("ota_data has no field %s" % name)
        return encode_data(fields["ota_id"], fields["index"], fields["data"])
    if kind == OTA_STATUS:
        return _encode_status(fields)
    raise SchemaError("phasecore.ota encodes kinds 6 and 7, not %s" % _clip(kind))


def decode(kind, body):
    """Decode a kind-6 or kind-7 body into a dict of fields; SchemaError (or CBORDecodeError) otherwise."""
    if kind == OTA_DATA:
        ota_id, index, data = decode_data(body)
        return {"ota_id": ota_id, "index": index, "data": data}
    if kind == OTA_STATUS:
        return _decode_status(body)
    raise SchemaError("phasecore.ota decodes kinds 6 and 7, not %s" % _clip(kind))
