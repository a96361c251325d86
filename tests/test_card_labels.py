"""How the model card names the data, the preset and the FID, and its counts' plurals."""

import json
import re

import yaml

from ddpm_hf import DDPMPipeline, PaperDDPMScheduler
from ddpm_hf.jobs.arguments import parse_train_args
from ddpm_hf.tools.model_card import TRAINING_RUN_FILE, count, write_model_card


def _card(folder, unet, flags, num_processes=1, results=(), num_train_images=9000):
    """The card of a pipeline in `folder` whose run record is what the trainer writes for `flags`."""
    args = parse_train_args(flags)
    run = {
        "dataset": "the source",
        "dataset_id": args.data.dataset_id(),
        "num_train_images": num_train_images,
        "num_eval_images": 1000,
        "global_step": 1000,
        "max_steps": 1000,
        "per_process_batch_size": 16,
        "effective_batch_size": 16 * num_processes * args.train.gradient_accumulation_steps,
        "num_processes": num_processes,
        "precision": "no",
        "hardware": f"{num_processes} x cpu (x86_64)",
        "dropout": 0.1,
        "training_time": "50 s of wall time",
    }
    if args.data.train_data_dir:
        run["dataset"] = f"image folder {args.data.train_data_dir}"
    record = {"args": args.to_dict(), "run": run, "results": list(results)}
    (folder / TRAINING_RUN_FILE).write_text(json.dumps(record))
    pipe = DDPMPipeline(unet, PaperDDPMScheduler(num_train_timesteps=50))
    text = write_model_card(folder, pipe, "me/clothes").text
    return text, (folder / "README.md").read_text()


def _bound(dataset):
    return {"metric": "bits_per_dim", "name": "NLL bound", "value": 4.5, "dataset": dataset, "split": "held-out"}


def _fid(metric, dataset):
    name = "FID (Inception; 100 samples)" if metric == "fid" else "FID (random features, not comparable)"
    return {"metric": metric, "name": name, "value": 30.0, "dataset": dataset, "split": "held-out"}


def test_a_folder_run_on_one_process(tmp_path, tiny_unet):
    flags = ["--train_data_dir", "/data/fashion/train", "--resolution", "28"]
    text, readme = _card(tmp_path, tiny_unet, flags, results=[_bound("fashion"), _fid("fid", "fashion")])
    assert "ddpm_hf on **fashion**" in text
    assert "| preset | none |" in text
    assert "| data | fashion, from image folder /data/fashion/train: 9,000 training images, 1,000 held out |" in text
    assert "| batch size | 16 (16 per process x 1 process x 1 accumulation step) |" in text
    assert "| NLL bound | 4.5 | fashion, held-out |" in text
    assert "| LR schedule | constant_with_warmup, 100 warm-up steps |" in text
    assert "training data (fashion)" in text
    assert "It was trained on 9,000 images, a small set" in text
    assert not re.search(r"\b1 (processes|images|parameters|steps|network evaluations)\b", text)
    # A real-weight FID is said to be one, and no random-feature caveat is made for it.
    assert "measured on the standard FID network" in text
    assert "comparable with published FIDs in method, not in data" in text
    assert "random feature space" not in text
    header = yaml.safe_load(readme.split("---")[1])
    assert "datasets" not in header  # a folder is no Hub dataset
    (entry,) = header["model-index"]
    assert {r["dataset"]["name"] for r in entry["results"]} == {"fashion"}
    assert {r["dataset"]["split"] for r in entry["results"]} == {"held-out"}


def test_two_processes_and_accumulation_steps_are_plural(tmp_path, tiny_unet):
    flags = ["--train_data_dir", "/data/fashion-mnist/images/train", "--gradient_accumulation_steps", "2"]
    flags += ["--lr_warmup_steps", "1"]
    results = [_fid("fid_random_features", "fashion-mnist")]
    text, _ = _card(tmp_path, tiny_unet, flags, num_processes=2, results=results, num_train_images=1)
    assert "| batch size | 64 (16 per process x 2 processes x 2 accumulation steps) |" in text
    assert ", 1 warm-up step |" in text
    assert "| data | fashion-mnist, from image folder /data/fashion-mnist/images/train: 1 training image," in text
    assert "It was trained on 1 image," in text
    assert "random feature space" in text and "FID is biased upwards" in text
    assert "standard FID network" not in text and "published FIDs in method" not in text


def test_a_dataset_label_names_the_data(tmp_path, tiny_unet):
    flags = ["--train_data_dir", "/data/train", "--dataset_label", "Clothes 28px"]
    text, _ = _card(tmp_path, tiny_unet, flags, results=[_bound("Clothes 28px")])
    assert "ddpm_hf on **Clothes 28px**" in text
    assert "| data | Clothes 28px, from image folder /data/train:" in text
    assert "| NLL bound | 4.5 | Clothes 28px, held-out |" in text
    assert "FID" not in text.split("## Citation")[0]  # no FID measured, no FID caveat


def test_the_preset_row(tmp_path, tiny_unet):
    default, _ = _card(tmp_path, tiny_unet, [])
    assert "| preset | none (the embedded default job) |" in default
    hub, readme = _card(tmp_path, tiny_unet, ["--dataset_name", "uoft-cs/cifar10"])
    assert "| preset | none |" in hub and "ddpm_hf on **uoft-cs/cifar10**" in hub
    assert "| data | uoft-cs/cifar10, from the source:" in hub
    assert yaml.safe_load(readme.split("---")[1])["datasets"] == ["uoft-cs/cifar10"]
    preset, _ = _card(tmp_path, tiny_unet, ["--preset", "cifar10", "--dataset_name", "uoft-cs/cifar10"])
    assert "| preset | cifar10 |" in preset


def test_a_local_dataset_folder_is_not_named_as_a_hub_dataset(tmp_path, tiny_unet):
    _, readme = _card(tmp_path, tiny_unet, ["--dataset_name", str(tmp_path)])
    assert "datasets" not in yaml.safe_load(readme.split("---")[1])


def test_count():
    assert count(1, "process", "processes") == "1 process"
    assert count(2, "process", "processes") == "2 processes"
    assert count(0, "warm-up step") == "0 warm-up steps"
    assert count(1617, "image") == "1,617 images"
