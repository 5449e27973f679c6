#!/usr/bin/env bash
# Fails when a C++ file differs from .clang-format's style.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.h' '*.cc' '*.cu' '*.cuh')
if [ -z "$files" ]; then exit 0; fi
# shellcheck disable=SC2086
if ! clang-format --dry-run --Werror $files; then
  echo "kiln: formatting differs from .clang-format; run: clang-format -i \$(git ls-files '*.h' '*.cc' '*.cu' '*.cuh')" >&2
  exit 1
fi
echo "format check: $(echo "$files" | wc -w) files clean"
