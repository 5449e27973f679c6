#!/usr/bin/env bash
# `pip install .[test]` in a fresh virtual environment, then the Python API's tests against the
# installed package (not the build tree), and the `kiln` command found on the environment's PATH.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PY" -m venv "$WORK/venv"
export PATH="$WORK/venv/bin:$PATH"
# scikit-build-core builds in <source>/build-pip (pyproject.toml), beside the test build: with the
# same flags ccache reuses that build's objects.
export CCACHE_BASEDIR="$SRC" CCACHE_NOHASHDIR=1
pip install -q --disable-pip-version-check "$SRC[test]"
cd "$WORK"
python -c "import kiln, sys; assert kiln.__file__.startswith(sys.prefix), kiln.__file__; print('kiln', kiln.__version__, 'from', kiln.__file__)"
test "$(command -v kiln)" = "$WORK/venv/bin/kiln"
kiln --version
python -m pytest -q -p no:cacheprovider "$SRC/tests/python/test_api.py"
