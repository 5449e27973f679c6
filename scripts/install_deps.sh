#!/usr/bin/env bash
# Installs what Kiln needs to build and test on Debian 12 / Ubuntu: compilers and libraries from
# the distribution, onnx / onnxruntime / numpy / scikit-learn from PyPI (the ONNX schema, the
# test-case definitions and the reference peer). Safe to run again.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

DEB_PACKAGES=(build-essential cmake ninja-build ccache git python3 python3-pip python3-dev python3-venv
  protobuf-compiler libprotobuf-dev nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev libgmock-dev
  libomp-dev clang-format libdnnl-dev)
# Whole-model tests export torchvision models with the distribution's PyTorch.
if [ "${KILN_WITH_TORCH:-1}" = "1" ]; then DEB_PACKAGES+=(python3-torch python3-torchvision); fi

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "kiln: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The BERT whole-model test is exported with Hugging Face transformers beside the distribution's
# PyTorch (which lives in /usr/bin/python3).
if [ "${KILN_WITH_TORCH:-1}" = "1" ] && ! /usr/bin/python3 -c "import transformers" >/dev/null 2>&1; then
  echo "kiln: installing transformers for /usr/bin/python3 (the BERT whole-model test)"
  /usr/bin/python3 -m pip install -q --disable-pip-version-check transformers==4.40.2 \
    || /usr/bin/python3 -m pip install -q --disable-pip-version-check --break-system-packages transformers==4.40.2
fi

PY="${PYTHON:-python3}"
# nanobind and scikit-build-core build the Python module (and `pip install .`); pytest runs its tests.
# ml_dtypes computes the conformance tests' expected 4- and 2-bit casts: out-of-range values are
# undefined in ONNX, and 0.6 wraps them (as Kiln does) where 0.7 writes 0, so it is pinned.
PY_PACKAGES=(onnx==1.23.2 ml_dtypes==0.6.0 onnxruntime==1.31.1 numpy scikit-learn "nanobind>=2.0"
  "scikit-build-core>=0.10" pytest)
if ! "$PY" -c "import onnx, ml_dtypes, onnxruntime, numpy, sklearn, nanobind, scikit_build_core, pytest; assert onnx.__version__ == '1.23.2' and ml_dtypes.__version__ == '0.6.0'" >/dev/null 2>&1; then
  echo "kiln: installing Python packages (${PY_PACKAGES[*]})"
  "$PY" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}" \
    || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages "${PY_PACKAGES[@]}"
fi

# With the CUDA toolkit present, convolutions are built on cuDNN's graph API, whose C++ frontend
# (headers only) ships in the nvidia-cudnn-frontend package.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('cudnn') is None)" >/dev/null 2>&1; then
    echo "kiln: installing the cuDNN frontend headers (nvidia-cudnn-frontend)"
    "$PY" -m pip install -q --disable-pip-version-check nvidia-cudnn-frontend==1.16.0 \
      || "$PY" -m pip install -q --disable-pip-version-check --break-system-packages nvidia-cudnn-frontend==1.16.0
  fi
fi
