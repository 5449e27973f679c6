#!/usr/bin/env bash
# Configures and builds Kiln into ./build (Release with debug info, ccache when present).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-$(nproc)}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
# Objects do not depend on the build folder's path, so `pip install .` (build-pip/) reuses them.
export CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
GEN=()
if command -v ninja >/dev/null; then GEN=(-G Ninja); fi
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPython3_EXECUTABLE="$(command -v "${PYTHON:-python3}")" "$@"
fi
cmake --build "$BUILD_DIR" -j "$JOBS"
