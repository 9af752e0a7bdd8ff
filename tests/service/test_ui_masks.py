"""The page at / with an instance segmentation detector (the mmdet Mask R-CNN fixture), in
headless Chromium: each detection's polygons drawn in its box's colour, a toggle that hides
them, and boxes alone when the server refuses the masks (max_mask_pixels). Needs what
test_ui.py's browser test needs, and the fixtures beside the repo."""

from __future__ import annotations

import io
import os

import httpx
import pytest
from PIL import Image

from tests.helpers.paths import FIXTURES, official_fixture
from tests.helpers.server import start, wait_ready
from tests.service.test_ui import _severe, browser, chromium  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

PHOTO = FIXTURES / "chelsea.jpg"  # 451 x 300
MAX_MASK_PIXELS = 30_000_000  # chelsea's ~100 detections fit; three times its size does not


@pytest.fixture(scope="module")
def mask_server(chromium):  # noqa: F811
    reference = official_fixture("mmdet_mask_rcnn_mini")
    process, url = start(
        "--backend",
        "torch",
        "--no-warmup",
        "--detector",
        str(FIXTURES / "mmdet_mask_rcnn_mini" / "config.py"),
        "--detector-checkpoint",
        str(reference["checkpoint"]),
        env={"DAT_MAX_MASK_PIXELS": str(MAX_MASK_PIXELS)},
    )
    try:
        wait_ready(process, url)
        yield url
    finally:
        process.kill()
        process.wait()


def _points(attribute: str) -> list[float]:
    return [float(v) for pair in attribute.split() for v in pair.split(",")]


def test_the_page_draws_each_detection_s_mask_in_its_box_s_colour(mask_server, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = mask_server
    wait = WebDriverWait(browser, 90)  # the fixture's detector takes seconds on a busy CPU
    css = browser.find_elements
    text = lambda element_id: browser.find_element(By.ID, element_id).text  # noqa: E731

    browser.get(f"{url}/")
    wait.until(lambda b: browser.find_element(By.CSS_SELECTOR, "input[name=task][value=detect]").is_enabled())
    browser.find_element(By.CSS_SELECTOR, "input[name=task][value=detect]").click()
    wait.until(lambda b: "instance_segmentation" in text("card"))
    assert "yes (?masks=polygon)" in text("card")
    toggle = browser.find_element(By.ID, "show-masks")
    assert browser.find_element(By.ID, "masks-toggle").is_displayed() and toggle.is_selected()

    browser.find_element(By.ID, "file").send_keys(str(PHOTO))
    wait.until(lambda b: css(By.CSS_SELECTOR, "rect.box"))
    # what the API answers for the same picture, at the slider's 0.5
    response = httpx.post(
        f"{url}/detect",
        params={"score_threshold": 0.5, "masks": "polygon"},
        files={"file": (PHOTO.name, PHOTO.read_bytes(), "image/jpeg")},
        timeout=120,
    )
    response.raise_for_status()
    detections = response.json()["results"][0]["detections"]
    want = [polygon for d in detections for polygon in d["segmentation"]]
    assert len(detections) > 3 and len(want) >= len(detections)
    drawn = css(By.CSS_SELECTOR, "#masks polygon.mask")
    assert len(drawn) == len(want)
    for polygon, expected in zip(drawn, want):
        assert _points(polygon.get_attribute("points")) == pytest.approx(expected)
    # filled, see-through, in the colour of its detection's box
    strokes = [r.get_attribute("stroke") for r in css(By.CSS_SELECTOR, "rect.box")]
    fills = [p.get_attribute("fill") for p in drawn]
    per_detection = [strokes[i] for i, d in enumerate(detections) for _ in d["segmentation"]]
    assert fills == per_detection
    assert {p.value_of_css_property("fill-opacity") for p in drawn} == {"0.4"}
    browser.save_screenshot(os.environ.get("DAT_UI_MASKS_SCREENSHOT") or str(tmp_path / "masks.png"))

    # the toggle hides them without asking again, and shows them again
    toggle.click()
    wait.until(lambda b: not css(By.CSS_SELECTOR, "polygon.mask"))
    assert len(css(By.CSS_SELECTOR, "rect.box")) == len(detections)
    toggle.click()
    wait.until(lambda b: len(css(By.CSS_SELECTOR, "polygon.mask")) == len(want))

    # a picture whose masks pass the server's max_mask_pixels: its boxes, and why no masks
    big = tmp_path / "chelsea_x3.png"
    with Image.open(PHOTO) as photo:
        buffer = io.BytesIO()
        photo.resize((photo.width * 3, photo.height * 3)).save(buffer, "PNG")
    big.write_bytes(buffer.getvalue())
    browser.find_element(By.ID, "file").send_keys(str(big))
    wait.until(lambda b: "max_mask_pixels" in text("masks-note"))
    wait.until(lambda b: css(By.CSS_SELECTOR, "rect.box"))
    assert css(By.CSS_SELECTOR, "polygon.mask") == []
    assert browser.find_element(By.ID, "error").is_displayed() is False
    assert _severe(browser.get_log("browser")) == []
