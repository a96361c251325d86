"""The three places decoded images are held (in memory, a decoded store, decoded on the fly) give the same
pixels and the same batches; the store is built once and reused; the default follows the set's size."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from ddpm_hf.jobs.trainer import HELD
from ddpm_hf.tools.data import (
    DataArguments,
    StepSampler,
    choose_data_mode,
    load_image_data,
    loading,
    micro_batches,
    store,
)
from ddpm_hf.tools.data.decoding import Decoder

ROOT = Path(__file__).resolve().parents[1]
MODES = ("in_memory", "store", "on_the_fly")


def random_folder(root: Path, n: int, seed: int = 0) -> Path:
    """`n` PNGs of random pixels and assorted sizes (some wider, some taller than square)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        h, w = rng.integers(10, 30, size=2)
        PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    return root


def load(folder: Path, mode: str, stores: Path, **kwargs) -> loading.ImageData:
    args = DataArguments(train_data_dir=str(folder), resolution=8, data_mode=mode, data_store_dir=str(stores), **kwargs)
    return load_image_data(args, channels=3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return random_folder(tmp_path_factory.mktemp("data") / "images", 60)


def centre_crop(path: Path, size: int) -> torch.Tensor:
    """The documented crop, written out independently: short side to `size` (bicubic), then the middle square."""
    with PIL.Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), PIL.Image.Resampling.BICUBIC)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        array = np.asarray(image.crop((left, top, left + size, top + size)))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def test_each_mode_holds_the_same_pixels_as_the_files(folder, tmp_path):
    paths = sorted(folder.iterdir())
    order = torch.randperm(60, generator=torch.Generator().manual_seed(0))  # the documented hold-out: seed 0, 10%
    for mode in MODES:
        data = load(folder, mode, tmp_path / "stores")
        assert data.mode == mode and data.train.shape == (54, 3, 8, 8) and data.eval.shape == (6, 3, 8, 8)
        for k in (0, 17, 53):
            assert torch.equal(data.train[k], centre_crop(paths[order[6 + k]], 8)), (mode, k)
        assert torch.equal(data.eval[2], centre_crop(paths[order[2]], 8))
        rows = torch.tensor([3, 40, 3, 11])
        assert torch.equal(data.train[rows], torch.stack([data.train[int(r)] for r in rows]))
        assert torch.equal(data.train[5:9], torch.stack([data.train[k] for k in range(5, 9)]))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_three_paths_give_the_same_batches_at_every_step_and_after_a_resume(folder, tmp_path, workers):
    held = {mode: load(folder, mode, tmp_path / "stores").train for mode in MODES}
    for rank in (0, 1):
        sampler = StepSampler(54, 5, 2, rank, seed=3)  # 5 batches per epoch: 12 steps cross two epoch boundaries
        expected = [held["in_memory"][sampler.indices(step)] for step in range(12)]
        for mode in ("store", "on_the_fly"):
            batches = micro_batches(held[mode], sampler, 0, num_workers=workers)
            assert all(torch.equal(next(batches), want) for want in expected), (mode, rank)
            resumed = micro_batches(held[mode], sampler, 7, num_workers=workers)
            assert all(torch.equal(next(resumed), want) for want in expected[7:]), (mode, rank, "resumed")


def test_the_store_is_built_once_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    folder = random_folder(tmp_path / "images", 12)
    first = load(folder, "store", tmp_path / "stores")
    built = list((tmp_path / "stores").iterdir())
    assert len(built) == 1 and (built[0] / store.MANIFEST).is_file()

    def no_build(*args):
        raise AssertionError("the store was built again")

    monkeypatch.setattr(loading, "build_store", no_build)
    again = load(folder, "store", tmp_path / "stores")
    assert torch.equal(again.train[:], first.train[:])
    monkeypatch.undo()
    PIL.Image.new("RGB", (9, 9), (1, 2, 3)).save(folder / "005.png")  # a different image under an old name
    changed = load(folder, "store", tmp_path / "stores")
    assert len(list((tmp_path / "stores").iterdir())) == 2
    assert not torch.equal(changed.train[:], first.train[:]) or not torch.equal(changed.eval[:], first.eval[:])


def test_a_store_build_names_a_bad_image_or_skips_it(tmp_path):
    folder = random_folder(tmp_path / "images", 6)
    (folder / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Cannot read image .*broken.png.*--skip_bad_images"):
        load(folder, "store", tmp_path / "stores", data_store_num_proc=2)
    assert not any((tmp_path / "stores").iterdir()), "an interrupted build must leave nothing behind"
    data = load(folder, "store", tmp_path / "stores", skip_bad_images=True, data_store_num_proc=2)
    assert [Path(name).name for name in data.skipped] == ["broken.png"]
    assert len(data.train) + len(data.eval) == 6
    in_memory = load(folder, "in_memory", tmp_path / "stores", skip_bad_images=True)
    assert torch.equal(data.train[:], in_memory.train)


def test_on_the_fly_names_a_bad_image_when_its_batch_comes(tmp_path):
    folder = random_folder(tmp_path / "images", 4)
    (folder / "broken.png").write_bytes(b"not an image")
    data = load(folder, "on_the_fly", tmp_path / "stores", eval_split_fraction=0.2)
    with pytest.raises(ValueError, match=r"Cannot read image .*broken.png"):
        torch.cat([data.train[:], data.eval[:]])


def test_a_datasets_dataset_in_each_mode(tmp_path):
    import datasets

    (tmp_path / "data").mkdir()
    for split, n in (("train", 7), ("test", 3)):
        images = [PIL.Image.new("RGB", (12, 10), (200 if split == "train" else 40, i * 9, 0)) for i in range(n)]
        table = datasets.Dataset.from_dict({"img": images}, features=datasets.Features({"img": datasets.Image()}))
        table.to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    held = {}
    for mode in MODES:
        args = DataArguments(
            dataset_name=str(tmp_path), resolution=4, data_mode=mode, data_store_dir=str(tmp_path / "s")
        )
        held[mode] = load_image_data(args, 3)
        assert held[mode].eval_split == "test" and held[mode].train.shape == (7, 3, 4, 4)
    for mode in ("store", "on_the_fly"):
        assert torch.equal(held[mode].train[:], held["in_memory"].train)
        assert torch.equal(held[mode].eval[:], held["in_memory"].eval)
    assert held["in_memory"].train[:, 1, 0, 0].tolist() == [i * 9 for i in range(7)]


def test_auto_picks_memory_while_the_local_copies_fit_then_the_store_then_on_the_fly(tmp_path, monkeypatch):
    decoder = Decoder(3, 64, True, False)  # 12,288 bytes per image
    args = DataArguments(train_data_dir="unused", data_store_dir=str(tmp_path / "stores"))
    limit = loading.MAX_IN_MEMORY_BYTES
    fits = limit // (3 * 64 * 64)
    assert choose_data_mode(args, fits, decoder, local_processes=1) == "in_memory"
    assert choose_data_mode(args, fits, decoder, local_processes=2) == "store"  # two copies would not fit
    assert choose_data_mode(args, fits // 2, decoder, local_processes=2) == "in_memory"
    free = 1.05 * fits * 3 * 64 * 64  # less than the store's size with its margin
    monkeypatch.setattr(loading.shutil, "disk_usage", lambda path: type("Usage", (), {"free": free}))
    assert choose_data_mode(args, fits, decoder, local_processes=2) == "on_the_fly"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert choose_data_mode(args, fits, decoder) == "in_memory"
    for mode in MODES:
        assert choose_data_mode(DataArguments(data_mode=mode), 10**9, decoder) == mode


def test_an_existing_store_wins_over_a_full_disk(folder, tmp_path, monkeypatch):
    load(folder, "store", tmp_path / "stores")
    monkeypatch.setattr(loading, "MAX_IN_MEMORY_BYTES", 1)
    monkeypatch.setattr(loading.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 0}))
    assert load(folder, "auto", tmp_path / "stores").mode == "store"
    assert load(folder, "auto", tmp_path / "other").mode == "on_the_fly"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"data_mode": "store"},
            r"--data_mode store reads image files or a dataset .*digits are always held in memory",
        ),
        ({"data_mode": "disk"}, r"--data_mode takes auto, in_memory, store, on_the_fly; got disk"),
        (
            {"data_mode": "on_the_fly", "skip_bad_images": True, "train_data_dir": "x"},
            r"--skip_bad_images needs every image decoded once",
        ),
        ({"dataloader_num_workers": -1}, r"--dataloader_num_workers must be 0 or more, got -1"),
    ],
)
def test_modes_the_data_cannot_take_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        load_image_data(DataArguments(**args), channels=1)


@pytest.mark.slow
def test_training_in_each_mode_gives_the_same_weights(folder, tmp_path):
    """The trainer end to end: 6 steps on the same images held three ways (on the fly in 2 worker processes)."""
    weights = {}
    for mode in MODES:
        out = tmp_path / mode
        flags = (
            f"--unet tiny --num_train_timesteps 50 --train_batch_size 8 --eval_steps 0 --checkpointing_steps 0 "
            f"--num_sample_images 0 --cpu_threads 1 --report_to none --max_train_steps 6 --resolution 8 "
            f"--train_data_dir {folder} --data_mode {mode} --data_store_dir {tmp_path / 'stores'} "
            f"--dataloader_num_workers {2 if mode == 'on_the_fly' else 0} --output_dir {out}"
        ).split()
        result = subprocess.run(
            [sys.executable, str(ROOT / "train_scripts" / "train_ddpm.py"), *flags],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"54 training images, held {HELD[mode]}" in result.stderr
        weights[mode] = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    for mode in ("store", "on_the_fly"):
        assert all(torch.equal(weights[mode][k], weights["in_memory"][k]) for k in weights["in_memory"]), mode


@pytest.mark.slow
def test_each_machine_builds_its_store_once_on_its_local_main_process(folder, tmp_path):
    """Two machines on loopback, two processes each, each machine in its own working folder with a relative store
    folder (machines that share no disk): one build per machine, by its local main process, while the other waits."""
    from helpers.ports import free_port

    launcher = Path(sys.executable).parent / "accelerate"
    port, logs = free_port(), tmp_path / "logs"
    logs.mkdir()
    launches = []
    for machine in (0, 1):
        cwd = tmp_path / f"machine{machine}"
        cwd.mkdir()
        command = [
            str(launcher), "launch", "--multi_gpu", "--num_machines", "2", "--machine_rank", str(machine),
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--num_processes", "4",
            "--mixed_precision", "no", "--dynamo_backend", "no",
            str(ROOT / "tests" / "helpers" / "load_data.py"), str(folder), "stores", str(logs),
        ]  # fmt: skip
        launches.append(subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [launch.communicate(timeout=300) for launch in launches]
    assert [launch.returncode for launch in launches] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    builders = {"build-0-0-0": 0, "build-1-0-2": 1}  # machine 1's local main process is rank 2
    assert sorted(path.name for path in logs.iterdir()) == sorted(builders)
    for name, machine in builders.items():
        stores = tmp_path / f"machine{machine}" / "stores"
        assert len(list(stores.iterdir())) == 1 and (logs / name).read_text() == str(tmp_path / f"machine{machine}")
    lines = sorted(line for out, _ in outputs for line in out.splitlines() if line.startswith("rank"))
    assert [line.split(":")[0] for line in lines] == ["rank 0", "rank 1", "rank 2", "rank 3"], lines
    assert len({line.split(":")[1] for line in lines}) == 1, lines
