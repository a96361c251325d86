"""Training a DDPM with L_simple (Ho et al. 2020, Algorithm 1) on one CPU, one GPU or many, through accelerate.

`DDPMTrainer(args).train()` is the whole job behind `train_scripts/train_ddpm.py`: it checks every
argument and the data before training, trains with gradient accumulation, clipping, a warm-up LR
schedule and an EMA of the weights, writes resumable checkpoints, logs to the chosen tracker, and
saves the EMA pipeline, a sample grid and a model card. Its shape is improved-diffusion's `TrainLoop`:
`train` runs steps; a step is forward-backward on each micro-batch, then the update; after each step
come logging, checkpoints, samples, evaluations and saves, each a method of its own.

Faults. On SIGTERM during the steps (a scheduler's preemption), every process finishes the optimizer step they
agree on (`ddpm_hf.tools.preemption`), that step is checkpointed (unless --checkpointing_steps 0) and `train` raises
`Preempted`: exit status 75 (EX_TEMPFAIL), a run to continue with --resume_from_checkpoint latest. An `accelerate
launch` that receives the SIGTERM itself forwards it, returns 143 (128 + SIGTERM) whatever its workers returned, and
SIGKILLs them after its grace: 30 s with several processes (torchrun's TORCH_ELASTIC_SHUTDOWN_TIMEOUT), 5 s with
one. When a process dies, the others' exchanges with it fail at once and torchrun stops them, naming the dead rank;
a machine that vanishes without closing its connections stops the others after --ddp_timeout. A checkpoint is
written under a temporary name and renamed when complete, so the last complete one survives all of these. On several
machines, checkpoints are finished on the main process's disk, or with --save_on_each_node on each machine's own;
a resume checks on every process that it finds the files it loads.
"""

from __future__ import annotations

import logging
import platform
import shutil
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import numpy as np
import PIL.Image
import torch
from accelerate import Accelerator
from accelerate.utils import (
    InitProcessGroupKwargs,
    ProjectConfiguration,
    broadcast_object_list,
    gather_object,
    set_seed,
)
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..core.images import enlarged, make_grid, to_model_range
from ..core.losses import DiffusionLoss, DiffusionLossOutput
from ..core.pipeline_ddpm import DDPMPipeline
from ..core.scheduling_ddpm_paper import PaperDDPMScheduler
from ..core.timestep_sampling import make_timestep_sampler
from ..core.unets import training_unet_config
from ..tools import checkpoints, preemption
from ..tools.cpu_threads import set_cpu_threads
from ..tools.data import StepSampler, load_image_data, micro_batches, random_flip, step_generator
from ..tools.distributed import on_main_process
from ..tools.evaluation import bound_entry, evaluate_bound, fid_entry, generate, sample_metrics, score_samples
from ..tools.hub import HubPublisher, remove_snapshots, upload_patterns
from ..tools.metrics import ImageQualityMetrics
from ..tools.model_card import write_model_card
from ..tools.run_folder import (
    CHECKPOINTS_DIR,
    SAMPLES_FILE,
    TRAIN_ARGS_FILE,
    TRAINING_RUN_FILE,
    holds_pipeline,
    remove_run,
    step_samples_path,
    write_json,
)
from .arguments import DDPMTrainArguments, TrainingArguments, check_train_args, scrub_secrets

logger = logging.getLogger(__name__)  # main process only, by ddpm_hf.tools.cli

# Datasets up to this size live on the accelerator; larger ones stay in host memory.
MAX_DEVICE_DATA_BYTES = 2**30
# Where the training images are, by data mode (`ddpm_hf.tools.data.loading`).
HELD = {"in_memory": "in memory", "store": "in a decoded store", "on_the_fly": "encoded, decoded on the fly"}
# How each tracker that names runs takes the run's name (its keyword of accelerate's tracker `init_kwargs`).
RUN_NAME_KEYS = {
    "wandb": "name",
    "trackio": "name",
    "mlflow": "run_name",
    "swanlab": "experiment_name",
    "clearml": "task_name",
}
# What must match between a checkpoint and the run resuming it for the resumed run to be exact.
RESUME_KEYS = ("seed", "num_processes", "per_process_batch_size", "gradient_accumulation_steps", "num_train_images")


class DDPMTrainer:
    """Set up (and validate) a training run; `train()` runs it."""

    def __init__(self, args: DDPMTrainArguments):
        check_train_args(args)
        self.args, train_args = args, args.train
        self.output_dir = Path(train_args.output_dir)
        self.checkpoint_root = self.output_dir / CHECKPOINTS_DIR
        self.accelerator = self._accelerator()
        self.resume_path = self._check_output_dir()
        self.batch_size = _per_process_batch(train_args, self.accelerator.num_processes)
        self.total_batch_size = (
            self.batch_size * self.accelerator.num_processes * train_args.gradient_accumulation_steps
        )
        self.scheduler = self._noise_scheduler()
        self.objective = DiffusionLoss(
            self.scheduler,
            train_args.loss_type,
            train_args.snr_gamma,
            train_args.vlb_weight,
            make_timestep_sampler(train_args.timestep_sampler, len(self.scheduler)),
        )
        model_args = args.model
        unet_config = training_unet_config(
            model_args.unet,
            args.data.resolution,
            model_args.dropout,
            model_args.channels,
            learned_variance=model_args.variance_type == "learned_range",
        )
        self._load_data(unet_config["in_channels"])
        self.quality = self._sample_metrics()
        self._batches()
        if self.resume_path is not None:
            self._check_resumable()
        self._build_model(unet_config)
        self.global_step = 0
        self.micro_step = 0
        self.train_seconds = 0.0  # over all runs of this training, resumed ones included
        self.results: dict[str, dict] = {}  # the latest measurement of each metric, for the card
        self._grid: tuple[int, PIL.Image.Image] | None = None  # the latest sample grid and its step
        self.publisher = self._publisher()

    # ------------------------------------------------------------------ set-up

    def _accelerator(self) -> Accelerator:
        train_args = self.args.train
        return Accelerator(
            # Without an accelerator, `accelerate launch --multi_gpu` starts torchrun processes that accelerate
            # leaves unconnected unless told to use the CPU: then they join a gloo group (MULTI_CPU).
            cpu=not torch.accelerator.is_available(),
            gradient_accumulation_steps=train_args.gradient_accumulation_steps,
            mixed_precision=train_args.mixed_precision,
            log_with=None if train_args.report_to == "none" else train_args.report_to,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir),
                logging_dir=str(self.output_dir / train_args.logging_dir),
                save_on_each_node=train_args.save_on_each_node,
            ),
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=train_args.ddp_timeout))],
        )

    def _noise_scheduler(self) -> PaperDDPMScheduler:
        model_args = self.args.model
        return PaperDDPMScheduler(
            num_train_timesteps=model_args.num_train_timesteps,
            beta_schedule=model_args.beta_schedule,
            beta_start=model_args.beta_start,
            beta_end=model_args.beta_end,
            prediction_type=model_args.prediction_type,
            variance_type=model_args.variance_type,
        )

    def _load_data(self, channels: int) -> None:
        """The training and held-out images, in memory, in a decoded store or decoded on the fly (--data_mode)."""
        self.data = load_image_data(self.args.data, channels=channels)
        logger.info(f"{len(self.data.train):,} training images, held {HELD[self.data.mode]}")
        if self.data.skipped:
            logger.warning(f"Skipped {len(self.data.skipped)} unreadable images, e.g. {self.data.skipped[:3]}")
        train_args = self.args.train
        if (train_args.eval_steps or train_args.eval_fid_steps) and len(self.data.eval) < 2:
            raise ValueError(
                "The held-out set has fewer than 2 images; give --eval_data_dir or set --eval_steps and "
                "--eval_fid_steps to 0."
            )

    def _sample_metrics(self) -> ImageQualityMetrics | None:
        """The FID scorer (on every process: each scores its share), built now so that missing Inception weights
        stop the run before training."""
        train_args = self.args.train
        if not train_args.eval_fid_steps:
            return None
        return sample_metrics(
            train_args.eval_feature_space,
            train_args.inception_weights,
            self.accelerator.device,
            train_args.eval_batch_size,
            train_args.seed,
        )

    def _batches(self) -> None:
        """The images (an in-memory set on the device when small enough), the step sampler, and the number of
        steps."""
        train_args, accelerator = self.args.train, self.accelerator
        images = self.data.train
        on_device = isinstance(images, torch.Tensor) and images.numel() <= MAX_DEVICE_DATA_BYTES
        self.images = images.to(accelerator.device) if on_device else images
        self._reader, self._next_micro_step = None, None
        self.sampler = StepSampler(
            len(self.data.train),
            self.batch_size,
            accelerator.num_processes,
            accelerator.process_index,
            train_args.seed,
            device=self.images.device if on_device else None,
        )
        steps_per_epoch = self.sampler.batches_per_epoch // train_args.gradient_accumulation_steps
        self.max_steps = train_args.max_train_steps or train_args.num_epochs * steps_per_epoch
        if self.max_steps < 1:
            raise ValueError(
                f"An epoch of {len(self.data.train)} images is less than one optimizer step of "
                f"{self.total_batch_size}; give --max_train_steps."
            )

    def _build_model(self, unet_config: dict) -> None:
        """The UNet (the same initial weights on every process), its EMA, AdamW and the LR schedule."""
        train_args, accelerator = self.args.train, self.accelerator
        if accelerator.device.type == "cpu":
            set_cpu_threads(train_args.cpu_threads, check=accelerator.is_local_main_process)
        set_seed(train_args.seed)  # the same initial weights on every process
        unet = UNet2DModel(**unet_config)
        set_seed(train_args.seed, device_specific=True)  # but each process its own dropout masks
        if train_args.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        if train_args.channels_last:
            unet = unet.to(memory_format=torch.channels_last)
        _allow_tf32(train_args.allow_tf32)
        self.ema = _ema(unet, train_args) if train_args.use_ema else None
        optimizer = torch.optim.AdamW(
            unet.parameters(),
            lr=train_args.learning_rate,
            betas=(train_args.adam_beta1, train_args.adam_beta2),
            weight_decay=train_args.adam_weight_decay,
            eps=train_args.adam_epsilon,
            fused=accelerator.device.type == "cuda",
        )
        # Not passed to `accelerator.prepare`, which would step it once per process: it is stepped once per
        # optimizer step, so warm-up and decay count optimizer steps whatever the processes and accumulation.
        self.lr_scheduler = get_scheduler(
            train_args.lr_scheduler,
            optimizer,
            num_warmup_steps=train_args.lr_warmup_steps,
            num_training_steps=self.max_steps,
        )
        self.sample_unet = UNet2DModel.from_config(unet.config).to(accelerator.device).eval()
        self.unet, self.optimizer = accelerator.prepare(torch.compile(unet) if train_args.compile else unet, optimizer)
        accelerator.register_for_checkpointing(self.lr_scheduler)
        if self.ema is not None:
            self.ema.to(accelerator.device)
            accelerator.register_for_checkpointing(self.ema)
        if self._learns_timesteps:
            accelerator.register_for_checkpointing(self.objective.timestep_sampler)

    def _publisher(self) -> HubPublisher | None:
        """With --push_to_hub, the repo is created now (main process): a bad token or an unreachable Hub fails
        on every process before training."""
        hub = self.args.hub
        if not hub.push_to_hub:
            return None
        repo_id = hub.hub_model_id or self.output_dir.resolve().name
        return on_main_process(lambda: HubPublisher(repo_id, hub.hub_token, hub.hub_private_repo))

    # ------------------------------------------------------------------ checks

    def _check_output_dir(self) -> Path | None:
        """The checkpoint to resume from, if any: the main process chooses it in its output folder (see
        `_choose_checkpoint`), and every process checks that it finds there the files it loads.

        Raises:
            ValueError: on every process, the same message.
        """
        accelerator = self.accelerator
        # The checkpoint's path, the files every process loads and its state; or the main process's error.
        decision: list = [None, None, None]
        if accelerator.is_main_process:
            try:
                path = self._choose_checkpoint()
                if path is not None:
                    decision = [str(path), checkpoints.shared_files(path), checkpoints.read_state(path)]
            except ValueError as error:
                decision = [error, None, None]
        if accelerator.num_processes > 1:
            decision = broadcast_object_list(decision)
        chosen, shared, state = decision
        if isinstance(chosen, ValueError):
            raise chosen
        path = None if chosen is None else Path(chosen)  # a relative path names each machine's own copy
        if path is not None and state.get("num_processes") == accelerator.num_processes:  # else refused later
            self._check_checkpoint_files(path, shared)
        return path

    def _check_checkpoint_files(self, path: Path, shared: list[str]) -> None:
        """Every process must find in `path` the files it loads, each machine on its own disk; a machine whose
        copy is missing or incomplete (it did not share the main process's output folder) stops the run."""
        accelerator = self.accelerator
        missing = checkpoints.missing_files(path, shared, accelerator.process_index)
        found = [(accelerator.process_index, socket.gethostname(), missing)]
        if accelerator.num_processes > 1:
            found = gather_object(found)
        gaps = [f"rank {rank} on {host} lacks {', '.join(names)}" for rank, host, names in found if names]
        if not gaps:
            return
        message = (
            f"--resume_from_checkpoint: {path} is not complete for every process ({'; '.join(gaps)}). Each machine "
            "reads the checkpoint from its own disk: give all machines one shared --output_dir, or train with "
            "--save_on_each_node so that each machine keeps its own complete checkpoints."
        )
        if accelerator.is_local_main_process and not accelerator.is_main_process:
            logger.error(message)  # the main process reports it; this machine's log should say it too
        raise ValueError(message)

    def _choose_checkpoint(self) -> Path | None:
        """The checkpoint to resume from, if any, on the main process. An output folder that holds another run is an
        error unless resuming it or overwriting it (--overwrite_output_dir); `latest` in a folder with no run yet
        starts fresh."""
        train_args = self.args.train
        resume, found = train_args.resume_from_checkpoint, checkpoints.complete_checkpoints(self.checkpoint_root)
        holds_run = bool(found) or holds_pipeline(self.output_dir)
        if resume == "latest" and not found:
            if holds_run and not train_args.overwrite_output_dir:
                raise ValueError(
                    f"--resume_from_checkpoint latest: {self.output_dir} holds a finished run but no checkpoint to "
                    "resume. Pass --overwrite_output_dir to replace it, or choose another --output_dir."
                )
            logger.warning(f"--resume_from_checkpoint latest: no checkpoint in {self.checkpoint_root}; starting fresh.")
            resume = None
        path = None if resume is None else checkpoints.resolve(resume, self.checkpoint_root)
        resumes_here = path is not None and path.resolve().parent == self.checkpoint_root.resolve()
        if holds_run and not resumes_here and not train_args.overwrite_output_dir:
            raise ValueError(
                f"--output_dir {self.output_dir} holds another run. Pass --resume_from_checkpoint latest to continue "
                "it, --overwrite_output_dir to replace it, or choose another --output_dir."
            )
        return path

    def _resumes_here(self) -> bool:
        return self.resume_path is not None and self.resume_path.resolve().parent == self.checkpoint_root.resolve()

    def _run_state(self) -> dict:
        return {
            "seed": self.args.train.seed,
            "num_processes": self.accelerator.num_processes,
            "per_process_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.args.train.gradient_accumulation_steps,
            "num_train_images": len(self.data.train),
        }

    def _check_resumable(self) -> None:
        saved, now = checkpoints.read_state(self.resume_path), self._run_state()
        differ = {k: (saved.get(k), now[k]) for k in RESUME_KEYS if saved.get(k) != now[k]}
        if differ:
            shown = ", ".join(f"{k}: checkpoint {a}, now {b}" for k, (a, b) in differ.items())
            raise ValueError(
                f"{self.resume_path} was written by a different set-up ({shown}); it cannot resume exactly."
            )

    def _check_finite(self) -> None:
        """Stop, on every process, if a loss since the last check or the weights are not finite."""
        weights_norm = torch.nn.utils.get_total_norm(list(self.unet.parameters()), norm_type=float("inf"))
        bad = self.nonfinite.float().maximum((~torch.isfinite(weights_norm)).float())
        if bool(self.accelerator.reduce(bad, "max")):
            found = checkpoints.complete_checkpoints(self.checkpoint_root)
            last = f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was written yet"
            raise RuntimeError(
                f"The loss or the weights became non-finite by step {self.global_step}; stopped without saving "
                f"({last}). Lower --learning_rate, raise --lr_warmup_steps, or train in full precision."
            )

    # ------------------------------------------------------------------ the loop

    def train(self) -> Path:
        """Train to `max_steps` optimizer steps, then save the pipeline, samples and card; returns `output_dir`.

        Raises:
            Preempted: SIGTERM reached a process during the steps; all stopped after the same step, checkpointed.
        """
        with logging_redirect_tqdm():  # log lines above the progress bars, not through them
            self._start()
            progress = tqdm(
                total=self.max_steps,
                initial=self.global_step,
                disable=not self.accelerator.is_main_process,
                desc="train",
            )
            with preemption.stop_requests(self.accelerator):
                while self.global_step < self.max_steps:
                    self._run_step()
                    progress.update(1)
                    if self.accelerator.check_trigger():
                        progress.close()
                        self._stop_preempted()
                    self._after_step(progress)
            progress.close()
            self._finish()
        return self.output_dir

    def _stop_preempted(self) -> NoReturn:
        """End the run at this step, which every process has finished: its checkpoint, the trackers closed, then
        `Preempted`; the step's logs, evaluations and grids are skipped, to finish within the grace period."""
        checkpointing = bool(self.args.train.checkpointing_steps)
        if checkpointing:
            self._check_finite()
            self._save_checkpoint()
        self.accelerator.end_training()
        saved = "checkpointed" if checkpointing else "not checkpointed (--checkpointing_steps 0)"
        logger.warning(
            f"Stopped on SIGTERM after step {self.global_step} of {self.max_steps}, {saved}; exit status "
            f"{preemption.PREEMPTED_EXIT_STATUS}. Continue with --resume_from_checkpoint latest."
        )
        raise preemption.Preempted(self.global_step)

    def _start(self) -> None:
        """Resume if asked, prepare the output folder and the trackers, and zero the monitors."""
        if self.resume_path is not None:
            self._resume()
        accelerator = self.accelerator
        with accelerator.main_process_first():  # a machine that shares the main process's disk finds it prepared
            if accelerator.is_local_main_process:
                self._prepare_output_dir()
        scrub_secrets(sys.argv)  # before a tracker records the command line
        train_args = self.args.train
        if train_args.report_to != "none":
            run_name = train_args.run_name or self.output_dir.resolve().name
            accelerator.init_trackers(
                train_args.tracker_project_name,
                config=_scalar_config(self.args.to_dict()),
                init_kwargs={tracker: {key: run_name} for tracker, key in RUN_NAME_KEYS.items()},
            )
        device = accelerator.device
        self.loss_sum = torch.zeros((), device=device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.grad_norm = torch.zeros((), device=device)
        self.micro_step = self.global_step * self.args.train.gradient_accumulation_steps
        self._last_log = (time.perf_counter(), self.global_step)
        self._clock = time.perf_counter() - self.train_seconds

    def _prepare_output_dir(self) -> None:
        """This machine's output folder, by its first process: created, emptied of unfinished checkpoints, and with
        --overwrite_output_dir of the old run where this process keeps checkpoints; the main process also writes the
        run's arguments."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self._keeps_checkpoints and self.args.train.overwrite_output_dir and not self._resumes_here():
            remove_run(self.output_dir, self.args.train.logging_dir)
        checkpoints.remove_unfinished(self.checkpoint_root)
        if self.accelerator.is_main_process:
            remove_snapshots(self.output_dir)
            write_json(self.output_dir / TRAIN_ARGS_FILE, self.args.to_dict())

    @property
    def _keeps_checkpoints(self) -> bool:
        """Whether this process finishes checkpoints in its output folder: the main process, and with
        --save_on_each_node the first process of each machine."""
        accelerator = self.accelerator
        return accelerator.is_main_process or (self.args.train.save_on_each_node and accelerator.is_local_main_process)

    def _resume(self) -> None:
        self.accelerator.load_state(str(self.resume_path))
        if self.ema is not None:
            self.ema.to(self.accelerator.device)  # accelerate loads custom state onto the CPU
        state = checkpoints.read_state(self.resume_path)
        self.global_step, self.train_seconds = state["global_step"], state.get("train_seconds", 0.0)
        logger.info(f"Resumed from {self.resume_path} at step {self.global_step}")

    def _run_step(self) -> None:
        """One optimizer step: forward-backward over each micro-batch; the last one also updates."""
        while not self._forward_backward():
            pass

    def _forward_backward(self) -> bool:
        """The loss and gradients of one micro-batch, and the update if it ends the step; returns whether it did."""
        accelerator = self.accelerator
        with accelerator.accumulate(self.unet):
            output = self._loss(self.micro_step)
            loss = output.loss
            accelerator.backward(loss)
            ends_step = accelerator.sync_gradients
            if ends_step:
                self._optimize()
        if self._learns_timesteps:
            self._update_timestep_sampler(output)
        self.micro_step += 1
        self.loss_sum += loss.detach()
        self.nonfinite |= ~torch.isfinite(loss.detach())
        return ends_step

    def _loss(self, micro_step: int) -> DiffusionLossOutput:
        """The objective on this process's micro-batch, from the micro-step's own generator."""
        device = self.accelerator.device
        generator = step_generator(self.args.train.seed, micro_step, self.accelerator.process_index, device)
        batch = self._batch(micro_step)
        if batch.device != device:  # a large dataset in host memory: copy the batch without blocking
            batch = (batch.pin_memory() if device.type == "cuda" else batch).to(device, non_blocking=True)
        x0 = to_model_range(batch)
        if self.args.data.random_flip:
            x0 = random_flip(x0, generator)
        return self.objective(self.unet, x0, generator, self.accelerator.autocast, self.args.train.channels_last)

    def _batch(self, micro_step: int) -> torch.Tensor:
        """This process's uint8 images at `micro_step`, read ahead in order (`micro_batches`); a reader starts
        wherever the steps begin, at 0 or at a resumed step."""
        if micro_step != self._next_micro_step:
            device = self.accelerator.device
            workers = self.args.data.dataloader_num_workers
            self._reader = micro_batches(self.images, self.sampler, micro_step, workers, device.type == "cuda")
        self._next_micro_step = micro_step + 1
        return next(self._reader)

    @property
    def _learns_timesteps(self) -> bool:
        return self.args.train.timestep_sampler != "uniform"

    def _update_timestep_sampler(self, output: DiffusionLossOutput) -> None:
        """Every process's sampler learns from the losses of all processes, in rank order, so all draw alike."""
        timesteps, losses = self.accelerator.gather((output.timesteps, output.losses))
        self.objective.timestep_sampler.update(timesteps, losses)

    def _optimize(self) -> None:
        """Clip the gradients, step AdamW and, unless fp16 loss scaling skipped the step, the LR and the EMA."""
        train_args = self.args.train
        if train_args.max_grad_norm > 0:
            self.grad_norm = self.accelerator.clip_grad_norm_(self.unet.parameters(), train_args.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not self.optimizer.step_was_skipped:
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step(self.unet.parameters())
        self.global_step += 1

    def _after_step(self, progress: tqdm) -> None:
        """What runs every so many steps: logs, checkpoints, sample grids, evaluations, pipeline saves."""
        train_args, step = self.args.train, self.global_step
        if _every(step, train_args.logging_steps) or step == self.max_steps:
            self._log(progress)
        if _every(step, train_args.checkpointing_steps):
            self._check_finite()
            self._save_checkpoint()
        if _every(step, self._grid_steps) and step < self.max_steps:
            self._sample_grid(step_samples_path(self.output_dir, step))
        if _every(step, train_args.eval_steps):
            self._evaluate()
        if _every(step, train_args.eval_fid_steps):
            self._evaluate_fid()
        if _every(step, train_args.save_model_steps) and step < self.max_steps:
            self._save_pipeline(final=False)

    @property
    def _grid_steps(self) -> int:
        """Steps between sample grids: --save_images_steps, by default those of the evaluations."""
        train_args = self.args.train
        every = train_args.eval_steps if train_args.save_images_steps is None else train_args.save_images_steps
        return every if train_args.num_sample_images else 0

    def _finish(self) -> None:
        """After the last step, each phase said: a checkpoint, the final measurements, the final pipeline, grid and
        card, and the final push."""
        train_args = self.args.train
        self._check_finite()
        if train_args.checkpointing_steps and not _every(self.global_step, train_args.checkpointing_steps):
            self._save_checkpoint()  # the last step's, to continue training it later
        # The card reports measurements of the weights it describes: the bound with all its terms, not an estimate.
        if train_args.eval_steps and self._final_eval_size:
            logger.info(
                f"Final evaluation: the full bound ({len(self.scheduler)} terms) on {self._final_eval_size} "
                "held-out images (--final_eval_batch_size 0 skips it)"
            )
            self._evaluate(full=True)
        if train_args.eval_fid_steps and not _every(self.global_step, train_args.eval_fid_steps):
            logger.info(f"Final FID: {train_args.eval_num_samples} samples against the held-out images")
            self._evaluate_fid()
        self._save_pipeline(final=True)
        self.accelerator.end_training()
        if self.publisher is not None:
            self._push(final=True)

    @property
    def _final_eval_size(self) -> int:
        train_args = self.args.train
        size = (
            train_args.eval_batch_size if train_args.final_eval_batch_size is None else train_args.final_eval_batch_size
        )
        return min(size, len(self.data.eval))

    # ------------------------------------------------------------------ monitoring

    def _log(self, progress: tqdm) -> None:
        """Loss (averaged over processes and the micro-steps since the last log), LR, grad norm, speed."""
        self._check_finite()
        accelerator, step = self.accelerator, self.global_step
        last_time, last_step = self._last_log
        steps_per_second = (step - last_step) / (time.perf_counter() - last_time)
        micro_steps = (step - last_step) * self.args.train.gradient_accumulation_steps
        logs = {
            "loss": accelerator.reduce(self.loss_sum, "mean").item() / micro_steps,
            "lr": self.lr_scheduler.get_last_lr()[0],
            "grad_norm": float(self.grad_norm),
            "steps_per_second": steps_per_second,
            "images_per_second": steps_per_second * self.total_batch_size,
        }
        if self.ema is not None:
            logs["ema_decay"] = self.ema.cur_decay_value
        accelerator.log(logs, step=step)
        progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}", it_s=f"{steps_per_second:.1f}")
        self.loss_sum.zero_()
        self._last_log = (time.perf_counter(), step)

    def _pipeline(self) -> DDPMPipeline:
        """The pipeline of the weights that are sampled and saved: the EMA ones when an EMA is kept."""
        if self.ema is not None:
            self.ema.copy_to(self.sample_unet.parameters())
        else:
            trained = self.accelerator.unwrap_model(self.unet, keep_torch_compile=False)
            self.sample_unet.load_state_dict(trained.state_dict())
        pipe = DDPMPipeline(self.sample_unet, self.scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _sample_grid(self, path: Path) -> None:
        """A grid of `num_sample_images` samples (seeded) to `path` and the trackers; drawn once per step, however
        many files want it, by every process (each its share: call it on all), and written by the main process."""
        if not self.args.train.num_sample_images:
            return
        if self._grid is None or self._grid[0] != self.global_step:
            self._grid = (self.global_step, self._draw_grid())
        if self.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._grid[1].save(path)

    def _draw_grid(self) -> PIL.Image.Image:
        """The samples, drawn in chunks of --eval_batch_size shared among processes (`generate`), so that the grid is
        the same whatever the number of processes; tiled, enlarged and logged to the trackers."""
        train_args, num_images = self.args.train, self.args.train.num_sample_images
        samples = generate(
            self._pipeline(),
            num_images,
            train_args.eval_batch_size,
            self.args.model.ddpm_num_inference_steps,
            train_args.seed,
        )
        tiles = [PIL.Image.fromarray(image.permute(1, 2, 0).squeeze(-1).numpy()) for image in samples]  # L or RGB
        grid = enlarged(make_grid(tiles))  # tiny images stay visible on a Hub page
        array = np.asarray(grid.convert("RGB"))
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({"samples": array[None]}, step=self.global_step, dataformats="NHWC")
            else:
                tracker.log_images({"samples": [array]}, step=self.global_step)
        return grid

    def _evaluate(self, full: bool = False) -> None:
        """The bound in bits/dim of the sampled weights on a fixed held-out batch: during training the unbiased
        estimate from --eval_num_timesteps terms, logged with its standard error; all T terms when `full` (the card
        reports the last one). The images are shared among processes (`evaluate_bound`; call it on all) in chunks
        of --eval_batch_size, so the numbers are those of one process."""
        train_args = self.args.train
        images = self.data.eval[: self._final_eval_size if full else train_args.eval_batch_size]
        bound = evaluate_bound(
            self._pipeline().unet,
            self.scheduler,
            images,
            train_args.eval_batch_size,
            None if full else train_args.eval_num_timesteps,
            train_args.seed,
            progress=full,
        )
        name = f"eval/bpd_estimate_{bound.num_timesteps}_terms" if bound.is_estimate else "eval/bpd"
        self.accelerator.log({name: bound.mean, f"{name}_stderr": bound.stderr}, step=self.global_step)
        if full:
            logger.info(f"Bound on {len(images)} held-out images: {bound.mean:.4f} ± {bound.stderr:.4f} bits/dim")
        weights = "EMA weights" if self.ema is not None else "weights"
        note = f"; {weights} of step {self.global_step}"
        self.results["bits_per_dim"] = bound_entry(
            bound, len(self.scheduler), len(images), self.args.data.dataset_id(), self.data.eval_split, note
        )

    def _evaluate_fid(self) -> None:
        """FID and KID of `eval_num_samples` samples of the sampled weights against the held-out images, through
        the evaluation job's code: every process draws its share of the samples and computes its share of the
        features (call it on all) in chunks of --eval_batch_size, so the numbers are those of one process."""
        train_args, steps = self.args.train, self.args.model.ddpm_num_inference_steps
        num_samples = train_args.eval_num_samples
        samples = generate(self._pipeline(), num_samples, train_args.eval_batch_size, steps, train_args.seed)
        dataset = self.args.data.dataset_id()
        split = self.data.eval_split
        scores = score_samples(self.quality, samples, self.data.eval, dataset, split)
        space = train_args.eval_feature_space
        self.accelerator.log(
            {f"eval/fid_{space}": scores["fid"], f"eval/kid_{space}": scores["kid_mean"]}, step=self.global_step
        )
        how = f"{len(samples)} samples, {steps or len(self.scheduler)} steps, step {self.global_step}"
        self.results["fid"] = fid_entry(scores["fid"], space, how, dataset, split)

    # ------------------------------------------------------------------ outputs

    def _save_checkpoint(self) -> None:
        """Every process's state into the step's temporary folder, renamed into place once complete by each process
        that keeps checkpoints (`_keeps_checkpoints`); another machine's first process then deletes what its processes
        wrote if its disk is not the main process's (the folder is still there: nobody renamed it)."""
        accelerator = self.accelerator
        tmp = checkpoints.temporary_dir(self.checkpoint_root, self.global_step)
        if self._keeps_checkpoints and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if self._keeps_checkpoints:
            state = {"global_step": self.global_step, "train_seconds": self._elapsed(), **self._run_state()}
            limit = self.args.train.checkpoints_total_limit
            logger.info(f"Saved {checkpoints.finish(self.checkpoint_root, self.global_step, state, limit)}")
        accelerator.wait_for_everyone()
        if accelerator.is_local_main_process and not self._keeps_checkpoints and tmp.exists():
            shutil.rmtree(tmp)

    def _save_pipeline(self, final: bool) -> None:
        """The EMA pipeline (safetensors), a sample grid, the run's record and the model card in `output_dir`,
        from the main process; pushed in the background with --hub_strategy every_save."""
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if final:
            logger.info(f"Saving the pipeline, the sample grid and the model card to {self.output_dir}")
        self._sample_grid(self.output_dir / SAMPLES_FILE)  # drawn by every process
        if accelerator.is_main_process:
            pipe = self._pipeline()
            pipe.save_pretrained(self.output_dir)
            record = {"args": self.args.to_dict(), "run": self._run_facts(), "results": list(self.results.values())}
            write_json(self.output_dir / TRAINING_RUN_FILE, record)
            repo_or_path = self.publisher.repo_id if self.publisher else str(self.output_dir)
            write_model_card(self.output_dir, pipe, repo_or_path)
            if not final and self.args.hub.hub_strategy == "every_save" and self.publisher is not None:
                self._push(final=False)
        accelerator.wait_for_everyone()

    def _push(self, final: bool) -> None:
        """Upload the output folder: at the end, waiting and raising on failure (the folder stays complete);
        during training, in the background, a failure only warned about (the final push uploads all again)."""
        hub, publisher = self.args.hub, self.publisher
        allow = upload_patterns(hub.hub_upload_checkpoints, hub.hub_upload_logs, self.args.train.logging_dir)
        message = f"{'End of training' if final else 'Training in progress'}, step {self.global_step}"
        if final:
            commit = publisher.push(self.output_dir, message, allow)
            logger.info(f"Pushed {self.output_dir} to {commit.commit_url}")
        else:
            publisher.push_in_background(self.output_dir, message, allow)

    def _elapsed(self) -> float:
        return time.perf_counter() - self._clock

    def _run_facts(self) -> dict:
        accelerator, device = self.accelerator, self.accelerator.device
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
        seconds = self._elapsed()
        return {
            "dataset": self.data.source,
            "dataset_id": self.args.data.dataset_id(),
            "data_mode": self.data.mode,
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
            "dropout": self.sample_unet.config.dropout,
            "repo_id": self.publisher.repo_id if self.publisher is not None else None,
            "sample_steps": self.args.model.ddpm_num_inference_steps or len(self.scheduler),
            "train_seconds": seconds,
            "training_time": _duration(seconds),
        }


def _ema(unet: UNet2DModel, train_args: TrainingArguments) -> EMAModel:
    return EMAModel(
        unet.parameters(),
        decay=train_args.ema_decay,
        # diffusers' EMAModel always warms up unless its floor equals the decay: then the decay is fixed.
        min_decay=0.0 if train_args.ema_warmup else train_args.ema_decay,
        use_ema_warmup=train_args.ema_warmup,
        inv_gamma=train_args.ema_inv_gamma,
        power=train_args.ema_power,
        foreach=True,
    )


def _allow_tf32(allow: bool) -> None:
    if not allow:
        return
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        logger.warning("--allow_tf32 has no effect without a CUDA device.")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s of wall time"
    return f"{seconds / 60:.1f} min ({seconds / 3600:.2f} h) of wall time"


def _every(step: int, interval: int | None) -> bool:
    return bool(interval) and step % interval == 0


def _per_process_batch(train_args: TrainingArguments, num_processes: int) -> int:
    if train_args.total_batch_size is None:
        return train_args.train_batch_size
    per_step = num_processes * train_args.gradient_accumulation_steps
    if train_args.total_batch_size % per_step:
        raise ValueError(
            f"--total_batch_size {train_args.total_batch_size} is not divisible by {num_processes} processes x "
            f"{train_args.gradient_accumulation_steps} accumulation steps."
        )
    return train_args.total_batch_size // per_step


def _scalar_config(values: dict) -> dict:
    """Tracker hyperparameters must be scalars: None and the rest become strings."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}
