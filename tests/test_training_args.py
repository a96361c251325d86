"""Arguments: every flag documented, presets, config files and the command line in that order."""

import dataclasses
import json
from pathlib import Path

import pytest
from helpers.cli import script_help

from ddpm_hf.core.unets import training_unet_config
from ddpm_hf.jobs.arguments import (
    PRESETS,
    DataArguments,
    ModelArguments,
    TrainingArguments,
    check_train_args,
    parse_train_args,
)

SCRIPT = Path(__file__).resolve().parents[1] / "train_scripts" / "train_ddpm.py"


def test_help_documents_every_flag():
    out = script_help(SCRIPT)
    for cls in (DataArguments, ModelArguments, TrainingArguments):
        for f in dataclasses.fields(cls):
            assert f"--{f.name}" in out, f.name
            assert f.metadata.get("help"), f"{f.name} has no help text"
    assert "--preset" in out and "--config" in out


def test_defaults_are_the_embedded_cpu_job():
    args = parse_train_args([])
    assert args.data.dataset_name is None and args.data.train_data_dir is None
    assert args.model.unet == "small" and args.data.resolution == 8
    assert args.preset is None


def test_preset_then_config_file_then_command_line(tmp_path):
    args = parse_train_args(["--preset", "cifar10"])
    assert args.model.unet == "cifar10" and args.train.learning_rate == 2e-4 and args.train.lr_warmup_steps == 5000
    assert args.train.total_batch_size == 128 and args.train.ema_decay == 0.9999 and not args.train.ema_warmup
    assert args.data.random_flip and args.model.variance_type == "fixed_large" and args.train.max_grad_norm == 1.0
    assert parse_train_args(["--preset", "lsun_bedroom"]).data.random_flip is False

    config = tmp_path / "run.json"
    config.write_text(json.dumps({"preset": "cifar10", "learning_rate": 1e-4, "seed": 7}))
    args = parse_train_args(["--config", str(config), "--seed", "9"])
    assert args.preset == "cifar10" and args.model.unet == "cifar10"
    assert args.train.learning_rate == 1e-4 and args.train.seed == 9

    yaml_config = tmp_path / "run.yaml"
    yaml_config.write_text("resolution: 16\nrandom_flip: true\n")
    args = parse_train_args(["--config", str(yaml_config)])
    assert args.data.resolution == 16 and args.data.random_flip


def test_config_file_errors(tmp_path):
    with pytest.raises(ValueError, match=r"--config .*missing.json: no such file"):
        parse_train_args(["--config", str(tmp_path / "missing.json")])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rat": 1e-4}))
    with pytest.raises(ValueError, match=r"unknown arguments: \['learning_rat'\]"):
        parse_train_args(["--config", str(bad)])


def test_every_preset_builds_its_unet_at_its_resolution():
    for name in PRESETS:
        args = parse_train_args(["--preset", name])
        config = training_unet_config(args.model.unet, args.data.resolution)
        assert config["sample_size"] == args.data.resolution and args.train.max_train_steps >= 500_000, name


def test_a_batch_size_given_for_the_run_wins_over_the_presets_total():
    assert parse_train_args(["--preset", "cifar10"]).train.total_batch_size == 128
    args = parse_train_args(["--preset", "cifar10", "--train_batch_size", "64"])
    assert args.train.total_batch_size is None and args.train.train_batch_size == 64


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--lr_scheduler", "bogus"),
        ("--variance_type", "large"),
        ("--lr_scheduler", "piecewise_constant"),
        ("--prediction_type", "x0"),
        ("--beta_schedule", "cosine"),
        ("--mixed_precision", "fp8"),
        ("--report_to", "comet"),
        ("--eval_feature_space", "clip"),
        ("--hub_strategy", "sometimes"),
    ],
)
def test_enumerated_flags_are_refused_at_parse_time(flag, value, capsys):
    with pytest.raises(SystemExit):
        parse_train_args([flag, value])
    error = capsys.readouterr().err
    assert f"argument {flag}" in error and f"invalid choice: '{value}'" in error


def test_config_file_values_meet_the_same_choices(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"lr_scheduler": "bogus"}))
    with pytest.raises(ValueError, match=r"--lr_scheduler must be one of linear, cosine, .*, got 'bogus'"):
        check_train_args(parse_train_args(["--config", str(config)]))
    config.write_text(json.dumps({"loss_type": "nll"}))
    with pytest.raises(ValueError, match="--loss_type must be one of simple, vlb, hybrid, got 'nll'"):
        check_train_args(parse_train_args(["--config", str(config)]))
    config.write_text(json.dumps({"variance_type": "learned_range"}))
    with pytest.raises(ValueError, match="learned_range is trained by --loss_type hybrid or vlb"):
        check_train_args(parse_train_args(["--config", str(config)]))
    config.write_text(json.dumps({"hub_strategy": "sometimes", "push_to_hub": True}))
    with pytest.raises(ValueError, match="--hub_strategy must be one of end, every_save"):
        check_train_args(parse_train_args(["--config", str(config)]))


def test_help_lists_the_choices_and_boolean_flags_work_bare(capsys):
    with pytest.raises(SystemExit):
        parse_train_args(["--help"])
    help_text = capsys.readouterr().out
    assert "{linear,cosine,cosine_with_restarts," in help_text and "{no,fp16,bf16}" in help_text
    assert parse_train_args(["--hub_private_repo"]).hub.hub_private_repo is True
    assert parse_train_args(["--hub_private_repo", "false"]).hub.hub_private_repo is False
    assert parse_train_args([]).hub.hub_private_repo is None
    assert parse_train_args(["--random_flip", "--push_to_hub"]).data.random_flip is True


def test_report_to_takes_any_installed_tracker_and_logger_is_its_alias(tmp_path):
    import importlib.util

    assert parse_train_args(["--logger", "none"]).train.report_to == "none"
    assert parse_train_args(["--report_to", "all"]).train.report_to == "all"
    config = tmp_path / "run.yaml"
    config.write_text("logger: none\n")  # the old name, in a config file
    assert parse_train_args(["--config", str(config)]).train.report_to == "none"
    missing = next(name for name in ("mlflow", "aim", "dvclive", "swanlab") if importlib.util.find_spec(name) is None)
    with pytest.raises(ValueError, match=f"--report_to {missing} needs its package: pip install {missing}"):
        check_train_args(parse_train_args(["--report_to", missing]))
    check_train_args(parse_train_args(["--report_to", "tensorboard", "--run_name", "trial"]))


def test_channels_override_the_presets_and_help_names_each_presets_channels_and_resolutions(capsys):
    args = parse_train_args(["--unet", "tiny", "--channels", "1"])
    config = training_unet_config(args.model.unet, args.data.resolution, channels=args.model.channels)
    assert config["in_channels"] == config["out_channels"] == 1
    assert training_unet_config("small", 8)["in_channels"] == 1, "default: the preset's own"
    with pytest.raises(SystemExit):
        parse_train_args(["--channels", "2"])
    assert "argument --channels: invalid choice: 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_train_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    # The paper's CIFAR-10 UNet halves 32x32 three times (to 4x4), its 256x256 one five times (to 8x8).
    assert "cifar10 (3 channels, made for 32x32, resolution a multiple of 8)" in help_text
    assert "celebahq (3 channels, made for 256x256, resolution a multiple of 32)" in help_text
    assert "small (1 channel, made for 8x8, resolution a multiple of 2)" in help_text
    assert "--final_eval_batch_size 0 --num_sample_images 0" in help_text, "the quick trial is documented"


def test_two_sources_of_training_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Give --dataset_name or --train_data_dir, not both"):
        check_train_args(parse_train_args(["--dataset_name", "uoft-cs/cifar10", "--train_data_dir", str(tmp_path)]))
