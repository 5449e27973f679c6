#!/usr/bin/env python3
"""Kiln against PyTorch on one GPU, in one run, on the same inputs.

For each model (torchvision classifiers, and Hugging Face's bert-base as `bert_base@SEQ`; random
weights: timings do not depend on the values) and batch: exports ONNX with this machine's torch,
builds a Kiln engine for the GPU (cold, then again with the warm timing cache), measures Kiln
(`kiln bench --no-transfers`: inputs and outputs stay on the device, as they do for the PyTorch
modes), PyTorch eager and torch.compile (reduce-overhead; max-autotune with --max-autotune),
images channels-last, and checks Kiln's output against PyTorch's float32 output (relative L2
error) at batch 1.

    python3 bench/gpu_vs_torch.py --kiln build/bin/kiln --out results.json
    python3 bench/gpu_vs_torch.py --kiln build/bin/kiln --out t.json --suite transformers

`--suite transformers` measures bert-base at sequence 128 (batch 1 and 128), 32 and 512 (batch 1
and 32) and vit_b_16 (batch 1 and 128), FP16, and one BERT engine with a profile over batch 1..128
and sequence 1..512 at each BERT shape (`kiln bench --shapes`), beside the fixed-shape engines.

`--quick` leaves out the warm rebuild, the `--streams` run and the accuracy check.

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


BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def split_name(name):
    """'bert_base@128' -> ('bert_base', 128); 'resnet50' -> ('resnet50', None)."""
    base, _, seq = name.partition("@")
    return base, (int(seq) if seq else None)


def is_text(name):
    return split_name(name)[0] == "bert_base"


def torch_model(name):
    base, _ = split_name(name)
    if base == "bert_base":
        import transformers
        torch.manual_seed(0)
        model = transformers.BertModel(transformers.BertConfig()).eval()
        # Hugging Face initializes biases to zero, which an optimizer could drop: trained models'
        # are not, so they are made random too.
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("bias"):
                    p.normal_(0.0, 0.02)
        return model
    torch.manual_seed(0)  # the same weights each time, so a reused workdir's ONNX file matches
    model = getattr(torchvision.models, base)(weights=None).eval()
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        # Freshly initialized batch-norm statistics (mean 0, variance 1) leave MobileNetV2's and
        # EfficientNet's outputs near 1e-9 and 1e-14, below FP16's range: the statistics are
        # measured on random images, as training would, so activations have a trained model's scale.
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
                    m.momentum = None  # a cumulative average
            model.train()
            for _ in range(4):
                model(torch.randn(8, 3, 224, 224))
            model.eval()
    if base.startswith("vit"):
        # torchvision zeroes ViT's classifier head: its output would be all zeros.
        torch.manual_seed(0)
        with torch.no_grad():
            model.heads.head.weight.normal_(0.0, 0.02)
    return model


def export(name, path):
    """Exports the model at `path` (once per base model) and returns the PyTorch module."""
    base, _ = split_name(name)
    model = torch_model(name)
    if os.path.exists(path):
        return model
    if base == "bert_base":
        # The exported graph is the eager attention (MatMul, Softmax, MatMul), which Kiln
        # recognizes; the PyTorch modes run the module's default (SDPA, fused) attention.
        import transformers
        config = transformers.BertConfig()
        config._attn_implementation = "eager"
        eager = transformers.BertModel(config).eval()
        eager.load_state_dict(model.state_dict())
        ids = torch.ones(1, 8, dtype=torch.int64)
        axes = {n: {0: "batch", 1: "sequence"} for n in BERT_INPUTS}
        axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
        axes["pooler_output"] = {0: "batch"}
        class Positional(torch.nn.Module):  # the inputs by position, whatever forward's signature
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                out = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
                return out.last_hidden_state, out.pooler_output

        torch.onnx.export(Positional(eager), (ids, torch.ones_like(ids), torch.zeros_like(ids)), path,
                          input_names=BERT_INPUTS,
                          output_names=["last_hidden_state", "pooler_output"], dynamic_axes=axes, opset_version=17,
                          dynamo=False)
        return model
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)
    return model


def shapes_arg(name, batch):
    _, seq = split_name(name)
    if is_text(name):
        return ",".join(f"{n}:{batch}x{seq}" for n in BERT_INPUTS)
    return f"x:{batch}x3x224x224"


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


def torch_modes(model, name, batch, precision, modes, reps):
    dtype = PRECISIONS[precision]
    if is_text(name):
        _, seq = split_name(name)
        m = model.to("cuda", dtype=dtype)
        ids = torch.randint(0, 1000, (batch, seq), device="cuda")
        mask = torch.ones(batch, seq, dtype=torch.int64, device="cuda")
        call = lambda fn: fn(input_ids=ids, attention_mask=mask)  # noqa: E731
    else:
        m = model.to("cuda", dtype=dtype).to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
        call = lambda fn: fn(x)  # noqa: E731
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
            f = lambda: call(fn)  # noqa: E731
            f()
            compile_s = time.time() - t0
            out[mode] = {"ms": cuda_event_median(f, 10, reps, iters), "compile_s": compile_s}
    return out


# A build with tests checks every plan placement as it runs, which stops recordings: measured
# runs leave those checks off.
KILN_ENV = dict(os.environ, KILN_CHECK_PLAN="0", KILN_VERIFY_PASSES="0")


def run(cmd, **kw):
    kw.setdefault("env", KILN_ENV)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def kiln_build(kiln, onnx_path, engine, shapes, precision, cache, extra=()):
    """`shapes`: a --shapes argument, or a (min, opt, max) triple of them for a profile."""
    t0 = time.time()
    if isinstance(shapes, tuple):
        shape_flags = ["--min-shapes", shapes[0], "--opt-shapes", shapes[1], "--max-shapes", shapes[2]]
    else:
        shape_flags = ["--shapes", shapes]
    run([kiln, "build", onnx_path, "-o", engine, "--device", "cuda", "--timing-cache", cache] + shape_flags +
        kiln_flags(precision) + list(extra))
    return time.time() - t0


def kiln_bench(kiln, engine, reps, shapes=None):
    """Median latency over `reps` runs without transfers, and one with them; at `shapes` for an
    engine with a profile."""
    at = ["--shapes", shapes] if shapes else []
    medians = []
    for _ in range(reps):
        r = run([kiln, "bench", engine, "--json", "--no-transfers", "--duration", "2"] + at)
        medians.append(json.loads(r.stdout)["latency_ms"]["median"])
    r = run([kiln, "bench", engine, "--json", "--duration", "2"] + at)
    with_transfers = json.loads(r.stdout)["latency_ms"]["median"]
    return statistics.median(medians), with_transfers


def kiln_streams(kiln, engine, streams):
    """Throughput (inferences/s) of `streams` contexts of the engine running at once, each on its
    own stream with its own copies in and out (`kiln bench --streams`)."""
    r = run([kiln, "bench", engine, "--json", "--duration", "2", "--streams", str(streams)])
    return json.loads(r.stdout)["streams"]["throughput_per_s"]


def kiln_accuracy(kiln, engine, name, model, tmp):
    """Relative L2 error of Kiln's first output against PyTorch float32 on the same input."""
    rng = np.random.default_rng(0)
    if is_text(name):
        _, seq = split_name(name)
        feeds = {"input_ids": rng.integers(0, 1000, (1, seq)).astype(np.int64),
                 "attention_mask": np.ones((1, seq), np.int64), "token_type_ids": np.zeros((1, seq), np.int64)}
        out_name = "last_hidden_state"
    else:
        feeds = {"x": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
        out_name = "y"
    args = []
    for k, v in feeds.items():
        np.save(os.path.join(tmp, f"{k}.npy"), v)
        args += ["--input", f"{k}={os.path.join(tmp, k + '.npy')}"]
    outdir = os.path.join(tmp, "out")
    run([kiln, "run", engine, "--output-dir", outdir] + args)
    got = np.load(os.path.join(outdir, f"{out_name}.npy")).astype(np.float64)
    with torch.inference_mode():
        m = model.float().cpu()
        if is_text(name):
            want = m(**{k: torch.from_numpy(v) for k, v in feeds.items()}).last_hidden_state.numpy()
        else:
            want = m(torch.from_numpy(feeds["x"])).numpy()
    want = want.astype(np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)), float(np.abs(want).max())


def dynamic_bert_rows(kiln, work, precision, shapes_by_name, reps):
    """One BERT engine with a profile over batch 1..128 and sequence 1..512, measured at each
    (name, batch) of `shapes_by_name` with `kiln bench --shapes`."""
    onnx_path = os.path.join(work, "bert_base.onnx")
    engine = os.path.join(work, f"bert_base_{precision}_dynamic.kiln")
    cache = os.path.join(work, f"bert_base_{precision}_dynamic.cache.json")
    prof = tuple(",".join(f"{n}:{b}x{s}" for n in BERT_INPUTS) for b, s in ((1, 1), (32, 128), (128, 512)))
    out = {}
    build_s = kiln_build(kiln, onnx_path, engine, prof, precision, cache)
    for name, batch in shapes_by_name:
        ms, _ = kiln_bench(kiln, engine, reps, shapes_arg(name, batch))
        out[(name, batch)] = ms
    return out, build_s


TRANSFORMER_SUITE = [("bert_base@128", 1), ("bert_base@128", 128), ("bert_base@32", 1), ("bert_base@32", 32),
                     ("bert_base@512", 1), ("bert_base@512", 32), ("vit_b_16", 1), ("vit_b_16", 128)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", required=True, help="the kiln binary")
    ap.add_argument("--out", required=True, help="JSON file for the figures")
    ap.add_argument("--models", default="resnet50,mobilenet_v2,efficientnet_b0,convnext_tiny",
                    help="torchvision names, or bert_base@SEQ")
    ap.add_argument("--batches", default="1,256")
    ap.add_argument("--precisions", default="fp16", help="fp16,bf16,fp32 (fp32 allows TF32, as PyTorch does)")
    ap.add_argument("--extra", default="resnet50:fp32,resnet50:bf16",
                    help="MODEL:PRECISION pairs measured besides (at every batch)")
    ap.add_argument("--suite", choices=["convnets", "transformers"], default="convnets",
                    help="transformers: the BERT and ViT rows (--models, --batches and --extra are ignored)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--streams", type=int, default=4,
                    help="at batch 1, also Kiln's throughput with this many contexts at once (0: not measured)")
    ap.add_argument("--max-autotune", action="store_true")
    ap.add_argument("--no-torch", action="store_true", help="measure Kiln only")
    ap.add_argument("--no-dynamic", action="store_true", help="transformers suite: leave out the profile engine")
    ap.add_argument("--only-rows", default=None, help="transformers suite: the rows to measure, as indices (0,1,...)")
    ap.add_argument("--quick", action="store_true",
                    help="Kiln's latency only: no warm rebuild, no --streams run and no accuracy check")
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
    if args.suite == "transformers":
        suite = TRANSFORMER_SUITE
        if args.only_rows:
            suite = [suite[int(i)] for i in args.only_rows.split(",")]
        rows = [(m, p, b) for m, b in suite for p in args.precisions.split(",")]
    else:
        batches = [int(b) for b in args.batches.split(",")]
        jobs = [(m, p) for m in args.models.split(",") for p in args.precisions.split(",")]
        for pair in filter(None, args.extra.split(",")):
            m, p = pair.split(":")
            if (m, p) not in jobs:
                jobs.append((m, p))
        rows = [(m, p, b) for m, p in jobs for b in batches]
    modes = [] if args.no_torch else ["eager", "reduce-overhead"] + (["max-autotune"] if args.max_autotune else [])
    gpu = torch.cuda.get_device_name()
    results = {"gpu": gpu, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": []}
    exported = {}

    def save():
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)

    for name, precision, batch in rows:
        base, _ = split_name(name)
        onnx_path = os.path.join(work, f"{base}.onnx")
        if base not in exported:
            exported[base] = export(name, onnx_path)
        row = {"model": name, "precision": precision, "batch": batch}
        engine = os.path.join(work, f"{name}_{precision}_b{batch}.kiln")
        cache = os.path.join(work, f"{name}_{precision}_b{batch}.cache.json")
        if os.path.exists(cache):
            os.remove(cache)
        shapes = shapes_arg(name, batch)
        try:
            row["build_cold_s"] = kiln_build(kiln, onnx_path, engine, shapes, precision, cache)
            if not args.quick:
                row["build_warm_s"] = kiln_build(kiln, onnx_path, engine, shapes, precision, cache)
            row["kiln_ms"], row["kiln_with_transfers_ms"] = kiln_bench(kiln, engine, args.reps)
            for vname, vflags in variants:
                vengine = os.path.join(work, f"{name}_{precision}_b{batch}_{vname}.kiln")
                row[f"kiln_{vname}_build_s"] = kiln_build(kiln, onnx_path, vengine, shapes, precision, cache, vflags)
                row[f"kiln_{vname}_ms"], _ = kiln_bench(kiln, vengine, args.reps)
            if batch == 1 and args.streams > 1 and not args.quick:
                row[f"kiln_streams{args.streams}_img_s"] = kiln_streams(kiln, engine, args.streams)
            if batch == 1 and not args.quick:
                with tempfile.TemporaryDirectory() as tmp:
                    # Random weights can leave outputs far below FP16's smallest number (about
                    # 6e-8): the largest output is recorded so that such a row reads as what it is.
                    row["kiln_rel_l2_vs_torch_fp32"], row["torch_fp32_output_max"] = kiln_accuracy(
                        kiln, engine, name, exported[base], tmp)
        except RuntimeError as e:
            row["kiln_error"] = str(e)[-2000:]
        if modes:
            model = torch_model(name)
            model.load_state_dict(exported[base].state_dict())
            try:
                for mode, r in torch_modes(model, name, batch, precision, modes, args.reps).items():
                    row[f"torch_{mode}_ms"] = r["ms"]
                    row[f"torch_{mode}_compile_s"] = r["compile_s"]
            except Exception as e:  # a PyTorch mode that fails is reported, not fatal to the run
                row["torch_error"] = str(e)[-2000:]
            del model
            torch.cuda.empty_cache()
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()

    if args.suite == "transformers" and not args.no_dynamic:
        for precision in args.precisions.split(","):
            bert = [(n, b) for n, p, b in rows if p == precision and is_text(n)]
            try:
                dyn, build_s = dynamic_bert_rows(kiln, work, precision, bert, args.reps)
                for row in results["rows"]:
                    if (row["model"], row["batch"]) in dyn and row["precision"] == precision:
                        row["kiln_dynamic_ms"] = dyn[(row["model"], row["batch"])]
                        row["kiln_dynamic_build_s"] = build_s
            except RuntimeError as e:
                results["dynamic_error"] = str(e)[-2000:]
        save()

    def fig(row, key):
        ms = row.get(key)
        if ms is None:
            return "—"
        unit = "seq/s" if is_text(row["model"]) else "img/s"
        return f"{ms:.3f} ms" if row["batch"] == 1 else f"{row['batch'] / ms * 1000:,.0f} {unit}"

    print(f"\n{gpu}, torch {torch.__version__}, {results['date']}\n")
    dyn_cols = ["kiln_dynamic_ms"] if any("kiln_dynamic_ms" in r for r in results["rows"]) else []
    cols = ["kiln_ms"] + dyn_cols + [f"kiln_{v}_ms" for v, _ in variants] + [f"torch_{m}_ms" for m in modes]
    print("| model | precision | batch | " + " | ".join(["Kiln"] + (["Kiln profile engine"] if dyn_cols else []) +
                                                    [f"Kiln {v}" for v, _ in variants] + modes) +
          " | Kiln vs best torch | Kiln build cold / warm | Kiln rel. L2 vs torch fp32 |")
    print("|" + "---|" * (len(cols) + 6))
    for row in results["rows"]:
        torch_best = min((row[c] for c in cols if c.startswith("torch_") and c in row), default=None)
        ratio = "—"
        if torch_best and "kiln_ms" in row:
            ratio = f"{row['kiln_ms'] / torch_best:.2f}x time" if row["batch"] == 1 else \
                f"{torch_best / row['kiln_ms']:.2f}x throughput"
        build = f"{row['build_cold_s']:.1f} s / {row['build_warm_s']:.1f} s" if "build_warm_s" in row else \
            f"{row['build_cold_s']:.1f} s / —" if "build_cold_s" in row else "—"
        err = f"{row['kiln_rel_l2_vs_torch_fp32']:.2e}" if "kiln_rel_l2_vs_torch_fp32" in row else "—"
        print(f"| {row['model']} | {row['precision']} | {row['batch']} | " +
              " | ".join(fig(row, c) for c in cols) + f" | {ratio} | {build} | {err} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
