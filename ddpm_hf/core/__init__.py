"""The paper's core: schedules, the diffusion chain, the scheduler, the pipeline (with named samplers), the bound
and the training loss, UNet presets and image conversions. It imports torch, numpy, PIL and diffusers (with what
diffusers itself loads), and nothing of `ddpm_hf.tools` or `ddpm_hf.jobs`."""

from .chain import DiffusionChain
from .likelihood import VariationalBound, bits_per_dim, discretized_gaussian_log_likelihood, normal_kl, prior_bpd
from .losses import l_simple
from .pipeline_ddpm import DDPMPipeline, DDPMPipelineOutput
from .samplers import SAMPLERS, make_scheduler
from .scheduling_ddpm_paper import PaperDDPMScheduler, PaperDDPMSchedulerOutput
from .unets import UNET_PRESETS, build_unet, unet_config

__all__ = [
    "SAMPLERS",
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
    "l_simple",
    "make_scheduler",
    "normal_kl",
    "prior_bpd",
    "unet_config",
]
