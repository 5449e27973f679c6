#!/usr/bin/env python3
"""Command-line tests for the builder verbs: `kiln passes`, `build`, `inspect`, `bench`, and `run`
on an engine, with good input and bad (corrupt or truncated engines, shapes outside the profile,
unknown passes, unwritable outputs). Bad input must end in a clear error with the documented exit
code and leave no partial engine file behind.
"""
import argparse
import json
import os
import sys
import subprocess
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import cli_common
from cli_common import check, expect_error, run


def small_cnn(path):
    """Conv -> BatchNormalization -> Relu -> Conv + residual -> Relu -> Flatten(Shape-computed) -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.random(4).astype(np.float32) + 0.5, "bn_scale"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bn_bias"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "bn_mean"),
        numpy_helper.from_array(rng.random(4).astype(np.float32) + 0.5, "bn_var"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3, "w2"),
        numpy_helper.from_array(rng.standard_normal((5, 4 * 8 * 8)).astype(np.float32) * 0.1, "fc_w"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc_b"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s2"], name="residual"),
        helper.make_node("Relu", ["s2"], ["r2"], name="relu2"),
        helper.make_node("Shape", ["r2"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="gather", axis=0),
        helper.make_node("Concat", ["batch", "minus_one"], ["flat_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["r2", "flat_shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-tests")
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path


def fixed(dims):
    return {"min": dims, "opt": dims, "max": dims}


def dynamic_defaults(kiln, tmp, model):
    """Dynamic inputs given no shapes are built at 1 per dynamic dim, with a notice on stderr."""
    notice = "input 'x' has dynamic shape batch x 3 x 8 x 8; building for 1x3x8x8"
    want = {"x": fixed([1, 3, 8, 8])}
    engine = os.path.join(tmp, "default.kiln")
    rc, so, se = run(kiln, "build", model, "-o", engine, "--json")
    j = json.loads(so) if rc == 0 else {}
    check("build a dynamic model without shapes", rc == 0 and os.path.exists(engine), f"rc={rc} {se[:300]}")
    check("build announces the default shape", notice in se and "--shapes x:" in se, se[:300])
    check("build --json reports the shapes built for", j.get("shapes") == want, str(j.get("shapes")))
    rc, so, se = run(kiln, "inspect", engine, "--json")
    j = json.loads(so) if rc == 0 else {}
    check("inspect an engine reports its shapes, without a notice", j.get("shapes") == want and "dynamic" not in se,
          f"{j.get('shapes')} {se[:200]}")
    rc, so, se = run(kiln, "inspect", model, "--json")
    j = json.loads(so) if rc == 0 else {}
    check("inspect a dynamic model without shapes", rc == 0 and notice in se and j.get("shapes") == want,
          f"rc={rc} {se[:300]} {j.get('shapes')}")
    rc, so, se = run(kiln, "bench", model, "--iterations", "2", "--warmup", "0", "--json")
    j = json.loads(so) if rc == 0 else {}
    check("bench a dynamic model without shapes", rc == 0 and notice in se and j.get("shapes") == want,
          f"rc={rc} {se[:300]} {j.get('shapes')}")
    rc, so, se = run(kiln, "bench", model, "--duration", "0.3", "--warmup", "1", "--streams", "3", "--json")
    j = json.loads(so).get("streams", {}) if rc == 0 else {}
    check("bench --streams 3 runs three contexts at once", rc == 0 and j.get("contexts") == 3 and
          j.get("iterations", 0) >= 3 and j.get("throughput_per_s", 0) > 0, f"rc={rc} {se[:300]} {j}")
    expect_error(kiln, "bench --streams 0", ["bench", model, "--streams", "0"], 2, ["--streams"])
    # Threads: --threads wins, then OMP_NUM_THREADS; the default is one per physical core.
    rc, so, se = run(kiln, "bench", model, "--iterations", "2", "--warmup", "0", "--threads", "3", "--json")
    check("bench --threads 3 runs on 3 threads", rc == 0 and json.loads(so).get("threads") == 3, f"rc={rc} {se[:300]}")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([kiln, "bench", model, "--iterations", "2", "--warmup", "0", "--json"], capture_output=True,
                       text=True, env=env)
    check("bench takes OMP_NUM_THREADS", p.returncode == 0 and json.loads(p.stdout).get("threads") == 1,
          f"rc={p.returncode} {p.stderr[:300]}")
    # Plan checks (on by default in builds with tests) are off in a measurement unless asked for.
    for value, want in ((None, False), ("1", True), ("0", False)):
        env = {k: v for k, v in os.environ.items() if k != "KILN_CHECK_PLAN"}
        if value is not None:
            env["KILN_CHECK_PLAN"] = value
        p = subprocess.run([kiln, "bench", model, "--iterations", "2", "--warmup", "0", "--json"],
                           capture_output=True, text=True, env=env)
        check(f"bench with KILN_CHECK_PLAN={value} measures with plan checks {'on' if want else 'off'}",
              p.returncode == 0 and json.loads(p.stdout).get("plan_checks") is want, f"rc={p.returncode} {p.stderr[:300]}")
    expect_error(kiln, "run --threads 0", ["run", model, "--optimize", "--threads", "0"], 2, ["--threads"])
    rc, so, se = run(kiln, "run", model, "--optimize", "--json")
    check("run --optimize a dynamic model without shapes", rc == 0 and json.loads(so)["outputs"][0]["shape"] == [1, 5]
          and "input 'x' has dynamic shape batch x 3 x 8 x 8; running with 1x3x8x8" in se, f"rc={rc} {se[:300]}")
    rc, so, se = run(kiln, "build", model, "-o", engine, "--shapes", "x:2x3x8x8", "--json")
    j = json.loads(so) if rc == 0 else {}
    check("build --json with --shapes", j.get("shapes", {}).get("x", {}).get("opt") == [2, 3, 8, 8] and "dynamic" not in se,
          f"{j.get('shapes')} {se[:200]}")
    rc, so, se = run(kiln, "inspect", model, "--min-shapes", "x:1x3x8x8", "--opt-shapes", "x:2x3x8x8", "--max-shapes",
                     "x:4x3x8x8", "--json")
    j = json.loads(so) if rc == 0 else {}
    check("inspect --json with a profile", j.get("shapes") == {"x": {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8],
                                                                   "max": [4, 3, 8, 8]}}, str(j.get("shapes")))

    static = cli_common.gather_model(os.path.join(tmp, "static_gather.onnx"), ids_shape=[2, 3])
    rc, so, se = run(kiln, "build", static, "-o", os.path.join(tmp, "static.kiln"), "--json")
    j = json.loads(so) if rc == 0 else {}
    check("build --json reports a static input's shape", j.get("shapes") == {"ids": fixed([2, 3])} and "dynamic" not in se,
          f"{j.get('shapes')} {se[:200]}")

    # Dims the model names alike ('batch', 'seq') follow the shapes given for another input.
    two = cli_common.gather_model(os.path.join(tmp, "two_inputs.onnx"), with_mask=True)
    rc, so, se = run(kiln, "inspect", two, "--shapes", "ids:2x5", "--json")
    j = json.loads(so) if rc == 0 else {}
    check("an input left out follows the named dims of a fixed shape", j.get("shapes", {}).get("mask", {}).get("max")
          == [2, 5] and "input 'mask' has dynamic shape batch x seq; building for 2x5" in se, f"{j.get('shapes')} {se[:300]}")
    rc, so, se = run(kiln, "inspect", two, "--min-shapes", "ids:1x5", "--max-shapes", "ids:4x5", "--json")
    j = json.loads(so) if rc == 0 else {}
    check("an input left out follows the named dims of a profile", j.get("shapes", {}).get("mask") ==
          {"min": [1, 5], "opt": [4, 5], "max": [4, 5]} and "min 1x5, opt 4x5, max 4x5" in se, f"{j.get('shapes')} {se[:300]}")

    norank = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "norank",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    norankp = os.path.join(tmp, "norank.onnx")
    onnx.save(helper.make_model(norank), norankp)
    bad = os.path.join(tmp, "norank.kiln")
    for verb in (["build", norankp, "-o", bad], ["inspect", norankp], ["bench", norankp]):
        expect_error(kiln, f"{verb[0]}: an input of unknown rank needs shapes", verb, 2,
                     ["'x'", "no declared shape", "--shapes x:"], absent=bad)
    rc, so, se = run(kiln, "build", norankp, "-o", bad, "--shapes", "x:3x2", "--json")
    j = json.loads(so) if rc == 0 else {}
    check("an input of unknown rank builds with --shapes", j.get("shapes", {}).get("x", {}).get("opt") == [3, 2],
          f"rc={rc} {se[:300]}")


def bench_inputs(kiln, tmp):
    """bench --input takes the data from a file; --int-range bounds the random integers."""
    gat = cli_common.gather_model(os.path.join(tmp, "bench_gather.onnx"))
    fast = ["--iterations", "2", "--warmup", "1", "--json"]
    rc, so, se = run(kiln, "bench", gat, *fast)
    check("bench: random indices stay inside a 2-row table by default", rc == 0, f"rc={rc} {se[:300]}")
    wide = ["--int-range", "0,100", "--shapes", "ids:4x16"]
    expect_error(kiln, "bench: --int-range 0,100 overruns the table", ["bench", gat, *fast, *wide], 3,
                 ["embed", "out of range", "input 'ids' held random integers in 0..100", "--input NAME=FILE.npy"])
    np.save(os.path.join(tmp, "ids.npy"), np.array([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]], np.int64))
    rc, so, se = run(kiln, "bench", gat, *fast, "--int-range", "0,100", "--input", f"ids={tmp}/ids.npy")
    j = json.loads(so) if rc == 0 else {}
    check("bench --input uses the file, not random data", rc == 0, f"rc={rc} {se[:300]}")
    check("bench builds a model for the --input file's shape", j.get("shapes") == {"ids": fixed([2, 5])}
          and "dynamic" not in se, f"{j.get('shapes')} {se[:300]}")
    np.save(os.path.join(tmp, "ids_bad.npy"), np.array([[0, 7]], np.int64))
    rc, so, se = run(kiln, "bench", gat, *fast, "--input", f"ids={tmp}/ids_bad.npy")
    check("bench --input with a bad index fails without blaming random data", rc == 3 and "out of range" in se
          and "random" not in se, f"rc={rc} {se[:300]}")
    two = cli_common.gather_model(os.path.join(tmp, "bench_two.onnx"), with_mask=True)
    rc, so, se = run(kiln, "bench", two, *fast, "--input", f"ids={tmp}/ids.npy")
    j = json.loads(so) if rc == 0 else {}
    check("bench: a random input follows the file's named dims", j.get("shapes", {}).get("mask", {}).get("opt") == [2, 5],
          f"{j.get('shapes')} {se[:300]}")
    engine = os.path.join(tmp, "gather_profile.kiln")
    rc, _, se = run(kiln, "build", gat, "-o", engine, "--min-shapes", "ids:1x1", "--max-shapes", "ids:4x8")
    check("build the gather model with a profile", rc == 0, f"rc={rc} {se[:300]}")
    rc, so, se = run(kiln, "bench", engine, *fast, "--int-range", "0,100", "--input", f"ids={tmp}/ids.npy")
    check("bench --input on an engine", rc == 0, f"rc={rc} {se[:300]}")
    sc = json.loads(so).get("shape_change", {}) if rc == 0 else {}
    # The change of shape to the profile's min keeps the leading block of the given data, so it
    # runs where random integers in 0..100 would overrun the table.
    check("bench: a shape change on given data shrinks it", sc.get("to") == {"ids": [1, 1]} and "error" not in sc
          and sc.get("prepare_ms", -1) >= 0, str(sc))
    expect_error(kiln, "bench: --int-range 0,100 on an engine", ["bench", engine, *fast, "--int-range", "0,100"], 3,
                 ["embed", "'ids'", "0..100", "--input"])
    expect_error(kiln, "bench --input names no input", ["bench", gat, "--input", f"nope={tmp}/ids.npy"], 2, ["'nope'"])
    expect_error(kiln, "bench --input names no input of an engine", ["bench", engine, "--input", f"nope={tmp}/ids.npy"],
                 2, ["'nope'"])
    expect_error(kiln, "bench --input of a missing file", ["bench", gat, "--input", f"ids={tmp}/none.npy"], 3,
                 ["'ids'", "none.npy"])
    for bad in ("5", "3,1", "x,y"):
        why = "is above hi" if bad == "3,1" else "LO,HI"
        expect_error(kiln, f"bench --int-range {bad!r}", ["bench", gat, f"--int-range={bad}"], 2, ["--int-range", bad, why])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    kiln = ap.parse_args().kiln
    tmp = tempfile.mkdtemp(prefix="kiln_engine_cli_")
    model = small_cnn(os.path.join(tmp, "small_cnn.onnx"))
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(os.path.join(tmp, "x.npy"), x)

    # --- passes -----------------------------------------------------------------------------
    rc, so, se = run(kiln, "passes", "--json")
    names = [p["name"] for p in json.loads(so)["passes"]] if rc == 0 else []
    check("passes --json", rc == 0 and "fold-constants" in names and "fuse-bias-activation" in names, so[:300])
    rc, so, se = run(kiln, "passes")
    check("passes text", rc == 0 and all(n in so for n in names), so[:300])

    # --- build / run / inspect round trip ---------------------------------------------------
    engine = os.path.join(tmp, "small_cnn.kiln")
    rc, so, se = run(kiln, "build", model, "-o", engine, "--shapes", "x:2x3x8x8", "--json")
    check("build", rc == 0 and os.path.exists(engine), f"rc={rc} {se[:300]}")
    summary = json.loads(so) if rc == 0 else {}
    check("build --json", summary.get("engine") == engine and summary.get("nodes_before") == 11
          and summary.get("step_count", 99) < 11 and "memory" in summary and "passes" in summary, so[:500])
    check("build prints plain progress lines when not on a terminal", "kiln:" in se and "\r" not in se, se[:300])

    ref_dir, eng_dir = os.path.join(tmp, "ref"), os.path.join(tmp, "eng")
    rc1, _, se1 = run(kiln, "run", model, "--input", f"x={tmp}/x.npy", "--output-dir", ref_dir)
    rc2, _, se2 = run(kiln, "run", engine, "--input", f"x={tmp}/x.npy", "--output-dir", eng_dir)
    check("run model and engine", rc1 == 0 and rc2 == 0, f"{se1[:200]} {se2[:200]}")
    if rc1 == 0 and rc2 == 0:
        a, b = np.load(os.path.join(ref_dir, "y.npy")), np.load(os.path.join(eng_dir, "y.npy"))
        check("engine output equals the model's", a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-6),
              f"max diff {np.abs(a - b).max()}")
    rc, so, se = run(kiln, "run", model, "--optimize", "--input", f"x={tmp}/x.npy", "--json")
    check("run --optimize", rc == 0 and json.loads(so)["outputs"][0]["shape"] == [2, 5], se[:300])

    rc, so, se = run(kiln, "inspect", engine, "--json")
    info = json.loads(so) if rc == 0 else {"steps": []}
    keys = {"name", "op", "fused", "precision", "layout", "tactic", "inputs", "outputs"}
    check("inspect --json steps", rc == 0 and info["steps"] and all(keys <= set(s) for s in info["steps"]), so[:300])
    fused = [set(s["fused"]) for s in info["steps"] if s["op"] == "kiln.FusedConv"]
    check("inspect shows conv+bn+relu fused", {"conv1", "bn1", "relu1"} in fused, str(fused))
    check("inspect shows conv+residual+relu fused", {"conv2", "residual", "relu2"} in fused, str(fused))
    check("inspect shows the shape chain folded", not any(s["op"] in ("Shape", "Gather", "Concat") for s in info["steps"]),
          str([s["op"] for s in info["steps"]]))
    mem = info.get("memory", {})
    check("inspect memory figures", mem.get("activations_lower_bound_bytes", -1) > 0
          and mem["activations_lower_bound_bytes"] <= mem["activations_planned_bytes"] <= mem["activations_naive_bytes"]
          and mem.get("weights_bytes", 0) > 0, str(mem))
    check("inspect passes fired", info.get("passes", {}).get("fold-batchnorm", 0) >= 1, str(info.get("passes")))
    rc, so, se = run(kiln, "inspect", engine)
    check("inspect text", rc == 0 and "conv1" in so and "memory:" in so, so[:300])
    rc, so, se = run(kiln, "inspect", model, "--shapes", "x:1x3x8x8", "--json")
    check("inspect an ONNX model", rc == 0 and len(json.loads(so)["steps"]) == len(info["steps"]), se[:300])
    rc, so, se = run(kiln, "inspect", model, "--shapes", "x:1x3x8x8", "--disable-pass", "fold-batchnorm", "--json")
    ops = [s["op"] for s in json.loads(so)["steps"]] if rc == 0 else []
    check("--disable-pass keeps BatchNormalization", "BatchNormalization" in ops, str(ops))

    # --- precision per layer and the FP16 range check's samples ------------------------------
    rc, so, se = run(kiln, "inspect", model, "--shapes", "x:1x3x8x8", "--layer-precision", "relu1=fp32", "--json")
    forced = [s for s in json.loads(so)["steps"] if "relu1" in s["fused"]] if rc == 0 else []
    check("--layer-precision sets the fused step holding the node", len(forced) == 1
          and forced[0]["precision"] == "float" and forced[0].get("precision_reason") == "set by --layer-precision",
          f"rc={rc} {forced} {se[:300]}")
    expect_error(kiln, "--layer-precision without a precision", ["build", model, "-o", os.path.join(tmp, "lp.kiln"),
                 "--layer-precision", "relu1"], 2, ["--layer-precision", "NAME=fp32", "relu1"],
                 absent=os.path.join(tmp, "lp.kiln"))
    expect_error(kiln, "--layer-precision naming no layer", ["build", model, "-o", os.path.join(tmp, "lp.kiln"),
                 "--layer-precision", "no_such_layer=fp32"], 3, ["no_such_layer", "kiln inspect"],
                 absent=os.path.join(tmp, "lp.kiln"))
    expect_error(kiln, "--calib-data without --fp16", ["build", model, "-o", os.path.join(tmp, "cd.kiln"),
                 "--calib-data", tmp], 2, ["--calib-data", "--fp16"], absent=os.path.join(tmp, "cd.kiln"))
    empty = os.path.join(tmp, "no_samples")
    os.makedirs(empty, exist_ok=True)
    expect_error(kiln, "--calib-data without the input's file", ["build", model, "-o", os.path.join(tmp, "cd.kiln"),
                 "--fp16", "--calib-data", empty], 3, ["x.npy", "input 'x'"], absent=os.path.join(tmp, "cd.kiln"))
    rc, so, se = run(kiln, "build", model, "-o", os.path.join(tmp, "cd.kiln"), "--shapes", "x:2x3x8x8", "--fp16",
                     "--calib-data", tmp, "--json")
    check("--fp16 --calib-data DIR builds from DIR/x.npy", rc == 0, f"rc={rc} {se[:300]}")

    # --- dump after a pass ------------------------------------------------------------------
    dump_dir = os.path.join(tmp, "dumps")
    rc, so, se = run(kiln, "build", model, "-o", os.path.join(tmp, "d.kiln"), "--shapes", "x:1x3x8x8", "--dump-after",
                     "fold-constants", "--dump-dir", dump_dir)
    dumps = sorted(os.listdir(dump_dir)) if os.path.isdir(dump_dir) else []
    check("--dump-after writes ONNX", rc == 0 and dumps and dumps[0].endswith(".onnx"), f"{dumps} {se[:300]}")
    if dumps:
        dumped = onnx.load(os.path.join(dump_dir, dumps[0]))
        check("dumped graph has the shape chain folded", not any(n.op_type == "Shape" for n in dumped.graph.node),
              str([n.op_type for n in dumped.graph.node]))

    # --- bench ------------------------------------------------------------------------------
    times = os.path.join(tmp, "times.json")
    rc, so, se = run(kiln, "bench", engine, "--iterations", "7", "--warmup", "1", "--json", "--export-times", times)
    b = json.loads(so) if rc == 0 else {}
    lat = b.get("latency_ms", {})
    check("bench --json", rc == 0 and b.get("throughput_per_s", 0) > 0 and b.get("iterations") == 7
          and lat.get("min", -1) <= lat.get("median", -2) <= lat.get("max", -3) and "p99" in lat and "p90" in lat, so[:400])
    t = json.load(open(times)) if os.path.exists(times) else []
    check("bench --export-times", len(t) == 7 and all("latency_ms" in e for e in t), str(t)[:200])
    rc, so, se = run(kiln, "bench", model, "--shapes", "x:1x3x8x8", "--duration", "0.2", "--profile")
    check("bench a model with --duration and --profile", rc == 0 and "throughput" in so and "conv1" in so, so[:300] + se[:300])
    expect_error(kiln, "bench with --iterations and --duration", ["bench", engine, "--iterations", "3", "--duration", "1"],
                 2, [])

    # --- dynamic shapes ---------------------------------------------------------------------
    dyn = os.path.join(tmp, "dyn.kiln")
    rc, so, se = run(kiln, "build", model, "-o", dyn, "--min-shapes", "x:1x3x8x8", "--opt-shapes", "x:2x3x8x8",
                     "--max-shapes", "x:4x3x8x8")
    check("build with a profile", rc == 0, se[:300])
    for batch in (1, 3, 4):
        rc, so, se = run(kiln, "run", dyn, "--shape", f"x={batch}x3x8x8", "--json")
        check(f"profile batch {batch}", rc == 0 and json.loads(so)["outputs"][0]["shape"] == [batch, 5], se[:300])
    expect_error(kiln, "shape above the profile", ["run", dyn, "--shape", "x=5x3x8x8"], 3, ["'x'", "5x3x8x8", "4x3x8x8"])
    expect_error(kiln, "shape of the wrong rank", ["run", dyn, "--shape", "x=1x3x8"], 3, ["'x'"])

    dynamic_defaults(kiln, tmp, model)
    bench_inputs(kiln, tmp)

    # --- bad build options ------------------------------------------------------------------
    bad = os.path.join(tmp, "bad.kiln")
    expect_error(kiln, "unknown pass", ["build", model, "-o", bad, "--disable-pass", "nope"], 2, ["nope"], absent=bad)
    expect_error(kiln, "--shapes names no input", ["build", model, "-o", bad, "--shapes", "nope:1x3x8x8"], 2, ["nope"], absent=bad)
    expect_error(kiln, "min above max", ["build", model, "-o", bad, "--min-shapes", "x:4x3x8x8", "--max-shapes",
                                         "x:2x3x8x8"], 2, ["'x'"], absent=bad)
    expect_error(kiln, "malformed --shapes", ["build", model, "-o", bad, "--shapes", "x=1x3x8x8"], 2, ["--shapes"], absent=bad)
    expect_error(kiln, "unwritable output", ["build", model, "-o", os.path.join(tmp, "no", "dir", "e.kiln"), "--shapes",
                                             "x:1x3x8x8"], 1, ["e.kiln"], absent=os.path.join(tmp, "no", "dir", "e.kiln"))
    expect_error(kiln, "build an engine again", ["build", engine, "-o", bad], 2, ["engine"], absent=bad)
    rc, so, se = run(kiln, "build", model, "-o", bad, "--shapes", "x:1x3x8x8", "--device", "cuda")
    check("cuda build without a CUDA backend fails cleanly", rc in (1, 2) and "cuda" in se.lower() and not os.path.exists(bad),
          f"rc={rc} {se[:300]}")
    expect_error(kiln, "conformance on a device that is not one", ["conformance", tmp, "--device", "gpu"], 2, ["gpu"])
    rc, so, se = run(kiln, "conformance", tmp, "--device", "cuda")
    check("conformance --device cuda without a GPU is one clear error",
          rc == 0 or (rc == 1 and "cuda" in se.lower() and se.lower().count("error") == 1), f"rc={rc} {se[:300]}")

    # --- bad engine files -------------------------------------------------------------------
    data = open(engine, "rb").read()
    trunc = os.path.join(tmp, "truncated.kiln")
    open(trunc, "wb").write(data[: len(data) // 2])
    expect_error(kiln, "truncated engine", ["run", trunc], 3, ["truncated.kiln", "truncated"])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x5A
    corrupt = os.path.join(tmp, "corrupt.kiln")
    open(corrupt, "wb").write(bytes(flipped))
    expect_error(kiln, "corrupt engine", ["inspect", corrupt], 3, ["corrupt.kiln", "checksum"])
    notengine = os.path.join(tmp, "not_engine.kiln")
    open(notengine, "wb").write(b"\x00" * 256)
    expect_error(kiln, "not an engine", ["bench", notengine], 3, ["not_engine.kiln", "not a kiln engine"])

    return cli_common.summary()


if __name__ == "__main__":
    sys.exit(main())
