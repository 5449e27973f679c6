#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (AddressSanitizer + UndefinedBehaviorSanitizer) in
# build-fuzz/ and runs one of them from its seed corpus: the importer target on small ONNX models,
# the engine target on engines written from them.
# Usage: scripts/fuzz.sh [SECONDS] [importer|engine] [libFuzzer flags...]   (defaults: 600, importer)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN="${1:-600}"
TARGET="${2:-importer}"
shift $(($# < 2 ? $# : 2))
case "$TARGET" in
  importer | engine) ;;
  *) echo "usage: $0 [SECONDS] [importer|engine]" >&2; exit 2 ;;
esac
if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_BUILD_TESTS=OFF \
    -DKILN_FUZZ=ON -DKILN_CUDA=OFF -DPython3_EXECUTABLE="$(command -v python3)" \
    -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
fi
python3 scripts/gen_onnx_tests.py build-fuzz/onnx-tests
if [ "$TARGET" = importer ]; then
  cmake --build build-fuzz --target fuzz_importer
  python3 scripts/make_fuzz_corpus.py build-fuzz/onnx-tests/node build-fuzz/corpus-seed
  CORPUS=build-fuzz/corpus
  SEEDS=build-fuzz/corpus-seed
else
  cmake --build build-fuzz --target fuzz_engine make_engine_seeds
  # Leak checks stay on for the fuzz target; the one-shot seed writer needs none.
  ASAN_OPTIONS=detect_leaks=0 build-fuzz/tests/fuzz/make_engine_seeds build-fuzz/onnx-tests/node build-fuzz/corpus-engine-seed
  CORPUS=build-fuzz/corpus-engine
  SEEDS=build-fuzz/corpus-engine-seed
fi
mkdir -p "$CORPUS"
# -rss_limit_mb and -malloc_limit_mb turn absurd allocations into findings instead of OOM kills.
"build-fuzz/tests/fuzz/fuzz_$TARGET" "$CORPUS" "$SEEDS" -max_total_time="$SECONDS_TO_RUN" \
  -max_len=65536 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 "$@"
