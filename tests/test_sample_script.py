"""The README's main-job command and the grid it writes; its sampler flags."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.core.images import make_grid

SCRIPT = Path(__file__).resolve().parents[1] / "train_scripts" / "sample_ddpm.py"
sys.path.insert(0, str(SCRIPT.parent))
import sample_ddpm  # noqa: E402


@pytest.mark.slow
def test_sample_script_writes_images_and_grid(tmp_path):
    out = tmp_path / "samples"
    args = ["--unet_preset", "tiny", "--num_images", "5", "--num_inference_steps", "3", "--output_dir", str(out)]
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"sample_{i}.png" for i in range(5)]
    grid = PIL.Image.open(out / "grid.png")
    assert grid.size == (3 * 10 + 2, 2 * 10 + 2)  # 3 columns, 2 rows of 8x8 images with 2-pixel padding
    again = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert again.returncode != 0 and "is not empty; pass --overwrite_output_dir" in again.stderr


def test_make_grid_places_each_image():
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    grid = make_grid([PIL.Image.new("RGB", (4, 4), c) for c in colors], ncols=2, padding=1)
    assert grid.size == (11, 11)
    assert grid.getpixel((1, 1)) == colors[0] and grid.getpixel((6, 1)) == colors[1]
    assert grid.getpixel((1, 6)) == colors[2] and grid.getpixel((6, 6)) == (0, 0, 0)
    with pytest.raises(ValueError, match="make_grid needs images of one size"):
        make_grid([PIL.Image.new("RGB", (4, 4)), PIL.Image.new("RGB", (5, 4))])


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "tiny-ddpm"
    DDPMPipeline(build_unet("tiny").eval(), PaperDDPMScheduler(num_train_timesteps=20)).save_pretrained(folder)
    return folder


def test_sample_script_samples_with_ddim_and_eta(tiny_model, tmp_path):
    out = tmp_path / "ddim"
    args = ["--model", str(tiny_model), "--scheduler", "ddim", "--eta", "1.0", "--num_inference_steps", "4"]
    sample_ddpm.main([*args, "--num_images", "2", "--seed", "3", "--output_dir", str(out)])
    # Independently: DDIM with eta 1 over 4 trailing steps, diffusers' loop written out.
    unet = DDPMPipeline.from_pretrained(tiny_model).unet
    scheduler = DDIMScheduler.from_config(
        PaperDDPMScheduler(num_train_timesteps=20).config, timestep_spacing="trailing", set_alpha_to_one=True
    )
    scheduler.set_timesteps(4)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, generator=generator)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, eta=1.0, generator=generator).prev_sample
    expected = DDPMPipeline.numpy_to_pil((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy())
    for i in range(2):
        with PIL.Image.open(out / f"sample_{i}.png") as image:
            assert np.array_equal(np.asarray(image), np.asarray(expected[i]))


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--scheduler", "plms"], "--scheduler takes ddpm, ddim, dpm_solver, euler_ancestral, pndm; got 'plms'"),
        (["--scheduler", "dpm_solver", "--eta", "0.5"], "--eta is DDIM's; --scheduler dpm_solver takes none"),
        (["--scheduler", "ddim", "--eta", "1.5"], r"--eta must lie in \[0, 1\], got 1.5"),
        (["--scheduler", "ddim", "--variance_type", "fixed_large"], "--variance_type is the ddpm sampler's"),
    ],
)
def test_sample_script_refuses_a_bad_sampler_before_sampling(tiny_model, tmp_path, monkeypatch, flags, match):
    loaded = []
    monkeypatch.setattr(sample_ddpm.DDPMPipeline, "from_pretrained", lambda *a, **k: loaded.append(a))
    with pytest.raises(ValueError, match=match):
        sample_ddpm.main(["--model", str(tiny_model), "--output_dir", str(tmp_path / "out"), *flags])
    assert loaded == [] and not (tmp_path / "out").exists()


def test_sample_script_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        sample_ddpm.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    for flag in dataclasses.fields(sample_ddpm.SampleArguments):
        assert f"--{flag.name}" in text
    assert "ddpm, ddim, dpm_solver, euler_ancestral, pndm" in text and "DDIM's eta" in text
