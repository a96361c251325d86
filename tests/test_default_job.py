"""The README's main job, as is: with no arguments it learns the embedded digits on the CPU in minutes.

Its 64-image sample grid is checked by a classifier trained here on the real digits plus a "not a digit"
class (pixel-shuffled digits and uniform noise): real held-out digits are called digits with confidence
above 0.9 about 94% of the time, noise never. The samples must pass at 70% or more, span at least 8 of
the 10 digits, and lie about as close to the training digits as held-out real digits do.
"""

import subprocess
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from sklearn.datasets import load_digits
from sklearn.neural_network import MLPClassifier

ROOT = Path(__file__).resolve().parents[1]


def grid_tiles(path: Path, n: int = 64, size: int = 8, cols: int = 8, pad: int = 2) -> np.ndarray:
    grid = np.asarray(PIL.Image.open(path).convert("L"), dtype=np.float64) / 255
    factor = grid.shape[1] // (cols * (size + pad) + pad)  # the grid is enlarged by whole blocks for the card
    grid = grid[::factor, ::factor]
    starts = [(pad + r * (size + pad), pad + c * (size + pad)) for r in range(n // cols) for c in range(cols)]
    return np.stack([grid[y : y + size, x : x + size].reshape(-1) for y, x in starts])


@pytest.mark.slow
def test_default_job_learns_the_digits(tmp_path, accelerate_launch):
    command = accelerate_launch(1, ROOT / "train_scripts" / "train_ddpm.py")
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = grid_tiles(tmp_path / "ddpm-digits" / "samples.png")

    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.images))
    X, y = digits.images.reshape(-1, 64) / 16, digits.target
    train, held_out = order[:1500], order[1500:]
    not_digits = np.concatenate([np.stack([rng.permutation(x) for x in X[train]]), rng.uniform(0, 1, (1500, 64))])
    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=1000, random_state=0).fit(
        np.concatenate([X[train], not_digits]), np.concatenate([y[train], np.full(len(not_digits), 10)])
    )

    def confident_digit(images):
        p = clf.predict_proba(images)
        return (p.argmax(1) < 10) & (p.max(1) > 0.9)

    assert confident_digit(X[held_out]).mean() > 0.9, "the judge knows real digits"
    assert confident_digit(rng.uniform(0, 1, (64, 64))).mean() < 0.05, "and rejects noise"
    passed = confident_digit(samples)
    assert passed.mean() >= 0.7
    assert len(set(clf.predict(samples[passed]))) >= 8

    def nearest(images):
        return np.sqrt(((images[:, None] - X[train][None]) ** 2).sum(-1)).min(1).mean()

    assert nearest(samples) < 1.5 * nearest(X[held_out][:64])
