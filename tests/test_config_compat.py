"""Scheduler configs travel both ways between this package and stock diffusers."""

import json

import torch
from diffusers import DDIMScheduler, DDPMScheduler

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


def test_in_memory_configs_follow_diffusers_default_values_rule():
    """diffusers' ConfigMixin lists the arguments a scheduler took by default in `_use_default_values`, and another
    class loading that config in memory uses its own defaults for them. Ours behaves as diffusers' own pair
    (DDPMScheduler -> DDIMScheduler) does: what was given travels, what was defaulted does not."""
    given = {"beta_schedule": "squaredcos_cap_v2", "clip_sample": False}
    diffusers_pair = DDIMScheduler.from_config(DDPMScheduler(**given).config)
    ours_to_theirs = DDPMScheduler.from_config(PaperDDPMScheduler(**given).config)
    assert "timestep_spacing" in PaperDDPMScheduler(**given).config["_use_default_values"]
    for key, value in given.items():
        assert diffusers_pair.config[key] == value and ours_to_theirs.config[key] == value, key
    # Defaulted: each class's own default (DDIM's and DDPM's "leading"), as in diffusers.
    assert diffusers_pair.config.timestep_spacing == DDIMScheduler().config.timestep_spacing == "leading"
    assert ours_to_theirs.config.timestep_spacing == DDPMScheduler().config.timestep_spacing == "leading"
    # And back: a diffusers config that never named its spacing gets ours, the paper-friendly "trailing".
    assert PaperDDPMScheduler.from_config(DDPMScheduler().config).config.timestep_spacing == "trailing"
    # Given explicitly, our trailing spacing travels in memory ...
    theirs = DDPMScheduler.from_config(PaperDDPMScheduler(timestep_spacing="trailing").config)
    theirs.set_timesteps(10)
    assert theirs.config.timestep_spacing == "trailing" and theirs.timesteps[0] == 999


def test_saved_configs_hold_every_value(tmp_path):
    """`save_config` drops `_use_default_values` (diffusers does), so a saved config names every value and loads
    with it in any class: a pipeline folder keeps our trailing spacing in stock diffusers."""
    PaperDDPMScheduler().save_config(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert "_use_default_values" not in saved and saved["timestep_spacing"] == "trailing"
    assert DDPMScheduler.from_pretrained(tmp_path).config.timestep_spacing == "trailing"
    reloaded = PaperDDPMScheduler.from_pretrained(tmp_path)
    assert "_use_default_values" not in reloaded.config
    assert all(reloaded.config[k] == v for k, v in PaperDDPMScheduler().config.items() if not k.startswith("_"))


def test_diffusers_config_and_other_schedulers_keys_are_understood(google_cifar10_scheduler_config):
    theirs = DDPMScheduler(variance_type="fixed_small_log", timestep_spacing="leading", steps_offset=1)
    ours = PaperDDPMScheduler.from_config(theirs.config)
    assert ours.config.variance_type == "fixed_small_log"
    assert ours.config.timestep_spacing == "leading" and ours.config.steps_offset == 1
    ddim_like = {**google_cifar10_scheduler_config, "_class_name": "DDIMScheduler", "set_alpha_to_one": False}
    assert PaperDDPMScheduler.from_config(ddim_like).config.variance_type == "fixed_large"
