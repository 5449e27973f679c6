#!/usr/bin/env python3
"""The bundled example's speed on the CPU: Kiln's engine against onnxruntime on the same model,
inputs and thread count, each timed for about a second (median latency)."""
import argparse
import json
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--model", required=True, help="the ONNX model")
    ap.add_argument("--engine", required=True, help="Kiln's engine built from it")
    ap.add_argument("--input", required=True, help="NAME=FILE.npy: the input both run")
    ap.add_argument("--duration", type=float, default=1.0)
    a = ap.parse_args()
    name, _, path = a.input.partition("=")
    x = np.load(path)
    p = subprocess.run([a.kiln, "bench", a.engine, "--input", a.input, "--duration", str(a.duration), "--json"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        return 1
    k = json.loads(p.stdout)
    if k.get("device") != "cpu":
        print(f"kiln: the engine runs on {k.get('device')}; the onnxruntime comparison is for CPU engines")
        return 0
    threads = int(k["threads"])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    feed = {name: x}
    for _ in range(5):
        sess.run(None, feed)
    times = []
    end = time.perf_counter() + a.duration
    while time.perf_counter() < end or len(times) < 10:
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    ort_ms = float(np.median(times))
    kiln_ms = float(k["latency_ms"]["median"])
    print(f"kiln: {name} {'x'.join(map(str, x.shape))} on {threads} CPU threads: Kiln {kiln_ms:.4f} ms, "
          f"onnxruntime {ort.__version__} {ort_ms:.4f} ms (median latency; Kiln takes {kiln_ms / ort_ms:.2f}x "
          f"onnxruntime's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
