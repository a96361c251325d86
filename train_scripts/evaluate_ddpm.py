"""Evaluate a DDPM pipeline: the bound in bits/dim on a dataset split, and FID / KID / IS of its samples.

    python train_scripts/evaluate_ddpm.py --model ddpm-digits                      # bound + FID, test split
    python train_scripts/evaluate_ddpm.py --model ddpm-digits --metrics fid --feature_space random \\
        --num_inference_steps 10,25,50,100,250,1000 --variance_type fixed_small,fixed_large
    python train_scripts/evaluate_ddpm.py --model ddpm-digits --metrics fid --feature_space random \\
        --scheduler ddpm,ddim,dpm_solver --num_inference_steps 10,25,50,100     # quality against steps, per sampler
    accelerate launch --multi_gpu --num_processes 2 train_scripts/evaluate_ddpm.py --model me/ddpm-cifar10 \\
        --dataset_name uoft-cs/cifar10 --inception_weights pt_inception-2015-12-05-6726825d.pth

The data flags are the trainer's; without any, the data the model was trained on (its training_run.json), else
the embedded digits. Images are read at the model's resolution.
With several processes, images and samples are shared out and gathered: the numbers equal one process's.
Every --scheduler is crossed with every --num_inference_steps (and ddpm with every --variance_type); all space
their steps "trailing" (`ddpm_hf.core.samplers`), and every row names its sampler, spacing and model calls.
Writes results.json (and, for several settings, quality_vs_steps.csv / .png) to --output_dir; every flag is
documented by --help, the work is done by `ddpm_hf.jobs.evaluator.DDPMEvaluator`.
"""

from __future__ import annotations

import json
import sys

from transformers import HfArgumentParser

from ddpm_hf.jobs.arguments import DataArguments, given_flags
from ddpm_hf.jobs.evaluator import DDPMEvaluator, EvaluationArguments
from ddpm_hf.tools.cli import configure_logging, usage_errors
from ddpm_hf.tools.distributed import end_processes


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging()
    with usage_errors():
        parser = HfArgumentParser((EvaluationArguments, DataArguments), description=__doc__)
        args, data_args = parser.parse_args_into_dataclasses(args=argv)
        evaluator = DDPMEvaluator(args, data_args, given_flags(argv))
    report = evaluator.run()
    if evaluator.state.is_main_process:
        print(json.dumps({"bound": report.get("bound"), "quality": report.get("quality")}, indent=2))
    end_processes()
    return report


if __name__ == "__main__":
    main()
