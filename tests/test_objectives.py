"""The trainer's objectives as a user meets them: the flags, a hybrid run whose learned-variance pipeline loads,
samples (in stock diffusers too), is evaluated and drawn like any other, and the improved-DDPM preset."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.stock import run_stock_diffusers

from ddpm_hf import DDPMPipeline
from ddpm_hf.core.unets import build_unet
from ddpm_hf.jobs.arguments import check_train_args, parse_train_args

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "train_scripts"
sys.path.insert(0, str(SCRIPTS))
import train_ddpm  # noqa: E402

T = 20
TINY = (
    f"--unet tiny --num_train_timesteps {T} --eval_num_timesteps 5 --train_batch_size 8 --eval_steps 0 "
    "--checkpointing_steps 0 "
    "--num_sample_images 0 --cpu_threads 1"
).split()


def test_hybrid_learns_range_variances_unless_told_otherwise():
    args = parse_train_args(["--loss_type", "hybrid"])
    assert args.model.variance_type == "learned_range"
    assert parse_train_args(["--loss_type", "vlb"]).model.variance_type == "fixed_large"
    assert parse_train_args([]).train.loss_type == "simple"


def test_the_improved_ddpm_preset_is_nichol_and_dhariwals_cifar10():
    args = parse_train_args(["--preset", "improved_cifar10"])
    model, train = args.model, args.train
    assert (model.num_train_timesteps, model.beta_schedule, model.variance_type) == (
        4000,
        "squaredcos_cap_v2",
        "learned_range",
    )
    assert (train.loss_type, train.vlb_weight, train.learning_rate, train.total_batch_size) == (
        "hybrid",
        0.001,
        1e-4,
        128,
    )
    unet = build_unet(model.unet)
    # --num_channels 128 --num_res_blocks 3 --learn_sigma True --dropout 0.3, attention at 16x16 and 8x8.
    config = unet.config
    assert (config.out_channels, config.dropout, config.layers_per_block) == (6, 0.3, 3)
    assert config.block_out_channels == (128, 256, 256, 256)
    attention_levels = [i for i, kind in enumerate(config.down_block_types) if kind.startswith("Attn")]
    assert [32 // 2**i for i in attention_levels] == [16, 8]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--loss_type", "hybrid", "--variance_type", "fixed_small"], "--loss_type hybrid learns the variances"),
        (["--variance_type", "learned_range"], "is trained by --loss_type hybrid or vlb"),
        (["--loss_type", "vlb", "--snr_gamma", "5"], "--snr_gamma weights the squared error"),
        (["--snr_gamma", "-1"], "must be positive"),
        (["--loss_type", "hybrid", "--vlb_weight", "0"], "--vlb_weight must be positive"),
    ],
)
def test_objectives_that_cannot_train_are_refused_before_any_work(argv, message):
    with pytest.raises(ValueError, match=message):
        check_train_args(parse_train_args(argv))


def test_a_bad_loss_type_is_argparses_error_naming_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_ddpm.main(["--loss_type", "nll", "--output_dir", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nll' (choose from 'simple', 'vlb', 'hybrid')" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_hybrid_run_samples_evaluates_and_draws_like_any_other(tmp_path):
    out = tmp_path / "hybrid"
    train = [sys.executable, str(SCRIPTS / "train_ddpm.py"), *TINY, "--loss_type", "hybrid", "--max_train_steps", "4"]
    subprocess.run(
        [*train, "--timestep_sampler", "loss_aware", "--output_dir", str(out)], check=True, capture_output=True
    )

    pipe = DDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.variance_type == "learned_range" and pipe.unet.config.out_channels == 6
    assert "L_hybrid = L_simple + 0.001 L_vlb" in (out / "README.md").read_text()
    assert "loss-aware (importance-sampled) timesteps" in (out / "README.md").read_text()
    ours = pipe(batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=T, output_type="np")
    np.testing.assert_allclose(ours.images, run_stock_diffusers(out, tmp_path / "stock.npy", T), rtol=1e-4, atol=1e-5)

    evaluate = [sys.executable, str(SCRIPTS / "evaluate_ddpm.py"), "--model", str(out), "--output_dir", str(tmp_path)]
    evaluated = subprocess.run(
        [
            *evaluate,
            "--metrics",
            "bpd,fid",
            "--num_images",
            "16",
            "--num_samples",
            "8",
            "--feature_space",
            "random",
            "--num_inference_steps",
            f"5,{T}",
        ],
        capture_output=True,
        text=True,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    results = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    assert 0 < results["bound"]["bpd"] < 16, "the bound of a learned-variance model, in bits/dim"
    assert "ddpm learned_range, 5 steps: FID" in evaluated.stdout  # the quality-against-steps sweep
    figures = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "paper_figures.py"),
            "--model",
            str(out),
            "--output_dir",
            str(tmp_path / "figures"),
            "--figures",
            "progressive,interpolation",
        ],
        capture_output=True,
        text=True,
    )
    assert figures.returncode == 0, figures.stderr[-2000:]
    assert (tmp_path / "figures" / "progressive_x0.png").is_file()
    assert (tmp_path / "figures" / "interpolation.png").is_file()
