"""Pushing to and loading from the Hub, against a Hub-compatible server on loopback (tests/helpers/hub_server.py).

Every client runs in its own process: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE at import,
and this process has the Hub switched off (conftest.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ddpm_hf import build_unet

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from hub_server import LocalHub
from test_hub_publish import PIPELINE_FILES

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train_scripts" / "train_ddpm.py"
PUSH = ROOT / "train_scripts" / "push_to_hub.py"
CLIENT = ROOT / "tests" / "helpers" / "hub_client.py"
TOKEN = "hf_test_token"  # LocalHub's user "tester"
QUICK = (
    "--unet tiny --num_train_timesteps 20 --train_batch_size 8 --logging_steps 1 --eval_steps 2 "
    "--eval_num_timesteps 5 --eval_batch_size 8 --checkpointing_steps 1 --num_sample_images 4 --cpu_threads 1"
).split()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        yield server


def _env(hub: LocalHub, home: Path, token: str | None = TOKEN, offline: bool = False, endpoint: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=endpoint or hub.url,
        HF_HOME=str(home),
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def _run(cmd, env, check=True):
    result = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


# The trainer, with the client's backoff waits (1, 2, 4, 8, 8 s between retries of a 5xx) recorded on
# stderr instead of slept: the retries still happen, the test does not wait for them. Only the client's
# `time` is replaced, so every other sleep in the process still sleeps and is not counted.
WITHOUT_BACKOFF_WAITS = f"""
import runpy, sys, time, types
from huggingface_hub.utils import _http
record = lambda seconds: print(f"backoff wait {{seconds}} s", file=sys.stderr)
_http.time = types.SimpleNamespace(**{{**vars(time), "sleep": record}})
sys.argv = sys.argv[1:]
runpy.run_path({str(TRAIN)!r}, run_name="__main__")
"""


def _train(out: Path, env: dict, *flags: str, check: bool = True):
    return _run([sys.executable, "-c", WITHOUT_BACKOFF_WAITS, TRAIN, *QUICK, "--output_dir", out, *flags], env, check)


def _sample(env: dict, tmp: Path, *specs: str, stock: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """Load each spec (`repo[@revision]` or a folder) in a fresh process and sample 2 images with seed 0:
    the images and scheduler class of each that loaded, and the error of each that did not."""
    out = tmp / f"samples-{len(list(tmp.glob('samples-*.npz')))}"
    _run([sys.executable, CLIENT, "sample", out, *specs, *(["--stock"] if stock else [])], env)
    return dict(np.load(f"{out}.npz")), json.loads(Path(f"{out}.json").read_text())


def _uploaded(hub: LocalHub, repo_id: str) -> dict[str, bytes]:
    """The repo's files but the .gitattributes that the Hub (and LocalHub) create with it."""
    return {k: v for k, v in hub.repo_files(repo_id).items() if k != ".gitattributes"}


def _card_header(readme: bytes) -> dict:
    return yaml.safe_load(readme.decode().split("---")[1])


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory):
    """A training run with --push_to_hub to a private repo, pushing in the background at each save too."""
    tmp = tmp_path_factory.mktemp("pushed")
    out = tmp / "run"
    secret = "hf_test_token"
    flags = ["--max_train_steps", "2", "--save_model_steps", "1", "--hub_strategy", "every_save"]
    flags += ["--push_to_hub", "--hub_model_id", "digits", "--hub_private_repo", "true", "--hub_token", secret]
    _train(out, _env(hub, tmp / "home", token=None), *flags)
    return out


def test_trainer_pushes_the_pipeline_card_and_samples(hub, pushed):
    files = _uploaded(hub, "tester/digits")
    assert set(files) == PIPELINE_FILES  # no checkpoints, logs or snapshots
    assert (pushed / "checkpoints" / "checkpoint-2").is_dir() and (pushed / "logs").is_dir()
    assert hub.repo_private("tester/digits")
    titles = [title for _, title in hub.repo_commits("tester/digits")]
    assert titles[:2] == ["End of training, step 2", "Training in progress, step 1"]
    for name in PIPELINE_FILES:
        assert files[name] == (pushed / name).read_bytes(), name
    header = _card_header(files["README.md"])
    assert header["library_name"] == "diffusers" and header["license"] == "apache-2.0"
    assert header["pipeline_tag"] == "unconditional-image-generation"
    (entry,) = header["model-index"][0]["results"][0]["metrics"]
    recorded = json.loads(files["training_run.json"])["results"][0]
    assert entry["type"] == "bits_per_dim" and entry["value"] == pytest.approx(recorded["value"])
    assert 0 < entry["value"] < 16
    card = files["README.md"].decode()
    assert 'DDPMPipeline.from_pretrained("tester/digits")' in card
    assert "| optimizer steps | 2 of 2 |" in card
    assert "| batch size | 8 (8 per process x 1 process x 1 accumulation step) |" in card
    assert "1 processes" not in card


def test_the_token_is_sent_only_as_authorization(hub, pushed):
    secret = TOKEN.encode()
    assert not [p for p in pushed.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not [name for name, content in _uploaded(hub, "tester/digits").items() if secret in content]
    requests = [r for r in hub.requests if "tester/digits" in r.path]
    assert requests and all(secret not in r.body and secret not in r.path.encode() for r in requests)
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in requests)


def _google_shaped_repo(hub: LocalHub, folder: Path, scheduler_config: dict) -> str:
    """google/ddpm-cifar10-32's layout: everything at the root, diffusers' scheduler config, no subfolders."""
    torch.manual_seed(0)
    build_unet("tiny").save_pretrained(folder)
    (folder / "scheduler_config.json").write_text(json.dumps({**scheduler_config, "num_train_timesteps": 30}))
    index = {"_class_name": "DDPMPipeline", "_diffusers_version": "0.1.1", "scheduler": ["diffusers", "DDPMScheduler"]}
    (folder / "model_index.json").write_text(json.dumps({**index, "unet": ["diffusers", "UNet2DModel"]}))
    hub.seed_repo("google/ddpm-tiny-32", folder)
    return "google/ddpm-tiny-32"


@pytest.mark.slow
def test_loading_from_the_hub(hub, pushed, tmp_path, google_cifar10_scheduler_config):
    """Both pipelines load what the trainer pushed and a google-shaped repo, and sample alike; revisions
    load as pushed; after one download the repo loads offline; unknown repos and revisions are named."""
    google = _google_shaped_repo(hub, tmp_path / "flat", google_cifar10_scheduler_config)
    (step_1, _), *_ = [c for c in hub.repo_commits("tester/digits") if c[1] == "Training in progress, step 1"]
    old = tmp_path / "step-1"
    for name, content in hub.repo_files("tester/digits", revision=step_1).items():
        (old / name).parent.mkdir(parents=True, exist_ok=True)
        (old / name).write_bytes(content)
    env = _env(hub, tmp_path / "home")
    repo, at_step_1, missing = "tester/digits", f"tester/digits@{step_1}", ["tester/nothing", "tester/digits@nobranch"]
    specs = [repo, str(pushed), google, f"scheduler:{google}", at_step_1, str(old), *missing]
    ours, errors = _sample(env, tmp_path, *specs)
    stock, _ = _sample(env, tmp_path, repo, google, stock=True)
    requests_before = len(hub.requests)
    offline, _ = _sample(_env(hub, tmp_path / "home", token=None, offline=True), tmp_path, repo)
    assert len(hub.requests) == requests_before  # offline: all from the cache

    assert [str(ours[f"{s}:scheduler"]) for s in (repo, google)] == ["PaperDDPMScheduler"] * 2
    assert [str(stock[f"{s}:scheduler"]) for s in (repo, google)] == ["DDPMScheduler"] * 2
    assert ours[repo].shape == (2, 8, 8, 3)
    scheduler = json.loads(str(ours[f"scheduler:{google}"]))
    assert scheduler["variance_type"] == "fixed_large" and scheduler["num_train_timesteps"] == 30
    np.testing.assert_array_equal(ours[repo], ours[str(pushed)])
    np.testing.assert_array_equal(offline[repo], ours[repo])
    for spec in (repo, google):
        np.testing.assert_allclose(stock[spec], ours[spec], atol=1e-4)
    np.testing.assert_array_equal(ours[at_step_1], ours[str(old)])
    assert not np.allclose(ours[at_step_1], ours[repo], atol=1e-3)
    assert set(errors) == set(missing)
    assert (
        "tester/nothing is neither a local folder nor a model repo on http://127.0.0.1" in errors[missing[0]]["message"]
    )
    assert "The repo tester/digits on http://127.0.0.1" in errors[missing[1]]["message"]
    assert "has no revision 'nobranch'" in errors[missing[1]]["message"]


def test_push_pipeline_from_python_writes_the_same_card(hub, pushed, tmp_path):
    _run([sys.executable, CLIENT, "push", pushed, "tester/digits-copy", "tester/fresh"], _env(hub, tmp_path / "home"))
    files = _uploaded(hub, "tester/digits-copy")
    assert set(files) == PIPELINE_FILES
    assert not hub.repo_private("tester/digits-copy")
    card = files["README.md"].decode().replace("digits-copy", "digits")
    assert card == _uploaded(hub, "tester/digits")["README.md"].decode()
    again = _uploaded(hub, "tester/digits-copy-again")
    assert set(again) == PIPELINE_FILES and again["training_run.json"] == files["training_run.json"]
    assert again["README.md"].decode().replace("digits-copy-again", "digits-copy") == files["README.md"].decode()

    files = _uploaded(hub, "tester/fresh")
    assert set(files) == PIPELINE_FILES - {"train_args.json", "training_run.json"}
    header = _card_header(files["README.md"])
    assert header["license"] == "mit" and "model-index" not in header
    assert "T = 20" in files["README.md"].decode() and "## Training" not in files["README.md"].decode()


@pytest.mark.slow
def test_a_failed_final_push_keeps_the_output_and_says_how_to_push_later(hub, tmp_path):
    out = tmp_path / "run"
    env = _env(hub, tmp_path / "home")
    hub.fail(503, path_regex="^/api/models/tester/flaky/commit/")
    try:
        result = _train(out, env, "--max_train_steps", "2", "--push_to_hub", "--hub_model_id", "flaky", check=False)
    finally:
        hub.clear_faults()
    assert result.returncode != 0
    assert "Pushing" in result.stderr and "503" in result.stderr
    assert result.stderr.count("backoff wait") == 5  # the client retried before giving up
    later = f"python train_scripts/push_to_hub.py --output_dir {out} --hub_model_id tester/flaky"
    assert later in result.stderr
    assert {p for p in PIPELINE_FILES if (out / p).is_file()} == PIPELINE_FILES
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert not list(out.glob(".hub-push-*"))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _run([sys.executable, PUSH, *later.split()[2:]], env)
    assert set(_uploaded(hub, "tester/flaky")) == PIPELINE_FILES
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_unreachable_hub_stops_the_trainer_before_training(hub, tmp_path):
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    result = _train(tmp_path / "a", _env(hub, tmp_path / "home", endpoint=closed), "--push_to_hub", check=False)
    assert result.returncode != 0 and f"Could not create or reach the repo a on {closed}" in result.stderr
    assert not (tmp_path / "a").exists()
