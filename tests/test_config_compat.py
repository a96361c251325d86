"""Scheduler configs travel both ways between this package and stock diffusers."""

import json

import torch
from diffusers import DDPMScheduler

from ddpm_hf import PaperDDPMScheduler


def test_google_cifar10_config_loads_with_from_pretrained_and_from_config(tmp_path, google_cifar10_scheduler_config):
    (tmp_path / "scheduler_config.json").write_text(json.dumps(google_cifar10_scheduler_config))
    for scheduler in (
        PaperDDPMScheduler.from_pretrained(tmp_path),
        PaperDDPMScheduler.from_config(google_cifar10_scheduler_config),
    ):
        assert isinstance(scheduler, PaperDDPMScheduler)
        assert scheduler.config.variance_type == "fixed_large"
        assert scheduler.config.num_train_timesteps == 1000
        assert scheduler.config.clip_sample is True
        torch.testing.assert_close(scheduler.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))


def test_config_written_here_loads_in_stock_diffusers(tmp_path):
    ours = PaperDDPMScheduler(
        num_train_timesteps=500,
        beta_schedule="squaredcos_cap_v2",
        variance_type="fixed_large",
        prediction_type="v_prediction",
        clip_sample_range=2.0,
        timestep_spacing="linspace",
    )
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "PaperDDPMScheduler"
    theirs = DDPMScheduler.from_pretrained(tmp_path)
    reloaded = PaperDDPMScheduler.from_pretrained(tmp_path)
    for key, value in ours.config.items():
        if not key.startswith("_"):
            assert theirs.config[key] == value, key
            assert reloaded.config[key] == value, key


def test_in_memory_config_keeps_our_defaults_in_diffusers():
    """Our default spacing ("trailing") differs from diffusers' ("leading"); from_config must not swap it."""
    theirs = DDPMScheduler.from_config(PaperDDPMScheduler().config)
    assert theirs.config.timestep_spacing == "trailing"
    theirs.set_timesteps(10)
    assert theirs.timesteps[0] == 999


def test_diffusers_config_and_other_schedulers_keys_are_understood(google_cifar10_scheduler_config):
    theirs = DDPMScheduler(variance_type="fixed_small_log", timestep_spacing="leading", steps_offset=1)
    ours = PaperDDPMScheduler.from_config(theirs.config)
    assert ours.config.variance_type == "fixed_small_log"
    assert ours.config.timestep_spacing == "leading" and ours.config.steps_offset == 1
    ddim_like = {**google_cifar10_scheduler_config, "_class_name": "DDIMScheduler", "set_alpha_to_one": False}
    assert PaperDDPMScheduler.from_config(ddim_like).config.variance_type == "fixed_large"
