"""The alarm routes (both stores) through the real API app (Starlette, the api area's dispatcher, API keys,
roles): reading needs alarm.read, acknowledging and clearing need the operator; every change is audited with
actor, tenant, time, source and the alarm before and after, in the same transaction; tenants never see each
other's alarms."""

import json
import time
import types

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.testclient import TestClient

from phasecore import codes
from phaseserver import audit
from phaseserver.alarms.engine import AlarmEngine
from phaseserver.alarms.settings import AlarmSettings
from phaseserver.api.app import Api, ApiSettings, make_app
from phaseserver.auth import apikeys
from phaseserver.auth.passwords import Hasher
from phaseserver.auth.service import AuthService
from phaseserver.auth.tokens import TokenIssuer
from phaseserver.clock import Clock
from phaseserver.ingest.core import IngestCore
from phaseserver.store import open_store
from phaseuplink import records
from uplink_batches import PiBatches

T0 = 1_700_000_000


@pytest.fixture
def api(engine, server_config):
    t = [float(T0)]
    clock = Clock(wall=lambda: t[0])
    store = open_store(server_config(engine), clock)
    db = store.db
    for tenant in ("utility-a", "utility-b"):
        db.execute("INSERT INTO tenant (id, name, created_s) VALUES (?, ?, 0)", (tenant, tenant))
    db.execute("INSERT INTO site (id, tenant_id, first_seen_s) VALUES ('s1', 'utility-a', 0)")
    alarms = AlarmEngine(db.clone(), AlarmSettings(), clock)
    alarms.start()
    core = IngestCore(store, clock)
    core.listeners.append(alarms.on_committed)
    auth = AuthService(db, Hasher(1, 8, 1, 1), TokenIssuer(Ed25519PrivateKey.generate(), "phaseserver", "phasekit-api"))
    keys = {}
    for name, tenant, role in (
        ("viewer", "utility-a", "viewer"),
        ("operator", "utility-a", "operator"),
        ("installer", "utility-a", "installer"),
        ("auditor", "utility-a", "auditor"),
        ("other", "utility-b", "operator"),
    ):
        keys[name] = apikeys.create(db, tenant, role, name, "test", T0)[0]
    server = types.SimpleNamespace(alarms=alarms)
    app = make_app(Api(db, auth, ApiSettings(cookie_secure=False), store=store, clock=clock, server=server))
    pi = PiBatches("s1", "t1")
    topic, payload = pi.batch(
        [records.event(T0, {"code": codes.EV_MOVE_NOT_VERIFIED, "value": 1, "node": 7, "severity": 2})]
    )
    assert core.handle(topic, payload, T0).kind == "stored"
    topic, payload = pi.batch([records.event(T0, {"code": codes.EV_IMPLAUSIBLE_READING}, addr=3, seq=5)])
    assert core.handle(topic, payload, T0).kind == "stored"
    with TestClient(app) as client:
        client.keys = keys
        client.db = db
        client.t = t
        yield client
    alarms.db.close()
    store.close()


def call(client, who, method, path, **kw):
    headers = {"Authorization": "Bearer %s" % client.keys[who]} if who else {}
    return client.request(method, path, headers=headers, **kw)


def test_reading_needs_alarm_read_and_sees_only_its_tenant(api):
    r = call(api, "viewer", "GET", "/api/v1/alarms")
    assert r.status_code == 200, r.text
    alarms = r.json()["alarms"]
    assert {(a["type"], a["object"], a["severity_name"], a["state"]) for a in alarms} == {
        ("relay_fault", "s1/t1/7", "major", "active"),
        ("meter_implausible", "s1/t1/3", "minor", "active"),
    }
    assert call(api, "installer", "GET", "/api/v1/alarms").status_code == 200
    assert call(api, "auditor", "GET", "/api/v1/alarms").status_code == 403
    assert call(api, None, "GET", "/api/v1/alarms").status_code == 401
    assert call(api, "other", "GET", "/api/v1/alarms").json() == {"alarms": []}
    relay = next(a for a in alarms if a["type"] == "relay_fault")
    assert call(api, "other", "GET", "/api/v1/alarms/%d" % relay["id"]).status_code == 404
    one = call(api, "viewer", "GET", "/api/v1/alarms/%d" % relay["id"]).json()
    assert one["alarm"] == relay and [e["what"] for e in one["history"]] == ["raised"] and one["notifications"] == []
    worst = call(api, "viewer", "GET", "/api/v1/alarms/worst").json()["objects"]
    assert worst["s1/t1"] == {"severity": 3, "alarm_id": relay["id"], "type": "relay_fault", "alarms": 2}
    assert worst["s1"]["alarms"] == 2
    assert call(api, "viewer", "GET", "/api/v1/alarms?state=bogus").status_code == 422
    assert call(api, "viewer", "GET", "/api/v1/alarms?state=cleared").json() == {"alarms": []}
    assert len(call(api, "viewer", "GET", "/api/v1/alarms?site=s1&transformer=t1&limit=1").json()["alarms"]) == 1


def test_acknowledge_and_clear_need_the_operator_and_are_audited(api):
    alarms = call(api, "viewer", "GET", "/api/v1/alarms").json()["alarms"]
    relay = next(a for a in alarms if a["type"] == "relay_fault")
    path = "/api/v1/alarms/%d" % relay["id"]
    for who in ("viewer", "installer", "auditor"):
        assert call(api, who, "POST", path + "/ack", json={"comment": "x"}).status_code == 403, who
        assert call(api, who, "POST", path + "/clear", json={}).status_code == 403, who
    assert call(api, "other", "POST", path + "/ack", json={}).status_code == 404  # another tenant's operator
    assert call(api, "operator", "POST", path + "/ack", json={"comment": "x" * 501}).status_code == 422
    assert audit.search(api.db, "utility-a") == []

    api.t[0] = T0 + 60
    r = call(api, "operator", "POST", path + "/ack", json={"comment": "crew on the way"})
    assert r.status_code == 200, r.text
    acked = r.json()
    assert (
        acked["state"] == "active_acked" and acked["acked_s"] == T0 + 60 and acked["ack_comment"] == "crew on the way"
    )
    assert acked["acked_by"].startswith("key:")
    assert call(api, "operator", "POST", path + "/ack", json={}).status_code == 409

    api.t[0] = T0 + 120
    r = call(api, "operator", "POST", path + "/clear", json={"comment": "relay replaced"})
    assert r.status_code == 200, r.text
    cleared = r.json()
    assert cleared["state"] == "cleared_acked" and cleared["cleared_by"] == acked["acked_by"]
    assert call(api, "operator", "POST", path + "/clear", json={}).status_code == 409

    entries = sorted(audit.search(api.db, "utility-a"), key=lambda e: e.seq)
    assert [(e.action, e.object, e.actor, e.tenant_id) for e in entries] == [
        ("alarm.ack", "alarm:%d" % relay["id"], acked["acked_by"], "utility-a"),
        ("alarm.clear", "alarm:%d" % relay["id"], acked["acked_by"], "utility-a"),
    ]
    # The audit log says when a person acted in real (wall) time, whatever the site clock says.
    assert entries[0].source == "testclient" and abs(entries[0].t_ms / 1000 - time.time()) < 60
    before, after = json.loads(entries[1].before), json.loads(entries[1].after)
    assert before["state"] == "active_acked" and after["state"] == "cleared_acked"
    assert after["clear_comment"] == "relay replaced"
    one = call(api, "viewer", "GET", path).json()
    assert [(e["what"], e["actor"], e["comment"]) for e in one["history"]] == [
        ("raised", "system", None),
        ("acknowledged", acked["acked_by"], "crew on the way"),
        ("cleared", acked["acked_by"], "relay replaced"),
    ]
    assert audit.search(api.db, "utility-b") == []


def test_the_routes_are_in_the_openapi_document(api):
    doc = api.get("/openapi.json").json()
    paths = doc["paths"]
    for p, m in (
        ("/api/v1/alarms", "get"),
        ("/api/v1/alarms/worst", "get"),
        ("/api/v1/alarms/{id}", "get"),
        ("/api/v1/alarms/{id}/ack", "post"),
        ("/api/v1/alarms/{id}/clear", "post"),
    ):
        assert m in paths[p], (p, m)
