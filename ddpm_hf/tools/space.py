"""A Hugging Face Space serving the Gradio demo (`ddpm_hf.tools.demo`) of a model repo at one commit.

The Space holds `app.py`, `requirements.txt`, a `README.md` with the Space's metadata (`sdk: gradio`, the model
under `models:`, which also lists the Space on the model's page) and, as ddpm_hf is not on PyPI, the package's
own source under `ddpm_hf/`. It serves the model at the commit it was made for, so a later push to the model
changes the Space only when the Space is pushed again. No token is written into it: the client sends its token
as a header, and a Space showing a private model needs a read token set as its secret `HF_TOKEN`.
"""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard, SpaceCardData, constants

from .hub import HubPushError, check_repo_id

APP_FILE = "app.py"
REQUIREMENTS_FILE = "requirements.txt"
README_FILE = "README.md"
SDK = "gradio"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# What the modules the app imports import, with setup.py's pins; accelerate lets diffusers load the weights
# with little memory. Gradio is pinned to the Space's sdk_version.
RUNTIME_REQUIREMENTS = (
    "torch>=2.4",
    "diffusers>=0.42",
    "accelerate>=1.10",
    "huggingface_hub>=1.0",
    "safetensors>=0.6",
    "numpy>=1.26",
    "pillow>=10.0",
    "tqdm>=4.66",
)
# The Space holds code only, ddpm_hf's and app.py: its licence is ddpm_hf's (setup.py), whatever the weights'.
SPACE_LICENSE = "apache-2.0"


def gradio_version() -> str:
    """The installed gradio's version, which the Space runs (its `sdk_version`); gradio is not imported.

    Raises:
        ValueError: gradio is not installed.
    """
    try:
        return version(SDK)
    except PackageNotFoundError:
        raise ValueError("A Space runs the demo on the gradio installed here, and none is: install gradio.") from None


def check_space(space_id: str) -> None:
    """Raise a ValueError, before anything is uploaded, when the Space cannot be made: `space_id` is not a Hub
    repo id (named as --space_id), or gradio is not installed."""
    check_repo_id(space_id, "--space_id")
    gradio_version()


def space_repo_id(space_id: str, model_repo_id: str) -> str:
    """The Space's `namespace/name`: a bare `space_id` takes the namespace of `model_repo_id` (`namespace/name`).

    Raises:
        ValueError: naming --space_id, when the result is not a Hub repo id (too long, say).
    """
    full = space_id if "/" in space_id else f"{model_repo_id.split('/')[0]}/{space_id}"
    check_repo_id(full, "--space_id")
    return full


def app_source(model_repo_id: str, revision: str) -> str:
    """`app.py`: the demo of `model_repo_id` at `revision` (JSON strings are Python string literals too)."""
    return (
        f'"""The Gradio demo of {model_repo_id} at commit {revision}, made by ddpm_hf."""\n\n'
        "from ddpm_hf.tools.demo import build_demo\n\n"
        f"demo = build_demo({json.dumps(model_repo_id)}, revision={json.dumps(revision)})\n"
        "demo.launch()\n"
    )


def requirements() -> str:
    """`requirements.txt`: the runtime requirements, and gradio at the Space's `sdk_version`."""
    return "\n".join([*RUNTIME_REQUIREMENTS, f"{SDK}=={gradio_version()}"]) + "\n"


def space_card(space_id: str, model_repo_id: str, revision: str) -> SpaceCard:
    """The Space's `README.md`: its metadata and a few lines linking the model."""
    title = space_id.split("/")[-1]
    data = SpaceCardData(
        title=title,
        sdk=SDK,
        sdk_version=gradio_version(),
        app_file=APP_FILE,
        models=[model_repo_id],
        license=SPACE_LICENSE,
    )
    body = (
        f"# {title}\n\n"
        f"The Gradio demo of the DDPM [{model_repo_id}]({constants.ENDPOINT}/{model_repo_id}) at its commit "
        f"`{revision}`.\n\n"
        f"`{APP_FILE}` serves `ddpm_hf.tools.demo`; `{PACKAGE_DIR.name}/` is the source of ddpm_hf, which is not "
        "on PyPI. If the model is private, set a token that may read it as this Space's secret `HF_TOKEN`.\n"
    )
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def package_files() -> dict[str, bytes]:
    """ddpm_hf's source, path in the Space -> content: every .py file of the installed package."""
    return {
        f"{PACKAGE_DIR.name}/{path.relative_to(PACKAGE_DIR).as_posix()}": path.read_bytes()
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
    }


def space_files(space_id: str, model_repo_id: str, revision: str) -> dict[str, bytes]:
    """Every file of the Space serving `model_repo_id` at `revision`, path -> content."""
    return {
        APP_FILE: app_source(model_repo_id, revision).encode(),
        REQUIREMENTS_FILE: requirements().encode(),
        README_FILE: str(space_card(space_id, model_repo_id, revision)).encode(),
        **package_files(),
    }


def push_space(api: HfApi, space_id: str, model_repo_id: str, revision: str, private: bool | None = None) -> str:
    """Create the Space `space_id` (`namespace/name`), or update it, to serve `model_repo_id` at `revision`
    (a commit id), in one commit; returns the Space's URL. Files of an older ddpm_hf are deleted from it.

    Args:
        api: a client whose token may write to the Space: the model's (`HubPublisher.api`).
        private: create the Space private or public; None: the Hub's default. An existing Space keeps its own.

    Raises:
        HubPushError: naming the Space, after the client's own retries; the model repo is left as it is.
    """
    files = space_files(space_id, model_repo_id, revision)
    try:
        url = api.create_repo(space_id, repo_type="space", space_sdk=SDK, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            for path, content in files.items():
                (Path(tmp) / path).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / path).write_bytes(content)
            api.upload_folder(
                repo_id=space_id,
                repo_type="space",
                folder_path=tmp,
                commit_message=f"Serve {model_repo_id} at {revision}",
                delete_patterns=[f"{PACKAGE_DIR.name}/**"],
            )
    except Exception as err:  # the client's HTTP and connection errors have no common base but Exception
        raise HubPushError(
            f"Creating or updating the Space {space_id} on {constants.ENDPOINT} failed: {err}\n"
            f"{model_repo_id} at {revision} is pushed and unaffected; push the Space again (the same push again "
            "uploads only what changed)."
        ) from err
    return str(url)
