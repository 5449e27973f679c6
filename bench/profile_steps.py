#!/usr/bin/env python3
"""Where a Kiln engine's time goes: per-op totals and the slowest steps of torchvision models.

For each MODEL:BATCH (torchvision, random weights), exports ONNX with this machine's torch, builds
and measures a Kiln engine with `kiln bench --json` (recorded run: the figure to compare), then
again with `--profile` (each step timed alone, so the steps' sum exceeds the recorded run), and
prints the time per op (and layout) and the slowest steps with their precision, layout and
tactic, plus which convolution tactics the build chose.

    python3 bench/profile_steps.py --kiln build/bin/kiln resnet50:256 mobilenet_v2:1:--bf16

A third field adds `kiln bench` flags (comma-separated; the default is --fp16, and `fp32` builds
in FP32). The timing cache of each configuration is kept in the work folder, so the profiled build
reuses the recorded build's tactics. --out writes every figure as JSON.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

import torch
import torchvision

CONV_OPS = ("Conv", "FusedConv")


def export(name, path):
    model = getattr(torchvision.models, name)(weights=None).eval()
    args = dict(input_names=["x"], output_names=["y"], opset_version=17, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    try:
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), path, dynamo=False, **args)
    except TypeError:  # a torch from before the dynamo exporter: its exporter is the TorchScript one
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), path, **args)


def parse(config):
    parts = config.split(":")
    if len(parts) < 2 or not parts[1].isdigit():
        sys.exit(f"profile_steps: '{config}' is not MODEL:BATCH[:FLAG,...]")
    flags = ["--fp16"]
    for f in (parts[2].split(",") if len(parts) > 2 and parts[2] else []):
        if f == "fp32":
            flags = [x for x in flags if x != "--fp16"]
        elif f == "--bf16":
            flags = [x for x in flags if x != "--fp16"] + [f]
        else:
            flags.append(f)
    return parts[0], int(parts[1]), flags


def summarize(profile, top):
    by_op = collections.defaultdict(lambda: [0.0, 0])
    for s in profile:
        key = s["op"] + ("/" + s["layout"] if s["layout"] != "plain" else "")
        by_op[key][0] += s["average_ms"]
        by_op[key][1] += 1
    total = sum(s["average_ms"] for s in profile)
    lines = [f"  {len(profile)} steps, sum of step times {total:.4f} ms"]
    for key, (ms, n) in sorted(by_op.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"  {key:34s} {n:4d} steps {ms:9.4f} ms {100 * ms / total:5.1f}%")
    tactics = collections.Counter(s.get("tactic", "") for s in profile if s["op"] in CONV_OPS)
    if tactics:
        lines.append("  convolution tactics chosen: " + ", ".join(f"{t} x{n}" for t, n in tactics.most_common()))
    lines.append("  slowest steps:")
    for s in sorted(profile, key=lambda s: -s["average_ms"])[:top]:
        lines.append(f"    {s['average_ms']:8.4f} ms  {s['op']:18s} {s['precision']:9s} {s['layout']:6s} "
                     f"{s.get('tactic', ''):16s} {s['name']}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln", required=True, help="the kiln binary")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--out", help="JSON file for every figure")
    ap.add_argument("--workdir", help="folder for the exported models and timing caches (default: a temporary one)")
    ap.add_argument("--top", type=int, default=10, help="how many of the slowest steps to list")
    ap.add_argument("configs", nargs="+", metavar="MODEL:BATCH[:FLAGS]")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="kiln_profile_")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, KILN_CHECK_PLAN="0", KILN_VERIFY_PASSES="0")
    results = {}
    for config in args.configs:
        name, batch, flags = parse(config)
        model = os.path.join(work, f"{name}.onnx")
        if not os.path.exists(model):
            export(name, model)
        cache = os.path.join(work, "cache_" + "".join(c if c.isalnum() else "_" for c in config) + ".json")
        base = [args.kiln, "bench", model, "--device", args.device, "--shapes", f"x:{batch}x3x224x224", "--json",
                "--warmup", "3", "--timing-cache", cache] + flags
        if args.device != "cpu":
            base.append("--no-transfers")
        entry = {}
        for label, extra in (("recorded", ["--iterations", "50" if batch == 1 else "20"]),
                             ("profile", ["--profile", "--iterations", "10"])):
            p = subprocess.run(base + extra, capture_output=True, text=True, env=env)
            if p.returncode:
                print(f"{config} {label}: kiln bench failed (exit {p.returncode}): {p.stderr.strip()[-800:]}")
                entry[label] = {"error": p.stderr[-2000:]}
                continue
            entry[label] = json.loads(p.stdout)
        results[config] = entry
        if "latency_ms" in entry.get("recorded", {}):
            print(f"== {config}: {entry['recorded']['latency_ms']['median']:.4f} ms per run (median)")
        if "profile" in entry.get("profile", {}):
            print(summarize(entry["profile"]["profile"], args.top))
        sys.stdout.flush()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all("error" not in e.get(k, {}) for e in results.values() for k in e) else 1


if __name__ == "__main__":
    sys.exit(main())
