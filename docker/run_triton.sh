#!/usr/bin/env bash
# Run Triton in Docker on the course's model repository. The image defaults to
# nvcr.io/nvidia/tritonserver:24.10-py3 (server 2.51.0, the release this course is verified on);
# TRITON_IMAGE chooses another one (the same variable as docker/compose.yaml and
# labkit.triton.start(mode="docker"); what changed after 24.10: docs/versions.md).
#
#   docker/run_triton.sh                                                    # CPU
#   GPUS=all docker/run_triton.sh                                           # NVIDIA GPU (NVIDIA Container Toolkit)
#   TRITON_IMAGE=nvcr.io/nvidia/tritonserver:26.07-py3 docker/run_triton.sh  # a newer release
#
# It first builds triton-metrics-triton:local from docker/triton.Dockerfile (TRITON_IMAGE plus the
# Python packages the models import beyond numpy: onnxruntime for digits_classifier; cached after the
# first time), then runs it.
# Ports are published on 127.0.0.1 only: HTTP 8000, gRPC 8001, metrics 8002
# (override with HTTP_PORT, GRPC_PORT, METRICS_PORT). The model repository is
# mounted read-only; --rm removes the container when it stops (Ctrl-C).
# --shm-size, --ulimit memlock=-1 and --ulimit stack=67108864 are the python_backend Quick Start's
# flags: the Python backend exchanges tensors with its model processes through shared memory.
#
# It runs on bash 3.2 (stock macOS, where Docker is the only way to run Triton): an array that may be
# empty is expanded as ${name[@]+"${name[@]}"}, since bash < 4.4 takes "${name[@]}" of an empty array
# for an unbound variable under `set -u` (tests/test_run_triton_script.py checks it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
TRITON_IMAGE="${TRITON_IMAGE:-nvcr.io/nvidia/tritonserver:24.10-py3}"
MODEL_REPOSITORY="${MODEL_REPOSITORY:-$here/../model_repository}"
HTTP_PORT="${HTTP_PORT:-8000}"
GRPC_PORT="${GRPC_PORT:-8001}"
METRICS_PORT="${METRICS_PORT:-8002}"
gpu_flags=()
if [ -n "${GPUS:-}" ]; then gpu_flags=(--gpus "$GPUS"); fi
# dropin/ beside the repository holds the drop-in helper that metrics_helper_demo imports from
# <repository>/../dropin: mounted at /dropin, beside /models
helper_mount=()
if [ -d "$MODEL_REPOSITORY/../dropin" ]; then
  helper_mount=(-v "$(cd "$MODEL_REPOSITORY/../dropin" && pwd):/dropin:ro")
fi

# TRITON_IMAGE plus the Python packages the models import beyond numpy (docker/triton.Dockerfile)
IMAGE=triton-metrics-triton:local
build=(docker build --quiet -t "$IMAGE" --build-arg "TRITON_IMAGE=$TRITON_IMAGE" -f "$here/triton.Dockerfile" "$here")
cmd=(docker run --rm ${gpu_flags[@]+"${gpu_flags[@]}"}
  --shm-size=1g --ulimit memlock=-1 --ulimit stack=67108864
  -p "127.0.0.1:${HTTP_PORT}:8000"
  -p "127.0.0.1:${GRPC_PORT}:8001"
  -p "127.0.0.1:${METRICS_PORT}:8002"
  -v "$(cd "$MODEL_REPOSITORY" && pwd):/models:ro"
  ${helper_mount[@]+"${helper_mount[@]}"}
  "$IMAGE"
  tritonserver --model-repository=/models --allow-metrics=true --metrics-interval-ms=1000)

if [ "${DRY_RUN:-}" = 1 ]; then
  printf '%q ' "${build[@]}"; echo
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
"${build[@]}" >/dev/null
exec "${cmd[@]}"
