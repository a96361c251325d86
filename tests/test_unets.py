"""The paper's networks as diffusers UNet2DModels: parameter counts of Sec. 4 / Appendix B."""

import pytest
import torch

from ddpm_hf import build_unet, unet_config


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset,params", [("cifar10", 35_746_307), ("celebahq", 113_673_219), ("lsun", 113_673_219)])
def test_paper_models_have_the_papers_sizes(preset, params):
    assert count(build_unet(preset)) == params


def test_cifar10_trains_with_dropout_and_overrides_apply():
    assert unet_config("cifar10")["dropout"] == 0.1
    assert unet_config("celebahq")["dropout"] == 0.0
    assert unet_config("cifar10", dropout=0.0)["dropout"] == 0.0


@pytest.mark.parametrize("preset,shape", [("small", (2, 1, 8, 8)), ("tiny", (2, 3, 8, 8))])
def test_small_presets_run_forward(preset, shape):
    model = build_unet(preset).eval()
    with torch.no_grad():
        out = model(torch.randn(shape), torch.tensor([0, 999])).sample
    assert out.shape == shape


def test_unknown_preset():
    with pytest.raises(ValueError, match=r"Unknown UNet preset 'imagenet'; choose one of \['celebahq', 'cifar10'"):
        unet_config("imagenet")
