"""What a user does with Hub repos, run in a fresh process (huggingface_hub reads HF_ENDPOINT and
HF_HUB_OFFLINE at import, so each environment needs its own process).

    python hub_client.py sample OUT REPO[@REVISION] ... [--stock]   # load each, sample 2 images, seed 0
                                          # (a spec scheduler:REPO loads PaperDDPMScheduler alone)
    python hub_client.py push FOLDER REPO FRESH_REPO   # push_pipeline(DDPMPipeline.from_pretrained(FOLDER), REPO),
                                                       # that repo's pipeline to REPO-again, then a fresh tiny
                                                       # pipeline to FRESH_REPO

`sample` writes OUT.npz (the images and scheduler class of each spec that loaded) and OUT.json (the error
type and message of each that did not). `--stock` loads with diffusers alone and checks that ddpm_hf was
never imported.
"""

import argparse
import json
import sys

import numpy as np
import torch


def _pipeline_class(stock: bool):
    if stock:
        from diffusers import DDPMPipeline
    else:
        from ddpm_hf import DDPMPipeline
    return DDPMPipeline


def _load(spec: str, stock: bool = False):
    repo, _, revision = spec.partition("@")
    return _pipeline_class(stock).from_pretrained(repo, revision=revision or None)


def sample(out: str, specs: list[str], stock: bool) -> None:
    results, errors = {}, {}
    for spec in specs:
        if spec.startswith("scheduler:"):  # the scheduler alone, from a flat repo
            from ddpm_hf import PaperDDPMScheduler

            config = PaperDDPMScheduler.from_pretrained(spec.removeprefix("scheduler:")).config
            results[spec] = np.array(json.dumps(dict(config)))
            continue
        try:
            pipe = _load(spec, stock)
        except Exception as err:
            errors[spec] = {"type": type(err).__name__, "message": str(err)}
            continue
        steps = pipe.scheduler.config.num_train_timesteps
        generator = torch.manual_seed(0)
        results[spec] = pipe(batch_size=2, generator=generator, num_inference_steps=steps, output_type="np").images
        results[f"{spec}:scheduler"] = np.array(type(pipe.scheduler).__name__)
    if stock:
        assert "ddpm_hf" not in sys.modules, "the stock run imported ddpm_hf"
    np.savez(f"{out}.npz", **results)
    with open(f"{out}.json", "w") as file:
        json.dump(errors, file)


def push(folder: str, repo: str, fresh_repo: str) -> None:
    from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
    from ddpm_hf.tools.hub import push_pipeline

    print(push_pipeline(DDPMPipeline.from_pretrained(folder), repo).commit_url)
    # Loaded from that repo and pushed again: the repo's run record and samples go along.
    print(push_pipeline(DDPMPipeline.from_pretrained(repo), f"{repo}-again", num_sample_images=0).commit_url)
    torch.manual_seed(0)
    pipe = DDPMPipeline(build_unet("tiny"), PaperDDPMScheduler(num_train_timesteps=20))
    print(push_pipeline(pipe, fresh_repo, num_sample_images=4, license="mit").commit_url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    sampling = commands.add_parser("sample")
    sampling.add_argument("out")
    sampling.add_argument("specs", nargs="+")
    sampling.add_argument("--stock", action="store_true")
    pushing = commands.add_parser("push")
    for name in ("folder", "repo", "fresh_repo"):
        pushing.add_argument(name)
    args = parser.parse_args()
    if args.command == "sample":
        sample(args.out, args.specs, args.stock)
    else:
        push(args.folder, args.repo, args.fresh_repo)
