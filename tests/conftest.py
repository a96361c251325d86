"""Shared fixtures. Nothing here touches the network: the Hub is switched off before any import."""

import os
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# Caches (Hub downloads, dataset feature statistics, Inception weights) of this run only: nothing the user
# has cached changes what the tests see, and the tests write nothing into the user's caches.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="ddpm_hf-tests-hf-")
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="ddpm_hf-tests-torch-")

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


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; tests that build an Accelerator in-process start and end clean."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def accelerate_launch():
    """The command line of `accelerate launch` with N processes (N > 1: torchrun, gloo on the CPU), no config file."""

    def command(num_processes: int, script: Path, *args: str) -> list[str]:
        launcher = Path(sys.executable).parent / "accelerate"
        flags = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        if num_processes > 1:
            flags.append("--multi_gpu")
        return [str(launcher), "launch", "--num_processes", str(num_processes), *flags, str(script), *args]

    return command
