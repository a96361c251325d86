"""The package's layers hold: core -> tools -> jobs -> scripts, each importing only the layers below it.

Two independent checks: what a fresh interpreter loads when it imports the core (against what importing
diffusers' own UNet2DModel, DiffusionPipeline and DDPMScheduler loads by itself), and every import statement
of the package's source, wherever it sits (function bodies and TYPE_CHECKING blocks included).
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import ddpm_hf

PACKAGE = Path(ddpm_hf.__file__).parent
LAYERS = {"core": 1, "tools": 2, "jobs": 3}
# What the core may bring in besides what diffusers loads by itself (the list: torch, numpy, PIL, diffusers).
CORE_THIRD_PARTY = {"torch", "numpy", "PIL", "diffusers"}
NEVER_WITH_THE_CORE = {"datasets", "matplotlib", "torchmetrics", "sklearn", "tensorboard", "pandas"}


def loaded_modules(code: str) -> set[str]:
    """`sys.modules` after running `code` in a fresh interpreter (offline, like the tests)."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_importing_the_core_loads_no_tool_job_or_extra_library():
    baseline = loaded_modules("from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel")
    public = ", ".join(ddpm_hf.__all__)
    ours = loaded_modules(f"import ddpm_hf\nfrom ddpm_hf import {public}\nimport ddpm_hf.core")
    new = ours - baseline
    package = {m for m in new if m == "ddpm_hf" or m.startswith("ddpm_hf.")}
    assert package, "the import did not load the package at all"
    assert all(m == "ddpm_hf" or m.startswith("ddpm_hf.core") for m in package), sorted(package)
    third_party = {m for m in new - package if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith("_")}
    assert {m.split(".")[0] for m in third_party} <= CORE_THIRD_PARTY, sorted(third_party)
    assert not {m.split(".")[0] for m in ours} & NEVER_WITH_THE_CORE


def package_imports(path: Path, module: str | None = None) -> set[str]:
    """The `ddpm_hf` modules a source file imports, resolved from relative imports, in any scope; `module` is the
    file's dotted name (default: from its place in the package)."""
    module = module or ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import checkpoints` names a module too.
            found |= {target} | {f"{target}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "ddpm_hf" or name.startswith("ddpm_hf.")}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_import_points_down():
    files = sorted(PACKAGE.rglob("*.py"))
    assert {layer(".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts)) for f in files} >= {1, 2, 3}
    upward = []
    for path in files:
        own = layer(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if own is None:  # ddpm_hf/__init__.py re-exports the core
            assert {layer(m) for m in package_imports(path)} <= {1, None}, path
            continue
        for target in package_imports(path):
            if (level := layer(target)) is not None and level > own:
                upward.append(f"{path.relative_to(PACKAGE)} -> {target}")
    assert not upward, upward


def test_the_import_check_sees_function_level_and_type_only_imports(tmp_path):
    """The static check is not blind: an upward import hidden in a function or under TYPE_CHECKING is found."""
    probe = tmp_path / "probe.py"
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..jobs import trainer\n"
    source += "def f():\n    from ddpm_hf.tools.hub import push_pipeline\n"
    probe.write_text(source)
    assert {layer(m) for m in package_imports(probe, "ddpm_hf.core.probe")} == {2, 3}
