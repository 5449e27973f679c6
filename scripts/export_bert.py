#!/usr/bin/env python3
"""Exports a small BERT encoder the way users export Hugging Face models: transformers' BertModel with
seeded random weights, torch.onnx.export at opset 17 with dynamic batch and sequence axes on its
three inputs (input_ids, attention_mask, token_type_ids). `--arch` exports the other transformer
families of the same size instead: distilbert (DistilBertModel: masked_fill masks), roberta
(RobertaModel) and gpt2 (GPT2Model, prefill without a KV cache: a causal mask under the padding
mask), each with input_ids and attention_mask.

Run with the Python that has torch and transformers (Debian's python3-torch installs into
/usr/bin/python3; `pip install transformers==4.40.2` beside it). Writes OUT/NAME.onnx and
OUT/NAME.inputs.npz (a 4x32 batch whose attention mask is zero from position 20 on; all ones for
gpt2), the layout tests/models/test_models.py reads; NAME is bert_encoder, distilbert_encoder,
roberta_encoder or gpt2_decoder unless --name says otherwise.
"""
import argparse
import os
import sys

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--arch", choices=["bert", "distilbert", "roberta", "gpt2"], default="bert")
    ap.add_argument("--name", default=None)
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
    name = a.name or {"gpt2": "gpt2_decoder"}.get(a.arch, a.arch + "_encoder")
    path = os.path.join(a.out, name + ".onnx")
    if os.path.exists(path):
        return 0
    torch.manual_seed(0)
    if a.arch == "bert":
        config = transformers.BertConfig(hidden_size=a.hidden, num_hidden_layers=a.layers,
                                         num_attention_heads=a.heads, intermediate_size=a.intermediate)
        model = transformers.BertModel(config).eval()
    elif a.arch == "roberta":
        config = transformers.RobertaConfig(hidden_size=a.hidden, num_hidden_layers=a.layers,
                                            num_attention_heads=a.heads, intermediate_size=a.intermediate)
        model = transformers.RobertaModel(config).eval()
    elif a.arch == "distilbert":
        config = transformers.DistilBertConfig(dim=a.hidden, n_layers=a.layers, n_heads=a.heads,
                                               hidden_dim=a.intermediate)
        model = transformers.DistilBertModel(config).eval()
    else:
        config = transformers.GPT2Config(n_embd=a.hidden, n_layer=a.layers, n_head=a.heads, n_inner=a.intermediate,
                                         use_cache=False)
        model = transformers.GPT2Model(config).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, min(1000, config.vocab_size), (a.batch, a.seq), generator=gen)
    mask = torch.ones(a.batch, a.seq, dtype=torch.int64)
    if a.arch != "gpt2":  # a decoder's padding would leave rows with no key at all
        mask[:, min(20, a.seq):] = 0
    types = torch.zeros(a.batch, a.seq, dtype=torch.int64)
    types[:, a.seq // 2:] = 1
    three = a.arch == "bert"
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if three else [])
    outputs = ["last_hidden_state"] + (["pooler_output"] if a.arch in ("bert", "roberta") else [])

    class Positional(torch.nn.Module):  # the inputs by position, whatever forward's signature
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kw = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kw["token_type_ids"] = token_type_ids
            if a.arch == "gpt2":
                kw["use_cache"] = False
            out = self.m(**kw)
            return tuple(getattr(out, o) for o in outputs)

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    if "pooler_output" in outputs:
        axes["pooler_output"] = {0: "batch"}
    args = (ids, mask, types) if three else (ids, mask)
    tmp = path + ".partial"
    export_args = dict(input_names=names, output_names=outputs, dynamic_axes=axes, opset_version=17)
    with torch.no_grad():
        try:  # the TorchScript exporter, which newer torch keeps behind dynamo=False
            torch.onnx.export(Positional(model), args, tmp, dynamo=False, **export_args)
        except TypeError:  # a torch from before the dynamo exporter
            torch.onnx.export(Positional(model), args, tmp, **export_args)
    os.replace(tmp, path)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    if three:
        feeds["token_type_ids"] = types.numpy()
    np.savez(os.path.join(a.out, name + ".inputs.npz"), **feeds)
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
