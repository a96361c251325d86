"""Image conversions and grids with PIL alone (torchvision is not a dependency).

Three ranges meet in this package: uint8 pixels in [0, 255] (data as decoded, samples as saved), the model's
range [-1, 1] (x_0 of the paper, Sec. 3.3: "data consisting of integers in {0, 1, ..., 255} scaled linearly to
[-1, 1]") and [0, 1] floats (the pipeline's `np` and `pt` outputs). Every conversion between them is here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] to float32 in [-1, 1]: x / 127.5 - 1."""
    return images.float() / 127.5 - 1


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model-range images (x_0 or x_t) to float32 in [0, 1]: (x + 1) / 2, clipped."""
    return (x.float() / 2 + 0.5).clamp(0, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8, rounded as the pipeline's PIL output is (round(255 x))."""
    return (images * 255).round().to(torch.uint8)


def image_to_model_range(image: ImageInput, shape: tuple[int, int, int], name: str) -> torch.Tensor:
    """One image given by a user as a float32 `(channels, height, width)` tensor in [-1, 1].

    Args:
        image: a PIL image (converted to L or RGB to match `shape`), a numpy array `(height, width[, channels])`
            or a tensor `(channels, height, width)` / `(1, channels, height, width)`; uint8 in [0, 255] or float
            in [0, 1]. It is not resized.
        shape: the model's `(channels, height, width)`.
        name: the argument's name, for errors.
    """
    if isinstance(image, PIL.Image.Image):
        image = np.asarray(image.convert("L" if shape[0] == 1 else "RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"`{name}`: a numpy image must be (height, width[, channels]); got {image.shape}.")
        image = torch.from_numpy(np.array(image)).reshape(*image.shape[:2], -1).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"`{name}` must be a PIL image, a numpy array or a tensor; got {type(image).__name__}.")
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if tuple(image.shape) != shape:
        raise ValueError(
            f"`{name}` is {'x'.join(map(str, image.shape))} (channels x height x width); the model takes "
            f"{'x'.join(map(str, shape))} images. Images are not resized here: resize it first."
        )
    if image.dtype == torch.uint8:
        return to_model_range(image)
    if not image.is_floating_point():
        raise ValueError(f"`{name}` must be uint8 in [0, 255] or float in [0, 1]; got dtype {image.dtype}.")
    image = image.float()
    if image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"`{name}` is a float image with values in [{image.min():.3g}, {image.max():.3g}]; float images must "
            "lie in [0, 1] (uint8 ones in [0, 255])."
        )
    return image * 2 - 1


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


def enlarged(image: PIL.Image.Image, min_width: int = 256) -> PIL.Image.Image:
    """`image` enlarged by the smallest whole factor that makes it at least `min_width` pixels wide, with
    nearest-neighbour resampling (every pixel becomes a square block: nothing is smoothed or invented)."""
    factor = max(1, math.ceil(min_width / image.width))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), PIL.Image.NEAREST)


def labelled_grid(
    rows: Sequence[Sequence[PIL.Image.Image]],
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    scale: int = 1,
    padding: int = 2,
    font_size: int = 12,
) -> PIL.Image.Image:
    """`make_grid` of equally sized images given row by row, optionally enlarged and labelled.

    Args:
        rows: one list of images per row, all rows of the same length.
        column_labels, row_labels: text written above each column / left of each row (white on black).
        scale: each image is enlarged `scale` times with nearest-neighbour resampling, so that tiny images
            (8x8 digits) stay sharp and the labels fit.
        padding: pixels between images, as `make_grid`'s.
        font_size: of the labels.

    Returns:
        The grid; without labels exactly `make_grid(images, ncols=len(rows[0]), padding=padding)` of the scaled
        images, with labels that grid on a canvas widened on the left and heightened on top.
    """
    if not rows or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(f"`rows` must be non-empty lists of one length; got lengths {[len(r) for r in rows]}.")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"`scale` must be a positive integer, got {scale!r}.")
    images = [image for row in rows for image in row]
    if scale > 1:
        images = [i.resize((i.width * scale, i.height * scale), PIL.Image.Resampling.NEAREST) for i in images]
    grid = make_grid(images, ncols=len(rows[0]), padding=padding)
    if not column_labels and not row_labels:
        return grid
    font = _font(font_size)
    measure = PIL.ImageDraw.Draw(grid)
    width = {text: measure.textlength(text, font=font) for text in [*(column_labels or []), *(row_labels or [])]}
    top = font_size + 2 * padding if column_labels else 0
    left = math.ceil(max(width[text] for text in row_labels)) + 2 * padding if row_labels else 0
    canvas = PIL.Image.new(grid.mode, (grid.width + left, grid.height + top))
    canvas.paste(grid, (left, top))
    draw = PIL.ImageDraw.Draw(canvas)
    cell_width, cell_height = images[0].size
    for j, text in enumerate(column_labels or []):
        center = left + padding + j * (cell_width + padding) + cell_width / 2
        draw.text((center - width[text] / 2, padding), text, fill="white", font=font)
    for i, text in enumerate(row_labels or []):
        middle = top + padding + i * (cell_height + padding) + cell_height / 2
        draw.text((left - padding - width[text], middle - font_size / 2), text, fill="white", font=font)
    return canvas


def _font(size: int) -> PIL.ImageFont.ImageFont | PIL.ImageFont.FreeTypeFont:
    try:
        return PIL.ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: its one bitmap font
        return PIL.ImageFont.load_default()
