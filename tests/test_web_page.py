"""The web page in headless Chromium: one page load, one image upload, one question, and a screenshot
checked for the box drawn where the answer's grounding says.

Needs Debian's `chromium` and `chromium-driver` (installed by the project's set-up; CI has them).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from omniground.serve import ServeSettings, create_app
from test_serve_support import ScriptedOmniGround, png_bytes, running_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
BOX_RGB = (31, 119, 180)  # first colour of the page's palette (= omniground.viz's tab10)
W, H = 320, 200


@pytest.fixture
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("headless browser test needs Debian packages chromium and chromium-driver (see the set-up script)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--force-device-scale-factor=1", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_ask_and_see_the_box(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = tmp_path / "scene.png"
    image.write_bytes(png_bytes(W, H, color=(235, 235, 235)))
    og = ScriptedOmniGround("the red square [0.250,0.250,0.750,0.750]")
    with running_server(create_app(og, ServeSettings(model_name="tiny"))) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: d.find_element(By.ID, "model").text == "tiny")
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "attached")
        browser.find_element(By.ID, "question").send_keys("where is the red square?")
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-state") in ("done", "error"))
        status = browser.find_element(By.ID, "status").text
        assert status == "answered (1 box, 0 spans)", status
        answer = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].text
        assert "the red square [0.250,0.100,0.750,0.900]" in answer and "[80, 20, 240, 180] px" in answer
        stage = browser.find_element(By.ID, "stage")
        shot = tmp_path / "stage.png"
        stage.screenshot(str(shot))
        browser.save_screenshot(str(tmp_path / "page.png"))

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)  # (h, w, 3), the displayed image
    shown_w, shown_h = pixels.shape[1], pixels.shape[0]
    ys, xs = np.nonzero(np.abs(pixels - BOX_RGB).sum(-1) < 40)
    assert len(xs) > 500, "no box drawn in the box colour"
    # Box in the original 320x200 image: x 25%..75%, y 10%..90% (the padded-square answer mapped back).
    # Its left/right/bottom edges land there; the top carries the phrase label, drawn above the edge.
    tol = 6
    assert abs(xs.min() - 0.25 * shown_w) <= tol and abs(xs.max() - 0.75 * shown_w) <= tol
    assert abs(ys.max() - 0.9 * shown_h) <= tol
    assert ys.min() <= 0.1 * shown_h + tol
    inside = pixels[int(0.5 * shown_h), int(0.5 * shown_w)]
    assert np.abs(inside - (235, 235, 235)).sum() < 10  # outline only: the picture stays visible
