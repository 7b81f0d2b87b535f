"""Accounts of people: name, tenant, role and Argon2id password hash, added and changed by administrators.

The one thing to know: an account is never deleted, only revoked
(``disabled_s`` set): its name stays taken and the audit log's references to
it stay meaningful. Revoking also revokes its browser sessions and refresh
tokens in the same transaction, and the API re-reads the account on every
request, so a revoked or re-roled account loses its old powers at once.
"""

import re
from dataclasses import dataclass
from typing import Any

from phasecore.errors import quote
from phaseserver.auth.passwords import Hasher
from phaseserver.auth.roles import check_role
from phaseserver.errors import AuthError

__all__ = (
    "Account",
    "NAME_PATTERN",
    "check_name",
    "add",
    "get",
    "by_name",
    "list_accounts",
    "set_role",
    "revoke",
    "set_password",
)

NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_NAME = re.compile(NAME_PATTERN[:-1] + r"\Z")
_COLUMNS = "id, tenant_id, name, role, password_hash, created_s, disabled_s"


@dataclass(frozen=True)
class Account:
    id: int
    tenant_id: str | None
    name: str
    role: str
    password_hash: str
    created_s: float
    disabled_s: float | None

    @property
    def active(self) -> bool:
        return self.disabled_s is None

    def public(self) -> dict[str, Any]:
        """What the API shows of an account (never the hash)."""
        return {
            "name": self.name,
            "tenant_id": self.tenant_id,
            "role": self.role,
            "created_s": self.created_s,
            "active": self.active,
        }


def check_name(name: str) -> str:
    """``name`` if it is 1-64 letters, digits, '.', '_', '@' or '-' starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise AuthError("account name %s: 1-64 letters, digits, '.', '_', '@', '-'" % (quote(str(name)[:40]),))
    return name


def _row(r: Any) -> Account:
    return Account(int(r[0]), r[1], r[2], r[3], r[4], float(r[5]), None if r[6] is None else float(r[6]))


def get(db: Any, account_id: int) -> Account | None:
    r = db.fetchone("SELECT %s FROM account WHERE id = ?" % _COLUMNS, (account_id,))
    return _row(r) if r is not None else None


def by_name(db: Any, name: str) -> Account | None:
    r = db.fetchone("SELECT %s FROM account WHERE name = ?" % _COLUMNS, (name,))
    return _row(r) if r is not None else None


def list_accounts(db: Any, tenant_id: str | None) -> list[Account]:
    """The accounts of one tenant (``None``: the system administrators)."""
    if tenant_id is None:
        rows = db.fetchall("SELECT %s FROM account WHERE tenant_id IS NULL ORDER BY name" % _COLUMNS)
    else:
        rows = db.fetchall("SELECT %s FROM account WHERE tenant_id = ? ORDER BY name" % _COLUMNS, (tenant_id,))
    return [_row(r) for r in rows]


def add(db: Any, hasher: Hasher, name: str, tenant_id: str | None, role: str, password: str, now: float) -> Account:
    """A new account (inside the caller's transaction); AuthError if the name is taken or the role is wrong."""
    check_name(name)
    check_role(role, tenant_id)
    if by_name(db, name) is not None:
        raise AuthError("account %s exists" % name)
    if tenant_id is not None and db.fetchone("SELECT 1 FROM tenant WHERE id = ?", (tenant_id,)) is None:
        raise AuthError("tenant %s does not exist" % (quote(tenant_id),))
    r = db.fetchone(
        "INSERT INTO account (tenant_id, name, role, password_hash, created_s) VALUES (?, ?, ?, ?, ?) RETURNING id",
        (tenant_id, name, role, hasher.hash(password), now),
    )
    acc = get(db, int(r[0]))
    assert acc is not None
    return acc


def set_role(db: Any, account: Account, role: str, now: float) -> Account:
    """Give ``account`` another role of its tenant; its sessions and refresh tokens end."""
    check_role(role, account.tenant_id)
    db.execute("UPDATE account SET role = ? WHERE id = ?", (role, account.id))
    _end_logins(db, account.id, now)
    acc = get(db, account.id)
    assert acc is not None
    return acc


def set_password(db: Any, account_id: int, password_hash: str) -> None:
    """Store a new hash (a re-hash at login after the cost went up, or a reset)."""
    db.execute("UPDATE account SET password_hash = ? WHERE id = ?", (password_hash, account_id))


def revoke(db: Any, account: Account, now: float) -> Account:
    """Disable ``account`` for good; its sessions and refresh tokens end now."""
    if account.disabled_s is None:
        db.execute("UPDATE account SET disabled_s = ? WHERE id = ?", (now, account.id))
    _end_logins(db, account.id, now)
    acc = get(db, account.id)
    assert acc is not None
    return acc


def _end_logins(db: Any, account_id: int, now: float) -> None:
    # A role change or a revocation ends every login the account has; access tokens die with the
    # account check the API makes on each request (tokens.py).
    stamp = now
    db.execute("UPDATE auth_session SET revoked_s = ? WHERE account_id = ? AND revoked_s IS NULL", (stamp, account_id))
    db.execute("UPDATE refresh_token SET revoked_s = ? WHERE account_id = ? AND revoked_s IS NULL", (stamp, account_id))
