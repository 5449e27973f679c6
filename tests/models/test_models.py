#!/usr/bin/env python3
"""Whole-model tests: Kiln's outputs against onnxruntime's, within 1e-4 relative, and optimized
engines against the unoptimized graph.

Models come from scripts/export_torch_models.py (run with the Python that has torch) and from the
bundled digits example. Each model's output from `kiln run` must satisfy
|kiln - ort| <= 1e-4 * |ort| + 1e-5 (the absolute term covers values that are zero up to
rounding). Then `kiln build` makes an engine; its outputs (`kiln run ENGINE`) must match the
unoptimized graph's within 1e-5 relative (+1e-6 absolute: folding BatchNorm into weights and fusing
reassociates float sums), and `kiln inspect` must show the fusions the model's structure allows.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

RTOL = 1e-4
ATOL = 1e-5
ENGINE_RTOL = 1e-5
ENGINE_ATOL = 1e-6

# Steps the optimizer must produce on each model: (step op, op types that must all be among the
# source nodes fused into one such step).
EXPECTED_FUSIONS = {
    "resnet18": [("kiln.FusedConv", {"Conv", "BatchNormalization", "Relu"}),
                 ("kiln.FusedConv", {"Conv", "BatchNormalization", "Add", "Relu"})],
    "mobilenet_v2": [("kiln.FusedConv", {"Conv", "BatchNormalization", "Clip"}),
                     ("kiln.FusedConv", {"Conv", "BatchNormalization", "Add"})],
    "transformer_encoder": [("LayerNormalization", {"ReduceMean", "Sub", "Sqrt", "Div"}),
                            ("kiln.FusedMatMul", {"MatMul", "Add", "Erf"}),
                            ("Attention", {"MatMul", "Softmax"})],
    "digits": [("kiln.FusedGemm", {"Gemm", "Relu"})],
}


def check_engine(kiln, name, model, in_arg, shape, reference_dir, onnx_ops):
    """Builds an engine, runs it, compares with the unoptimized outputs, checks fusions."""
    with tempfile.TemporaryDirectory() as d:
        engine = os.path.join(d, name + ".kiln")
        in_name = in_arg.split("=")[0]
        shape_arg = f"{in_name}:" + "x".join(str(d) for d in shape)
        p = subprocess.run([kiln, "build", model, "-o", engine, "--shapes", shape_arg, "--json"], capture_output=True,
                           text=True, timeout=600)
        if p.returncode != 0:
            return [f"kiln build exited {p.returncode}: {p.stderr.strip()[:500]}"]
        out = os.path.join(d, "out")
        p = subprocess.run([kiln, "run", engine, "--input", in_arg, "--output-dir", out], capture_output=True, text=True,
                           timeout=600)
        if p.returncode != 0:
            return [f"kiln run ENGINE exited {p.returncode}: {p.stderr.strip()[:500]}"]
        errors = []
        for f in sorted(os.listdir(reference_dir)):
            ref = np.load(os.path.join(reference_dir, f))
            got = np.load(os.path.join(out, f))
            err = np.abs(got.astype(np.float64) - ref)
            bad = err > ENGINE_ATOL + ENGINE_RTOL * np.abs(ref)
            if got.shape != ref.shape or bad.any():
                errors.append(f"engine output {f}: {int(bad.sum())} of {ref.size} values differ from the unoptimized "
                              f"graph, max abs diff {float(err.max()):.3e}")
        p = subprocess.run([kiln, "inspect", engine, "--json"], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            return errors + [f"kiln inspect exited {p.returncode}: {p.stderr.strip()[:500]}"]
        info = json.loads(p.stdout)
        steps = info["steps"]
        for op, needed in EXPECTED_FUSIONS.get(name, []):
            found = any(st["op"] == op and needed <= {onnx_ops.get(f, "?") for f in st["fused"]} for st in steps)
            if not found:
                errors.append(f"no {op} step fusing {sorted(needed)}")
        mem = info["memory"]
        print(f"     {name}: {info['nodes_before']} nodes -> {len(steps)} steps; activations planned "
              f"{mem['activations_planned_bytes']} B, naive {mem['activations_naive_bytes']} B, lower bound "
              f"{mem['activations_lower_bound_bytes']} B; passes {info['passes']}")
        return errors


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
            if ok:
                onnx_ops = {n.name: n.op_type for n in onnx.load(model, load_external_data=False).graph.node}
                errors = check_engine(a.kiln, name, model, f"{in_name}={a.models}/{name}.input.npy", x.shape, out,
                                      onnx_ops)
                for e in errors:
                    print(f"FAIL {name}: {e}")
                ok = not errors
                if ok:
                    print(f"ok   {name}: engine matches the unoptimized graph and has the expected fusions")
            passed += ok
            failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
