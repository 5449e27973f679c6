#!/usr/bin/env python3
"""Command-line tests for `kiln`: good runs and every kind of bad input.

Each bad input must end in a clear error that names the file, node or tensor at fault, the
documented exit code (2 usage, 3 invalid model or input), no crash, and no partial output file.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import cli_common
from cli_common import check, expect_error, run


def save(model, path, check_model=False):
    if check_model:
        onnx.checker.check_model(model)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def add_relu(opset=17, shape=(2, 3), dtype=TensorProto.FLOAT):
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["z"], name="add"), helper.make_node("Relu", ["z"], ["out/relu:0"], name="relu")],
        "g",
        [helper.make_tensor_value_info("x", dtype, shape), helper.make_tensor_value_info("y", dtype, shape)],
        [helper.make_tensor_value_info("out/relu:0", dtype, shape)],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="kiln-tests")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    kiln = ap.parse_args().kiln
    tmp = tempfile.mkdtemp(prefix="kiln_cli_")
    good = save(add_relu(), os.path.join(tmp, "good.onnx"), check_model=True)

    # --- good runs --------------------------------------------------------------------------
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 3
    y = np.full((2, 3), 0.5, dtype=np.float32)
    np.save(os.path.join(tmp, "x.npy"), x)
    np.save(os.path.join(tmp, "y.npy"), y)
    out = os.path.join(tmp, "out")
    rc, so, se = run(kiln, "run", good, "--input", f"x={tmp}/x.npy", "--input", f"y={tmp}/y.npy", "--output-dir", out, "--json")
    check("run ok", rc == 0, f"rc={rc} {se}")
    if rc == 0:
        saved = np.load(os.path.join(out, "out_relu_0.npy"))
        check("run output value", np.allclose(saved, np.maximum(x + y, 0)), str(saved))
        summary = json.loads(so)["outputs"][0]
        check("run summary", summary["shape"] == [2, 3] and abs(summary["max"] - 2.5) < 1e-6, str(summary))
    rc, so, se = run(kiln, "run", good)
    check("run with random inputs", rc == 0 and "out/relu:0" in so, f"rc={rc} {se}")
    rc1, so1, _ = run(kiln, "run", good, "--seed", "7", "--json")
    rc2, so2, _ = run(kiln, "run", good, "--seed", "7", "--json")
    check("random inputs are seeded", rc1 == 0 and so1 == so2, so1[:200])
    rc, so, se = run(kiln, "info", good, "--json")
    info = json.loads(so) if rc == 0 else {}
    check("info json", rc == 0 and info.get("ops") == {"Add": 1, "Relu": 1} and info["inputs"][0]["shape"] == [2, 3], so[:300])
    check("info has no unsupported ops", rc == 0 and info.get("unsupported") == [], so[:300])

    dyn = add_relu(shape=("batch", 3))
    dynp = save(dyn, os.path.join(tmp, "dyn.onnx"))
    rc, so, se = run(kiln, "run", dynp, "--json")
    outs = json.loads(so)["outputs"] if rc == 0 else []
    check("dynamic dims without --shape run at 1", outs and outs[0]["shape"] == [1, 3], f"rc={rc} {se[:300]}")
    check("the default shape is announced on stderr", all(
        f"input '{n}' has dynamic shape batch x 3; running with 1x3" in se for n in ("x", "y")) and "--shape" in se, se[:400])
    rc, so, se = run(kiln, "run", dynp, "--shape", "x=4x3", "--shape", "y=4x3", "--json")
    check("dynamic with --shape", rc == 0 and json.loads(so)["outputs"][0]["shape"] == [4, 3], se)
    check("no notice when every shape is given", "dynamic shape" not in se, se[:300])
    rc, so, se = run(kiln, "run", dynp, "--shape", "x=4x3", "--json")
    check("an input left out follows the batch size another input gives", rc == 0
          and json.loads(so)["outputs"][0]["shape"] == [4, 3] and "input 'y'" in se and "running with 4x3" in se,
          f"rc={rc} {se[:300]}")
    norank = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "norank",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    norankp = save(helper.make_model(norank), os.path.join(tmp, "norank.onnx"))
    expect_error(kiln, "an input of unknown rank needs a shape", ["run", norankp], 2, ["'x'", "no declared shape", "--shape"])
    expect_error(kiln, "an input of unknown rank needs a shape (--optimize)", ["run", norankp, "--optimize"], 2,
                 ["'x'", "no declared shape"])

    # --- random integers --------------------------------------------------------------------
    gat = cli_common.gather_model(os.path.join(tmp, "gather.onnx"))
    for extra in ([], ["--optimize"]):
        what = " ".join(["run"] + extra)
        rc, so, se = run(kiln, "run", gat, *extra, "--json")
        check(f"{what}: random indices stay inside a 2-row table by default", rc == 0
              and json.loads(so)["outputs"][0]["shape"] == [1, 1, 4], f"rc={rc} {se[:300]}")
        expect_error(kiln, f"{what}: --int-range 0,100 overruns the table", ["run", gat, *extra, "--int-range", "0,100",
                     "--shape", "ids=4x16"], 3, ["embed", "out of range", "input 'ids' held random integers in 0..100",
                     "--input NAME=FILE.npy", "--int-range"])
    np.save(os.path.join(tmp, "bad_ids.npy"), np.array([[5]], np.int64))
    rc, _, se = run(kiln, "run", gat, "--input", f"ids={tmp}/bad_ids.npy")
    check("an index from a file keeps the plain message", rc == 3 and "out of range" in se and "random" not in se,
          f"rc={rc} {se[:300]}")
    ident = helper.make_graph([helper.make_node("Identity", ["i"], ["o"], name="id")], "ident",
                              [helper.make_tensor_value_info("i", TensorProto.INT32, [500])],
                              [helper.make_tensor_value_info("o", TensorProto.INT32, [500])])
    identp = save(helper.make_model(ident), os.path.join(tmp, "ident.onnx"))
    rc, so, se = run(kiln, "run", identp, "--json")
    o = json.loads(so)["outputs"][0] if rc == 0 else {}
    check("random integers are 0 or 1 by default", o.get("min") == 0 and o.get("max") == 1, str(o))
    rc, so, se = run(kiln, "run", identp, "--int-range", "-3,7", "--json")
    o = json.loads(so)["outputs"][0] if rc == 0 else {}
    check("--int-range sets the random integers' range", o.get("min") == -3 and o.get("max") == 7, f"{o} {se[:200]}")
    rc, so, se = run(kiln, "run", identp, "--int-range", "4,4", "--json")
    o = json.loads(so)["outputs"][0] if rc == 0 else {}
    check("--int-range of one value", o.get("min") == 4 and o.get("max") == 4, f"{o} {se[:200]}")
    for bad in ("5", "3,1", "a,b", "1,", ",1", "1,2,3", "0x1,2", "1,99999999999999999999"):
        why = "is above hi" if bad == "3,1" else "LO,HI"
        expect_error(kiln, f"--int-range {bad!r}", ["run", identp, f"--int-range={bad}"], 2, ["--int-range", bad, why])
    expect_error(kiln, "--int-range beyond the input's type", ["run", identp, "--int-range", "0,3000000000"], 2,
                 ["--int-range", "'i'", "int32"])

    # --- bad model files --------------------------------------------------------------------
    empty = os.path.join(tmp, "empty.onnx")
    open(empty, "wb").close()
    expect_error(kiln, "empty file", ["run", empty], 3, ["empty.onnx", "empty"])
    data = open(good, "rb").read()
    trunc = os.path.join(tmp, "truncated.onnx")
    open(trunc, "wb").write(data[: len(data) // 2])
    expect_error(kiln, "truncated file", ["run", trunc], 3, ["truncated.onnx", "truncated or corrupt"])
    corrupt = os.path.join(tmp, "corrupt.onnx")
    open(corrupt, "wb").write(bytes((b * 37 + 11) % 256 for b in range(300)))
    expect_error(kiln, "corrupt file", ["run", corrupt], 3, ["corrupt.onnx"])
    expect_error(kiln, "missing file", ["run", os.path.join(tmp, "nope.onnx")], 3, ["nope.onnx", "no such file"])
    expect_error(kiln, "info on corrupt file", ["info", corrupt], 3, ["corrupt.onnx"])

    cyc = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second")],
        "cyc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])
    expect_error(kiln, "cycle", ["run", save(helper.make_model(cyc), os.path.join(tmp, "cycle.onnx"))], 3, ["cycle", "first"])

    miss = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"], name="add_bias")],
        "miss", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    expect_error(kiln, "missing initializer", ["run", save(helper.make_model(miss), os.path.join(tmp, "missing.onnx"))], 3,
                 ["'bias'", "add_bias"])

    unk = helper.make_graph(
        [helper.make_node("Frobnicate", ["x"], ["y"], name="frob")],
        "unk", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    unkp = save(helper.make_model(unk), os.path.join(tmp, "unknown_op.onnx"))
    expect_error(kiln, "unknown op", ["run", unkp], 3, ["Frobnicate", "frob"])
    rc, so, se = run(kiln, "info", unkp, "--json")
    check("info lists unknown op", rc == 0 and json.loads(so)["unsupported"][0]["node"] == "frob", so[:300])

    dom = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="custom_relu", domain="com.example")],
        "dom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    expect_error(kiln, "unknown domain", ["run", save(helper.make_model(dom), os.path.join(tmp, "domain.onnx"))], 3,
                 ["com.example", "custom_relu"])
    dom_m = helper.make_model(dom, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    expect_error(kiln, "unknown op in an imported domain", ["run", save(dom_m, os.path.join(tmp, "domain2.onnx"))], 3,
                 ["com.example", "custom_relu"])

    bad_attr = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["y"], name="cat", axis="zero")],
        "attr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    expect_error(kiln, "attribute of the wrong type", ["run", save(helper.make_model(bad_attr), os.path.join(tmp, "attr.onnx"))],
                 3, ["cat", "'axis'", "string", "int"])

    mism = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add_w")],
        "mism", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "w")])
    expect_error(kiln, "type mismatch between inputs", ["run", save(helper.make_model(mism), os.path.join(tmp, "mismatch.onnx"))],
                 3, ["add_w"])

    huge = add_relu(shape=(2**31, 2**31))
    hugep = save(huge, os.path.join(tmp, "huge.onnx"))
    expect_error(kiln, "absurd declared size", ["run", hugep], 3, ["'x'", "exceeds"])
    init_huge = onnx.TensorProto()
    init_huge.name = "w"
    init_huge.data_type = TensorProto.FLOAT
    init_huge.dims.extend([2**62])
    hi = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"], name="add_w")],
        "hi", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [init_huge])
    expect_error(kiln, "absurd initializer size", ["run", save(helper.make_model(hi), os.path.join(tmp, "huge_init.onnx"))],
                 3, ["'w'", "exceeds"])

    # --- bad inputs -------------------------------------------------------------------------
    np.save(os.path.join(tmp, "x_int.npy"), x.astype(np.int32))
    outdir = os.path.join(tmp, "out_bad")
    expect_error(kiln, "npy of the wrong dtype", ["run", good, "--input", f"x={tmp}/x_int.npy", "--output-dir", outdir], 3,
                 ["'x'", "int32", "float"], outdir)
    np.save(os.path.join(tmp, "x_shape.npy"), np.zeros((3, 2), np.float32))
    expect_error(kiln, "npy of the wrong shape", ["run", good, "--input", f"x={tmp}/x_shape.npy", "--output-dir", outdir], 3,
                 ["'x'", "3x2", "2x3"], outdir)
    open(os.path.join(tmp, "junk.npy"), "wb").write(b"definitely not numpy")
    expect_error(kiln, "npy that is not npy", ["run", good, "--input", f"x={tmp}/junk.npy"], 3, ["junk.npy"])
    expect_error(kiln, "input name not in model", ["run", good, "--input", f"nope={tmp}/x.npy"], 2, ["'nope'"])
    expect_error(kiln, "malformed --input", ["run", good, "--input", "x"], 2, ["NAME=VALUE"])
    expect_error(kiln, "malformed --shape", ["run", dynp, "--shape", "x=4xq"], 2, ["4xq"])
    expect_error(kiln, "unknown flag", ["run", good, "--frobnicate"], 2, [])
    expect_error(kiln, "no verb", [], 2, [])
    expect_error(kiln, "conformance on a missing folder", ["conformance", os.path.join(tmp, "nothing")], 2, ["nothing"])

    # Inputs the fuzzer once crashed on: now each must end in a clean error or a clean run.
    reg = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "regressions")
    for f in sorted(os.listdir(reg)) if os.path.isdir(reg) else []:
        for verb in ("info", "run"):
            rc, _, err = run(kiln, verb, os.path.join(reg, f))
            check(f"fuzz regression {f} ({verb})", rc in (0, 1, 2, 3) and "kiln: error" in err or rc == 0, f"rc={rc} {err[:200]}")

    # An unknown instruction-set cap is refused, naming the variable and the values it takes; a
    # known one runs.
    rc, so, se = run(kiln, "run", good, env={"KILN_CPU_ISA": "avx9"})
    check("an unknown KILN_CPU_ISA is a usage error", rc == 2 and "KILN_CPU_ISA is 'avx9'" in se and "avx2" in se,
          f"rc={rc} {se[:300]}")
    rc, so, se = run(kiln, "run", good, env={"KILN_CPU_ISA": "generic"})
    check("KILN_CPU_ISA=generic runs", rc == 0, f"rc={rc} {se[:300]}")
    return cli_common.summary()


if __name__ == "__main__":
    sys.exit(main())
