#!/usr/bin/env python3
"""Whole-model tests: Kiln's outputs against onnxruntime's, within 1e-4 relative.

Models come from scripts/export_torch_models.py (run with the Python that has torch) and from the
bundled digits example. Each model's output from `kiln run` must satisfy
|kiln - ort| <= 1e-4 * |ort| + 1e-5 (the absolute term covers values that are zero up to
rounding).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort

RTOL = 1e-4
ATOL = 1e-5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--models", required=True, help="folder of <name>.onnx + <name>.input.npy")
    a = ap.parse_args()
    names = sorted(f[:-5] for f in os.listdir(a.models) if f.endswith(".onnx"))
    if not names:
        print("no models found in", a.models)
        return 1
    passed = failed = 0
    for name in names:
        model = os.path.join(a.models, name + ".onnx")
        x = np.load(os.path.join(a.models, name + ".input.npy"))
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        in_name = sess.get_inputs()[0].name
        expected = sess.run(None, {in_name: x})
        with tempfile.TemporaryDirectory() as out:
            p = subprocess.run([a.kiln, "run", model, "--input", f"{in_name}={a.models}/{name}.input.npy", "--output-dir", out],
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                print(f"FAIL {name}: kiln run exited {p.returncode}: {p.stderr.strip()[:500]}")
                failed += 1
                continue
            ok = True
            for o, ref in zip(sess.get_outputs(), expected):
                fname = "".join(c if c.isalnum() or c in "-_." else "_" for c in o.name) + ".npy"
                got = np.load(os.path.join(out, fname))
                err = np.abs(got - ref)
                bad = err > ATOL + RTOL * np.abs(ref)
                rel = float((err / (np.abs(ref) + ATOL)).max())
                if got.shape != ref.shape or bad.any():
                    print(f"FAIL {name}: output {o.name}: {int(bad.sum())} of {ref.size} values outside tolerance, "
                          f"max abs diff {float(err.max()):.3e}")
                    ok = False
                else:
                    print(f"ok   {name}: output {o.name} {list(ref.shape)} max abs diff {float(err.max()):.3e}, "
                          f"max rel {rel:.3e}")
            passed += ok
            failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
