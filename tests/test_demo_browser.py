"""The Gradio demo in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
selenium) opens the page and works every control as a person would: on the Sample tab the number of images, the
seed, the sampler and the steps, then the button, waiting for the progress to end; the chain of Fig. 6, the
interpolation of Fig. 8 and the model's facts on their tabs. What the page shows is compared pixel for pixel with
what the core pipeline gives for the values typed. A refused input is a message in the page and the app keeps
serving.

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
SEED = "#seed input[type=number]"
SAMPLER = "#sampler input[role=combobox]"
STEPS = "#steps input[type=number]"
STEPS_RANGE = "#steps input[type=range]"
BUTTON = "#sample-button"
GRID = "#sample-grid"
GALLERY_IMG = "#sample-gallery img"
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


def _open_tab(driver, name: str) -> None:
    tab = next(e for e in driver.find_elements(By.CSS_SELECTOR, "[role=tab]") if e.text == name)
    tab.click()
    WebDriverWait(driver, TIMEOUT).until(lambda d: tab.get_attribute("aria-selected") == "true")


def _set(driver, selector: str, value: float) -> None:
    """Type `value` into an input as a user would (then Tab away), and check the page kept it; for a Slider (an
    elem_id whose block holds a range too), that its range moved with the number box: the component's value, not
    only the box's text, is `value`."""
    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.clear()
    box.send_keys(str(value), Keys.TAB)
    assert box.get_property("value") == str(value)
    block = selector.split()[0]
    for slider in driver.find_elements(By.CSS_SELECTOR, f"{block} input[type=range]"):
        assert float(slider.get_property("value")) == value


def _choose(driver, selector: str, option: str) -> None:
    """Open a Gradio Dropdown and click the option labelled `option`; check the box shows it."""
    box = driver.find_element(By.CSS_SELECTOR, selector)
    box.click()
    WebDriverWait(driver, TIMEOUT).until(
        lambda d: [
            e for e in d.find_elements(By.CSS_SELECTOR, "[role=option]") if e.get_attribute("aria-label") == option
        ]
    )[0].click()
    WebDriverWait(driver, TIMEOUT).until(lambda d: box.get_property("value") == option)


def _sample(driver, num_images: int, steps: int | None = None) -> None:
    _set(driver, NUM_IMAGES, num_images)
    if steps is not None:
        _set(driver, STEPS, steps)
        assert driver.find_element(By.CSS_SELECTOR, STEPS_RANGE).get_property("value") == str(steps)
    driver.find_element(By.CSS_SELECTOR, BUTTON).click()


def _image_src(driver, block: str = GRID) -> str | None:
    images = driver.find_elements(By.CSS_SELECTOR, f"{block} img")
    return (images[0].get_attribute("src") or None) if images else None


def _wait_for_image(driver, block: str = GRID, previous: str | None = None) -> str:
    """The src of the image an Image block shows once the request has ended: Gradio's progress overlay (its
    status tracker, class `hide` when idle) hidden, a new image shown."""

    def done(d):
        try:
            status = d.find_element(By.CSS_SELECTOR, f"{block} [data-testid=status-tracker]")
            idle = "hide" in status.get_attribute("class").split()
            src = _image_src(d, block)
        except StaleElementReferenceException:  # Gradio re-rendered the block meanwhile
            return False
        if d.find_elements(By.CSS_SELECTOR, ERROR_TOAST):
            raise AssertionError("the page shows an error: " + d.find_element(By.CSS_SELECTOR, ERROR_TOAST).text)
        return src if idle and src and src != previous else False

    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.2).until(done)


def _shown(driver, block: str) -> np.ndarray:
    """The image an Image block shows, as an RGB array, once its request has ended."""
    return _rgb(_fetch(_wait_for_image(driver, block)))


def _rgb(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _fetch(src: str) -> PIL.Image.Image:
    if src.startswith("data:"):
        data = base64.b64decode(src.split(",", 1)[1])
    else:
        assert src.startswith("http://127.0.0.1:"), src  # a file the app serves
        with urllib.request.urlopen(src, timeout=30) as response:
            data = response.read()
    image = PIL.Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG", "downloadable as PNG, lossless"
    return image


def _repeated(image: np.ndarray, factor: int) -> np.ndarray:
    """`image` with each pixel a `factor` x `factor` block (the page's nearest-neighbour enlargement)."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


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
    return _repeated(grid, factor)


def _pipeline_images(
    folder: Path, num_images: int, steps: int, seed: int = 0, sampler: str = "ddpm"
) -> list[np.ndarray]:
    """What the pipeline gives for the Sample tab's values (its defaults: seed 0, the DDPM sampler), as RGB arrays."""
    pipe = DDPMPipeline.from_pretrained(folder)
    pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(pipe.unet.device).manual_seed(seed)
    return [_rgb(image) for image in pipe(batch_size=num_images, generator=generator, num_inference_steps=steps).images]


def _paper_pipeline(folder: Path) -> DDPMPipeline:
    """The model on the paper's chain, as the chain and interpolation tabs run it."""
    pipe = DDPMPipeline.from_pretrained(folder)
    pipe = DDPMPipeline(pipe.unet, PaperDDPMScheduler.from_config(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _cell_scale(pipe: DDPMPipeline) -> int:
    """The tabs' figures enlarge each image to cells of at least 64 pixels."""
    return math.ceil(64 / pipe.unet.config.sample_size)


def test_sample_in_the_browser_shows_the_grid(driver, url, model_folder):
    if os.environ.get("DDPM_HF_DEMO_MODEL"):  # the README's screenshot: a trained model, the app's default steps
        num_images, steps = 16, 50
    else:
        num_images, steps = 4, 10
    _open(driver, url)
    started = time.monotonic()
    _sample(driver, num_images, steps)
    src = _wait_for_image(driver)
    print(f"sampled {num_images} images over {steps} steps in the page in {time.monotonic() - started:.1f} s")
    shown = _rgb(_fetch(src))

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
    assert "Error" not in driver.find_element(By.CSS_SELECTOR, f"{GRID} [data-testid=status-tracker]").text

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
    assert _image_src(driver) is None  # nothing was sampled

    for close in driver.find_elements(By.CSS_SELECTOR, "[data-testid=toast-close]"):
        with contextlib.suppress(StaleElementReferenceException):  # unless it has just timed out
            close.click()
    WebDriverWait(driver, TIMEOUT).until(lambda d: not d.find_elements(By.CSS_SELECTOR, ERROR_TOAST))
    _sample(driver, 1, 2)
    shown = _rgb(_fetch(_wait_for_image(driver)))
    np.testing.assert_array_equal(shown, _expected_grid(_pipeline_images(model_folder, 1, 2)))


def test_the_seed_and_the_sampler_reach_the_pipeline_and_each_image_is_shown(driver, url, model_folder):
    _open(driver, url)
    _set(driver, SEED, 3)
    _choose(driver, SAMPLER, demo_module.SAMPLER_NAMES["ddim"])
    _sample(driver, 2, 5)
    grid = _rgb(_fetch(_wait_for_image(driver)))
    expected = _pipeline_images(model_folder, 2, 5, seed=3, sampler="ddim")
    np.testing.assert_array_equal(grid, _expected_grid(expected))
    assert not np.array_equal(grid, _expected_grid(_pipeline_images(model_folder, 2, 5))), "seed 0 and DDPM differ"

    gallery = WebDriverWait(driver, TIMEOUT).until(lambda d: d.find_elements(By.CSS_SELECTOR, GALLERY_IMG))
    singles = [_rgb(_fetch(image.get_attribute("src"))) for image in gallery]
    assert len(singles) == 2
    for single, reference in zip(singles, expected, strict=True):
        factor = single.shape[1] // reference.shape[1]
        assert factor * reference.shape[1] >= 128, "each image at least half the grid's width"
        np.testing.assert_array_equal(single, _repeated(reference, factor))


def _run_tab(driver, url, tab: str, values: dict[str, float], button: str, outputs: tuple[str, ...]) -> list:
    """Open `tab`, type each value into the number box of its elem_id, click `button` and return the images of the
    `outputs` blocks once shown."""
    _open(driver, url)
    _open_tab(driver, tab)
    for elem_id, value in values.items():
        _set(driver, f"#{elem_id} input[type=number]", value)
    driver.find_element(By.CSS_SELECTOR, f"#{button}").click()
    return [_shown(driver, f"#{output}") for output in outputs]


def test_the_chain_tab_shows_x_t_and_the_x0_predictions_of_fig_6(driver, url, model_folder):
    rows, seed, columns, steps = 2, 1, 3, 6
    values = {"chain-rows": rows, "chain-seed": seed, "chain-columns": columns, "chain-steps": steps}
    states, predictions = _run_tab(
        driver, url, "From noise (Fig. 6)", values, "chain-button", ("chain-states", "chain-predictions")
    )

    pipe = _paper_pipeline(model_folder)
    for shown, kind in ((states, "x_t"), (predictions, "x0")):
        expected, timesteps = pipe.progressive_grid(
            rows,
            torch.Generator().manual_seed(seed),
            num_columns=columns,
            kind=kind,
            num_inference_steps=steps,
            scale=_cell_scale(pipe),
            labels=True,
        )
        assert len(timesteps) == columns
        np.testing.assert_array_equal(shown, _rgb(expected))
    assert not np.array_equal(states, predictions)


def test_the_interpolation_tab_mixes_two_seeds_at_t_as_fig_8(driver, url, model_folder):
    seed_a, seed_b, t, weight, steps = 2, 5, 7, 0.3, 4
    values = {"seed-a": seed_a, "seed-b": seed_b, "mix-t": t, "lambda": weight, "mix-steps": steps}
    strip, chosen = _run_tab(driver, url, "Interpolation (Fig. 8)", values, "mix-button", ("mix-strip", "mix-chosen"))

    pipe = _paper_pipeline(model_folder)
    a, b = (
        pipe(batch_size=1, generator=torch.Generator().manual_seed(s), num_inference_steps=steps).images[0]
        for s in (seed_a, seed_b)
    )
    mixed = pipe.interpolate(a, b, t, 11, torch.Generator().manual_seed(seed_a))
    np.testing.assert_allclose(mixed.lambdas, np.linspace(0, 1, 11))
    at_weight = _rgb(mixed.images[3])  # lambda = 0.3
    factor = chosen.shape[1] // at_weight.shape[1]
    np.testing.assert_array_equal(chosen, _repeated(at_weight, factor))
    cell = _cell_scale(pipe) * at_weight.shape[1]
    assert strip.shape[1] >= 13 * cell, "A, the 11 weights and B, side by side"
    assert not np.array_equal(chosen, _repeated(_rgb(mixed.images[0]), factor))


def test_the_model_tab_lists_what_the_model_is(driver, url, model_folder):
    _open(driver, url)
    _open_tab(driver, "The model")
    rows = WebDriverWait(driver, TIMEOUT).until(
        lambda d: [
            r.get_attribute("innerText").split("\n", 1) for r in d.find_elements(By.CSS_SELECTOR, "#facts [role=row]")
        ][1:]
    )
    facts = {fact.strip(): value.strip() for fact, value in rows}
    unet = DDPMPipeline.from_pretrained(model_folder).unet
    size = unet.config.sample_size
    assert facts["images"] == f"{size}x{size}, {'RGB' if unet.config.in_channels == 3 else 'grayscale'}"
    assert facts["parameters"] == f"{sum(p.numel() for p in unet.parameters()):,}"
    T_model = DDPMPipeline.from_pretrained(model_folder).scheduler.config.num_train_timesteps
    assert facts["diffusion"].startswith(f"T = {T_model}, ")
