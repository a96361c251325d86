"""Image grids with PIL alone (torchvision is not a dependency)."""

from __future__ import annotations

import math

import PIL.Image


def make_grid(images: list[PIL.Image.Image], ncols: int | None = None, padding: int = 2) -> PIL.Image.Image:
    """Tile equally sized images row by row on a black canvas; `ncols` defaults to ceil(sqrt(n))."""
    if not images:
        raise ValueError("`images` is empty; make_grid needs at least one image.")
    width, height = images[0].size
    if any(image.size != (width, height) for image in images):
        raise ValueError("make_grid needs images of one size; got " + str(sorted({i.size for i in images})))
    ncols = ncols or math.ceil(math.sqrt(len(images)))
    nrows = math.ceil(len(images) / ncols)
    grid = PIL.Image.new(images[0].mode, (ncols * (width + padding) + padding, nrows * (height + padding) + padding))
    for i, image in enumerate(images):
        row, col = divmod(i, ncols)
        grid.paste(image, (padding + col * (width + padding), padding + row * (height + padding)))
    return grid
