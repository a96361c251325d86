"""The data set's name (`DataArguments.dataset_id`), the recorded source, and the decoding progress bar."""

import PIL.Image
import pytest

from ddpm_hf.jobs.arguments import DataArguments
from ddpm_hf.tools.data import DIGITS_ID, folder_label, load_image_data


@pytest.mark.parametrize(
    "path,label",
    [
        ("/x/fashion/train", "fashion"),
        ("/x/fashion/train/", "fashion"),
        ("/x/fashion-mnist/images/train", "fashion-mnist"),
        ("/x/Clothes/Held-Out", "Clothes"),
        ("/x/clothes/IMAGES/Val", "clothes"),
        ("../shoes/test", "shoes"),
        ("/data/images/held-out", "held-out"),  # every part generic: the last one
        ("train", "train"),
    ],
)
def test_a_folder_is_named_by_its_paths_meaningful_part(path, label):
    assert folder_label(path) == label
    assert DataArguments(train_data_dir=path).dataset_id() == label


def test_a_path_without_named_parts_is_read_as_the_folder_it_stands_for(tmp_path, monkeypatch):
    (tmp_path / "shoes" / "train").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "shoes" / "train")
    assert DataArguments(train_data_dir=".").dataset_id() == "shoes"


def test_the_label_wins_then_the_folder_then_the_hub_name_then_the_digits(tmp_path):
    assert DataArguments(train_data_dir="/x/fashion/train", dataset_label="Fashion 10k").dataset_id() == "Fashion 10k"
    assert DataArguments(dataset_label="my digits").dataset_id() == "my digits"
    # Both given: the images come from the folder (`load_image_data`), and so does the name.
    assert DataArguments(dataset_name="uoft-cs/cifar10", train_data_dir="/x/cars/train").dataset_id() == "cars"
    assert DataArguments(dataset_name="uoft-cs/cifar10").dataset_id() == "uoft-cs/cifar10"
    local = tmp_path / "mnist" / "data"
    local.mkdir(parents=True)
    assert DataArguments(dataset_name=str(local)).dataset_id() == "mnist"
    assert DataArguments().dataset_id() == DIGITS_ID == "sklearn-digits"


def _pngs(folder, n):
    folder.mkdir(parents=True)
    for i in range(n):
        PIL.Image.new("L", (28, 28), color=i * 20).save(folder / f"img{i}.png")
    return folder


def test_decoding_a_folder_shows_a_progress_bar_and_records_the_folder(tmp_path, capsys):
    train = _pngs(tmp_path / "clothes" / "train", 5)
    held_out = _pngs(tmp_path / "clothes" / "held-out", 2)
    args = DataArguments(train_data_dir=str(train), eval_data_dir=str(held_out), resolution=8)
    data = load_image_data(args, channels=1)
    assert data.train.shape == (5, 1, 8, 8) and data.eval.shape == (2, 1, 8, 8)
    err = capsys.readouterr().err
    assert f"decoding {train}" in err and "5/5" in err
    assert f"decoding {held_out}" in err and "2/2" in err
    assert data.source == f"image folder {train}, held out: image folder {held_out}"
    assert args.dataset_id() == "clothes"


def test_decoding_a_datasets_dataset_names_its_splits(tmp_path, capsys):
    import datasets

    (tmp_path / "data").mkdir()
    for split, n in (("train", 4), ("test", 2)):
        images = [PIL.Image.new("RGB", (6, 6), (i, 0, 0)) for i in range(n)]
        table = datasets.Dataset.from_dict({"img": images}, features=datasets.Features({"img": datasets.Image()}))
        table.to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    data = load_image_data(DataArguments(dataset_name=str(tmp_path), resolution=4), 3)
    assert len(data.train) == 4 and len(data.eval) == 2
    err = capsys.readouterr().err
    assert f"decoding {tmp_path} train" in err and "4/4" in err
    assert f"decoding {tmp_path} test" in err and "2/2" in err


def test_the_digits_need_no_decoding(capsys):
    load_image_data(DataArguments(), channels=1)
    assert "decoding" not in capsys.readouterr().err
