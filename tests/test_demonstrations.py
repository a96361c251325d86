"""ddpm_hf.core.paper_sampling, ddpm_hf.tools.rate_distortion and train_scripts/paper_figures.py: progressive
generation, shared latents, interpolation and rate-distortion (Ho et al. 2020, Secs. 4.3-4.4) on a tiny model,
checked against independent computations."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet, prior_bpd
from ddpm_hf.core.images import labelled_grid, make_grid, to_model_range
from ddpm_hf.core.paper_sampling import FINAL_SAMPLE
from ddpm_hf.core.samplers import make_scheduler
from ddpm_hf.tools.evaluation import evaluate_bound
from ddpm_hf.tools.rate_distortion import rate_distortion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train_scripts"))
import paper_figures

T = 20


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def pipe(tiny_unet):
    pipeline = DDPMPipeline(tiny_unet, PaperDDPMScheduler(num_train_timesteps=T))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _images(n, seed=1):
    return torch.randint(0, 256, (n, 3, 8, 8), generator=seeded(seed), dtype=torch.uint8)


def _cell(grid, row, col, size=8, padding=2):
    left, top = padding + col * (size + padding), padding + row * (size + padding)
    return np.asarray(grid.crop((left, top, left + size, top + size)))


# ---------------------------------------------------------------------- progressive generation


def test_progressive_grid_shows_the_pipeline_trajectory(pipe):
    grid, columns = pipe.progressive_grid(3, seeded(), num_columns=5)
    assert columns == [19, 14, 9, 5, 0]  # evenly spaced over the chain, first and last step included
    assert grid.size == (5 * 10 + 2, 3 * 10 + 2) and grid.mode == "RGB"
    out = pipe(batch_size=3, generator=seeded(), trajectory_timesteps=columns)
    for row in range(3):
        for col in range(5):
            assert np.array_equal(_cell(grid, row, col), np.asarray(out.pred_original_samples[col][row]))
        # At the last step the x_0 prediction is the sample itself.
        assert np.array_equal(_cell(grid, row, 4), np.asarray(out.images[row]))

    grid_xt, columns_xt = pipe.progressive_grid(3, seeded(), num_columns=5, kind="x_t")
    assert columns_xt == [19, 14, 9, 4, FINAL_SAMPLE]  # over the states x_T .. x_0
    out = pipe(batch_size=3, generator=seeded(), trajectory_timesteps=columns_xt[:-1])
    assert np.array_equal(_cell(grid_xt, 1, 0), np.asarray(out.noisy_samples[0][1]))
    assert np.array_equal(_cell(grid_xt, 2, 4), np.asarray(out.images[2]))

    again, _ = pipe.progressive_grid(3, seeded(), num_columns=5)
    other, _ = pipe.progressive_grid(3, seeded(1), num_columns=5)
    assert again.tobytes() == grid.tobytes() and other.tobytes() != grid.tobytes()

    chosen, columns = pipe.progressive_grid(2, seeded(), trajectory_timesteps=[0, 19, 10], kind="x_t")
    assert columns == [19, 10, 0] and chosen.size == (3 * 10 + 2, 2 * 10 + 2)
    labelled, _ = pipe.progressive_grid(2, seeded(), num_columns=4, num_inference_steps=10, scale=4, labels=True)
    assert labelled.width == 4 * 34 + 2 and labelled.height > 2 * 34 + 2


def test_progressive_grid_rejects_bad_arguments(pipe):
    with pytest.raises(ValueError, match="`kind` must be one of"):
        pipe.progressive_grid(1, kind="eps")
    with pytest.raises(ValueError, match=r"`num_columns` must be an integer in 2\.\.20"):
        pipe.progressive_grid(1, num_columns=21)
    with pytest.raises(ValueError, match="not both"):
        pipe.progressive_grid(1, num_columns=3, trajectory_timesteps=[3])
    with pytest.raises(ValueError, match=r"\[-1\] are not in the x0 states"):
        pipe.progressive_grid(1, trajectory_timesteps=[3, FINAL_SAMPLE])


@torch.no_grad()
def _diffusers_chain(unet, scheduler, batch_size, generator, steps):
    """diffusers' loop written out, recording per timestep x_t (the UNet's input) and the step's output."""
    scheduler.set_timesteps(steps)
    x = torch.randn(batch_size, 3, 8, 8, generator=generator) * scheduler.init_noise_sigma
    states = {}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        step = scheduler.step(unet(model_input, t).sample, t, x, generator=generator)
        states[int(t)] = (model_input, step)
        x = step.prev_sample
    return x, states


def _as_pil_rows(x):
    """Model-range images as the pipeline's PIL images (for comparing grid cells)."""
    return DDPMPipeline.numpy_to_pil((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy())


def test_progressive_grid_with_ddim_shows_its_x0_predictions(tiny_unet):
    scheduler = DDIMScheduler(num_train_timesteps=T, timestep_spacing="trailing")
    pipe = DDPMPipeline(tiny_unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    grid, columns = pipe.progressive_grid(2, seeded(5), num_columns=4, num_inference_steps=8)
    reference = DDIMScheduler(num_train_timesteps=T, timestep_spacing="trailing")
    final, states = _diffusers_chain(tiny_unet, reference, 2, seeded(5), 8)
    chain = list(states)
    assert columns == [chain[k] for k in (0, 2, 5, 7)] and columns[0] == T - 1
    for col, t in enumerate(columns):
        expected = _as_pil_rows(states[t][1].pred_original_sample)
        for row in range(2):
            assert np.array_equal(_cell(grid, row, col), np.asarray(expected[row]))
    # DDIM's last step lands on its x_0 prediction: the last column is the sample.
    assert np.array_equal(_cell(grid, 1, 3), np.asarray(_as_pil_rows(final)[1]))


def test_progressive_grid_of_states_works_with_any_scheduler(tiny_unet):
    pipe = DDPMPipeline(tiny_unet, DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing="trailing"))
    pipe.set_progress_bar_config(disable=True)
    grid, columns = pipe.progressive_grid(2, seeded(6), num_columns=3, kind="x_t", num_inference_steps=6)
    final, states = _diffusers_chain(
        tiny_unet, DPMSolverMultistepScheduler(num_train_timesteps=T, timestep_spacing="trailing"), 2, seeded(6), 6
    )
    assert columns == [T - 1, list(states)[3], FINAL_SAMPLE]
    for col, t in enumerate(columns[:2]):
        expected = _as_pil_rows(states[t][0])
        assert np.array_equal(_cell(grid, 0, col), np.asarray(expected[0]))
    assert np.array_equal(_cell(grid, 1, 2), np.asarray(_as_pil_rows(final)[1]))
    # DPM-Solver's step gives no x_0 prediction: the x0 grid is refused before sampling.
    with pytest.raises(ValueError, match=r"DPMSolverMultistepScheduler\.step returns no x_0 prediction"):
        pipe.progressive_grid(2, seeded(6), num_columns=3)


def test_shared_latents_and_interpolation_need_the_papers_chain(tiny_unet):
    pipe = DDPMPipeline(tiny_unet, DDIMScheduler(num_train_timesteps=T))
    image = _images(1)[0]
    with pytest.raises(ValueError, match=r"`shared_latent_samples` runs the paper's reverse chain .* DDIMScheduler"):
        pipe.shared_latent_samples(5, 2, seeded())
    with pytest.raises(ValueError, match=r"`interpolate` runs the paper's reverse chain .* is DDIMScheduler\. Set"):
        pipe.interpolate(image, image, 5)


def test_shared_latent_samples_continue_one_chain(pipe):
    """With one sample, the shared chain and its continuation are exactly the pipeline's Algorithm 2 chain."""
    single = pipe.shared_latent_samples(10, 1, seeded(3), output_type="pt")
    plain = pipe(batch_size=1, generator=seeded(3), output_type="pt").images
    torch.testing.assert_close(single.images, plain, rtol=0, atol=1e-6)

    shared = pipe.shared_latent_samples(10, 4, seeded(3), output_type="pt")
    assert shared.images.shape == (4, 3, 8, 8) and shared.timestep == 10
    assert shared.noisy_sample.shape == shared.pred_original_sample.shape == (1, 3, 8, 8)
    assert not torch.allclose(shared.images[1], shared.images[2])  # independent chains below t
    again = pipe.shared_latent_samples(10, 4, seeded(3), output_type="pt")
    assert torch.equal(again.images, shared.images) and torch.equal(again.noisy_sample, shared.noisy_sample)

    last = pipe.shared_latent_samples(0, 3, seeded(), output_type="pt")  # x_0's step adds no noise
    assert torch.equal(last.images[0], last.images[2])
    torch.testing.assert_close(last.pred_original_sample, last.images[:1])
    images = pipe.shared_latent_samples(T - 1, 2, seeded()).images
    assert len(images) == 2 and images[0].size == (8, 8)
    with pytest.raises(ValueError, match=r"`t` must be a timestep in 0\.\.19"):
        pipe.shared_latent_samples(T, 2, seeded())


# ---------------------------------------------------------------------- interpolation


def _reverse_from(pipe, x_t, t, generator):
    """x_t decoded by `scheduler.step` from t down to 0 (Algorithm 2), as an image in [0, 1]."""
    scheduler = PaperDDPMScheduler.from_config(pipe.scheduler.config)
    for s in range(t, -1, -1):
        x_t = scheduler.step(pipe.unet(x_t, s).sample, s, x_t, generator=generator).prev_sample
    return (x_t / 2 + 0.5).clamp(0, 1)


def test_interpolation_end_points_are_the_reconstructions(pipe):
    sources = _images(2)
    t = 12
    out = pipe.interpolate(sources[0], sources[1], t, num_weights=5, generator=seeded(4), output_type="pt")
    assert out.images.shape == (5, 3, 8, 8) and out.lambdas == [0.0, 0.25, 0.5, 0.75, 1.0] and out.timestep == t
    assert torch.equal(out.reconstruction_a, out.images[:1]) and torch.equal(out.reconstruction_b, out.images[-1:])
    torch.testing.assert_close(out.sources, sources.float() / 255)

    # Independently: each source diffused to t by q(x_t | x_0) with its own noise, then decoded alone, the
    # reverse chain drawing what the generator draws after the two encodings.
    generator = seeded(4)
    x0 = to_model_range(sources)
    noise = torch.randn(x0.shape, generator=generator)
    state = generator.get_state()
    for k, reconstruction in ((0, out.reconstruction_a), (1, out.reconstruction_b)):
        x_t = pipe.scheduler.add_noise(x0[k : k + 1], noise[k : k + 1], t)
        expected = _reverse_from(pipe, x_t, t, torch.Generator().set_state(state))
        torch.testing.assert_close(reconstruction, expected, rtol=0, atol=1e-5)

    again = pipe.interpolate(sources[0], sources[1], t, num_weights=5, generator=seeded(4), output_type="pt")
    other = pipe.interpolate(sources[0], sources[1], t, num_weights=5, generator=seeded(5), output_type="pt")
    assert torch.equal(again.images, out.images) and not torch.allclose(other.images, out.images)
    middle = out.images[1:-1]
    assert not torch.allclose(middle[0], middle[1]) and not torch.allclose(middle[1], middle[2])


def test_interpolation_takes_pil_numpy_and_tensors_in_the_data_range(pipe):
    sources = _images(2)
    expected = pipe.interpolate(sources[0], sources[1], 5, 3, seeded(), output_type="np").images
    as_hwc = sources.permute(0, 2, 3, 1).numpy()
    for a, b in [
        (PIL.Image.fromarray(as_hwc[0]), PIL.Image.fromarray(as_hwc[1])),
        (as_hwc[0], as_hwc[1].astype(np.float64) / 255),
        (sources[0:1], sources[1].float() / 255),
    ]:
        images = pipe.interpolate(a, b, 5, 3, seeded(), output_type="np").images
        np.testing.assert_allclose(images, expected, rtol=0, atol=1e-5)
    pil = pipe.interpolate(PIL.Image.fromarray(as_hwc[0]), as_hwc[1], 5, 3, seeded())
    assert len(pil.images) == 3 and len(pil.sources) == 2 and pil.reconstruction_b[0].size == (8, 8)


def test_interpolation_rejects_bad_inputs(pipe):
    image = _images(1)[0]
    with pytest.raises(ValueError, match=r"`image_b` is 3x16x16 .* the model takes 3x8x8 images\. Images are not"):
        pipe.interpolate(image, torch.zeros(3, 16, 16, dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="`image_a` is 1x8x8"):
        pipe.interpolate(np.zeros((8, 8), np.uint8), image, 5)
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        pipe.interpolate(image.float(), image, 5)
    with pytest.raises(ValueError, match="must be uint8 in"):
        pipe.interpolate(image.long(), image, 5)
    for t in (-1, T, 2.5):
        with pytest.raises(ValueError, match=r"`t` must be a timestep in 0\.\.19"):
            pipe.interpolate(image, image, t)
    with pytest.raises(ValueError, match="`num_weights` must be an integer >= 2"):
        pipe.interpolate(image, image, 5, num_weights=1)
    with pytest.raises(ValueError, match=r"one torch\.Generator"):
        pipe.interpolate(image, image, 5, generator=[seeded(), seeded()])


# ---------------------------------------------------------------------- rate-distortion


def test_rate_distortion_end_points_are_the_prior_and_the_bound(pipe):
    images = _images(5)
    curve = rate_distortion(pipe.unet, pipe.scheduler, images, batch_size=2, seed=3)
    assert curve.timesteps == list(range(T - 1, -1, -1)) and curve.reverse_steps == list(range(1, T + 1))
    assert curve.rate_bpd.shape == curve.distortion_rmse.shape == (T,) and curve.num_images == 5
    # Reverse step 1 has received x_T only: the rate is L_T.
    prior = prior_bpd(pipe.scheduler, to_model_range(images)).double().mean().item()
    assert curve.rate_bpd[0].item() == pytest.approx(prior, rel=1e-12) and curve.prior_bpd == curve.rate_bpd[0]
    # The last step's rate plus the decoder term L_0 is the bound evaluate_bound gives on the same noise: exactly
    # for the total, and up to float32 summation order (bits_per_dim sums the terms in float32) for the rate.
    bound = evaluate_bound(pipe.unet, pipe.scheduler, images, batch_size=2, seed=3)
    assert curve.total_bpd == bound.mean and curve.decoder_bpd == pytest.approx(bound.decoder_bpd, rel=1e-12)
    assert curve.rate_bpd[-1].item() + curve.decoder_bpd == pytest.approx(bound.mean, rel=1e-6)
    assert (curve.rate_bpd.diff() >= 0).all()  # KL terms are non-negative
    other = rate_distortion(pipe.unet, pipe.scheduler, images, batch_size=2, seed=4)
    assert other.total_bpd != curve.total_bpd
    with pytest.raises(ValueError, match="non-empty uint8 tensor"):
        rate_distortion(pipe.unet, pipe.scheduler, images.float(), batch_size=2)


class EmpiricalDenoiser(torch.nn.Module):
    """The best eps predictor for data that is exactly `x0` (N images): eps implied by E[x_0 | x_t], a softmax over
    the images of -||x_t - sqrt(alphabar_t) x_0||^2 / (2 (1 - alphabar_t)). `oracle=True`: the true noise of
    batch row i, made from image i (eps = (x_t - sqrt(alphabar_t) x_0) / sqrt(1 - alphabar_t))."""

    def __init__(self, x0: torch.Tensor, scheduler: PaperDDPMScheduler, oracle: bool = False):
        super().__init__()
        self.x0, self.alphas_cumprod, self.oracle = x0.double(), scheduler.alphas_cumprod, oracle

    def forward(self, x_t, t):
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = x_t.double()
        if self.oracle:
            x0 = self.x0
        else:
            distances = ((x_t[:, None] - abar[:, None].sqrt() * self.x0[None]) ** 2).flatten(2).sum(-1)
            weights = torch.softmax(-distances / (2 * (1 - abar.flatten()[:, None])), dim=1)
            x0 = torch.einsum("bn,nchw->bchw", weights, self.x0)
        return ((x_t - abar.sqrt() * x0) / (1 - abar).sqrt()).float()


def test_distortion_falls_to_zero_towards_t0_with_the_best_denoiser():
    # A cosine schedule over T = 20 steps runs from alphabar ~ 1 to ~ 0, so x_T carries nothing of x_0.
    scheduler = PaperDDPMScheduler(
        num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", variance_type="fixed_small"
    )
    images = _images(64, seed=2)
    x0 = to_model_range(images)

    exact = rate_distortion(EmpiricalDenoiser(x0, scheduler, oracle=True), scheduler, images, batch_size=64)
    assert exact.distortion_rmse.max() < 1e-2  # the true noise gives x_0 back at every step ...
    torch.testing.assert_close(exact.rate_bpd, torch.full((T,), exact.prior_bpd, dtype=torch.float64))  # ... free

    best = rate_distortion(EmpiricalDenoiser(x0, scheduler), scheduler, images, batch_size=64)
    distortion = best.distortion_rmse
    assert (distortion.diff() <= 0.05).all(), distortion  # non-increasing towards t = 0 (up to the fresh noise per t)
    assert distortion[0] > 50 and distortion[-5:].max() < 1e-3
    # Once x_1 tells the image, the bits sent are about those naming one of 64 images: log2(64) over D = 192 dims.
    assert (best.rate_bpd.diff() >= 0).all() and best.rate_bpd[-1].item() == pytest.approx(6 / 192, rel=0.25)


def test_rate_distortion_table_json_and_plot(pipe, tmp_path):
    curve = rate_distortion(pipe.unet, pipe.scheduler, _images(3), batch_size=3)
    curve.to_csv(tmp_path / "rd.csv")
    lines = (tmp_path / "rd.csv").read_text().splitlines()
    assert lines[0] == "reverse_step,timestep,rate_bpd,distortion_rmse" and len(lines) == T + 1
    assert lines[1].startswith("1,19,") and lines[-1].startswith(f"{T},0,")
    curve.to_json(tmp_path / "rd.json")
    table = json.loads((tmp_path / "rd.json").read_text())
    assert table["total_bpd"] == curve.total_bpd and table["num_images"] == 3 and len(table["rows"]) == T
    assert table["rows"][-1]["rate_bpd"] == curve.rate_bpd[-1].item()
    curve.plot(tmp_path / "rd.png")
    with PIL.Image.open(tmp_path / "rd.png") as plot:
        assert plot.format == "PNG" and plot.width > 2 * plot.height  # three panels side by side


# ---------------------------------------------------------------------- grids and the command line


def test_labelled_grid():
    rows = [[PIL.Image.new("L", (4, 4), 40 * (3 * r + c)) for c in range(3)] for r in range(2)]
    plain = labelled_grid(rows, scale=2)
    scaled = [image.resize((8, 8), PIL.Image.Resampling.NEAREST) for row in rows for image in row]
    assert plain.tobytes() == make_grid(scaled, ncols=3).tobytes()
    labelled = labelled_grid(rows, ["a", "b", "c"], ["row 1", "row 2"], scale=2)
    assert labelled.width > plain.width and labelled.height > plain.height
    with pytest.raises(ValueError, match="one length"):
        labelled_grid([rows[0], rows[1][:2]])


def test_paper_figures_script(tmp_path, capsys):
    model = tmp_path / "tiny-ddpm"
    torch.manual_seed(0)
    DDPMPipeline(build_unet("tiny"), PaperDDPMScheduler(num_train_timesteps=T)).save_pretrained(model)
    out = tmp_path / "figures"
    argv = ["--model", str(model), "--output_dir", str(out), "--num_samples", "2", "--num_columns", "4"]
    argv += ["--num_lambdas", "3", "--rd_num_images", "6", "--batch_size", "4", "--image_size", "16"]
    written = paper_figures.main(argv)
    names = ["interpolation.png", "progressive_x0.png", "progressive_xt.png", "rate_distortion.csv"]
    names += ["rate_distortion.json", "rate_distortion.png", "shared_latent.png"]
    assert sorted(p.name for p in out.iterdir()) == names and sorted(p.name for p in written) == names
    cell, top = 16 + 2, 12 + 2 * 2  # 8x8 images enlarged twice; a row of column labels
    sizes = {}
    for name in names:
        if name.endswith(".png"):
            with PIL.Image.open(out / name) as image:
                image.load()
                sizes[name] = image.size
    assert sizes["progressive_x0.png"] == sizes["progressive_xt.png"] == (4 * cell + 2, 2 * cell + 2 + top)
    assert sizes["shared_latent.png"][1] == 4 * cell + 2 + top  # rows: t = 4, 9, 14, 19
    assert sizes["shared_latent.png"][0] > 4 * cell + 2  # x_t, its x_0 prediction, 2 samples, row labels
    assert sizes["interpolation.png"][1] == 9 * cell + 2 + top  # rows: t = 0, T/8 .. T - 1 (Fig. 9)
    assert sizes["interpolation.png"][0] > 5 * cell + 2  # source, lambda = 0, 0.5, 1, source
    assert sizes["rate_distortion.png"][0] > 2 * sizes["rate_distortion.png"][1]
    table = json.loads((out / "rate_distortion.json").read_text())
    assert table["num_images"] == 6 and len(table["rows"]) == T and math.isfinite(table["total_bpd"])
    assert "bound" in capsys.readouterr().out

    with pytest.raises(SystemExit):
        paper_figures.main(argv)
    assert "is not empty; pass --overwrite_output_dir" in capsys.readouterr().err
    paper_figures.main([*argv, "--overwrite_output_dir", "--figures", "progressive"])
    with pytest.raises(SystemExit):
        paper_figures.main([*argv, "--overwrite_output_dir", "--figures", "fig5"])
    assert "error: --figures takes" in capsys.readouterr().err


def test_paper_figures_script_takes_a_sampler_for_the_progressive_figures(tmp_path, capsys):
    model = tmp_path / "tiny-ddpm"
    torch.manual_seed(0)
    DDPMPipeline(build_unet("tiny"), PaperDDPMScheduler(num_train_timesteps=T)).save_pretrained(model)
    argv = ["--model", str(model), "--num_samples", "2", "--num_columns", "3", "--num_inference_steps", "5"]
    argv += ["--figures", "progressive,shared", "--shared_t", "9", "--image_size", "8"]
    with pytest.raises(SystemExit) as exit_info:
        paper_figures.main([*argv, "--output_dir", str(tmp_path / "bad"), "--scheduler", "plms"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "error: --scheduler takes ddpm, ddim, dpm_solver, euler_ancestral, pndm; got 'plms'" in error
    assert not (tmp_path / "bad").exists()  # refused before anything was made

    written = paper_figures.main([*argv, "--output_dir", str(tmp_path / "dpm"), "--scheduler", "dpm_solver"])
    # DPM-Solver gives no x_0 predictions: the x_t figure only; the shared latents run the paper's chain.
    assert sorted(p.name for p in written) == ["progressive_xt.png", "shared_latent.png"]
    assert (
        "progressive_x0.png: skipped, DPMSolverMultistepScheduler.step gives no x_0 prediction"
        in capsys.readouterr().out
    )

    written = paper_figures.main([*argv, "--output_dir", str(tmp_path / "ddim"), "--scheduler", "ddim"])
    assert sorted(p.name for p in written) == ["progressive_x0.png", "progressive_xt.png", "shared_latent.png"]
    # The figure is the DDIM chain's (whose grid is checked above): the pipeline's with make_scheduler("ddim").
    pipe = DDPMPipeline.from_pretrained(model)
    pipe.scheduler = make_scheduler("ddim", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    grid, _ = pipe.progressive_grid(2, seeded(0), num_columns=3, num_inference_steps=5, labels=True)
    with PIL.Image.open(tmp_path / "ddim" / "progressive_x0.png") as image:
        assert image.tobytes() == grid.tobytes()


def test_the_demonstrations_are_pipeline_methods(pipe):
    a, b = _images(2)
    method = pipe.interpolate(a, b, 3, 3, torch.Generator().manual_seed(0), output_type="pt")
    function = pipe.interpolate(a, b, 3, 3, torch.Generator().manual_seed(0), output_type="pt")
    torch.testing.assert_close(method.images, function.images, rtol=0, atol=0)
    assert pipe.progressive_grid(2, torch.Generator().manual_seed(0), num_columns=3)[1] == [T - 1, 9, 0]
    assert len(pipe.shared_latent_samples(5, 2, torch.Generator().manual_seed(0)).images) == 2
