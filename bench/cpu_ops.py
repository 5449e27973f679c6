#!/usr/bin/env python3
"""Single operators on the CPU: Kiln's own kernels against Kiln's reference kernels, onnxruntime
and OpenVINO (where installed), in one run, on the same inputs and thread count.

Each case is a one-node ONNX model built with onnx.helper (reductions, Gather, RMSNormalization
at the shapes transformer and convnet models give them). For each it builds a Kiln engine for the
CPU (`kiln build --device cpu`) and one on the reference kernels alone (`--device reference`),
times both with `kiln bench` (median latency of a run that returns its output, as the peers' do;
for the CPU engine also with `--no-transfers`, its output left in the engine's memory: the
operator alone), and times onnxruntime (all graph optimizations,
intra-op threads = --threads) and OpenVINO on the same input; Kiln's output is checked against
onnxruntime's (relative L2 error), or against the reference engine's where onnxruntime does not
take the operator.

    python3 bench/cpu_ops.py --kiln build/bin/kiln [--threads 2] [--cases reduce_mean_rows,...] [--out ops.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_vs_peers  # noqa: E402
from cpu_vs_peers import cpu_model, openvino_ms, rel_l2, run  # noqa: E402


def reduce_case(op, shape, axes, keepdims=1, opset=18):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    a = numpy_helper.from_array(np.array(axes, np.int64), "axes")
    n = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    g = helper.make_graph([n], op, [x], [y], [a])
    rng = np.random.default_rng(0)
    return g, opset, {"x": rng.standard_normal(shape).astype(np.float32)}


def gather_case(vocab, width, ids_shape):
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((vocab, width)).astype(np.float32), "table")
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ids_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)], "gather", [ids], [y], [table])
    return g, 17, {"ids": rng.integers(0, vocab, ids_shape).astype(np.int64)}


def rms_case(shape):
    rng = np.random.default_rng(0)
    scale = numpy_helper.from_array((1 + 0.1 * rng.standard_normal(shape[-1:])).astype(np.float32), "scale")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    n = helper.make_node("RMSNormalization", ["x", "scale"], ["y"], axis=-1, epsilon=1e-6)
    g = helper.make_graph([n], "rms", [x], [y], [scale])
    return g, 23, {"x": rng.standard_normal(shape).astype(np.float32)}


# name: (what it stands for, builder)
CASES = {
    "reduce_mean_rows": ("ReduceMean over the last axis of [8, 128, 768] (a row statistic)",
                         lambda: reduce_case("ReduceMean", [8, 128, 768], [-1])),
    "reduce_sum_tokens": ("ReduceSum over the tokens of [8, 128, 384] (a sentence embedder's mean pooling)",
                          lambda: reduce_case("ReduceSum", [8, 128, 384], [1])),
    "reduce_mean_hw": ("ReduceMean over H and W of [1, 256, 56, 56] (a squeeze-excite pool)",
                       lambda: reduce_case("ReduceMean", [1, 256, 56, 56], [2, 3])),
    "reduce_max_channels": ("ReduceMax over the channels of [1, 256, 56, 56] (a spatial attention map)",
                            lambda: reduce_case("ReduceMax", [1, 256, 56, 56], [1])),
    "reduce_logsumexp_rows": ("ReduceLogSumExp over the last axis of [512, 1000]",
                              lambda: reduce_case("ReduceLogSumExp", [512, 1000], [-1])),
    "reduce_sumsquare_all": ("ReduceSumSquare of all of [64, 4096]",
                             lambda: reduce_case("ReduceSumSquare", [64, 4096], [0, 1])),
    "gather_embedding": ("Gather of [8, 128] token ids from a [30522, 768] table (BERT's word embedding)",
                         lambda: gather_case(30522, 768, [8, 128])),
    "rms_norm": ("RMSNormalization of [8, 128, 2048] over the last axis", lambda: rms_case([8, 128, 2048])),
}


def ort_ms(path, feed, threads, seconds):
    """onnxruntime's median latency and output (cpu_vs_peers' measurement); (None, None) where it
    refuses the model."""
    try:
        return cpu_vs_peers.ort_ms(path, feed, threads, seconds)
    except Exception as e:  # an operator or opset it does not implement
        print(f"onnxruntime refuses {os.path.basename(path)}: {str(e).splitlines()[0]}", file=sys.stderr)
        return None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    kiln = os.path.abspath(a.kiln)
    work = a.workdir or tempfile.mkdtemp(prefix="kiln-cpu-ops-")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), KILN_CHECK_PLAN="0", KILN_VERIFY_PASSES="0")
    results = {"cpu": cpu_model(), "threads": a.threads, "date": time.strftime("%Y-%m-%d"), "rows": []}
    print("| case | Kiln | Kiln, operator alone | Kiln reference kernels | onnxruntime | OpenVINO | Kiln / best peer "
          "| rel. L2 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.cases.split(","):
        if name not in CASES:
            sys.exit(f"unknown case {name!r}; the cases: {', '.join(CASES)}")
        what, make = CASES[name]
        graph, opset, feed = make()
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 10 if opset >= 23 else 8
        path = os.path.join(work, f"{name}.onnx")
        onnx.save(model, path)
        inputs = []
        for k, v in feed.items():
            np.save(os.path.join(work, f"{k}.npy"), v)
            inputs += ["--input", f"{k}={os.path.join(work, k + '.npy')}"]
        shapes = ",".join(f"{k}:{'x'.join(str(d) for d in v.shape)}" for k, v in feed.items())
        row = {"case": name, "what": what}
        outs = {}
        for device in ("cpu", "reference"):
            engine = os.path.join(work, f"{name}_{device}.kiln")
            run([kiln, "build", path, "-o", engine, "--device", device, "--shapes", shapes], env)
            r = run([kiln, "bench", engine, "--json", "--duration", str(a.seconds)], env)
            row[f"kiln_{device}_ms"] = json.loads(r.stdout)["latency_ms"]["median"]
            if device == "cpu":
                r = run([kiln, "bench", engine, "--json", "--no-transfers", "--duration", str(a.seconds)], env)
                row["kiln_cpu_operator_ms"] = json.loads(r.stdout)["latency_ms"]["median"]
            outdir = os.path.join(work, f"out_{device}")
            run([kiln, "run", engine] + inputs + ["--output-dir", outdir], env)
            outs[device] = np.load(os.path.join(outdir, "y.npy"))
        row["ort_ms"], want = ort_ms(path, feed, a.threads, a.seconds)
        try:
            row["openvino_ms"], _ = openvino_ms(path, feed, a.threads, a.seconds)
        except Exception as e:  # an operator or opset it does not implement
            print(f"OpenVINO refuses {name}: {str(e).splitlines()[0]}", file=sys.stderr)
            row["openvino_ms"] = None
        row["rel_l2"] = rel_l2(outs["cpu"], want if want is not None else outs["reference"])
        row["checked_against"] = "onnxruntime" if want is not None else "Kiln's reference kernels"
        peers = [t for t in (row["ort_ms"], row["openvino_ms"]) if t is not None]
        row["vs_best_peer"] = row["kiln_cpu_ms"] / min(peers) if peers else None
        results["rows"].append(row)

        def ms(t):
            return f"{t:.3f} ms" if t is not None else "—"

        ratio = f"{row['vs_best_peer']:.2f}x" if row["vs_best_peer"] else "—"
        print(f"| {name} | {ms(row['kiln_cpu_ms'])} | {ms(row['kiln_cpu_operator_ms'])} | {ms(row['kiln_reference_ms'])} | "
              f"{ms(row['ort_ms'])} | "
              f"{ms(row['openvino_ms'])} | {ratio} | {row['rel_l2']:.1e} |", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
