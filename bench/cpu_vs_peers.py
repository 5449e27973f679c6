#!/usr/bin/env python3
"""Kiln against onnxruntime (and OpenVINO where installed) on this CPU, in one run, on the same inputs.

For each model (torchvision, random weights: timings do not depend on the values; `bert_base`: a
BERT-base-size encoder, Hugging Face's BertModel with 12 layers of 768 at sequence 128, exported by
scripts/export_bert.py; `yolov5s`: YOLOv5s rebuilt, 7.2M parameters, at 640x640, boxes decoded in the
graph, from scripts/export_torch_models.py) it exports ONNX with the distribution's PyTorch
(/usr/bin/python3 has python3-torch), builds a Kiln engine for the CPU (`kiln build --device cpu`),
and measures at each batch, with the same thread count for all:
Kiln (`kiln bench`, median latency), onnxruntime (all graph optimizations, intra-op threads =
--threads, median of timed runs) and OpenVINO when its Python package is importable. It also
checks Kiln's output against onnxruntime's (relative L2 error). With --bf16, on a CPU with BF16
instructions (AVX-512 BF16 or AMX), it also measures Kiln built with --bf16 against OpenVINO's BF16
precision hint, both outputs against onnxruntime's FP32 one.

    python3 bench/cpu_vs_peers.py --kiln build/bin/kiln --out cpu.json [--models resnet50,...] [--threads 2] [--bf16]

Kiln's CPU threads are OpenMP's: OMP_NUM_THREADS is set to --threads for it.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

EXPORT = r"""
import sys, torch, torchvision
name, batch, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = getattr(torchvision.models, name)(weights=None).eval()
x = torch.randn(batch, 3, 224, 224)
torch.onnx.export(m, (x,), path, input_names=["x"], output_names=["y"], opset_version=17,
                  dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
"""


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


EXPORT_YOLO = r"""
import sys, torch
sys.path.insert(0, sys.argv[2])
import export_torch_models as e
torch.manual_seed(0)
m = e.YoloV5()
with torch.no_grad():
    e.randomize_batchnorm(m, torch.Generator().manual_seed(0))
m.eval()
torch.onnx.export(m, (torch.randn(1, 3, 640, 640),), sys.argv[1], input_names=["x"], output_names=["y"],
                  opset_version=17, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
"""

BERT_SEQ = 128
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export(name, path, torch_python):
    """The model's ONNX file, exported with the distribution's torch (dynamic batch)."""
    scripts = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts")
    if name == "bert_base":
        run([torch_python, os.path.join(scripts, "export_bert.py"), os.path.dirname(path), "--name", "bert_base",
             "--hidden", "768", "--layers", "12", "--heads", "12", "--intermediate", "3072", "--batch", "1",
             "--seq", str(BERT_SEQ)])
    elif name == "yolov5s":
        run([torch_python, "-c", EXPORT_YOLO, path, scripts])
    else:
        run([torch_python, "-c", EXPORT, name, "1", path])


def feeds_for(name, batch):
    """Inputs by name: token ids (attention to every token) for BERT, an image batch otherwise."""
    rng = np.random.default_rng(0)
    if name == "bert_base":
        return {"input_ids": rng.integers(0, 1000, (batch, BERT_SEQ)).astype(np.int64),
                "attention_mask": np.ones((batch, BERT_SEQ), np.int64),
                "token_type_ids": np.zeros((batch, BERT_SEQ), np.int64)}
    size = 640 if name == "yolov5s" else 224
    return {"x": rng.standard_normal((batch, 3, size, size)).astype(np.float32)}


def ort_ms(path, feed, threads, seconds):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    for _ in range(3):
        out = s.run(None, feed)[0]
    times = []
    end = time.time() + seconds
    while time.time() < end or len(times) < 5:
        t0 = time.perf_counter()
        s.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), out


def openvino_ms(path, feed, threads, seconds, precision="f32"):
    """OpenVINO's median latency and first output at `precision` ("f32" or "bf16"); None where
    its package is not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None, None
    core = ov.Core()
    model = core.compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision})
    req = model.create_infer_request()
    for _ in range(3):
        req.infer(feed)
    times = []
    end = time.time() + seconds
    while time.time() < end or len(times) < 5:
        t0 = time.perf_counter()
        req.infer(feed)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), req.get_output_tensor(0).data.copy()


def cpu_has_bf16():
    """Whether this CPU has BF16 instructions (AVX-512 BF16 or AMX), from /proc/cpuinfo."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return "avx512f" in flags and ("avx512_bf16" in flags or "amx_bf16" in flags)


def rel_l2(got, want):
    got, want = got.astype(np.float64), want.astype(np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="resnet50,mobilenet_v2,efficientnet_b0,squeezenet1_1,bert_base,yolov5s")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    ap.add_argument("--torch-python", default="/usr/bin/python3", help="a Python with torch and torchvision")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--bf16", action="store_true",
                    help="also Kiln --bf16 against OpenVINO's BF16, where this CPU has BF16 instructions")
    a = ap.parse_args()
    bf16 = a.bf16 and cpu_has_bf16()
    if a.bf16 and not bf16:
        print("this CPU has no BF16 instructions: the BF16 columns are left out", file=sys.stderr)
    kiln = os.path.abspath(a.kiln)
    work = a.workdir or tempfile.mkdtemp(prefix="kiln-cpu-bench-")
    os.makedirs(work, exist_ok=True)
    # A build with tests checks every plan placement as it runs: measured runs leave that off.
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), KILN_CHECK_PLAN="0", KILN_VERIFY_PASSES="0")
    results = {"cpu": cpu_model(), "threads": a.threads, "onnxruntime": ort.__version__,
               "date": time.strftime("%Y-%m-%d"), "rows": []}
    for name in a.models.split(","):
        path = os.path.join(work, f"{name}.onnx")
        if not os.path.exists(path):
            export(name, path, a.torch_python)
        for batch in [int(b) for b in a.batches.split(",")]:
            row = {"model": name, "batch": batch}
            feed = feeds_for(name, batch)
            inputs = []
            for k, v in feed.items():
                np.save(os.path.join(work, f"{k}.npy"), v)
                inputs += ["--input", f"{k}={os.path.join(work, k + '.npy')}"]
            shapes = ",".join(f"{k}:{'x'.join(str(d) for d in v.shape)}" for k, v in feed.items())
            engine = os.path.join(work, f"{name}_b{batch}.kiln")
            t0 = time.time()
            run([kiln, "build", path, "-o", engine, "--device", "cpu", "--shapes", shapes], env)
            row["kiln_build_s"] = time.time() - t0
            r = run([kiln, "bench", engine, "--json", "--duration", str(a.seconds)], env)
            row["kiln_ms"] = json.loads(r.stdout)["latency_ms"]["median"]
            outdir = os.path.join(work, "out")
            run([kiln, "run", engine] + inputs + ["--output-dir", outdir], env)
            first = "last_hidden_state" if name == "bert_base" else "y"
            got = np.load(os.path.join(outdir, f"{first}.npy"))
            row["ort_ms"], want = ort_ms(path, feed, a.threads, a.seconds)
            row["kiln_rel_l2_vs_ort"] = rel_l2(got, want)
            ov_ms, _ = openvino_ms(path, feed, a.threads, a.seconds)
            if ov_ms is not None:
                row["openvino_ms"] = ov_ms
            if bf16:
                # Kiln with --bf16 (its BF16 steps counted from `kiln inspect`) and OpenVINO's BF16
                # hint, each output against onnxruntime's FP32 one.
                engine16 = os.path.join(work, f"{name}_b{batch}_bf16.kiln")
                run([kiln, "build", path, "-o", engine16, "--device", "cpu", "--bf16", "--shapes", shapes], env)
                r = run([kiln, "bench", engine16, "--json", "--duration", str(a.seconds)], env)
                row["kiln_bf16_ms"] = json.loads(r.stdout)["latency_ms"]["median"]
                steps = json.loads(run([kiln, "inspect", engine16, "--json"], env).stdout)["steps"]
                row["kiln_bf16_steps"] = sum(st["precision"] == "bfloat16" for st in steps)
                run([kiln, "run", engine16] + inputs + ["--output-dir", outdir], env)
                row["kiln_bf16_rel_l2_vs_ort"] = rel_l2(np.load(os.path.join(outdir, f"{first}.npy")), want)
                ov16_ms, ov16_out = openvino_ms(path, feed, a.threads, a.seconds, "bf16")
                if ov16_ms is not None:
                    row["openvino_bf16_ms"] = ov16_ms
                    row["openvino_bf16_rel_l2_vs_ort"] = rel_l2(ov16_out, want)
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            with open(a.out, "w") as f:
                json.dump(results, f, indent=1)
    print(f"\n{results['cpu']}, {a.threads} threads, onnxruntime {ort.__version__}, {results['date']}\n")
    has_ov = any("openvino_ms" in r for r in results["rows"])
    print("| model | batch | Kiln | onnxruntime |" + (" OpenVINO |" if has_ov else "") + " Kiln / best peer | Kiln build |")
    print("|---|---|---|---|" + ("---|" if has_ov else "") + "---|---|")
    for r in results["rows"]:
        best = min(v for k, v in r.items() if k in ("ort_ms", "openvino_ms"))
        ov = f" {r['openvino_ms']:.2f} ms |" if "openvino_ms" in r else (" — |" if has_ov else "")
        print(f"| {r['model']} | {r['batch']} | {r['kiln_ms']:.2f} ms | {r['ort_ms']:.2f} ms |{ov} "
              f"{r['kiln_ms'] / best:.2f}x | {r['kiln_build_s']:.1f} s |")
    if any("kiln_bf16_ms" in r for r in results["rows"]):
        print("\n| model | batch | Kiln BF16 | OpenVINO BF16 | Kiln / OpenVINO | Kiln BF16 steps | "
              "rel. L2 vs onnxruntime FP32: Kiln / OpenVINO |")
        print("|---|---|---|---|---|---|---|")
        for r in results["rows"]:
            if "kiln_bf16_ms" not in r:
                continue
            ov = r.get("openvino_bf16_ms")
            print(f"| {r['model']} | {r['batch']} | {r['kiln_bf16_ms']:.2f} ms | " +
                  (f"{ov:.2f} ms | {r['kiln_bf16_ms'] / ov:.2f}x" if ov else "— | —") +
                  f" | {r['kiln_bf16_steps']} | {r['kiln_bf16_rel_l2_vs_ort']:.1e} / " +
                  (f"{r['openvino_bf16_rel_l2_vs_ort']:.1e} |" if ov else "— |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
