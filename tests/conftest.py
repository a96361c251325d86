"""Shared fixtures. Nothing here touches the network: the Hub is switched off before any import."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import pytest
import torch

from ddpm_hf import build_unet


@pytest.fixture
def tiny_unet():
    torch.manual_seed(0)
    return build_unet("tiny").eval()


@pytest.fixture
def google_cifar10_scheduler_config():
    """scheduler_config.json of the Hub model google/ddpm-cifar10-32, as diffusers 0.1.1 wrote it."""
    return {
        "_class_name": "DDPMScheduler",
        "_diffusers_version": "0.1.1",
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "clip_sample": True,
        "num_train_timesteps": 1000,
        "trained_betas": None,
        "variance_type": "fixed_large",
    }
