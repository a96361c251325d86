"""Encoded images, listed by index and decoded to the training shape: what the in-memory, store and on-the-fly
paths (`ddpm_hf.tools.data.loading`) all decode through, so that the three give the same pixels."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class Decoder:
    """Turns an image file or bytes into a uint8 array `(channels, resolution, resolution)`, naming the ones it
    cannot read (or, with `skip_bad`, returning None for them)."""

    def __init__(self, channels: int, resolution: int, center_crop: bool, skip_bad: bool):
        if channels not in (1, 3):
            raise ValueError(f"The UNet takes {channels} input channels; images can be grayscale (1) or RGB (3).")
        self.channels, self.resolution, self.center_crop, self.skip_bad = channels, resolution, center_crop, skip_bad

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.resolution, self.resolution)

    def one(self, name: str, opener: Callable[[], PIL.Image.Image]) -> np.ndarray | None:
        try:
            with opener() as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
            if not self.skip_bad:
                raise ValueError(
                    f"Cannot read image {name}: {error}. Pass --skip_bad_images to skip unreadable images."
                ) from error
            return None
        array = np.asarray(self._fit(image), dtype=np.uint8)
        return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))

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

    def fingerprint(self) -> dict:
        """What the decoded pixels depend on besides the source."""
        return {"channels": self.channels, "resolution": self.resolution, "center_crop": self.center_crop}


class EncodedImages:
    """A list of encoded images read by index: `name(i)` and `opener(i)`; `fingerprint()` identifies the list's
    content (without decoding it), `what` says what it is in messages and progress bars."""

    what: str

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, i: int) -> str:
        raise NotImplementedError

    def opener(self, i: int) -> Callable[[], PIL.Image.Image]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError


class FolderImages(EncodedImages):
    """The image files under a folder (any depth), in sorted path order."""

    def __init__(self, folder: str, flag: str):
        if not os.path.isdir(folder):
            raise ValueError(f"{flag} {folder} does not exist or is not a folder.")
        self.folder, self.what = folder, folder
        self.paths = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(folder)
            for name in names
            if name.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not self.paths:
            raise ValueError(f"{flag} {folder} holds no image files (looked for {', '.join(IMAGE_EXTENSIONS)}).")

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        return self.paths[i]

    def opener(self, i: int) -> Callable[[], PIL.Image.Image]:
        return lambda: PIL.Image.open(self.paths[i])

    def fingerprint(self) -> str:
        """The files' paths relative to the folder, sizes and modification times: the same folder copied to another
        machine (same names, sizes, times) keeps its fingerprint; any changed file changes it."""
        digest = hashlib.sha256()
        for path in self.paths:
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, self.folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()


class DatasetImages(EncodedImages):
    """An image column of a `datasets` split, read undecoded (its Arrow files are memory-mapped, so the list costs
    no memory per image)."""

    def __init__(self, split, column: str | None, name: str, what: str):
        import datasets

        image_columns = [c for c, feature in split.features.items() if isinstance(feature, datasets.Image)]
        column = column or (image_columns[0] if image_columns else None)
        if column is None or column not in split.features:
            raise ValueError(
                f"Dataset {name} has no image column {column!r}; its columns are {list(split.features)}. "
                "Pass --image_column."
            )
        self.split = split.select_columns([column]).cast_column(column, datasets.Image(decode=False))
        self.column, self.dataset_name, self.what = column, name, what

    def __len__(self) -> int:
        return len(self.split)

    def _entry(self, i: int) -> dict:
        return self.split[i][self.column]

    def name(self, i: int) -> str:
        return self._entry(i).get("path") or f"{self.dataset_name}[{i}]"

    def opener(self, i: int) -> Callable[[], PIL.Image.Image]:
        entry = self._entry(i)
        if entry.get("bytes") is not None:
            return lambda: PIL.Image.open(io.BytesIO(entry["bytes"]))
        return lambda: PIL.Image.open(entry["path"])

    def fingerprint(self) -> str:
        """`datasets`' own fingerprint of the split (its content and every transform), and the column read."""
        return hashlib.sha256(f"{self.split._fingerprint}\0{self.column}".encode()).hexdigest()


def decode_rows(source: EncodedImages, decoder: Decoder, rows: Sequence[int]) -> np.ndarray:
    """Images `rows` of `source` decoded, uint8 `(len(rows), C, H, W)`; an unreadable one raises, naming it."""
    out = np.empty((len(rows), *decoder.shape), dtype=np.uint8)
    strict = Decoder(decoder.channels, decoder.resolution, decoder.center_crop, skip_bad=False)
    for k, i in enumerate(rows):
        out[k] = strict.one(source.name(int(i)), source.opener(int(i)))
    return out
