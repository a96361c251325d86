"""Sample images from a DDPM pipeline (a folder or Hub repo) and write them with a grid.

    python train_scripts/sample_ddpm.py --model path/or/repo --num_images 16 --output_dir samples

Without `--model` it samples a freshly initialised UNet preset (untrained: the images are noise), which
exercises the whole package on any machine.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.core.images import make_grid


@dataclass
class SampleArguments:
    model: str | None = field(
        default=None, metadata={"help": "Pipeline folder or Hub repo id. Omitted: a fresh, untrained `--unet_preset`."}
    )
    unet_preset: str = field(default="small", metadata={"help": "UNet preset used without `--model`."})
    num_images: int = field(default=16, metadata={"help": "How many images to sample."})
    num_inference_steps: int | None = field(
        default=None, metadata={"help": "Steps of the (respaced) reverse chain; default: all T, the paper's sampler."}
    )
    variance_type: str | None = field(
        default=None, metadata={"help": "Override the scheduler's variance type, e.g. fixed_small or fixed_large."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the sampling generator."})
    output_dir: str = field(default="samples", metadata={"help": "Where sample_<i>.png and grid.png are written."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into a non-empty `--output_dir`."}
    )


def main(argv: list[str] | None = None) -> None:
    (args,) = HfArgumentParser(SampleArguments).parse_args_into_dataclasses(args=argv)
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir) and not args.overwrite_output_dir:
        sys.exit(f"--output_dir {args.output_dir} is not empty; pass --overwrite_output_dir to write into it.")
    if args.model is None:
        torch.manual_seed(args.seed)
        pipe = DDPMPipeline(build_unet(args.unet_preset), PaperDDPMScheduler())
    else:
        pipe = DDPMPipeline.from_pretrained(args.model)
    if args.variance_type is not None:
        pipe.scheduler = PaperDDPMScheduler.from_config(pipe.scheduler.config, variance_type=args.variance_type)
    images = pipe(
        batch_size=args.num_images,
        generator=torch.Generator().manual_seed(args.seed),
        num_inference_steps=args.num_inference_steps,
    ).images
    os.makedirs(args.output_dir, exist_ok=True)
    for i, image in enumerate(images):
        image.save(os.path.join(args.output_dir, f"sample_{i}.png"))
    make_grid(images).save(os.path.join(args.output_dir, "grid.png"))
    print(f"Wrote {len(images)} samples and grid.png to {args.output_dir}")


if __name__ == "__main__":
    main()
