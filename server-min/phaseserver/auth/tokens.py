"""Short-lived JWT access tokens (RFC 9068 profile, RFC 8725 practices) for API clients.

A client trades a password (or a refresh token, ``refresh``) for an access
token that lives ``ttl_s`` (5 minutes by default) and a refresh token that
lives longer and can be revoked. The access token is a JWS signed with the
server's Ed25519 key (``alg`` EdDSA, RFC 8037), header ``typ`` ``at+jwt``
(RFC 9068 section 2.1), and carries ``iss``, ``aud``, ``sub`` (the account
id), ``exp``, ``iat``, ``jti``, ``tid`` (the tenant id, absent for the
system administrator) and ``role``.

The one thing to know: ``verify`` accepts exactly one algorithm and one key,
checks the header's ``typ`` itself (PyJWT does not, RFC 8725 section 3.11),
refuses a ``crit`` header and a ``kid`` that is not this key's, requires
every claim above and checks ``exp``/``iat`` against the injected time (the
wall clock: a browser does not run in site time), so a token that is
missing, expired, from the future, signed by another key, for another
audience or issuer, of another type, or ``alg: none`` raises ``AuthError``.
The API then also checks the account is still active and still has the
token's role and tenant, so revoking a user takes effect at once, not at the
token's expiry.
"""

import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from phasecore.errors import quote
from phaseserver.auth.keyfile import key_id
from phaseserver.errors import AuthError

__all__ = ("ALG", "TYP", "TokenIssuer")

ALG = "EdDSA"
TYP = "at+jwt"
_ACCEPTED_TYP = ("at+jwt", "application/at+jwt")  # RFC 9068 section 2.1; media types compare case-insensitively
_REQUIRED = ["iss", "aud", "sub", "exp", "iat", "jti", "role"]
_MAX_TOKEN = 4096


class TokenIssuer:
    """Mints and verifies access tokens with one Ed25519 key, for one issuer and one audience."""

    def __init__(
        self,
        key: Ed25519PrivateKey,
        issuer: str,
        audience: str,
        ttl_s: int = 300,
        leeway_s: int = 30,
    ):
        if not 30 <= ttl_s <= 3600:
            raise AuthError("access token lifetime %s s outside 30..3600" % (quote(ttl_s),))
        self._key = key
        self.public_key: Ed25519PublicKey = key.public_key()
        self.kid = key_id(key)
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self.leeway_s = leeway_s

    def mint(self, account_id: int, tenant_id: str | None, role: str, now: float) -> str:
        """A signed access token for this account, valid ``ttl_s`` from ``now``."""
        iat = int(now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(account_id),
            "iat": iat,
            "exp": iat + self.ttl_s,
            "jti": secrets.token_urlsafe(12),
            "role": role,
        }
        if tenant_id is not None:
            claims["tid"] = tenant_id
        return jwt.encode(claims, self._key, algorithm=ALG, headers={"typ": TYP, "kid": self.kid})

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The claims of a valid access token; AuthError saying why for anything else."""
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN or not token.isascii():
            raise AuthError("access token missing or not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise AuthError("access token header: %s" % e) from e
        if header.get("alg") != ALG:
            raise AuthError("access token alg %s is not %s" % (quote(str(header.get("alg"))[:20]), ALG))
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
            raise AuthError("access token typ %s is not %s" % (quote(str(typ)[:40]), TYP))
        if "crit" in header:
            raise AuthError("access token has a crit header this server does not understand")
        if header.get("kid", self.kid) != self.kid:
            raise AuthError("access token kid %s is not this server's key" % (quote(str(header.get("kid"))[:20]),))
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=[ALG],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": _REQUIRED,
                    "strict_aud": True,
                    # exp, iat and nbf are checked below against the injected time.
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as e:
            raise AuthError("access token refused: %s" % e) from e
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int) or isinstance(exp, bool) or isinstance(iat, bool):
            raise AuthError("access token exp and iat must be integers")
        if now >= exp + self.leeway_s:
            raise AuthError("access token expired %d s ago" % int(now - exp))
        if iat > now + self.leeway_s:
            raise AuthError("access token issued %d s in the future" % int(iat - now))
        if exp - iat > self.ttl_s:
            raise AuthError("access token lifetime %d s exceeds %d s" % (exp - iat, self.ttl_s))
        if "nbf" in claims and (not isinstance(claims["nbf"], int) or claims["nbf"] > now + self.leeway_s):
            raise AuthError("access token not valid yet")
        sub, tid, role = claims.get("sub"), claims.get("tid"), claims.get("role")
        if not isinstance(sub, str) or not sub.isdigit() or len(sub) > 18:
            raise AuthError("access token sub is not an account id")
        if tid is not None and (not isinstance(tid, str) or not 1 <= len(tid) <= 64):
            raise AuthError("access token tid is not a tenant id")
        if not isinstance(role, str):
            raise AuthError("access token role is not a text")
        return claims
