"""The API's pages and operations against the real app: what each route answers, checked against the stored data.

Fleet, one transformer, its series (minute and roll-up resolutions), moves,
nodes and CSV export; the installer's settings change (audited); the
administration rules (who may add, re-role and revoke whom; keys shown once;
sites assigned); /healthz, /readyz, /metrics, /openapi.json; latency on the
data at hand; and the main reads and an audited change on PostgreSQL too.
"""

import csv
import io
import statistics
import time

import pytest
from api_env import HOURS, PASSWORD, T0, ApiEnv

from phaseserver import audit


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = ApiEnv(tmp_path_factory.mktemp("api"))
    e.server.store.rollup()
    yield e
    e.close()


@pytest.fixture(scope="module")
def client(env):
    with env.client() as c:
        yield c


def _raw(env, site, tx, t_from, t_to):
    return env.db.fetchall(
        "SELECT t_s, current_ma, phase FROM reading WHERE site = ? AND transformer = ? AND t_s >= ? AND t_s < ?",
        (site, tx, t_from, t_to),
    )


def test_fleet_and_one_transformer(env, client):
    h = env.key("viewer1")
    fleet = client.get("/api/v1/fleet", headers=h).json()["transformers"]
    assert len(fleet) == 1
    tx = fleet[0]
    assert (tx["site"], tx["transformer"], tx["online"], tx["nodes"]) == ("s1", "tx1", True, 6)
    assert tx["worst_alarm"] is None
    assert client.get("/api/v1/transformers/s1/tx1", headers=h).json() == tx
    assert client.get("/api/v1/transformers/s1/nope", headers=h).status_code == 404
    assert client.get("/api/v1/transformers/s1/a%2Fb", headers=h).status_code in (404, 422)


def test_the_worst_active_alarm_comes_from_the_alarm_table(env, client):
    cols = (
        "tenant_id, object, object_kind, site, transformer, node, type, severity, max_severity, detail, raised_s,"
        " updated_s, updates"
    )
    for sev, typ in ((2, "node_silent"), (3, "phase_overcurrent")):
        env.db.execute(
            "INSERT INTO alarm (%s) VALUES ('t1', ?, 'node', 's1', 'tx1', 4, ?, ?, ?, '{}', ?, ?, 0)" % cols,
            ("s1/tx1/4" if sev == 2 else "s1/tx1", typ, sev, sev, T0 + sev, T0 + sev),
        )
    tx = client.get("/api/v1/fleet", headers=env.key("viewer1")).json()["transformers"][0]
    assert tx["worst_alarm"]["type"] == "phase_overcurrent" and tx["worst_alarm"]["severity"] == 3
    assert client.get("/api/v1/fleet", headers=env.key("viewer2")).json()["transformers"][0]["worst_alarm"] is None


def test_series_at_minute_and_hour_resolution_match_the_readings(env, client):
    h = env.key("viewer1")
    end = T0 + HOURS * 3600
    s = client.get("/api/v1/transformers/s1/tx1/series", params={"from": T0, "to": end}, headers=h).json()
    assert s["resolution"] == 60 and len(s["t_s"]) == HOURS * 60
    assert all(len(s[k]) == len(s["t_s"]) for k in ("i_a", "i_b", "i_c", "i_n", "cuf", "i_max", "minutes"))
    # One minute by hand: each node's reading current summed by phase.
    m = s["t_s"][30]
    sums = [0.0, 0.0, 0.0]
    for _, ma, phase in _raw(env, "s1", "tx1", m, m + 60):
        sums[phase] += ma / 1000.0
    assert [s["i_a"][30], s["i_b"][30], s["i_c"][30]] == pytest.approx(sums, abs=0.002)
    assert all(0 <= c <= 1 for c in s["cuf"]) and all(n >= 0 for n in s["i_n"])
    hourly = client.get(
        "/api/v1/transformers/s1/tx1/series", params={"from": T0, "to": end, "resolution": 3600}, headers=h
    ).json()
    assert hourly["resolution"] == 3600 and len(hourly["t_s"]) == HOURS
    assert hourly["i_a"][0] == pytest.approx(statistics.fmean(s["i_a"][:60]), rel=0.01)
    # A year at one minute would be 525,600 points: the answer coarsens the resolution instead.
    year = client.get(
        "/api/v1/transformers/s1/tx1/series", params={"from": end - 365 * 86400, "to": end}, headers=h
    ).json()
    assert year["resolution"] == 3600 and len(year["t_s"]) == HOURS
    empty = client.get("/api/v1/transformers/s1/tx1/series", params={"from": end, "to": T0}, headers=h).json()
    assert empty["t_s"] == []


def test_moves_nodes_and_csv(env, client):
    h = env.key("viewer1")
    moves = client.get("/api/v1/transformers/s1/tx1/moves", params={"from": T0, "to": T0 + 7200}, headers=h).json()
    assert moves["moves"] == [{"t_s": T0 + 400, "node": 3, "to_phase": "C", "outcome": "DONE", "phase_after": "C"}]
    nodes = client.get("/api/v1/transformers/s1/tx1/nodes", headers=h).json()["nodes"]
    assert [n["addr"] for n in nodes] == [1, 2, 3, 4, 5, 6]
    assert [n["phase"] for n in nodes] == ["B", "C", "A", "B", "C", "A"] and {n["generation"] for n in nodes} == {0}
    r = client.get("/api/v1/transformers/s1/tx1/export.csv", params={"from": T0, "to": T0 + 3600}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][:3] == ["t_s", "src", "seq"] and len(rows) == 1 + 6 * 60
    r = client.get(
        "/api/v1/transformers/s1/tx1/export.csv", params={"from": T0, "to": T0 + 3600, "what": "series"}, headers=h
    )
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["t_s", "i_a_A", "i_b_A", "i_c_A", "i_n_A", "cuf"] and len(rows) == 61
    assert client.get("/api/v1/transformers/s2/tx2/export.csv", headers=h).status_code == 404


def test_the_installer_sets_name_and_rating_and_it_is_audited(env, client):
    h = env.bearer(client, "i1")
    r = client.put("/api/v1/transformers/s1/tx1", json={"name": "Main St", "rating_a": 630}, headers=h)
    assert r.status_code == 200 and r.json()["name"] == "Main St"
    assert env.db.fetchone("SELECT rating_a FROM transformer WHERE site = 's1' AND id = 'tx1'")[0] == 630
    e = audit.search(env.db, "t1", obj="transformer:s1/tx1", action="transformer.settings")[0]
    assert e.actor == "user:i1" and e.public()["before"] == {"name": None, "rating_a": None}
    assert e.public()["after"] == {"name": "Main St", "rating_a": 630}
    r = client.put("/api/v1/transformers/s1/tx1", json={"rating_a": 0}, headers=h)
    assert r.status_code == 422
    assert client.put("/api/v1/transformers/s2/tx2", json={"name": "x"}, headers=h).status_code == 404


def test_administration_rules(env, client):
    sec, root = env.bearer(client, "s1"), env.bearer(client, "root")
    new = {"name": "olga", "role": "operator", "password": PASSWORD}
    r = client.post("/api/v1/accounts", json=new, headers=sec)
    assert r.status_code == 201 and r.json()["tenant_id"] == "t1"
    assert client.post("/api/v1/accounts", json=new, headers=sec).status_code == 409
    assert client.post("/api/v1/accounts", json=dict(new, name="x2", role="sysadmin"), headers=sec).status_code == 403
    assert client.post("/api/v1/accounts", json=dict(new, name="x3", tenant="t2"), headers=sec).status_code == 403
    # The system administrator sets up administrators, never an operating role.
    assert client.post("/api/v1/accounts", json=dict(new, name="x4", tenant="t2"), headers=root).status_code == 403
    r = client.post("/api/v1/accounts", json=dict(new, name="sec2", role="secadmin", tenant="t2"), headers=root)
    assert r.status_code == 201 and r.json()["tenant_id"] == "t2"
    # Nobody changes their own role or revokes themselves.
    assert client.put("/api/v1/accounts/s1/role", json={"role": "operator"}, headers=sec).status_code == 403
    assert client.post("/api/v1/accounts/s1/revoke", headers=sec).status_code == 403
    olga = env.bearer(client, "olga")
    assert client.get("/api/v1/fleet", headers=olga).status_code == 200
    r = client.put("/api/v1/accounts/olga/role", json={"role": "viewer"}, headers=sec)
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    assert client.get("/api/v1/fleet", headers=olga).status_code == 401  # the old token's role is gone
    assert client.post("/api/v1/accounts/olga/revoke", headers=sec).json()["active"] is False
    names = [a["name"] for a in client.get("/api/v1/accounts", headers=sec).json()["accounts"]]
    assert "olga" in names and "v2" not in names
    actions = [e.action for e in audit.search(env.db, "t1", obj="user:olga") if e.action.startswith("account.")]
    assert actions == ["account.revoke", "account.role", "account.add"]
    # Keys: the text once, then only its id and hash.
    r = client.post("/api/v1/keys", json={"name": "grafana", "role": "viewer", "ttl_s": 3600}, headers=sec)
    assert r.status_code == 201
    text, kid = r.json()["key"], r.json()["info"]["id"]
    assert client.get("/api/v1/fleet", headers={"Authorization": "Bearer " + text}).status_code == 200
    listed = client.get("/api/v1/keys", headers=sec).text
    assert kid in listed and text.split("_")[2] not in listed
    assert client.post("/api/v1/keys/%s/revoke" % kid, headers=sec).json()["active"] is False
    assert client.get("/api/v1/fleet", headers={"Authorization": "Bearer " + text}).status_code == 401
    r = client.post("/api/v1/keys", json={"name": "prom", "role": "monitor"}, headers=sec)
    assert r.status_code == 403  # system keys are the system administrator's
    r = client.post("/api/v1/keys", json={"name": "prom2", "role": "monitor"}, headers=root)
    assert r.status_code == 201 and r.json()["info"]["tenant_id"] is None


def test_tenants_and_site_assignment(env, client):
    root = env.bearer(client, "root")
    assert client.post("/api/v1/tenants", json={"id": "t3", "name": "Three"}, headers=root).status_code == 201
    assert client.post("/api/v1/tenants", json={"id": "t3", "name": "Three"}, headers=root).status_code == 409
    assert client.post("/api/v1/tenants", json={"id": "unassigned", "name": "x"}, headers=root).status_code == 409
    sites = client.get("/api/v1/sites", headers=root).json()["sites"]
    assert {(s["id"], s["tenant_id"]) for s in sites} == {("s1", "t1"), ("s2", "t2")}
    assert client.put("/api/v1/sites/s9/tenant", json={"tenant": "t3"}, headers=root).status_code == 404
    assert client.put("/api/v1/sites/s2/tenant", json={"tenant": "t9"}, headers=root).status_code == 404
    assert client.get("/api/v1/fleet", headers=root).status_code == 403  # the system administrator reads no data


def test_health_readiness_metrics_and_the_document(env, client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    r = client.get("/metrics", headers=env.key("monitor"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'phaseserver_http_requests_total{method="GET",route="/healthz",status="2xx"}' in r.text
    assert "phaseserver_commit_seconds" in r.text  # the ingest's own metrics (phaseserver.metrics)
    assert client.get("/metrics", headers=env.key("viewer1")).status_code == 403
    doc = client.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0" and "/api/v1/fleet" in doc["paths"]
    assert client.get("/no/such/route").status_code == 404
    assert client.delete("/api/v1/fleet", headers=env.key("viewer1")).status_code == 405
    r = client.get("/api/v1/fleet", headers=env.key("viewer1"))
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"


def test_bad_bodies_are_refused_cleanly(env, client):
    h = env.bearer(client, "s1")
    url = "/api/v1/accounts"
    assert client.post(url, content=b"{", headers=dict(h, **{"content-type": "application/json"})).status_code == 400
    assert client.post(url, content=b"name=x", headers=dict(h, **{"content-type": "text/plain"})).status_code == 415
    big = b'{"name": "' + b"x" * 70000 + b'"}'
    r = client.post(url, content=big, headers=dict(h, **{"content-type": "application/json"}))
    assert r.status_code == 413
    r = client.post(url, json={"name": "ok-name", "role": "viewer", "password": PASSWORD, "admin": True}, headers=h)
    assert r.status_code == 422 and "unknown field" in r.json()["detail"]
    nan = b'{"name": "n", "role": "viewer", "password": NaN}'
    assert client.post(url, content=nan, headers=dict(h, **{"content-type": "application/json"})).status_code == 400


def test_latency_of_the_transformer_page_on_this_data(env, client):
    h = env.key("viewer1")
    end = T0 + HOURS * 3600
    paths = [
        ("/api/v1/transformers/s1/tx1/series", {"from": end - 86400, "to": end}),
        ("/api/v1/transformers/s1/tx1/nodes", {}),
        ("/api/v1/transformers/s1/tx1", {}),
        ("/api/v1/transformers/s1/tx1/moves", {"from": end - 86400, "to": end}),
    ]
    times = []
    for _ in range(40):
        t = time.perf_counter()
        for p, q in paths:
            assert client.get(p, params=q, headers=h).status_code == 200
        times.append(time.perf_counter() - t)
    times.sort()
    p99 = times[int(len(times) * 0.99) - 1]
    print("transformer page (4 requests, %d h x 6 nodes): median %.1f ms, p99 %.1f ms"
          % (HOURS, statistics.median(times) * 1000, p99 * 1000))  # fmt: skip
    assert p99 < 0.1


def test_trusted_proxy_forwarded_address(tmp_path):
    e = ApiEnv(tmp_path, auth={"trusted_proxies": ["127.0.0.1"]})
    try:
        with e.client(client=("127.0.0.1", 40000)) as c:
            body = {"name": "v1", "password": "nope nope"}
            c.post("/api/v1/auth/token", json=body, headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
        assert audit.search(e.db, "t1", action="login.failed", limit=1)[0].source == "203.0.113.9"
    finally:
        e.close()


def test_the_api_on_postgresql(tmp_path, pg):
    e = ApiEnv(tmp_path, engine="postgres", dsn=pg.create_database("api_%d" % (int(time.time() * 1000) % 10**9)))
    try:
        with e.client() as c:
            h = e.bearer(c, "v1")
            assert [t["site"] for t in c.get("/api/v1/fleet", headers=h).json()["transformers"]] == ["s1"]
            end = T0 + HOURS * 3600
            s = c.get("/api/v1/transformers/s1/tx1/series", params={"from": T0, "to": end}, headers=h).json()
            assert len(s["t_s"]) == HOURS * 60
            assert len(c.get("/api/v1/transformers/s1/tx1/nodes", headers=h).json()["nodes"]) == 6
            assert c.get("/api/v1/transformers/s2/tx2", headers=h).status_code == 404
            r = c.put("/api/v1/transformers/s1/tx1", json={"rating_a": 400}, headers=e.bearer(c, "i1"))
            assert r.status_code == 200
            entries = c.get("/api/v1/audit", params={"object": "transformer:*"}, headers=e.bearer(c, "a1")).json()
            assert [x["action"] for x in entries["entries"]] == ["transformer.settings"]
            assert c.get("/api/v1/audit", headers=h).status_code == 403
        # Closing the app signed the chain head (the lifespan's last act): the chain and the head check out.
        rep = audit.verify(e.db, e.api.audit_key.public_key(), e.api.settings.head_file)
        assert rep.ok and rep.heads == 2, rep.summary()
    finally:
        e.close()


def test_plain_http_cookies_only_on_the_loopback(tmp_path):
    from phaseserver import config
    from phaseserver.errors import ConfigError

    tables = {"ingest": {"source": "none"}, "auth": {"cookie_secure": False}}
    assert config.write(tmp_path / "a.toml", dict(tables, server={"http_host": "127.0.0.1"}))
    with pytest.raises(ConfigError, match="cookie_secure"):
        config.write(tmp_path / "b.toml", dict(tables, server={"http_host": "0.0.0.0"}))


def test_command_counters_in_metrics(tmp_path):
    from phasekit.testing.broker import LocalBroker

    with LocalBroker(tmp_path / "broker") as broker:
        e = ApiEnv(tmp_path, broker=broker)
        try:
            with e.client() as c:
                assert e.api.commands.publish.wait_connected(10)
                r = c.post("/api/v1/transformers/s1/tx1/commands", json={"node": 1, "op": "report"},
                           headers=e.key("operator1"))  # fmt: skip
                assert r.status_code == 202
                assert 'phaseserver_commands_total{what="sent"} 1' in c.get("/metrics", headers=e.key("monitor")).text
        finally:
            e.close()
