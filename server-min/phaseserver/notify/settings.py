"""The ``[notify]`` table of server.toml: who hears of alarms, how, and how hard the server tries.

One flat table (``email_*`` and ``webhook_*`` keys beside the general ones),
so phaseconf checks every key where it stands and an error names its line;
beside it, optional per-tenant recipients ``[notify.tenants."TENANT"]`` (the
``tenants`` key, a table of tables) with the keys ``TENANT_KEYS``, which
``tenant_problems`` checks key by key (``phaseserver.config`` names the line).
``SCHEMA`` is merged into ``phaseserver.config``; ``NotifySettings`` is what
the dispatcher reads. The one thing to know: secrets are never in the file
itself: ``email_password_file`` and ``webhook_secret_file`` name files (first
line), read once at start, so the settings file can be shown and versioned.
"""

from typing import Any, Callable, NamedTuple

from phaseconf import IDENT, integer, number, one_of
from phasecore.errors import quote
from phaseserver.alarms.rules import SEVERITY_NAMES

__all__ = ("SCHEMA", "TENANT_KEYS", "NotifySettings", "Recipients", "problems", "tenant_problems")

_SEVERITIES = tuple(SEVERITY_NAMES[k] for k in sorted(SEVERITY_NAMES))
_LIST_MAX = 50


def _addresses(v: Any) -> str | None:
    if not isinstance(v, list) or len(v) > _LIST_MAX:
        return "expected a list of at most %d e-mail addresses" % _LIST_MAX
    for a in v:
        if not isinstance(a, str) or "@" not in a or len(a) > 254 or any(c in a for c in " ,;<>\r\n"):
            return "%s is not one e-mail address" % (quote(str(a)[:60]),)
    return None


def _url_or_empty(v: Any) -> str | None:
    if v == "":
        return None
    if not isinstance(v, str) or not v.startswith(("http://", "https://")) or len(v) > 2000:
        return "expected an http:// or https:// URL (or empty)"
    return None


def _address_or_empty(v: Any) -> str | None:
    if v == "":
        return None
    return _addresses([v])


SCHEMA: dict[str, tuple[Any, Any, Any]] = {
    "enabled": (bool, True, None),
    # Alarms below this severity are listed but not notified.
    "min_severity": (str, "minor", one_of(*_SEVERITIES)),
    # Not acknowledged within this many seconds (site time): escalated to the second list; 0 = never.
    "escalate_after_s": ((int, float), 1800.0, number(0, 30 * 86400)),
    # Pending notifications kept at most; beyond it new ones are logged as dropped, counted and alarmed.
    "queue_max": (int, 1000, integer(1, 1000000)),
    "concurrency": (int, 4, integer(1, 64)),
    "max_attempts": (int, 8, integer(1, 100)),
    # Retry back-off: backoff_s x 2^(attempt-1), at most backoff_max_s, times a jitter in [0.5, 1).
    "backoff_s": ((int, float), 2.0, number(0.01, 3600)),
    "backoff_max_s": ((int, float), 600.0, number(0.01, 86400)),
    # The server's address as people reach it, for links in messages ("" = no link).
    "base_url": (str, "", _url_or_empty),
    # E-mail (SMTP relay); no host = no e-mail.
    "email_host": (str, "", None),
    "email_port": (int, 587, integer(1, 65535)),
    "email_security": (str, "starttls", one_of("starttls", "tls", "none")),
    "email_username": (str, "", None),
    "email_password_file": (str, "", None),
    "email_from": (str, "", _address_or_empty),
    "email_to": (list, [], _addresses),
    "email_escalate_to": (list, [], _addresses),
    "email_timeout_s": ((int, float), 10.0, number(0.1, 300)),
    "email_ca_file": (str, "", None),
    # Signed webhook; no url = no webhook.
    "webhook_url": (str, "", _url_or_empty),
    "webhook_escalate_url": (str, "", _url_or_empty),
    "webhook_secret_file": (str, "", None),
    "webhook_timeout_s": ((int, float), 10.0, number(0.1, 300)),
    "webhook_ca_file": (str, "", None),
    # Per-tenant recipients: [notify.tenants."TENANT"] with TENANT_KEYS; checked by tenant_problems.
    "tenants": (dict, {}, None),
}

# The keys a tenant may set in [notify.tenants."TENANT"]: each replaces the server-wide one for its alarms.
TENANT_KEYS = ("email_to", "email_escalate_to", "webhook_url", "webhook_escalate_url", "webhook_secret_file")


class Recipients(NamedTuple):
    """Who hears of one tenant's alarms: its own value of each key it sets, else the server-wide one."""

    email_to: list[str]
    email_escalate_to: list[str]
    webhook_url: str
    webhook_escalate_url: str
    # The keys that came from the tenant's table (its webhook URLs are signed with its own secret).
    own: frozenset[str]


class NotifySettings:
    """The checked ``[notify]`` table as attributes, secrets read (``NotifySettings()``: defaults, no channel)."""

    enabled: bool
    min_severity: str
    escalate_after_s: float
    queue_max: int
    concurrency: int
    max_attempts: int
    backoff_s: float
    backoff_max_s: float
    base_url: str
    email_host: str
    email_port: int
    email_security: str
    email_username: str
    email_password: str
    email_from: str
    email_to: list[str]
    email_escalate_to: list[str]
    email_timeout_s: float
    email_ca_file: str
    webhook_url: str
    webhook_escalate_url: str
    webhook_secret: bytes
    webhook_timeout_s: float
    webhook_ca_file: str
    tenants: dict[str, dict[str, Any]]
    # Tenant -> the secret its webhooks are signed with (first line of its webhook_secret_file).
    tenant_secrets: dict[str, bytes]

    def __init__(
        self,
        email_password: str = "",
        webhook_secret: bytes = b"",
        tenant_secrets: dict[str, bytes] | None = None,
        **values: Any,
    ) -> None:
        unknown = set(values) - set(SCHEMA)
        if unknown:
            raise TypeError("unknown [notify] keys: %s" % ", ".join(sorted(unknown)))
        merged = {k: v[1] for k, v in SCHEMA.items()}
        merged.update(values)
        for key, value in merged.items():
            setattr(self, key, list(value) if isinstance(value, list) else value)
        self.tenants = {
            str(t): {k: list(v) if isinstance(v, list) else v for k, v in keys.items()}
            for t, keys in merged["tenants"].items()
        }
        self.email_password = email_password
        self.webhook_secret = bytes(webhook_secret)
        self.tenant_secrets = {t: bytes(v) for t, v in (tenant_secrets or {}).items()}

    @classmethod
    def from_table(
        cls,
        table: dict[str, Any],
        secret: Callable[[str], str],
        resolve: Callable[[str], str],
        tenant_secret: Callable[[str], str] | None = None,
    ) -> "NotifySettings":
        """From ``cfg.table("notify")``; ``secret(key)`` reads a secret file, ``resolve(path)`` a relative path,
        ``tenant_secret(tenant)`` the tenant's ``webhook_secret_file``."""
        values = dict(table)
        for key in ("email_ca_file", "webhook_ca_file"):
            if values.get(key):
                values[key] = str(resolve(values[key]))
        tenant_secrets = {}
        for tenant, keys in (table.get("tenants") or {}).items():
            if keys.get("webhook_secret_file"):
                if tenant_secret is None:
                    raise ValueError("tenant %s has a webhook secret file and no reader was given" % quote(tenant))
                tenant_secrets[tenant] = tenant_secret(tenant).encode()
        return cls(
            email_password=secret("email_password_file") if table.get("email_password_file") else "",
            webhook_secret=secret("webhook_secret_file").encode() if table.get("webhook_secret_file") else b"",
            tenant_secrets=tenant_secrets,
            **values,
        )

    def recipients(self, tenant: str | None) -> Recipients:
        """The recipients of ``tenant``'s alarms: each key the tenant sets, else the server-wide value."""
        own = self.tenants.get(tenant or "", {})
        return Recipients(
            list(own.get("email_to", self.email_to)),
            list(own.get("email_escalate_to", self.email_escalate_to)),
            own.get("webhook_url", self.webhook_url),
            own.get("webhook_escalate_url", self.webhook_escalate_url),
            frozenset(k for k in own if k in TENANT_KEYS),
        )

    @property
    def has_channel(self) -> bool:
        """Whether anything can be sent: a relay, a server-wide webhook, or a tenant's own webhook."""
        return bool(self.email_host or self.webhook_url or self.tenant_secrets)

    @property
    def min_severity_level(self) -> int:
        return next(k for k, v in SEVERITY_NAMES.items() if v == self.min_severity)


def problems(table: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, problem)`` for combinations no single key can show; ``phaseserver.config`` reports the first."""
    t = dict(NotifySettings().__dict__, **table)
    out = []
    if t["email_host"] and not t["email_from"]:
        out.append(("email_host", "e-mail needs a sender address (email_from)"))
    if t["email_host"] and not t["email_to"]:
        out.append(("email_host", "e-mail needs at least one recipient (email_to)"))
    if t["email_username"] and not t["email_password_file"]:
        out.append(("email_username", "a login needs its password file (email_password_file)"))
    if t["email_username"] and t["email_security"] == "none":
        out.append(("email_security", "a login without TLS would send the password in clear"))
    if t["webhook_url"] and not t["webhook_secret_file"]:
        out.append(("webhook_url", "a webhook needs a secret to sign with (webhook_secret_file)"))
    if t["webhook_escalate_url"] and not t["webhook_url"]:
        out.append(("webhook_escalate_url", "escalation by webhook needs webhook_url"))
    if t["backoff_max_s"] < t["backoff_s"]:
        out.append(("backoff_max_s", "must be at least backoff_s"))
    return out


def tenant_problems(table: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """``(tenant, key or None, problem)`` of the ``[notify.tenants."TENANT"]`` tables of ``table`` (``[notify]``).

    The same checks as the server-wide keys, unknown keys refused, and what a
    tenant's table needs: a webhook URL its own secret file, an e-mail list the
    server's relay (``email_host``). ``phaseserver.config`` reports the first
    with its file and line.
    """
    t = dict(NotifySettings().__dict__, **table)
    out: list[tuple[str, str | None, str]] = []
    for tenant, keys in (t["tenants"] or {}).items():
        name = str(tenant)
        if not IDENT.match(name):
            out.append((name, None, "tenant id %s: expected 1-32 letters, digits, '_', '.' or '-'" % quote(name[:40])))
            continue
        if not isinstance(keys, dict):
            out.append((name, None, "expected a table of recipients (%s)" % ", ".join(TENANT_KEYS)))
            continue
        bad = False
        for key, value in keys.items():
            if key not in TENANT_KEYS:
                out.append((name, str(key), "unknown key; known: %s" % ", ".join(sorted(TENANT_KEYS))))
                bad = True
                continue
            typ, _, check = SCHEMA[key]
            if isinstance(value, bool) or not isinstance(value, typ):
                problem: str | None = "expected %s, got %s" % (typ.__name__, type(value).__name__)
            else:
                problem = check(value) if check is not None else None
            if problem:
                out.append((name, key, "= %s: %s" % (quote(value), problem)))
                bad = True
        if bad:
            continue
        for key in ("webhook_url", "webhook_escalate_url"):
            if keys.get(key) and not keys.get("webhook_secret_file"):
                out.append((name, key, "a tenant's webhook needs its own secret to sign with (webhook_secret_file)"))
        if keys.get("webhook_secret_file") and not (keys.get("webhook_url") or keys.get("webhook_escalate_url")):
            out.append(
                (name, "webhook_secret_file", "signs nothing: the tenant sets no webhook_url or webhook_escalate_url")
            )
        for key in ("email_to", "email_escalate_to"):
            if keys.get(key) and not t["email_host"]:
                out.append((name, key, "e-mail needs the server's relay ([notify] email_host)"))
    return out
