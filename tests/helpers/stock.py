"""Sampling with stock diffusers, in a Python process that never imports ddpm_hf: what we save must load and
sample there as it does here."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

STOCK_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler
    pipe = DDPMPipeline.from_pretrained(sys.argv[1])
    assert type(pipe.scheduler) is DDPMScheduler
    pipe.set_progress_bar_config(disable=True)
    steps = int(sys.argv[3])
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(7), num_inference_steps=steps,
                  output_type="np").images
    assert "ddpm_hf" not in sys.modules
    np.save(sys.argv[2], images)
    """
)


def run_stock_diffusers(folder: Path, out: Path, steps: int) -> np.ndarray:
    """Sample 2 images with seed 7 over `steps` steps of diffusers' DDPMScheduler; as floats in [0, 1], NHWC."""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", STOCK_SCRIPT, str(folder), str(out), str(steps)], check=True, env=env)
    return np.load(out)
