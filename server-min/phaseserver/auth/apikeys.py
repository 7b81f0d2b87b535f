"""API keys: per-tenant, one role each, stored hashed, revocable; for scripts and integrations.

A key reads ``pk_<id>_<secret>``: ``id`` (16 hex digits) is public and names
the row, ``secret`` is 32 random bytes (base64url) of which the database
keeps only the SHA-256. The one thing to know: the secret is shown once, when
the key is made (``phasekit server key add`` or the API), and can never be
read back; a lost key is revoked and replaced. A fast hash is right here
because the secret is random (256 bits): there is nothing to guess that a
slow hash would protect (unlike passwords, ``passwords``). A key has a tenant
role in one tenant, or the ``monitor`` role (no tenant: a metrics scraper);
never ``sysadmin``.
"""

import re
import secrets
from dataclasses import dataclass
from typing import Any

from phasecore.errors import quote
from phaseserver.auth.passwords import constant_time_equal
from phaseserver.auth.roles import MONITOR, TENANT_ROLES, check_role
from phaseserver.auth.sessions import digest
from phaseserver.errors import AuthError

__all__ = ("PREFIX", "ApiKey", "create", "lookup", "revoke", "list_keys", "get")

PREFIX = "pk_"
_FORM = re.compile(r"pk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")
_COLUMNS = "id, tenant_id, role, name, secret_hash, created_by, created_s, expires_s, revoked_s"


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str | None
    role: str
    name: str
    secret_hash: str
    created_by: str
    created_s: float
    expires_s: float | None
    revoked_s: float | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "role": self.role,
            "name": self.name,
            "created_by": self.created_by,
            "created_s": self.created_s,
            "expires_s": self.expires_s,
            "active": self.revoked_s is None,
        }


def _row(r: Any) -> ApiKey:
    return ApiKey(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        float(r[6]),
        None if r[7] is None else float(r[7]),
        None if r[8] is None else float(r[8]),
    )


def create(
    db: Any, tenant_id: str | None, role: str, name: str, created_by: str, now: float, ttl_s: float | None = None
) -> tuple[str, ApiKey]:
    """A new key: ``(the whole key text, shown once; its row)``."""
    if role not in TENANT_ROLES + (MONITOR,):
        raise AuthError("an API key's role is one of %s" % ", ".join(TENANT_ROLES + (MONITOR,)))
    check_role(role, tenant_id)
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or not name.isprintable():
        raise AuthError("an API key's name is 1-64 printable characters")
    if tenant_id is not None and db.fetchone("SELECT 1 FROM tenant WHERE id = ?", (tenant_id,)) is None:
        raise AuthError("tenant %s does not exist" % (quote(tenant_id),))
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    expires = None if ttl_s is None else now + ttl_s
    db.execute(
        "INSERT INTO api_key (id, tenant_id, role, name, secret_hash, created_by, created_s, expires_s)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (key_id, tenant_id, role, name, digest(secret), created_by[:80], now, expires),
    )
    row = get(db, key_id)
    assert row is not None
    return "%s%s_%s" % (PREFIX, key_id, secret), row


def get(db: Any, key_id: str) -> ApiKey | None:
    r = db.fetchone("SELECT %s FROM api_key WHERE id = ?" % _COLUMNS, (key_id,))
    return _row(r) if r is not None else None


def list_keys(db: Any, tenant_id: str | None) -> list[ApiKey]:
    """The keys of one tenant (None: the system keys)."""
    if tenant_id is None:
        rows = db.fetchall("SELECT %s FROM api_key WHERE tenant_id IS NULL ORDER BY created_s" % _COLUMNS)
    else:
        rows = db.fetchall("SELECT %s FROM api_key WHERE tenant_id = ? ORDER BY created_s" % _COLUMNS, (tenant_id,))
    return [_row(r) for r in rows]


def lookup(db: Any, text: str, now: float) -> ApiKey | None:
    """The live key a bearer text names, or None (malformed, unknown, wrong secret, revoked, expired)."""
    m = _FORM.match(text) if isinstance(text, str) else None
    if m is None:
        return None
    row = get(db, m.group(1))
    if row is None or not constant_time_equal(digest(m.group(2)).encode(), row.secret_hash.encode()):
        return None
    if row.revoked_s is not None or (row.expires_s is not None and now >= row.expires_s):
        return None
    return row


def revoke(db: Any, key_id: str, now: float) -> ApiKey | None:
    """Revoke a key for good; the row as it is now, or None if there is no such key."""
    db.execute("UPDATE api_key SET revoked_s = ? WHERE id = ? AND revoked_s IS NULL", (now, key_id))
    return get(db, key_id)
