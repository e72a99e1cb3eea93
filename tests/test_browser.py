"""The rendered book in a real browser: headless Debian Chromium driven by playwright.

Serves the built HTML on 127.0.0.1 and opens every page the table of contents
lists, by following the "next" links from the front page (so the navigation
itself is tested). On every page: it loads, no request leaves 127.0.0.1, all
math typesets with no MathJax error, every image decodes, every widget view
renders (a widget with no live kernel is dead: the book must show a static
fallback), the console stays free of errors.

Reuses the quick-mode build of ``tests/test_book.py`` (the ``html`` fixture),
or an existing build::

    DGM_BOOK_HTML=_build/html python -m pytest tests/test_browser.py

Needs ``/usr/bin/chromium`` (``apt-get install chromium``); never downloads a
browser. Without Chromium the test is skipped, except under ``CI=true``, where
a missing browser is a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

from test_book import _toc_files

CHROMIUM = Path("/usr/bin/chromium")
# flags for a closed network: without them Chromium phones home at start-up
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.book, pytest.mark.slow]


def _need_browser():
    if not CHROMIUM.exists():
        message = "Debian chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run installs it")
        pytest.skip(message)
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(html):
    handler = functools.partial(_QuietHandler, directory=str(html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


# run in the page once it has loaded: MathJax finished, then what it and the images produced
PAGE_REPORT = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const math = Array.from(document.querySelectorAll('.math, .amsmath'));
  return {
    mathjax: !!(window.MathJax && MathJax.version),
    mathElements: math.length,
    untypeset: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60)),
    mathErrors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.getAttribute('data-mjx-error') || e.textContent.slice(0, 60)),
    brokenImages: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 80)),
    deadWidgets: Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
      .filter(s => !(s.parentElement && s.parentElement.querySelector('.jupyter-widgets, .widget-container, .lm-Widget')))
      .length,
    next: (document.querySelector('a.right-next') || {}).href || null,
    title: document.title,
  };
}"""


def test_every_page_in_a_real_browser(server):
    sync_api = _need_browser()
    expected = _toc_files()  # the root page first, then the toc in order
    visited, problems, outside = [], [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        console: list[str] = []

        def check_request(route):
            url = route.request.url
            host = urlparse(url).hostname
            if urlparse(url).scheme in ("http", "https", "ws", "wss") and host != "127.0.0.1":
                outside.append(url)
                return route.abort()
            return route.continue_()

        page.route("**/*", check_request)
        page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda err: console.append(f"uncaught: {err}"))
        page.on("requestfailed", lambda req: console.append(f"failed request: {req.url} ({req.failure})"))

        # the site's front door redirects to the root page
        page.goto(urljoin(server, "index.html"))
        page.wait_for_url(urljoin(server, expected[0] + ".html"), timeout=15_000)
        page.wait_for_load_state("networkidle")
        url = page.url
        while url and len(visited) <= len(expected) + 2:
            console.clear()
            response = page.goto(url, wait_until="networkidle")
            name = urlparse(url).path.lstrip("/").removesuffix(".html")
            visited.append(name)
            if response is None or response.status != 200:
                problems.append(f"{name}: HTTP {response.status if response else 'no response'}")
                break
            report = page.evaluate(PAGE_REPORT)
            page.wait_for_load_state("networkidle")  # fonts MathJax asked for, before leaving the page
            if report["mathElements"] and not report["mathjax"]:
                problems.append(f"{name}: {report['mathElements']} math elements but MathJax did not load")
            for text in report["untypeset"][:3]:
                problems.append(f"{name}: math not typeset: {text!r}")
            for err in report["mathErrors"][:3]:
                problems.append(f"{name}: MathJax error: {err!r}")
            if report["deadWidgets"]:
                problems.append(f"{name}: {report['deadWidgets']} widget view(s) that do not render")
            for src in report["brokenImages"]:
                problems.append(f"{name}: broken image {src}")
            for line in console:
                problems.append(f"{name}: console: {line[:200]}")
            url = report["next"]
        browser.close()

    assert not outside, "requests left 127.0.0.1:\n" + "\n".join(sorted(set(outside))[:20])
    assert not problems, "\n".join(problems)
    assert visited == expected, (
        "following 'next' from the front page should visit every toc page in order;\n"
        f"visited {visited}\nexpected {expected}"
    )
