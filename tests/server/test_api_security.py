"""The API's security targets (issue 14), each against every route of the running app.

- Every route that is not public refuses a missing, expired, wrongly signed,
  wrong-audience, wrong-issuer, wrong-typ, alg:none and algorithm-confused
  access token, a malformed or revoked API key, and a revoked account's token
  (401), while a valid credential gets past authentication (so these tests
  can fail).
- A token or key of another tenant sees nothing of this one: 404 for its
  transformers and commands, nothing of it in lists, its audit entries not at all.
- A viewer cannot acknowledge, clear, command or read the audit log (403);
  every role gets 403 from every route whose permission it lacks.
- Browser sessions: the cookie is HttpOnly and SameSite=Strict (Secure unless
  configured off), a state-changing request without the CSRF token is
  refused, logout ends the session.
- Logins are rate limited per account and per address (429 + Retry-After)
  and audited, success and failure.

Real peers only: the real app (phaseserver.app.build) over a real SQLite
store, Starlette's TestClient.
"""

import re

import jwt
import pytest
from api_env import PASSWORD, ApiEnv
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from phaseserver import audit
from phaseserver.auth.roles import PUBLIC, allowed
from phaseserver.auth.tokens import TokenIssuer

PATH_VALUES = {"site": "s1", "transformer": "tx1", "id": "1", "name": "ghost"}  # no account "ghost"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = ApiEnv(tmp_path_factory.mktemp("api-security"))
    yield e
    e.close()


@pytest.fixture(scope="module")
def client(env):
    with env.client() as c:
        yield c


def _path(ep, values=PATH_VALUES):
    path = ep.path
    for name in ep.path_params:
        value = values[name]
        if name == "id" and "keys" in ep.path:
            value = "0123456789abcdef"
        path = path.replace("{%s}" % name, value)
    return path


def _protected(env):
    return [ep for ep in env.api.endpoints if ep.permission != PUBLIC]


def _call(client, ep, headers, values=PATH_VALUES):
    kw = {"headers": headers}
    if ep.method in ("POST", "PUT", "PATCH"):
        kw["json"] = {}
    return client.request(ep.method, _path(ep, values), **kw)


def _claims(env, **over):
    issuer = env.api.auth.issuer
    now = int(env.api.wall())
    c = {"iss": issuer.issuer, "aud": issuer.audience, "sub": "1", "iat": now, "exp": now + 60, "jti": "j",
         "role": "operator", "tid": "t1"}  # fmt: skip
    c.update(over)
    return c


def _account_id(env, name):
    return env.db.fetchone("SELECT id FROM account WHERE name = ?", (name,))[0]


def _bad_tokens(env):
    """name -> Authorization header value, each a credential the API must refuse."""
    issuer = env.api.auth.issuer
    key = issuer._key
    now = env.api.wall()
    sub = _account_id(env, "o1")
    good = _claims(env, sub=str(sub))
    other = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hs = jwt.api_jws.PyJWS()
    hs._algorithms["HS256"].prepare_key = lambda k: k  # PyJWT refuses a PEM as an HMAC key; forge it by hand
    return {
        "missing": None,
        "not bearer": "Basic dXNlcjpwYXNz",
        "empty bearer": "Bearer ",
        "expired": "Bearer " + issuer.mint(sub, "t1", "operator", now - 3600),
        "wrongly signed": "Bearer "
        + TokenIssuer(other, issuer.issuer, issuer.audience).mint(sub, "t1", "operator", now),
        "wrongly signed, our kid": "Bearer "
        + jwt.encode(good, other, "EdDSA", headers={"typ": "at+jwt", "kid": issuer.kid}),
        "wrong audience": "Bearer " + TokenIssuer(key, issuer.issuer, "another-api").mint(sub, "t1", "operator", now),
        "wrong issuer": "Bearer " + TokenIssuer(key, "intruder", issuer.audience).mint(sub, "t1", "operator", now),
        "wrong typ": "Bearer " + jwt.encode(good, key, "EdDSA", headers={"typ": "JWT"}),
        "alg none": "Bearer " + jwt.encode(good, None, "none", headers={"typ": "at+jwt"}),
        "alg HS256 with the public key": "Bearer "
        + hs.encode(jwt.utils.force_bytes(__import__("json").dumps(good)), pem, "HS256", {"typ": "at+jwt"}),
        "role raised in a forged token": "Bearer "
        + jwt.encode(_claims(env, sub=str(sub), role="secadmin"), other, "EdDSA", headers={"typ": "at+jwt"}),
        "malformed api key": "Bearer pk_0123456789abcdef_" + "A" * 43,
        "api key, secret altered": "Bearer "
        + env.keys["viewer1"][:-2]
        + ("AA" if env.keys["viewer1"][-2:] != "AA" else "BB"),
        "session cookie made up": "cookie",
    }


def _altered(text):
    return text[:-2] + ("AA" if text[-2:] != "AA" else "BB")


def test_every_protected_route_refuses_every_bad_credential(env, client):
    routes = _protected(env)
    assert len(routes) >= 20
    bad = _bad_tokens(env)
    failures = []
    for ep in routes:
        for name, value in bad.items():
            headers = {}
            if value == "cookie":
                client.cookies.set("phasekit_session", "x" * 43)
            elif value is not None:
                headers["Authorization"] = value
            r = _call(client, ep, headers)
            client.cookies.clear()
            if r.status_code != 401:
                failures.append("%s %s with %s: %d" % (ep.method, ep.path, name, r.status_code))
            elif r.json()["error"] != "unauthenticated" or "Bearer" not in r.headers.get("www-authenticate", ""):
                failures.append("%s %s with %s: wrong 401 body or header" % (ep.method, ep.path, name))
    assert not failures, "\n".join(failures[:40])


def test_a_valid_credential_gets_past_authentication_on_every_route(env, client):
    # The other side of the test above: the same requests with a genuine credential are not 401.
    who = {"fleet.read": "o1", "alarm.read": "o1", "alarm.ack": "o1", "alarm.clear": "o1", "command.read": "o1",
           "command.send": "o1", "registry.write": "i1", "user.manage": "s1", "key.manage": "s1",
           "audit.read": "a1", "tenant.manage": "root", "self": "v1"}  # fmt: skip
    for ep in _protected(env):
        if ep.permission == "metrics.read":
            headers = env.key("monitor")
        else:
            headers = env.bearer(client, who[ep.permission])
        r = _call(client, ep, headers)
        assert r.status_code != 401, (ep.method, ep.path, r.text)
        assert r.status_code != 403 or r.json()["error"] != "forbidden" or "lacks" not in r.json()["detail"], (
            ep.method,
            ep.path,
            r.text,
        )


def test_a_revoked_account_or_key_is_refused_at_once(env, client):
    m = env.manager()
    from api_env import CLI

    m.add_account(CLI, "leaver", "t1", "operator", PASSWORD)
    headers = env.bearer(client, "leaver")
    assert client.get("/api/v1/fleet", headers=headers).status_code == 200
    m.revoke_account(CLI, "leaver")
    assert client.get("/api/v1/fleet", headers=headers).status_code == 401  # the access token has not expired
    r = client.post("/api/v1/auth/refresh", json={"refresh_token": env.tokens(client, "leaver")["refresh_token"]})
    assert r.status_code == 401
    text, info = m.add_key(CLI, "t1", "viewer", "temporary")
    assert client.get("/api/v1/fleet", headers={"Authorization": "Bearer " + text}).status_code == 200
    m.revoke_key(CLI, info["id"])
    assert client.get("/api/v1/fleet", headers={"Authorization": "Bearer " + text}).status_code == 401
    # A role change ends the old token's powers too: the token's role is checked against the account's.
    m.add_account(CLI, "mover", "t1", "operator", PASSWORD)
    headers = env.bearer(client, "mover")
    m.set_role(CLI, "mover", "viewer")
    assert client.get("/api/v1/fleet", headers=headers).status_code == 401


def test_another_tenants_token_or_key_sees_nothing_of_this_tenant(env, client):
    # t1's objects: s1/tx1, its commands and audit entries; t2's credentials must not reach them.
    others = {"o2 token": env.bearer(client, "o2"), "v2 token": env.bearer(client, "v2"), "v2 key": env.key("viewer2")}
    failures = []
    for ep in _protected(env):
        if not ep.path_params or ep.path.startswith("/api/v1/accounts") or "/keys/" in ep.path:
            continue
        for name, headers in others.items():
            r = _call(client, ep, headers)
            if r.status_code not in (403, 404, 422, 503):
                failures.append("%s %s with %s: %d %s" % (ep.method, ep.path, name, r.status_code, r.text[:80]))
            if "s1" in r.text or "tx1" in r.text.replace("s1/tx1", ""):
                if r.status_code != 404:
                    failures.append("%s %s with %s leaks: %s" % (ep.method, ep.path, name, r.text[:80]))
    assert not failures, "\n".join(failures)
    fleet = client.get("/api/v1/fleet", headers=others["v2 key"]).json()["transformers"]
    assert [(t["site"], t["transformer"]) for t in fleet] == [("s2", "tx2")]
    own = client.get("/api/v1/fleet", headers=env.key("viewer1")).json()["transformers"]
    assert [(t["site"], t["transformer"]) for t in own] == [("s1", "tx1")]
    # The audit log of t2 holds nothing of t1, and t1's auditor key sees only t1.
    entries = client.get("/api/v1/audit?limit=1000", headers=env.bearer(client, "a2")).json()["entries"]
    assert entries and all(e["tenant_id"] == "t2" for e in entries)
    entries = client.get("/api/v1/audit?limit=1000", headers=env.key("auditor1")).json()["entries"]
    assert entries and all(e["tenant_id"] == "t1" for e in entries)
    # Accounts of another tenant cannot be changed by this tenant's security administrator.
    r = client.put("/api/v1/accounts/v2/role", json={"role": "operator"}, headers=env.bearer(client, "s1"))
    assert r.status_code == 403


def test_a_viewer_cannot_acknowledge_clear_command_or_read_the_audit_log(env, client):
    viewer = {"token": env.bearer(client, "v1"), "key": env.key("viewer1")}
    checked = set()
    for ep in env.api.endpoints:
        if ep.permission in ("alarm.ack", "alarm.clear", "command.send", "audit.read"):
            for headers in viewer.values():
                r = _call(client, ep, headers)
                assert r.status_code == 403 and r.json()["error"] == "forbidden", (ep.path, r.text)
            checked.add(ep.permission)
    assert checked == {"alarm.ack", "alarm.clear", "command.send", "audit.read"}
    for perm in ("alarm.ack", "alarm.clear", "command.send", "audit.read"):
        assert not allowed("viewer", perm)
    r = client.post(
        "/api/v1/transformers/s1/tx1/commands", json={"node": 1, "op": "move", "phase": "A"}, headers=viewer["token"]
    )
    assert r.status_code == 403


def test_every_role_is_refused_every_route_whose_permission_it_lacks(env, client):
    accounts = {"viewer": "v1", "operator": "o1", "installer": "i1", "secadmin": "s1", "auditor": "a1",
                "sysadmin": "root"}  # fmt: skip
    failures = []
    for role, name in accounts.items():
        headers = env.bearer(client, name)
        for ep in _protected(env):
            if allowed(role, ep.permission):
                continue
            r = _call(client, ep, headers)
            if r.status_code != 403:
                failures.append("%s on %s %s: %d" % (role, ep.method, ep.path, r.status_code))
    assert not failures, "\n".join(failures)


def test_session_cookie_flags_csrf_and_logout(env, client):
    r = client.post("/api/v1/auth/login", json={"name": "i1", "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and re.search("SameSite=strict", cookie, re.I) and "Path=/" in cookie
    assert "Secure" not in cookie  # [auth] cookie_secure = false in this test (plain http)
    csrf = r.json()["csrf_token"]
    assert client.get("/api/v1/auth/me").json()["actor"] == "user:i1"
    body = {"rating_a": 400}
    assert client.put("/api/v1/transformers/s1/tx1", json=body).status_code == 403  # no CSRF token
    assert client.put("/api/v1/transformers/s1/tx1", json=body, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
    r = client.put("/api/v1/transformers/s1/tx1", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.set("phasekit_session", r.request.headers["cookie"].split("=", 1)[1])
    assert client.get("/api/v1/auth/me").status_code == 401  # the same cookie, after logout
    client.cookies.clear()


def test_secure_cookie_by_default(tmp_path):
    e = ApiEnv(tmp_path, auth={"cookie_secure": True})
    try:
        with e.client(base_url="https://testserver") as c:
            r = c.post("/api/v1/auth/login", json={"name": "v1", "password": PASSWORD})
            assert "Secure" in r.headers["set-cookie"]
    finally:
        e.close()


def test_logins_are_rate_limited_per_account_and_audited(env, client):
    for _ in range(5):
        r = client.post("/api/v1/auth/token", json={"name": "a2", "password": "wrong password"})
        assert r.status_code == 401 and r.json()["error"] == "login_refused"
    r = client.post("/api/v1/auth/token", json={"name": "a2", "password": PASSWORD})  # right, but too late
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    r = client.post("/api/v1/auth/token", json={"name": "nobody-at-all", "password": "whatever it is"})
    assert r.status_code == 401 and r.json()["error"] == "login_refused"  # unknown: the same answer
    actions = [e.action for e in audit.search(env.db, "t2", obj="user:a2", limit=20)]
    assert actions.count("login.failed") == 5 and "login.refused" in actions
    failed = audit.search(env.db, "t2", obj="user:a2", action="login.failed", limit=1)[0]
    assert failed.public()["after"] == {"method": "token", "reason": "wrong_password"}
    assert failed.source == "testclient"
    assert audit.search(env.db, None, obj="user:nobody-at-all")[0].public()["after"]["reason"] == "unknown_account"


def test_login_rate_limit_per_source_address(tmp_path):
    e = ApiEnv(tmp_path, auth={"login_address_attempts": 3})
    try:
        with e.client() as c:
            for name in ("v1", "o1", "i1"):
                assert c.post("/api/v1/auth/token", json={"name": name, "password": "nope nope"}).status_code == 401
            r = c.post("/api/v1/auth/token", json={"name": "s1", "password": PASSWORD})
            assert r.status_code == 429
    finally:
        e.close()


def test_refresh_tokens_rotate_and_reuse_is_refused_and_audited(env, client):
    t = client.post("/api/v1/auth/token", json={"name": "v2", "password": PASSWORD}).json()
    r = client.post("/api/v1/auth/refresh", json={"refresh_token": t["refresh_token"]})
    assert r.status_code == 200
    t2 = r.json()
    assert client.get("/api/v1/fleet", headers={"Authorization": "Bearer " + t2["access_token"]}).status_code == 200
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": t["refresh_token"]}).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": t2["refresh_token"]}).status_code == 401
    assert audit.search(env.db, "t2", action="token.reuse")
    assert client.post("/api/v1/auth/revoke", json={"refresh_token": "rt_unknown"}).status_code == 204


def test_the_forwarded_address_is_believed_only_from_a_trusted_proxy(tmp_path):
    e = ApiEnv(tmp_path, auth={"trusted_proxies": ["127.0.0.1"]})
    try:
        with e.client() as c:  # the TestClient's peer is "testclient", not a trusted proxy
            c.post(
                "/api/v1/auth/token",
                json={"name": "v1", "password": "nope nope"},
                headers={"X-Forwarded-For": "1.2.3.4"},
            )
        entry = audit.search(e.db, "t1", action="login.failed", limit=1)[0]
        assert entry.source == "testclient"
    finally:
        e.close()
