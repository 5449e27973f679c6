#!/usr/bin/env python3
"""Builds the seed corpus for the importer fuzz target: small models from the ONNX node tests
(those whose model.onnx is under 4 KiB), one file each. Usage: make_fuzz_corpus.py NODE_DIR OUT"""
import os
import shutil
import sys

src, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
n = 0
for t in sorted(os.listdir(src)):
    p = os.path.join(src, t, "model.onnx")
    if os.path.exists(p) and os.path.getsize(p) < 4096:
        shutil.copy(p, os.path.join(out, t + ".onnx"))
        n += 1
print(f"{n} seed models in {out}")
