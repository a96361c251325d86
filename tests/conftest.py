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
