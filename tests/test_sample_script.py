"""train_scripts/sample_ddpm.py: the images and grid it writes, its sampler and batch flags, several processes, its
progress bars; and the progress bars of train_scripts/paper_figures.py."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler
from helpers.cli import usage_error
from helpers.ports import free_port

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.core.images import make_grid
from ddpm_hf.tools.distributed import chunk_generator
from ddpm_hf.tools.evaluation import generate

SCRIPT = Path(__file__).resolve().parents[1] / "train_scripts" / "sample_ddpm.py"
sys.path.insert(0, str(SCRIPT.parent))
import paper_figures  # noqa: E402
import sample_ddpm  # noqa: E402

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # main() sets up accelerate's process state


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
    # Independently: DDIM with eta 1 over 4 trailing steps, diffusers' loop written out, with the generator of the
    # first (here the only) chunk of --batch_size images.
    unet = DDPMPipeline.from_pretrained(tiny_model).unet
    scheduler = DDIMScheduler.from_config(
        PaperDDPMScheduler(num_train_timesteps=20).config, timestep_spacing="trailing", set_alpha_to_one=True
    )
    scheduler.set_timesteps(4)
    generator = chunk_generator(3, 0, "cpu")
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
def test_sample_script_refuses_a_bad_sampler_before_sampling(tiny_model, tmp_path, monkeypatch, capsys, flags, match):
    loaded = []
    monkeypatch.setattr(sample_ddpm.DDPMPipeline, "from_pretrained", lambda *a, **k: loaded.append(a))
    error = usage_error(
        capsys, sample_ddpm.main, ["--model", str(tiny_model), "--output_dir", str(tmp_path / "out"), *flags]
    )
    assert re.match(f"sample_ddpm.py: error: {match}", error)
    assert loaded == [] and not (tmp_path / "out").exists()


def test_sample_script_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        sample_ddpm.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    for flag in dataclasses.fields(sample_ddpm.SampleArguments):
        assert f"--{flag.name}" in text
    assert "ddpm, ddim, dpm_solver, euler_ancestral, pndm" in text and "DDIM's eta" in text


def _written(folder: Path, count: int) -> torch.Tensor:
    """sample_0.png .. sample_<count-1>.png decoded as uint8 (N, C, H, W)."""
    arrays = [np.asarray(PIL.Image.open(folder / f"sample_{i}.png").convert("RGB")) for i in range(count)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def test_sample_script_writes_what_generate_draws_in_batches(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model), "--num_images", "5", "--batch_size", "2", "--num_inference_steps", "3"]
    sample_ddpm.main([*argv, "--seed", "4", "--output_dir", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"sample_{i}.png" for i in range(5)]
    written = _written(out, 5)
    expected = generate(DDPMPipeline.from_pretrained(tiny_model), 5, 2, num_inference_steps=3, seed=4, progress=False)
    assert torch.equal(written, expected)
    # The grid: 3 columns and 2 rows of 8x8 cells with 2-pixel padding, sample i at row i // 3, column i % 3.
    grid = np.asarray(PIL.Image.open(out / "grid.png").convert("RGB"))
    assert grid.shape == (2 * 10 + 2, 3 * 10 + 2, 3)
    for i in range(5):
        top, left = 2 + (i // 3) * 10, 2 + (i % 3) * 10
        assert np.array_equal(grid[top : top + 8, left : left + 8], written[i].permute(1, 2, 0).numpy())
    captured = capsys.readouterr()
    assert captured.out.strip() == f"Wrote 5 samples and grid.png to {out} (PaperDDPMScheduler)"
    for chunk in ("1-2", "3-4", "5-5"):  # one process: every chunk's bar, on stderr
        assert f"sampling {chunk} of 5" in captured.err


def test_sample_script_batch_size_changes_the_draws_not_their_number(tiny_model, tmp_path):
    argv = ["--model", str(tiny_model), "--num_images", "4", "--num_inference_steps", "3", "--seed", "1"]
    for batch_size in (1, 3, 64):
        sample_ddpm.main([*argv, "--batch_size", str(batch_size), "--output_dir", str(tmp_path / str(batch_size))])
    for batch_size in (1, 3, 64):
        names = sorted(p.name for p in (tmp_path / str(batch_size)).iterdir())
        assert names == ["grid.png"] + [f"sample_{i}.png" for i in range(4)]
    # Documented: the images depend on --batch_size (sample 1 is chunk 1's first with 1, chunk 0's second with 3).
    assert not torch.equal(_written(tmp_path / "1", 4)[1], _written(tmp_path / "3", 4)[1])


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--batch_size", "0"], "--batch_size must be at least 1, got 0"),
        (["--batch_size", "-2"], "--batch_size must be at least 1, got -2"),
        (["--num_images", "0"], "--num_images must be at least 1, got 0"),
    ],
)
def test_sample_script_refuses_a_bad_count_before_loading(tmp_path, capsys, flags, match):
    missing = tmp_path / "no-such-model"  # loading it would fail with another error: the count is checked first
    error = usage_error(
        capsys, sample_ddpm.main, ["--model", str(missing), "--output_dir", str(tmp_path / "out"), *flags]
    )
    assert error.startswith(f"sample_ddpm.py: error: {match}")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_processes_write_the_images_of_one(tiny_model, tmp_path, accelerate_launch):
    argv = ["--model", str(tiny_model), "--num_images", "5", "--batch_size", "2", "--num_inference_steps", "3"]
    sample_ddpm.main([*argv, "--seed", "2", "--output_dir", str(tmp_path / "one")])
    command = accelerate_launch(2, SCRIPT, *argv, "--seed", "2", "--output_dir", str(tmp_path / "two"))
    command[command.index(str(SCRIPT)) : command.index(str(SCRIPT))] = ["--main_process_port", str(free_port())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = ["grid.png"] + [f"sample_{i}.png" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names
    for name in names:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert result.stdout.count("Wrote 5 samples") == 1  # the main process alone writes and reports
    # Chunks 0 and 2 are the main process's, chunk 1 the other's: only the main process shows its bars.
    assert "sampling 1-2 of 5" in result.stderr and "sampling 5-5 of 5" in result.stderr
    assert "sampling 3-4 of 5" not in result.stderr


@pytest.mark.slow
def test_paper_figures_shows_a_bar_per_figure(tiny_model, tmp_path, capsys):
    argv = ["--model", str(tiny_model), "--output_dir", str(tmp_path / "figures"), "--num_samples", "2"]
    argv += ["--num_columns", "3", "--shared_t", "4,9", "--rd_num_images", "3", "--image_size", "8"]
    paper_figures.main([*argv, "--figures", "progressive,shared,rate_distortion"])
    captured = capsys.readouterr()
    for bar in ("progressive_x0", "progressive_xt", "shared_latent t=4", "shared_latent t=9", "shared_latent: 100%"):
        assert bar in captured.err, bar
    assert "bound: 100%" in captured.err  # rate_distortion's bar over the terms of the bound
    # One line per figure written, naming it.
    assert [line.split()[0].rstrip(":") for line in captured.out.splitlines()] == [
        "progressive_x0.png",
        "progressive_xt.png",
        "shared_latent.png",
        "rate_distortion.png/.csv/.json",
    ]
