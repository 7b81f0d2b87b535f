"""The web page's server side, over real HTTP (uvicorn inside the real server): the page and its assets (CSP,
caching, gzip, nothing user-specific), the live stream (session only, per tenant and role, bounded, ended by
logout and by the server stopping), /metrics with the alarms' and the stream's text, and the system
administrator reading the server's own alarms. Data comes through the real ingest core; alarms from the real
alarm engine. The browser itself is tests/server/test_web_browser.py."""

import json
import queue
import re
import threading
import time
from contextlib import closing

import httpx
import pytest

from phasekit.testing import street
from phasekit.testing.webserver import PASSWORD, WebServer
from phaseserver.api.routes_web import PAGE_CSP
from phaseserver.web import VERSIONED, Assets

WEB = {"live_poll_s": 0.1, "live_heartbeat_s": 1, "live_recheck_s": 1, "live_streams_per_session": 2}


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    secret = folder / "webhook.secret"
    secret.write_text("a-test-secret\n")
    from phasekit.testing.postgres import free_port

    tables = {
        "web": WEB,
        "alarms": {"sweep_s": 0.2},
        # A webhook receiver that is not there and an outbox of one: the second notification overflows it,
        # and the engine raises the server's own alarm (notify_backlog), the system administrator's to see.
        "notify": {"webhook_url": "http://127.0.0.1:%d/hook" % free_port(), "webhook_secret_file": str(secret),
                   "queue_max": 1, "backoff_s": 600, "backoff_max_s": 600},
    }  # fmt: skip
    ws = WebServer(folder, tables)
    now = int(time.time())
    for site, tx in (("s1", "tx1"), ("s2", "tx2")):
        ws.server.ingest.handle("phasekit/%s/%s/status" % (site, tx), b"online")
    ws.add_people("t1", {"o1": "operator", "v1": "viewer", "a1": "auditor", "i1": "installer"})
    ws.add_people("t2", {"v2": "viewer"})
    ws.add_people("t1", {"root": "sysadmin"})
    ws.assign("s1", "t1")
    ws.assign("s2", "t2")
    street.ingest(ws.server.ingest, street.street_day("s1", "tx1", now, nodes=6, hours=2, relay_fault_node=5), True)
    street.ingest(ws.server.ingest, street.street_day("s2", "tx2", now, nodes=3, hours=1, seed=9), True)
    yield ws
    ws.close()


def login(web, name):
    c = httpx.Client(base_url=web.url, timeout=10)
    r = c.post("/api/v1/auth/login", json={"name": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return c


class Stream:
    """An SSE stream read in a thread: events (name, data) land in a queue."""

    def __init__(self, client, path="/api/v1/live"):
        self._cm = client.stream("GET", path, timeout=httpx.Timeout(10, read=30))
        self.response = self._cm.__enter__()
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        name, data = "message", []
        try:
            for line in self.response.iter_lines():
                if line == "":
                    if data:
                        self.events.put((name, json.loads("\n".join(data))))
                    name, data = "message", []
                elif line.startswith(":"):
                    self.events.put(("comment", line))
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
        except Exception as e:  # the test closed it, or the server did
            self.events.put(("closed", repr(e)))
        else:
            self.events.put(("closed", ""))

    def next(self, want, timeout=10.0, where=lambda data: True):
        """The next event named ``want`` whose data satisfies ``where``; others are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s event within %.1f s" % (want, timeout))
            try:
                name, data = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if name == want and (name in ("closed", "comment") or where(data)):
                return data
            if name == "closed" and want != "closed":
                raise AssertionError("the stream closed: %s" % data)

    def quiet(self, seconds, where=lambda name, data: name == "change"):
        """No event matching ``where`` for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                name, data = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return
            assert not where(name, data), (name, data)

    def close(self):
        self.response.close()
        self._cm.__exit__(None, None, None)


def test_the_page_is_served_with_a_strict_policy_and_hashed_assets(web):
    with httpx.Client(base_url=web.url) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.headers["content-security-policy"] == PAGE_CSP
        # default-src 'none' covers everything not named (plug-ins, frames, fonts).
        for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'",
                          "require-trusted-types-for 'script'", "trusted-types 'none'"):  # fmt: skip
            assert directive in PAGE_CSP
        assert "unsafe-inline" not in PAGE_CSP and "unsafe-eval" not in PAGE_CSP
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        html = r.text
        # No inline script, no inline style, no event-handler attributes: every script and style is a file.
        assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="/static/app.js?v=%s">'
                                                       % Assets().get("app.js").version]  # fmt: skip
        assert "<style" not in html and not re.search(r"\sstyle=", html) and not re.search(r"\son[a-z]+=", html)
        assets = Assets()
        for name in VERSIONED:
            a = assets.get(name)
            assert "/static/%s?v=%s" % (name, a.version) in html
            hashed = c.get("/static/%s?v=%s" % (name, a.version))
            assert hashed.status_code == 200 and hashed.content == a.body
            assert hashed.headers["cache-control"] == "public, max-age=31536000, immutable"
            plain = c.get("/static/" + name)
            assert plain.headers["cache-control"] == "no-cache" and plain.headers["etag"] == a.etag
            again = c.get("/static/" + name, headers={"If-None-Match": a.etag})
            assert again.status_code == 304 and again.content == b""
            stale = c.get("/static/%s?v=%s" % (name, "0" * 16))
            assert stale.headers["cache-control"] == "no-cache"  # an old version is never cached for good
        gz = c.get("/static/app.js", headers={"Accept-Encoding": "gzip"})
        assert gz.headers["content-encoding"] == "gzip" and gz.content == assets.get("app.js").body  # httpx inflates
        assert int(gz.headers["content-length"]) == len(assets.get("app.js").gzipped) < len(gz.content) / 2
        assert c.get("/static/other.js").status_code == 404
        assert c.get("/static/app.js?v=..%2F..").status_code == 422
    # The page is the same for everybody: nothing about the user, no token, no data.
    with closing(login(web, "o1")) as c:
        assert c.get("/").content == httpx.get(web.url + "/").content


def test_the_script_never_turns_text_into_markup_or_code():
    # The CSP's Trusted Types would make these throw in the browser (test_web_browser checks that); here the
    # source is checked for them, so a change that would need them fails before it reaches a browser.
    js = re.sub(r"^\s*//.*$", "", Assets().get("app.js").body.decode(), flags=re.M)  # the code, not its comments
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setTimeout(\"", "srcdoc", ".style.cssText", "setAttribute(\"style"):  # fmt: skip
        assert sink not in js, sink
    # Attributes come only from h()/s(), which add "on..." names as listeners, never as attributes.
    assert 'el.setAttribute(k, v === true ? "" : String(v))' in js
    assert 'if (k.startsWith("on") && typeof v === "function") el.addEventListener' in js


def test_the_live_stream_is_for_a_browser_session_only(web):
    with httpx.Client(base_url=web.url) as c:
        assert c.get("/api/v1/live").status_code == 401
        token = c.post("/api/v1/auth/token", json={"name": "v1", "password": PASSWORD}).json()["access_token"]
        r = c.get("/api/v1/live", headers={"Authorization": "Bearer " + token})
        assert r.status_code == 403 and r.json()["error"] == "session_only"
    with httpx.Client(base_url=web.url, cookies={"phasekit_session": "x" * 43}) as c:
        assert c.get("/api/v1/live").status_code == 401  # a made-up session


def test_the_stream_tells_each_tenant_and_role_only_its_own_changes(web):
    op, viewer, auditor, other = login(web, "o1"), login(web, "v1"), login(web, "a1"), login(web, "v2")
    streams = {}
    try:
        for name, c in (("viewer", viewer), ("auditor", auditor), ("other", other)):
            streams[name] = Stream(c)
            hello = streams[name].next("hello")
            assert hello["poll_s"] == WEB["live_poll_s"]
        # New readings of t1's transformer, through the real ingest core: t1's viewer hears of s1/tx1.
        now = int(time.time())
        street.ingest(web.server.ingest, street.street_day("s1", "tx1", now + 60, nodes=6, hours=1, moves=0), True)
        got = streams["viewer"].next("change", where=lambda d: "s1/tx1" in d["transformers"])
        assert got["audit"] is False  # a viewer never hears of the audit log
        streams["other"].quiet(0.5, lambda n, d: n == "change" and "s1/tx1" in str(d))
        # The operator acknowledges an alarm: t1's viewer hears of alarms, t1's auditor of the audit log.
        alarms = op.get("/api/v1/alarms").json()["alarms"]
        relay = next(a for a in alarms if a["type"] == "relay_fault")
        r = op.post("/api/v1/alarms/%d/ack" % relay["id"], json={"comment": "crew on the way"})
        assert r.status_code == 200, r.text
        assert streams["viewer"].next("change", where=lambda d: d["alarms"])["audit"] is False
        a = streams["auditor"].next("change", where=lambda d: d["audit"])
        assert a["alarms"] is False and a["transformers"] == []  # the auditor reads nothing else
        entries = auditor.get("/api/v1/audit?action=alarm.ack").json()["entries"]
        assert entries[0]["object"] == "alarm:%d" % relay["id"] and entries[0]["actor"] == "user:o1"
        # Tenant t2's viewer heard nothing of t1's alarm or audit entry.
        streams["other"].quiet(0.5, lambda n, d: n == "change" and (d["alarms"] or d["audit"]))
    finally:
        for s in streams.values():
            s.close()
        for c in (op, viewer, auditor, other):
            c.close()


def test_streams_are_bounded_per_session_and_end_at_logout(web):
    c = login(web, "v1")
    first = Stream(c)
    first.next("hello")
    second = Stream(c)
    second.next("hello")
    try:
        r = c.get("/api/v1/live")  # a third for the same session: over live_streams_per_session (2)
        assert r.status_code == 429 and r.json()["error"] == "too_many_streams" and r.headers["retry-after"]
        with closing(login(web, "v1")) as other_session:  # another session of the same person has its own allowance
            s = Stream(other_session)
            s.next("hello")
            s.close()
        assert web.server.web.hub.subscribers  # the two of the first session still count
        # Quiet streams carry a comment line every live_heartbeat_s (1 s here).
        first.next("comment", timeout=3)
        assert c.post("/api/v1/auth/logout").status_code == 204
        for s in (first, second):
            end = s.next("end", timeout=5)  # live_recheck_s is 1 s
            assert end == {"reason": "session ended", "reconnect": False}
            s.next("closed", timeout=5)
    finally:
        first.close()
        second.close()
        c.close()
    deadline = time.monotonic() + 5
    while any(s.key for s in web.server.web.hub.subscribers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not web.server.web.hub.subscribers  # a closed stream leaves nothing behind


def test_metrics_carry_the_alarms_and_the_streams(web):
    with httpx.Client(base_url=web.url) as c:
        key = web.manager().add_key(_cli(), None, "monitor", "prometheus-web")[0]
        text = c.get("/metrics", headers={"Authorization": "Bearer " + key}).text
    assert 'phaseserver_alarms_active{type="relay_fault",severity="3"} 1' in text
    assert "phaseserver_alarm_transitions_total" in text and "phaseserver_notifications_pending" in text
    assert re.search(r"^phaseserver_web_live_streams \d+$", text, re.M)
    assert re.search(r"^phaseserver_web_live_polls_total [1-9]\d*$", text, re.M)
    assert "phaseserver_records_total" in text and "phaseserver_http_requests_total" in text  # the others stay


def test_the_system_administrator_reads_the_servers_own_alarms_and_no_tenants(web):
    # The outbox (queue_max 1, a receiver that is not there) overflowed when the fixture's alarms were
    # raised; the engine's sweep raises notify_backlog on the server itself.
    deadline = time.monotonic() + 10
    root = login(web, "root")
    try:
        while True:
            alarms = root.get("/api/v1/alarms").json()["alarms"]
            if alarms or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert [(a["type"], a["object_kind"]) for a in alarms] == [("notify_backlog", "server")]
        worst = root.get("/api/v1/alarms/worst").json()["objects"]
        assert set(worst) == {"server"}
        one = root.get("/api/v1/alarms/%d" % alarms[0]["id"])
        assert one.status_code == 200
        assert root.post("/api/v1/alarms/%d/ack" % alarms[0]["id"], json={}).status_code == 403  # not an operator
        assert root.get("/api/v1/fleet").status_code == 403  # and no tenant's data
        with closing(login(web, "o1")) as op:
            ids = {a["id"] for a in op.get("/api/v1/alarms?state=all").json()["alarms"]}
            assert alarms[0]["id"] not in ids
            assert op.get("/api/v1/alarms/%d" % alarms[0]["id"]).status_code == 404
        relay = [a for a in login(web, "v1").get("/api/v1/alarms").json()["alarms"] if a["type"] == "relay_fault"]
        assert relay and root.get("/api/v1/alarms/%d" % relay[0]["id"]).status_code == 404
    finally:
        root.close()


def test_the_stream_on_postgresql(tmp_path, pg):
    # The hub's polling SQL on the production store: new data and an acknowledgement reach the right tenant.
    ws = WebServer(tmp_path, {"web": WEB, "storage": {"engine": "postgres", "dsn": pg.create_database("web_live")}})
    try:
        ws.server.ingest.handle("phasekit/s1/tx1/status", b"online")
        ws.add_people("t1", {"o1": "operator", "v1": "viewer"})
        ws.assign("s1", "t1")
        day = street.street_day("s1", "tx1", int(time.time()), nodes=3, hours=1, relay_fault_node=2)
        street.ingest(ws.server.ingest, day, True)
        op, viewer = login(ws, "o1"), login(ws, "v1")
        s = Stream(viewer)
        try:
            s.next("hello")
            time.sleep(0.3)  # the hub's first look is its baseline
            more = street.street_day("s1", "tx1", int(time.time()) + 60, nodes=3, hours=1, moves=0, seed=6)
            street.ingest(ws.server.ingest, more, True)
            assert s.next("change", where=lambda d: d["transformers"] == ["s1/tx1"])
            relay = next(a for a in op.get("/api/v1/alarms").json()["alarms"] if a["type"] == "relay_fault")
            assert op.post("/api/v1/alarms/%d/ack" % relay["id"], json={}).status_code == 200
            assert s.next("change", where=lambda d: d["alarms"])["audit"] is False
            assert ws.server.web.hub.errors == 0
        finally:
            s.close()
            op.close()
            viewer.close()
    finally:
        ws.close()


def test_a_disabled_page_is_not_served(tmp_path):
    with WebServer(tmp_path, {"web": {"enabled": False}}) as ws, httpx.Client(base_url=ws.url) as c:
        assert c.get("/").status_code == 404
        assert c.get("/static/app.js").status_code == 404
        assert c.get("/healthz").status_code == 200  # the API is served either way


def test_stopping_the_server_ends_open_streams(tmp_path):
    ws = WebServer(tmp_path, {"web": WEB})
    try:
        ws.add_people("t1", {"v1": "viewer"})
        c = login(ws, "v1")
        s = Stream(c)
        s.next("hello")
    finally:
        t = time.monotonic()
        ws.close()  # uvicorn waits for open responses: the hub ends them, so the stop is prompt
        took = time.monotonic() - t
    assert s.next("end", timeout=1) == {"reason": "server stopping", "reconnect": True}
    s.close()
    c.close()
    assert took < 5, took


def _cli():
    from phaseserver.auth.manage import Actor

    return Actor("cli:test", None, None, None, "cli")
