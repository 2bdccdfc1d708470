"""The search page at ``/`` in a real headless browser: Debian's Chromium driven by Playwright.

Needs ``/usr/bin/chromium`` (``make chromium``) and the ``playwright`` package; never ``playwright install``.
The real app is served by uvicorn on a free local port, over the session's fixture index.
"""

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
QUERY = "why does a volcano erupt lava"

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the dev extra is not installed
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (`make chromium` installs it)"),
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (the dev extra)"),
]


@pytest.fixture(scope="module")
def live_server(mini_index, mini_searcher):
    """The real app, served by uvicorn in a background thread on 127.0.0.1 and a free port."""
    uvicorn = pytest.importorskip("uvicorn")
    from lsr.service import Settings, create_app

    app = create_app(Settings(index_path=mini_index), searcher=mini_searcher)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def wait_done(page, mode: str | None = None) -> None:
    """Wait until the page has drawn the answer of its latest search (in ``mode`` when given)."""
    page.wait_for_function(
        "mode => { const r = document.getElementById('results');"
        " return r.dataset.state === 'done' && (!mode || r.dataset.mode === mode); }",
        arg=mode, timeout=60_000)


def test_search_page(live_server, tmp_path):
    stats = get_json(live_server + "/stats")
    modes, default = stats["modes"], stats["default_mode"]
    other = next(m for m in ("sparse", "bm25", "hybrid", "dense") if m in modes and m != default)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1300})
            page_errors, outside = [], []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(live_server) else outside.append(r.url))

            page.goto(live_server + "/")
            assert page.title()
            # the mode switch comes from GET /stats, the default mode checked
            page.wait_for_selector("#modes input[name=mode]", state="attached")
            shown = page.eval_on_selector_all("#modes input[name=mode]", "els => els.map(e => e.value)")
            assert shown == modes
            assert page.eval_on_selector("#modes input:checked", "e => e.value") == default

            page.fill("#q", QUERY)
            page.press("#q", "Enter")
            wait_done(page, default)

            hits = page.locator("#results li.hit")
            assert hits.count() >= 3
            titles = page.locator("#results .hit-title").all_inner_texts()
            assert all(t.strip() for t in titles) and "Volcanoes" in titles
            assert page.locator("#results .snippet").first.inner_text().strip()
            assert page.locator("#results .snippet mark").count() > 0  # query words highlighted
            status = page.inner_text("#status")
            assert f"mode {default}" in status and "ms" in status

            chips = page.locator("#results .chip")
            assert chips.count() > 0
            expansion = page.locator("#results .chip.expansion")
            assert expansion.count() > 0, "no expansion term marked among the matched terms"
            plain = page.locator("#results .chip:not(.expansion)")
            assert plain.count() > 0
            style = "e => getComputedStyle(e).borderTopStyle"
            assert expansion.first.evaluate(style) != plain.first.evaluate(style)  # drawn apart
            assert "expansion" in expansion.first.inner_text()  # and named so for screen readers
            assert page.is_visible("#legend")
            if default == "hybrid":
                assert page.locator("#results li.hit").first.locator(".retrievers .ret").count() >= 2
            page.screenshot(path=str(tmp_path / f"search-{default}.png"), full_page=True)

            # responsive: nothing wider than a phone screen
            page.set_viewport_size({"width": 380, "height": 800})
            assert page.evaluate("document.documentElement.scrollWidth") <= 380
            page.screenshot(path=str(tmp_path / "search-narrow.png"))
            page.set_viewport_size({"width": 1100, "height": 1300})

            # another mode, searched again
            page.click(f"label[for=mode-{other}]")
            page.click("#go")
            wait_done(page, other)
            assert page.locator("#results li.hit").count() > 0
            assert f"mode {other}" in page.inner_text("#status")
            if other in ("sparse", "bm25"):
                assert page.locator("#results .chip").count() > 0
            if other != "hybrid":
                assert page.locator("#results .retrievers").count() == 0

            shot = tmp_path / "search.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.exists() and shot.stat().st_size > 0

            # an error answer shows the JSON error message
            page.fill("#q", "   ")
            page.click("#go")
            page.wait_for_function("document.getElementById('results').dataset.state === 'error'")
            assert page.is_visible("#error")
            assert "query is empty" in page.inner_text("#error")
            assert page.locator("#results li.hit").count() == 0

            assert not page_errors, page_errors
            assert not outside, f"the page fetched from outside the server: {outside}"
        finally:
            browser.close()
