"""What a push uploads and from where, the push arguments' checks, and the model card, without a server."""

import json
import os
from fnmatch import fnmatch

import pytest
import yaml
from huggingface_hub import ModelCard

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler
from ddpm_hf.jobs.arguments import check_train_args, parse_train_args, scrub_secrets
from ddpm_hf.tools.hub import (
    HubPublisher,
    HubPushError,
    check_repo_id,
    make_snapshot,
    remove_snapshots,
    upload_patterns,
)
from ddpm_hf.tools.model_card import EVAL_RESULTS_FILE, TRAINING_RUN_FILE, write_model_card

# What a push uploads from a training output folder.
PIPELINE_FILES = {
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
    "README.md",
    "samples.png",
    "train_args.json",
    "training_run.json",
}
OUTPUT_FILES = [
    *sorted(PIPELINE_FILES),
    "logs/ddpm/events.out.tfevents.1",
    "checkpoints/checkpoint-4/model.safetensors",
    "checkpoints/.tmp-checkpoint-6/model.safetensors",
    "samples/step-500.png",
    "notes/private.txt",
]


def _allowed(path: str, patterns: list[str]) -> bool:
    return any(fnmatch(path, p) for p in patterns) and ".tmp-checkpoint-" not in path


def _output_folder(root):
    for name in OUTPUT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


def test_only_the_pipeline_and_its_records_are_uploaded_unless_asked():
    def uploaded(**kwargs):
        return {p for p in OUTPUT_FILES if _allowed(p, upload_patterns(**kwargs))}

    assert uploaded() == PIPELINE_FILES
    assert uploaded(checkpoints=True) == PIPELINE_FILES | {"checkpoints/checkpoint-4/model.safetensors"}
    assert uploaded(logs=True) == PIPELINE_FILES | {"logs/ddpm/events.out.tfevents.1"}
    assert "runs/x" not in uploaded(logs=False, logging_dir="runs")


def test_snapshot_copies_rewritten_files_and_links_finished_checkpoints(tmp_path):
    folder = _output_folder(tmp_path / "out")
    snapshot = make_snapshot(folder, upload_patterns(checkpoints=True))
    taken = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert taken == sorted([*PIPELINE_FILES, "checkpoints/checkpoint-4/model.safetensors"])
    weights = "unet/diffusion_pytorch_model.safetensors"
    (folder / weights).write_text("rewritten in place by the next save")
    assert (snapshot / weights).read_text() == weights
    checkpoint = "checkpoints/checkpoint-4/model.safetensors"
    assert os.path.samefile(snapshot / checkpoint, folder / checkpoint)
    assert not any(p.name.startswith(".hub-push-") for p in make_snapshot(folder).iterdir())
    remove_snapshots(folder)
    assert not list(folder.glob(".hub-push-*"))


@pytest.mark.parametrize("repo_id", ["a/b/c", "bad--name", "-lead", "x.git"])
def test_bad_repo_ids_are_named(repo_id):
    with pytest.raises(ValueError, match=r"--hub_model_id .* is not a Hub repo id"):
        check_repo_id(repo_id, "--hub_model_id")


def test_no_token_fails_before_any_request(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("ddpm_hf.tools.hub.get_token", lambda: None)
    with pytest.raises(HubPushError, match="No Hub token to push me/model"):
        HubPublisher("me/model")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--push_to_hub", "--hub_strategy", "every_save"], "give --save_model_steps"),
        (["--push_to_hub", "--hub_model_id", "me/bad--id"], "--hub_model_id 'me/bad--id' is not a Hub repo id"),
        (["--push_to_hub", "--output_dir", "out/.hidden."], "--hub_model_id '.hidden.' is not a Hub repo id"),
    ],
)
def test_push_arguments_are_checked(flags, message):
    with pytest.raises(ValueError, match=message):
        check_train_args(parse_train_args(flags))


def test_the_token_is_scrubbed_from_the_command_line_trackers_record():
    argv = ["train_ddpm.py", "--hub_token", "hf_a", "--seed", "1", "--hub-token=hf_b", "--hub_model_id", "x"]
    scrub_secrets(argv)
    assert argv == ["train_ddpm.py", "--hub_token", "***", "--seed", "1", "--hub-token=***", "--hub_model_id", "x"]


def test_the_token_is_not_in_the_arguments_that_are_written():
    args = parse_train_args(["--push_to_hub", "--hub_token", "hf_secret_123"])
    assert args.hub.hub_token == "hf_secret_123"
    assert "hf_secret_123" not in json.dumps(args.to_dict())
    assert "hub_token" not in args.to_dict()


def _record(dataset_name=None):
    args = parse_train_args([] if dataset_name is None else ["--dataset_name", dataset_name]).to_dict()
    run = {
        "dataset": "the digits",
        "num_train_images": 1617,
        "num_eval_images": 180,
        "global_step": 1200,
        "max_steps": 1200,
        "per_process_batch_size": 64,
        "effective_batch_size": 128,
        "num_processes": 2,
        "precision": "bf16",
        "hardware": "2 x cpu (x86_64)",
        "dropout": 0.1,
        "training_time": "2.9 min (0.05 h) of wall time",
    }
    result = {"metric": "bits_per_dim", "name": "NLL bound", "value": 1.2345, "dataset": "digits", "split": "test"}
    return {"args": args, "run": run, "results": [result]}


def test_card_header_and_body_carry_the_run(tmp_path, tiny_unet):
    pipe = DDPMPipeline(tiny_unet, PaperDDPMScheduler(num_train_timesteps=50, variance_type="fixed_small"))
    (tmp_path / TRAINING_RUN_FILE).write_text(json.dumps(_record("uoft-cs/cifar10")))
    write_model_card(tmp_path, pipe, "me/ddpm-test")
    text = (tmp_path / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["license"] == "apache-2.0"
    assert header["library_name"] == "diffusers"
    assert header["pipeline_tag"] == "unconditional-image-generation"
    assert set(header["tags"]) >= {"pytorch", "diffusers", "ddpm", "unconditional-image-generation"}
    assert header["datasets"] == ["uoft-cs/cifar10"]
    (entry,) = header["model-index"]
    assert entry["name"] == "ddpm-test"
    (result,) = entry["results"]
    assert result["metrics"] == [{"type": "bits_per_dim", "value": 1.2345, "name": "NLL bound"}]
    assert result["dataset"]["split"] == "test"
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results[0].metric_value == 1.2345
    params = f"{sum(p.numel() for p in tiny_unet.parameters()):,}"
    for shown in [
        "# ddpm-test",
        f"({params} parameters)",
        "T = 50",
        "`fixed_small`",
        "| optimizer steps | 1,200 of 1,200 |",
        "| batch size | 128 (64 per process x 2 processes x 1 accumulation step) |",
        "| precision | bf16 |",
        "| dropout | 0.1 |",
        "| training time | 2.9 min (0.05 h) of wall time |",
        "| NLL bound | 1.234 | digits, test |",
        'DDPMPipeline.from_pretrained("me/ddpm-test")',
        "num_inference_steps=50",
        "@inproceedings{ho2020denoising",
        "## Limitations",
        "It was trained on 1,617 images, a small set: samples\n  can lie close to training images",
        "is not on PyPI: install it from a checkout",
    ]:
        assert shown in text, shown
    assert "pip install ddpm_hf" not in text
    assert "{{" not in text and "None" not in text.split("## Use")[0]
    assert "![samples]" not in text  # no samples.png in the folder


def test_card_adds_the_evaluation_results_and_takes_a_licence(tmp_path, tiny_unet):
    pipe = DDPMPipeline(tiny_unet, PaperDDPMScheduler(num_train_timesteps=50))
    (tmp_path / TRAINING_RUN_FILE).write_text(json.dumps(_record()))
    fid = {"metric": "fid", "name": "FID", "value": 7.5, "stderr": 0.25, "dataset": "digits", "split": "test"}
    again = {**_record()["results"][0], "value": 1.5}  # the trainer's measurement, measured again
    (tmp_path / EVAL_RESULTS_FILE).write_text(json.dumps({"results": [fid, again]}))
    (tmp_path / "samples.png").write_bytes(b"")
    card = write_model_card(tmp_path, pipe, str(tmp_path), license="mit")
    assert card.data.license == "mit"
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("fid", 7.5), ("bits_per_dim", 1.5)]
    assert "| FID | 7.5 ± 0.25 | digits, test |" in card.text
    assert "![samples](samples.png)" in card.text
    assert "datasets" not in card.data.to_dict()


def test_card_of_a_pipeline_without_a_run(tmp_path, tiny_unet):
    card = write_model_card(tmp_path, DDPMPipeline(tiny_unet, PaperDDPMScheduler()), "me/plain")
    assert "## Training" not in card.text and "## Results" not in card.text
    assert card.data.license is None and card.data.eval_results is None
    assert "RGB images" in card.text and "T = 1000" in card.text
