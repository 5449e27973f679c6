#!/usr/bin/env python3
"""Writes the ONNX backend test folders defined by the installed onnx package.

The onnx wheel carries the test case definitions (onnx/backend/test/case) but, unlike the source
tree, not the generated node test data. This script produces the same folders the onnx repository
ships: OUT/node/<test>/model.onnx + test_data_set_0/{input,output}_N.pb, plus the model-level
folders (simple, pytorch-converted, pytorch-operator, light) copied from the package.

Usage: gen_onnx_tests.py OUT
"""
import argparse
import os
import shutil
import sys
import warnings

import onnx
import onnx.backend.test.case.model as model_cases
import onnx.backend.test.case.node as node_cases
import onnx.backend.test.cmd_tools as cmd_tools


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    args = parser.parse_args()
    stamp = os.path.join(args.out, ".onnx_version")
    # The expected outputs are computed with numpy and ml_dtypes too (4- and 2-bit casts).
    import ml_dtypes
    version = f"onnx {onnx.__version__}, ml_dtypes {ml_dtypes.__version__}"
    if os.path.exists(stamp) and open(stamp).read().strip() == version:
        return 0
    warnings.simplefilter("ignore")
    # cmd_tools.generate_data writes whatever collect_testcases returns; point it at the node
    # cases (it normally only writes model cases).
    original = model_cases.collect_testcases
    model_cases.collect_testcases = lambda *a, **k: node_cases.collect_testcases()
    try:
        cmd_tools.generate_data(argparse.Namespace(output=args.out))
    finally:
        model_cases.collect_testcases = original
    data = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    for kind in ("simple", "pytorch-converted", "pytorch-operator"):
        src = os.path.join(data, kind)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(args.out, kind), dirs_exist_ok=True)
    with open(stamp, "w") as f:
        f.write(version + "\n")
    print(f"wrote {len(os.listdir(os.path.join(args.out, 'node')))} node tests from onnx {onnx.__version__} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
