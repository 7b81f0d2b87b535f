"""The web page in a real headless Chromium (Debian's, driven by Playwright; one browser for the session).

The server is the real one (uvicorn inside ``phaseserver.app``) holding a realistic transformer day sent
through its real ingest core (24 houses, 24 h of 1-minute readings, the Pi's summaries and heartbeats, the
balancer's moves, a relay that did not switch, a node that fell silent: ``phasekit.testing.street``); the
relay fault and the silence are raised by the real alarm engine. The tests log in, look at the fleet and a
transformer, acknowledge an alarm and watch the audit entry appear on the auditor's open page without a
reload, work the page by keyboard only, check a 390 px phone (no sideways scrolling, 44 px targets), text
contrast in light and dark, the Content-Security-Policy and Trusted Types holding against a hostile
transformer name, and a chart that follows new readings live. Screenshots go to the test's tmp folder (and
to $PHASEKIT_SCREENSHOTS if set, e.g. docs/img).
"""

import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from phasekit.testing import batches, street
from phasekit.testing.browser import CHART_MARK, Browser, first_render
from phasekit.testing.webserver import PASSWORD, WebServer
from phaseuplink import records

NODES = 24


@pytest.fixture(scope="module")
def browser():
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    ws = WebServer(tmp_path_factory.mktemp("web-browser"), {"web": {"live_poll_s": 0.2}})
    try:
        ws.server.ingest.handle("phasekit/s1/tx1/status", b"online")
        ws.add_people("t1", {"o1": "operator", "a1": "auditor", "i1": "installer", "o2": "operator"})
        ws.assign("s1", "t1")
        ws.end_s = int(time.time()) // 60 * 60
        day = street.street_day("s1", "tx1", ws.end_s, nodes=NODES, relay_fault_node=5, silent_node=17)
        street.ingest(ws.server.ingest, day, now=True)
        yield ws
    finally:
        ws.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screenshots")
    extra = os.environ.get("PHASEKIT_SCREENSHOTS")

    def shot(page, name, full_page=False):
        path = folder / (name + ".png")
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 1000
        if extra:
            shutil.copy(path, Path(extra) / path.name)
        return path

    shot.folder = folder
    return shot


class Watch:
    """What the page said on its console and what it threw: CSP and Trusted Types violations show here."""

    def __init__(self, page):
        self.messages = []
        page.on("console", lambda m: self.messages.append("%s: %s" % (m.type, m.text)))
        page.on("pageerror", lambda e: self.messages.append("pageerror: %s" % e))

    def problems(self):
        # The one expected complaint: the first "who am I" before logging in answers 401.
        return [m for m in self.messages if "status of 401" not in m]


def open_page(browser, site, name, width=1280, height=900, **kw):
    page = browser.page(width, height, **kw)
    watch = Watch(page)
    page.goto(site.url + "/")
    page.wait_for_selector("#login-name")
    page.fill("#login-name", name)
    page.fill("#login-password", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")
    page.wait_for_selector("main h1")
    return page, watch


def alarm_row(page, label):
    return page.locator("table.alarms tbody tr", has=page.locator("th", has_text=label)).first


def test_the_operator_sees_the_fleet_and_a_transformer(browser, site, shots):
    page, watch = open_page(browser, site, "o1")
    page.wait_for_selector("main table.cards tbody tr")
    row = page.locator("main table.cards tbody tr").first
    assert row.locator("a").inner_text() == "tx1" and "s1 / tx1" in row.inner_text()
    assert "online" in row.inner_text() and "major" in row.inner_text()
    assert page.locator("main p.muted").first.inner_text() == "1 transformer, 1 online, 1 with an active alarm."
    shots(page, "fleet")

    page.click("main table.cards a")
    page.wait_for_function("name => performance.getEntriesByName(name).length > 0", arg=CHART_MARK)
    assert page.url.endswith("#/tx/s1/tx1")
    lines = page.locator("main svg.chart-svg path.line")
    assert lines.count() == 5  # phases A, B, C and neutral; CUF below
    for i in range(5):
        assert lines.nth(i).get_attribute("d").count("L") > 300  # a day of minutes, at most ~4 points a pixel
    # The balancer's six moves are marked on both charts and listed in words.
    assert page.locator("main svg.chart-svg").first.locator("g.mark").count() == 6
    assert page.locator("details.moves summary").inner_text() == "6 moves in this range (6 done)"
    caption = page.locator("#cap-i").inner_text()
    assert caption.startswith("24 h at 1 min steps. Latest") and "CUF" in caption
    # Nodes: phase, last reading, firmware, key generation; the silent one last heard 40 minutes ago.
    page.wait_for_selector("table.nodes tbody tr")
    nodes = page.locator("table.nodes tbody tr")
    assert nodes.count() == NODES
    assert page.locator("#h-nodes").inner_text() == "Nodes (%d)" % NODES
    n17 = nodes.nth(16).inner_text()
    assert re.search(r"\b(39|40|41) min ago\b", n17) and "phasenode 1.3.0" in n17
    assert "phasenode 1.2.4" in nodes.nth(6).inner_text()  # node 7 runs the older firmware
    # The transformer's active alarms, raised by the engine from the data.
    page.wait_for_selector("table.alarms tbody tr")
    alarms = page.locator("table.alarms tbody").inner_text()
    assert "Relay did not switch" in alarms and "Node silent" in alarms and "node 17" in alarms
    # CSV links for the range shown.
    link = page.get_by_role("link", name="the series")
    href = link.get_attribute("href")
    assert re.fullmatch(r"/api/v1/transformers/s1/tx1/export\.csv\?from=\d+&to=\d+&what=series", href)
    csv = page.request.get(site.url + href)  # with the page's session cookie
    assert csv.ok and csv.text().startswith("t_s,") and csv.text().count("\n") > 1400
    shots(page, "transformer", full_page=True)
    page.set_viewport_size({"width": 840, "height": 620})
    page.wait_for_timeout(300)  # the charts redraw for the new width
    shots(page, "transformer-top")

    # A transformer that is not there (or another tenant's) says so.
    page.goto(site.url + "/#/tx/s1/nope")
    page.wait_for_selector("main p.error")
    assert page.locator("main p.error").inner_text() == "Not found."
    assert watch.problems() and all("status of 404" in m for m in watch.problems()), watch.problems()
    watch.messages.clear()

    timing = first_render(page, site.url + "/#/tx/s1/tx1")
    # The 1.5 s target is measured by `phasekit bench server-page` on 30 days of 100 nodes; here it is a day
    # of 24 on a machine shared with other jobs, so only a generous bound.
    assert 0 < timing["chart_ms"] < 5000, timing
    assert not watch.problems(), watch.problems()


def test_an_acknowledgement_appears_in_the_auditors_open_log_without_a_reload(browser, site, shots):
    auditor, watch_a = open_page(browser, site, "a1")
    assert auditor.url.endswith("#/audit")  # the auditor's only view
    auditor.wait_for_selector("table.audit tbody tr")
    assert auditor.locator("table.audit tbody tr", has_text="alarm.ack").count() == 0
    auditor.evaluate("window.stillTheSamePage = true")
    assert auditor.locator("#nav a[data-view=fleet]").is_hidden()

    op, watch_o = open_page(browser, site, "o1")
    op.click("#nav a[data-view=alarms]")
    op.wait_for_selector("table.alarms tbody tr")
    row = alarm_row(op, "Relay did not switch")
    alarm_id = row.get_attribute("id").split("-")[1]
    row.get_by_role("button", name=re.compile("^Acknowledge alarm")).click()
    comment = op.get_by_label(re.compile("^Comment"))
    assert comment.evaluate("el => el === document.activeElement")
    comment.fill("Crew sent; relay board to be replaced <b>today</b>")
    op.get_by_role("button", name="Acknowledge alarm %s" % alarm_id, exact=True).click()
    op.wait_for_selector("text=Acknowledged alarm %s." % alarm_id)
    row = alarm_row(op, "Relay did not switch")
    assert "acknowledged by user:o1" in row.inner_text()
    assert "“Crew sent; relay board to be replaced <b>today</b>”" in row.inner_text()  # text, not markup
    assert op.locator("table.alarms b").count() == 0
    shots(op, "alarms-acknowledged")

    entry = auditor.locator("table.audit tbody tr", has_text="alarm.ack")
    entry.first.wait_for(timeout=10000)  # the live stream told the auditor's page; it reloaded its list
    text = entry.first.inner_text()
    assert "alarm:%s" % alarm_id in text and "user:o1" in text and "Crew sent" in text
    assert auditor.evaluate("window.stillTheSamePage") is True
    shots(auditor, "audit-live")
    assert not watch_a.problems() and not watch_o.problems(), watch_a.problems() + watch_o.problems()


def test_the_page_works_by_keyboard_alone(browser, site):
    page = browser.page(1280, 900)
    watch = Watch(page)
    page.goto(site.url + "/")
    page.wait_for_selector("#login-name")
    # The login form takes the focus; the page's first stop in tab order is the skip link, which moves the
    # focus to the content.
    assert page.evaluate("document.activeElement.id") == "login-name"
    first = "document.querySelector('a[href], button:not([hidden]), input, select, textarea, [tabindex]').id"
    assert page.evaluate(first) == "skip"
    page.locator("#skip").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.locator("#login-name").focus()
    page.keyboard.type("o2")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#nav:not([hidden])")

    def tab_to(predicate, limit=60):
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(predicate):
                return
        raise AssertionError("never reached by Tab: " + predicate)

    tab_to("document.activeElement.textContent === 'Alarms'")
    page.keyboard.press("Enter")
    page.wait_for_selector("table.alarms tbody tr")
    assert page.evaluate("document.activeElement.tagName") == "H1"  # focus moved to the new view's heading
    tab_to("(document.activeElement.getAttribute('aria-label') || '').startsWith('Acknowledge alarm')"
           " && document.activeElement.getAttribute('aria-label').endsWith('Node silent')")  # fmt: skip
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.tagName") == "TEXTAREA"
    page.keyboard.press("Escape")  # closes the form, focus back on its button
    assert page.evaluate("document.activeElement.getAttribute('aria-label') || ''").startswith("Acknowledge alarm")
    page.keyboard.press("Enter")
    page.keyboard.type("seen; the node's breaker is off")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=acknowledged by user:o2")
    assert "acknowledged by user:o2" in alarm_row(page, "Node silent").inner_text()
    # The chart takes the keyboard too: arrow keys walk its points and the readout says each.
    page.goto(site.url + "/#/tx/s1/tx1")
    page.wait_for_function("name => performance.getEntriesByName(name).length > 0", arg=CHART_MARK)
    page.locator("figure.chart").first.focus()
    page.keyboard.press("End")
    last = page.locator("#readout").inner_text()
    page.keyboard.press("ArrowLeft")
    before = page.locator("#readout").inner_text()
    assert last != before and re.search(r": A [\d.]+ A, B [\d.]+ A, C [\d.]+ A, neutral [\d.]+ A, CUF [\d.]+ %", before)
    assert not watch.problems(), watch.problems()


PHONE_CHECK = """() => {
    const small = [];
    for (const el of document.querySelectorAll("button, input, select, textarea, summary, nav a, .range button")) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) continue;  // not shown
        if (r.height < 44 || (el.tagName === "BUTTON" && r.width < 44)) small.push(el.outerHTML.slice(0, 80));
    }
    return {scroll: document.documentElement.scrollWidth, width: window.innerWidth, small};
}"""


def test_a_390_px_phone_scrolls_only_downwards_and_has_44_px_targets(browser, site, shots):
    phone = dict(width=390, height=844, device_scale_factor=2, is_mobile=True, has_touch=True)
    page, watch = open_page(browser, site, "o1", **phone)
    for route, ready in (("#/fleet", "main table.cards"), ("#/tx/s1/tx1", "table.nodes"),
                         ("#/alarms?state=all", "table.alarms")):  # fmt: skip
        page.goto(site.url + "/" + route)
        page.wait_for_selector(ready)
        if route.startswith("#/alarms"):
            page.locator("table.alarms button").first.click()  # an open acknowledge form too
        got = page.evaluate(PHONE_CHECK)
        assert got["scroll"] <= 390 and got["width"] == 390, (route, got)
        assert not got["small"], (route, got["small"])
    page.goto(site.url + "/#/tx/s1/tx1")
    page.wait_for_function("name => performance.getEntriesByName(name).length > 0", arg=CHART_MARK)
    page.wait_for_selector("table.nodes")
    path = shots(page, "transformer-phone")
    assert path.stat().st_size < 400_000
    auditor, watch_a = open_page(browser, site, "a1", **phone)
    auditor.wait_for_selector("table.audit")
    got = auditor.evaluate(PHONE_CHECK)
    assert got["scroll"] <= 390 and not got["small"], got
    assert not watch.problems() and not watch_a.problems()


CONTRAST = """() => {
    const lum = (rgb) => {
        const [r, g, b] = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const parse = (c) => {
        const m = c.match(/[\\d.]+/g).map(Number);
        return {rgb: m.slice(0, 3), a: m.length > 3 ? m[3] : 1};
    };
    const background = (el) => {
        for (let e = el; e; e = e.parentElement) {
            const c = parse(getComputedStyle(e).backgroundColor);
            if (c.a > 0.5) return c.rgb;
        }
        return parse(getComputedStyle(document.documentElement).backgroundColor).rgb;
    };
    const worst = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        const el = n.parentElement;
        if (!n.textContent.trim() || !el.getClientRects().length || el.closest(".sr-only, svg")) continue;
        const fg = parse(getComputedStyle(el).color).rgb;
        const [a, b] = [lum(fg), lum(background(el))].sort((x, y) => y - x);
        const ratio = (a + 0.05) / (b + 0.05);
        const what = el.tagName + "." + el.className;
        if (ratio < 4.5) worst.push([ratio.toFixed(2), what, n.textContent.trim().slice(0, 30)]);
    }
    return worst;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_and_semantics(browser, site, scheme):
    page, watch = open_page(browser, site, "o1")
    page.emulate_media(color_scheme=scheme)
    for route, ready in (("#/fleet", "main table.cards"), ("#/tx/s1/tx1", "table.nodes"),
                         ("#/alarms?state=all", "table.alarms")):  # fmt: skip
        page.goto(site.url + "/" + route)
        page.wait_for_selector(ready)
        low = page.evaluate(CONTRAST)
        assert not low, (scheme, route, low)  # WCAG 2.2 AA: 4.5:1 for text
        sem = page.evaluate("""() => ({
            lang: document.documentElement.lang,
            h1: document.querySelectorAll("h1").length,
            unlabelled: [...document.querySelectorAll("input, select, textarea")]
                .filter((e) => !e.labels.length).length,
            nameless: [...document.querySelectorAll("button, a")].filter((e) => !(e.textContent.trim()
                || e.getAttribute("aria-label"))).length,
            svgsHidden: [...document.querySelectorAll("svg")].every((s) => s.getAttribute("aria-hidden") === "true"),
            landmarks: ["header", "nav", "main"].every((t) => document.querySelector(t)),
        })""")
        assert sem == {"lang": "en", "h1": 1, "unlabelled": 0, "nameless": 0, "svgsHidden": True,
                       "landmarks": True}, (route, sem)  # fmt: skip
    assert not watch.problems(), watch.problems()


def test_markup_from_the_server_stays_text_and_the_policy_blocks_html_sinks(browser, site):
    hostile = '<img src=x onerror="window.pwned=1">'
    with httpx.Client(base_url=site.url) as c:
        token = c.post("/api/v1/auth/token", json={"name": "i1", "password": PASSWORD}).json()["access_token"]
        auth = {"Authorization": "Bearer " + token}
        assert c.put("/api/v1/transformers/s1/tx1", json={"name": hostile}, headers=auth).status_code == 200
        try:
            page, watch = open_page(browser, site, "o1")
            page.wait_for_selector("main table.cards a")
            assert page.locator("main table.cards a").inner_text() == hostile  # shown as the text it is
            page.click("main table.cards a")
            page.wait_for_selector("table.nodes")
            assert page.locator("main h1").inner_text() == hostile + " (s1 / tx1)"
            assert page.locator("main img").count() == 0 and page.evaluate("window.pwned") is None
            # Trusted Types with no policy: any string that would become markup or code is refused.
            blocked = page.evaluate("""() => {
                const out = [];
                try { document.body.innerHTML = "<b>x</b>"; out.push("innerHTML allowed"); }
                catch (e) { out.push(e.name); }
                const s = document.createElement("script");
                try { s.textContent = "window.pwned = 2"; document.body.append(s); out.push("script allowed"); }
                catch (e) { out.push(e.name); }
                return out;
            }""")
            # (eval is left out: code the test runs through DevTools may always eval; the policy has no
            # 'unsafe-eval', test_web checks that, and the script's source has no eval.)
            assert blocked == ["TypeError", "TypeError"], blocked
            assert page.evaluate("window.pwned") is None
            assert page.evaluate("document.querySelectorAll('script:not([src])').length") <= 1  # the refused one
            violations = [m for m in watch.messages if "Content Security Policy" in m or "TrustedHTML" in m
                          or "TrustedScript" in m]  # fmt: skip
            assert violations  # the attempts above were reported as violations
        finally:
            assert c.put("/api/v1/transformers/s1/tx1", json={"name": None}, headers=auth).status_code == 200


def test_the_chart_follows_new_readings_live(browser, site):
    page, watch = open_page(browser, site, "o1")
    page.goto(site.url + "/#/tx/s1/tx1")
    page.wait_for_function("name => performance.getEntriesByName(name).length > 0", arg=CHART_MARK)
    page.evaluate("window.stillTheSamePage = true")
    before = page.locator("#cap-i").inner_text()
    # The next minute of every house but the silent one, as the Pi would send it.
    t = site.end_s
    items = [records.reading(a, 5000, t + a % 30, [2300, 31000 + a * 100, 7000, 10**6, 500, 95, a % 3, 0])
             for a in range(1, NODES + 1) if a != 17]  # fmt: skip
    site.server.ingest.handle(batches.topic("s1", "tx1", "reading"), batches.encode(items))
    page.wait_for_function("before => document.getElementById('cap-i').textContent !== before", arg=before,
                           timeout=10000)  # fmt: skip
    after = page.locator("#cap-i").inner_text()
    # The newest point is the new minute: 23 houses of 31-33 A spread over three phases.
    latest = re.search(r"Latest \(([^)]*)\): A ([\d.]+) A, B ([\d.]+) A, C ([\d.]+) A", after)
    assert latest and all(200 < float(x) < 300 for x in latest.groups()[1:]), after
    assert page.evaluate("window.stillTheSamePage") is True
    assert not watch.problems(), watch.problems()
