"""Run the trainer and record, per process, the images it trained on and its weights after every optimizer step.

    python record_run.py OUT_DIR [trainer flags...]      (under `accelerate launch` for several processes)

Writes OUT_DIR/rank<i>.json with `indices` (per micro-step) and `hashes` (sha256 of the weights per step).
"""

import hashlib
import json
import sys
from pathlib import Path

import torch

from ddpm_hf.jobs.arguments import parse_train_args
from ddpm_hf.jobs.trainer import DDPMTrainer

out, argv = Path(sys.argv[1]), sys.argv[2:]
trainer = DDPMTrainer(parse_train_args(argv))
indices, hashes = [], []
sample, lr_step = trainer.sampler.indices, trainer.lr_scheduler.step


def recording_indices(micro_step):
    chosen = sample(micro_step)
    indices.append(chosen.tolist())
    return chosen


def recording_step():
    weights = torch.cat([p.detach().flatten() for p in trainer.accelerator.unwrap_model(trainer.unet).parameters()])
    hashes.append(hashlib.sha256(weights.numpy().tobytes()).hexdigest())
    lr_step()


trainer.sampler.indices, trainer.lr_scheduler.step = recording_indices, recording_step
trainer.train()
rank = trainer.accelerator.process_index
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.json").write_text(json.dumps({"indices": indices, "hashes": hashes}))
