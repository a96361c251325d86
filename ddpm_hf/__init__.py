"""ddpm_hf: Denoising Diffusion Probabilistic Models (Ho et al. 2020) for the Hugging Face ecosystem.

Three layers, each importing only those below it:

- `ddpm_hf.core`: the paper (schedules, chain, scheduler, pipeline, bound, loss, UNets, image conversions);
- `ddpm_hf.tools`: data, distribution over processes, evaluation and metrics, rate-distortion, plots, the run
  folder, checkpoints, model cards, the Hub;
- `ddpm_hf.jobs`: arguments and presets, the trainer, the evaluator (what `train_scripts/` call).

The names below are the core's; importing them loads no tool or job.
"""

from .core import *  # noqa: F403  (the core's public names are the package's)
from .core import __all__ as __all__

__version__ = "0.1.0"
