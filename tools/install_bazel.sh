#!/usr/bin/env bash
# Install Bazel where it is missing: Debian's `bazel-bootstrap` package (Bazel 4.2.3, about 150 MB, uses the
# system JDK; about 10 s from the Debian registry). Elsewhere, say what to install instead.
set -euo pipefail

if command -v bazel >/dev/null 2>&1; then
  echo "install_bazel.sh: bazel is already installed ($(command -v bazel))."
  exit 0
fi

other_systems() {
  cat >&2 <<'MSG'
install_bazel.sh: this script installs Debian's `bazel-bootstrap` package (Bazel 4.2.3) with apt-get, and
this system has no apt-get (or no such package). Install Bazel another way, e.g. Bazelisk with
USE_BAZEL_VERSION=4.2.3 (https://github.com/bazelbuild/bazelisk), or a newer Bazel with WORKSPACE turned on
(README.md, section "Bazel"); then rerun your bazel command. The `make` commands need no Bazel.
MSG
  exit 1
}

command -v apt-get >/dev/null 2>&1 || other_systems

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "install_bazel.sh: installing a Debian package needs root: run it as root or install sudo." >&2
    exit 1
  fi
fi

install() {
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q bazel-bootstrap
}

echo "install_bazel.sh: installing Debian's bazel-bootstrap (Bazel 4.2.3) ..."
if ! install; then
  echo "install_bazel.sh: refreshing the package lists and trying again ..."
  "${sudo[@]}" apt-get update -q
  install || other_systems
fi
command -v bazel >/dev/null 2>&1 || other_systems
echo "install_bazel.sh: installed $(command -v bazel)."
