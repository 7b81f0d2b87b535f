"""Who is asking: the identity the API resolved from a session cookie, an access token or an API key.

The one thing to know: ``tenant_id`` is the only tenant a request may see;
every query a handler runs takes it from here, never from the request.
The system administrator has ``tenant_id`` None and reads no tenant's data.
"""

from dataclasses import dataclass

__all__ = ("Principal", "SESSION", "ACCESS_TOKEN", "API_KEY")

SESSION = "session"
ACCESS_TOKEN = "access_token"
API_KEY = "api_key"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: how it proved itself, its role and its tenant."""

    kind: str  # SESSION, ACCESS_TOKEN or API_KEY
    role: str
    tenant_id: str | None
    account_id: int | None = None  # a person's account (sessions, access tokens)
    name: str = ""  # the account's name, or the API key's label
    key_id: str | None = None  # an API key's public id
    session_hash: str | None = None  # the browser session (its token's hash), for logout and CSRF
    csrf_hash: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this caller: ``user:NAME`` or ``key:ID``."""
        if self.kind == API_KEY:
            return "key:%s" % self.key_id
        return "user:%s" % self.name
