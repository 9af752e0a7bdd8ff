# syntax=docker/dockerfile:1
# DAT model server.
#   GPU (default target): NVIDIA's PyTorch image brings CUDA, cuDNN, PyTorch and TensorRT.
#   CPU:                  docker build --target cpu -t dat-serve:cpu .
# One server process per container; run one container per GPU to scale out.
ARG GPU_BASE=nvcr.io/nvidia/pytorch:25.10-py3
ARG CPU_BASE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
FROM ${CPU_BASE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DAT_HOST=0.0.0.0 DAT_PORT=8000
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY models ./models
COPY runtimes ./runtimes
COPY export ./export
COPY service ./service
COPY docker ./docker
# ".[cpu]" is this project (torch pinned above), not a PyPI name hadolint could see pinned
# hadolint ignore=DL3013
RUN pip install ".[cpu]" \
 && useradd --create-home --uid 10001 dat \
 && mkdir -p /artifacts && chown dat /artifacts
COPY docker/healthcheck.py /usr/local/bin/dat-healthcheck
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["python", "/usr/local/bin/dat-healthcheck"]
CMD ["python", "-m", "service"]

# ---------------------------------------------------------------------------------------
FROM ${GPU_BASE} AS gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DAT_HOST=0.0.0.0 DAT_PORT=8000 DAT_DEVICE=cuda
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY runtimes ./runtimes
COPY export ./export
COPY service ./service
COPY docker ./docker
COPY samples ./samples
# Keep the base image's torch and TensorRT: pin them so pip never swaps them out. The gpu extra
# brings onnxruntime-gpu; a CPU onnxruntime (from the base image, if any) goes first: the two
# share one package folder and would overwrite each other's files.
RUN pip list --format=freeze | grep -iE '^(torch|tensorrt[a-z0-9_-]*)==' > /tmp/keep.txt \
 && pip uninstall -y onnxruntime \
 && pip install -c /tmp/keep.txt ".[gpu]" \
 && python -c "import tensorrt, torch; print('TensorRT', tensorrt.__version__, 'torch', torch.__version__)" \
 && python -c "import onnxruntime as ort; p = ort.get_available_providers(); print('ONNX Runtime', ort.__version__, p); assert 'CUDAExecutionProvider' in p" \
 && useradd --create-home --uid 10001 dat \
 && mkdir -p /artifacts && chown dat /artifacts
COPY docker/healthcheck.py /usr/local/bin/dat-healthcheck
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 CMD ["python", "/usr/local/bin/dat-healthcheck"]
CMD ["python", "-m", "service"]
