#!/usr/bin/env bash
# The benchmark environment of benchmarks/gpu_step.py (issue 15 part 2): JAX on CPU, Keras 3 and gin-config,
# no TensorFlow. Never a dependency of the package (pyproject.toml does not name JAX).
#
#   bash benchmarks/make_gpu_env.sh           # venv at benchmarks/.venv-jax (VENV=/some/path to move it)
#   bash benchmarks/make_gpu_env.sh wheels    # wheels for the GPU machine (Python 3.12, x86-64) in benchmarks/.whl
#
# The GPU machine has JAX, numpy, absl-py, rich, h5py, ml-dtypes and packaging but no Keras, gin-config,
# namex or optree and no network: `wheels` downloads those four, which travel with the working tree
# (benchmarks/.gitignore ignores both folders). benchmarks/README.md has the command to paste there.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KERAS_VERSION="${KERAS_VERSION:-3.15.1}"
GIN_VERSION="${GIN_VERSION:-0.5.0}"

make_venv() {
  local venv="${VENV:-$here/.venv-jax}"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "jax[cpu]" "keras==$KERAS_VERSION" "gin-config==$GIN_VERSION" numpy pytest pytest-timeout
  echo "benchmark venv: $venv ($(KERAS_BACKEND=jax "$venv/bin/python" -c 'import jax, keras; print("jax", jax.__version__, "keras", keras.__version__)'))"
}

download_wheels() {
  local dest="${WHEELS:-$here/.whl}"
  local platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
  local optree_version
  optree_version="$(python3 -m pip index versions optree 2>/dev/null | sed -n 's/^optree (\(.*\))$/\1/p')"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]/#/--platform=}" -d "$dest" \
    "keras==$KERAS_VERSION" "gin-config==$GIN_VERSION" namex "optree==${optree_version:-0.20.0}"
  ls -1 "$dest"
}

case "${1:-venv}" in
  venv) make_venv ;;
  wheels) download_wheels ;;
  *) echo "usage: $0 [venv|wheels]" >&2; exit 2 ;;
esac
