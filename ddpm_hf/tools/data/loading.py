"""Training data: which images, decoded how, held where.

Images come from the Hub or a local dataset (`datasets.load_dataset`), a local image folder, or, with no data
argument, scikit-learn's 8x8 handwritten digits, which ship inside scikit-learn (UCI "Optical Recognition of
Handwritten Digits", CC BY 4.0), so the default job needs no network.

Three paths hold the decoded images, chosen by `--data_mode` (`choose_data_mode` by default):
- `in_memory`: every image decoded once into a uint8 tensor of each process (on the accelerator when small);
- `store`: decoded once per machine into memory-mapped Arrow files (`ddpm_hf.tools.data.store`), shared by the
  machine's processes through the page cache;
- `on_the_fly`: encoded images decoded each time a batch needs them, in DataLoader workers.
All three decode through the same `Decoder`, so they give the same pixels, and the step sampler picks the same
images whichever holds them.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np
import torch
from accelerate import PartialState

from ..cpu_threads import available_cores
from ..cpu_threads import local_processes as local_processes_here
from ..distributed import progress_bar
from .decoding import DatasetImages, Decoder, EncodedImages, FolderImages
from .lazy import DecodedOnTheFly, LazyImages
from .store import build_store, is_built, open_store, store_folder

DIGITS_SOURCE = "sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits, CC BY 4.0)"
DIGITS_ID = "sklearn-digits"
DATA_MODES = ("auto", "in_memory", "store", "on_the_fly")
# The in-memory path is the default while all of this machine's processes' copies of the set take at most this.
MAX_IN_MEMORY_BYTES = 2**30
# Folder names that say which part of a data set a folder holds, not which data set: `dataset_id` skips them.
GENERIC_FOLDER_NAMES = frozenset(
    """train training test testing val valid validation eval evaluation dev held-out held_out heldout holdout
    hold-out all full data dataset datasets image images img imgs picture pictures photo photos raw files
    samples split splits""".split()
)

Images = torch.Tensor | LazyImages


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
        default=False,
        metadata={
            "help": "Skip (and count) unreadable images instead of stopping with their name (in_memory and store: "
            "on_the_fly reads each image only when its batch comes)."
        },
    )
    data_mode: str = field(
        default="auto",
        metadata={
            "help": "Where the decoded images are held. in_memory: decoded by each process into its memory (on the "
            "accelerator when at most 1 GiB); store: decoded once per machine into memory-mapped Arrow files under "
            "--data_store_dir, shared by the machine's processes and reused by later runs; on_the_fly: decoded when "
            "a batch needs them, in --dataloader_num_workers worker processes. auto: in_memory while this machine's "
            "processes' copies take at most 1 GiB, else store, else (not enough disk for it) on_the_fly. All three "
            "give the same batches.",
            "choices": list(DATA_MODES),
        },
    )
    data_store_dir: str | None = field(
        default=None,
        metadata={"help": "Where decoded stores are kept; default: ddpm_hf-stores under the datasets cache."},
    )
    data_store_num_proc: int | None = field(
        default=None, metadata={"help": "Processes that build a decoded store; default: the usable cores."}
    )
    dataloader_num_workers: int = field(
        default=0,
        metadata={
            "help": "Worker processes (per training process) that read the store or decode images on the fly ahead "
            "of training; 0: the training process reads each batch itself. Unused by in_memory."
        },
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
    """Decoded images, uint8 `(N, channels, resolution, resolution)` (a tensor, or `LazyImages` read on demand),
    their provenance and the path that holds them (`mode`)."""

    train: Images
    eval: Images
    source: str
    skipped: list[str]
    eval_split: str = "held-out"  # the held-out images' name: the dataset's test or validation split, or held-out
    mode: str = "in_memory"


@dataclass
class _Sources:
    """The encoded training images, the held-out ones if the data name them, and what to call them."""

    train: EncodedImages
    held_out: EncodedImages | None
    description: str
    eval_split: str

    def __len__(self) -> int:
        return len(self.train) + (len(self.held_out) if self.held_out is not None else 0)


def load_image_data(args: DataArguments, channels: int, local_processes: int | None = None) -> ImageData:
    """Read, decode, convert (RGB or grayscale, to match `channels`), resize and crop the images, held by the
    path `--data_mode` names (`choose_data_mode` for auto); `local_processes` (default: torchrun's
    LOCAL_WORLD_SIZE) is the number of this machine's processes that each hold an in-memory copy. This machine's
    main process goes first (downloads, the store's build), the others then read what it made.

    Raises:
        ValueError: a missing or empty folder, an unreadable image (unless `skip_bad_images`), too few images, or
            a data mode the data cannot take; always before any training.
    """
    decoder = Decoder(channels, args.resolution, args.center_crop, args.skip_bad_images)
    _check_mode(args)
    with PartialState().local_main_process_first():
        if args.dataset_name is None and args.train_data_dir is None:
            data = _digits_data(args, channels)
        else:
            data = _decoded_data(args, decoder, local_processes)
    if data.eval is None:
        data.train, data.eval = _hold_out(data.train, args.eval_split_fraction)
    if args.max_train_samples is not None:
        data.train = _subset(data.train, slice(None, args.max_train_samples))
    if len(data.train) == 0:
        raise ValueError(f"No training images left from {data.source} (skipped {len(data.skipped)} unreadable).")
    return data


def _check_mode(args: DataArguments) -> None:
    if args.data_mode not in DATA_MODES:
        raise ValueError(f"--data_mode takes {', '.join(DATA_MODES)}; got {args.data_mode}.")
    if args.data_mode in ("store", "on_the_fly") and args.dataset_name is None and args.train_data_dir is None:
        raise ValueError(
            f"--data_mode {args.data_mode} reads image files or a dataset (--train_data_dir or --dataset_name); "
            "the built-in digits are always held in memory."
        )
    if args.data_mode == "on_the_fly" and args.skip_bad_images:
        raise ValueError(
            "--skip_bad_images needs every image decoded once (--data_mode in_memory or store); on_the_fly reads "
            "each image only when its batch comes, and stops there, naming it, if it is unreadable."
        )
    if args.data_store_num_proc is not None and args.data_store_num_proc < 1:
        raise ValueError(f"--data_store_num_proc must be 1 or more, got {args.data_store_num_proc}.")
    if args.dataloader_num_workers < 0:
        raise ValueError(f"--dataloader_num_workers must be 0 or more, got {args.dataloader_num_workers}.")


def _digits_data(args: DataArguments, channels: int) -> ImageData:
    from sklearn.datasets import load_digits

    pixels = np.rint(load_digits().images * (255 / 16)).astype(np.uint8)
    images = torch.from_numpy(pixels)[:, None].expand(-1, channels, -1, -1)
    if args.resolution != images.shape[-1]:
        images = torch.nn.functional.interpolate(images.float(), size=args.resolution, mode="bilinear", antialias=True)
        images = images.round().clamp(0, 255).to(torch.uint8)
    data = ImageData(train=images.contiguous(), eval=None, source=DIGITS_SOURCE, skipped=[])
    if args.eval_data_dir is not None:
        decoder = Decoder(channels, args.resolution, args.center_crop, args.skip_bad_images)
        _use_eval_folder(data, args, "in_memory", decoder)
    return data


def _decoded_data(args: DataArguments, decoder: Decoder, local_processes: int | None) -> ImageData:
    sources = _sources(args)
    mode = choose_data_mode(args, len(sources), decoder, local_processes, sources.train)
    train, skipped = _hold(sources.train, decoder, mode, args)
    data = ImageData(train=train, eval=None, source=sources.description, skipped=skipped, mode=mode)
    if sources.held_out is not None:
        data.eval, more = _hold(sources.held_out, decoder, mode, args)
        data.skipped += more
        data.eval_split = sources.eval_split
    if args.eval_data_dir is not None:
        _use_eval_folder(data, args, mode, decoder)
    return data


def _use_eval_folder(data: ImageData, args: DataArguments, mode: str, decoder: Decoder) -> None:
    data.eval, more = _hold(FolderImages(args.eval_data_dir, "--eval_data_dir"), decoder, mode, args)
    data.skipped += more
    data.source += f", held out: image folder {args.eval_data_dir}"
    data.eval_split = "held-out"


def _sources(args: DataArguments) -> _Sources:
    """The image folder, or the Hub/local dataset's train split and its test or validation split if it has one."""
    if args.train_data_dir is not None:
        folder = args.train_data_dir
        return _Sources(FolderImages(folder, "--train_data_dir"), None, f"image folder {folder}", "held-out")
    import datasets

    splits = datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.cache_dir)
    if "train" not in splits:
        raise ValueError(f"Dataset {args.dataset_name} has no 'train' split; it has {list(splits)}.")
    source = args.dataset_name + (f" ({args.dataset_config_name})" if args.dataset_config_name else "")
    train = DatasetImages(splits["train"], args.image_column, args.dataset_name, f"{source} train")
    held_out_name = next((name for name in ("test", "validation") if name in splits), None)
    if held_out_name is None:
        return _Sources(train, None, source, "held-out")
    held_out = DatasetImages(splits[held_out_name], args.image_column, args.dataset_name, f"{source} {held_out_name}")
    return _Sources(train, held_out, source, held_out_name)


def choose_data_mode(
    args: DataArguments,
    num_images: int,
    decoder: Decoder,
    local_processes: int | None = None,
    source: EncodedImages | None = None,
) -> str:
    """`--data_mode`, or for auto: in_memory while the decoded set times this machine's processes is at most
    `MAX_IN_MEMORY_BYTES`, else store (already built, or with room for it on the store's disk), else
    on_the_fly."""
    if args.data_mode != "auto":
        return args.data_mode
    local = local_processes or local_processes_here()
    decoded_bytes = num_images * int(np.prod(decoder.shape))
    if decoded_bytes * local <= MAX_IN_MEMORY_BYTES:
        return "in_memory"
    root = store_root(args)
    if source is not None and is_built(store_folder(root, source, decoder)):
        return "store"
    existing = next((p for p in [root, *root.parents] if p.exists()), Path("/"))
    return "store" if shutil.disk_usage(existing).free > 1.1 * decoded_bytes else "on_the_fly"


def store_root(args: DataArguments) -> Path:
    if args.data_store_dir is not None:
        return Path(args.data_store_dir)
    import datasets

    return Path(args.cache_dir or datasets.config.HF_DATASETS_CACHE) / "ddpm_hf-stores"


def _hold(source: EncodedImages, decoder: Decoder, mode: str, args: DataArguments) -> tuple[Images, list[str]]:
    """`source`'s images held as `mode` says, and the names of the unreadable ones skipped."""
    if mode == "on_the_fly":
        return DecodedOnTheFly(source, decoder), []
    if mode == "store":
        folder = store_folder(store_root(args), source, decoder)
        if not is_built(folder):
            num_proc = args.data_store_num_proc or available_cores()
            build_store(source, decoder, folder, num_proc)
        return open_store(folder)
    return _decode_all(source, decoder)


def _decode_all(source: EncodedImages, decoder: Decoder) -> tuple[torch.Tensor, list[str]]:
    """Every image decoded into one tensor, with a progress bar `decoding <what>` on the main process."""
    images, skipped = np.empty((len(source), *decoder.shape), dtype=np.uint8), []
    kept = 0
    for i in progress_bar(range(len(source)), desc=f"decoding {source.what}", unit="img"):
        array = decoder.one(source.name(i), source.opener(i))
        if array is None:
            skipped.append(source.name(i))
        else:
            images[kept] = array
            kept += 1
    return torch.from_numpy(images[:kept].copy() if skipped else images), skipped


def _subset(images: Images, positions: torch.Tensor | slice) -> Images:
    return images[positions] if isinstance(images, torch.Tensor) else images.subset(positions)


def _hold_out(images: Images, fraction: float) -> tuple[Images, Images]:
    """A fixed split (seed 0, whatever `--seed`), so that runs with different seeds share their eval set."""
    if not 0 < fraction < 1:
        raise ValueError(f"--eval_split_fraction must lie in (0, 1), got {fraction}.")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    n_eval = max(1, round(fraction * len(images)))
    return _subset(images, order[n_eval:]), _subset(images, order[:n_eval])
