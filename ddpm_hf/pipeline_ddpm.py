"""Unconditional image generation with the reverse process of Ho et al. (2020), Algorithm 2."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .scheduling_ddpm_paper import PaperDDPMScheduler, check_generators

OUTPUT_TYPES = ("pil", "np", "pt")
Images = list[PIL.Image.Image] | np.ndarray | torch.Tensor


@dataclass
class DDPMPipelineOutput(BaseOutput):
    """Output of `DDPMPipeline.__call__`.

    Args:
        images: the samples x_0 as a list of PIL images, a `(batch, height, width, channels)` float array
            in [0, 1], or a `(batch, channels, height, width)` float tensor in [0, 1].
        trajectory_timesteps (`list[int]`, *optional*): the timesteps t at which the trajectory was recorded,
            in sampling order (descending).
        pred_original_samples (`list`, *optional*): for each of them, the model's x_0 prediction at x_t
            (the paper's progressive generation, Fig. 6), in the format of `images`.
        noisy_samples (`list`, *optional*): for each of them, x_t itself, in the format of `images`.
    """

    images: Images
    trajectory_timesteps: list[int] | None = None
    pred_original_samples: list[Images] | None = None
    noisy_samples: list[Images] | None = None


class DDPMPipeline(DiffusionPipeline):
    """Sampling from a DDPM: x_T ~ N(0, I), then `scheduler.step` from t = T down to the chain's last step.

    Components:
        unet (`UNet2DModel`): the denoising network eps_theta(x_t, t) (or x_0 / v, per the scheduler).
        scheduler (`PaperDDPMScheduler`): diffusers' `DDPMScheduler` is accepted and converted, so folders
            and Hub repos made by diffusers load as they are.

    `save_pretrained` writes a folder that stock `diffusers.DDPMPipeline.from_pretrained` loads.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: PaperDDPMScheduler):
        super().__init__()
        if isinstance(scheduler, DDPMScheduler):
            scheduler = PaperDDPMScheduler.from_config(scheduler.config)
        if not isinstance(scheduler, PaperDDPMScheduler):
            raise ValueError(
                f"`scheduler` must be a PaperDDPMScheduler or diffusers' DDPMScheduler, got {type(scheduler).__name__}."
            )
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        timesteps: list[int] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        trajectory_timesteps: Sequence[int] | None = None,
    ) -> DDPMPipelineOutput | tuple:
        """Generate images.

        Args:
            batch_size (`int`, defaults to 1): the number of images.
            generator (`torch.Generator` or a list of `batch_size` of them, *optional*): for x_T and every step's
                noise; a list makes each image reproducible on its own.
            num_inference_steps (`int`, *optional*): K steps of a respaced chain (Nichol & Dhariwal 2021);
                defaults to the scheduler's T, the paper's sampler.
            timesteps (`list[int]`, *optional*): explicit descending timesteps instead of `num_inference_steps`.
            latents (`torch.Tensor` of shape `(batch_size, channels, height, width)`, *optional*): x_T; drawn
                from `generator` when not given.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, defaults to `True`): return a `DDPMPipelineOutput` rather than a tuple.
            trajectory_timesteps (`Sequence[int]` or `torch.Tensor`, *optional*): timesteps of the sampling chain
                at which to record x_t and the x_0 prediction.

        Returns:
            `DDPMPipelineOutput`, or a tuple of its non-empty fields.

        Example:
            >>> from ddpm_hf import DDPMPipeline
            >>> pipe = DDPMPipeline.from_pretrained("google/ddpm-cifar10-32")
            >>> image = pipe(generator=torch.Generator().manual_seed(0)).images[0]
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")
        check_generators(generator, batch_size)
        size = self.unet.config.sample_size
        shape = (batch_size, self.unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"`latents` has shape {tuple(latents.shape)}; expected {shape}.")
        if num_inference_steps is None and timesteps is None:
            num_inference_steps = self.scheduler.config.num_train_timesteps
        device = self._execution_device
        self.scheduler.set_timesteps(num_inference_steps, device=device, timesteps=timesteps)
        chain_timesteps = self.scheduler.timesteps.tolist()
        record = set() if trajectory_timesteps is None else {int(t) for t in trajectory_timesteps}
        if not record <= set(chain_timesteps):
            raise ValueError(
                f"`trajectory_timesteps` {sorted(record - set(chain_timesteps))} are not in the sampling chain."
            )

        # The state x_t stays float32 whatever the UNet's dtype; the scheduler's arithmetic is float32.
        if latents is None:
            sample = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        else:
            sample = latents.to(device=device, dtype=torch.float32)
        trajectory = []
        for i, t in enumerate(self.progress_bar(chain_timesteps)):
            model_output = self.unet(sample.to(self.unet.dtype), self.scheduler.timesteps[i]).sample
            step = self.scheduler.step(model_output, t, sample, generator=generator)
            if t in record:
                trajectory.append((t, step.pred_original_sample, sample))
            sample = step.prev_sample

        self.maybe_free_model_hooks()
        output = DDPMPipelineOutput(images=self._postprocess(sample, output_type))
        if trajectory:
            output.trajectory_timesteps = [t for t, _, _ in trajectory]
            output.pred_original_samples = [self._postprocess(x0, output_type) for _, x0, _ in trajectory]
            output.noisy_samples = [self._postprocess(x_t, output_type) for _, _, x_t in trajectory]
        return output if return_dict else output.to_tuple()

    def _postprocess(self, sample: torch.Tensor, output_type: str) -> Images:
        """[-1, 1] model space to [0, 1] images in the requested format."""
        images = (sample.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).numpy()
        return images if output_type == "np" else self.numpy_to_pil(images)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Save as diffusers does (safetensors weights), declaring diffusers' `DDPMScheduler` in
        `model_index.json` so that stock diffusers loads the folder; this pipeline converts it back."""
        own = self.config["scheduler"]
        self.register_to_config(scheduler=("diffusers", "DDPMScheduler"))
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.register_to_config(scheduler=own)
