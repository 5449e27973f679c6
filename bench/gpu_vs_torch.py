#!/usr/bin/env python3
"""Kiln against PyTorch on one GPU, in one run, on the same inputs.

For each model (torchvision, random weights: timings do not depend on the values) and batch:
exports ONNX with this machine's torch, builds a Kiln engine for the GPU (cold, then again with
the warm timing cache), measures Kiln (`kiln bench --no-transfers`: inputs and outputs stay on
the device, as they do for the PyTorch modes), PyTorch eager and torch.compile
(reduce-overhead; max-autotune with --max-autotune), all channels-last, and checks Kiln's
output against PyTorch's float32 output (relative L2 error) at batch 1.

    python3 bench/gpu_vs_torch.py --kiln build/bin/kiln --out results.json

`--variant NAME=FLAGS` also measures Kiln built with extra build flags in the same run (e.g.
`--variant 'se=--enable-pass fuse-channel-mlp'` for a pass that is off by default).

Prints a Markdown table (latency in ms at batch 1, images/s at larger batches) and writes every
figure to --out.
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
import torch
import torchvision

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def kiln_flags(precision):
    return {"fp16": ["--fp16"], "bf16": ["--bf16"], "fp32": []}[precision]


def export(name, path):
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return model


def cuda_event_median(fn, warmup, reps, iters):
    """Median over `reps` repetitions of the per-call time of `iters` back-to-back calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return statistics.median(times)


def torch_modes(model, batch, precision, modes, reps):
    dtype = PRECISIONS[precision]
    m = model.to("cuda", dtype=dtype).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
    if precision == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = {}
    iters = 50 if batch == 1 else 10
    with torch.inference_mode():
        for mode in modes:
            t0 = time.time()
            if mode == "eager":
                fn = m
            else:
                torch._dynamo.reset()
                fn = torch.compile(m, mode=mode)
            f = lambda: fn(x)  # noqa: E731
            f()
            compile_s = time.time() - t0
            out[mode] = {"ms": cuda_event_median(f, 10, reps, iters), "compile_s": compile_s}
    return out


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def kiln_build(kiln, onnx_path, engine, batch, precision, cache, extra=()):
    t0 = time.time()
    run([kiln, "build", onnx_path, "-o", engine, "--device", "cuda", "--shapes", f"x:{batch}x3x224x224",
         "--timing-cache", cache] + kiln_flags(precision) + list(extra))
    return time.time() - t0


def kiln_bench(kiln, engine, reps):
    medians = []
    for _ in range(reps):
        r = run([kiln, "bench", engine, "--json", "--no-transfers", "--duration", "2"])
        medians.append(json.loads(r.stdout)["latency_ms"]["median"])
    r = run([kiln, "bench", engine, "--json", "--duration", "2"])
    with_transfers = json.loads(r.stdout)["latency_ms"]["median"]
    return statistics.median(medians), with_transfers


def kiln_streams(kiln, engine, streams):
    """Throughput (inferences/s) of `streams` contexts of the engine running at once, each on its
    own stream with its own copies in and out (`kiln bench --streams`)."""
    r = run([kiln, "bench", engine, "--json", "--duration", "2", "--streams", str(streams)])
    return json.loads(r.stdout)["streams"]["throughput_per_s"]


def kiln_accuracy(kiln, engine, model, tmp):
    """Relative L2 error of Kiln's output against PyTorch float32 on the same input."""
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    np.save(os.path.join(tmp, "x.npy"), x)
    outdir = os.path.join(tmp, "out")
    run([kiln, "run", engine, "--input", f"x={os.path.join(tmp, 'x.npy')}", "--output-dir", outdir])
    got = np.load(os.path.join(outdir, "y.npy")).astype(np.float64)
    with torch.inference_mode():
        want = model.float().cpu()(torch.from_numpy(x)).numpy().astype(np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)), float(np.abs(want).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", required=True, help="the kiln binary")
    ap.add_argument("--out", required=True, help="JSON file for the figures")
    ap.add_argument("--models", default="resnet50,mobilenet_v2,efficientnet_b0,convnext_tiny")
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--precisions", default="fp16", help="fp16,bf16,fp32 (fp32 allows TF32, as PyTorch does)")
    ap.add_argument("--extra", default="resnet50:fp32,resnet50:bf16",
                    help="MODEL:PRECISION pairs measured besides (at every batch)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--streams", type=int, default=4,
                    help="at batch 1, also Kiln's throughput with this many contexts at once (0: not measured)")
    ap.add_argument("--max-autotune", action="store_true")
    ap.add_argument("--no-torch", action="store_true", help="measure Kiln only")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                    help="also build and measure Kiln with these extra build flags (e.g. "
                         "'se=--enable-pass fuse-channel-mlp'), as kiln_NAME_ms beside the default; "
                         "it shares the row's timing cache (repeatable)")
    args = ap.parse_args()

    kiln = os.path.abspath(args.kiln)
    variants = []
    for v in args.variant:
        vname, sep, flags = v.partition("=")
        if not sep or not vname.isidentifier():
            ap.error(f"--variant expects NAME=FLAGS with NAME an identifier, got '{v}'")
        variants.append((vname, flags.split()))
    work = args.workdir or tempfile.mkdtemp(prefix="kiln-bench-")
    os.makedirs(work, exist_ok=True)
    batches = [int(b) for b in args.batches.split(",")]
    jobs = [(m, p) for m in args.models.split(",") for p in args.precisions.split(",")]
    for pair in filter(None, args.extra.split(",")):
        m, p = pair.split(":")
        if (m, p) not in jobs:
            jobs.append((m, p))
    modes = [] if args.no_torch else ["eager", "reduce-overhead"] + (["max-autotune"] if args.max_autotune else [])
    gpu = torch.cuda.get_device_name()
    results = {"gpu": gpu, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": []}
    exported = {}
    for name, precision in jobs:
        onnx_path = os.path.join(work, f"{name}.onnx")
        if name not in exported:
            exported[name] = export(name, onnx_path)
        for batch in batches:
            row = {"model": name, "precision": precision, "batch": batch}
            engine = os.path.join(work, f"{name}_{precision}_b{batch}.kiln")
            cache = os.path.join(work, f"{name}_{precision}_b{batch}.cache.json")
            if os.path.exists(cache):
                os.remove(cache)
            try:
                row["build_cold_s"] = kiln_build(kiln, onnx_path, engine, batch, precision, cache)
                row["build_warm_s"] = kiln_build(kiln, onnx_path, engine, batch, precision, cache)
                row["kiln_ms"], row["kiln_with_transfers_ms"] = kiln_bench(kiln, engine, args.reps)
                for vname, vflags in variants:
                    vengine = os.path.join(work, f"{name}_{precision}_b{batch}_{vname}.kiln")
                    row[f"kiln_{vname}_build_s"] = kiln_build(kiln, onnx_path, vengine, batch, precision, cache,
                                                              vflags)
                    row[f"kiln_{vname}_ms"], _ = kiln_bench(kiln, vengine, args.reps)
                if batch == 1 and args.streams > 1:
                    row[f"kiln_streams{args.streams}_img_s"] = kiln_streams(kiln, engine, args.streams)
                if batch == 1:
                    with tempfile.TemporaryDirectory() as tmp:
                        # Random weights can leave outputs far below FP16's smallest number (about
                        # 6e-8): the largest output is recorded so that such a row reads as what it is.
                        row["kiln_rel_l2_vs_torch_fp32"], row["torch_fp32_output_max"] = kiln_accuracy(
                            kiln, engine, exported[name], tmp)
            except RuntimeError as e:
                row["kiln_error"] = str(e)[-2000:]
            if modes:
                model = getattr(torchvision.models, name)(weights=None).eval()
                model.load_state_dict(exported[name].state_dict())
                for mode, r in torch_modes(model, batch, precision, modes, args.reps).items():
                    row[f"torch_{mode}_ms"] = r["ms"]
                    row[f"torch_{mode}_compile_s"] = r["compile_s"]
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)

    def fig(row, key):
        ms = row.get(key)
        if ms is None:
            return "—"
        return f"{ms:.3f} ms" if row["batch"] == 1 else f"{row['batch'] / ms * 1000:,.0f} img/s"

    print(f"\n{gpu}, torch {torch.__version__}, {results['date']}\n")
    cols = ["kiln_ms"] + [f"kiln_{v}_ms" for v, _ in variants] + [f"torch_{m}_ms" for m in modes]
    print("| model | precision | batch | " + " | ".join(["Kiln"] + [f"Kiln {v}" for v, _ in variants] + modes) +
          " | Kiln vs best torch | Kiln build cold / warm | Kiln rel. L2 vs torch fp32 |")
    print("|" + "---|" * (len(cols) + 6))
    for row in results["rows"]:
        torch_best = min((row[c] for c in cols if c.startswith("torch_") and c in row), default=None)
        ratio = "—"
        if torch_best and "kiln_ms" in row:
            ratio = f"{row['kiln_ms'] / torch_best:.2f}x time" if row["batch"] == 1 else \
                f"{torch_best / row['kiln_ms']:.2f}x throughput"
        build = f"{row['build_cold_s']:.1f} s / {row['build_warm_s']:.1f} s" if "build_warm_s" in row else "—"
        err = f"{row['kiln_rel_l2_vs_torch_fp32']:.2e}" if "kiln_rel_l2_vs_torch_fp32" in row else "—"
        print(f"| {row['model']} | {row['precision']} | {row['batch']} | " +
              " | ".join(fig(row, c) for c in cols) + f" | {ratio} | {build} | {err} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
