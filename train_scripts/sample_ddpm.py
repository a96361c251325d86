"""Sample images from a DDPM pipeline (a folder or Hub repo) and write them with a grid.

    python train_scripts/sample_ddpm.py --model path/or/repo --num_images 16 --output_dir samples
    python train_scripts/sample_ddpm.py --model path/or/repo --scheduler ddim --num_inference_steps 50 --eta 0.0
    accelerate launch --multi_gpu --num_processes 2 train_scripts/sample_ddpm.py --model path/or/repo --num_images 256

Without `--model` it samples a freshly initialised UNet preset (untrained: the images are noise), which
exercises the whole package on any machine. `--scheduler` picks a sampler of `ddpm_hf.core.samplers` (built
from the model's scheduler config, timesteps spaced "trailing"); without it the pipeline's own scheduler samples.

It samples on the accelerator when there is one, in chunks of `--batch_size` images shared among the processes
(`ddpm_hf.tools.evaluation.generate`): chunk k is drawn with a generator seeded by (`--seed`, k), so the images
depend on `--seed` and `--batch_size`, never on the number of processes. The main process writes the files.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import PIL.Image
import torch
from transformers import HfArgumentParser

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.core.images import make_grid
from ddpm_hf.core.samplers import SAMPLERS, make_scheduler
from ddpm_hf.tools.cli import configure_logging, usage_errors
from ddpm_hf.tools.distributed import end_processes, process_state
from ddpm_hf.tools.evaluation import generate


@dataclass
class SampleArguments:
    model: str | None = field(
        default=None, metadata={"help": "Pipeline folder or Hub repo id. Omitted: a fresh, untrained `--unet_preset`."}
    )
    unet_preset: str = field(default="small", metadata={"help": "UNet preset used without `--model`."})
    num_images: int = field(default=16, metadata={"help": "How many images to sample."})
    batch_size: int = field(
        default=64,
        metadata={
            "help": "Images per pipeline call, the chunks shared among processes. The images depend on --seed and "
            "--batch_size (chunk k is drawn with a generator seeded by (seed, k)), not on the number of processes."
        },
    )
    scheduler: str | None = field(
        default=None,
        metadata={
            "help": f"The sampler: {', '.join(SAMPLERS)} (ddpm: the paper's Algorithm 2; ddim, dpm_solver, "
            "euler_ancestral, pndm: diffusers' fast samplers, e.g. 50 steps or fewer), built from the model's "
            "scheduler config with 'trailing' timesteps. Default: the pipeline's own scheduler."
        },
    )
    num_inference_steps: int | None = field(
        default=None,
        metadata={"help": "Steps of the (respaced) reverse chain, e.g. 50 for ddim; default: all T, as the paper."},
    )
    variance_type: str | None = field(
        default=None,
        metadata={
            "help": "Override the ddpm sampler's (or the pipeline's own PaperDDPMScheduler's) variance type, e.g. "
            "fixed_small or fixed_large."
        },
    )
    eta: float = field(
        default=0.0,
        metadata={
            "help": "DDIM's eta in [0, 1] (a DDIM scheduler only): 0 is deterministic DDIM, 1 has DDPM's variance."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the sampling generators (and of an untrained preset)."})
    output_dir: str = field(default="samples", metadata={"help": "Where sample_<i>.png and grid.png are written."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into a non-empty `--output_dir`."}
    )


def check_sampler_arguments(args: SampleArguments) -> None:
    """Refuse a bad sampler choice before loading or sampling anything."""
    if args.scheduler is not None and args.scheduler not in SAMPLERS:
        raise ValueError(f"--scheduler takes {', '.join(SAMPLERS)}; got {args.scheduler!r}.")
    if args.variance_type is not None and args.scheduler not in (None, "ddpm"):
        raise ValueError(f"--variance_type is the ddpm sampler's; --scheduler {args.scheduler} has none.")
    if args.eta != 0 and args.scheduler not in (None, "ddim"):
        raise ValueError(f"--eta is DDIM's; --scheduler {args.scheduler} takes none (pass --scheduler ddim).")
    if not 0 <= args.eta <= 1:
        raise ValueError(f"--eta must lie in [0, 1], got {args.eta}.")


def check_count_arguments(args: SampleArguments) -> None:
    """Refuse an empty sample or batch before loading anything."""
    for flag in ("num_images", "batch_size"):
        if (value := getattr(args, flag)) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {value}.")


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    with usage_errors():
        (args,) = HfArgumentParser(SampleArguments).parse_args_into_dataclasses(args=argv)
        check_count_arguments(args)
        check_sampler_arguments(args)
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite_output_dir:
        sys.exit(f"--output_dir {args.output_dir} is not empty; pass --overwrite_output_dir to write into it.")
    state = process_state()
    if args.model is None:
        torch.manual_seed(args.seed)  # the same weights in every process
        pipe = DDPMPipeline(build_unet(args.unet_preset), PaperDDPMScheduler())
    else:
        with state.main_process_first():  # one download into the cache
            pipe = DDPMPipeline.from_pretrained(args.model)
    pipe.to(state.device)
    overrides = {} if args.variance_type is None else {"variance_type": args.variance_type}
    if args.scheduler is not None:
        pipe.scheduler = make_scheduler(args.scheduler, pipe.scheduler.config, **overrides)
    elif overrides:  # the pipeline's own scheduler, with another variance
        pipe.scheduler = PaperDDPMScheduler.from_config(pipe.scheduler.config, **overrides)
    samples = generate(
        pipe, args.num_images, args.batch_size, args.num_inference_steps, args.seed, progress=True, eta=args.eta
    )
    if state.is_main_process:
        images = pipe.numpy_to_pil(samples.permute(0, 2, 3, 1).numpy() / 255)  # as the pipeline's own PIL output
        write_samples(images, args.output_dir)
        print(f"Wrote {len(images)} samples and grid.png to {args.output_dir} ({type(pipe.scheduler).__name__})")
    end_processes()


def write_samples(images: list[PIL.Image.Image], output_dir: str) -> None:
    """sample_<i>.png for each image and grid.png of them all, in `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    for i, image in enumerate(images):
        image.save(os.path.join(output_dir, f"sample_{i}.png"))
    make_grid(images).save(os.path.join(output_dir, "grid.png"))


if __name__ == "__main__":
    main()
