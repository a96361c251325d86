"""The Gradio demo in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
selenium) opens the page, sets the number of images and the steps, clicks Sample, waits for the progress to end
and checks the grid shown; a refused input is a message in the page and the app keeps serving.

Skipped where Chromium or its driver is missing (`.ci/run` installs both). Two environment variables, for the
README's screenshot only: `DDPM_HF_SCREENSHOT=1` saves the page after the sample to model_cards/figures/demo.png
(unset, nothing tracked is written), and `DDPM_HF_DEMO_MODEL=<pipeline folder>` serves that model (16 images over
50 steps) instead of a tiny untrained one (4 images, 10 steps).
"""

import base64
import contextlib
import io
import math
import os
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.ports import serving_demo

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.core.samplers import make_scheduler

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["SE_AVOID_STATS"] = "true"  # selenium-manager sends no usage statistics
pytest.importorskip("gradio")
demo_module = pytest.importorskip("ddpm_hf.tools.demo")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="no headless Chromium: needs `chromium` and `chromedriver` on PATH "
        "(Debian: apt-get install chromium chromium-driver; .ci/run installs them)",
    ),
]

T = 20  # the tiny pipeline's chain
TIMEOUT = 120  # seconds for a page load or a request
SCREENSHOT = Path(__file__).resolve().parents[1] / "model_cards" / "figures" / "demo.png"
REFUSED = "Number of images must be a whole number from 1 to 64"

# The Sample tab's controls, by the app's elem_ids; Gradio renders an <input> in each block (the Slider two: a
# number box and a range, bound to one value).
NUM_IMAGES = "#num-images input[type=number]"
STEPS = "#steps input[type=number]"
STEPS_RANGE = "#steps input[type=range]"
BUTTON = "#sample-button"
GRID_IMG = "#sample-grid img"
GRID_STATUS = "#sample-grid [data-testid=status-tracker]"  # Gradio's progress overlay; class `hide` when idle
ERROR_TOAST = "[data-testid=toast-body].error"
ERROR_TEXT = "[data-testid=toast-body].error [data-testid=toast-text]"


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    if os.environ.get("DDPM_HF_DEMO_MODEL"):
        return Path(os.environ["DDPM_HF_DEMO_MODEL"])
    folder = tmp_path_factory.mktemp("demo-browser") / "tiny-ddpm"
    torch.manual_seed(0)
    DDPMPipeline(build_unet("tiny"), PaperDDPMScheduler(num_train_timesteps=T)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def url(model_folder):
    with serving_demo(model_folder) as served_at:
        yield served_at


@pytest.fixture(scope="module")
def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path given too, selenium-manager downloads nothing
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1300"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield browser
    browser.quit()


def _open(driver, url) -> None:
    driver.get(url)
    WebDriverWait(driver, TIMEOUT).until(lambda d: d.find_elements(By.CSS_SELECTOR, BUTTON))


def _set(driver, selector: str, value: int) -> None:
    """Type `value` into an input as a user would (then Tab away), and check the page kept it."""
    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.clear()
    box.send_keys(str(value), Keys.TAB)
    assert box.get_property("value") == str(value)


def _sample(driver, num_images: int, steps: int | None = None) -> None:
    _set(driver, NUM_IMAGES, num_images)
    if steps is not None:
        _set(driver, STEPS, steps)
        # The Slider's range moved with its number box: the component's value, not only the box's text, is `steps`.
        assert driver.find_element(By.CSS_SELECTOR, STEPS_RANGE).get_property("value") == str(steps)
    driver.find_element(By.CSS_SELECTOR, BUTTON).click()


def _grid_src(driver) -> str | None:
    images = driver.find_elements(By.CSS_SELECTOR, GRID_IMG)
    return (images[0].get_attribute("src") or None) if images else None


def _wait_for_grid(driver, previous: str | None = None) -> str:
    """The src of the grid shown once the request has ended: the progress overlay hidden, a new image shown."""

    def done(d):
        try:
            idle = "hide" in d.find_element(By.CSS_SELECTOR, GRID_STATUS).get_attribute("class").split()
            src = _grid_src(d)
        except StaleElementReferenceException:  # Gradio re-rendered the block meanwhile
            return False
        if d.find_elements(By.CSS_SELECTOR, ERROR_TOAST):
            raise AssertionError("the page shows an error: " + d.find_element(By.CSS_SELECTOR, ERROR_TOAST).text)
        return src if idle and src and src != previous else False

    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.2).until(done)


def _fetch(src: str) -> PIL.Image.Image:
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        assert src.startswith("http://127.0.0.1:"), src  # a file the app serves
        with urllib.request.urlopen(src, timeout=30) as response:
            data = response.read()
    image = PIL.Image.open(io.BytesIO(data))
    image.load()
    return image


def _expected_grid(images: list[np.ndarray], min_width: int = 256, padding: int = 2) -> np.ndarray:
    """The grid the page should show, from its definition: ceil(sqrt(n)) columns of the images on black with
    `padding` pixels around each, every pixel then repeated the smallest whole number of times that makes it at
    least `min_width` wide."""
    n, (height, width) = len(images), images[0].shape[:2]
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.zeros((nrows * (height + padding) + padding, ncols * (width + padding) + padding, 3), np.uint8)
    for i, image in enumerate(images):
        row, col = divmod(i, ncols)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[top : top + height, left : left + width] = image
    factor = math.ceil(min_width / grid.shape[1])
    return grid.repeat(factor, axis=0).repeat(factor, axis=1)


def _pipeline_images(folder: Path, num_images: int, steps: int) -> list[np.ndarray]:
    """What the page's defaults (seed 0, the DDPM sampler) give for `num_images` over `steps`, as RGB arrays."""
    pipe = DDPMPipeline.from_pretrained(folder)
    pipe.scheduler = make_scheduler("ddpm", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(pipe.unet.device).manual_seed(0)
    images = pipe(batch_size=num_images, generator=generator, num_inference_steps=steps).images
    return [np.asarray(image.convert("RGB")) for image in images]


def test_sample_in_the_browser_shows_the_grid(driver, url, model_folder):
    if os.environ.get("DDPM_HF_DEMO_MODEL"):  # the README's screenshot: a trained model, the app's default steps
        num_images, steps = 16, 50
    else:
        num_images, steps = 4, 10
    _open(driver, url)
    started = time.monotonic()
    _sample(driver, num_images, steps)
    src = _wait_for_grid(driver)
    print(f"sampled {num_images} images over {steps} steps in the page in {time.monotonic() - started:.1f} s")
    shown = np.asarray(_fetch(src).convert("RGB"))

    if not os.environ.get("DDPM_HF_DEMO_MODEL"):
        # 4 images of 8x8: a 2x2 grid of 8-pixel cells with 2 pixels of padding is 22 pixels wide; the smallest
        # whole factor making that at least 256 pixels is 12.
        assert shown.shape[:2] == (264, 264)
    expected = _expected_grid(_pipeline_images(model_folder, num_images, steps))
    assert shown.shape == expected.shape
    # Not blank: the samples are noise-like (tiny model) or digits, with many grey levels, not one colour.
    assert len(np.unique(shown.reshape(-1, 3), axis=0)) > 8
    assert shown.std() > 10
    # The pixels are the pipeline's for what was typed: the page sent those numbers (the tiny default is 20 steps).
    np.testing.assert_array_equal(shown, expected)
    assert not driver.find_elements(By.CSS_SELECTOR, ERROR_TOAST)
    assert "Error" not in driver.find_element(By.CSS_SELECTOR, GRID_STATUS).text

    if os.environ.get("DDPM_HF_SCREENSHOT"):
        driver.execute_script("window.scrollTo(0, 0)")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOT))


def test_a_refused_input_is_a_message_and_the_app_keeps_serving(driver, url, model_folder):
    _open(driver, url)
    _sample(driver, 0)
    message = WebDriverWait(driver, TIMEOUT).until(
        lambda d: next((e.text for e in d.find_elements(By.CSS_SELECTOR, ERROR_TEXT) if REFUSED in e.text), False)
    )
    assert "got 0" in message
    assert _grid_src(driver) is None  # nothing was sampled

    for close in driver.find_elements(By.CSS_SELECTOR, "[data-testid=toast-close]"):
        with contextlib.suppress(StaleElementReferenceException):  # unless it has just timed out
            close.click()
    WebDriverWait(driver, TIMEOUT).until(lambda d: not d.find_elements(By.CSS_SELECTOR, ERROR_TOAST))
    _sample(driver, 1, 2)
    shown = np.asarray(_fetch(_wait_for_grid(driver)).convert("RGB"))
    np.testing.assert_array_equal(shown, _expected_grid(_pipeline_images(model_folder, 1, 2)))
