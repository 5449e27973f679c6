#!/usr/bin/env python3
"""Trains Kiln's bundled example model and checks Kiln's predictions with it.

The model is a small multilayer perceptron that classifies the 8x8 handwritten digits shipped
with scikit-learn (no download). It is trained here with NumPy (seeded, a few seconds), written
as ONNX with onnx.helper, and accompanied by held-out images and their labels.

  make_digits_example.py DIR                      writes DIR/digits.onnx, images.npy, labels.npy
  make_digits_example.py DIR --check PROBS.npy    compares Kiln's output with the labels and with
                                                  onnxruntime
"""
import argparse
import os
import sys

import numpy as np


def train(x, y, hidden=64, epochs=60, lr=0.1, seed=0):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, np.sqrt(2 / x.shape[1]), (x.shape[1], hidden)).astype(np.float32)
    b1 = np.zeros(hidden, np.float32)
    w2 = rng.normal(0, np.sqrt(1 / hidden), (hidden, 10)).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    onehot = np.eye(10, dtype=np.float32)[y]
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), 32):
            idx = order[i : i + 32]
            xb, tb = x[idx], onehot[idx]
            h = np.maximum(xb @ w1 + b1, 0)
            logits = h @ w2 + b2
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = (p - tb) / len(idx)
            gw2, gb2 = h.T @ g, g.sum(0)
            gh = (g @ w2.T) * (h > 0)
            gw1, gb1 = xb.T @ gh, gh.sum(0)
            w1 -= lr * gw1
            b1 -= lr * gb1
            w2 -= lr * gw2
            b2 -= lr * gb2
    return w1, b1, w2, b2


def build(out_dir):
    from onnx import TensorProto, helper, numpy_helper, save
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train_idx, test_idx = order[:1500], order[1500:]
    w1, b1, w2, b2 = train(x[train_idx], y[train_idx])
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "fc1.weight"), (b1, "fc1.bias"), (w2, "fc2.weight"), (b2, "fc2.bias"))]
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["h_relu"], name="relu1"),
        helper.make_node("Gemm", ["h_relu", "fc2.weight", "fc2.bias"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-examples")
    model.doc_string = "8x8 digit classifier trained on scikit-learn's digits data set"
    os.makedirs(out_dir, exist_ok=True)
    save(model, os.path.join(out_dir, "digits.onnx"))
    images = x[test_idx].reshape(-1, 1, 8, 8)
    np.save(os.path.join(out_dir, "images.npy"), images)
    np.save(os.path.join(out_dir, "digits.input.npy"), images)  # the name the whole-model tests look for
    np.save(os.path.join(out_dir, "labels.npy"), y[test_idx].astype(np.int64))
    acc = (np.argmax(np.maximum(x[test_idx] @ w1 + b1, 0) @ w2 + b2, 1) == y[test_idx]).mean()
    print(f"example model: {out_dir}/digits.onnx ({len(test_idx)} held-out images, NumPy accuracy {acc:.3f})")


def check(out_dir, probs_file):
    probs = np.load(probs_file)
    labels = np.load(os.path.join(out_dir, "labels.npy"))
    acc = (probs.argmax(1) == labels).mean()
    msg = f"kiln: {len(labels)} digits classified, accuracy {acc:.3f}"
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(os.path.join(out_dir, "digits.onnx"), providers=["CPUExecutionProvider"])
        ref = sess.run(None, {"image": np.load(os.path.join(out_dir, "images.npy"))})[0]
        diff = float(np.abs(ref - probs).max())
        msg += f"; max difference from onnxruntime {diff:.2e}"
        if diff > 1e-4:
            print(msg)
            return 1
    except ImportError:
        pass
    print(msg)
    return 0 if acc > 0.9 else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--check")
    a = ap.parse_args()
    if a.check:
        return check(a.dir, a.check)
    build(a.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
