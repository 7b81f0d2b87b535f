"""Administration from the server's machine: ``phasekit server user|key|tenant|site|audit ...``.

    phasekit server tenant add --config server.toml utility-a "Utility A"
    phasekit server site assign --config server.toml feeder-12 utility-a
    phasekit server user add --config server.toml alice --role secadmin --tenant utility-a
    phasekit server user role --config server.toml bob operator
    phasekit server user revoke --config server.toml bob
    phasekit server key add --config server.toml --tenant utility-a --role viewer --name grafana
    phasekit server key add --config server.toml --role monitor --name prometheus
    phasekit server key revoke --config server.toml 0123456789abcdef
    phasekit server audit verify --config server.toml [--public-key audit.pub]
    phasekit server audit sign --config server.toml

The one thing to know: whoever runs these owns the server's files, so they
act as the machine's owner (``phaseserver.auth.manage``: either
administrator's powers), and every change is audited with the actor
``cli:<login name>`` and the source ``cli``. Passwords are read from the
terminal (twice) or, for scripts, from ``--password-file``; never from the
command line, where other users could see them. A key's text is printed once.
``audit verify`` exits 0 when the chain and every signed head check out, 1
naming the first broken entry otherwise.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from phasecore.errors import quote
from phaseserver.auth.roles import MONITOR, ROLES, TENANT_ROLES
from phaseserver.errors import AuthError, ConflictError, ServerError

__all__ = ("register",)

_EXAMPLES = __doc__.split("\n\n")[1] if __doc__ else ""


def register(sub: Any) -> None:
    """Add the verbs ``user``, ``key``, ``tenant``, ``site`` and ``audit`` to the server's CLI."""

    def verb(name: str, help_: str) -> Any:
        p = sub.add_parser(name, help=help_, epilog="examples:\n" + _EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        v = p.add_subparsers(dest="%s_verb" % name, metavar="ACTION")
        v.required = True
        return v

    def action(group: Any, name: str, help_: str, func: Any) -> argparse.ArgumentParser:
        a: argparse.ArgumentParser = group.add_parser(name, help=help_)
        a.add_argument("--config", "-c", required=True, metavar="FILE", help="the server's TOML file")
        a.set_defaults(server_func=func)
        return a

    user = verb("user", "add accounts, change their role, revoke them")
    a = action(user, "add", "add an account (password from the terminal or --password-file)", _user_add)
    a.add_argument("name")
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--tenant", help="its tenant (every role but sysadmin and monitor has one)")
    a.add_argument("--password-file", help="read the password from the first line of this file")
    a = action(user, "role", "give an account another role (its logins end)", _user_role)
    a.add_argument("name")
    a.add_argument("role", choices=ROLES)
    a = action(user, "revoke", "revoke an account for good (its logins end)", _user_revoke)
    a.add_argument("name")
    a = action(user, "list", "list the accounts of a tenant (or the system accounts)", _user_list)
    a.add_argument("--tenant")

    key = verb("key", "make and revoke API keys")
    a = action(key, "add", "make an API key; its text is printed once", _key_add)
    a.add_argument("--tenant", help="its tenant (none for a monitor key)")
    a.add_argument("--role", required=True, choices=(*TENANT_ROLES, MONITOR))
    a.add_argument("--name", required=True, help="what it is for, e.g. grafana")
    a.add_argument("--ttl-days", type=int, help="expires after this many days (default: never)")
    a = action(key, "revoke", "revoke an API key by its id", _key_revoke)
    a.add_argument("id")
    a = action(key, "list", "list the keys of a tenant (or the system keys)", _key_list)
    a.add_argument("--tenant")

    tenant = verb("tenant", "add and list tenants (utilities)")
    a = action(tenant, "add", "add a tenant", _tenant_add)
    a.add_argument("id")
    a.add_argument("name")
    action(tenant, "list", "list the tenants", _tenant_list)

    site = verb("site", "assign sites to tenants")
    a = action(site, "assign", "move a site and its data to a tenant", _site_assign)
    a.add_argument("site")
    a.add_argument("tenant")
    action(site, "list", "list the sites with their tenant", _site_list)

    audit_ = verb("audit", "check the audit log, sign its head")
    a = action(audit_, "verify", "check the whole chain and every signed head; name the first broken entry", _verify)
    a.add_argument("--public-key", help="the audit key's public half (PEM); default: from [audit] key_file")
    a.add_argument("--head-file", help="signed heads exported elsewhere (default: [audit] head_file)")
    action(audit_, "sign", "sign the chain head now (and append it to the head file)", _sign)


class _Ctx:
    """The config, database and administration of one CLI call."""

    def __init__(self, path: str):
        from phaseserver import config
        from phaseserver.auth.manage import Actor, Manager
        from phaseserver.auth.passwords import Hasher
        from phaseserver.store import open_store

        self.cfg = config.load(path)
        self.store = open_store(self.cfg)
        self.db = self.store.db
        a = self.cfg.table("auth")
        hasher = Hasher(a["argon2_time_cost"], a["argon2_memory_kib"], a["argon2_parallelism"], 1)
        self.manager = Manager(self.db, hasher, time.time)
        try:
            login = getpass.getuser()
        except (KeyError, OSError):
            login = "unknown"
        self.actor = Actor("cli:%s" % login[:40], None, None, None, "cli")

    def close(self) -> None:
        self.store.close()


def _with(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        ctx = _Ctx(args.config)
        try:
            return int(fn(ctx, args))
        except (AuthError, ConflictError, LookupError) as e:
            raise ServerError(str(e)) from e
        finally:
            ctx.close()

    return run


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                return f.readline().rstrip("\n")
        except OSError as e:
            raise ServerError("password file %s: %s" % (args.password_file, e)) from e
    if not sys.stdin.isatty():
        raise ServerError("no terminal to ask for the password: use --password-file")
    first = getpass.getpass("password for %s: " % args.name)
    if getpass.getpass("again: ") != first:
        raise ServerError("the two passwords differ")
    return first


@_with
def _user_add(ctx: _Ctx, args: argparse.Namespace) -> int:
    acc = ctx.manager.add_account(ctx.actor, args.name, args.tenant, args.role, _password(args))
    print("added %s (%s%s)" % (acc["name"], acc["role"], ", tenant %s" % acc["tenant_id"] if acc["tenant_id"] else ""))
    return 0


@_with
def _user_role(ctx: _Ctx, args: argparse.Namespace) -> int:
    acc = ctx.manager.set_role(ctx.actor, args.name, args.role)
    print("%s is now %s; its sessions and refresh tokens ended" % (acc["name"], acc["role"]))
    return 0


@_with
def _user_revoke(ctx: _Ctx, args: argparse.Namespace) -> int:
    ctx.manager.revoke_account(ctx.actor, args.name)
    print("revoked %s; its sessions and refresh tokens ended" % args.name)
    return 0


@_with
def _user_list(ctx: _Ctx, args: argparse.Namespace) -> int:
    for a in ctx.manager.list_accounts(ctx.actor, args.tenant):
        print("%-24s %-10s %s" % (a["name"], a["role"], "active" if a["active"] else "revoked"))
    return 0


@_with
def _key_add(ctx: _Ctx, args: argparse.Namespace) -> int:
    ttl = args.ttl_days * 86400 if args.ttl_days else None
    text, info = ctx.manager.add_key(ctx.actor, args.tenant, args.role, args.name, ttl)
    print(text)
    where = ", tenant %s" % info["tenant_id"] if info["tenant_id"] else ""
    print("key %s (%s%s): shown this once; the server keeps only its hash" % (info["id"], info["role"], where),
          file=sys.stderr)  # fmt: skip
    return 0


@_with
def _key_revoke(ctx: _Ctx, args: argparse.Namespace) -> int:
    ctx.manager.revoke_key(ctx.actor, args.id)
    print("revoked key %s" % args.id)
    return 0


@_with
def _key_list(ctx: _Ctx, args: argparse.Namespace) -> int:
    for k in ctx.manager.list_keys(ctx.actor, args.tenant):
        print("%s %-10s %-24s %s" % (k["id"], k["role"], k["name"], "active" if k["active"] else "revoked"))
    return 0


@_with
def _tenant_add(ctx: _Ctx, args: argparse.Namespace) -> int:
    import re

    from phaseserver.auth.manage import TENANT_PATTERN

    if not re.match(TENANT_PATTERN, args.id) or args.id == "unassigned":
        raise ServerError("tenant id %s: 1-32 lower-case letters, digits, '_', '.', '-'" % quote(args.id[:40]))
    ctx.manager.add_tenant(ctx.actor, args.id, args.name)
    print("added tenant %s" % args.id)
    return 0


@_with
def _tenant_list(ctx: _Ctx, args: argparse.Namespace) -> int:
    for t in ctx.manager.list_tenants(ctx.actor):
        print("%-32s %s" % (t["id"], t["name"]))
    return 0


@_with
def _site_assign(ctx: _Ctx, args: argparse.Namespace) -> int:
    ctx.manager.assign_site(ctx.actor, ctx.store, args.site, args.tenant)
    print("site %s now belongs to %s" % (args.site, args.tenant))
    return 0


@_with
def _site_list(ctx: _Ctx, args: argparse.Namespace) -> int:
    for s in ctx.manager.list_sites(ctx.actor):
        print("%-32s %s" % (s["id"], s["tenant_id"]))
    return 0


def _audit_paths(ctx: _Ctx) -> tuple[str, str | None]:
    au = ctx.cfg.table("audit")
    return str(ctx.cfg.resolve(au["key_file"])), str(ctx.cfg.resolve(au["head_file"])) if au["head_file"] else None


@_with
def _verify(ctx: _Ctx, args: argparse.Namespace) -> int:
    from phaseserver import audit
    from phaseserver.auth import keyfile

    key_file, head_file = _audit_paths(ctx)
    public = keyfile.load_public(args.public_key or key_file, "audit")
    report = audit.verify(ctx.db, public, args.head_file or head_file)
    print(report.summary())
    return 0 if report.ok else 1


@_with
def _sign(ctx: _Ctx, args: argparse.Namespace) -> int:
    from phaseserver import audit
    from phaseserver.auth import keyfile

    key_file, head_file = _audit_paths(ctx)
    head = audit.sign_head(ctx.db, keyfile.load_or_create(key_file, "audit"), head_file)
    print("signed head at entry %d" % head["seq"] if head else "nothing new to sign")
    return 0
