"""Administration of accounts, API keys, tenants and site assignments, each change audited with before and after.

The API's admin routes and the CLI (``phasekit server user|key ...``) both
call these, so a change made either way is checked and recorded the same.
The one thing to know, separation of duties (IEC 62351-8, docs/server.md):

- a security administrator (``secadmin``) manages the accounts and keys of
  its own tenant, with tenant roles only;
- the system administrator (``sysadmin``) creates tenants, assigns sites to
  them, and manages only the accounts that administrate: a tenant's
  ``secadmin`` accounts and the system accounts and ``monitor`` keys; it
  cannot give itself or anyone an operating role;
- nobody changes their own role or revokes themselves (``actor_account``);
- the CLI (``Manager(..., system=True)``) acts as the machine's owner: it may
  do what either administrator may.

Each function runs in one transaction with its audit entry and returns what
the API shows; refusals raise ``AuthError`` (the API answers 403), a missing
object ``LookupError`` (404), a name taken ``ConflictError`` (409).
"""

from dataclasses import dataclass
from typing import Any

from phaseserver import audit
from phaseserver.auth import accounts, apikeys
from phaseserver.auth.passwords import Hasher
from phaseserver.auth.roles import MONITOR, SECADMIN, SYSADMIN, SYSTEM_ROLES, TENANT_ROLES, UNASSIGNED
from phaseserver.errors import AuthError, ConflictError

__all__ = ("Manager", "Actor", "TENANT_PATTERN")

TENANT_PATTERN = "^[a-z0-9][a-z0-9_.-]{0,31}$"


@dataclass(frozen=True)
class Actor:
    """Who makes a change: its audit name, role, tenant, account id (None for the CLI) and source address."""

    name: str
    role: str | None
    tenant_id: str | None
    account_id: int | None
    source: str

    @property
    def system(self) -> bool:
        """The CLI: the machine's owner, not an account."""
        return self.role is None


class Manager:
    """Administration over one database; ``wall`` gives the time of each change."""

    def __init__(self, db: Any, hasher: Hasher, wall: Any):
        self.db = db
        self.hasher = hasher
        self.wall = wall

    # ---- who may touch what -------------------------------------------------------------------

    def _may_manage_account(self, actor: Actor, tenant_id: str | None, role: str) -> None:
        if actor.system:
            return
        if actor.role == SECADMIN:
            if tenant_id != actor.tenant_id or role not in TENANT_ROLES:
                raise AuthError("a security administrator manages its own tenant's accounts, with tenant roles")
            return
        if actor.role == SYSADMIN:
            if not (role == SECADMIN or role in SYSTEM_ROLES):
                raise AuthError("the system administrator manages only secadmin and system accounts")
            return
        raise AuthError("role %s manages no accounts" % actor.role)

    def _may_manage_key(self, actor: Actor, tenant_id: str | None, role: str) -> None:
        if actor.system:
            return
        if actor.role == SECADMIN and tenant_id == actor.tenant_id and role in TENANT_ROLES:
            return
        if actor.role == SYSADMIN and tenant_id is None and role == MONITOR:
            return
        raise AuthError("role %s may not manage a %s key of tenant %s" % (actor.role, role, tenant_id))

    def _account(self, name: str) -> accounts.Account:
        acc = accounts.by_name(self.db, name)
        if acc is None:
            raise LookupError("no account %s" % name)
        return acc

    def _not_self(self, actor: Actor, acc: accounts.Account) -> None:
        if actor.account_id is not None and actor.account_id == acc.id:
            raise AuthError("nobody changes their own role or revokes themselves")

    # ---- accounts --------------------------------------------------------------------------------

    def add_account(self, actor: Actor, name: str, tenant_id: str | None, role: str, password: str) -> dict:
        self._may_manage_account(actor, tenant_id, role)
        now = self.wall()
        with self.db.transaction():
            if accounts.by_name(self.db, name) is not None:
                raise ConflictError("account %s exists" % name)
            acc = accounts.add(self.db, self.hasher, name, tenant_id, role, password, now)
            audit.record(
                self.db, actor.name, tenant_id, "account.add", "user:%s" % name, None,
                {"role": role, "tenant_id": tenant_id}, actor.source, now=now,
            )  # fmt: skip
        return acc.public()

    def list_accounts(self, actor: Actor, tenant_id: str | None) -> list[dict]:
        if not actor.system and actor.role == SECADMIN and tenant_id != actor.tenant_id:
            raise AuthError("a security administrator sees its own tenant's accounts")
        return [a.public() for a in accounts.list_accounts(self.db, tenant_id)]

    def set_role(self, actor: Actor, name: str, role: str) -> dict:
        now = self.wall()
        with self.db.transaction():
            acc = self._account(name)
            self._not_self(actor, acc)
            self._may_manage_account(actor, acc.tenant_id, acc.role)
            self._may_manage_account(actor, acc.tenant_id, role)
            if not acc.active:
                raise AuthError("account %s is revoked" % name)
            new = accounts.set_role(self.db, acc, role, now)
            audit.record(
                self.db, actor.name, acc.tenant_id, "account.role", "user:%s" % name, {"role": acc.role},
                {"role": role}, actor.source, now=now,
            )  # fmt: skip
        return new.public()

    def revoke_account(self, actor: Actor, name: str) -> dict:
        now = self.wall()
        with self.db.transaction():
            acc = self._account(name)
            self._not_self(actor, acc)
            self._may_manage_account(actor, acc.tenant_id, acc.role)
            new = accounts.revoke(self.db, acc, now)
            audit.record(
                self.db, actor.name, acc.tenant_id, "account.revoke", "user:%s" % name,
                {"active": acc.active, "role": acc.role}, {"active": False, "role": acc.role}, actor.source, now=now,
            )  # fmt: skip
        return new.public()

    # ---- API keys --------------------------------------------------------------------------------

    def add_key(
        self, actor: Actor, tenant_id: str | None, role: str, name: str, ttl_s: float | None = None
    ) -> tuple[str, dict]:
        """A new key: ``(the key text, shown once; what the API shows of it)``."""
        self._may_manage_key(actor, tenant_id, role)
        now = self.wall()
        with self.db.transaction():
            text, key = apikeys.create(self.db, tenant_id, role, name, actor.name, now, ttl_s)
            audit.record(
                self.db, actor.name, tenant_id, "key.add", "key:%s" % key.id, None,
                {"role": role, "name": name, "expires_s": key.expires_s}, actor.source, now=now,
            )  # fmt: skip
        return text, key.public()

    def list_keys(self, actor: Actor, tenant_id: str | None) -> list[dict]:
        if not actor.system and actor.role == SECADMIN and tenant_id != actor.tenant_id:
            raise AuthError("a security administrator sees its own tenant's keys")
        return [k.public() for k in apikeys.list_keys(self.db, tenant_id)]

    def revoke_key(self, actor: Actor, key_id: str) -> dict:
        now = self.wall()
        with self.db.transaction():
            key = apikeys.get(self.db, key_id)
            if key is None:
                raise LookupError("no key %s" % key_id)
            self._may_manage_key(actor, key.tenant_id, key.role)
            new = apikeys.revoke(self.db, key_id, now)
            assert new is not None
            audit.record(
                self.db, actor.name, key.tenant_id, "key.revoke", "key:%s" % key_id,
                {"active": key.revoked_s is None}, {"active": False}, actor.source, now=now,
            )  # fmt: skip
        return new.public()

    # ---- tenants and sites -----------------------------------------------------------------------

    def _system_only(self, actor: Actor) -> None:
        if not actor.system and actor.role != SYSADMIN:
            raise AuthError("only the system administrator manages tenants")

    def add_tenant(self, actor: Actor, tenant_id: str, name: str) -> dict:
        self._system_only(actor)
        now = self.wall()
        with self.db.transaction():
            if self.db.fetchone("SELECT 1 FROM tenant WHERE id = ?", (tenant_id,)):
                raise ConflictError("tenant %s exists" % tenant_id)
            self.db.execute("INSERT INTO tenant (id, name, created_s) VALUES (?, ?, ?)", (tenant_id, name, now))
            audit.record(
                self.db, actor.name, tenant_id, "tenant.add", "tenant:%s" % tenant_id, None, {"name": name},
                actor.source, now=now,
            )  # fmt: skip
        return {"id": tenant_id, "name": name, "created_s": now}

    def list_tenants(self, actor: Actor) -> list[dict]:
        self._system_only(actor)
        rows = self.db.fetchall("SELECT id, name, created_s FROM tenant ORDER BY id")
        return [{"id": r[0], "name": r[1], "created_s": float(r[2])} for r in rows]

    def list_sites(self, actor: Actor) -> list[dict]:
        self._system_only(actor)
        rows = self.db.fetchall("SELECT id, tenant_id, name, first_seen_s FROM site ORDER BY id")
        return [{"id": r[0], "tenant_id": r[1], "name": r[2], "first_seen_s": float(r[3])} for r in rows]

    def assign_site(self, actor: Actor, store: Any, site: str, tenant_id: str) -> dict:
        """Move a site (with its transformers, nodes and stored data) to a tenant."""
        self._system_only(actor)
        now = self.wall()
        with self.db.transaction():
            r = self.db.fetchone("SELECT tenant_id FROM site WHERE id = ?", (site,))
            if r is None:
                raise LookupError("no site %s" % site)
            if tenant_id != UNASSIGNED and not self.db.fetchone("SELECT 1 FROM tenant WHERE id = ?", (tenant_id,)):
                raise LookupError("no tenant %s" % tenant_id)
            store.assign_site(site, tenant_id)
            self.db.execute("UPDATE command SET tenant_id = ? WHERE site = ?", (tenant_id, site))
            for t in {r[0], tenant_id}:
                # Recorded in both tenants' logs: the one that loses the site and the one that gains it.
                audit.record(
                    self.db, actor.name, t, "site.assign", "site:%s" % site, {"tenant_id": r[0]},
                    {"tenant_id": tenant_id}, actor.source, now=now,
                )  # fmt: skip
        return {"id": site, "tenant_id": tenant_id}
