# The trainer image of `taskology launch --target kubernetes` (taskology_tf/launch/kubernetes.py).
#
#   docker build -t REGISTRY/taskology:TAG .                  # CPU TensorFlow
#   docker build --build-arg GPU=1 -t REGISTRY/taskology:TAG-gpu .   # tensorflow[and-cuda] (the gpu extra)
#   docker push REGISTRY/taskology:TAG
#
# Servers use the official tensorflow/serving image; this one only runs `taskology train`.
ARG PYTHON=3.11
FROM python:${PYTHON}-slim

# 1 installs the package's gpu extra, tensorflow[and-cuda] (CUDA and cuDNN as pip wheels; the node needs
# the NVIDIA driver and device plugin), 0 the CPU build.
ARG GPU=0

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 TF_CPP_MIN_LOG_LEVEL=1
WORKDIR /opt/taskology

# Dependencies first (a layer that survives source edits), then the sources. The install is editable so
# that the experiment files under gin/ resolve as they do in a checkout (`--gin_file table3_consistency`).
COPY pyproject.toml README.md ./
RUN mkdir taskology_tf && touch taskology_tf/__init__.py \
    && if [ "$GPU" = 1 ]; then pip install -e '.[gpu]'; else pip install -e .; fi \
    && rm -rf taskology_tf
COPY taskology_tf taskology_tf
COPY gin gin
RUN pip install --no-deps -e . && taskology --help > /dev/null

# Runs as the image's default user (root), which can write to a freshly provisioned volume; to run as
# another user, give the pods a securityContext (runAsUser, fsGroup) that owns the storage.
CMD ["taskology", "--help"]
