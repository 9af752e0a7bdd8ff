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
COPY export ./export
COPY service ./service
COPY docker ./docker
RUN pip install . \
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
COPY export ./export
COPY service ./service
COPY docker ./docker
COPY samples ./samples
# Keep the base image's torch and TensorRT: pin them so pip never swaps them out.
RUN pip list --format=freeze | grep -iE '^(torch|tensorrt[a-z0-9_-]*)==' > /tmp/keep.txt \
 && pip install -c /tmp/keep.txt . onnxruntime-gpu \
 && python -c "import tensorrt, torch; print('TensorRT', tensorrt.__version__, 'torch', torch.__version__)" \
 && useradd --create-home --uid 10001 dat \
 && mkdir -p /artifacts && chown dat /artifacts
COPY docker/healthcheck.py /usr/local/bin/dat-healthcheck
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 CMD ["python", "/usr/local/bin/dat-healthcheck"]
CMD ["python", "-m", "service"]
