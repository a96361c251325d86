"""Training data: decoded once, converted, resized, split; the step sampler; the [-1, 1] scaling."""

import numpy as np
import PIL.Image
import pytest
import torch

from ddpm_hf.core.images import to_model_range
from ddpm_hf.jobs.arguments import DataArguments
from ddpm_hf.tools.data import StepSampler, load_image_data, random_flip, step_generator


def test_embedded_digits_need_no_network():
    from sklearn.datasets import load_digits

    data = load_image_data(DataArguments(), channels=1)
    assert data.train.dtype == torch.uint8 and data.train.shape[1:] == (1, 8, 8)
    assert len(data.train) + len(data.eval) == 1797 and len(data.eval) == 180
    assert "load_digits" in data.source and "CC BY 4.0" in data.source
    # Pixel values 0..16 scaled to 0..255: every training image is one of the originals.
    originals = {bytes(np.rint(img * 255 / 16).astype(np.uint8).tobytes()) for img in load_digits().images}
    assert all(bytes(img[0].numpy().tobytes()) in originals for img in data.train[:50])
    assert data.train.max() == 255 and data.train.min() == 0


def make_folder(root, sizes, modes):
    root.mkdir()
    for i, (size, mode) in enumerate(zip(sizes, modes, strict=True)):
        PIL.Image.new(mode, size, color=(i * 40) if mode == "L" else (i * 40, 0, 0)).save(root / f"img{i}.png")
    return root


def test_image_folder_is_converted_resized_and_cropped(tmp_path):
    folder = make_folder(tmp_path / "imgs", [(20, 10), (12, 12), (9, 30)], ["RGB", "L", "RGB"])
    rgb = load_image_data(DataArguments(train_data_dir=str(folder), resolution=6, eval_split_fraction=0.34), 3)
    assert rgb.train.shape == (2, 3, 6, 6) and rgb.eval.shape == (1, 3, 6, 6)
    gray = load_image_data(DataArguments(train_data_dir=str(folder), resolution=6, eval_data_dir=str(folder)), 1)
    assert gray.train.shape == (3, 1, 6, 6) and gray.eval.shape == (3, 1, 6, 6)


def test_center_crop_keeps_the_middle(tmp_path):
    folder = tmp_path / "crop"
    folder.mkdir()
    image = np.zeros((10, 30, 3), dtype=np.uint8)
    image[:, 10:20] = 255  # a white middle third
    PIL.Image.fromarray(image).save(folder / "wide.png")
    args = DataArguments(train_data_dir=str(folder), resolution=10, eval_data_dir=str(folder))
    cropped = load_image_data(args, 3).train[0]
    assert cropped.min() == 255
    args.center_crop = False
    squashed = load_image_data(args, 3).train[0]
    assert squashed[:, :, 0].max() < 50 and squashed[:, :, 5].min() > 200


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=r"--train_data_dir .*nowhere does not exist"):
        load_image_data(DataArguments(train_data_dir=str(tmp_path / "nowhere")), 3)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"--train_data_dir .*empty holds no image files"):
        load_image_data(DataArguments(train_data_dir=str(tmp_path / "empty")), 3)


def test_corrupt_and_truncated_images_are_named_or_skipped(tmp_path):
    folder = make_folder(tmp_path / "imgs", [(8, 8)] * 3, ["RGB"] * 3)
    (folder / "broken.png").write_bytes(b"not an image at all")
    whole = (folder / "img0.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"Cannot read image .*broken.png.*--skip_bad_images"):
        load_image_data(DataArguments(train_data_dir=str(folder), resolution=8), 3)
    args = DataArguments(train_data_dir=str(folder), resolution=8, skip_bad_images=True)
    data = load_image_data(args, 3)
    assert sorted(p.rsplit("/", 1)[-1] for p in data.skipped) == ["broken.png", "truncated.png"]
    assert len(data.train) + len(data.eval) == 3


def test_sampler_shards_disjointly_and_covers_each_epoch():
    n, batch, procs = 50, 4, 3
    samplers = [StepSampler(n, batch, procs, rank, seed=1) for rank in range(procs)]
    per_epoch = samplers[0].batches_per_epoch
    assert per_epoch == 4  # 50 // 12, the last partial global batch dropped
    seen = []
    for step in range(per_epoch):
        batches = [s.indices(step) for s in samplers]
        assert all(len(b) == batch for b in batches)
        flat = torch.cat(batches).tolist()
        assert len(set(flat)) == len(flat), "processes see disjoint images"
        seen += flat
    assert len(set(seen)) == per_epoch * batch * procs
    # A fresh sampler (a resumed run) gives the same batches; the next epoch is a new order.
    assert torch.equal(StepSampler(n, batch, procs, 1, seed=1).indices(2), samplers[1].indices(2))
    assert not torch.equal(samplers[0].indices(0), samplers[0].indices(per_epoch))
    with pytest.raises(ValueError, match=r"has 5 images, fewer than one global batch \(4 per process x 3"):
        StepSampler(5, batch, procs, 0, seed=1)


def test_scaling_and_flips():
    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8).repeat(64, 1, 1, 1)
    x = to_model_range(images)
    assert x.dtype == torch.float32 and x[0, 0, 0].tolist() == [-1.0, 1.0]
    flipped = random_flip(x, step_generator(0, 0, 0, torch.device("cpu")))
    fraction = (flipped[:, 0, 0, 0] == 1.0).float().mean()
    assert 0.2 < fraction < 0.8
    again = random_flip(x, step_generator(0, 0, 0, torch.device("cpu")))
    assert torch.equal(flipped, again)


def test_checkpoint_folders_are_complete_or_ignored(tmp_path):
    from ddpm_hf.tools import checkpoints

    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        checkpoints.temporary_dir(root, step).mkdir(parents=True)
        checkpoints.finish(root, step, {"global_step": step}, total_limit=2)
    assert [p.name for p in checkpoints.complete_checkpoints(root)] == ["checkpoint-20", "checkpoint-30"]
    checkpoints.temporary_dir(root, 40).mkdir()  # a save that was interrupted
    assert checkpoints.resolve("latest", root).name == "checkpoint-30"
    checkpoints.remove_unfinished(root)
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-20", "checkpoint-30"]


def test_a_datasets_dataset_with_its_test_split(tmp_path):
    """The `--dataset_name` path, offline: a local dataset folder in the Hub's parquet layout."""
    import datasets

    def split(n, shade):
        images = [PIL.Image.new("RGB", (12, 10), (shade, i, 0)) for i in range(n)]
        features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
        return datasets.Dataset.from_dict({"img": images, "label": list(range(n))}, features=features)

    (tmp_path / "data").mkdir()
    split(5, 200).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    split(3, 50).to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    data = load_image_data(DataArguments(dataset_name=str(tmp_path), resolution=4), 3)
    assert data.train.shape == (5, 3, 4, 4) and data.eval.shape == (3, 3, 4, 4)
    assert data.train[:, 0].float().mean() > 190 and data.eval[:, 0].float().mean() < 60
    with pytest.raises(ValueError, match=r"has no image column 'picture'; its columns are \['img', 'label'\]"):
        load_image_data(DataArguments(dataset_name=str(tmp_path), image_column="picture"), 3)
