"""The README's main-job command and the grid it writes."""

import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest

from ddpm_hf.core.images import make_grid

SCRIPT = Path(__file__).resolve().parents[1] / "train_scripts" / "sample_ddpm.py"


def test_sample_script_writes_images_and_grid(tmp_path):
    out = tmp_path / "samples"
    args = ["--unet_preset", "tiny", "--num_images", "5", "--num_inference_steps", "3", "--output_dir", str(out)]
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"sample_{i}.png" for i in range(5)]
    grid = PIL.Image.open(out / "grid.png")
    assert grid.size == (3 * 10 + 2, 2 * 10 + 2)  # 3 columns, 2 rows of 8x8 images with 2-pixel padding
    again = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert again.returncode != 0 and "is not empty; pass --overwrite_output_dir" in again.stderr


def test_make_grid_places_each_image():
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    grid = make_grid([PIL.Image.new("RGB", (4, 4), c) for c in colors], ncols=2, padding=1)
    assert grid.size == (11, 11)
    assert grid.getpixel((1, 1)) == colors[0] and grid.getpixel((6, 1)) == colors[1]
    assert grid.getpixel((1, 6)) == colors[2] and grid.getpixel((6, 6)) == (0, 0, 0)
    with pytest.raises(ValueError, match="make_grid needs images of one size"):
        make_grid([PIL.Image.new("RGB", (4, 4)), PIL.Image.new("RGB", (5, 4))])
