"""The authentication service: password logins (rate limited, audited), and a request's credential to a Principal.

Three credentials, one outcome (``Principal``):

- ``Authorization: Bearer pk_...``: an API key (``apikeys``), for scripts;
- ``Authorization: Bearer <JWT>``: an access token (``tokens``), for API clients;
- the ``phasekit_session`` cookie: a browser session (``sessions``).

A bearer credential wins over a cookie when both are sent. The one thing to
know: for sessions and access tokens the account is read again on every
request, and a revoked account, or one whose role or tenant differs from the
credential's, is refused, so revocation is immediate. Every call here is
blocking (database, Argon2id): the API runs it in a worker thread.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from phasecore.errors import quote
from phaseserver import audit
from phaseserver.auth import accounts, apikeys, refresh, sessions
from phaseserver.auth.accounts import Account
from phaseserver.auth.passwords import Hasher
from phaseserver.auth.principal import ACCESS_TOKEN, API_KEY, SESSION, Principal
from phaseserver.auth.ratelimit import LoginLimiter
from phaseserver.auth.tokens import TokenIssuer
from phaseserver.errors import AuthError

__all__ = ("AuthSettings", "AuthService", "RateLimited")

log = logging.getLogger("phaseserver.auth")


class RateLimited(AuthError):
    """Too many login attempts; ``retry_after_s`` says when to try again."""

    def __init__(self, retry_after_s: float):
        AuthError.__init__(self, "too many login attempts; retry in %d s" % int(retry_after_s + 1))
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class AuthSettings:
    session_ttl_s: float = 8 * 3600  # absolute lifetime of a browser session
    session_idle_s: float = 1800  # a session unused this long ends (OWASP Session Management: 15-30 min)
    refresh_ttl_s: float = 7 * 86400
    touch_every_s: float = 60  # how often a session's last use is written back


class AuthService:
    """Logins and credential checks over one database; ``wall`` is the wall clock (cookies and JWTs use it)."""

    def __init__(
        self,
        db: Any,
        hasher: Hasher,
        issuer: TokenIssuer,
        limiter: LoginLimiter | None = None,
        settings: AuthSettings | None = None,
        wall: Callable[[], float] = time.time,
    ):
        self.db = db
        self.hasher = hasher
        self.issuer = issuer
        self.limiter = limiter or LoginLimiter()
        self.settings = settings or AuthSettings()
        self.wall = wall

    # ---- logins ------------------------------------------------------------------------------

    def check_password(self, name: str, password: str, source: str, method: str) -> Account:
        """The account if ``password`` is right and it is active; audited either way; AuthError or RateLimited."""
        now = self.wall()
        name = name if isinstance(name, str) else ""
        wait = self.limiter.retry_after(name, source, now)
        if wait > 0:
            with self.db.transaction():
                acc = accounts.by_name(self.db, name)
                audit.record(
                    self.db,
                    "user:%s" % name[:64],
                    acc.tenant_id if acc else None,
                    "login.refused",
                    "user:%s" % name[:64],
                    None,
                    {"method": method, "reason": "rate_limited"},
                    source,
                    now=now,
                )
            raise RateLimited(wait)
        self.limiter.attempted(source, now)
        acc = accounts.by_name(self.db, name)
        ok, rehash = self.hasher.verify(acc.password_hash if acc is not None else None, password)
        reason = None
        if acc is None:
            reason = "unknown_account"
        elif not ok:
            reason = "wrong_password"
        elif not acc.active:
            reason = "revoked"
        with self.db.transaction():
            if reason is None and acc is not None and rehash:
                accounts.set_password(self.db, acc.id, self.hasher.hash(password))
            audit.record(
                self.db,
                "user:%s" % name[:64],
                acc.tenant_id if acc else None,
                "login.success" if reason is None else "login.failed",
                "user:%s" % name[:64],
                None,
                {"method": method} if reason is None else {"method": method, "reason": reason},
                source,
                now=now,
            )
        if reason is not None or acc is None:
            self.limiter.failed(name, now)
            log.info("login of %s from %s refused: %s", quote(name), source, reason)
            raise AuthError("login refused")
        self.limiter.succeeded(name)
        return acc

    def open_session(self, acc: Account, source: str) -> tuple[str, str]:
        """A browser session for ``acc``: ``(cookie token, CSRF token)``."""
        with self.db.transaction():
            return sessions.create(self.db, acc.id, source, self.wall(), self.settings.session_ttl_s)

    def issue_tokens(self, acc: Account) -> dict[str, Any]:
        """An access token and a new refresh token family for ``acc`` (the OAuth 2.0 token response shape)."""
        now = self.wall()
        with self.db.transaction():
            rt = refresh.issue(self.db, acc.id, now, self.settings.refresh_ttl_s)
        return self._token_response(acc, rt, now)

    def _token_response(self, acc: Account, rt: str, now: float) -> dict[str, Any]:
        return {
            "access_token": self.issuer.mint(acc.id, acc.tenant_id, acc.role, now),
            "token_type": "Bearer",
            "expires_in": self.issuer.ttl_s,
            "refresh_token": rt,
        }

    def refresh_tokens(self, token: str, source: str) -> dict[str, Any]:
        """Trade a refresh token for new tokens (rotation, reuse detection); AuthError if refused."""
        now = self.wall()
        with self.db.transaction():
            account_id, new = refresh.rotate(self.db, token, now, self.settings.refresh_ttl_s)
            acc = accounts.get(self.db, account_id) if account_id is not None else None
            if account_id is None and "family" in new:
                # A used-up token came back: someone holds a copy. Its family is revoked (refresh.rotate);
                # the audit entry goes to the owner's tenant.
                owner = self.db.fetchone(
                    "SELECT a.name, a.tenant_id FROM refresh_token r JOIN account a ON a.id = r.account_id"
                    " WHERE r.token_hash = ?",
                    (refresh.digest(token),),
                )
                audit.record(
                    self.db, "user:%s" % owner[0] if owner else "unknown", owner[1] if owner else None,
                    "token.reuse", "user:%s" % owner[0] if owner else "refresh_token", None, {"detail": new},
                    source, now=now,
                )  # fmt: skip
        if account_id is None:
            raise AuthError("refresh refused: %s" % new)
        if acc is None or not acc.active:
            raise AuthError("refresh refused: account revoked")
        return self._token_response(acc, new, now)

    def revoke_refresh(self, token: str) -> bool:
        with self.db.transaction():
            return refresh.revoke(self.db, token, self.wall())

    def logout(self, principal: Principal) -> None:
        if principal.session_hash is not None:
            with self.db.transaction():
                sessions.revoke(self.db, principal.session_hash, self.wall())

    # ---- credentials -------------------------------------------------------------------------

    def authenticate(self, authorization: str | None, cookie: str | None) -> Principal:
        """The Principal of a request's credential (bearer first, then the session cookie); AuthError if none."""
        now = self.wall()
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError("the Authorization header is not 'Bearer <credential>'")
            value = value.strip()
            if value.startswith(apikeys.PREFIX):
                return self._api_key(value, now)
            return self._access_token(value, now)
        if cookie:
            return self._session(cookie, now)
        raise AuthError("no credential")

    def _api_key(self, text: str, now: float) -> Principal:
        key = apikeys.lookup(self.db, text, now)
        if key is None:
            raise AuthError("API key unknown, revoked or expired")
        if (
            key.tenant_id is not None
            and self.db.fetchone("SELECT 1 FROM tenant WHERE id = ?", (key.tenant_id,)) is None
        ):
            raise AuthError("API key of a tenant that no longer exists")
        return Principal(API_KEY, key.role, key.tenant_id, name=key.name, key_id=key.id)

    def _access_token(self, token: str, now: float) -> Principal:
        claims = self.issuer.verify(token, now)
        acc = accounts.get(self.db, int(claims["sub"]))
        if acc is None or not acc.active:
            raise AuthError("access token of an unknown or revoked account")
        if acc.role != claims["role"] or acc.tenant_id != claims.get("tid"):
            raise AuthError("access token's role or tenant is no longer the account's")
        return Principal(ACCESS_TOKEN, acc.role, acc.tenant_id, account_id=acc.id, name=acc.name)

    def _session(self, cookie: str, now: float) -> Principal:
        row = sessions.lookup(self.db, cookie, now, self.settings.session_idle_s)
        if row is None:
            raise AuthError("session unknown, ended or expired")
        acc = accounts.get(self.db, row.account_id)
        if acc is None or not acc.active:
            raise AuthError("session of a revoked account")
        if now - row.seen_s >= self.settings.touch_every_s:
            with self.db.transaction():
                sessions.touch(self.db, row.token_hash, now)
        return Principal(
            SESSION,
            acc.role,
            acc.tenant_id,
            account_id=acc.id,
            name=acc.name,
            session_hash=row.token_hash,
            csrf_hash=row.csrf_hash,
        )
