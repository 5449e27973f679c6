#!/usr/bin/env python3
"""Builds every model of the whole-model test set and updates the figures in docs/optimizer.md: for each model the
node count before optimization and the step count after, the planned activation memory against
the naive sum and the lower bound, the passes that fired, the fused steps by kind, and the steps of
an engine built with a shape profile against the fixed-shape engine's.

Usage: optimizer_report.py --kiln build/bin/kiln --models build/models --out docs/optimizer.md
"""
import argparse
import collections
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import onnx


def mib(b):
    return f"{b / 2**20:.2f}"


def model_inputs(models, name, model):
    """The test input of a model: <name>.inputs.npz (every input) or <name>.input.npy (the first)."""
    npz = os.path.join(models, name + ".inputs.npz")
    if os.path.exists(npz):
        with np.load(npz) as d:
            return {k: d[k] for k in d.files}
    return {model.graph.input[0].name: np.load(os.path.join(models, name + ".input.npy"))}


def shape_arg(shapes):
    return ",".join(f"{n}:" + "x".join(str(d) for d in s) for n, s in shapes.items())


def build_and_inspect(kiln, model_path, flags):
    with tempfile.TemporaryDirectory() as d:
        engine = os.path.join(d, "model.kiln")
        p = subprocess.run([kiln, "build", model_path, "-o", engine, *flags], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"build failed: {p.stderr}")
        return json.loads(subprocess.run([kiln, "inspect", engine, "--json"], capture_output=True, text=True,
                                         check=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    names = sorted(f[:-5] for f in os.listdir(a.models) if f.endswith(".onnx"))
    rows, dyn_rows, details = [], [], []
    for name in names:
        path = os.path.join(a.models, name + ".onnx")
        model = onnx.load(path, load_external_data=False)
        inputs = model_inputs(a.models, name, model)
        shapes = {n: list(x.shape) for n, x in inputs.items()}
        dynamic = {vi.name: [i for i, d in enumerate(vi.type.tensor_type.shape.dim) if not d.HasField("dim_value")]
                   for vi in model.graph.input}
        # Fixed: the test input's shapes. Profile: min 1 on every dynamic dimension, max twice the test shape.
        lo = {n: [1 if i in dynamic[n] else d for i, d in enumerate(s)] for n, s in shapes.items()}
        hi = {n: [2 * d if i in dynamic[n] else d for i, d in enumerate(s)] for n, s in shapes.items()}
        try:
            info = build_and_inspect(a.kiln, path, ["--shapes", shape_arg(shapes)])
            prof = build_and_inspect(a.kiln, path, ["--min-shapes", shape_arg(lo), "--max-shapes", shape_arg(hi)])
        except RuntimeError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 1
        m = info["memory"]
        over = 100.0 * (m["activations_planned_bytes"] / m["activations_lower_bound_bytes"] - 1) \
            if m["activations_lower_bound_bytes"] else 0.0
        rows.append(f"| {name} | {info['nodes_before']} | {info['step_count']} | {mib(m['activations_naive_bytes'])} | "
                    f"{mib(m['activations_planned_bytes'])} | {mib(m['activations_lower_bound_bytes'])} | {over:.1f}% | "
                    f"{mib(m['weights_bytes'])} |")
        pm = prof["memory"]
        dims = "; ".join(f"{n} {'x'.join(str(d) for d in lo[n])}..{'x'.join(str(d) for d in hi[n])}"
                         for n in shapes if dynamic[n])
        extra = 100.0 * (prof["step_count"] / info["step_count"] - 1) if info["step_count"] else 0.0
        dyn_rows.append(f"| {name} | {dims or 'none (static model)'} | {info['step_count']} | {prof['step_count']} | "
                        f"{extra:+.0f}% | {mib(pm['activations_planned_bytes'])} | {pm.get('dynamic_slots', 0)} |")
        kinds = collections.Counter(s["op"] for s in info["steps"] if len(s["fused"]) > 1)
        fired = ", ".join(f"{k} {v}" for k, v in sorted(info["passes"].items()))
        steps = ", ".join(f"{v} x {k}" for k, v in sorted(kinds.items()))
        details.append(f"- **{name}**: passes fired: {fired or 'none'}. Fused steps: {steps or 'none'}.")
    today = datetime.date.today().isoformat()
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"""What `kiln build` does to each model of the whole-model test set (FP32, reference backend, the
input shapes of the exported models). Node count is the imported model's (subgraphs included);
steps are what the engine runs. Activation memory: *naive* gives every intermediate tensor its
own buffer, *planned* is the arena the memory planner lays out (lifetimes over the step list,
offsets reused, in-place where an op allows), *lower bound* is the most bytes live at any one step,
which no placement can beat. Over bound = planned / lower bound - 1.

| model | nodes | steps | naive MiB | planned MiB | lower bound MiB | over bound | weights MiB |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{chr(10).join(details)}

With a shape profile (min 1 on every dynamic dimension, max twice the test shape) the dynamic
dimensions stay symbolic through the passes and the arena is sized for the largest shapes. Steps:
what the fixed-shape and the profile engine run; values left out of the arena are those whose size
depends on data.

| model | profile | steps fixed | steps profile | difference | planned MiB at max | outside the arena |
|---|---|---|---|---|---|---|
{chr(10).join(dyn_rows)}

Produced on {today} ({cpu}, {platform.system()}) with:

    /usr/bin/python3 scripts/export_torch_models.py build/models
    /usr/bin/python3 scripts/export_bert.py build/models
    python3 scripts/make_digits_example.py build/models
    python3 scripts/optimizer_report.py --kiln build/bin/kiln --models build/models --out docs/optimizer.md

The per-step view of any model: `kiln inspect MODEL.onnx` (or an engine file); `--json` for tools.
"""
    # The figures replace the part of the document between the markers; the rest is hand-written.
    begin, end = "<!-- figures: begin -->", "<!-- figures: end -->"
    doc = open(a.out).read() if os.path.exists(a.out) else f"# Optimizer\n\n{begin}\n{end}\n"
    if begin not in doc or end not in doc:
        print(f"{a.out} lacks the {begin} / {end} markers", file=sys.stderr)
        return 1
    doc = doc[:doc.index(begin) + len(begin)] + "\n" + text + doc[doc.index(end):]
    with open(a.out, "w") as f:
        f.write(doc)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
