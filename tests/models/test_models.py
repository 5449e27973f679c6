#!/usr/bin/env python3
"""Whole-model tests: every model run four ways by Kiln, each compared with onnxruntime.

Models come from scripts/export_torch_models.py and scripts/export_bert.py (run with the Python
that has torch) and from the bundled digits example: <name>.onnx with its test input in
<name>.input.npy (the first input) or <name>.inputs.npz (every input by name).

The four ways:
  imported     `kiln run MODEL.onnx`: the imported graph, node by node;
  fixed        an engine built for the test input's shapes (`--shapes`);
  profile      an engine built with a profile: min 1 on every dynamic dimension, max twice the test
               shape; run at the test shape and at the smallest shape (dynamic dims cut to 1);
  profile-raw  the same profile with every optimization pass disabled;
  fixed-opt-in the fixed engine with the passes that are off by default enabled too (when a model's
               structure gives them something to fuse: OPT_IN_FUSIONS).
Each output must satisfy |kiln - ort| <= 1e-4 * |ort| + 1e-5 (the absolute term covers values that
are zero up to rounding). The fixed and profile engines must show the fusions the model's
structure allows, and the profile engine may have at most 10% more steps than the fixed one.

With --device cuda, engines are built for the GPU instead: fixed and profile engines in strict FP32
(--no-tf32) must match onnxruntime within 1e-3 relative (plus 1e-5 absolute), and fixed engines
with TF32, FP16 and BF16 must stay within the relative L2 error bounds of GPU_BOUNDS. Every step
must run on the GPU unless the model is listed in GPU_FALLBACK_ALLOWED (Shape and Size steps,
which read only dims the host holds, and integer arithmetic and logic on what they computed may
run on the host). Where no GPU is visible
the run says so and passes (the test is labelled cuda).
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
MAX_PROFILE_STEP_RATIO = 1.10

GPU_RTOL = 1e-3
# Relative L2 error of the whole output against onnxruntime float32, per precision. FP16 is not
# checked where the reference outputs lie below FP16's normal range (random weights can make
# them that small), since any FP16 execution flushes them.
GPU_BOUNDS = {"tf32": 5e-3, "fp16": 2e-2, "bf16": 6e-2}
FP16_SMALLEST_NORMAL = 6.2e-5
SHAPE_ONLY_OPS = {"Shape", "Size"}
# Models whose ops may leave the GPU (each such step is listed by kiln inspect).
GPU_FALLBACK_ALLOWED = {"transformer_encoder", "bert_encoder"}

# Steps the optimizer must produce on each model: (step op, op types that must all be among the
# source nodes fused into one such step[, op types that must not be among them]).
EXPECTED_FUSIONS = {
    "resnet18": [("kiln.FusedConv", {"Conv", "BatchNormalization", "Relu"}),
                 ("kiln.FusedConv", {"Conv", "BatchNormalization", "Add", "Relu"})],
    "mobilenet_v2": [("kiln.FusedConv", {"Conv", "BatchNormalization", "Clip"}),
                     ("kiln.FusedConv", {"Conv", "BatchNormalization", "Add"})],
    "transformer_encoder": [("LayerNormalization", {"ReduceMean", "Sub", "Sqrt", "Div"}),
                            ("kiln.FusedMatMul", {"MatMul", "Add", "Erf"}),
                            ("Attention", {"MatMul", "Softmax"})],
    "bert_encoder": [("Attention", {"MatMul", "Softmax"}),
                     ("kiln.FusedMatMul", {"MatMul", "Add"})],
    # masked_fill (Where by the lowest float) folded into the attention as its mask.
    "distilbert_encoder": [("Attention", {"MatMul", "Softmax", "Where"})],
    "roberta_encoder": [("Attention", {"MatMul", "Softmax"}),
                        ("kiln.FusedMatMul", {"MatMul", "Add"})],
    "digits": [("kiln.FusedGemm", {"Gemm", "Relu"})],
    # The layer scale (Mul) and the residual (Add) fold into each block's second MatMul.
    "convnext_tiny": [("kiln.FusedMatMul", {"MatMul", "Add", "Mul"}, {"Erf"}),
                      ("LayerNormalization", {"ReduceMean", "Sub", "Sqrt", "Div"})],
    "yolo_style": [("kiln.FusedConv", {"Conv", "BatchNormalization", "Sigmoid", "Mul"})],
    "deeplabv3_mobilenet": [("kiln.FusedConv", {"Conv", "BatchNormalization", "HardSwish"}),
                            ("kiln.FusedConv", {"Conv", "BatchNormalization", "Add"})],
    "dbnet_style": [("kiln.FusedConv", {"Conv", "BatchNormalization", "Add", "Relu"}),
                    ("kiln.FusedConv", {"Conv", "Add"})],
}

# Fusions of the passes off by default (`kiln passes`), checked in the fixed-opt-in engine.
OPT_IN_FUSIONS = {
    # MobileNetV3's squeeze-excite: both 1x1 convolutions in one step (fuse-channel-mlp).
    "deeplabv3_mobilenet": [("kiln.ChannelMLP", {"Conv", "Relu", "HardSigmoid"})],
    # The embeddings: lookups, their sum and the LayerNorm in one step (fuse-embedding-layernorm).
    "bert_encoder": [("kiln.EmbedLayerNorm", {"Gather", "Add", "LayerNormalization"})],
    "distilbert_encoder": [("kiln.EmbedLayerNorm", {"Gather", "Add", "LayerNormalization"})],
    "roberta_encoder": [("kiln.EmbedLayerNorm", {"Gather", "Add", "LayerNormalization"})],
}


def host_index_arithmetic(step):
    """An integer or bool step whose inputs are all host values computed by the engine or
    constants (index arithmetic, and logic on comparisons of dims)."""
    ins = [i for i in step.get("inputs", []) if i]
    return (step.get("precision") in ("int64", "int32", "bool") and bool(ins)
            and all(i["storage"]["device"] == "cpu" and i["kind"] in ("weight", "activation") for i in ins))


def safe_name(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def load_inputs(models, name, model):
    npz = os.path.join(models, name + ".inputs.npz")
    if os.path.exists(npz):
        with np.load(npz) as d:
            return {k: d[k] for k in d.files}
    return {model.graph.input[0].name: np.load(os.path.join(models, name + ".input.npy"))}


def dynamic_axes(model):
    """Input name -> indices of the dimensions the model leaves dynamic."""
    out = {}
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
    return out


def shape_arg(shapes):
    return ",".join(f"{n}:" + "x".join(str(d) for d in s) for n, s in shapes.items())


class Kiln:
    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir
        self.count = 0

    def call(self, *args):
        p = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=1200)
        if p.returncode != 0:
            raise RuntimeError(f"kiln {args[0]} exited {p.returncode}: {p.stderr.strip()[:600]}")
        return p.stdout

    def run(self, target, inputs, output_names):
        self.count += 1
        d = os.path.join(self.workdir, f"run{self.count}")
        os.makedirs(d)
        args = ["run", target, "--output-dir", os.path.join(d, "out")]
        for n, a in inputs.items():
            f = os.path.join(d, safe_name(n) + ".npy")
            np.save(f, a)
            args += ["--input", f"{n}={f}"]
        self.call(*args)
        return [np.load(os.path.join(d, "out", safe_name(o) + ".npy")) for o in output_names]

    def build(self, model, tag, *flags):
        engine = os.path.join(self.workdir, tag + ".kiln")
        self.call("build", model, "-o", engine, *flags)
        return engine

    def inspect(self, engine):
        return json.loads(self.call("inspect", engine, "--json"))


def compare(what, got, want, rtol=RTOL):
    if got.shape != want.shape:
        return f"{what}: shape {list(got.shape)}, onnxruntime gives {list(want.shape)}", 0.0
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = err > ATOL + rtol * np.abs(want.astype(np.float64))
    if bad.any():
        return (f"{what}: {int(bad.sum())} of {want.size} values outside tolerance ({rtol:g} relative), max abs "
                f"diff {float(err.max()):.3e}"), float(err.max())
    return None, float(err.max()) if err.size else 0.0


def check_fusions(name, info, onnx_ops, tag, expected=None):
    errors = []
    for op, needed, *rest in (EXPECTED_FUSIONS if expected is None else expected).get(name, []):
        excluded = rest[0] if rest else set()
        if not any(st["op"] == op and needed <= (ops := {onnx_ops.get(f, "?") for f in st["fused"]})
                   and not excluded & ops for st in info["steps"]):
            errors.append(f"{tag} engine: no {op} step fusing {sorted(needed)}"
                          + (f" without {sorted(excluded)}" if excluded else ""))
    return errors


def reference(models, name):
    """The model `name`, its inputs, onnxruntime's outputs for them, and the input shapes engines are
    built for: as given (fixed), and a profile from 1 to twice each dynamic axis."""
    path = os.path.join(models, name + ".onnx")
    model = onnx.load(path, load_external_data=False)
    inputs = load_inputs(models, name, model)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    axes = dynamic_axes(model)
    shapes = {n: list(a.shape) for n, a in inputs.items()}
    return (path, model, inputs, sess, [o.name for o in sess.get_outputs()], sess.run(None, inputs), axes, shapes,
            {n: [1 if i in axes[n] else d for i, d in enumerate(s)] for n, s in shapes.items()},
            {n: [2 * d if i in axes[n] else d for i, d in enumerate(s)] for n, s in shapes.items()})


def test_model(kiln, models, name, all_passes, opt_in_passes):
    path, model, inputs, sess, out_names, expected, axes, shapes, min_shapes, max_shapes = reference(models, name)
    onnx_ops = {n.name: n.op_type for n in model.graph.node}
    smallest = {n: a[tuple(slice(0, 1) if i in axes[n] else slice(None) for i in range(a.ndim))]
                for n, a in inputs.items()}
    expected_smallest = sess.run(None, smallest)

    errors, report = [], []

    def check(way, target, feed, want):
        try:
            got = kiln.run(target, feed, out_names)
        except RuntimeError as e:
            errors.append(f"{way}: {e}")
            return
        worst = 0.0
        for o, g, w in zip(out_names, got, want):
            e, m = compare(f"{way} output {o}", g, w)
            worst = max(worst, m)
            if e:
                errors.append(e)
        report.append(f"{way} {worst:.1e}")

    check("imported", path, inputs, expected)
    steps = {}
    profile = ["--min-shapes", shape_arg(min_shapes), "--max-shapes", shape_arg(max_shapes)]
    ways = [("fixed", ["--shapes", shape_arg(shapes)]), ("profile", profile),
            ("profile-raw", profile + [f for p in all_passes for f in ("--disable-pass", p)])]
    if name in OPT_IN_FUSIONS:
        ways.append(("fixed-opt-in", ["--shapes", shape_arg(shapes)]
                     + [f for p in opt_in_passes for f in ("--enable-pass", p)]))
    for way, flags in ways:
        try:
            engine = kiln.build(path, f"{name}-{way}", *flags)
            info = kiln.inspect(engine)
        except RuntimeError as e:
            errors.append(f"{way}: {e}")
            continue
        steps[way] = info["step_count"]
        check(way, engine, inputs, expected)
        if way == "profile":
            check("profile at the smallest shape", engine, smallest, expected_smallest)
        if way in ("fixed", "profile"):
            errors += check_fusions(name, info, onnx_ops, way)
        if way == "fixed-opt-in":
            errors += check_fusions(name, info, onnx_ops, way, OPT_IN_FUSIONS)
    if "fixed" in steps and "profile" in steps and steps["profile"] > MAX_PROFILE_STEP_RATIO * steps["fixed"]:
        errors.append(f"the profile engine has {steps['profile']} steps, more than {MAX_PROFILE_STEP_RATIO:.2f} x "
                      f"the fixed-shape engine's {steps['fixed']}")
    dyn = {n: a for n, a in axes.items() if a}
    print(f"     {name}: max abs diff vs onnxruntime: {', '.join(report)}; steps fixed {steps.get('fixed')}, "
          f"profile {steps.get('profile')}, profile-raw {steps.get('profile-raw')}"
          + (f", fixed-opt-in {steps['fixed-opt-in']}" if "fixed-opt-in" in steps else "")
          + f"; dynamic axes {dyn or 'none'}")
    return errors


def rel_l2(got, want):
    got, want = got.astype(np.float64), want.astype(np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def test_model_gpu(kiln, models, name, opt_in_passes):
    path, model, inputs, _, out_names, expected, _, shapes, min_shapes, max_shapes = reference(models, name)
    onnx_ops = {n.name: n.op_type for n in model.graph.node}
    errors, report = [], []
    # One timing cache for the model's engines: a step timed for one of them (the same op, shapes,
    # precision and layout) is not timed again for another.
    cache = ["--timing-cache", os.path.join(kiln.workdir, f"{name}.timing.json")]
    fixed = ["--device", "cuda", "--shapes", shape_arg(shapes)] + cache
    profile = ["--device", "cuda", "--min-shapes", shape_arg(min_shapes), "--max-shapes", shape_arg(max_shapes)] + cache
    ways = [("fp32 fixed", fixed + ["--no-tf32"], None), ("fp32 profile", profile + ["--no-tf32"], None),
            ("tf32 fixed", fixed, "tf32"), ("fp16 fixed", fixed + ["--fp16"], "fp16"),
            ("bf16 fixed", fixed + ["--bf16"], "bf16")]
    if name in OPT_IN_FUSIONS:
        ways.append(("fp32 fixed opt-in", fixed + ["--no-tf32"] + [f for p in opt_in_passes for f in ("--enable-pass", p)],
                     None))
    for way, flags, bound_key in ways:
        if bound_key == "fp16" and max(float(np.abs(w).max()) for w in expected if w.size) < FP16_SMALLEST_NORMAL:
            report.append(f"{way} n/a (outputs below FP16's range)")
            continue
        try:
            engine = kiln.build(path, f"{name}-{way.replace(' ', '-')}", *flags)
            info = kiln.inspect(engine)
            got = kiln.run(engine, inputs, out_names)
        except RuntimeError as e:
            errors.append(f"{way}: {e}")
            continue
        if way == "fp32 fixed opt-in":
            errors += check_fusions(name, info, onnx_ops, way, OPT_IN_FUSIONS)
        # Shape and Size read only their input's dims, which the host has: such a step on the CPU
        # moves no data and is not a fallback. Nor is integer arithmetic or logic on values the
        # host computed from dims and constants (a profile engine's index computations, e.g. the
        # Range/Mul/Add that PyTorch's exporter writes for as_strided, or the And of comparisons
        # of dims in Hugging Face's masks): it reads no device data.
        cpu_steps = [st["name"] for st in info["steps"]
                     if st.get("backend", "cuda") != "cuda" and st["op"] not in SHAPE_ONLY_OPS
                     and not host_index_arithmetic(st)]
        if cpu_steps and name not in GPU_FALLBACK_ALLOWED:
            errors.append(f"{way}: {len(cpu_steps)} steps on the CPU: {cpu_steps[:5]}")
        worst = 0.0
        for o, g, w in zip(out_names, got, expected):
            if g.shape != w.shape:
                errors.append(f"{way} output {o}: shape {list(g.shape)}, onnxruntime gives {list(w.shape)}")
                continue
            if bound_key is None:
                e, m = compare(f"{way} output {o}", g, w, GPU_RTOL)
                if e:
                    errors.append(e)
                worst = max(worst, m)
            else:
                e = rel_l2(g, w)
                if not e <= GPU_BOUNDS[bound_key]:
                    errors.append(f"{way} output {o}: relative L2 error {e:.3e} above {GPU_BOUNDS[bound_key]}")
                worst = max(worst, e)
        report.append(f"{way} {worst:.1e}" + (f" ({len(cpu_steps)} CPU steps)" if cpu_steps else ""))
    print(f"     {name} on the GPU: {', '.join(report)} (fp32: max abs diff; others: relative L2)")
    return errors


def gpu_visible(binary, models, names):
    """Whether `kiln build --device cuda` finds a GPU (the error says so when it does not)."""
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([binary, "build", os.path.join(models, names[0] + ".onnx"), "-o",
                            os.path.join(d, "probe.kiln"), "--device", "cuda"], capture_output=True, text=True)
    if p.returncode == 0:
        return True, ""
    why = [line for line in p.stderr.splitlines() if "no CUDA device" in line or "no CUDA backend" in line]
    if why:
        return False, why[0].strip()
    raise RuntimeError(f"building {names[0]} for the GPU failed: {p.stderr.strip()[-600:]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--models", required=True, help="folder of <name>.onnx + <name>.input.npy or .inputs.npz")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    names = sorted(f[:-5] for f in os.listdir(a.models) if f.endswith(".onnx"))
    if a.only:
        names = [n for n in names if n in a.only.split(",")]
    if not names:
        print("no models found in", a.models)
        return 1
    if a.device == "cuda":
        visible, why = gpu_visible(a.kiln, a.models, names)
        if not visible:
            print(f"skipped: no GPU for the whole-model GPU tests ({why})")
            return 0
    passes = json.loads(subprocess.run([a.kiln, "passes", "--json"], capture_output=True, text=True,
                                       check=True).stdout)["passes"]
    all_passes = [p["name"] for p in passes]
    opt_in_passes = [p["name"] for p in passes if not p.get("on_by_default", True)]
    failed = 0
    for name in names:
        with tempfile.TemporaryDirectory() as d:
            if a.device == "cuda":
                errors = test_model_gpu(Kiln(a.kiln, d), a.models, name, opt_in_passes)
            else:
                errors = test_model(Kiln(a.kiln, d), a.models, name, all_passes, opt_in_passes)
        for e in errors:
            print(f"FAIL {name}: {e}")
        if not errors:
            print(f"ok   {name}: " + ("GPU engines in every precision match onnxruntime" if a.device == "cuda" else
                                        "imported graph, fixed-shape engine, profile engine and profile engine "
                                        "without passes match onnxruntime"))
        failed += bool(errors)
    print(f"{len(names) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
