"""Headless Chromium for the web page's tests and benchmark: Debian's browser, driven by Playwright.

``Browser()`` starts Playwright and launches the distribution's Chromium
(``/usr/bin/chromium``, which ``scripts/bootstrap`` installs with apt) by its
path, so Playwright's own browser download is never used;
``browser.page(width, height)`` opens a page in a fresh context (its own
cookies and cache); ``close()`` ends the browser and the Playwright driver
(both are our child processes). ``first_render(page, url)`` loads a page
and reads how long it took to the mark the page sets when its chart is drawn.

The one thing to know: Chromium's sandbox needs user namespaces that a root
process in a container does not get, so as root it runs with
``--no-sandbox`` (the pages it opens are our own, from 127.0.0.1).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from phasekit.errors import PhasekitError

__all__ = ("Browser", "BrowserError", "chromium_path", "first_render", "FLAGS", "CHART_MARK")

# Quiet, reproducible headless runs: no GPU, no background traffic, no first-run or component updates.
FLAGS = (
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
# The Performance API mark the transformer page sets once its chart is drawn (phaseserver/web/app.js).
CHART_MARK = "phasekit:chart-drawn"
_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium")


class BrowserError(PhasekitError, RuntimeError):
    """Chromium or Playwright is missing, or the page did not get where it should."""


def chromium_path() -> str:
    """The distribution's Chromium binary."""
    for path in _CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("chromium")
    if found:
        return found
    raise BrowserError("Chromium not found; install it (Debian: apt-get install chromium; scripts/bootstrap does)")


class Browser:
    """Playwright's driver and one headless Chromium, until ``close()``."""

    def __init__(self, executable: str | None = None) -> None:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError as e:
            raise BrowserError("the playwright package is missing (pip install -e '.[test]')") from e
        path = executable or chromium_path()
        args = list(FLAGS)
        if os.geteuid() == 0:
            args.append("--no-sandbox")
        self._pw = sync_playwright().start()
        try:
            self.browser = self._pw.chromium.launch(executable_path=path, headless=True, args=args)
        except Exception:
            self._pw.stop()
            raise
        self.version = self.browser.version

    def page(self, width: int = 1280, height: int = 900, **context: Any) -> Any:
        """A page in a new context (empty cookies and cache) with a ``width`` x ``height`` viewport."""
        ctx = self.browser.new_context(viewport={"width": width, "height": height}, **context)
        return ctx.new_page()

    def close(self) -> None:
        try:
            self.browser.close()
        finally:
            self._pw.stop()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_render(page: Any, url: str, timeout_s: float = 30.0) -> dict[str, float]:
    """Load ``url`` afresh and return milliseconds from navigation start to the chart mark, with the
    navigation's own timings (response end, DOMContentLoaded) and the bytes the page's resources took."""
    page.goto("about:blank")
    page.goto(url)
    try:
        page.wait_for_function(
            "name => performance.getEntriesByName(name).length > 0", arg=CHART_MARK, timeout=timeout_s * 1000
        )
    except Exception as e:
        raise BrowserError("the page at %s did not draw its chart within %.0f s" % (url[:120], timeout_s)) from e
    out: dict[str, float] = page.evaluate(
        """name => {
            const mark = performance.getEntriesByName(name)[0];
            const nav = performance.getEntriesByType("navigation")[0];
            const res = performance.getEntriesByType("resource");
            const sum = (f) => res.reduce((a, r) => a + f(r), 0);
            return {
                chart_ms: mark.startTime,
                response_end_ms: nav.responseEnd,
                dom_content_loaded_ms: nav.domContentLoadedEventEnd,
                html_bytes: nav.encodedBodySize,
                resources: res.length,
                resource_bytes: sum((r) => r.encodedBodySize),
                api_bytes: sum((r) => (r.name.includes("/api/") ? r.encodedBodySize : 0)),
            };
        }""",
        CHART_MARK,
    )
    return out
