"""The decoded store: a set of images decoded, converted, resized and cropped to uint8 once, in parallel, with
`datasets` (`Dataset.map(num_proc=N)` into fixed-shape `Array3D` uint8 columns), and kept in Arrow files that every
later run (and the evaluation) memory-maps.

A store lives in `<store root>/<key>/`, the key a hash of what its pixels depend on: the source's fingerprint (the
folder's file names, sizes and times, or `datasets`' fingerprint of the split), the resolution, the crop and the
channels. It is built in a temporary folder and renamed into place when complete, so an interrupted build leaves
nothing that a later run would read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from .decoding import Decoder, EncodedImages
from .lazy import StoredImages

STORE_VERSION = 1
MANIFEST = "store.json"
# Pixels per Arrow record batch (and per batch a build process decodes before writing it): large batches keep the
# files' headers few (opening a store touches each), small ones bound the build's memory.
RECORD_BATCH_BYTES = 64 * 2**20


def store_key(source: EncodedImages, decoder: Decoder) -> str:
    spec = {"version": STORE_VERSION, "source": source.fingerprint(), **decoder.fingerprint()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def store_folder(root: str | Path, source: EncodedImages, decoder: Decoder) -> Path:
    return Path(root) / store_key(source, decoder)


def is_built(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def open_store(folder: Path) -> tuple[StoredImages, list[str]]:
    """The store's readable images (those that decoded) and the names of the unreadable ones it skipped."""
    import datasets
    import pyarrow.compute as pc

    manifest = json.loads((folder / MANIFEST).read_text())
    files = [str(folder / name) for name in manifest["files"]]
    bad = [datasets.Dataset.from_file(file).data.table.column("bad") for file in files]
    readable = np.concatenate([pc.equal(column, "").to_numpy(zero_copy_only=False) for column in bad])
    return StoredImages(files, np.flatnonzero(readable), tuple(manifest["shape"])), manifest["skipped"]


def build_store(source: EncodedImages, decoder: Decoder, folder: Path, num_proc: int) -> None:
    """Decode every image of `source` into the store `folder` with `num_proc` processes (a progress bar shows
    the build). Unreadable images stop the build with their name, or with `decoder.skip_bad` are recorded."""
    import datasets
    import pyarrow.compute as pc

    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        rows = datasets.Dataset.from_dict({"row": np.arange(len(source))})
        rows_per_batch = max(1, min(1000, RECORD_BATCH_BYTES // int(np.prod(decoder.shape))))
        decoded = rows.map(
            _DecodeBatch(source, decoder),
            batched=True,
            batch_size=rows_per_batch,  # each map batch is one record batch of the file
            remove_columns=["row"],
            features=datasets.Features(
                {"pixels": datasets.Array3D(decoder.shape, "uint8"), "bad": datasets.Value("string")}
            ),
            num_proc=num_proc if num_proc > 1 and len(source) >= num_proc else None,
            cache_file_name=str(tmp / "pixels.arrow"),
            writer_batch_size=rows_per_batch,
            new_fingerprint=folder.name,
            desc=f"decoding {source.what} into the store",
        )
        bad = decoded.data.table.column("bad")
        skipped = bad.filter(pc.not_equal(bad, "")).to_pylist()
        files = [Path(entry["filename"]).name for entry in decoded.cache_files]
        manifest = {"files": files, "shape": list(decoder.shape), "num_images": len(source), "skipped": skipped}
        manifest["source"] = source.what
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _move_into_place(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, folder: Path) -> None:
    """Rename the finished store into place; if another machine sharing this disk finished first, keep its."""
    try:
        os.rename(tmp, folder)
    except OSError:
        if not is_built(folder):
            raise


class _DecodeBatch:
    """`Dataset.map`'s function: rows of the source to pixels, and the names of unreadable ones (with zeros)."""

    def __init__(self, source: EncodedImages, decoder: Decoder):
        self.source, self.decoder = source, decoder

    def __call__(self, batch: dict) -> dict:
        pixels, bad = [], []
        for i in batch["row"]:
            name = self.source.name(i)
            array = self.decoder.one(name, self.source.opener(i))
            pixels.append(np.zeros(self.decoder.shape, np.uint8) if array is None else array)
            bad.append("" if array is not None else name)
        return {"pixels": pixels, "bad": bad}
