"""The role set and the one permission table: who may do what on the server.

Roles follow the separation of duties of IEC 62351-8 (role-based access
control for power systems), cut to what this server does; docs/server.md
("Roles") gives the reasons. The one thing to know: every route names one
permission from ``PERMISSIONS`` (``phaseserver.api.routing``), and
``allowed(role, permission)`` is the only check; there is no other path to a
grant, and a role name not in ``ROLES`` is granted nothing.

| role | IEC 62351-8 | does |
|---|---|---|
| viewer | VIEWER | reads the fleet, series, nodes, alarms, commands |
| operator | OPERATOR | viewer's reads + acknowledges and clears alarms, sends commands |
| installer | INSTALLER (+ ENGINEER's registry part) | viewer's reads + registers sites, transformers, nodes |
| secadmin | SECADM (+ RBACMNT) | users, roles, API keys of its tenant; cannot operate or read data |
| auditor | SECAUD | reads the audit log only |
| sysadmin | (above tenants) | creates tenants, assigns sites to tenants, sets up their secadmins, makes monitor keys |
| monitor | (above tenants; a private role) | reads /metrics: for a Prometheus scraper's API key |

A user or API key of a tenant role belongs to exactly one tenant; the system
roles (sysadmin, monitor) belong to none (``tenant_id`` NULL) and read no
tenant's data. IEC 62351-8's ENGINEER (device configuration) has no duty
here: a Pi's configuration is its own TOML file, and the one setting the
server changes on the field side (a node's limits) is an operator command.
"""

__all__ = (
    "VIEWER",
    "OPERATOR",
    "INSTALLER",
    "SECADMIN",
    "AUDITOR",
    "SYSADMIN",
    "MONITOR",
    "ROLES",
    "TENANT_ROLES",
    "SYSTEM_ROLES",
    "PERMISSIONS",
    "PUBLIC",
    "UNASSIGNED",
    "allowed",
    "permissions_of",
    "check_role",
)

from phasecore.errors import quote
from phaseserver.errors import AuthError

VIEWER = "viewer"
OPERATOR = "operator"
INSTALLER = "installer"
SECADMIN = "secadmin"
AUDITOR = "auditor"
SYSADMIN = "sysadmin"
MONITOR = "monitor"
# Tenant roles first, the system roles (no tenant) last.
ROLES = (VIEWER, OPERATOR, INSTALLER, SECADMIN, AUDITOR, SYSADMIN, MONITOR)
TENANT_ROLES = ROLES[:5]
SYSTEM_ROLES = ROLES[5:]
# The tenant ingest files unknown sites under (server-core's migration 0001): nobody belongs to it.
UNASSIGNED = "unassigned"
# The permission a route declares when it needs no credential at all (health, OpenAPI, login).
PUBLIC = "public"

_READERS = frozenset((VIEWER, OPERATOR, INSTALLER))

# permission -> the roles that hold it. The one table; docs/server.md prints it.
PERMISSIONS: dict[str, frozenset[str]] = {
    "fleet.read": _READERS,  # fleet, one transformer, series, nodes, moves, CSV export
    "alarm.read": _READERS,
    "alarm.ack": frozenset((OPERATOR,)),
    "alarm.clear": frozenset((OPERATOR,)),
    "command.read": _READERS,
    "command.send": frozenset((OPERATOR,)),
    "registry.write": frozenset((INSTALLER,)),
    "user.manage": frozenset((SECADMIN, SYSADMIN)),
    "key.manage": frozenset((SECADMIN, SYSADMIN)),  # the sysadmin: system (monitor) keys only (auth.manage)
    "audit.read": frozenset((AUDITOR,)),
    "tenant.manage": frozenset((SYSADMIN,)),
    "metrics.read": frozenset((SYSADMIN, MONITOR)),
    "self": frozenset(ROLES),  # one's own identity, logout
}


def allowed(role: str, permission: str) -> bool:
    """Whether ``role`` holds ``permission``; unknown roles and unknown permissions hold nothing."""
    return role in PERMISSIONS.get(permission, ())


def permissions_of(role: str) -> list[str]:
    """The permissions ``role`` holds, sorted (for /me and the docs)."""
    return sorted(p for p, roles in PERMISSIONS.items() if role in roles)


def check_role(role: str, tenant_id: str | None) -> str:
    """``role`` if it may exist with this tenant (tenant roles need one, system roles none), else AuthError."""
    if role not in ROLES:
        raise AuthError("unknown role %s (one of %s)" % (quote(str(role)[:40]), ", ".join(ROLES)))
    if tenant_id == UNASSIGNED:
        raise AuthError("no account or key belongs to the %s tenant" % UNASSIGNED)
    if (role in SYSTEM_ROLES) != (tenant_id is None):
        raise AuthError("role %s %s a tenant" % (role, "has no" if role in SYSTEM_ROLES else "needs"))
    return role
