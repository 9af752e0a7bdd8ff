"""The page at / (service/ui.py, service/static): served with its CSP, open with --api-keys, off
with --no-ui, shipped in the package; and driven in headless Chromium against a real server.

The browser test needs Debian's chromium and chromium-driver (``scripts/install-browser.sh``,
which ``make test`` runs) and selenium (the dev extra); it skips, saying which is missing,
where they are absent. ``DAT_UI_SCREENSHOT=docs/ui.png`` makes it write the README's
screenshot there (else into its temporary folder, so a test run leaves the tree alone).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from models.registry import get_spec
from models.sampling import bilinear_grid_sample
from models.transforms import Preprocessing
from service import Settings, create_app, ui
from tests.helpers.app import serve, settings
from tests.helpers.images import sample_png
from tests.helpers.paths import REPO
from tests.helpers.server import start, wait_ready

pytestmark = pytest.mark.anyio

KEY = "ui-test-key-7f3a"
STATIC = REPO / "service" / "static"
SAMPLES = re.findall(r'data-name="([^"]+)"', (STATIC / "index.html").read_text())


# -- served, open, off ----------------------------------------------------------------------


async def test_the_page_and_its_files_are_served_with_a_csp_that_allows_only_themselves(backend):
    async with serve(create_app(settings(), backend=backend)) as client:
        page = await client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
        assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'"
        assert csp["img-src"] == "'self' blob:" and csp["connect-src"] == "'self'"
        assert "unsafe" not in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"

        html = page.text
        # no inline script or style (the CSP would block them), nothing from another host
        assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="ui/ui.js">']
        assert "<style" not in html and " style=" not in html and "javascript:" not in html
        assert not re.search(r"(src|href)=\"(https?:)?//", html)
        referenced = re.findall(r"(?:src|href)=\"(ui/[^\"]+)\"", html)
        assert {"ui/ui.js", "ui/ui.css", "ui/samples/digit_3.png", "ui/samples/scene_typed.png"} <= set(
            referenced
        )
        types = {
            ".js": "text/javascript",
            ".css": "text/css",
            ".png": "image/png",
            ".jpg": "image/jpeg",
            ".svg": "image/svg+xml",
        }
        for path in referenced:
            response = await client.get("/" + path)
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith(types[Path(path).suffix]), path
            assert response.content == (STATIC / path.removeprefix("ui/")).read_bytes()


async def test_only_the_page_s_own_files_are_served(backend):
    async with serve(create_app(settings(), backend=backend)) as client:
        for path in (
            "/ui/nope.js",
            "/ui/../service/app.py",
            "/ui/%2e%2e/ui.py",
            "/ui/..%2fui.py",
            "/ui/index.html",
            "/ui/",
            "/ui/samples/README.md",
        ):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["type"] == "not_found"


async def test_with_api_keys_the_page_stays_open_and_the_api_does_not(backend):
    async with serve(create_app(settings(api_keys=KEY), backend=backend)) as client:
        for path in ("/", "/ui/ui.js", "/ui/ui.css", "/ui/favicon.svg", "/ui/samples/digit_3.png"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/models")).status_code == 401
        assert (await client.get("/ui/nope.js")).status_code == 401  # open paths are exact
        assert (await client.get("/models", headers={"Authorization": f"Bearer {KEY}"})).status_code == 200


async def test_no_ui_answers_404_and_opens_nothing(backend, monkeypatch):
    assert Settings().ui is True
    assert Settings(_cli_parse_args=["--no-ui"]).ui is False
    monkeypatch.setenv("DAT_UI", "false")
    assert Settings().ui is False
    async with serve(create_app(settings(ui=False, api_keys=KEY), backend=backend)) as client:
        assert (await client.get("/", headers={"Authorization": f"Bearer {KEY}"})).status_code == 404
        assert (await client.get("/ui/ui.js", headers={"Authorization": f"Bearer {KEY}"})).status_code == 404
        assert (await client.get("/")).status_code == 401  # no longer an open path


def test_the_package_ships_the_page_and_its_samples_are_the_repo_s():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "service"
    ]
    files = [p.relative_to(REPO / "service").as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert "static/index.html" in files and "static/ui.js" in files
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), f"{name} not in package-data"
    for name in ui.FILES:
        if name.startswith("samples/"):
            assert (STATIC / name).read_bytes() == (REPO / name).read_bytes(), (
                f"{name} differs from the repo's"
            )


# -- in a browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """Chromium's and chromedriver's paths, or a skip that says what is missing (before any
    server starts)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (the dev extra: pip install -e '.[dev]')")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip(
            "no Chromium or chromedriver on PATH: run scripts/install-browser.sh (make test does; "
            "it needs apt-get and root or password-less sudo)"
        )
    return binary, driver


@pytest.fixture
def browser(chromium):
    """Headless Chromium through Selenium, with its console and network logs."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    binary, driver = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,820",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # the driver's own path: Selenium Manager would otherwise try to download one
    chrome = webdriver.Chrome(options=options, service=DriverService(executable_path=driver))
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def keyed_server(chromium):
    """``python -m service`` with its default models on torch (the backend that gives points),
    with an API key, on the loopback."""
    process, url = start("--backend", "torch", "--no-warmup", env={"DAT_API_KEYS": KEY})
    try:
        wait_ready(process, url)
        # warm (no --warmup, for a quick start): the screenshot shows a warm server's timing
        httpx.post(
            f"{url}/classify",
            files={"file": ("warm.png", sample_png(0), "image/png")},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
        ).raise_for_status()
        yield url
    finally:
        process.kill()
        process.wait()


def _expected_position(
    yx: tuple[float, float], stage: int, pre: Preprocessing, width: int, height: int
) -> tuple[float, float]:
    """Where a D block's normalised (y, x) falls on the uploaded picture, from the model itself:
    grid_sample (align_corners=True) over the stage's feature map, each cell at its centre in
    input pixels; then back through the square resize and centre crop."""
    side = get_spec("dat_digits").config.stage_size(stage)
    cell = pre.input_size / side
    # a map whose value is each cell's centre, sampled as the model samples its features
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) * cell
    coords = torch.stack([centres[:, None].expand(side, side), centres[None, :].expand(side, side)])
    y, x = yx
    grid = torch.tensor([[[[x, y]]]], dtype=torch.float32)
    if -1 <= x <= 1 and -1 <= y <= 1:
        v, u = bilinear_grid_sample(coords[None], grid)[0, :, 0, 0].tolist()
    else:  # zero padding outside: extend the same line
        v, u = (cell / 2 + (t + 1) / 2 * (pre.input_size - cell) for t in (y, x))
    crop = int(round((pre.resize_size - pre.input_size) / 2.0))
    return (u + crop) * width / pre.resize_size, (v + crop) * height / pre.resize_size


def _severe(logs: list[dict]) -> list[str]:
    """Script, rendering and CSP errors (not the 401 and 415 answers the test asks for)."""
    return [e["message"] for e in logs if e["level"] == "SEVERE" and e["source"] != "network"]


def _paths_requested(browser, url: str) -> set[str]:
    sent = (json.loads(e["message"])["message"] for e in browser.get_log("performance"))
    urls = {m["params"]["request"]["url"] for m in sent if m["method"] == "Network.requestWillBeSent"}
    assert {u for u in urls if not u.startswith((url, "blob:"))} == set()
    return {urlsplit(u).path for u in urls if u.startswith(url)}


@pytest.mark.slow
def test_the_page_in_chromium_classifies_detects_shows_points_and_errors(keyed_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url = keyed_server
    wait = WebDriverWait(browser, 30)
    css = browser.find_elements
    text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731

    assert httpx.get(f"{url}/").status_code == 200  # reachable without a key
    browser.get(f"{url}/")
    # /models answered 401: the page asks for the key, readably
    wait.until(lambda b: "401 unauthorized" in text("error"))
    assert "API key" in text("error") and browser.find_element(By.ID, "key-box").get_attribute("open")
    key = browser.find_element(By.ID, "api-key")
    key.send_keys(KEY, Keys.ENTER)
    wait.until(lambda b: "dat_digits" in text("card"))
    assert browser.execute_script("return sessionStorage.getItem('dat-serve.api-key')") == KEY
    card = text("card")
    for shown in (
        "sha256:",
        "torch on cpu",
        "fp32",
        "32 x 32",
        "10",
        "up to 16 images per batch",
        "8 images per request",
    ):
        assert shown in card, shown

    # upload a digit: its top-5 with bars, the 3 first
    browser.find_element(By.ID, "file").send_keys(str(REPO / "samples" / "digit_3.png"))
    wait.until(lambda b: len(css(By.CSS_SELECTOR, "#top5 li")) == 5)
    rows = css(By.CSS_SELECTOR, "#top5 li")
    assert rows[0].find_element(By.CSS_SELECTOR, ".label").text == "3"
    widths = [r.find_element(By.CSS_SELECTOR, ".bar span").size["width"] for r in rows]
    assert widths[0] > 0.9 * rows[0].find_element(By.CSS_SELECTOR, ".bar").size["width"] > 10 * widths[1]
    assert css(By.CSS_SELECTOR, "circle.point") == []  # points only when asked

    # where it looked: every point of the block, where the model sampled
    browser.find_element(By.ID, "show-points").click()
    wait.until(lambda b: css(By.CSS_SELECTOR, "circle.point"))
    block = Select(browser.find_element(By.ID, "points-block"))
    assert [o.text for o in block.options] == [
        "stage 2, block 1: 4 x 4 x 2 groups",
        "stage 3, block 1: 2 x 2 x 4 groups",
    ]
    points = css(By.CSS_SELECTOR, "circle.point")
    assert len(points) == 2 * 4 * 4 and len(css(By.CSS_SELECTOR, "rect.reference")) == 4 * 4
    pre = get_spec("dat_digits").preprocessing
    for point in points:
        y, x = map(float, point.get_attribute("data-yx").split(","))
        expected = _expected_position((y, x), 2, pre, 192, 192)
        drawn = float(point.get_attribute("cx")), float(point.get_attribute("cy"))
        assert drawn == pytest.approx(expected, abs=1e-3)
    browser.save_screenshot(os.environ.get("DAT_UI_SCREENSHOT") or str(tmp_path / "ui.png"))
    block.select_by_index(1)
    Select(browser.find_element(By.ID, "points-group")).select_by_value("3")
    wait.until(lambda b: len(css(By.CSS_SELECTOR, "circle.point")) == 2 * 2)
    for point in css(By.CSS_SELECTOR, "circle.point"):
        assert point.get_attribute("data-group") == "3"
        y, x = map(float, point.get_attribute("data-yx").split(","))
        drawn = float(point.get_attribute("cx")), float(point.get_attribute("cy"))
        assert drawn == pytest.approx(_expected_position((y, x), 3, pre, 192, 192), abs=1e-3)

    # a scene: the detector's boxes and labels; the slider filters them
    browser.find_element(By.CSS_SELECTOR, "button.sample[data-name='scene_typed.png']").click()
    wait.until(lambda b: css(By.CSS_SELECTOR, "text.box-label"))
    assert browser.find_element(By.CSS_SELECTOR, "input[name=task][value=detect]").is_selected()
    labels = [e.text for e in css(By.CSS_SELECTOR, "text.box-label")]
    assert sorted(label.split()[0] for label in labels) == ["4", "7", "8", "8"]  # samples/scenes.json
    assert all(float(label.split()[1]) >= 0.5 for label in labels)
    boxes = [
        (float(r.get_attribute("x")), float(r.get_attribute("y"))) for r in css(By.CSS_SELECTOR, "rect.box")
    ]
    assert min(boxes, key=lambda b: b[1]) == pytest.approx((44, 51), abs=3)  # the 7 at (46, 50)
    assert "dat_digits_detector" in text("card") and "no (boxes only)" in text("card")
    # a box-only detector: no mask toggle, and nothing drawn in the masks layer
    assert not browser.find_element(By.ID, "masks-toggle").is_displayed()
    assert css(By.CSS_SELECTOR, "#masks *") == []
    browser.find_element(By.ID, "score").send_keys(Keys.END)  # threshold 1: none left
    wait.until(lambda b: not css(By.CSS_SELECTOR, "rect.box"))
    assert text("score-value") == "1.00" and text("detect-count").startswith("0 of ")

    # what the server refuses, readably: a text file is a 415
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    browser.find_element(By.ID, "file").send_keys(str(notes))
    wait.until(lambda b: "415 unsupported_media_type" in text("error"))
    assert "text/plain" in text("error") and "request id" in text("error")

    assert _severe(browser.get_log("browser")) == []
    # everything it showed came from the public API; the script loaded each of its modules
    assert _paths_requested(browser, url) == {
        "/",
        "/ui/ui.css",
        "/ui/favicon.svg",
        "/models",
        "/classify",
        "/detect",
    } | {f"/ui/samples/{n}" for n in SAMPLES} | {f"/ui/{p.name}" for p in STATIC.glob("*.js")}


@pytest.mark.slow
def test_the_page_maps_points_through_resize_and_centre_crop(keyed_server, browser):
    """The page's mapping against Pillow's own resize and crop: a bright square put at a known
    place in a 500 x 375 picture is found in the 224 crop (of 256) and mapped back."""
    pre = Preprocessing(input_size=224, crop_pct=0.875, interpolation="bilinear")
    width, height, centre = 500, 375, (350.0, 100.0)
    picture = np.zeros((height, width, 3), np.uint8)
    picture[90:110, 340:360] = 255
    crop = np.asarray(pre.resize_and_crop(Image.fromarray(picture)), np.float64)[..., 0]
    rows, cols = np.indices(crop.shape)
    u = (crop * (cols + 0.5)).sum() / crop.sum()  # centroid, in input pixels from the left edge
    v = (crop * (rows + 0.5)).sum() / crop.sum()

    browser.get(f"{keyed_server}/")  # the page's functions, exposed on window.datUi
    mapped = browser.execute_script(
        "const [pre, w, h, y, x] = arguments;"
        "return window.datUi.pointMapper(pre, w, h, pre.input_size, pre.input_size)(y, x);",
        pre.to_dict(),
        width,
        height,
        # normalised so that one feature cell is one input pixel
        (v - 0.5) / (pre.input_size - 1) * 2 - 1,
        (u - 0.5) / (pre.input_size - 1) * 2 - 1,
    )
    assert mapped == pytest.approx(centre, abs=0.5)
    assert browser.execute_script("return window.datUi.roundHalfEven(16.5)") == 16  # as Python's round
