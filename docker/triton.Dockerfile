# The Triton image the course's Docker stack runs: the pinned release plus the Python packages that a
# model of model_repository/ imports beyond numpy. The image's Python (3.10 in 24.10) runs the models;
# it has numpy but not onnxruntime, which digits_classifier (notebook 13) needs: without it that model
# fails to load and Triton, loading the whole repository, exits at startup.
# docker/compose.yaml builds it on the first `up` (`up --build` after changing TRITON_IMAGE);
# docker/run_triton.sh builds it before every run (Docker's cache makes that instant).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
# the pins of requirements.txt for Python 3.10 (tests/test_docker_stack.py keeps them equal); numpy stays < 2
RUN pip install --no-cache-dir "onnxruntime==1.23.2" "numpy<2"
