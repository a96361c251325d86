"""Images read on demand by index: a decoded store (memory-mapped) or encoded images decoded when asked for.

Both behave like the uint8 tensor `(N, C, H, W)` of the in-memory path wherever the training and evaluation code
reads images (`len`, `.shape`, `.dtype`, indexing by an int, a slice or an index list, array or tensor, which
returns a uint8 tensor), and both are map-style datasets whose `__getitems__` reads a whole batch, which is how a
DataLoader's worker processes read them.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from .decoding import Decoder, EncodedImages, decode_rows


class LazyImages(torch.utils.data.Dataset):
    """uint8 images `(len(rows), C, H, W)`: image k is row `rows[k]` of the underlying collection."""

    dtype = torch.uint8

    def __init__(self, rows: np.ndarray, image_shape: tuple[int, int, int]):
        self.rows, self.image_shape = np.asarray(rows, dtype=np.int64), tuple(image_shape)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.image_shape))

    def subset(self, positions: np.ndarray | torch.Tensor | slice) -> LazyImages:
        """The images at `positions`, still read on demand."""
        view = copy.copy(self)
        view.rows = self.rows[_numpy_index(positions)]
        return view

    def __getitem__(self, index: int | slice | np.ndarray | torch.Tensor | list[int]) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self[[int(index)]][0]
        return torch.from_numpy(self._read(self.rows[_numpy_index(index)]))

    def __getitems__(self, indices: list[int] | torch.Tensor) -> torch.Tensor:
        return self[indices]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` as a new uint8 array `(len(rows), C, H, W)`."""
        raise NotImplementedError


def _numpy_index(index: slice | np.ndarray | torch.Tensor | list[int]) -> slice | np.ndarray:
    if isinstance(index, slice):
        return index
    if isinstance(index, torch.Tensor):
        return index.cpu().numpy()
    return np.asarray(index, dtype=np.int64)


class StoredImages(LazyImages):
    """Decoded images in Arrow files (`ddpm_hf.tools.data.store`), each image copied straight from its file into
    the batch (`os.pread`). The processes of a machine share the files' pages through the page cache, and a
    process's own memory holds only the batch it reads: reading through a memory map would also map into each
    process every page it has touched (and the kernel's fault-around neighbours), which counts as its own memory
    until another process maps the same page."""

    def __init__(self, files: list[str], rows: np.ndarray, image_shape: tuple[int, int, int]):
        super().__init__(rows, image_shape)
        self.files = files
        self._layout: tuple[list[int], np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_layout": None}  # a worker started by spawn opens the files again

    def _chunks(self) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Per Arrow record batch: the open file, the file offset of its first image, and its first row."""
        if self._layout is None:
            descriptors, offsets, counts = [], [], []
            for file in self.files:
                descriptor = os.open(file, os.O_RDONLY)
                for offset, count in pixel_extents(file):
                    descriptors.append(descriptor)
                    offsets.append(offset)
                    counts.append(count)
            self._layout = descriptors, np.array(offsets), np.cumsum([0, *counts])
        return self._layout

    def _read(self, rows: np.ndarray) -> np.ndarray:
        descriptors, offsets, starts = self._chunks()
        image_bytes = int(np.prod(self.image_shape))
        chunks = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
        for k, (row, chunk) in enumerate(zip(rows, chunks, strict=True)):
            position = int(offsets[chunk] + (row - starts[chunk]) * image_bytes)
            if os.preadv(descriptors[chunk], [out[k]], position) != image_bytes:
                raise OSError(f"{self.files}: image {row} is cut short; delete the store to rebuild it.")
        return out


def pixel_extents(file: str) -> list[tuple[int, int]]:
    """Where the `pixels` column's images lie in one store file: per Arrow record batch, the file offset of its
    first image and the number of images (each batch's pixels are one contiguous run of uint8 values)."""
    import pyarrow as pa

    with pa.memory_map(file) as mapped:
        base = mapped.read_buffer(1).address
        mapped.seek(0)
        column = pa.ipc.open_stream(mapped).read_all().column("pixels")
        extents = []
        for chunk in column.chunks:
            values = chunk.storage if isinstance(chunk, pa.ExtensionArray) else chunk
            while values.type != pa.uint8():  # Array3D: lists of lists of lists of uint8
                values = values.flatten()
            extents.append((values.buffers()[1].address + values.offset - base, len(chunk)))
    return extents


class DecodedOnTheFly(LazyImages):
    """Encoded images (files or a `datasets` column) decoded each time they are read, for sets too large to store
    decoded; run in DataLoader workers (`--dataloader_num_workers`) the decoding overlaps training."""

    def __init__(self, source: EncodedImages, decoder: Decoder, rows: np.ndarray | None = None):
        super().__init__(np.arange(len(source)) if rows is None else rows, decoder.shape)
        self.source, self.decoder = source, decoder

    def _read(self, rows: np.ndarray) -> np.ndarray:
        return decode_rows(self.source, self.decoder, rows)
