"""Training data: decoded once into memory as uint8, batched by a sampler that depends only on the step.

Images come from the Hub or a local dataset (`datasets.load_dataset`), a local image folder
(`imagefolder`), or, with no data argument, scikit-learn's 8x8 handwritten digits, which ship inside
scikit-learn (UCI "Optical Recognition of Handwritten Digits", CC BY 4.0), so the default job needs
no network.

Decoding once and indexing an in-memory tensor (on the accelerator when it is small) keeps the
input pipeline off the critical path, and a sampler that is a pure function of (seed, step) makes
resuming exact without any data-loader state.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
import PIL.Image
import torch

from .distributed import progress_bar

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DIGITS_SOURCE = "sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)"
DIGITS_ID = "sklearn-digits"
# Folder names that say which part of a data set a folder holds, not which data set: `dataset_id` skips them.
GENERIC_FOLDER_NAMES = frozenset(
    """train training test testing val valid validation eval evaluation dev held-out held_out heldout holdout
    hold-out all full data dataset datasets image images img imgs picture pictures photo photos raw files
    samples split splits""".split()
)


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A dataset on the Hub (or a local dataset folder) read with `datasets.load_dataset`."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    train_data_dir: str | None = field(
        default=None, metadata={"help": "A local folder of images (any depth), read as an `imagefolder`."}
    )
    eval_data_dir: str | None = field(
        default=None, metadata={"help": "A local folder of held-out images; default: a split of the training data."}
    )
    image_column: str | None = field(
        default=None, metadata={"help": "The dataset column holding the images; default: the first image column."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Where `datasets` caches downloads."})
    eval_split_fraction: float = field(
        default=0.1,
        metadata={"help": "Fraction of the training images held out for evaluation when the data has no test split."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training images (after the held-out split)."}
    )
    resolution: int = field(default=8, metadata={"help": "Side of the square training images, in pixels."})
    center_crop: bool = field(
        default=True,
        metadata={
            "help": "Scale the short side to the resolution and keep the centre square; false: squash the whole "
            "image to a square. (No random crops: images are decoded once.)"
        },
    )
    random_flip: bool = field(default=False, metadata={"help": "Flip training images horizontally at random."})
    skip_bad_images: bool = field(
        default=False, metadata={"help": "Skip (and count) unreadable images instead of stopping with their name."}
    )
    dataset_label: str | None = field(
        default=None,
        metadata={
            "help": "The data set's name on the model card and in the run record; default: the Hub dataset's name, "
            "or the meaningful part of --train_data_dir's path (generic last parts such as train, test, val, "
            "images, held-out are skipped, e.g. fashion/train -> fashion), or sklearn-digits."
        },
    )

    def dataset_id(self) -> str:
        """A short name of the data read (`load_image_data`): `dataset_label`, else the meaningful part of the
        image folder's path (`folder_label`), else the Hub dataset (a local dataset folder: its path's meaningful
        part), else the digits."""
        if self.dataset_label:
            return self.dataset_label
        if self.train_data_dir:
            return folder_label(self.train_data_dir)
        if self.dataset_name:
            return folder_label(self.dataset_name) if os.path.isdir(self.dataset_name) else self.dataset_name
        return DIGITS_ID


def folder_label(path: str) -> str:
    """The name of the data set in a folder: the last part of its path that is not a generic folder name
    (`GENERIC_FOLDER_NAMES`, any case), e.g. `/data/fashion-mnist/images/train` -> `fashion-mnist`; the last part
    when all are generic. A path without named parts (`.`, `..`) is read as the absolute path it stands for."""
    given = PurePath(os.path.normpath(path))
    parts = [part for part in given.parts if part not in (given.anchor, os.curdir, os.pardir)]
    if not parts:
        absolute = PurePath(os.path.abspath(path))
        parts = [part for part in absolute.parts if part != absolute.anchor] or [absolute.anchor]
    return next((part for part in reversed(parts) if part.lower() not in GENERIC_FOLDER_NAMES), parts[-1])


@dataclass
class ImageData:
    """Decoded images, uint8 of shape `(N, channels, resolution, resolution)`, and their provenance."""

    train: torch.Tensor
    eval: torch.Tensor
    source: str
    skipped: list[str]
    eval_split: str = "held-out"  # the held-out images' name: the dataset's test or validation split, or held-out


def load_image_data(args: DataArguments, channels: int) -> ImageData:
    """Read, decode, convert (RGB or grayscale, to match `channels`), resize and crop every image once.

    Raises:
        ValueError: a missing or empty folder, an unreadable image (unless `skip_bad_images`), or
            too few images; always before any training.
    """
    if channels not in (1, 3):
        raise ValueError(f"The UNet takes {channels} input channels; images can be grayscale (1) or RGB (3).")
    mode = "L" if channels == 1 else "RGB"
    decode = _Decoder(mode, args.resolution, args.center_crop, args.skip_bad_images)
    eval_split = "held-out"
    if args.dataset_name is None and args.train_data_dir is None:
        train, eval_ = _digits(args.resolution, channels)
        source = DIGITS_SOURCE
    else:
        train, eval_, source, eval_split = _from_datasets(args, decode)
    if args.eval_data_dir is not None:
        eval_ = decode.all(_folder_items(args.eval_data_dir, "--eval_data_dir"), args.eval_data_dir)
        source += f", held out: image folder {args.eval_data_dir}"
        eval_split = "held-out"
    if eval_ is None:
        train, eval_ = _hold_out(train, args.eval_split_fraction)
    if args.max_train_samples is not None:
        train = train[: args.max_train_samples]
    if len(train) == 0:
        raise ValueError(f"No training images left from {source} (skipped {len(decode.skipped)} unreadable).")
    return ImageData(train=train, eval=eval_, source=source, skipped=decode.skipped, eval_split=eval_split)


def _digits(resolution: int, channels: int) -> tuple[torch.Tensor, None]:
    from sklearn.datasets import load_digits

    pixels = np.rint(load_digits().images * (255 / 16)).astype(np.uint8)
    images = torch.from_numpy(pixels)[:, None].expand(-1, channels, -1, -1)
    if resolution != images.shape[-1]:
        images = torch.nn.functional.interpolate(images.float(), size=resolution, mode="bilinear", antialias=True)
        images = images.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous(), None


def _hold_out(images: torch.Tensor, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed split (seed 0, whatever `--seed`), so that runs with different seeds share their eval set."""
    if not 0 < fraction < 1:
        raise ValueError(f"--eval_split_fraction must lie in (0, 1), got {fraction}.")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    n_eval = max(1, round(fraction * len(images)))
    return images[order[n_eval:]], images[order[:n_eval]]


class _Decoder:
    """Turns image files or bytes into uint8 arrays of the training shape, naming the ones it cannot read."""

    def __init__(self, mode: str, resolution: int, center_crop: bool, skip_bad: bool):
        self.mode, self.resolution, self.center_crop, self.skip_bad = mode, resolution, center_crop, skip_bad
        self.skipped: list[str] = []

    def one(self, name: str, opener: Callable[[], PIL.Image.Image]) -> np.ndarray | None:
        try:
            with opener() as image:
                image = image.convert(self.mode)
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
            if not self.skip_bad:
                raise ValueError(
                    f"Cannot read image {name}: {error}. Pass --skip_bad_images to skip unreadable images."
                ) from error
            self.skipped.append(name)
            return None
        image = self._fit(image)
        array = np.asarray(image, dtype=np.uint8)
        return array[..., None] if array.ndim == 2 else array

    def _fit(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """Center crop: scale the short side to the resolution and cut the middle; else squash to a square."""
        r = self.resolution
        if not self.center_crop:
            return image.resize((r, r), PIL.Image.Resampling.BICUBIC)
        w, h = image.size
        scale = r / min(w, h)
        image = image.resize((max(r, round(w * scale)), max(r, round(h * scale))), PIL.Image.Resampling.BICUBIC)
        left, top = (image.width - r) // 2, (image.height - r) // 2
        return image.crop((left, top, left + r, top + r))

    def all(self, items: list[tuple[str, Callable[[], PIL.Image.Image]]], what: str) -> torch.Tensor:
        """Every item decoded (`one`), with a progress bar `decoding <what>` on the main process."""
        decoded = (self.one(name, opener) for name, opener in progress_bar(items, desc=f"decoding {what}", unit="img"))
        arrays = [a for a in decoded if a is not None]
        if not arrays:
            return torch.empty(0, 1 if self.mode == "L" else 3, self.resolution, self.resolution, dtype=torch.uint8)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _folder_items(folder: str, flag: str) -> list[tuple[str, Callable[[], PIL.Image.Image]]]:
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {folder} does not exist or is not a folder.")
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not paths:
        raise ValueError(f"{flag} {folder} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    return [(path, lambda path=path: PIL.Image.open(path)) for path in paths]


def _from_datasets(args: DataArguments, decode: _Decoder) -> tuple[torch.Tensor, torch.Tensor | None, str, str]:
    """A Hub/local dataset through `datasets`, or an image folder read file by file (to name bad files): the
    training images, the held-out ones if the data have a test or validation split, the source and that split's name."""
    if args.train_data_dir is not None:
        folder = args.train_data_dir
        train = decode.all(_folder_items(folder, "--train_data_dir"), folder)
        return train, None, f"image folder {folder}", "held-out"
    import datasets

    splits = datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir)
    if "train" not in splits:
        raise ValueError(f"Dataset {args.dataset_name} has no 'train' split; it has {list(splits)}.")
    held_out_name = next((name for name in ("test", "validation") if name in splits), None)
    held_out = None if held_out_name is None else splits[held_out_name]
    source = args.dataset_name + (f" ({args.dataset_config_name})" if args.dataset_config_name else "")
    train = decode.all(_dataset_items(splits["train"], args.image_column, args.dataset_name), f"{source} train")
    if held_out is None:
        return train, None, source, "held-out"
    eval_ = decode.all(_dataset_items(held_out, args.image_column, args.dataset_name), f"{source} {held_out_name}")
    return train, eval_, source, held_out_name


def _dataset_items(split, column: str | None, name: str) -> list[tuple[str, Callable[[], PIL.Image.Image]]]:
    import datasets

    image_columns = [c for c, feature in split.features.items() if isinstance(feature, datasets.Image)]
    column = column or (image_columns[0] if image_columns else None)
    if column is None or column not in split.features:
        raise ValueError(
            f"Dataset {name} has no image column {column!r}; its columns are {list(split.features)}. "
            "Pass --image_column."
        )
    raw = split.cast_column(column, datasets.Image(decode=False))[column]

    def opener(entry: dict) -> Callable[[], PIL.Image.Image]:
        if entry.get("bytes") is not None:
            return lambda: PIL.Image.open(io.BytesIO(entry["bytes"]))
        return lambda: PIL.Image.open(entry["path"])

    return [(entry.get("path") or f"{name}[{i}]", opener(entry)) for i, entry in enumerate(raw)]


class StepSampler:
    """Which images each process trains on at each micro-step: a pure function of (seed, micro-step).

    Every epoch is a fresh permutation of the training set (seeded by `seed` and the epoch); each
    micro-step takes the next `batch_size * num_processes` images of it and gives process `rank` its
    own `batch_size` of them, so the processes see disjoint data and a resumed run sees what an
    uninterrupted one would. The last incomplete global batch of an epoch is dropped.
    """

    def __init__(
        self, num_images: int, batch_size: int, num_processes: int, rank: int, seed: int, device: str | None = None
    ):
        self.global_batch = batch_size * num_processes
        if num_images < self.global_batch:
            raise ValueError(
                f"The training set has {num_images} images, fewer than one global batch "
                f"({batch_size} per process x {num_processes} processes)."
            )
        self.num_images, self.batch_size, self.rank, self.seed = num_images, batch_size, rank, seed
        self.device = device
        self.batches_per_epoch = num_images // self.global_batch
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def indices(self, micro_step: int) -> torch.Tensor:
        """This process's image indices at `micro_step`, on `device` (copied there once per epoch)."""
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            generator = torch.Generator().manual_seed(self._mix(epoch))
            self._order = torch.randperm(self.num_images, generator=generator).to(self.device)
        start = position * self.global_batch + self.rank * self.batch_size
        return self._order[start : start + self.batch_size]

    def _mix(self, *values: int) -> int:
        return int(np.random.SeedSequence([self.seed, *values]).generate_state(1)[0])


def step_generator(seed: int, micro_step: int, rank: int, device: torch.device) -> torch.Generator:
    """The generator of one micro-step's flips, timesteps and noise on one process.

    Its seed mixes (seed, micro-step, rank) with a stream tag of 1, which keeps it apart from the
    sampler's per-epoch seeds (seed, epoch).
    """
    state = int(np.random.SeedSequence([seed, micro_step, rank, 1]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(state)


def random_flip(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Each image flipped left-right with probability 1/2, drawn from `generator` (the paper's augmentation)."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
