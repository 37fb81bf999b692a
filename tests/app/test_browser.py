"""The app end to end in a real browser: Debian's headless chromium, driven by Selenium through chromedriver.

Skips only when chromium, chromedriver, selenium or gradio are not installed (.ci/run installs them).
"""

import io
import shutil
import urllib.request

import numpy as np
import pytest
import trimesh
from PIL import Image

gradio = pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from patchalign3d.app import AppSegmenter  # noqa: E402
from patchalign3d.app.main import RANDOM_MODEL_NOTE, random_demo_model  # noqa: E402
from patchalign3d.app.ui import build_app, launch  # noqa: E402
from patchalign3d.examples import example_path  # noqa: E402

# The flags the network-less machine needs, and software WebGL (SwiftShader) for the 3D viewer.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                  "--window-size=1280,1000"]


@pytest.fixture
def served_app():
    app = build_app(AppSegmenter(random_demo_model(), note=RANDOM_MODEL_NOTE))
    launch(app, port=None, block=False)
    yield app.local_url
    app.close()


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def coloured_fraction(png: bytes) -> float:
    """Fraction of the picture's pixels in strong colour: part colours, not the white background or grey labels."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float((rgb.max(-1) - rgb.min(-1) > 60).mean())


def test_upload_name_segment_view_and_download(served_app, browser, tmp_path):
    wait = WebDriverWait(browser, 120, poll_frequency=0.5)
    browser.get(served_app)
    upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#shape input[type=file]")))
    upload.send_keys(str(example_path("chair")))
    wait.until(lambda d: "chair.ply" in d.find_element(By.ID, "shape").text.replace("\n", ""))  # uploaded
    names = browser.find_element(By.CSS_SELECTOR, "#part-names textarea, #part-names input")
    names.send_keys("seat, back, leg")
    browser.find_element(By.ID, "run").click()

    # the download list fills when the request is done
    link = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#downloads a[href*='chair_parts.glb']")))
    glb = urllib.request.urlopen(link.get_attribute("href"), timeout=30).read()
    assert glb[:4] == b"glTF"
    scene = trimesh.load(io.BytesIO(glb), file_type="glb", process=False)
    assert set(scene.geometry) <= {"seat", "back", "leg"}
    faces = len(trimesh.load(example_path("chair")).faces)
    assert sum(len(g.faces) for g in scene.geometry.values()) == faces
    assert "chair_parts.json" in browser.find_element(By.ID, "downloads").text.replace("\n", "")
    assert f"chair: {faces} faces" in browser.find_element(By.ID, "summary").text

    # the 3D viewer draws the parts (WebGL through SwiftShader): wait until its canvas is not blank
    viewer = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#viewer canvas")))
    wait.until(lambda _: coloured_fraction(viewer.screenshot_as_png) > 0.05)
    shot = tmp_path / "viewer.png"
    shot.write_bytes(viewer.screenshot_as_png)
    browser.save_screenshot(str(tmp_path / "page.png"))
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    assert coloured_fraction(shot.read_bytes()) > 0.05
    assert len({tuple(c) for c in pixels}) > 20  # shaded faces, not a flat fill
