#!/usr/bin/env python3
"""What the Python API adds to a run: `Session.run` from Python against `kiln bench` (the same
engine run from C++), and against onnxruntime's Python `run` on the same model, in one process
and one thread, on a model small enough that the call's overhead is most of the time.

    PYTHONPATH=build/python python3 bench/python_overhead.py --kiln build/bin/kiln
    PYTHONPATH=build/python python3 bench/python_overhead.py --kiln build/bin/kiln --device cuda

With --device cuda the engine runs on the GPU, and `Session.run` is measured on NumPy arrays
(against `kiln bench`, copies in and out included) and on torch CUDA tensors through DLPack
(against `kiln bench --no-transfers`), each call waited for; onnxruntime is not measured there.

The model is built with onnx.helper: x [1, 64] -> MatMul [64, 64] -> Add -> Relu -> y.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import kiln


def small_model(width):
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["s"]),
            helper.make_node("Relu", ["s"], ["y"]),
        ],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def per_call_us(fn, seconds):
    """Median over 20 batches of calls of the time per call, in microseconds."""
    for _ in range(200):
        fn()
    n = 1
    while True:  # calls per batch: a batch takes about seconds / 20
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 > seconds / 20 or n > 1 << 20:
            break
        n *= 2
    samples = []
    for _ in range(20):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(samples)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True, help="the kiln binary (for kiln bench)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", default=None, help="JSON file for the figures")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as work:
        model_path = os.path.join(work, "small.onnx")
        engine_path = os.path.join(work, "small.kiln")
        onnx.save(small_model(a.width), model_path)
        engine = kiln.build(model_path, device=a.device, progress=False)
        engine.save(engine_path)
        session = engine.session()
        x = np.random.default_rng(1).standard_normal((1, a.width)).astype(np.float32)
        feed = {"x": x}

        def kiln_bench_us(*flags):
            env = dict(os.environ, OMP_NUM_THREADS="1")
            cmd = [a.kiln, "bench", engine_path, "--duration", str(a.seconds), "--json", *flags]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            return json.loads(out)["latency_ms"]["median"] * 1000

        cpp_us = kiln_bench_us()
        if a.device == "cuda":
            import torch

            xt = torch.from_numpy(x).cuda()
            stream = torch.cuda.current_stream()
            np.testing.assert_array_equal(session.run({"x": xt})["y"].cpu().numpy(), session.run(feed)["y"])

            def on_device():
                session.run({"x": xt})
                stream.synchronize()

            figures = {
                "model": f"MatMul [1, {a.width}] x [{a.width}, {a.width}] + Add + Relu, float32, CUDA",
                "kiln_bench_us": cpp_us,
                "kiln_python_numpy_us": per_call_us(lambda: session.run(feed), a.seconds),
                "kiln_bench_no_transfers_us": kiln_bench_us("--no-transfers"),
                "kiln_python_torch_cuda_us": per_call_us(on_device, a.seconds),
            }
            figures["python_overhead_numpy_us"] = figures["kiln_python_numpy_us"] - cpp_us
            figures["python_overhead_torch_cuda_us"] = (
                figures["kiln_python_torch_cuda_us"] - figures["kiln_bench_no_transfers_us"]
            )
        else:
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            ort_session = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
            np.testing.assert_allclose(session.run(feed)["y"], ort_session.run(None, feed)[0], rtol=1e-5, atol=1e-5)
            figures = {
                "model": f"MatMul [1, {a.width}] x [{a.width}, {a.width}] + Add + Relu, float32, CPU",
                "kiln_bench_us": cpp_us,
                "kiln_python_dict_us": per_call_us(lambda: session.run(feed), a.seconds),
                "kiln_python_ort_form_us": per_call_us(lambda: session.run(None, feed), a.seconds),
                "onnxruntime_python_us": per_call_us(lambda: ort_session.run(None, feed), a.seconds),
            }
            figures["python_overhead_us"] = figures["kiln_python_dict_us"] - cpp_us
    for k, v in figures.items():
        print(f"{k:28s} {v:.2f}" if isinstance(v, float) else f"{k:28s} {v}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
