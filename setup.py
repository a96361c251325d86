"""ddpm_hf: the DDPM paper (Ho, Jain & Abbeel 2020) for the Hugging Face ecosystem.

On a CPU-only machine install the CPU build of torch first (`pip install torch==2.13.0` where that
wheel is on disk, or the CPU index of pytorch.org): an unpinned torch pulls the CUDA build.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="ddpm_hf",
    version="0.1.0",
    description="Denoising Diffusion Probabilistic Models, paper-exact, on diffusers, accelerate and the Hub",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=[*find_packages(include=["ddpm_hf", "ddpm_hf.*"]), "ddpm_hf.model_cards"],
    # The card templates live at the top level (model_cards/) and install as ddpm_hf/model_cards.
    package_dir={"ddpm_hf.model_cards": "model_cards"},
    package_data={"ddpm_hf.model_cards": ["*.md"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "diffusers>=0.42",
        "accelerate>=1.10",
        "datasets>=4.0",
        "huggingface_hub>=1.0",
        "transformers>=4.56",
        "safetensors>=0.6",
        "numpy>=1.26",
        "pillow>=10.0",
        "tqdm>=4.66",
        "psutil>=5.9",
        "pyyaml>=6.0",
        "scikit-learn>=1.3",
        "tensorboard>=2.14",
    ],
    extras_require={
        "test": [
            "pytest>=8.0",
            "scipy>=1.11",
            "ruff>=0.6",
            "torchmetrics>=1.4",
            "matplotlib>=3.7",
            "gradio>=6.0",
            "gradio_client>=2.0",
            "selenium>=4.20",
        ],
        "metrics": ["torchmetrics>=1.4"],
        "figures": ["matplotlib>=3.7"],
        "demo": ["gradio>=6.0"],
    },
)
