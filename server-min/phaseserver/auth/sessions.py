"""Browser sessions: an opaque random token in a cookie, stored hashed, revocable, with a CSRF token beside it.

The cookie (``COOKIE``) holds 32 random bytes (base64url); the database holds
only their SHA-256, so a copy of the database logs nobody in. The one thing
to know: a cookie is sent by the browser on its own, so every state-changing
request made with it must also carry the session's CSRF token in the
``X-CSRF-Token`` header (the synchronizer-token pattern of the OWASP CSRF
Prevention Cheat Sheet), on top of ``SameSite=Strict``; requests with a
bearer token or API key carry no ambient credential and need none. A session
ends at ``expires_s`` (absolute), after ``idle_s`` without use, at logout, or
when its account is revoked or re-roled.
"""

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from phaseserver.auth.passwords import constant_time_equal

__all__ = ("COOKIE", "CSRF_HEADER", "SessionRow", "digest", "create", "lookup", "touch", "revoke", "check_csrf")

COOKIE = "phasekit_session"
CSRF_HEADER = "x-csrf-token"
_TOKEN_BYTES = 32


@dataclass(frozen=True)
class SessionRow:
    token_hash: str
    account_id: int
    csrf_hash: str
    created_s: float
    seen_s: float
    expires_s: float
    revoked_s: float | None


def digest(token: str) -> str:
    """SHA-256 of a token, hex: what the database stores and looks up (the tokens are random, so no salt)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def create(db: Any, account_id: int, source: str, now: float, ttl_s: float) -> tuple[str, str]:
    """A new session for ``account_id``: ``(cookie token, csrf token)``, stored hashed."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    csrf = secrets.token_urlsafe(_TOKEN_BYTES)
    db.execute(
        "INSERT INTO auth_session (token_hash, account_id, csrf_hash, created_s, seen_s, expires_s, source)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (digest(token), account_id, digest(csrf), now, now, now + ttl_s, source[:64]),
    )
    return token, csrf


def lookup(db: Any, token: str, now: float, idle_s: float) -> SessionRow | None:
    """The live session of a cookie token, or None (unknown, revoked, expired, idle too long)."""
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        return None
    r = db.fetchone(
        "SELECT token_hash, account_id, csrf_hash, created_s, seen_s, expires_s, revoked_s"
        " FROM auth_session WHERE token_hash = ?",
        (digest(token),),
    )
    if r is None:
        return None
    row = SessionRow(r[0], int(r[1]), r[2], float(r[3]), float(r[4]), float(r[5]), r[6])
    if row.revoked_s is not None or now >= row.expires_s or now - row.seen_s >= idle_s:
        return None
    return row


def touch(db: Any, token_hash: str, now: float) -> None:
    """Note use (for the idle limit); callers do it at most once a minute per session."""
    db.execute("UPDATE auth_session SET seen_s = ? WHERE token_hash = ?", (now, token_hash))


def revoke(db: Any, token_hash: str, now: float) -> None:
    db.execute("UPDATE auth_session SET revoked_s = ? WHERE token_hash = ? AND revoked_s IS NULL", (now, token_hash))


def check_csrf(csrf_hash: str, header_value: str | None) -> bool:
    """Whether a request's X-CSRF-Token header matches the session's token."""
    if not header_value or len(header_value) > 100:
        return False
    return constant_time_equal(digest(header_value).encode(), csrf_hash.encode())
