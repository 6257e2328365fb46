"""The status page in a real browser: Debian's chromium, headless, driven by playwright.

The real daemon runs in dry-run with the simulator in scaled time (slow enough to pause a
plot). Through the page: upload a picture with the ``tiny`` pipeline, watch the job reach
done, pause and resume its plot, drop a second picture and cancel its plot; a page of
another origin cannot make the browser change anything; a token-protected daemon asks for
its token. Screenshots go to ``<tmp_path>/screenshots/``.

playwright drives the system chromium (``executable_path``); it never downloads a browser.
``./dev setup`` installs chromium with apt-get when it is missing and it can (root); where
it cannot, these tests skip and say why.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from .daemon_proc import DaemonProc
from .helpers import DATA, free_port, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "a-long-enough-token-for-the-page"


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it is in the test extra: ./dev setup)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed and could not be: ./dev setup installs "
                    "it with apt-get when run as root with the package archive reachable")
    with sync_playwright() as pw:
        # chromium refuses to sandbox itself as root (CI runs as root)
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield b
        b.close()


class Page:
    """A browser tab on the daemon's page, with its console errors and screenshots."""

    def __init__(self, browser, url: str, shots: Path):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)
        self.page.goto(url + "/")
        self.page.wait_for_selector("body[data-ready]", timeout=20_000)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def wait(self, selector: str, timeout: float = 90) -> None:
        self.page.wait_for_selector(selector, timeout=timeout * 1000)

    def attr(self, selector: str, name: str) -> str:
        return self.page.get_attribute(selector, name) or ""

    def drawn(self) -> list[tuple[str, str]]:
        """(colour, path) of what the live view shows as drawn, pen by pen."""
        return [tuple(x) for x in self.page.eval_on_selector_all(
            "#drawn path", "ps => ps.map(p => [p.getAttribute('stroke'), "
                           "p.getAttribute('d') || ''])")]


def _executed(d: DaemonProc, jid: int) -> int:
    job = d.job(jid)
    assert job["state"] != "failed", f"job {jid} failed: {job['error']}\n{d.logs()[-3000:]}"
    return job["progress"]["info"].get("executed") or 0


def _stripes(n: int) -> str:
    """An SVG of ``n`` long horizontal lines: a plot of a few seconds in scaled time."""
    lines = "".join(f'<path d="M5 {5 + 2 * i} L195 {5 + 2 * i}" stroke="black" fill="none"/>'
                    for i in range(n))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="200mm" height="{10 + 2 * n}mm" '
            f'viewBox="0 0 200 {10 + 2 * n}">{lines}</svg>')


def _start_plot_of(p: Page, d: DaemonProc, jid: int) -> None:
    """Wait until job ``jid`` plots; if the plotter asks for fresh paper first, say so on
    the page (the "paper changed" button)."""
    def plotting_or_paper():
        if p.page.is_visible("#btn-paper"):
            p.page.click("#btn-paper")
        job = d.job(jid)
        assert job["state"] != "failed", f"job {jid} failed: {job['error']}\n{d.logs()[-3000:]}"
        return job["state"] == "plotting"

    wait_for(plotting_or_paper, 90, 0.3, f"job {jid} to plot")


def test_upload_watch_pause_resume_cancel(tmp_path, browser):
    d = DaemonProc(tmp_path, plotter={"sim_speed": "scaled:15"}).start()
    try:
        p = Page(browser, d.url, tmp_path / "screenshots")
        assert p.page.is_visible("#no-jobs")
        names = p.page.locator("#pipeline option").all_inner_texts()
        assert "tiny (default)" in names and "lines-blurmse" in names, names
        p.shot("01-empty")

        # upload with the file picker, choosing the pipeline
        p.page.select_option("#pipeline", "tiny")
        p.page.set_input_files("#file-input", str(DATA / "camera_small.png"))
        p.page.click("#upload-button")
        p.wait('tr[data-job="1"]', 10)
        assert d.job(1)["pipeline"] == "tiny" and d.job(1)["source"] == "upload"

        # the live plot draws over the plan; pause it from the page
        _start_plot_of(p, d, 1)
        wait_for(lambda: _executed(d, 1) > 30, 60, 0.2, "some strokes drawn")
        p.wait("#drawn path[d^='M']", 10)
        p.page.click("#btn-pause")
        p.wait('#plotter-state[data-state="paused"]', 10)
        assert d.http.get("/plotter").json()["state"] == "paused"
        time.sleep(1.5)  # what was queued in the firmware stops
        held = _executed(d, 1)
        time.sleep(2.0)
        assert _executed(d, 1) == held, "the plot went on while paused"
        assert d.job(1)["state"] == "plotting"
        time.sleep(1.2)  # the page's next poll
        drawn, planned = "".join(d for _, d in p.drawn()), p.attr("#planned", "d")
        assert 0 < len(drawn) < len(planned), "the drawn part is not a part of the plan"
        assert p.page.inner_text("#live-title") == "Now plotting"
        assert "of 60 drawn" in p.page.inner_text("#live-stroke")
        assert p.page.inner_text("#live-eta") != "–"
        p.shot("02-paused")

        p.page.click("#btn-resume")
        p.wait('#plotter-state[data-state="plotting"]', 10)
        p.wait('tr[data-job="1"][data-state="done"]', 90)
        time.sleep(1.2)
        assert p.drawn() == [("#000000", p.attr("#planned", "d"))]  # all of it, one pen
        # thumbnails: the optimiser's preview and the plot's render
        p.page.wait_for_function(
            "() => ['preview', 'render'].every(n => { const i = document.querySelector("
            "`tr[data-job=\"1\"] img[data-artefact=${n}]`); return i && i.naturalWidth > 0; })",
            timeout=10_000)
        row = p.page.inner_text('tr[data-job="1"]')
        assert "pen lifts" in row and "plot time" in row, row
        p.shot("03-done")

        # one job's pictures: the loss curve among them
        p.page.click('tr[data-job="1"] [data-action="details"]')
        p.page.wait_for_function(
            "() => { const i = document.querySelector('#details img[data-artefact=loss_png]');"
            " return i && i.naturalWidth > 0; }", timeout=10_000)
        assert "pen lifts" in p.page.inner_text("#details-figures")
        p.shot("04-details")

        # a second drawing by drag and drop (an SVG: no optimisation to wait for), then
        # cancel its plot (two clicks: a stray click must not end a plot)
        transfer = p.page.evaluate_handle(
            """(text) => { const dt = new DataTransfer();
                dt.items.add(new File([text], 'stripes.svg', {type: 'image/svg+xml'}));
                return dt; }""", _stripes(60))
        p.page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
        assert p.page.inner_text("#drop-text") == "stripes.svg"
        p.page.click("#upload-button")
        p.wait('tr[data-job="2"]', 10)
        order = p.page.eval_on_selector_all("#job-rows tr", "rows => rows.map(r => r.dataset.job)")
        assert order == ["2", "1"], "not newest first"
        _start_plot_of(p, d, 2)
        wait_for(lambda: _executed(d, 2) > 5, 60, 0.2, "job 2 drawing")
        p.page.click("#btn-cancel")
        time.sleep(0.5)
        assert d.job(2)["state"] == "plotting", "one click cancelled the plot"
        p.page.click("#btn-cancel")
        p.wait('tr[data-job="2"][data-state="cancelled"]', 30)
        assert d.job(2)["state"] == "cancelled"
        p.shot("05-cancelled")
        p.page.set_viewport_size({"width": 420, "height": 900})  # a phone by the plotter
        p.page.click("#details-close")
        p.shot("09-narrow")
        width = p.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 420, f"the page scrolls sideways on a phone ({width} px)"
        assert p.errors == [], p.errors
    finally:
        d.stop()


def _serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def test_cross_site_requests_are_refused(tmp_path, browser):
    """Another site's page in the same browser posts a form and a no-cors fetch to the
    daemon: neither pauses the plotter. The daemon's own page can."""
    d = DaemonProc(tmp_path).start()
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "index.html").write_text(f"""<!doctype html><body>
<form id="f" method="post" action="{d.url}/plot/pause"><input name="x" value="1"></form>
<script>
fetch("{d.url}/plot/pause", {{method: "POST", mode: "no-cors", body: "x",
                              headers: {{"Content-Type": "text/plain"}}}})
  .finally(() => document.getElementById("f").submit());
</script></body>""")
    server, port = _serve(evil)
    try:
        tab = browser.new_page()
        tab.goto(f"http://127.0.0.1:{port}/index.html")
        tab.wait_for_url(f"{d.url}/plot/pause", timeout=10_000)  # the form went through
        assert "cross-site request refused" in tab.content()
        assert d.http.get("/plotter").json()["state"] == "idle"
        tab.close()

        p = Page(browser, d.url, tmp_path / "screenshots")
        p.page.click("#btn-pause")
        p.wait('#plotter-state[data-state="paused"]', 10)
        assert d.http.get("/plotter").json()["state"] == "paused"
        assert p.errors == [], p.errors
    finally:
        server.shutdown()
        d.stop()


def test_errors_are_shown_in_words(tmp_path, browser):
    """A picture that is not one fails its job, and the page says why; an API refusal (no
    camera configured) shows its reason too."""
    d = DaemonProc(tmp_path, plotter={"sim_speed": "instant"}).start()
    try:
        p = Page(browser, d.url, tmp_path / "screenshots")
        bogus = tmp_path / "holiday.png"
        bogus.write_text("this is not a PNG")
        p.page.set_input_files("#file-input", str(bogus))
        p.page.click("#upload-button")
        p.wait('tr[data-job="1"][data-state="failed"]', 60)
        error = d.job(1)["error"]
        assert error and "holiday.png" in error, error
        assert p.page.inner_text('tr[data-job="1"] .error') == error
        p.page.click("#btn-capture")
        p.wait("#message:not([hidden])", 10)
        assert p.page.inner_text("#message-text").startswith("Camera: ")
        assert "camera" in p.page.inner_text("#message-text")[len("Camera: "):]
        p.shot("08-errors")
        _check_stroke_in_progress(p.page)
    finally:
        d.stop()


def _check_stroke_in_progress(page) -> None:
    """The page's own functions, in the browser: a stroke in progress is drawn up to where
    the machine reports the pen, once the pen is down, and never between strokes."""
    got = page.evaluate("""() => {
        const plan = {track: [[1, 0, 0], [4, 10, 0], [5, 10, 10]],
                      strokes: [{id: 0, start: 0, end: 3}], machine_to_view: [1, 0, -1, 20]};
        return [executedPoints(plan, 5), strokeTail(plan, 1, 3, [5, 20]),
                strokeTail(plan, 1, 4, [5, 20]), strokeTail(plan, 2, 5, [10, 15]),
                strokeTail(plan, 3, 6, [10, 10]), strokeTail(plan, 2, 5, null)]; }""")
    assert got == [2, None, {"id": 0, "d": "M0 0L5 0"}, {"id": 0, "d": "M10 0L10 5"},
                   None, None], got


def test_token_is_asked_for_and_sent(tmp_path, browser):
    d = DaemonProc(tmp_path, api={"token": TOKEN}).start()
    try:
        page = browser.new_page()
        page.goto(d.url + "/")
        page.wait_for_selector("#login:not([hidden])", timeout=10_000)
        page.fill("#token", "wrong")
        page.click("#login button[type=submit]")
        page.wait_for_function(
            "() => document.getElementById('login-error').textContent.includes('refused')",
            timeout=10_000)
        page.fill("#token", TOKEN)
        page.click("#login button[type=submit]")
        page.wait_for_selector("body[data-ready]", timeout=10_000)
        assert page.is_hidden("#login") and page.is_visible("#no-jobs")
        page.click("#btn-pause")  # a state change with the token, from the page
        page.wait_for_selector('#plotter-state[data-state="paused"]', timeout=10_000)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert d.http.get("/plotter", headers=headers).json()["state"] == "paused"
        page.reload()  # kept for the tab's session
        page.wait_for_selector("body[data-ready]", timeout=10_000)
        assert page.is_hidden("#login")
    finally:
        d.stop()


def test_paper_changed_button(tmp_path, browser):
    """With plotter.paper: manual the sheet a job was drawn on must be changed before the
    next job: the page shows the wait and a "paper changed" button that lets it plot."""
    d = DaemonProc(tmp_path, plotter={"sim_speed": "instant", "paper": "manual"}).start()
    try:
        p = Page(browser, d.url, tmp_path / "screenshots")
        assert p.page.is_hidden("#btn-paper")
        for n in (1, 2):  # SVGs: straight to G-code
            d.http.post("/jobs", files={"file": (f"sheet{n}.svg", _stripes(3).encode())})
            if n == 2:
                wait_for(lambda: d.job(2)["state"] == "vectorised", 60, 0.2, "job 2 ready")
                time.sleep(1.5)
                assert d.job(2)["state"] == "vectorised", "plotted on the used sheet"
                p.shot("06-waiting-for-paper")
                p.page.click("#btn-paper")
            d.wait_job(n, ("done",), 60)
            p.wait('#plotter-state[data-state="waiting_for_paper"]', 10)
            assert p.page.is_visible("#btn-paper") and p.page.is_hidden("#btn-pen")
            assert p.page.inner_text("#live-state") == "waiting for paper"
            assert "new sheet" in p.page.inner_text("#live-message")
        assert p.errors == [], p.errors
    finally:
        d.stop()


TWO_PENS = """<svg xmlns="http://www.w3.org/2000/svg"
 xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
 width="100mm" height="80mm" viewBox="0 0 100 80">
<g inkscape:groupmode="layer" inkscape:label="black">
 <path d="M10 10 L90 10 L90 70" stroke="black" fill="none"/></g>
<g inkscape:groupmode="layer" inkscape:label="red">
 <path d="M10 50 L60 20" stroke="red" fill="none"/></g></svg>"""


def test_pen_change_continue_button(tmp_path, browser):
    """A two-pen drawing stops at the firmware's M0 between the pens: the page says so and
    its "pen changed — continue" button lets the plot finish."""
    d = DaemonProc(tmp_path, plotter={"sim_speed": "instant"}).start()
    try:
        p = Page(browser, d.url, tmp_path / "screenshots")
        svg = tmp_path / "two-pens.svg"
        svg.write_text(TWO_PENS)
        p.page.set_input_files("#file-input", str(svg))
        p.page.click("#upload-button")
        p.wait('#plotter-state[data-state="pen_change"]', 60)
        assert p.page.is_visible("#btn-pen") and p.page.is_hidden("#btn-paper")
        assert "pen change" in p.page.inner_text("#live-message")
        time.sleep(1.0)
        assert d.job(1)["state"] == "plotting", "the plot did not wait for the pen"
        # the pen is drawn where the machine says it is: at the start of the red stroke
        plan = d.http.get("/api/jobs/1/plan").json()
        _, u, v = plan["track"][plan["strokes"][1]["start"]]
        assert abs(float(p.attr("#pen", "cx")) - u) < 0.1
        assert abs(float(p.attr("#pen", "cy")) - v) < 0.1
        assert "(machine" in p.page.inner_text("#live-pen")
        (black, first), (red, second) = p.drawn()  # each pen in its colour; red not yet
        assert (black, red) == ("#000000", "#ff0000") and first.startswith("M") and not second
        p.shot("07-pen-change")
        p.page.click("#btn-pen")
        d.wait_job(1, ("done",), 30)
        p.wait('#plotter-state:not([data-state="pen_change"])', 10)
        assert p.page.is_hidden("#btn-pen")
        time.sleep(1.2)
        assert all(d.startswith("M") for _, d in p.drawn())
        # replot it from the page: drawn again from the first stroke, pen change included
        p.wait('tr[data-job="1"][data-state="done"] [data-action="replot"]', 10)
        p.page.click('tr[data-job="1"] [data-action="replot"]')
        p.wait('#plotter-state[data-state="pen_change"]', 30)
        p.page.click("#btn-pen")
        wait_for(lambda: (j := d.job(1))["state"] == "done" and j["plot"]["attempts"] == 2,
                 30, 0.2, "the replot done")
        assert p.errors == [], p.errors
    finally:
        d.stop()


def test_two_plotters_show_a_card_each(tmp_path, browser):
    """With two plotters the page shows a card per plotter, with its own state and
    buttons: pausing one from its card leaves the other drawing; a job asking for a plotter
    by name plots there and the job list says where."""
    d = DaemonProc(tmp_path, plotters=[
        {"name": "left", "sim_speed": "instant", "tags": ["black"]},
        {"name": "right", "sim_speed": "instant", "tags": ["red"], "paper": "manual"},
    ]).start()
    try:
        p = Page(browser, d.url, tmp_path / "screenshots")
        p.wait('#plotters .plotter-card[data-plotter="left"]', 20)
        p.wait('#plotters .plotter-card[data-plotter="right"]', 20)
        assert p.page.is_visible("#plotters")
        assert "red" in p.page.inner_text('.plotter-card[data-plotter="right"]')
        p.page.click('.plotter-card[data-plotter="left"] [data-action="pause"]')
        p.wait('.plotter-card[data-plotter="left"][data-state="paused"]', 10)
        assert d.http.get("/api/status", params={"plotter": "left"}).json()["plotter"][
            "state"] == "paused"
        d.http.post("/jobs", files={"file": ("r.svg", _stripes(3).encode())},
                    data={"tags": "red"})
        job = d.wait_job(1, ("done",), 60)
        assert job["plotter"] == "right"
        # right's sheet is used (paper: manual): its card offers "paper changed"
        p.wait('.plotter-card[data-plotter="right"][data-state="waiting_for_paper"]', 10)
        p.wait('tr[data-job="1"][data-state="done"]', 10)
        assert "on right" in p.page.inner_text('tr[data-job="1"]')
        p.shot("08-two-plotters")
        p.page.click('.plotter-card[data-plotter="right"] [data-action="paper changed"]')
        p.wait('.plotter-card[data-plotter="right"][data-state="idle"]', 10)
        assert d.http.get("/api/plotters").json()[0]["state"] == "paused"  # left still
        assert p.errors == [], p.errors
    finally:
        d.stop()


def test_pens_section_lists_the_fitted_pens(tmp_path, browser):
    """The Pens section shows each fitted pen with its date and fitted figures, the
    plotter carrying it, and a pen fitted while the page is open appears on its own."""
    from plotterd.pen import FittedPen, save_pen_profile

    pens = tmp_path / "pens"
    save_pen_profile(FittedPen("fine-liner", nib_mm=0.42, darkness=0.8, colour="#1f3a8a",
                               nominal_nib_mm=0.3, fitted_at="2026-12-07", residual=0.0123),
                     pens)
    d = DaemonProc(tmp_path, pens_dir=str(pens),
                   plotter={"pen": {"profile": "fine-liner"}}).start()
    try:
        p = Page(browser, d.url, tmp_path / "screenshots")
        p.wait('#pen-rows tr[data-pen="fine-liner"]', 20)
        row = p.page.inner_text('#pen-rows tr[data-pen="fine-liner"]')
        for words in ("fine-liner", "0.42 mm", "nominal 0.3 mm", "80 %", "0.012",
                      "2026-12-07", "plotter"):
            assert words in row, row
        colour = p.page.eval_on_selector('tr[data-pen="fine-liner"] .swatch',
                                         "s => getComputedStyle(s).backgroundColor")
        assert colour == "rgb(31, 58, 138)"
        assert p.page.is_hidden("#no-pens")
        save_pen_profile(FittedPen("broad", nib_mm=0.9, darkness=0.6, fitted_at="2026-12-08"),
                         pens)
        p.wait('#pen-rows tr[data-pen="broad"]', 20)
        assert p.page.inner_text("#pen-count") == "2 fitted"
        p.shot("09-pens")
        assert p.errors == [], p.errors
    finally:
        d.stop()
