#!/usr/bin/env bash
# The main job on the bundled example: installs dependencies, builds Kiln, trains and exports the
# example digit classifier, builds an engine from it with `kiln build`, shows it with
# `kiln inspect`, runs it with `kiln run` and checks the predictions, then measures it.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN_WITH_TORCH=0 scripts/install_deps.sh
scripts/build.sh
PY="${PYTHON:-python3}"
"$PY" scripts/make_digits_example.py examples/digits
# On the GPU when there is one and this build has the CUDA backend; on the CPU otherwise.
DEVICE=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  if build/bin/kiln build examples/digits/digits.onnx -o /tmp/kiln-setup-probe.kiln --device cuda >/dev/null 2>&1; then
    DEVICE=cuda
    echo "kiln: a GPU is present: the example runs on it"
  else
    echo "kiln: a GPU is present, but this build has no CUDA backend (nvcc not found at build time): the example runs on the CPU"
  fi
  rm -f /tmp/kiln-setup-probe.kiln
fi
echo "+ build/bin/kiln info examples/digits/digits.onnx"
build/bin/kiln info examples/digits/digits.onnx
run() {
  echo "+ $*"
  "$@"
}
run build/bin/kiln build examples/digits/digits.onnx -o examples/digits/digits.kiln --device "$DEVICE" --min-shapes image:1x1x8x8 \
  --opt-shapes image:64x1x8x8 --max-shapes image:512x1x8x8
run build/bin/kiln inspect examples/digits/digits.kiln
run build/bin/kiln run examples/digits/digits.kiln --input image=examples/digits/images.npy --output-dir examples/digits/out
"$PY" scripts/make_digits_example.py examples/digits --check examples/digits/out/probabilities.npy
run build/bin/kiln bench examples/digits/digits.kiln --shapes image:64x1x8x8 --duration 1
if [ "$DEVICE" = cpu ]; then
  # The same model, inputs and threads through onnxruntime, for comparison.
  "$PY" scripts/example_vs_onnxruntime.py --kiln build/bin/kiln --model examples/digits/digits.onnx \
    --engine examples/digits/digits.kiln --input image=examples/digits/images.npy
fi
