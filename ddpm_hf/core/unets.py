"""The paper's denoising networks, and small ones for CPU work, as diffusers `UNet2DModel` configs.

The paper's UNet (Appendix B) maps to `UNet2DModel` with `downsample_padding=0`,
`flip_sin_to_cos=False`, `freq_shift=1` and `norm_eps=1e-6`, as in google/ddpm-cifar10-32.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from diffusers import UNet2DModel

_PAPER = {
    "layers_per_block": 2,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "norm_eps": 1e-6,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "attention_head_dim": None,
    "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional",
}

UNET_PRESETS: dict[str, dict[str, Any]] = {
    # CIFAR-10 32x32: ch 128, mult (1, 2, 2, 2), attention at 16x16, dropout 0.1; 35.7M parameters.
    "cifar10": {
        **_PAPER,
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (128, 256, 256, 256),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        "dropout": 0.1,
    },
    # CelebA-HQ and LSUN 256x256: ch 128, mult (1, 1, 2, 2, 4, 4), attention at 16x16, dropout 0; 114M.
    "celebahq": {
        **_PAPER,
        "sample_size": 256,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (128, 128, 256, 256, 512, 512),
        "down_block_types": ("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        "dropout": 0.0,
    },
    # 8x8 grayscale (sklearn's digits) on a CPU: the paper's design, narrower and shallower; 0.7M parameters.
    "small": {
        **_PAPER,
        "sample_size": 8,
        "in_channels": 1,
        "out_channels": 1,
        "layers_per_block": 1,
        "norm_num_groups": 16,
        "block_out_channels": (32, 64),
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "dropout": 0.0,
    },
}
# For tests: the same layout, 45k parameters, 8x8 RGB.
UNET_PRESETS["tiny"] = {
    **UNET_PRESETS["small"],
    "in_channels": 3,
    "out_channels": 3,
    "norm_num_groups": 4,
    "block_out_channels": (8, 16),
}
UNET_PRESETS["lsun"] = UNET_PRESETS["celebahq"]
# Nichol & Dhariwal (2021), CIFAR-10 (their repository's flags: --num_channels 128 --num_res_blocks 3
# --learn_sigma True --dropout 0.3): ch 128, mult (1, 2, 2, 2), 3 residual blocks per level, attention at
# 16x16 and 8x8 with 4 heads, scale-shift normalisation by the timestep; twice the image channels out (the
# learned_range variances).
UNET_PRESETS["improved_cifar10"] = {
    **UNET_PRESETS["cifar10"],
    "out_channels": 6,
    "layers_per_block": 3,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 64,
    "resnet_time_scale_shift": "scale_shift",
    "dropout": 0.3,
}


def unet_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """The `UNet2DModel` config of a preset (`cifar10`, `celebahq`, `lsun`, `small`, `tiny`), with overrides."""
    if preset not in UNET_PRESETS:
        raise ValueError(f"Unknown UNet preset {preset!r}; choose one of {sorted(UNET_PRESETS)}.")
    return {**copy.deepcopy(UNET_PRESETS[preset]), **overrides}


def build_unet(preset: str, **overrides: Any) -> UNet2DModel:
    """A freshly initialised `UNet2DModel` from a preset; e.g. `build_unet("cifar10", dropout=0.0)`."""
    return UNet2DModel(**unet_config(preset, **overrides))


def resolution_factor(config: dict[str, Any]) -> int:
    """What a resolution must be a multiple of: the UNet halves the image once between each two levels."""
    return 2 ** (len(config["down_block_types"]) - 1)


def describe_presets() -> str:
    """One line per preset for `--help`: its image channels and the resolutions it takes."""
    return "; ".join(
        f"{name} ({config['in_channels']} channel{'s' if config['in_channels'] > 1 else ''}, made for "
        f"{config['sample_size']}x{config['sample_size']}, resolution a multiple of {resolution_factor(config)})"
        for name, config in UNET_PRESETS.items()
    )


def training_unet_config(
    unet: str,
    resolution: int,
    dropout: float | None = None,
    channels: int | None = None,
    learned_variance: bool = False,
) -> dict[str, Any]:
    """The config of a preset name or a UNet2DModel config.json path, at `resolution` (and with `channels` image
    channels in, when given), checked against it. Its output has the input's channels, twice them with
    `learned_variance` (the second half the `learned_range` interpolation v of Nichol & Dhariwal, Eq. 15).

    Raises:
        ValueError: an unknown preset or missing file, a resolution the UNet's down-sampling cannot take,
            or a config file whose output channels are not what the objective predicts.
    """
    if unet in UNET_PRESETS:
        config = unet_config(unet)
    elif Path(unet).exists():
        config = {k: v for k, v in UNet2DModel.load_config(unet).items() if not k.startswith("_")}
    else:
        raise ValueError(f"--unet {unet!r} is neither a preset ({sorted(UNET_PRESETS)}) nor a config file.")
    config["sample_size"] = resolution
    if dropout is not None:
        config["dropout"] = dropout
    in_channels = config["in_channels"] = channels or config.get("in_channels", 3)
    out_channels = in_channels * (2 if learned_variance else 1)
    if unet not in UNET_PRESETS and channels is None and config.get("out_channels", 3) != out_channels:
        predicts = "an image and its variances" if learned_variance else "an image"
        raise ValueError(
            f"--unet {unet!r} maps {config.get('in_channels')} channels to {config.get('out_channels')}; training "
            f"predicts {predicts}: {out_channels} channels for {in_channels} input channels."
        )
    config["out_channels"] = out_channels
    factor = resolution_factor(config)
    if resolution < factor or resolution % factor:
        raise ValueError(
            f"--resolution {resolution} does not suit --unet {unet}: it halves the image between each two of its "
            f"{len(config['down_block_types'])} levels, so the resolution must be a multiple of {factor}."
        )
    return config
