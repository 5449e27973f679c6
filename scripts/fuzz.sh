#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (AddressSanitizer + UndefinedBehaviorSanitizer) in
# build-fuzz/ and runs the importer target from a seed corpus of small ONNX models.
# Usage: scripts/fuzz.sh [SECONDS]   (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-600}"
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_BUILD_TESTS=OFF \
    -DKILN_FUZZ=ON -DKILN_CUDA=OFF -DPython3_EXECUTABLE="$(command -v python3)" \
    -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
fi
cmake --build build-fuzz --target fuzz_importer
python3 scripts/gen_onnx_tests.py build-fuzz/onnx-tests
python3 scripts/make_fuzz_corpus.py build-fuzz/onnx-tests/node build-fuzz/corpus-seed
mkdir -p build-fuzz/corpus
# -rss_limit_mb and -malloc_limit_mb turn absurd allocations into findings instead of OOM kills.
build-fuzz/tests/fuzz/fuzz_importer build-fuzz/corpus build-fuzz/corpus-seed -max_total_time="$SECONDS_TO_RUN" \
  -max_len=65536 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
