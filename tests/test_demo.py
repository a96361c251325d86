"""The Gradio demo through its API, as gradio_client uses it: sampling, the chain, interpolation, the model's
facts, refused inputs, parallel users, a diffusers-layout model, and load errors before the server starts."""

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDPMPipeline as StockDDPMPipeline
from diffusers import DDPMScheduler
from helpers.ports import serving_demo

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.core.images import enlarged, make_grid
from ddpm_hf.core.samplers import make_scheduler

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
gradio_client = pytest.importorskip("gradio_client")
demo_module = pytest.importorskip("ddpm_hf.tools.demo")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train_scripts"))
import demo_ddpm  # noqa: E402

T = 20
RUN = {
    "run": {"global_step": 1200, "dataset_id": "sklearn-digits"},
    "results": [
        {
            "metric": "bits_per_dim",
            "name": "NLL bound, bits/dim (all 20 terms; 64 held-out images)",
            "value": 4.7396,
            "stderr": 0.0489,
            "dataset": "sklearn-digits",
            "split": "held-out",
        }
    ],
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "tiny-ddpm"
    torch.manual_seed(0)
    DDPMPipeline(build_unet("tiny"), PaperDDPMScheduler(num_train_timesteps=T)).save_pretrained(folder)
    (folder / "training_run.json").write_text(json.dumps(RUN))
    return folder


@pytest.fixture(scope="module")
def served(tiny_model):
    with serving_demo(tiny_model) as url:
        yield gradio_client.Client(url, verbose=False)


def _image(path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _rgb(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_sample_gives_the_pipelines_images_as_a_grid_and_singly(served, tiny_model):
    grid, singles = served.predict(4, 3, "ddim", 10, api_name="/sample")
    pipe = DDPMPipeline.from_pretrained(tiny_model)
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    expected = pipe(batch_size=4, generator=torch.Generator().manual_seed(3), num_inference_steps=10).images
    shown = [_image(item["image"]) for item in singles]
    assert [s.shape for s in shown] == [(128, 128, 3)] * 4, "8x8 samples enlarged 16 times for the page"
    for image, reference in zip(shown, expected, strict=True):
        assert np.array_equal(image[::16, ::16], _rgb(reference)), "the sampler, seed and steps reach the pipeline"
    assert np.array_equal(_image(grid), _rgb(enlarged(make_grid(expected), 256)))
    assert len(np.unique(_image(grid))) > 10, "not blank"


@pytest.mark.slow
def test_the_chain_and_interpolation_answer(served):
    states, predictions = served.predict(2, 0, 3, T, api_name="/trajectory")
    wider, _ = served.predict(2, 0, 5, T, api_name="/trajectory")
    assert _image(states).shape == _image(predictions).shape
    assert _image(wider).shape[1] > _image(states).shape[1], "a column per timestep shown"
    strip, at_zero = served.predict(0, 1, 10, 0.0, 5, api_name="/interpolate")
    _, at_one = served.predict(0, 1, 10, 1.0, 5, api_name="/interpolate")
    _, again = served.predict(0, 1, 10, 0.0, 5, api_name="/interpolate")
    assert np.array_equal(_image(at_zero), _image(again)), "a function of the seeds"
    assert not np.array_equal(_image(at_zero), _image(at_one)), "lambda moves from A to B"
    assert _image(strip).shape[1] > 13 * 64, "A, 11 weights and B, 64-pixel cells"


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ((0, 3, "ddim", 10), "Number of images must be a whole number from 1 to 64; got 0"),
        ((100_000, 3, "ddim", 10), "Number of images must be a whole number from 1 to 64; got 100000"),
        ((4, -1, "ddim", 10), "Seed must be a whole number from 0 to 2147483647; got -1"),
        ((4, 3, "ddim", T + 1), f"greater than maximum value {T}"),
    ],
)
def test_bad_inputs_are_refused_with_a_message_and_the_app_keeps_serving(served, inputs, message):
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        served.predict(*inputs, api_name="/sample")
    grid, _ = served.predict(1, 0, "ddpm", 2, api_name="/sample")
    assert _image(grid).shape[1] >= 256


def test_parallel_users_are_queued_and_all_served(served):
    # Users asking for the same images at once each get them whole: Gradio's own cache would rewrite the
    # shared file in place while another client downloads it (see ImageFiles).
    with ThreadPoolExecutor(8) as pool:
        grids = list(pool.map(lambda seed: served.predict(2, seed % 2, "ddim", 2, api_name="/sample")[0], range(16)))
    images = [_image(grid) for grid in grids]
    assert all(np.array_equal(images[i], images[i % 2]) for i in range(16))
    assert not np.array_equal(images[0], images[1])


def test_the_model_tab_shows_its_facts(tiny_model):
    facts = dict(demo_module.load_model(str(tiny_model)).facts)
    assert facts["images"] == "8x8, RGB"
    assert facts["parameters"] == f"{sum(p.numel() for p in build_unet('tiny').parameters()):,}"
    assert facts["diffusion"] == f"T = {T}, linear, 0.0001 to 0.02 betas"
    assert facts["trained"] == "1,200 steps on sklearn-digits"
    assert facts[RUN["results"][0]["name"]] == "4.74 ± 0.049 (sklearn-digits, held-out)"


def test_a_diffusers_layout_model_is_served(tmp_path, google_cifar10_scheduler_config):
    folder = tmp_path / "google-layout"
    torch.manual_seed(0)
    scheduler = DDPMScheduler.from_config({**google_cifar10_scheduler_config, "num_train_timesteps": T})
    StockDDPMPipeline(build_unet("tiny"), scheduler).save_pretrained(folder)
    model = demo_module.load_model(str(folder))
    assert dict(model.facts)["reverse variance"] == "fixed_large"
    images = demo_module.sample(model, 2, 0, "ddpm", T)
    grids = demo_module.trajectory(model, 1, 0, 3, T)
    assert len(images) == 2 and len(grids) == 2


def test_a_model_that_cannot_load_stops_before_the_server(tmp_path, capsys, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        demo_module.build_demo(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot be loaded as a DDPM pipeline"):
        demo_module.build_demo(str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "argv", ["demo_ddpm.py"])
    with pytest.raises(SystemExit) as exit_info:
        demo_ddpm.main(["--model", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("demo_ddpm.py: error: --model") and len(error.splitlines()) == 1
