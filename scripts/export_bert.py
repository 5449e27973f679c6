#!/usr/bin/env python3
"""Exports a small BERT encoder the way users export Hugging Face models: transformers' BertModel with
seeded random weights, torch.onnx.export at opset 17 with dynamic batch and sequence axes on its
three inputs (input_ids, attention_mask, token_type_ids).

Run with the Python that has torch and transformers (Debian's python3-torch installs into
/usr/bin/python3; `pip install transformers==4.40.2` beside it). Writes OUT/bert_encoder.onnx and
OUT/bert_encoder.inputs.npz (a 4x32 batch whose attention mask is zero from position 20 on), the
layout tests/models/test_models.py reads.
"""
import argparse
import os
import sys

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--name", default="bert_encoder")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=32)
    a = ap.parse_args()
    try:
        import transformers
    except ImportError:
        print("export_bert.py: transformers is not installed for this Python "
              f"({sys.executable}); pip install transformers==4.40.2", file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, a.name + ".onnx")
    if os.path.exists(path):
        return 0
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                                     intermediate_size=a.intermediate)
    model = transformers.BertModel(config).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (a.batch, a.seq), generator=gen)
    mask = torch.ones(a.batch, a.seq, dtype=torch.int64)
    mask[:, min(20, a.seq):] = 0
    types = torch.zeros(a.batch, a.seq, dtype=torch.int64)
    types[:, a.seq // 2:] = 1
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    axes["pooler_output"] = {0: "batch"}
    tmp = path + ".partial"
    with torch.no_grad():
        torch.onnx.export(model, (ids, mask, types), tmp, input_names=names,
                          output_names=["last_hidden_state", "pooler_output"], dynamic_axes=axes, opset_version=17)
    os.replace(tmp, path)
    np.savez(os.path.join(a.out, a.name + ".inputs.npz"), input_ids=ids.numpy(), attention_mask=mask.numpy(),
             token_type_ids=types.numpy())
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
