"""Helpers shared by the command-line tests: run `kiln`, record checks, expect a clean error."""
import os
import subprocess

FAILURES = []
PASSED = [0]


def run(kiln, *args, timeout=300, env=None):
    p = subprocess.run([kiln, *args], capture_output=True, text=True, timeout=timeout,
                       env=None if env is None else {**os.environ, **env})
    return p.returncode, p.stdout, p.stderr


def check(name, cond, detail=""):
    if cond:
        PASSED[0] += 1
    else:
        FAILURES.append(f"{name}: {detail}")
        print(f"FAIL {name}: {detail}")


def expect_error(kiln, name, args, code, needles, empty_dir=None, absent=None):
    """The command must exit with `code`, its stderr must name every needle (case-insensitive),
    and it must leave nothing in `empty_dir` and no file at `absent`."""
    rc, out, err = run(kiln, *args)
    low = err.lower()
    ok = rc == code and all(n.lower() in low for n in needles) and "Traceback" not in err
    check(name, ok, f"rc={rc} (want {code}), stderr={err.strip()[:300]!r}, want {needles}")
    if empty_dir is not None:
        left = os.listdir(empty_dir) if os.path.isdir(empty_dir) else []
        check(name + " (no partial output)", not left, f"left behind: {left}")
    if absent is not None:
        check(name + " (no partial file)", not os.path.exists(absent), f"{absent} exists")


def summary():
    print(f"{PASSED[0]} passed, {len(FAILURES)} failed")
    return 1 if FAILURES else 0


def gather_model(path, ids_shape=("batch", "seq"), rows=2, with_mask=False):
    """out = table[ids] with a `rows`-row float table: any index outside 0..rows-1 fails the
    Gather step. With `with_mask`, a float input 'mask' of the same declared shape feeds a Relu."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(rows * 4, dtype=np.float32).reshape(rows, 4), "table")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["out"], name="embed", axis=0)]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ids_shape)]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [*ids_shape, 4])]
    if with_mask:
        nodes.append(helper.make_node("Relu", ["mask"], ["mask_out"], name="mask_relu"))
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ids_shape))
        outputs.append(helper.make_tensor_value_info("mask_out", TensorProto.FLOAT, ids_shape))
    g = helper.make_graph(nodes, "gather", inputs, outputs, [table])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-tests")
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return path
