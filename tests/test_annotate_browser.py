"""End to end in Debian's chromium (headless, playwright with executable_path; no browser download):
annotators log in and label with the keyboard only; screenshots of the labelling page and dashboard."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from annotate_support import PASSWORD, add_users, make_project
from sqlalchemy import select

from annotation_ui.app import create_app
from annotation_ui.db import Database
from annotation_ui.models import Label, User
from annotation_ui.testing import LiveServer

pytest_plugins = ["annotate_fixtures"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS_ENV = "HFL_TEST_ARTIFACTS"

# Outside CI a machine without chromium skips; CI (scripts/setup.sh installs it) must run the test.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="Debian's chromium is not installed"
)


def wait_loaded(img, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until an <img> has decoded (CDP evaluation: the page's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout_s
    while not img.evaluate("e => e.complete && e.naturalWidth > 0"):
        assert time.monotonic() < deadline, "image did not load"
        time.sleep(0.05)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Screenshots go to $HFL_TEST_ARTIFACTS/annotate (CI keeps them) or the test's temp folder."""
    base = Path(os.environ[SHOTS_ENV]) if os.environ.get(SHOTS_ENV) else tmp_path
    d = base / "annotate"
    d.mkdir(parents=True, exist_ok=True)
    return d


LOGIN_TIMEOUT_MS = 20_000  # Argon2 verification on a loaded 2-core CI machine can take seconds


def log_in_with_keyboard(page, name: str) -> None:
    """Type the credentials once the page has put the focus in the user-name field, then press Enter."""
    from playwright.sync_api import expect

    expect(page.locator("#username")).to_be_focused()
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    expect(page.locator("#password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")


def test_keyboard_only_labelling_and_dashboard(
    sqlite_db: Database, face_shard: Path, pair_shard: Path, shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    make_project(sqlite_db, face_shard, limit=3, raters_per_item=2, quorum=2, gold_every=0)
    add_users(sqlite_db, ["alice", "bob"])
    add_users(sqlite_db, ["boss"], role="admin")
    plan = {  # keys each annotator presses per item: expression digit, intensity letter (or none), Enter
        "alice": [["2", "q"], ["3", "e"], ["1"]],
        "bob": [["2", "w"], ["3", "e"], ["5", "w"]],
    }
    with LiveServer(create_app(sqlite_db)) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            for name, items in plan.items():
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(srv.url + "/label")
                expect(page).to_have_url(srv.url + "/login")
                log_in_with_keyboard(page, name)
                expect(page).to_have_url(srv.url + "/label", timeout=LOGIN_TIMEOUT_MS)
                expect(page.locator("body")).to_have_attribute("data-ready", "1")
                expect(page.locator("#guidelines")).to_contain_text("Label the expression")
                for n, keys in enumerate(items):
                    stage = page.locator("#stage")
                    before = stage.get_attribute("data-item-id")
                    assert before, "no item shown"
                    img = page.locator("#images img")
                    expect(img).to_have_count(1)
                    wait_loaded(img)
                    if n == 0:
                        page.keyboard.press("4")  # change of mind: 4 then the real choice
                    for k in keys:
                        page.keyboard.press(k)
                    if name == "alice" and n == 0:
                        expect(page.locator("#expressions button.on")).to_have_text("2 happy")
                        expect(page.locator("#intensities button.on")).to_have_text("Q slightly")
                        page.screenshot(path=str(shots / "labelling.png"))
                    page.keyboard.press("Enter")
                    expect(page.locator("#status")).to_contain_text(f"saved #{before}")
                    if n + 1 < len(items):
                        expect(stage).not_to_have_attribute("data-item-id", before)
                expect(page.locator("#done")).to_be_visible()
                expect(page.locator("#progress")).to_contain_text("you: 3 labelled")
                if name == "bob":  # undo the last label with Z: the item comes back, then label it again
                    page.keyboard.press("z")
                    expect(page.locator("#done")).to_be_hidden()
                    expect(page.locator("#progress")).to_contain_text("you: 2 labelled")
                    page.keyboard.press("5")
                    page.keyboard.press("w")
                    page.keyboard.press("Enter")
                    expect(page.locator("#done")).to_be_visible()
                page.close()
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(srv.url + "/login")
            log_in_with_keyboard(page, "boss")
            expect(page).to_have_url(srv.url + "/admin", timeout=LOGIN_TIMEOUT_MS)
            expect(page.locator("body")).to_have_attribute("data-ready", "1")
            expect(page.locator("#figures")).to_contain_text("Fleiss' kappa")
            expect(page.locator("#annotators")).to_contain_text("alice")
            wait_loaded(page.locator("#confusion"))
            page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    with sqlite_db.read() as s:
        rows = s.execute(
            select(User.username, Label.item_id, Label.expression, Label.intensity)
            .join(User, User.id == Label.annotator_id)
            .order_by(User.username, Label.item_id)
        ).all()
    got = {(u, e, i) for u, _, e, i in rows}
    assert got == {
        ("alice", "happy", "slightly"),
        ("alice", "sad", "strongly"),
        ("alice", "neutral", None),
        ("bob", "happy", "normally"),
        ("bob", "sad", "strongly"),
        ("bob", "fearful", "normally"),
    }
    assert (shots / "labelling.png").stat().st_size > 10_000
    assert (shots / "dashboard.png").stat().st_size > 10_000


class SlowLabels:
    """ASGI wrapper that holds every label submit for `delay_s`: a slow network, reproducibly."""

    def __init__(self, app, delay_s: float) -> None:  # type: ignore[no-untyped-def]
        self.app, self.delay_s = app, delay_s

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        import asyncio

        if scope["type"] == "http" and scope["path"].endswith("/label"):
            await asyncio.sleep(self.delay_s)
        await self.app(scope, receive, send)


def test_keys_typed_while_saving_are_refused_visibly(sqlite_db: Database, face_shard: Path) -> None:
    """A second label typed while the first is still saving used to vanish silently: now the page says
    that the keys were not used, and the next face arrives with nothing selected."""
    from playwright.sync_api import expect, sync_playwright

    make_project(sqlite_db, face_shard, limit=3, raters_per_item=1, quorum=1, gold_every=0)
    add_users(sqlite_db, ["alice"])
    with LiveServer(SlowLabels(create_app(sqlite_db), 2.0)) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(srv.url + "/login")
            log_in_with_keyboard(page, "alice")
            expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=LOGIN_TIMEOUT_MS)
            first = page.locator("#stage").get_attribute("data-item-id")
            for k in ("2", "q", "Enter"):
                page.keyboard.press(k)
            expect(page.locator("body")).to_have_attribute("data-busy", "1")
            page.keyboard.press("3")  # the second label, typed while the first is saving
            expect(page.locator("#status")).to_have_text(
                f"still saving #{first}: wait for the next face (the key 3 was not used)"
            )
            page.keyboard.press("Enter")
            expect(page.locator("#status")).to_contain_text("(the key Enter was not used)")
            expect(page.locator("#status")).to_contain_text(f"saved #{first}", timeout=10_000)
            expect(page.locator("#stage")).not_to_have_attribute("data-item-id", first)
            expect(page.locator("#expressions button.on")).to_have_count(0)  # nothing carried over
        finally:
            browser.close()
    with sqlite_db.read() as s:
        assert s.execute(select(Label.expression, Label.intensity)).all() == [("happy", "slightly")]


DRAWN = """img => {
  const r = img.getBoundingClientRect();
  const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);  // object-fit: contain
  return {box_w: r.width, box_h: r.height, w: img.naturalWidth * s, h: img.naturalHeight * s,
          top: r.top + (r.height - img.naturalHeight * s) / 2, nat_h: img.naturalHeight};
}"""
LAYOUT = """el => ({scroll_h: document.scrollingElement.scrollHeight, inner_h: window.innerHeight,
  scroll_w: document.scrollingElement.scrollWidth, inner_w: window.innerWidth,
  stage: document.getElementById('stage').getBoundingClientRect().toJSON(),
  guide: document.getElementById('guidelines').getBoundingClientRect().toJSON(),
  summary: document.querySelector('#guidelines-box summary').getBoundingClientRect().toJSON()})"""


@pytest.mark.parametrize("size", [(1024, 640), (1280, 800), (1920, 1080)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_faces_fit_the_viewport(
    sqlite_db: Database, face_shard: Path, pair_shard: Path, shots: Path, size: tuple[int, int]
) -> None:
    """The sizing rule at 1024x640, 1280x800 and 1920x1080: the 176x144 faces are scaled up to the stage
    (no fixed 342x280), a pair's target is drawn at least as large as its source, the instruction is hidden
    (expression labelling), and the guidelines are on screen without scrolling the page."""
    from playwright.sync_api import expect, sync_playwright

    make_project(sqlite_db, pair_shard, name="pairs", gold_every=0, raters_per_item=1, quorum=1)
    make_project(sqlite_db, face_shard, name="faces", limit=2, gold_every=0, raters_per_item=1, quorum=1)
    add_users(sqlite_db, ["alice"])
    w, h = size
    with LiveServer(create_app(sqlite_db)) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": w, "height": h})
            page.goto(srv.url + "/login")
            log_in_with_keyboard(page, "alice")
            expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=LOGIN_TIMEOUT_MS)
            imgs = page.locator("#images img")
            expect(imgs).to_have_count(2)
            for i in range(2):
                wait_loaded(imgs.nth(i))
            src, tgt = (page.locator(f"#images .face.{r} img").evaluate(DRAWN) for r in ("src", "tgt"))
            lay = page.locator("body").evaluate(LAYOUT)
            page.screenshot(path=str(shots / f"labelling-pair-{w}x{h}.png"))
            # the page itself does not scroll; the guidelines are on screen
            assert lay["scroll_h"] <= lay["inner_h"] + 1 and lay["scroll_w"] <= lay["inner_w"] + 1, lay
            assert lay["summary"]["bottom"] <= h and lay["guide"]["top"] < h - 40, lay
            expect(page.locator("#guidelines")).to_be_visible()
            expect(page.locator("#guidelines")).to_be_in_viewport()
            clipped = page.locator("#panel button").evaluate_all(
                "bs => bs.filter(b => b.scrollWidth > b.clientWidth + 1 || b.getBoundingClientRect().right > "
                "window.innerWidth).map(b => b.textContent)"
            )
            assert clipped == [], clipped  # every key and label readable: nothing cut off
            # the instruction ("Make the person smile slightly.") is not shown for expression labelling
            expect(page.locator("#instruction")).to_be_hidden()
            assert "smile" not in page.locator("#stage").inner_text()
            # the target is drawn at least as large as the source, and both are scaled up to the stage
            assert tgt["w"] >= src["w"] - 0.5 and tgt["h"] >= src["h"] - 0.5, (src, tgt)
            stage_w = lay["stage"]["width"]
            assert tgt["w"] >= 0.5 * (stage_w - 40), (tgt, stage_w)  # the larger share of the stage
            assert tgt["h"] > 2 * tgt["nat_h"] if w >= 1920 else tgt["h"] > 1.5 * tgt["nat_h"], tgt
            # a single face: as large as the stage allows (its box is the stage, less the padding)
            page.goto(srv.url + "/label?project=2")
            expect(page.locator("body")).to_have_attribute("data-ready", "1")
            img = page.locator("#images img")
            expect(img).to_have_count(1)
            wait_loaded(img)
            face = img.evaluate(DRAWN)
            lay = page.locator("body").evaluate(LAYOUT)
            page.screenshot(path=str(shots / f"labelling-face-{w}x{h}.png"))
            fills_w = face["w"] >= lay["stage"]["width"] - 40
            fills_h = face["h"] >= lay["stage"]["height"] - 40
            assert fills_w or fills_h, (face, lay["stage"])
            assert lay["scroll_h"] <= lay["inner_h"] + 1
        finally:
            browser.close()
    assert (shots / f"labelling-pair-{w}x{h}.png").stat().st_size > 10_000


def test_instruction_shown_when_the_project_asks(sqlite_db: Database, pair_shard: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    project = make_project(sqlite_db, pair_shard, gold_every=0, raters_per_item=1, quorum=1)
    sqlite_db.transact(lambda s: setattr(s.get(type(project), project.id), "show_instruction", True))
    add_users(sqlite_db, ["alice"])
    with LiveServer(create_app(sqlite_db)) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(srv.url + "/login")
            log_in_with_keyboard(page, "alice")
            expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=LOGIN_TIMEOUT_MS)
            expect(page.locator("#instruction")).to_have_text("instruction: Make the person smile slightly.")
            expect(page.locator("#instruction")).to_be_in_viewport()
        finally:
            browser.close()
