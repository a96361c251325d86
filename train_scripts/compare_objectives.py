"""Compare training objectives at small scale: the ordering of Table 2 (and Table 1's NLL) of Ho et al. (2020).

    python train_scripts/compare_objectives.py --output_dir objectives           # all six, the default job's set-up
    python train_scripts/compare_objectives.py --objectives simple,vlb_is,hybrid --max_train_steps 600
    python train_scripts/compare_objectives.py --unet tiny --channels 1 --num_train_timesteps 100 \\
        --max_train_steps 200 --train_batch_size 32 --eval_steps 0 --num_inference_steps 10,25 --num_samples 64

One training run per objective, with the same data, network, steps and seed (the trainer's default job unless
trainer flags say otherwise): L_simple (Ho et al. 2020), L_simple with min-SNR-5 weighting (Hang et al. 2023),
L_vlb and L_hybrid with uniform or importance-sampled timesteps (Nichol & Dhariwal 2021). Each is scored by the
evaluation job: the full bound (all T terms) on the held-out images in bits/dim with its standard error, FID and
KID (with KID's spread) of samples against the training images at the full chain and at --num_inference_steps,
and FID / KID at each checkpoint (every --quality_every_steps) for quality against training steps.

Any flag not listed below is the trainer's (`train_scripts/train_ddpm.py --help`: --max_train_steps, --unet,
--channels, --num_train_timesteps, --train_batch_size, --vlb_weight, --cpu_threads, data flags, ...) and goes to
every run. The comparison sets --loss_type, --snr_gamma, --timestep_sampler (per objective), --output_dir, --seed
and --checkpointing_steps itself, and by default skips the trainer's final bound and sample grid
(--final_eval_batch_size 0 --num_sample_images 0), as it measures them itself.

Writes to --output_dir: <objective>/ (each run), scores/<objective>/ (the evaluation job's outputs, with each
checkpoint's EMA weights as a pipeline), objectives.json (every number, with its spread), objectives.md (the
table, also printed) and quality_vs_train_steps.png. Run the same command again to continue an interrupted
comparison: finished runs and their scores are reused, runs with checkpoints resumed. The work is done by
`ddpm_hf.jobs.objectives.ObjectiveComparison`; one process.
"""

from __future__ import annotations

import argparse
import sys

from transformers import HfArgumentParser

from ddpm_hf.jobs.objectives import ComparisonArguments, ObjectiveComparison
from ddpm_hf.tools.cli import configure_logging, usage_errors


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written (its examples on their own lines), the flags with their defaults."""


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging()
    with usage_errors():
        parser = HfArgumentParser(
            ComparisonArguments, description=__doc__, formatter_class=_HelpFormatter, allow_abbrev=False
        )
        args, trainer_argv = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
        comparison = ObjectiveComparison(args, trainer_argv)
    report = comparison.run()
    print(report["table"])
    return report


if __name__ == "__main__":
    main()
