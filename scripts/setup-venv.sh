#!/usr/bin/env bash
# Creates (or updates) the project's virtual environment in .venv, idempotently.
# On a machine without an NVIDIA driver, PyTorch is pinned to the CPU build (torch==2.13.0);
# on a GPU machine pip picks the CUDA build that torch's own requirement resolves to.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# cpu: ONNX Runtime's CPU build; a GPU host may use EXTRAS=dev,gpu (onnxruntime-gpu, TensorRT).
EXTRAS=${EXTRAS:-dev,cpu}
CPU_TORCH=${CPU_TORCH:-torch==2.13.0}
# pyproject's requires-python: the request path uses asyncio.timeout (Python 3.11).
MIN_PYTHON=3.11

# The interpreter the venv has, or will have: refuse an old one before installing anything.
python=$PYTHON
[ -x "$VENV/bin/python" ] && python=$VENV/bin/python
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || {
    echo "error: cannot run $python (set PYTHON to a Python $MIN_PYTHON or newer)" >&2; exit 1; }
if [ "$(printf '%s\n%s\n' "$MIN_PYTHON" "$version" | sort -V | head -n1)" != "$MIN_PYTHON" ]; then
    echo "error: dat-serve needs Python $MIN_PYTHON or newer; $python is Python $version." >&2
    echo "Set PYTHON=python$MIN_PYTHON (or newer), or remove an old $VENV, and run again." >&2
    exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }

if ! command -v nvidia-smi >/dev/null 2>&1 && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "no NVIDIA driver found: installing the CPU build of PyTorch ($CPU_TORCH)"
    pip_install "$CPU_TORCH"
fi
# One ONNX Runtime per venv: the two builds share one package folder, so switching extras
# removes the other build first.
case ",$EXTRAS," in
    *,gpu,*) other=onnxruntime ;;
    *) other=onnxruntime-gpu ;;
esac
if "$VENV/bin/python" -m pip show -q "$other" >/dev/null 2>&1; then
    echo "removing $other: the extras [$EXTRAS] bring the other ONNX Runtime build"
    "$VENV/bin/python" -m pip uninstall --disable-pip-version-check -q -y "$other"
fi
echo "installing the project with extras [$EXTRAS]"
pip_install -e ".[$EXTRAS]"
