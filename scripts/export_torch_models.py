#!/usr/bin/env python3
"""Exports the whole-model test set with PyTorch: torchvision classifiers and a small transformer
encoder, with seeded random weights and dynamic batch (and sequence) axes, each with a seeded input.

Run with the Python that has torch and torchvision (Debian's python3-torch installs into
/usr/bin/python3). Writes OUT/<name>.onnx and OUT/<name>.input.npy.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torchvision


class EncoderClassifier(torch.nn.Module):
    """Two transformer encoder layers (multi-head attention, LayerNorm, GELU) and a linear head."""

    def __init__(self, dim=64, heads=4, layers=2, classes=10):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, activation="gelu", batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.encoder(x).mean(dim=1))


def models():
    # name, constructor, test input shape, dynamic axes of the input (as deployers export them)
    yield "resnet18", lambda: torchvision.models.resnet18(), (1, 3, 224, 224), {0: "batch"}
    yield "mobilenet_v2", lambda: torchvision.models.mobilenet_v2(), (1, 3, 224, 224), {0: "batch"}
    yield "transformer_encoder", lambda: EncoderClassifier(), (2, 16, 64), {0: "batch", 1: "sequence"}


def randomize_batchnorm(model, gen):
    # Fresh BatchNorm layers hold mean 0 / variance 1; random statistics make the test meaningful.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--only", help="comma-separated model names")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name, make, shape, axes in models():
        if a.only and name not in a.only.split(","):
            continue
        path = os.path.join(a.out, name + ".onnx")
        if os.path.exists(path):
            continue
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        model = make()
        with torch.no_grad():
            randomize_batchnorm(model, gen)
        model.eval()
        x = torch.randn(*shape, generator=gen)
        tmp = path + ".partial"
        # PRESERVE keeps BatchNormalization nodes (the model is in eval mode, so they are inference
        # BNs): folding them is the optimizer's job, and the tests should see it done.
        torch.onnx.export(model, (x,), tmp, input_names=["input"], output_names=["output"], opset_version=14,
                          do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE,
                          dynamic_axes={"input": axes, "output": {0: "batch"}})
        os.replace(tmp, path)
        np.save(os.path.join(a.out, name + ".input.npy"), x.numpy())
        print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
