"""Training a DDPM with L_simple (Ho et al. 2020, Algorithm 1) on one CPU, one GPU or many, through accelerate.

`DDPMTrainer(args).train()` is the whole job behind `train_scripts/train_ddpm.py`: it checks every
argument and the data before training, trains with gradient accumulation, clipping, a warm-up LR
schedule and an EMA of the weights, writes resumable checkpoints, logs to the chosen tracker, and
saves the EMA pipeline, a sample grid and a model card.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from . import checkpoints
from .data import StepSampler, load_image_data, step_generator, to_model_range
from .images import make_grid
from .likelihood import bits_per_dim
from .model_card import write_model_card
from .pipeline_ddpm import DDPMPipeline
from .scheduling_ddpm_paper import PaperDDPMScheduler
from .training_args import DDPMTrainArguments
from .unets import UNET_PRESETS, unet_config

logger = get_logger(__name__)

# Datasets up to this size live on the accelerator; larger ones stay in (pinned) host memory.
MAX_DEVICE_DATA_BYTES = 2**30


class DDPMTrainer:
    """Set up (and validate) a training run; `train()` runs it."""

    def __init__(self, args: DDPMTrainArguments):
        self.args = args
        a, m, d = args.train, args.model, args.data
        self.output_dir = Path(a.output_dir)
        self.checkpoint_root = self.output_dir / "checkpoints"
        if m.variance_type == "learned_range":
            raise ValueError("--variance_type learned_range needs the hybrid loss of Nichol & Dhariwal; not offered.")
        config = _unet_config(m, d.resolution)
        self.resume_path = self._check_output_dir()
        self.accelerator = accelerator = Accelerator(
            # Without an accelerator, `accelerate launch --multi_gpu` starts torchrun processes that accelerate
            # leaves unconnected unless told to use the CPU: then they join a gloo group (MULTI_CPU).
            cpu=not torch.accelerator.is_available(),
            gradient_accumulation_steps=a.gradient_accumulation_steps,
            mixed_precision=a.mixed_precision,
            log_with=None if a.logger == "none" else a.logger,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / a.logging_dir)
            ),
        )
        self.batch_size = _per_process_batch(a, accelerator.num_processes)
        self.total_batch_size = self.batch_size * accelerator.num_processes * a.gradient_accumulation_steps
        self.scheduler = PaperDDPMScheduler(
            num_train_timesteps=m.num_train_timesteps,
            beta_schedule=m.beta_schedule,
            beta_start=m.beta_start,
            beta_end=m.beta_end,
            prediction_type=m.prediction_type,
            variance_type=m.variance_type,
        )

        with accelerator.main_process_first():
            self.data = load_image_data(d, channels=config["in_channels"])
        if self.data.skipped:
            logger.warning(f"Skipped {len(self.data.skipped)} unreadable images, e.g. {self.data.skipped[:3]}")
        self.sampler = StepSampler(
            len(self.data.train), self.batch_size, accelerator.num_processes, accelerator.process_index, a.seed
        )
        steps_per_epoch = self.sampler.batches_per_epoch // a.gradient_accumulation_steps
        if a.max_train_steps is None and a.num_epochs is None:
            raise ValueError("Give --max_train_steps or --num_epochs.")
        self.max_steps = a.max_train_steps if a.max_train_steps is not None else a.num_epochs * steps_per_epoch
        if self.max_steps < 1:
            raise ValueError(f"Nothing to train: {self.max_steps} optimizer steps.")

        if accelerator.device.type == "cpu":
            torch.set_num_threads(a.cpu_threads or _cores_per_local_process())
        set_seed(a.seed)
        unet = UNet2DModel(**config)
        if a.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        if a.channels_last:
            unet = unet.to(memory_format=torch.channels_last)
        if a.allow_tf32:
            if torch.cuda.is_available():
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
            else:
                logger.warning("--allow_tf32 has no effect without a CUDA device.")
        self.ema = (
            EMAModel(
                unet.parameters(),
                decay=a.ema_decay,
                # diffusers' EMAModel always warms up unless the floor equals the decay: a fixed decay.
                min_decay=0.0 if a.ema_warmup else a.ema_decay,
                use_ema_warmup=a.ema_warmup,
                inv_gamma=a.ema_inv_gamma,
                power=a.ema_power,
                foreach=True,
            )
            if a.use_ema
            else None
        )
        optimizer = torch.optim.AdamW(
            unet.parameters(),
            lr=a.learning_rate,
            betas=(a.adam_beta1, a.adam_beta2),
            weight_decay=a.adam_weight_decay,
            eps=a.adam_epsilon,
            fused=accelerator.device.type == "cuda",
        )
        # Not passed to `accelerator.prepare`, which would step it once per process: it is stepped once per
        # optimizer step, so warm-up and decay count optimizer steps whatever the processes and accumulation.
        self.lr_scheduler = get_scheduler(
            a.lr_scheduler, optimizer, num_warmup_steps=a.lr_warmup_steps, num_training_steps=self.max_steps
        )
        self.sample_unet = UNet2DModel.from_config(unet.config).to(accelerator.device).eval()
        self.unet, self.optimizer = accelerator.prepare(torch.compile(unet) if a.compile else unet, optimizer)
        accelerator.register_for_checkpointing(self.lr_scheduler)
        if self.ema is not None:
            self.ema.to(accelerator.device)
            accelerator.register_for_checkpointing(self.ema)
        on_device = self.data.train.numel() <= MAX_DEVICE_DATA_BYTES
        self.images = self.data.train.to(accelerator.device) if on_device else self.data.train.pin_memory()
        self.global_step = 0

    # ------------------------------------------------------------------ checks

    def _check_output_dir(self) -> Path | None:
        """An output folder that holds another run is an error unless resuming; the checkpoint must exist."""
        a = self.args.train
        if a.resume_from_checkpoint is not None:
            return checkpoints.resolve(a.resume_from_checkpoint, self.checkpoint_root)
        if checkpoints.complete_checkpoints(self.checkpoint_root) or (self.output_dir / "model_index.json").exists():
            raise ValueError(
                f"--output_dir {self.output_dir} holds another run. Pass --resume_from_checkpoint latest to continue "
                "it, or choose another --output_dir."
            )
        return None

    # ------------------------------------------------------------------ training

    def train(self) -> Path:
        """Train to `max_steps` optimizer steps, then save the pipeline, samples and card; returns `output_dir`."""
        a, accelerator = self.args.train, self.accelerator
        if self.resume_path is not None:
            accelerator.load_state(str(self.resume_path))
            self.global_step = checkpoints.read_state(self.resume_path)["global_step"]
            logger.info(f"Resumed from {self.resume_path} at step {self.global_step}")
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "train_args.json").write_text(json.dumps(self.args.to_dict(), indent=2))
        if a.logger != "none":
            accelerator.init_trackers("ddpm", config=_scalar_config(self.args.to_dict()))

        device = accelerator.device
        loss_sum = torch.zeros((), device=device)
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        grad_norm = torch.zeros((), device=device)
        micro_step = self.global_step * a.gradient_accumulation_steps
        progress = tqdm(
            total=self.max_steps, initial=self.global_step, disable=not accelerator.is_main_process, desc="train"
        )
        last_time, last_step = time.perf_counter(), self.global_step
        while self.global_step < self.max_steps:
            with accelerator.accumulate(self.unet):
                loss = self._loss(micro_step)
                accelerator.backward(loss)
                if accelerator.sync_gradients and a.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(self.unet.parameters(), a.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            micro_step += 1
            loss_sum += loss.detach()
            nonfinite |= ~torch.isfinite(loss.detach())
            if not accelerator.sync_gradients:
                continue
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step(self.unet.parameters())
            self.global_step += 1
            progress.update(1)
            step = self.global_step
            if _every(step, a.logging_steps) or step == self.max_steps:
                self._stop_if_nonfinite(nonfinite)
                now = time.perf_counter()
                steps_per_second = (step - last_step) / (now - last_time)
                micro_steps = (step - last_step) * a.gradient_accumulation_steps
                logs = {
                    "loss": accelerator.reduce(loss_sum, "mean").item() / micro_steps,
                    "lr": self.lr_scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    "steps_per_second": steps_per_second,
                    "images_per_second": steps_per_second * self.total_batch_size,
                }
                if self.ema is not None:
                    logs["ema_decay"] = self.ema.cur_decay_value
                accelerator.log(logs, step=step)
                progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", it_s=f"{steps_per_second:.1f}")
                loss_sum.zero_()
                last_time, last_step = time.perf_counter(), step
            if _every(step, a.checkpointing_steps):
                self._stop_if_nonfinite(nonfinite)
                self._save_checkpoint()
            if _every(step, a.save_images_steps) and step < self.max_steps:
                self._sample_grid(self.output_dir / "samples" / f"step-{step}.png")
            if _every(step, a.eval_steps):
                self._evaluate()
            if _every(step, a.save_model_steps) and step < self.max_steps:
                self._save_pipeline()
        progress.close()
        self._stop_if_nonfinite(nonfinite)
        self._save_pipeline()
        accelerator.end_training()
        return self.output_dir

    def _loss(self, micro_step: int) -> torch.Tensor:
        """L_simple on this process's micro-batch, from the micro-step's own generator."""
        device = self.accelerator.device
        generator = step_generator(self.args.train.seed, micro_step, self.accelerator.process_index, device)
        indices = self.sampler.indices(micro_step).to(self.images.device)
        x0 = to_model_range(self.images[indices].to(device, non_blocking=True), generator, self.args.data.random_flip)
        return l_simple(
            self.unet, self.scheduler, x0, generator, self.accelerator.autocast, self.args.train.channels_last
        )

    def _stop_if_nonfinite(self, nonfinite: torch.Tensor) -> None:
        if bool(self.accelerator.reduce(nonfinite.float(), "max")):
            found = checkpoints.complete_checkpoints(self.checkpoint_root)
            last = f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
            raise RuntimeError(
                f"The loss became non-finite by step {self.global_step}; stopped without saving ({last}). "
                "Lower --learning_rate, raise --lr_warmup_steps, or train in full precision."
            )

    # ------------------------------------------------------------------ outputs

    def _save_checkpoint(self) -> None:
        accelerator = self.accelerator
        tmp = checkpoints.temporary_dir(self.checkpoint_root, self.global_step)
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"global_step": self.global_step, "max_steps": self.max_steps, "seed": self.args.train.seed}
            path = checkpoints.finish(
                self.checkpoint_root, self.global_step, state, self.args.train.checkpoints_total_limit
            )
            logger.info(f"Saved {path}")
        accelerator.wait_for_everyone()

    def _pipeline(self) -> DDPMPipeline:
        """The pipeline of the weights that are sampled and saved: the EMA ones when an EMA is kept."""
        if self.ema is not None:
            self.ema.copy_to(self.sample_unet.parameters())
        else:
            self.sample_unet.load_state_dict(self.accelerator.unwrap_model(self.unet).state_dict())
        pipe = DDPMPipeline(self.sample_unet, self.scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _sample_grid(self, path: Path) -> None:
        if not self.accelerator.is_main_process:
            return
        a = self.args.train
        images = self._pipeline()(
            batch_size=a.num_sample_images,
            generator=torch.Generator(self.accelerator.device).manual_seed(a.seed),
            num_inference_steps=self.args.model.ddpm_num_inference_steps,
        ).images
        grid = make_grid(images)
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        array = np.asarray(grid.convert("RGB"))
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"samples": array[None]}, step=self.global_step, dataformats="NHWC")
            else:
                tracker.log_images({"samples": [array]}, step=self.global_step)

    def _evaluate(self) -> None:
        """The bound in bits/dim of the sampled weights on a fixed held-out batch (strided when asked)."""
        if not self.accelerator.is_main_process:
            return
        a = self.args.train
        x0 = to_model_range(self.data.eval[: a.eval_batch_size].to(self.accelerator.device), None, False)
        bound = bits_per_dim(
            self._pipeline().unet,
            self.scheduler,
            x0,
            generator=torch.Generator(self.accelerator.device).manual_seed(a.seed),
            num_timesteps=a.eval_num_timesteps,
        )
        name = f"eval/bpd_estimate_{len(bound.timesteps)}_timesteps" if bound.is_estimate else "eval/bpd"
        self.accelerator.log({name: bound.total_bpd.mean().item()}, step=self.global_step)

    def _save_pipeline(self) -> None:
        """The EMA pipeline (safetensors), a sample grid and a model card in `output_dir`, from the main process."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            self._pipeline().save_pretrained(self.output_dir)
            self._sample_grid(self.output_dir / "samples.png")
            write_model_card(self.output_dir, self.args, self._run_facts())
        accelerator.wait_for_everyone()

    def _run_facts(self) -> dict:
        accelerator, device = self.accelerator, self.accelerator.device
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
        return {
            "dataset": self.data.source,
            "num_train_images": len(self.data.train),
            "num_eval_images": len(self.data.eval),
            "channels": self.sample_unet.config.in_channels,
            "num_parameters": sum(p.numel() for p in self.sample_unet.parameters()),
            "global_step": self.global_step,
            "max_steps": self.max_steps,
            "per_process_batch_size": self.batch_size,
            "effective_batch_size": self.total_batch_size,
            "num_processes": accelerator.num_processes,
            "precision": accelerator.mixed_precision,
            "hardware": f"{accelerator.num_processes} x {device.type} ({device_name})",
        }


def l_simple(
    model: torch.nn.Module,
    scheduler: PaperDDPMScheduler,
    x0: torch.Tensor,
    generator: torch.Generator,
    autocast: Callable[[], AbstractContextManager],
    channels_last: bool = False,
) -> torch.Tensor:
    """Algorithm 1's loss || target - model(x_t, t) ||^2, t ~ U{0..T-1}, eps ~ N(0, I), drawn from `generator`.

    The target is eps, x_0 or v per `scheduler.config.prediction_type`. Noise and x_t are float32 and
    only the model runs under `autocast()`, so bf16/fp16 training keeps the small-t noise.
    """
    t = torch.randint(0, len(scheduler), (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    kind = scheduler.config.prediction_type
    target = noise if kind == "epsilon" else x0 if kind == "sample" else scheduler.get_velocity(x0, noise, t)
    if channels_last:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
    with autocast():
        prediction = model(x_t, t).sample
    return F.mse_loss(prediction.float(), target)


def _cores_per_local_process() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def _every(step: int, interval: int | None) -> bool:
    return bool(interval) and step % interval == 0


def _per_process_batch(a, num_processes: int) -> int:
    if a.total_batch_size is None:
        return a.train_batch_size
    per_step = num_processes * a.gradient_accumulation_steps
    if a.total_batch_size % per_step:
        raise ValueError(
            f"--total_batch_size {a.total_batch_size} is not divisible by {num_processes} processes x "
            f"{a.gradient_accumulation_steps} accumulation steps."
        )
    return a.total_batch_size // per_step


def _unet_config(m, resolution: int) -> dict:
    """The UNet config of a preset or a config.json, at the training resolution, checked against it."""
    if m.unet in UNET_PRESETS:
        config = unet_config(m.unet)
    elif Path(m.unet).exists():
        config = {k: v for k, v in UNet2DModel.load_config(m.unet).items() if not k.startswith("_")}
    else:
        raise ValueError(f"--unet {m.unet!r} is neither a preset ({sorted(UNET_PRESETS)}) nor a config file.")
    config["sample_size"] = resolution
    if m.dropout is not None:
        config["dropout"] = m.dropout
    factor = 2 ** (len(config["down_block_types"]) - 1)
    if resolution < factor or resolution % factor:
        raise ValueError(
            f"--resolution {resolution} does not suit the UNet: its {len(config['down_block_types'])} levels halve "
            f"the image {int(math.log2(factor))} times, so the resolution must be a multiple of {factor}."
        )
    return config


def _scalar_config(values: dict) -> dict:
    """Tracker hyperparameters must be scalars: None and the rest become strings."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}
