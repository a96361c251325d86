"""The Space beside a model: `train_scripts/push_to_hub.py --space_id` against the Hub on loopback
(tests/helpers/hub_server.py, the server and clients of test_hub.py), and what the Space's files require."""

import ast
import re
import sys
from importlib.metadata import packages_distributions, version
from importlib.util import find_spec
from pathlib import Path

import pytest
import test_hub
import torch
from test_hub import PUSH, ROOT, TOKEN, _card_header, _env, _run, _uploaded
from test_layers import loaded_modules

import ddpm_hf
from ddpm_hf import DDPMPipeline, PaperDDPMScheduler, build_unet
from ddpm_hf.tools.space import space_files

PACKAGE = Path(ddpm_hf.__file__).parent
MODEL, SPACE = "tester/spaced", "tester/spaced-demo"
SPACE_FILES = {"app.py", "requirements.txt", "README.md"}

hub = test_hub.hub  # its module-scoped LocalHub fixture, for this module too
pytestmark = pytest.mark.slow  # each push is a subprocess against the test Hub server


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A saved tiny pipeline, no run record."""
    path = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(0)
    DDPMPipeline(build_unet("tiny"), PaperDDPMScheduler(num_train_timesteps=20)).save_pretrained(path)
    return path


def _push(hub, folder: Path, home: Path, *flags: str, check: bool = True):
    """push_to_hub.py with the token as a flag (the way it could end up in a file) and none in the environment."""
    command = [sys.executable, PUSH, "--output_dir", folder, "--hub_token", TOKEN, *flags]
    return _run(command, _env(hub, home, token=None), check)


@pytest.fixture(scope="module")
def spaced(hub, folder, tmp_path_factory):
    """A private model pushed with a Space, both named bare (so in the token's namespace); its stdout."""
    home = tmp_path_factory.mktemp("home")
    flags = ["--hub_model_id", "spaced", "--space_id", "spaced-demo", "--hub_private_repo", "true"]
    return _push(hub, folder, home, *flags).stdout


def _space(hub) -> dict[str, bytes]:
    return {k: v for k, v in hub.repo_files(SPACE, repo_type="space").items() if k != ".gitattributes"}


def _package_files() -> dict[str, bytes]:
    return {f"ddpm_hf/{p.relative_to(PACKAGE).as_posix()}": p.read_bytes() for p in PACKAGE.rglob("*.py")}


def _demo_call(app: str) -> tuple[list, dict]:
    """The positional and keyword arguments of app.py's `build_demo(...)` call."""
    calls = [node for node in ast.walk(ast.parse(app)) if isinstance(node, ast.Call)]
    (call,) = [call for call in calls if getattr(call.func, "id", "") == "build_demo"]
    return [ast.literal_eval(a) for a in call.args], {k.arg: ast.literal_eval(k.value) for k in call.keywords}


def test_the_space_serves_the_commit_pushed(hub, spaced):
    files = _space(hub)
    assert set(files) == SPACE_FILES | set(_package_files())
    assert all(files[name] == content for name, content in _package_files().items())
    head, _ = hub.repo_commits(MODEL)[0]
    app = files["app.py"].decode()
    compile(app, "app.py", "exec")
    assert _demo_call(app) == ([MODEL], {"revision": head})
    (imported,) = [n for n in ast.parse(app).body if isinstance(n, ast.ImportFrom)]
    module = files[imported.module.replace(".", "/") + ".py"]
    assert "build_demo" in {n.name for n in ast.parse(module).body if isinstance(n, ast.FunctionDef)}
    assert [a.name for a in imported.names] == ["build_demo"]
    header = _card_header(files["README.md"])
    assert header["sdk"] == "gradio" and header["sdk_version"] == version("gradio")
    assert header["models"] == [MODEL] and header["app_file"] == "app.py"
    assert header["license"] == _setup_argument("license").lower()
    assert f"({hub.url}/{MODEL})" in files["README.md"].decode()
    assert hub.repo_private(SPACE, repo_type="space") and hub.repo_private(MODEL)
    assert f"Space: {hub.url}/spaces/{SPACE}" in spaced.splitlines()


def test_the_model_card_links_the_space(hub, spaced):
    card = _uploaded(hub, MODEL)["README.md"].decode()
    assert f"Try it: [{SPACE}]({hub.url}/spaces/{SPACE})" in card


def test_no_file_of_the_space_or_the_model_holds_the_token(hub, spaced):
    for files in (_space(hub), _uploaded(hub, MODEL)):
        assert files and not [name for name, content in files.items() if TOKEN.encode() in content]


def test_pushing_again_points_the_space_at_the_new_commit(hub, spaced, folder, tmp_path):
    hub.seed_repo(SPACE, {"ddpm_hf/removed_module.py": b"x = 1\n"}, repo_type="space")
    before, _ = hub.repo_commits(MODEL)[0]
    flags = ["--hub_model_id", MODEL, "--space_id", SPACE, "--model_license", "mit"]  # a new card: a new commit
    _push(hub, folder, tmp_path / "home", *flags)
    after, _ = hub.repo_commits(MODEL)[0]
    files = _space(hub)
    assert after != before and _demo_call(files["app.py"].decode())[1] == {"revision": after}
    assert "ddpm_hf/removed_module.py" not in files and set(files) == SPACE_FILES | set(_package_files())
    assert hub.repo_private(SPACE, repo_type="space")  # an existing Space keeps its visibility


def test_a_bad_space_id_fails_before_anything_is_uploaded(hub, folder, tmp_path):
    requests = len(hub.requests)
    result = _push(hub, folder, tmp_path / "home", "--hub_model_id", "unspaced", "--space_id", "bad--id", check=False)
    assert result.returncode == 2
    assert "--space_id 'bad--id' is not a Hub repo id" in result.stderr
    assert len(hub.requests) == requests  # not even a repo was created
    with pytest.raises(KeyError):
        hub.repo_files("tester/unspaced")


def test_a_failed_space_push_names_the_space_and_leaves_the_model_pushed(hub, folder, tmp_path):
    hub.fail(403, path_regex="^/api/spaces/tester/broken-demo/commit/")  # a 4xx: the client does not retry
    try:
        flags = ["--hub_model_id", "broken", "--space_id", "broken-demo"]
        result = _push(hub, folder, tmp_path / "home", *flags, check=False)
    finally:
        hub.clear_faults()
    head, _ = hub.repo_commits("tester/broken")[0]
    assert result.returncode != 0 and f"/tester/broken/commit/{head}" in result.stdout
    assert f"Creating or updating the Space tester/broken-demo on {hub.url} failed" in result.stderr
    assert f"tester/broken at {head} is pushed and unaffected" in result.stderr


def _setup_argument(name: str):
    """The value of a literal keyword argument of setup.py's setup() call."""
    calls = [n for n in ast.walk(ast.parse((ROOT / "setup.py").read_text())) if isinstance(n, ast.Call)]
    (setup,) = [call for call in calls if getattr(call.func, "id", "") == "setup"]
    (value,) = [keyword.value for keyword in setup.keywords if keyword.arg == name]
    return ast.literal_eval(value)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower().replace("-", "_")


def _third_party_imports(path: Path) -> set[str]:
    """The top-level packages a module imports when imported (its module-level imports), stdlib aside."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "ddpm_hf"}


def test_the_requirements_are_what_the_app_imports_with_the_package_pins():
    requirements = space_files(SPACE, MODEL, "0" * 40)["requirements.txt"].decode().split()
    modules = [m for m in loaded_modules("import ddpm_hf.tools.demo") if m.startswith("ddpm_hf")]
    imported = set().union(*(_third_party_imports(Path(find_spec(m).origin)) for m in modules))
    distributions = {_name(d) for name in imported for d in packages_distributions()[name]}
    assert {"torch", "diffusers", "huggingface_hub", "pillow"} <= distributions
    assert distributions <= {_name(r) for r in requirements}
    gradio = f"gradio=={version('gradio')}"
    assert gradio in requirements
    assert set(requirements) - {gradio} <= set(_setup_argument("install_requires"))
