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

from lsr.params import K_MAX_HTTP

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
    stats, config = get_json(live_server + "/stats"), get_json(live_server + "/ui/config")
    modes, default = stats["modes"], stats["default_mode"]
    assert (config["modes"], config["default_mode"]) == (modes, default)
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
            # the mode switch and the speed list come from GET /ui/config, the defaults selected
            page.wait_for_selector("#modes input[name=mode]", state="attached")
            shown = page.eval_on_selector_all("#modes input[name=mode]", "els => els.map(e => e.value)")
            assert shown == modes
            assert page.eval_on_selector("#modes input:checked", "e => e.value") == default
            titles = page.eval_on_selector_all("#modes label", "els => els.map(e => e.title)")
            assert titles == [config["mode_help"][m] for m in modes]
            speeds = page.eval_on_selector_all("#speed option", "els => els.map(e => e.value)")
            assert speeds == config["speeds"] and page.is_visible("#speed")
            assert page.eval_on_selector("#speed", "e => e.value") == config["default_speed"]

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
            placeholder = page.get_attribute("#q", "placeholder")
            assert placeholder and QUERY not in placeholder  # the page's example fits the demo corpus

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

            # an empty query is not sent: the page says what is wrong
            searches = []
            page.on("request", lambda r: searches.append(r.url) if "/search" in r.url else None)
            page.fill("#q", "   ")
            page.click("#go")
            page.wait_for_function("document.getElementById('results').dataset.state === 'empty-query'")
            assert page.is_visible("#error") and "Type a query" in page.inner_text("#error")
            assert not searches

            # an error answer shows the JSON error message
            page.fill("#q", "lava " * 1000)  # longer than the server's max_query_chars
            page.click("#go")
            page.wait_for_function("document.getElementById('results').dataset.state === 'error'")
            assert page.is_visible("#error")
            assert "longer than" in page.inner_text("#error") and "422" in page.inner_text("#error")
            assert page.locator("#results li.hit").count() == 0

            check_speed(page, config)
            check_chips(page, live_server, modes)
            check_weak_matches(page, modes)
            check_more_results(page, live_server, modes)
            check_icon(page)

            assert not page_errors, page_errors
            assert not outside, f"the page fetched from outside the server: {outside}"
        finally:
            browser.close()


def search(page, query: str, mode: str) -> None:
    page.click(f"label[for=mode-{mode}]")
    page.fill("#q", query)
    page.click("#go")
    wait_done(page, mode)


def check_speed(page, config: dict) -> None:
    """Another speed is sent with the search and kept in the address; the default is left out of it."""
    other = next(s for s in config["speeds"] if s != config["default_speed"])
    sent = []
    page.fill("#q", QUERY)
    page.click("#go")
    wait_done(page)
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/search") else None)
    page.select_option("#speed", other)  # re-runs the shown query
    page.wait_for_function(f"location.search.includes('speed={other}')")
    wait_done(page)
    assert sent and sent[-1]["speed"] == other
    page.select_option("#speed", config["default_speed"])
    page.wait_for_function("!location.search.includes('speed=')")
    wait_done(page)


def check_chips(page, live_server: str, modes: list[str]) -> None:
    """Matched pieces are joined into words, stop-word expansions hidden, raw terms behind an expander."""
    mode = "sparse" if "sparse" in modes else modes[0]
    search(page, QUERY, mode)
    words = page.locator("#results .chips.words .chip-term").all_inner_texts()
    assert words and not [w for w in words if w.startswith("##")]
    # the piece "er" of "erupt" shows as the query word, marked as a part of it
    first = page.locator("#results li.hit").first
    assert "erupt" in first.locator(".chips.words .chip.partial .chip-term").all_inner_texts()
    assert "er" not in first.locator(".chips.words .chip-term").all_inner_texts()
    expansions = page.locator("#results .chips.words .chip.expansion .chip-term").all_inner_texts()
    assert not set(expansions) & {"and", "is", "the", "a", "of", "to", "."}, expansions
    raw = page.locator("#results li.hit").first.locator("details.raw-terms")
    assert raw.count() == 1 and not raw.locator(".chip").first.is_visible()
    raw.locator("summary").click()
    assert raw.locator(".chip").first.is_visible()
    # "checkmate" is split into check + ##mate: one chip "checkmate", the pieces among the raw terms
    search(page, "checkmate", mode)
    hit = page.locator("#results li.hit[data-id='sport-5']")
    assert "checkmate" in hit.locator(".chips.words .chip-term").all_inner_texts()
    assert "##mate" in hit.locator("details.raw-terms .chip-term").all_text_contents()


def check_weak_matches(page, modes: list[str]) -> None:
    """BM25: a nonsense word finds nothing, and hits that share little of the query say so."""
    if "bm25" not in modes:
        return
    search(page, "zzqxj", "bm25")
    assert page.locator("#results li.hit").count() == 0 and page.is_visible("#results li.empty")
    search(page, "zzqxj lava", "bm25")
    hits = page.locator("#results li.hit")
    assert hits.count() > 0 and hits.locator(".weak").count() == hits.count()
    assert "weak match" in hits.first.locator(".weak").inner_text()
    assert "Only weak matches" in page.inner_text("#notice")
    search(page, QUERY, "bm25")
    assert page.locator("#results li.hit").first.locator(".weak").count() == 0
    assert "weak" not in page.inner_text("#notice")


def check_more_results(page, live_server: str, modes: list[str]) -> None:
    """"More results" raises k up to the largest k the server accepts (GET /ui/config), not further."""
    mode = "sparse" if "sparse" in modes else modes[0]
    config = get_json(live_server + "/ui/config")
    assert config["k_max"] == K_MAX_HTTP
    search(page, QUERY, mode)
    assert page.locator("#results li.hit").count() == 10 and page.is_visible("#more")
    page.click("#more")
    page.wait_for_function("document.getElementById('results').children.length > 10")
    wait_done(page, mode)
    assert page.eval_on_selector("#k", "e => e.value") == "20"
    assert 10 < page.locator("#results li.hit").count() <= 20
    # with a server that allows 12 hits, the button stops at 12
    page.route("**/ui/config", lambda route: route.fulfill(json={**config, "k_max": 12}))
    page.goto(live_server + f"/?q={QUERY}&mode={mode}")
    wait_done(page, mode)
    assert page.locator("#results li.hit").count() == 10 and page.is_visible("#more")
    page.click("#more")
    page.wait_for_function("document.getElementById('results').children.length === 12")
    wait_done(page, mode)
    assert not page.is_visible("#more")
    page.unroute("**/ui/config")


def check_icon(page) -> None:
    """The page names an icon, served by the app itself."""
    href = page.eval_on_selector("link[rel~=icon]", "e => e.href")
    with urllib.request.urlopen(href, timeout=30) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("image/svg+xml")
        assert b"<svg" in r.read()
