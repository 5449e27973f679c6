#!/usr/bin/env python3
"""Engines built with shape profiles through the command line, against onnxruntime.

The smallest graph that showed a planner fault: x[n,64] -> Relu -> a; Shape(a) -> s;
Reshape(a, s) -> r; Neg(x) -> b; Add(r, b) -> y, built with a profile and without constant
folding, so the Reshape's shape is computed at run time. Its output used to be left out of the
arena while sharing the bytes of `a`, which died at the Reshape, and Neg was planned into them:
y came out wrong by up to 6. Run at several shapes of one engine, fixed-shape too.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from cli_common import check, run, summary


def reshape_view_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Shape", ["a"], ["s"], name="shape"),
        helper.make_node("Reshape", ["a", "s"], ["r"], name="reshape"),
        helper.make_node("Neg", ["x"], ["b"], name="neg"),
        helper.make_node("Add", ["r", "b"], ["y"], name="add"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "reshape_view", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model = os.path.join(d, "reshape_view.onnx")
        reshape_view_model(model)
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        no_folding = ["--disable-pass", "fold-constants", "--disable-pass", "eliminate-identity"]
        builds = {
            "profile": ["--min-shapes", "x:1x64", "--max-shapes", "x:8x64"],
            "fixed": ["--shapes", "x:4x64"],
        }
        for tag, shapes in builds.items():
            engine = os.path.join(d, tag + ".kiln")
            rc, out, err = run(a.kiln, "build", model, "-o", engine, *shapes, *no_folding)
            check(f"{tag}: build", rc == 0, err.strip()[:300])
            if rc != 0:
                continue
            for n in ([1, 4, 8] if tag == "profile" else [4]):
                x = np.random.default_rng(n).uniform(-1, 1, (n, 64)).astype(np.float32)
                xf = os.path.join(d, f"x{n}.npy")
                np.save(xf, x)
                outdir = os.path.join(d, f"{tag}{n}")
                rc, out, err = run(a.kiln, "run", engine, "--input", f"x={xf}", "--output-dir", outdir)
                check(f"{tag} n={n}: run", rc == 0, err.strip()[:300])
                if rc != 0:
                    continue
                got = np.load(os.path.join(outdir, "y.npy"))
                want = sess.run(None, {"x": x})[0]
                diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
                check(f"{tag} n={n}: matches onnxruntime", diff <= 1e-5, f"max abs diff {diff}")
        # A profile engine's benchmark reports what a change of shape costs: the step shapes for
        # the new shapes are prepared once, and the run goes to the profile's min.
        engine = os.path.join(d, "profile.kiln")
        if os.path.exists(engine):
            rc, out, err = run(a.kiln, "bench", engine, "--shapes", "x:4x64", "--iterations", "3", "--warmup", "1",
                               "--json")
            check("bench: runs", rc == 0, err.strip()[:300])
            if rc == 0:
                j = json.loads(out)
                sc = j.get("shape_change", {})
                check("bench: shape change to the profile's min", sc.get("to") == {"x": [1, 64]}, str(sc))
                check("bench: prepare timed", j.get("prepare_ms", -1) >= 0 and sc.get("prepare_ms", -1) >= 0, str(j))
                check("bench: two shapes prepared", sc.get("shapes_prepared") == 2, str(sc))
            rc, out, err = run(a.kiln, "bench", os.path.join(d, "fixed.kiln"), "--iterations", "2", "--json")
            check("bench: no shape change without a profile", rc == 0 and "shape_change" not in json.loads(out or "{}"),
                  out[:300])
    return summary()


if __name__ == "__main__":
    sys.exit(main())
