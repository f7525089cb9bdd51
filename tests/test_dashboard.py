"""The dashboard end to end: a real server on a local port, driven by headless Chromium.

Each panel is checked against the API's own answers and photographed to
test-artifacts/dashboard/*.png. Every page asserts at the end that it sent no request outside
the server's origin (the page must work offline) and logged no console error besides the
failed loads the test expects (a 404 of a route this server lacks, a 401 before the key).

Needs Playwright (the `dev` extra) and Debian's chromium on PATH; Playwright's own browser
download is never used. Without either, the module is skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from helpers_serve import API_KEY, READ_KEY, auth, free_port
from lmrec.collect.events import ColumnMapping
from lmrec.models import create_model
from lmrec.prepare import PrepareConfig, prepare
from lmrec.serve.app import create_app
from lmrec.serve.bundle import write_bundle
from lmrec.serve.security import KeyRing
from lmrec.train.checkpoint import write_history
from lmrec.train.options import TrainingOptions

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium); Playwright's own "
                "browser download is not used", allow_module_level=True)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
WAIT_MS = 10_000  # the longest any element may take to appear


# --- a bundle whose catalogue holds a hostile title --------------------------------------------
def _bundle(folder: Path) -> Path:
    """EASE on two groups of users and items; item A0's title is markup, items have
    timestamps, and the folder also holds a training curve, an auto search and metrics."""
    rows = [(f"{g}{u}", f"{g.upper()}{(u + t) % 8}", 1_700_000_000 + 3600 * t)
            for g, n in (("a", 10), ("b", 16)) for u in range(n) for t in range(4)]
    events = pl.DataFrame(rows, schema=["user", "item", "timestamp"], orient="row")
    items = pl.DataFrame({
        "item": [f"{g}{i}" for g in "AB" for i in range(8)],
        "genres": [[{"A": "alpha", "B": "beta"}[g], "film"] for g in "AB" for _ in range(8)],
        "title": [HOSTILE if (g, i) == ("A", 0) else f"{g} film {i}"
                  for g in "AB" for i in range(8)]})
    ds = prepare(events, items=items, mapping=ColumnMapping(time="timestamp"),
                 config=PrepareConfig(item_roles={"genres": "multi", "title": "text"}),
                 name="dash").dataset
    write_bundle(create_model("ease", {}).fit(ds, TrainingOptions(rng=0)), ds, folder)
    write_history(folder / "run", [{"epoch": e, "loss": 1.0 / e, "metric": 0.1 + 0.05 * e}
                                   for e in range(1, 6)], {"best_epoch": 5, "best_metric": 0.35})
    (folder / "auto.json").write_text(json.dumps({
        "winner": {"family": "ease", "params": {"l2": 50.0}, "valid ndcg@10": 0.31},
        "metric": "ndcg@10", "stop": "budget", "counts": {"complete": 3},
        "curve": [{"at_s": 1.0, "best": 0.2}, {"at_s": 4.0, "best": 0.31}],
        "trials": [{"number": 0, "family": "ease", "state": "complete", "value": 0.31,
                    "seconds": 1.2, "params": {"l2": 50.0}}]}))
    (folder / "metrics.json").write_text(json.dumps({"ndcg@10": 0.287, "recall@10": 0.41}))
    return folder


class Server:
    """uvicorn serving `create_app` on a free local port, in a thread of this process."""

    def __init__(self, bundle: Path, store: str, keys: KeyRing) -> None:
        import uvicorn

        self.app = create_app(bundle, store, keys=keys)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def has_route(self, path: str) -> bool:
        """Whether the app serves GET `path` (a template such as /v1/items/{item})."""
        paths = httpx.get(self.url + "/openapi.json").json()["paths"]
        return "get" in paths.get(path, {})

    def post_events(self, *events: dict[str, Any]) -> None:
        r = httpx.post(self.url + "/v1/events", json={"events": list(events)}, headers=auth())
        assert r.status_code == 200, r.text

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("dash") / "bundle")


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("store") / "events.db"
    s = Server(bundle, f"sqlite:///{db}",
               KeyRing.from_keys({"write": [API_KEY], "admin": [API_KEY]}))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@dataclass
class Watched:
    """A page and what it did: every request, failed responses and console errors."""

    page: Any
    origin: str
    requests: list[Any] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def check(self, expected_failures: Callable[[int, str], bool]) -> None:
        outside = [r.url for r in self.requests if not r.url.startswith(self.origin + "/")]
        assert not outside, f"requests outside {self.origin}: {outside}"
        unexpected = [f for f in self.failed if not expected_failures(*f)]
        assert not unexpected, f"unexpected failed loads: {unexpected}"
        # Chromium logs each failed load as a console error; anything else is a real error
        others = [e for e in self.errors if not e.startswith("Failed to load resource")]
        assert not others, f"console errors: {others}"


@pytest.fixture
def watched(browser: Any, server: Server) -> Iterator[Watched]:
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    yield watch(ctx.new_page(), server.url)
    ctx.close()


def watch(page: Any, origin: str) -> Watched:
    page.set_default_timeout(WAIT_MS)
    w = Watched(page, origin)
    page.on("request", lambda r: w.requests.append(r))
    page.on("response", lambda r: w.failed.append((r.status, r.url)) if r.status >= 400
            else None)
    page.on("console", lambda m: w.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: w.errors.append(f"uncaught: {exc}"))
    return w


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def no_catalogue_404(server: Server, *unknown: str) -> Callable[[int, str], bool]:
    """Failed loads a page may show: GET /v1/items/{id} and /v1/experiments answering 404
    on a server without those routes (the page falls back or says so), and the `unknown`
    paths (an unknown item asked for on purpose)."""
    def ok(status: int, url: str) -> bool:
        path = url.removeprefix(server.url)
        return status == 404 and (
            path in unknown
            or (path.startswith("/v1/items/") and not path.endswith("/similar")
                and not server.has_route("/v1/items/{item}"))
            or (path == "/v1/experiments" and not server.has_route("/v1/experiments")))
    return ok


def texts(page: Any, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


# --- the panels ----------------------------------------------------------------------------
def test_user_explorer_history_recommendations_and_live_events(
        watched: Watched, server: Server) -> None:
    page = watched.page
    server.post_events({"user": "a1", "item": "A0", "type": "click", "timestamp": 1.75e9})
    api = httpx.get(server.url + "/v1/users/a1/recommendations",
                    params={"k": 10, "explain": True}).json()
    page.goto(server.url + "/dashboard?poll=300#user/a1")
    page.locator("#user-recs tbody tr").nth(9).wait_for()
    rows = page.locator("#user-recs tbody tr")
    assert [rows.nth(n).locator(".item-link .id").first.inner_text()
            for n in range(10)] == [it["item"] for it in api["items"]]
    reasons = [it.get("reason") for it in api["items"] if it.get("reason")]
    assert reasons and reasons[0] in page.locator("#user-recs").inner_text()
    assert len(texts(page, "#user-training li")) == 4  # a1's four training events
    live = page.locator("#user-live li")
    assert live.count() == 1
    # the hostile title is shown as text: no script ran, no element was made from it
    assert HOSTILE in live.first.inner_text()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("img").count() == 0 and page.locator("script").count() == 1
    shot(page, "user")

    # a live event appears without reloading, and the recommendations follow it
    first_rec = api["items"][0]["item"]
    server.post_events({"user": "a1", "item": first_rec, "type": "purchase"})
    newest = page.locator("#user-live li.new")  # marked as arrived since the last look
    newest.wait_for()
    assert page.locator("#user-live li").count() == 2
    assert page.locator("#user-live li").first.get_attribute("data-seq") == \
        newest.get_attribute("data-seq")  # newest first
    assert first_rec in newest.inner_text() and "purchase" in newest.inner_text()
    page.wait_for_function(
        "id => ![...document.querySelectorAll('#user-recs .item-link .id')]"
        ".some(e => e.textContent === id)", arg=first_rec)  # a seen item leaves the list
    watched.check(no_catalogue_404(server))


def test_item_explorer_attributes_and_similar_items(watched: Watched, server: Server) -> None:
    page = watched.page
    page.goto(server.url + "/dashboard#user/b2")
    page.locator("#user-recs .item-link").first.click()  # a recommendation opens its item
    item = page.input_value("#item-id")
    page.locator("#item-similar tbody tr").first.wait_for()
    sim = httpx.get(f"{server.url}/v1/items/{item}/similar", params={"k": 10}).json()
    assert texts(page, "#item-similar tbody tr .id") == [s["item"] for s in sim["items"]]
    assert "film" in page.locator("#item-attrs").inner_text()

    page.fill("#item-id", "A0")
    page.click("#item-form button")
    page.wait_for_function("() => document.querySelector('#item-attrs').textContent"
                           ".includes('__pwned')")
    assert HOSTILE in page.locator("#item-attrs").inner_text()
    assert "alpha" in page.locator("#item-attrs").inner_text()
    page.locator("#item-similar tbody tr").nth(4).wait_for()
    assert page.evaluate("window.__pwned") is None and page.locator("img").count() == 0
    shot(page, "item")

    # without a catalogue route (a 404 "Not Found" here) the bundle's item table answers
    page.route("**/v1/items/A3", lambda route: route.fulfill(
        status=404, content_type="application/json", body='{"detail": "Not Found"}'))
    page.fill("#item-id", "A3")
    page.click("#item-form button")
    page.wait_for_function("() => document.querySelector('#item-status').textContent"
                           ".includes(\"bundle's item table\")")
    assert "A film 3" in page.locator("#item-attrs").inner_text()
    page.locator("#item-similar tbody tr").first.wait_for()

    page.fill("#item-id", "no-such-item")
    page.click("#item-form button")
    page.wait_for_function("() => document.querySelector('#item-status').textContent"
                           ".startsWith('Unknown item')")
    watched.check(no_catalogue_404(server, "/v1/items/no-such-item", "/v1/items/A3"))


STUB = {
    "mode": "ab",
    "arms": [
        {"arm": "A", "model_version": "ease-1", "share": 0.5, "impressions": 1200, "clicks": 96,
         "ctr": 0.08, "ctr_ci": [0.065, 0.095], "conversions": 12, "conversion_rate": 0.01,
         "conversion_ci": [0.005, 0.015]},
        {"arm": "B", "model_version": "als-2", "share": 0.5, "impressions": 1180,
         "clicks": 130, "ctr": 0.1102, "ctr_ci": [0.092, 0.128], "conversions": 20,
         "conversion_rate": 0.0169, "conversion_ci": [0.01, 0.024]}],
    "comparison": {"control": "A", "treatment": "B", "ctr_diff": 0.0302,
                   "ctr_diff_ci": [0.007, 0.053], "ctr_relative": 0.3775, "p_value": 0.0123,
                   "conversion_diff": 0.0069, "conversion_diff_ci": [-0.002, 0.016],
                   "conversion_p_value": 0.14, "significant": True},
    "interleaving": {"arms": ["A", "B"], "impressions": 800, "wins": {"A": 210, "B": 260},
                     "ties": 330, "preference": -0.0625, "preference_ci": [-0.11, -0.015],
                     "p_value": 0.021, "winner": "B"},
    "timeline": [{"arm": arm, "start": 1.7e9 + 3600 * h, "impressions": 300, "clicks": c,
                  "ctr": c / 300, "ctr_ci": [c / 300 - 0.02, c / 300 + 0.02]}
                 for arm, base in (("A", 22), ("B", 30)) for h, c in enumerate(
                     (base, base + 3, base - 2, base + 1))],
}


def test_experiments_panel(watched: Watched, server: Server) -> None:
    page = watched.page
    page.route("**/v1/experiments", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(STUB)))
    page.goto(server.url + "/dashboard#experiments")
    page.locator("#exp-body table.arms tbody tr").nth(1).wait_for()
    arms = page.locator("#exp-body table.arms tbody tr")
    assert arms.nth(0).inner_text().split("\t")[:6] == ["A", "ease-1", "50.00%", "1200", "96",
                                                        "8.00%"]
    assert "[9.20%, 12.80%]" in arms.nth(1).inner_text()
    comparison = page.locator("#exp-comparison").inner_text()
    assert "0.012" in comparison and "significant at 5%" in comparison
    assert "[0.70%, 5.30%]" in comparison
    inter = page.locator("#exp-interleaving").inner_text()
    assert "A 210 · B 260 · ties 330" in inter and "-0.063" in inter and "0.021" in inter
    chart = page.locator("#exp-timeline svg.chart")
    # one interval band and one CTR line per arm, four points each
    assert chart.locator("polygon.band").count() == 2
    assert chart.locator("polyline.series").count() == 2
    assert chart.locator("circle").count() == 8
    shot(page, "experiments")

    # the server's own answer: its data when it has the route, else a plain message
    page.unroute("**/v1/experiments")
    real = None
    if server.has_route("/v1/experiments"):  # a click on a logged recommendation first
        recs = httpx.get(server.url + "/v1/users/b3/recommendations").json()
        r = httpx.post(server.url + "/v1/feedback", headers=auth(), json={
            "request_id": recs["request_id"], "item": recs["items"][0]["item"]})
        assert r.status_code == 200, r.text
        real = httpx.get(server.url + "/v1/experiments").json()
    page.click("#tabs button[data-panel=model]")
    page.click("#tabs button[data-panel=experiments]")
    if real is not None:
        page.wait_for_function("() => document.querySelector('#exp-status').textContent"
                               ".startsWith('Mode: ')")
        assert page.locator("#exp-status").inner_text().startswith(f"Mode: {real['mode']}")
        rows = page.locator("#exp-body table.arms tbody tr")
        assert rows.count() == len(real["arms"])
        cells = rows.first.inner_text().split("\t")
        assert cells[0] == real["arms"][0]["arm"]
        # as the API counted them just now (this page asked for no recommendation since)
        assert int(cells[3]) == real["arms"][0]["impressions"] >= 1
        assert int(cells[4]) == real["arms"][0]["clicks"] >= 1
        assert page.locator("#exp-timeline svg.chart circle").count() >= 1
        shot(page, "experiments-server")
    else:
        page.wait_for_function("() => document.querySelector('#exp-status').textContent"
                               ".includes('404')")
        assert "No experiment data" in page.locator("#exp-status").inner_text()
        assert page.locator("#exp-body").inner_text() == ""
        shot(page, "experiments-absent")
    watched.check(no_catalogue_404(server))


def test_model_panel(watched: Watched, server: Server, bundle: Path) -> None:
    page = watched.page
    page.goto(server.url + "/dashboard#model")
    page.locator("#model-summary table").wait_for()
    meta = json.loads((bundle / "bundle.json").read_text())
    summary = page.locator("#model-summary").inner_text()
    assert meta["model_version"] in summary and "ease" in summary
    assert "l2" in page.locator("#model-config").inner_text()
    training = page.locator("#model-training")
    assert training.locator("polyline.series").count() == 2  # loss and validation metric
    assert training.locator("polyline.series").first.get_attribute("points").count(",") == 5
    auto = page.locator("#model-auto").inner_text()
    assert "ease" in auto and "valid ndcg@10" in auto and "budget" in auto
    assert "0.287" in page.locator("#model-metrics").inner_text()
    assert meta["model_version"] in page.locator("#model-badge").inner_text()
    shot(page, "model")
    watched.check(no_catalogue_404(server))


def test_health_panel(watched: Watched, server: Server) -> None:
    page = watched.page
    server.post_events({"user": "h1", "item": "B1"})
    page.goto(server.url + "/dashboard#health")
    page.locator("#health-metrics").wait_for()
    status = page.locator("#health-status-card").inner_text()
    assert "ok" in status and "ready" in status
    rows = dict(line.split("\t", 1) for line in
                page.locator("#health-metrics").inner_text().splitlines() if "\t" in line)
    metrics = httpx.get(server.url + "/v1/metrics").text
    stored = next(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("lmrec_events_ingested_total"))
    assert float(rows["events stored"]) == stored >= 1
    assert int(rows["requests answered"]) > 0 and rows["server errors (5xx)"] == "0"
    shot(page, "health")
    watched.check(no_catalogue_404(server))


# --- read keys -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def locked(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("locked") / "events.db"
    s = Server(bundle, f"sqlite:///{db}",
               KeyRing.from_keys({"write": [API_KEY], "read": [READ_KEY]}))
    yield s
    s.stop()


def test_read_key_prompt(browser: Any, locked: Server) -> None:
    for path in ("/v1/model", "/v1/users/a1/history", "/v1/users/a1/recommendations",
                 "/v1/model/items?id=A1"):
        assert httpx.get(locked.url + path).status_code == 401, path
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    w = watch(ctx.new_page(), locked.url)
    page = w.page
    try:
        page.goto(locked.url + "/dashboard#user/a1")
        page.locator("#auth").wait_for(state="visible")
        assert page.locator("#panels").is_hidden()
        assert page.locator("#model-badge").inner_text() == ""
        shot(page, "key-prompt")
        page.fill("#auth-key", "wrong-key-0123456789abcdef")
        page.click("#auth-form button")
        page.wait_for_function("() => document.querySelector('#auth-message').textContent"
                               ".includes('not accepted')")
        page.fill("#auth-key", READ_KEY)
        page.click("#auth-form button")
        page.locator("#user-recs tbody tr").first.wait_for()
        assert page.locator("#auth").is_hidden()
        assert page.evaluate("sessionStorage.getItem('lmrec.readKey')") == READ_KEY
        data = [r for r in w.requests if "/v1/" in r.url]
        keyed = [r for r in data if r.headers.get("authorization") == f"Bearer {READ_KEY}"]
        assert keyed and all(r.url.startswith(locked.url) for r in keyed)
        shot(page, "key-accepted")
        # the key is forgotten on request: the prompt is back
        page.click("#forget-key")
        page.locator("#auth").wait_for(state="visible")
        w.check(lambda status, url: status == 401 or no_catalogue_404(locked)(status, url))
    finally:
        ctx.close()
