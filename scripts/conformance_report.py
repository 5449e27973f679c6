#!/usr/bin/env python3
"""Runs `kiln conformance` on the ONNX node tests and writes docs/conformance.md: the overall
figure (excluded tests count as failed), passed/failed/skipped by operator, and the exclusions
with their reasons.

Usage: conformance_report.py --kiln build/bin/kiln --data build/onnx-tests --exclude FILE --out docs/conformance.md
"""
import argparse
import collections
import datetime
import json
import os
import subprocess
import sys

import onnx


def main_op(model_path):
    m = onnx.load(model_path, load_external_data=False)
    ops = [n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in m.graph.node]
    return ops[0] if len(ops) == 1 else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--exclude", required=True)
    ap.add_argument("--model-exclude", help="exclusion file for the model-level folders")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    node_dir = os.path.join(a.data, "node")
    cmd = [a.kiln, "conformance", node_dir, "--exclude", a.exclude, "--json", "-j", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    r = json.loads(p.stdout)
    status = {}
    for f in r["failures"]:
        status[f["test"]] = ("failed", f["reason"])
    for s in r["skips"]:
        status[s["test"]] = ("skipped", s["reason"])
    tests = sorted(os.listdir(node_dir))
    # A test belongs to the operator of its single node; an expanded (function-body) test or a
    # multi-node test belongs to the operator its name starts with, from the single-node tests.
    op_of = {}
    for t in tests:
        op = main_op(os.path.join(node_dir, t, "model.onnx"))
        if op:
            op_of[t] = op
    prefixes = sorted(((t, op) for t, op in op_of.items()), key=lambda x: -len(x[0]))
    by_op = collections.defaultdict(lambda: [0, 0, 0])
    for t in tests:
        op = op_of.get(t)
        if op is None:
            base = t.split("_expanded")[0]
            op = next((o for name, o in prefixes if base == name or base.startswith(name + "_")), "(multi-node)")
        kind = status.get(t, ("passed", ""))[0]
        by_op[op][{"passed": 0, "failed": 1, "skipped": 2}[kind]] += 1
    total = r["total"]
    passed = r["passed"]
    lines = [
        "# ONNX conformance",
        "",
        f"Kiln's reference backend on the ONNX backend node tests of onnx {onnx.__version__} "
        f"(generated from the package's test-case definitions by `scripts/gen_onnx_tests.py`).",
        "",
        f"**{passed} of {total} node tests pass ({100.0 * passed / total:.1f}%)**; "
        f"{r['failed']} fail and {r['skipped']} are excluded (counted as not passing).",
        "",
        f"Measured {datetime.date.today().isoformat()} with:",
        "",
        "```sh",
        "python3 scripts/gen_onnx_tests.py build/onnx-tests",
        "build/bin/kiln conformance build/onnx-tests/node --exclude tests/conformance/node_exclusions.txt",
        "python3 scripts/conformance_report.py --kiln build/bin/kiln --data build/onnx-tests \\",
        "    --exclude tests/conformance/node_exclusions.txt \\",
        "    --model-exclude tests/conformance/model_exclusions.txt --out docs/conformance.md   # this page",
        "```",
        "",
        "For comparison, ONNX Runtime's public backend scoreboard (onnx 1.22) passes 1,458 of 1,765 node",
        "tests (82.6%).",
        "",
        "## By operator",
        "",
        "Expanded tests (`*_expanded`: the operator's function body in primitive operators) are counted",
        "under the operator they expand.",
        "",
        "| operator | passed | failed | excluded |",
        "|---|---:|---:|---:|",
    ]
    for op in sorted(by_op):
        p_, f_, s_ = by_op[op]
        lines.append(f"| {op} | {p_} | {f_} | {s_} |")
    model_dirs = [os.path.join(a.data, k) for k in ("simple", "pytorch-converted", "pytorch-operator")]
    model_dirs = [d for d in model_dirs if os.path.isdir(d)]
    if model_dirs and a.model_exclude:
        mp = subprocess.run([a.kiln, "conformance", *model_dirs, "--exclude", a.model_exclude, "--json", "-j", "2"],
                            capture_output=True, text=True)
        mr = json.loads(mp.stdout)
        lines += [
            "",
            "## Model-level tests",
            "",
            f"The `simple`, `pytorch-converted` and `pytorch-operator` folders of the same package: "
            f"**{mr['passed']} of {mr['total']} pass**, {mr['failed']} fail, {mr['skipped']} excluded "
            f"(`tests/conformance/model_exclusions.txt`):",
            "",
            "| test | reason |",
            "|---|---|",
        ]
        for s_ in mr["skips"]:
            lines.append(f"| {s_['test']} | {s_['reason'].removeprefix('excluded: ')} |")
        for f_ in mr["failures"]:
            lines.append(f"| {f_['test']} | failed: {f_['reason'][:200]} |")
    # The same suites through the optimizer and with shape profiles around each test's inputs.
    lines += ["", "## Through the optimizer and with shape profiles", "",
              "`--optimize` builds each test into an engine for its input shapes (passes, plan, memory arena); "
              "`--profile` builds it with every input dimension symbolic and a profile around the test's shapes "
              "(the widest that builds: every dim in 1..2d, else the first dim in 1..2d, else every dim in 1..d), "
              "so the passes see symbolic shapes and slots are sized above the shapes that run.", "",
              "| suite | mode | passed | failed | excluded | profiles used |", "|---|---|---:|---:|---:|---|"]
    suites = [("node", [node_dir], a.exclude)]
    if model_dirs and a.model_exclude:
        suites.append(("model-level", model_dirs, a.model_exclude))
    for suite, dirs, excl in suites:
        for mode in ("--optimize", "--profile"):
            q = subprocess.run([a.kiln, "conformance", *dirs, mode, "--exclude", excl, "--json", "-j", "2"],
                               capture_output=True, text=True)
            qr = json.loads(q.stdout)
            used = ", ".join(f"{v} {k}" for k, v in sorted(qr.get("profiles", {}).items(), key=lambda x: -x[1]))
            lines.append(f"| {suite} | `{mode}` | {qr['passed']} | {qr['failed']} | {qr['skipped']} | {used or '-'} |")
    lines += ["", "## Excluded node tests", "", "| test | reason |", "|---|---|"]
    for s in sorted(r["skips"], key=lambda x: x["test"]):
        lines.append(f"| {s['test']} | {s['reason'].removeprefix('excluded: ')} |")
    if r["failures"]:
        lines += ["", "## Failing tests", "", "| test | reason |", "|---|---|"]
        for f in sorted(r["failures"], key=lambda x: x["test"]):
            reason = f["reason"].replace("|", "\\|").replace("\n", " ")[:200]
            lines.append(f"| {f['test']} | {reason} |")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{passed}/{total} passed; wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
