"""Per-kernel GPU times of one inference, Kiln and torch.compile side by side, under Nsight Compute.

    python3 bench/kernel_profile.py --kiln build/bin/kiln efficientnet_b0:1 convnext_tiny:1 [--torch]

For each MODEL:BATCH (a torchvision model, random weights) it exports ONNX, builds a Kiln FP16
engine for that batch, and runs one inference of it under `ncu` (`kiln bench --no-graphs
--warmup 0 --iterations 1`, each kernel launched on its own); with --torch it also runs one
torch.compile inference (FP16, channels-last, after warm-up) under `ncu --profile-from-start off`.
It prints the number of kernels, their summed duration and the kernels that take longest, grouped
by name. ncu serializes the kernels and flushes the caches between them, so the sums exceed a
recorded run's time; they compare the two engines kernel by kernel, not end to end.

`--summarize FILE.csv` prints the summary of an earlier `ncu --csv` log. With --torch, the torch
part also takes `python3 bench/kernel_profile.py --torch-child MODEL BATCH` (what ncu runs).
"""
import argparse
import collections
import csv
import os
import subprocess
import sys
import tempfile

NCU = ["ncu", "--clock-control", "none", "--print-units", "base", "--csv", "--metrics", "gpu__time_duration.sum"]


def summarize(path, top=25, out=sys.stdout):
    rows = [r for r in csv.reader(open(path)) if len(r) > 10]
    if not rows:
        print(f"{path}: no kernels recorded", file=out)
        return
    header, rows = rows[0], rows[1:]
    name_col, value_col = header.index("Kernel Name"), header.index("Metric Value")
    per_name = collections.defaultdict(lambda: [0.0, 0])
    total = 0.0
    for r in rows:
        try:
            ns = float(r[value_col].replace(",", ""))
        except ValueError:
            continue
        entry = per_name[r[name_col][:90]]
        entry[0] += ns
        entry[1] += 1
        total += ns
    count = sum(n for _, n in per_name.values())
    print(f"kernels {count}, total {total / 1e3:.1f} us", file=out)
    for name, (ns, n) in sorted(per_name.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{ns / 1e3:9.1f} us {n:4d}  {name}", file=out)


def torch_child(name, batch):
    import torch
    import torchvision
    m = getattr(torchvision.models, name)(weights=None).eval().cuda().half().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
    c = torch.compile(m)
    with torch.no_grad():
        for _ in range(3):
            c(x)
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStart()
        c(x)
        torch.cuda.synchronize()
        torch.cuda.cudart().cudaProfilerStop()


def export(name, path):
    import torch
    import torchvision
    m = getattr(torchvision.models, name)(weights=None).eval()
    torch.onnx.export(m, (torch.randn(1, 3, 224, 224),), path, input_names=["x"], output_names=["y"],
                      opset_version=17, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*", help="MODEL:BATCH")
    ap.add_argument("--kiln", help="the kiln binary")
    ap.add_argument("--torch", action="store_true", help="also profile torch.compile")
    ap.add_argument("--out", default=None, help="directory for the ncu logs (default: a temporary one)")
    ap.add_argument("--summarize", default=None, help="summarize an ncu --csv log and exit")
    ap.add_argument("--torch-child", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.summarize:
        summarize(a.summarize)
        return 0
    if a.torch_child:
        torch_child(a.torch_child[0], int(a.torch_child[1]))
        return 0
    if not a.kiln or not a.configs:
        ap.error("give --kiln and at least one MODEL:BATCH")
    out = a.out or tempfile.mkdtemp(prefix="kiln_kernels_")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, KILN_CHECK_PLAN="0", KILN_VERIFY_PASSES="0")
    for cfg in a.configs:
        name, batch = cfg.split(":")[0], int(cfg.split(":")[1])
        onnx_path = os.path.join(out, f"{name}.onnx")
        if not os.path.exists(onnx_path):
            export(name, onnx_path)
        engine = os.path.join(out, f"{name}_{batch}.kiln")
        b = subprocess.run([a.kiln, "build", onnx_path, "-o", engine, "--device", "cuda", "--fp16", "--shapes",
                            f"x:{batch}x3x224x224"], capture_output=True, text=True, env=env)
        if b.returncode:
            print(f"{cfg}: kiln build failed: {b.stderr[-2000:]}")
            continue
        log = os.path.join(out, f"kiln_{name}_{batch}.csv")
        with open(log, "w") as f:
            subprocess.run(NCU + [a.kiln, "bench", engine, "--no-transfers", "--no-graphs", "--warmup", "0",
                                  "--iterations", "1"], stdout=f, stderr=subprocess.DEVNULL, env=env)
        print(f"== Kiln {cfg}")
        summarize(log)
        if a.torch:
            log = os.path.join(out, f"torch_{name}_{batch}.csv")
            with open(log, "w") as f:
                subprocess.run(NCU + ["--profile-from-start", "off", sys.executable, os.path.abspath(__file__),
                                      "--torch-child", name, str(batch)], stdout=f, stderr=subprocess.DEVNULL)
            print(f"== torch.compile {cfg}")
            summarize(log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
