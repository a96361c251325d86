"""Train a DDPM (Ho et al. 2020) with L_simple; the same script on one CPU, one GPU, many GPUs or machines.

    accelerate launch train_scripts/train_ddpm.py                     # the embedded default: digits, CPU, minutes
    accelerate launch train_scripts/train_ddpm.py --preset cifar10    # the paper's CIFAR-10 set-up
    accelerate launch --multi_gpu --num_processes 8 train_scripts/train_ddpm.py --preset cifar10
    accelerate launch train_scripts/train_ddpm.py --config my_run.yaml --learning_rate 1e-4
    accelerate launch train_scripts/train_ddpm.py --output_dir ddpm-digits --resume_from_checkpoint latest

Every flag is documented by --help; the work is done by `ddpm_hf.jobs.trainer.DDPMTrainer`. A bad flag or input
is one line on stderr before any work (`accelerate launch -q` also leaves out the launcher's own traceback).
"""

from ddpm_hf.jobs.arguments import parse_train_args
from ddpm_hf.jobs.trainer import DDPMTrainer
from ddpm_hf.tools.cli import configure_logging, usage_errors


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    with usage_errors():
        trainer = DDPMTrainer(parse_train_args(argv))
    trainer.train()


if __name__ == "__main__":
    main()
