"""ddpm_hf: Denoising Diffusion Probabilistic Models (Ho et al. 2020) for the Hugging Face ecosystem."""

from .chain import DiffusionChain
from .likelihood import VariationalBound, bits_per_dim, discretized_gaussian_log_likelihood, normal_kl, prior_bpd
from .pipeline_ddpm import DDPMPipeline, DDPMPipelineOutput
from .scheduling_ddpm_paper import PaperDDPMScheduler, PaperDDPMSchedulerOutput
from .unets import UNET_PRESETS, build_unet, unet_config

__version__ = "0.1.0"

__all__ = [
    "UNET_PRESETS",
    "DDPMPipeline",
    "DDPMPipelineOutput",
    "DiffusionChain",
    "PaperDDPMScheduler",
    "PaperDDPMSchedulerOutput",
    "VariationalBound",
    "bits_per_dim",
    "build_unet",
    "discretized_gaussian_log_likelihood",
    "normal_kl",
    "prior_bpd",
    "unet_config",
]
