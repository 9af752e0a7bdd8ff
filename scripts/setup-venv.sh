#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment in .venv, idempotently.
# On a machine without an NVIDIA driver, PyTorch is pinned to the CPU build (torch==2.13.0);
# on a GPU machine pip picks the CUDA build that torch's own requirement resolves to.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev}
CPU_TORCH=${CPU_TORCH:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }

if ! command -v nvidia-smi >/dev/null 2>&1 && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "no NVIDIA driver found: installing the CPU build of PyTorch ($CPU_TORCH)"
    pip_install "$CPU_TORCH"
fi
echo "installing the project with extras [$EXTRAS]"
pip_install -e ".[$EXTRAS]"
