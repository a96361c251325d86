#!/usr/bin/env bash
# The project's test command: sets up .venv (CPU torch, the package with its test extra), then runs
# ruff and the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
.venv/bin/ruff check --config .ci/ruff.toml ddpm_hf train_scripts tests setup.py
.venv/bin/ruff format --check --config .ci/ruff.toml ddpm_hf train_scripts tests setup.py
.venv/bin/python -m pytest tests "$@"
