"""Real-browser tests: Debian's Chromium driven by Playwright, keys a reviewer presses.

Skipped with a reason where Chromium or Playwright is missing, unless
``PAIRX_REQUIRE_BROWSER=1`` (``.ci/run`` sets it, so CI fails instead of skipping).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pairx.app.live import LiveServer
from pairx.app.project import Project
from pairx.app.store import current_decisions

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _need_browser() -> Any:
    required = os.environ.get("PAIRX_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).is_file():
        if required:
            pytest.fail(f"{CHROMIUM} missing but PAIRX_REQUIRE_BROWSER=1")
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium); never 'playwright install'")
    return sync_playwright


@pytest.fixture()
def browser_page(fresh_project: Path, tmp_path: Path) -> Iterator[tuple[Any, LiveServer, list]]:
    sync_playwright = _need_browser()
    server = LiveServer(fresh_project, worker=True)
    problems: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            yield page, server, problems
            browser.close()
    finally:
        server.kill()


def _until(predicate: Any, timeout: float = 60.0) -> None:
    # (the page's CSP forbids eval, so Playwright's string predicates cannot run there)
    import time

    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _flash(page: Any, text: str) -> None:
    page.wait_for_selector(f"#flash:has-text('{text}')", timeout=30_000)


def _not_blank(path: Path) -> None:
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert img.shape[0] > 400 and img.std() > 20, "the screenshot looks blank"


def test_review_with_the_keyboard(browser_page: tuple[Any, LiveServer, list],
                                  fresh_project: Path, tmp_path: Path) -> None:
    page, server, problems = browser_page
    page.goto(server.url + "/")
    assert "queries reviewed" in page.inner_text("body")
    page.click("text=" + page.inner_text("table.queue tbody tr:first-child td:nth-child(3)"))
    page.wait_for_selector(".cand.selected")
    conn = Project.open(fresh_project).db()
    query = conn.execute("SELECT image FROM queries WHERE position = 0").fetchone()[0]

    page.keyboard.press("E")  # PAIR-X for the whole list
    page.wait_for_selector(".mark:not(.hidden)", timeout=120_000)
    _until(lambda: page.locator(".mark:not(.hidden)").count() >= 10)
    n_lines = page.locator("svg.lines line:not(.hidden)").count()
    assert n_lines > 0
    page.keyboard.press("[")  # fewer lines
    assert page.locator("svg.lines line:not(.hidden)").count() < n_lines
    page.keyboard.press("]")
    page.hover("#panel-a .mark[data-k='0']")  # match 1's pixel relevance on both images
    assert page.locator("#panel-a .mask:not(.hidden)").count() == 1
    assert page.locator("#panel-b .mask:not(.hidden)").count() == 1
    shot = tmp_path / "review.png"
    page.screenshot(path=str(shot))
    _not_blank(shot)
    shutil.copy(shot, fresh_project / "review.png")

    first = int(page.get_attribute(".cand.selected", "data-id"))
    page.mouse.move(5, 5)
    page.keyboard.press("2")  # no match
    _flash(page, "saved")
    assert current_decisions(conn, query)[(query, first)].decision == "no_match"
    second = int(page.get_attribute(".cand.selected", "data-id"))
    assert second != first  # moved on to the next undecided candidate
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowDown")
    # every job done (a result that lands later redraws the candidate), then its explanation
    _until(lambda: "explaining" not in page.inner_text("#explain-progress"), timeout=120)
    page.wait_for_selector(".mark:not(.hidden)")  # is on screen
    page.keyboard.press("3")
    _flash(page, "unsure")
    assert current_decisions(conn, query)[(query, second)].decision == "unsure"
    event = conn.execute("SELECT explanation FROM events ORDER BY id DESC LIMIT 1").fetchone()
    assert len(event[0]) == 64  # the explanation that was on screen
    page.keyboard.press("z")
    _flash(page, "undone")
    page.keyboard.press("z")
    _flash(page, "no match")
    assert current_decisions(conn, query) == {}

    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")
    page.keyboard.press("+")
    page.keyboard.press("r")
    page.keyboard.press("0")
    page.keyboard.press("ArrowRight")
    page.wait_for_url("**/q/1")
    assert not problems, problems  # no script errors, no CSP violations


def test_blind_mode_in_the_browser(browser_page: tuple[Any, LiveServer, list]) -> None:
    page, server, problems = browser_page
    page.goto(server.url + "/q/0")
    assert page.locator(".sim").count() > 0
    page.keyboard.press("b")
    page.wait_for_selector(".badge.blind")
    assert page.locator(".sim").count() == 0
    page.goto(server.url + "/")
    assert "top similarity" not in page.inner_text("body")
    assert not problems, problems


def test_amd_attributes_beside_pairx(browser_page: tuple[Any, LiveServer, list],
                                     fresh_project: Path, tmp_path: Path) -> None:
    page, server, problems = browser_page
    page.goto(server.url + "/q/0")
    page.wait_for_selector(".cand.selected")
    page.keyboard.press("e")  # PAIR-X and AMD for the selected candidate
    page.wait_for_selector("#attr-list li", timeout=120_000)
    assert page.locator("#attr-list li").count() == 5  # the top 5 until asked for all
    assert "distance" in page.inner_text("#attr-summary")
    shares = [float(t.rstrip("%")) for t in page.locator("#attr-list .pct").all_inner_texts()]
    assert shares == sorted(shares, reverse=True) and 0 < shares[0] <= 100
    assert page.locator("#panel-a .attn:not(.hidden)").count() == 0
    page.click("#attr-list li[data-k='0']")  # its attention over both photographs
    assert page.locator("#panel-a .attn:not(.hidden)").count() == 1
    assert page.locator("#panel-b .attn:not(.hidden)").count() == 1
    assert page.locator("#panel-a .heat:not(.hidden)").count() == 0
    page.click("#attr-more")
    assert page.locator("#attr-list li").count() == 10
    page.keyboard.press("a")  # the next attribute
    assert page.get_attribute("#attr-list li.active", "data-k") == "1"
    page.wait_for_selector(".mark:not(.hidden)", timeout=120_000)  # PAIR-X arrives beside it
    assert page.locator("#panel-a .attn:not(.hidden)").count() == 1
    page.hover("#panel-a .mark[data-k='0']")  # a match's pixels take over while hovered
    assert page.locator("#panel-a .attn:not(.hidden)").count() == 0
    assert page.locator("#panel-a .mask:not(.hidden)").count() == 1
    page.mouse.move(5, 5)
    shot = tmp_path / "amd.png"
    page.screenshot(path=str(shot), full_page=True)
    _not_blank(shot)
    shutil.copy(shot, fresh_project / "amd.png")
    page.keyboard.press("b")  # blind mode (shuffled: another candidate may be selected)
    page.wait_for_selector(".badge.blind")
    page.keyboard.press("e")
    page.wait_for_selector("#attr-list li", timeout=120_000)
    assert "distance" not in page.inner_text("#attr-summary")
    assert not problems, problems
