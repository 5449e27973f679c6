#!/usr/bin/env python3
"""Builds every model of the whole-model test set and updates the figures in docs/optimizer.md: for each model the
node count before optimization and the step count after, the planned activation memory against
the naive sum and the lower bound, the passes that fired, and the fused steps by kind.

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    names = sorted(f[:-5] for f in os.listdir(a.models) if f.endswith(".onnx"))
    rows, details = [], []
    for name in names:
        with tempfile.TemporaryDirectory() as d:
            engine = os.path.join(d, name + ".kiln")
            # Build for the shape of the model's test input (the digits model has a dynamic batch).
            x = np.load(os.path.join(a.models, name + ".input.npy"))
            in_name = onnx.load(os.path.join(a.models, name + ".onnx"), load_external_data=False).graph.input[0].name
            shapes = f"{in_name}:" + "x".join(str(d) for d in x.shape)
            p = subprocess.run([a.kiln, "build", os.path.join(a.models, name + ".onnx"), "-o", engine, "--shapes", shapes],
                               capture_output=True, text=True)
            if p.returncode != 0:
                print(f"{name}: build failed: {p.stderr}", file=sys.stderr)
                return 1
            info = json.loads(subprocess.run([a.kiln, "inspect", engine, "--json"], capture_output=True, text=True,
                                             check=True).stdout)
        m = info["memory"]
        over = 100.0 * (m["activations_planned_bytes"] / m["activations_lower_bound_bytes"] - 1) \
            if m["activations_lower_bound_bytes"] else 0.0
        rows.append(f"| {name} | {info['nodes_before']} | {info['step_count']} | {mib(m['activations_naive_bytes'])} | "
                    f"{mib(m['activations_planned_bytes'])} | {mib(m['activations_lower_bound_bytes'])} | {over:.1f}% | "
                    f"{mib(m['weights_bytes'])} |")
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

Produced on {today} ({cpu}, {platform.system()}) with:

    /usr/bin/python3 scripts/export_torch_models.py build/models
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
