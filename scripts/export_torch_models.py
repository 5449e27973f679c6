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


def conv_bn_act(cin, cout, k=1, s=1, act=torch.nn.SiLU, p=None):
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, k, s, k // 2 if p is None else p, bias=False),
                               torch.nn.BatchNorm2d(cout), act())


class C3(torch.nn.Module):
    """YOLOv5's CSP block: two 1x1 branches, bottlenecks (with residuals) on one, concatenated."""

    def __init__(self, cin, cout, n=1, shortcut=True):
        super().__init__()
        h = cout // 2
        self.cv1, self.cv2, self.cv3 = conv_bn_act(cin, h), conv_bn_act(cin, h), conv_bn_act(2 * h, cout)
        self.m = torch.nn.ModuleList(torch.nn.Sequential(conv_bn_act(h, h), conv_bn_act(h, h, 3)) for _ in range(n))
        self.shortcut = shortcut

    def forward(self, x):
        y = self.cv1(x)
        for b in self.m:
            y = y + b(y) if self.shortcut else b(y)
        return self.cv3(torch.cat([y, self.cv2(x)], 1))


class SPPF(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv1, self.cv2 = conv_bn_act(c, c // 2), conv_bn_act(c * 2, c)
        self.pool = torch.nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class YoloStyle(torch.nn.Module):
    """A small YOLOv5-style detector as its exporter writes it: CSP backbone, SPPF, a PAN neck
    (nearest upsampling, concatenation) and the detection head decoding boxes in the graph
    (sigmoid, grid and anchor arithmetic, reshapes and transposes, outputs of three strides
    concatenated)."""

    def __init__(self, classes=4, w=16):
        super().__init__()
        self.no, self.na = classes + 5, 3
        self.stem = conv_bn_act(3, w, 3, 2)
        self.d2 = torch.nn.Sequential(conv_bn_act(w, 2 * w, 3, 2), C3(2 * w, 2 * w))
        self.d3 = torch.nn.Sequential(conv_bn_act(2 * w, 4 * w, 3, 2), C3(4 * w, 4 * w))
        self.d4 = torch.nn.Sequential(conv_bn_act(4 * w, 8 * w, 3, 2), C3(8 * w, 8 * w))
        self.d5 = torch.nn.Sequential(conv_bn_act(8 * w, 8 * w, 3, 2), C3(8 * w, 8 * w), SPPF(8 * w))
        self.up = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.lat5, self.c4 = conv_bn_act(8 * w, 4 * w), C3(12 * w, 4 * w, shortcut=False)
        self.lat4, self.c3 = conv_bn_act(4 * w, 2 * w), C3(6 * w, 2 * w, shortcut=False)
        self.down3, self.n4 = conv_bn_act(2 * w, 2 * w, 3, 2), C3(4 * w, 4 * w, shortcut=False)
        self.down4, self.n5 = conv_bn_act(4 * w, 4 * w, 3, 2), C3(8 * w, 8 * w, shortcut=False)
        self.heads = torch.nn.ModuleList(torch.nn.Conv2d(c, self.na * self.no, 1) for c in (2 * w, 4 * w, 8 * w))
        anchors = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]])
        self.register_buffer("anchors", anchors.float().view(3, 3, 2))
        self.strides = (8, 16, 32)

    def forward(self, x):
        p3 = self.d3(self.d2(self.stem(x)))
        p4 = self.d4(p3)
        p5 = self.d5(p4)
        t5 = self.lat5(p5)
        t4 = self.lat4(self.c4(torch.cat([self.up(t5), p4], 1)))
        o3 = self.c3(torch.cat([self.up(t4), p3], 1))
        o4 = self.n4(torch.cat([self.down3(o3), t4], 1))
        o5 = self.n5(torch.cat([self.down4(o4), t5], 1))
        return detect(self, (o3, o4, o5))


def detect(m, feats):
    """YOLOv5's detection head on features of strides 8, 16 and 32: each a 1x1 convolution, then
    boxes decoded in the graph (sigmoid, grid and anchor arithmetic), the three concatenated."""
    out = []
    for i, f in enumerate(feats):
        y = m.heads[i](f)
        bs, _, ny, nx = y.shape
        y = y.view(bs, m.na, m.no, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
        gy, gx = torch.meshgrid(torch.arange(ny, dtype=torch.float32), torch.arange(nx, dtype=torch.float32),
                                indexing="ij")
        grid = torch.stack((gx, gy), 2).view(1, 1, ny, nx, 2) - 0.5
        anchor = m.anchors[i].view(1, m.na, 1, 1, 2)
        xy = (y[..., 0:2] * 2 + grid) * m.strides[i]
        wh = (y[..., 2:4] * 2) ** 2 * anchor
        out.append(torch.cat((xy, wh, y[..., 4:]), 4).view(bs, -1, m.no))
    return torch.cat(out, 1)


class YoloV5(torch.nn.Module):
    """YOLOv5 in its v6.0 layout, rebuilt: a 6x6 stem, CSP backbone with `n` bottlenecks per
    stage, SPPF, the PAN neck and the detection head. Width 32 and depths (1, 2, 3, 1) are
    YOLOv5s (7.2M parameters); the benchmarks run it at 640x640 with random weights."""

    def __init__(self, classes=80, w=32, n=(1, 2, 3, 1)):
        super().__init__()
        self.no, self.na = classes + 5, 3
        self.stem = conv_bn_act(3, w, 6, 2, p=2)
        self.s2 = torch.nn.Sequential(conv_bn_act(w, 2 * w, 3, 2), C3(2 * w, 2 * w, n[0]))
        self.s3 = torch.nn.Sequential(conv_bn_act(2 * w, 4 * w, 3, 2), C3(4 * w, 4 * w, n[1]))
        self.s4 = torch.nn.Sequential(conv_bn_act(4 * w, 8 * w, 3, 2), C3(8 * w, 8 * w, n[2]))
        self.s5 = torch.nn.Sequential(conv_bn_act(8 * w, 16 * w, 3, 2), C3(16 * w, 16 * w, n[3]), SPPF(16 * w))
        self.up = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.lat5, self.c4 = conv_bn_act(16 * w, 8 * w), C3(16 * w, 8 * w, shortcut=False)
        self.lat4, self.c3 = conv_bn_act(8 * w, 4 * w), C3(8 * w, 4 * w, shortcut=False)
        self.down3, self.n4 = conv_bn_act(4 * w, 4 * w, 3, 2), C3(8 * w, 8 * w, shortcut=False)
        self.down4, self.n5 = conv_bn_act(8 * w, 8 * w, 3, 2), C3(16 * w, 16 * w, shortcut=False)
        self.heads = torch.nn.ModuleList(torch.nn.Conv2d(c, self.na * self.no, 1) for c in (4 * w, 8 * w, 16 * w))
        anchors = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]])
        self.register_buffer("anchors", anchors.float().view(3, 3, 2))
        self.strides = (8, 16, 32)

    def forward(self, x):
        p3 = self.s3(self.s2(self.stem(x)))
        p4 = self.s4(p3)
        t5 = self.lat5(self.s5(p4))
        t4 = self.lat4(self.c4(torch.cat([self.up(t5), p4], 1)))
        o3 = self.c3(torch.cat([self.up(t4), p3], 1))
        o4 = self.n4(torch.cat([self.down3(o3), t4], 1))
        o5 = self.n5(torch.cat([self.down4(o4), t5], 1))
        return detect(self, (o3, o4, o5))


class DBNetStyle(torch.nn.Module):
    """A DBNet-style text detector: ResNet-18 features, an FPN (lateral 1x1 convolutions, nearest
    upsampling and additions, 3x3 smoothing), the four levels upsampled to a quarter of the input
    and concatenated, and the probability head (convolution, two transposed convolutions,
    sigmoid)."""

    def __init__(self, inner=64):
        super().__init__()
        r = torchvision.models.resnet18()
        self.stem = torch.nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.layers = torch.nn.ModuleList([r.layer1, r.layer2, r.layer3, r.layer4])
        self.lateral = torch.nn.ModuleList(torch.nn.Conv2d(c, inner, 1, bias=False) for c in (64, 128, 256, 512))
        self.smooth = torch.nn.ModuleList(
            torch.nn.Conv2d(inner, inner // 4, 3, padding=1, bias=False) for _ in range(4))
        q = inner // 4
        self.head = torch.nn.Sequential(
            torch.nn.Conv2d(inner, q, 3, padding=1, bias=False), torch.nn.BatchNorm2d(q), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(q, q, 2, 2), torch.nn.BatchNorm2d(q), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(q, 1, 2, 2), torch.nn.Sigmoid())

    def forward(self, x):
        feats = []
        y = self.stem(x)
        for layer in self.layers:
            y = layer(y)
            feats.append(y)
        lat = [l(f) for l, f in zip(self.lateral, feats)]
        for i in (2, 1, 0):
            lat[i] = lat[i] + torch.nn.functional.interpolate(lat[i + 1], scale_factor=2, mode="nearest")
        outs = [s(l) for s, l in zip(self.smooth, lat)]
        outs = [outs[0]] + [torch.nn.functional.interpolate(o, scale_factor=2 ** i, mode="nearest")
                            for i, o in enumerate(outs[1:], 1)]
        return self.head(torch.cat(outs, 1))


class SegmentationOut(torch.nn.Module):
    """torchvision's segmentation models return a dict; deployers export its "out"."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def models():
    # name, constructor, test input shape, dynamic axes of the input (as deployers export them)
    yield "resnet18", lambda: torchvision.models.resnet18(), (1, 3, 224, 224), {0: "batch"}
    yield "mobilenet_v2", lambda: torchvision.models.mobilenet_v2(), (1, 3, 224, 224), {0: "batch"}
    yield "transformer_encoder", lambda: EncoderClassifier(), (2, 16, 64), {0: "batch", 1: "sequence"}
    # Detectors and segmenters, at small inputs so the reference kernels run them quickly.
    yield "yolo_style", lambda: YoloStyle(), (1, 3, 128, 128), {0: "batch"}
    yield "deeplabv3_mobilenet", lambda: SegmentationOut(torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, aux_loss=False)), (1, 3, 128, 128), {0: "batch"}
    yield "dbnet_style", lambda: DBNetStyle(), (1, 3, 128, 128), {0: "batch"}
    # ConvNeXt blocks (7x7 depthwise, LayerNorm over channels, MLP, layer scale and residual).
    yield "convnext_tiny", lambda: torchvision.models.convnext_tiny(), (1, 3, 64, 64), {0: "batch"}


def randomize_batchnorm(model, gen):
    # Fresh BatchNorm layers hold mean 0 / variance 1; random statistics make the test meaningful.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def randomize_layer_scale(model, gen):
    # torchvision initializes ConvNeXt's layer scales to 1e-6, which leaves each block's branch
    # invisible next to its residual; trained models have scales around 0.1 to 1.
    for m in model.modules():
        if isinstance(getattr(m, "layer_scale", None), torch.nn.Parameter):
            m.layer_scale.copy_(torch.rand(m.layer_scale.shape, generator=gen) * 0.9 + 0.1)


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
            randomize_layer_scale(model, gen)
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
