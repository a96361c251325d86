"""The trainer's sample grids, bound and FID/KID shared over processes: in one process each equals the chunked
computation done by hand; two processes give the pixels and numbers of one."""

import hashlib
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from test_trainer import QUICK, launch, unet_weights

from ddpm_hf import DDPMPipeline, bits_per_dim
from ddpm_hf.core.images import enlarged, make_grid, to_model_range
from ddpm_hf.jobs.arguments import parse_train_args
from ddpm_hf.jobs.trainer import DDPMTrainer
from ddpm_hf.tools.distributed import chunk_generator
from ddpm_hf.tools.evaluation import generate
from ddpm_hf.tools.metrics import RandomFeatureSpace, StatsKey, default_stats_dir

SEED = 0  # the trainer's default --seed


class SlicedOnly:
    """Held-out images as a memory-mapped store offers them: `len`, `.shape` and slices, nothing else."""

    def __init__(self, images: torch.Tensor):
        self._images = images
        self.shape = images.shape

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: slice) -> torch.Tensor:
        assert isinstance(index, slice), f"indexed by {type(index).__name__}"
        return self._images[index].clone()


def trainer_of(tmp_path: Path, *flags: str) -> DDPMTrainer:
    """A trainer of the quick job, its held-out images behind `SlicedOnly`."""
    argv = [*QUICK, "--output_dir", str(tmp_path / "run"), "--max_train_steps", "1", *flags]
    trainer = DDPMTrainer(parse_train_args(argv))
    trainer.data = replace(trainer.data, eval=SlicedOnly(trainer.data.eval))
    return trainer


def sampling_pipeline(trainer: DDPMTrainer) -> DDPMPipeline:
    """The weights the trainer samples (at step 0 the initial ones, which its EMA holds) in a pipeline of their own."""
    unet = type(trainer.sample_unet).from_config(trainer.sample_unet.config).eval()
    trainer.ema.copy_to(unet.parameters())
    pipe = DDPMPipeline(unet, trainer.scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def chunked_samples(pipe: DDPMPipeline, num_samples: int, chunk: int, steps: int) -> list[PIL.Image.Image]:
    """The pipeline's own PIL samples, chunk k of `chunk` images drawn with chunk k's generator."""
    return [
        image
        for k, start in enumerate(range(0, num_samples, chunk))
        for image in pipe(
            batch_size=min(chunk, num_samples - start),
            generator=chunk_generator(SEED, k, "cpu"),
            num_inference_steps=steps,
        ).images
    ]


def chunked_bound(pipe: DDPMPipeline, images: torch.Tensor, chunk: int, num_timesteps: int | None) -> torch.Tensor:
    """`bits_per_dim` of each chunk of `chunk` images with chunk k's generator, concatenated, in float64."""
    parts = [
        bits_per_dim(
            pipe.unet,
            pipe.scheduler,
            to_model_range(images[start : start + chunk]),
            chunk_generator(SEED, k, "cpu"),
            num_timesteps=num_timesteps,
        ).total_bpd
        for k, start in enumerate(range(0, len(images), chunk))
    ]
    return torch.cat(parts).double()


def numpy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)), the last from the eigenvalues of S_a S_b
    (real and >= 0 for covariances; these are rank-deficient, so no matrix square root)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_trace = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real.clip(min=0)).sum()
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * root_trace)


def logged(trainer: DDPMTrainer) -> dict[str, float]:
    """What the trainer logs to its trackers from now on, by name."""
    values: dict[str, float] = {}
    trainer.accelerator.log = lambda logs, step: values.update(logs)
    return values


def test_grid_is_the_chunked_samples_tiled(tmp_path, fresh_accelerate_state, monkeypatch):
    flags = ["--num_sample_images", "20", "--eval_batch_size", "16", "--ddpm_num_inference_steps", "3"]
    trainer = trainer_of(tmp_path, *flags)
    drawn = []
    monkeypatch.setattr("ddpm_hf.jobs.trainer.generate", lambda *a, **k: drawn.append(a) or generate(*a, **k))
    trainer._sample_grid(tmp_path / "a" / "grid.png")
    trainer._sample_grid(tmp_path / "b" / "grid.png")
    assert len(drawn) == 1, "drawn once per step, however many files want it"
    pipe = sampling_pipeline(trainer)
    # 20 images in chunks of --eval_batch_size 16: 16 and 4.
    expected = np.asarray(enlarged(make_grid(chunked_samples(pipe, 20, 16, 3))))
    for folder in ("a", "b"):
        with PIL.Image.open(tmp_path / folder / "grid.png") as grid:
            assert np.array_equal(np.asarray(grid), expected)
    other = np.asarray(enlarged(make_grid(chunked_samples(pipe, 20, 4, 3))))
    assert not np.array_equal(other, expected), "another chunking gives another grid"


def test_bound_is_the_chunked_bound(tmp_path, fresh_accelerate_state):
    flags = ["--eval_batch_size", "16", "--final_eval_batch_size", "20", "--eval_num_timesteps", "5"]
    trainer = trainer_of(tmp_path, *flags)
    values = logged(trainer)
    images = trainer.data.eval._images
    pipe = sampling_pipeline(trainer)

    trainer._evaluate()  # the estimate on 16 images: one chunk
    estimate = chunked_bound(pipe, images[:16], 16, 5)
    assert values["eval/bpd_estimate_5_terms"] == pytest.approx(estimate.mean().item(), rel=1e-6)
    assert values["eval/bpd_estimate_5_terms_stderr"] == pytest.approx(estimate.std().item() / 4, rel=1e-5)
    assert "unbiased estimate from 5 of 50 terms; 16 held-out" in trainer.results["bits_per_dim"]["name"]

    trainer._evaluate(full=True)  # all 50 terms on 20 images: chunks of 16 and 4
    full = chunked_bound(pipe, images[:20], 16, None)
    entry = trainer.results["bits_per_dim"]
    assert values["eval/bpd"] == entry["value"] == pytest.approx(full.mean().item(), rel=1e-6)
    assert values["eval/bpd_stderr"] == entry["stderr"] == pytest.approx(full.std().item() / 20**0.5, rel=1e-5)
    assert "all 50 terms; 20 held-out images; EMA weights of step 0" in entry["name"]
    other = chunked_bound(pipe, images[:20], 4, None)
    assert other.mean().item() != pytest.approx(full.mean().item(), rel=1e-6), "another chunking, other noise"


def test_fid_scores_the_chunked_features_and_caches_the_held_out_ones(tmp_path, fresh_accelerate_state, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    flags = ["--eval_fid_steps", "1", "--eval_feature_space", "random", "--eval_num_samples", "40"]
    trainer = trainer_of(tmp_path, *flags, "--eval_batch_size", "16", "--ddpm_num_inference_steps", "2")
    values = logged(trainer)
    seen = []
    trainer.quality.space.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    held_out = trainer.data.eval._images

    trainer._evaluate_fid()
    # The features of the held-out images, then of the 40 samples, 16 at a time.
    assert seen == [len(chunk) for chunk in held_out.split(16)] + [16, 16, 8]
    space = RandomFeatureSpace(seed=0)
    samples = chunked_samples(sampling_pipeline(trainer), 40, 16, 2)  # 40 samples: chunks of 16, 16 and 8
    fake = torch.from_numpy(np.stack([np.asarray(s.convert("RGB")) for s in samples])).permute(0, 3, 1, 2)
    real = held_out.expand(-1, 3, -1, -1)  # RGB, as scored (gray images repeated)
    fid = numpy_fid(space(real)[0].numpy(), space(fake)[0].numpy())
    assert values["eval/fid_random"] == trainer.results["fid"]["value"] == pytest.approx(fid, rel=1e-4)
    assert "40 samples, 2 steps, step 0" in trainer.results["fid"]["name"]

    # The held-out statistics were cached under a hash of all their bytes; a new scorer reads them from there.
    digest = hashlib.sha256(held_out.numpy().tobytes()).hexdigest()[:12]
    dataset = f"{trainer.args.data.dataset_id()}-{held_out.shape[1]}ch-{digest}"
    key = StatsKey(dataset, trainer.data.eval_split, 8, space.name, len(held_out))
    assert (default_stats_dir() / key.filename()).is_file()
    trainer.quality = trainer._sample_metrics()
    trainer.quality.space.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    seen.clear()
    trainer._evaluate_fid()
    assert seen == [16, 16, 8], "only the samples' features are computed"
    assert trainer.results["fid"]["value"] == pytest.approx(fid, rel=1e-4)


# Learning rate 0: the weights stay the seeded initial ones whatever the number of processes (which changes the
# training batches and noise), so runs of 1 and 2 processes evaluate the same weights through the whole script.
# Evaluations at steps 2 and 4, a pipeline (and samples.png) saved at step 3, between them: every call site.
# Chunks of 8: the 16-sample grids, the 24-image full bound and the 20 FID samples each make 2 or 3 chunks.
SHARED = [
    "--learning_rate",
    "0",
    "--max_train_steps",
    "4",
    "--eval_steps",
    "2",
    "--save_model_steps",
    "3",
    "--eval_num_timesteps",
    "5",
    "--eval_batch_size",
    "8",
    "--final_eval_batch_size",
    "24",
    "--eval_fid_steps",
    "2",
    "--eval_num_samples",
    "20",
    "--eval_feature_space",
    "random",
    "--num_sample_images",
    "16",
    "--ddpm_num_inference_steps",
    "4",
]
GRID_FILES = ("samples/step-2.png", "samples.png")
TAGS = [
    "eval/bpd_estimate_5_terms",
    "eval/bpd_estimate_5_terms_stderr",
    "eval/bpd",
    "eval/bpd_stderr",
    "eval/fid_random",
    "eval/kid_random",
]


def run_with(accelerate_launch, processes: int, out: Path, hf_home: Path) -> dict:
    """Train (and evaluate) with `processes` processes into `out`, caching statistics under `hf_home`; returns
    what the run wrote: its weights, tracked scalars and images, grids, results and cached statistics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HOME": str(hf_home)}
    result = subprocess.run(
        launch(accelerate_launch, processes, "--output_dir", str(out), *SHARED),
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(next((out / "logs").rglob("events.out.tfevents*")).parent)).Reload()
    (stats,) = (hf_home / "ddpm_hf" / "fid_stats").glob("*.safetensors")
    return {
        "num_processes": json.loads((out / "training_run.json").read_text())["run"]["num_processes"],
        "weights": unet_weights(out),
        "scalars": {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in TAGS},
        "images": [(e.step, e.encoded_image_string) for e in events.Images("samples")],
        "grids": {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in GRID_FILES},
        "results": json.loads((out / "training_run.json").read_text())["results"],
        "stats": (stats.name, stats.stat().st_mtime_ns, load_file(stats)),
    }


@pytest.mark.slow
def test_two_processes_evaluate_as_one(tmp_path, accelerate_launch):
    one, two = (run_with(accelerate_launch, n, tmp_path / f"run{n}", tmp_path / f"hf{n}") for n in (1, 2))
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert all(torch.equal(one["weights"][k], two["weights"][k]) for k in one["weights"]), "the same weights"
    assert one["grids"] == two["grids"], "the same PNG bytes"
    with PIL.Image.open(tmp_path / "run1" / "samples.png") as grid:
        assert grid.size == (294, 294), "4 x 4 tiles of 8 pixels, 2 apart: 42 pixels, enlarged 7 times"
    assert [step for step, _ in one["images"]] == [2, 3, 4] and one["images"] == two["images"]
    for tag in TAGS:
        steps = [step for step, _ in one["scalars"][tag]]
        assert steps == ([4] if tag in ("eval/bpd", "eval/bpd_stderr") else [2, 4]), tag
    # Each chunk is computed alike (one thread per process) in either run: the numbers are equal, not just close.
    assert one["scalars"] == two["scalars"]
    assert [r["metric"] for r in one["results"]] == ["bits_per_dim", "fid_random_features"]
    assert one["results"] == two["results"]
    (name_one, written, stats_one), (name_two, _, stats_two) = one["stats"], two["stats"]
    assert name_one == name_two and all(torch.equal(stats_one[k], stats_two[k]) for k in stats_one)
    # Two processes again, with the held-out statistics the one-process run cached: read, not computed again.
    cached = run_with(accelerate_launch, 2, tmp_path / "cached", tmp_path / "hf1")
    assert cached["stats"][:2] == (name_one, written), "the cache file is left as it was"
    assert cached["results"] == one["results"] and cached["scalars"] == one["scalars"]
