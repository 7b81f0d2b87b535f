"""Refresh tokens: opaque, stored hashed, single use, revocable, rotated on every use.

A client that logged in for API use holds a refresh token (``rt_`` + 32
random bytes, base64url) next to its short-lived access token. Trading it in
(``rotate``) gives a new access token and a new refresh token and uses up the
old one. The one thing to know: the tokens of one login form a family, and a
used-up token presented again means someone else holds a copy, so the whole
family is revoked (refresh token rotation with reuse detection, OAuth 2.0
Security Best Current Practice, RFC 9700 section 4.14.2). A token also ends at
``expires_s``, at an explicit revocation, or when its account is revoked.
"""

import secrets
from typing import Any

from phaseserver.auth.sessions import digest

__all__ = ("PREFIX", "issue", "rotate", "revoke", "digest")

PREFIX = "rt_"


def issue(db: Any, account_id: int, now: float, ttl_s: float, family: str | None = None) -> str:
    """A new refresh token for ``account_id`` (a new family unless ``family`` is given)."""
    token = PREFIX + secrets.token_urlsafe(32)
    db.execute(
        "INSERT INTO refresh_token (token_hash, account_id, family, created_s, expires_s) VALUES (?, ?, ?, ?, ?)",
        (digest(token), account_id, family or secrets.token_hex(8), now, now + ttl_s),
    )
    return token


def rotate(db: Any, token: str, now: float, ttl_s: float) -> tuple[int | None, str]:
    """Use up ``token``: ``(account id, the new refresh token)``, or ``(None, why refused)``.

    A refusal is returned, not raised, so that the caller commits what it did
    (the family revoked on reuse) before it answers 401.
    """
    if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > 100:
        return None, "not a refresh token"
    r = db.fetchone(
        "SELECT account_id, family, expires_s, used_s, revoked_s FROM refresh_token WHERE token_hash = ?",
        (digest(token),),
    )
    if r is None:
        return None, "unknown refresh token"
    account_id, family, expires_s, used_s, revoked_s = int(r[0]), r[1], float(r[2]), r[3], r[4]
    if revoked_s is not None:
        return None, "refresh token revoked"
    if used_s is not None:
        db.execute("UPDATE refresh_token SET revoked_s = ? WHERE family = ? AND revoked_s IS NULL", (now, family))
        return None, "refresh token used twice: family %s revoked" % family
    if now >= expires_s:
        return None, "refresh token expired"
    db.execute("UPDATE refresh_token SET used_s = ? WHERE token_hash = ?", (now, digest(token)))
    return account_id, issue(db, account_id, now, ttl_s, family)


def revoke(db: Any, token: str, now: float) -> bool:
    """Revoke ``token`` and its family (a logout of an API client); whether it existed."""
    if not isinstance(token, str) or len(token) > 100:
        return False
    r = db.fetchone("SELECT family FROM refresh_token WHERE token_hash = ?", (digest(token),))
    if r is None:
        return False
    db.execute("UPDATE refresh_token SET revoked_s = ? WHERE family = ? AND revoked_s IS NULL", (now, r[0]))
    return True
