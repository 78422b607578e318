#!/usr/bin/python3
"""Independent reference for adapters on DistilBERT (issue 4): a from-scratch float64 PyTorch DistilBertModel
with LoRA, (IA)^3 and bottleneck adapters placed as the Python Adapters library does on DistilBERT
(../shared/FORMATS.md §1.3: LoRA/IA3 on transformer.layer.L.attention.{q,k,v}_lin, intermediate ffn.lin1,
output ffn.lin2; bottlenecks `attention_adapters(sa_output, x, sa_layer_norm)` and
`output_adapters(ffn_output, sa_output, output_layer_norm)` on the post-LN layer).

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_distilbert_adapters.py [SHARED]
Checks its base model against SHARED/reference/distilbert/base.safetensors (transformers' output), then writes
test/fixtures/distilbert_adapters/<case>/ like gen_llama_adapters.py.
"""
import json
import math
import os

import torch

from adapter_ref import BN_KEYS, D, IA3_KEYS, LORA_ALL, REF, ROOT, bn_params, load_st, lora_params, run_cases

OUT = os.path.join(ROOT, 'test', 'fixtures', 'distilbert_adapters')
cfg = json.load(open(os.path.join(REF, 'models', 'distilbert', 'config.json')))
W = {k: v.to(D) for k, v in load_st(os.path.join(REF, 'models', 'distilbert', 'model.safetensors')).items()}
base = load_st(os.path.join(REF, 'distilbert', 'base.safetensors'))
H, NH, L, I = cfg['dim'], cfg['n_heads'], cfg['n_layers'], cfg['hidden_dim']
HD = H // NH


def ln(name):
    return lambda x: torch.nn.functional.layer_norm(x, (H,), W[f'{name}.weight'], W[f'{name}.bias'], 1e-12)


def forward(ids, mask, ad):
    def lin(name, inp):
        y = inp @ W[f'{name}.weight'].T + W[f'{name}.bias']
        return ad.linear(name, inp, y) if ad else y

    def bottleneck(site, hidden, inp, norm):
        return ad.bottleneck(site, hidden, inp, norm) if ad else norm(hidden + inp)

    B, T = ids.shape
    x = ln('embeddings.LayerNorm')(W['embeddings.word_embeddings.weight'][ids] + W['embeddings.position_embeddings.weight'][:T])
    bias = torch.zeros(B, T, dtype=D).masked_fill(mask == 0, torch.finfo(D).min)[:, None, None, :]
    for i in range(L):
        p = f'transformer.layer.{i}'
        heads = lambda t: t.view(B, T, NH, HD).transpose(1, 2)
        q, k, v = (heads(lin(f'{p}.attention.{m}_lin', x)) for m in 'qkv')
        att = torch.softmax(q / math.sqrt(HD) @ k.transpose(-1, -2) + bias, -1) @ v
        sa = lin(f'{p}.attention.out_lin', att.transpose(1, 2).reshape(B, T, H))
        x = bottleneck(f'{p}.attention_adapters', sa, x, ln(f'{p}.sa_layer_norm'))
        f = lin(f'{p}.ffn.lin2', torch.nn.functional.gelu(lin(f'{p}.ffn.lin1', x)))
        x = bottleneck(f'{p}.output_adapters', f, x, ln(f'{p}.output_layer_norm'))
    return x


def targets(i, c):
    p = f'transformer.layer.{i}'
    out = [(f'{p}.attention.{m}_lin', H, H) for m in c['attn_matrices']] if c['selfattn_lora'] else []
    if c['intermediate_lora']:
        out.append((f'{p}.ffn.lin1', H, I))
    if c['output_lora']:
        out.append((f'{p}.ffn.lin2', I, H))
    return out


def cases():
    g = torch.Generator().manual_seed(4545)
    yield 'lora_all', LORA_ALL, lora_params(LORA_ALL, g, L, targets)
    ia3 = dict(IA3_KEYS)
    yield 'ia3', ia3, lora_params(ia3, g, L, targets, ia3=True)
    sites = (lambda i: f'transformer.layer.{i}.attention_adapters', lambda i: f'transformer.layer.{i}.output_adapters')
    double = dict(BN_KEYS, mh_adapter=True, reduction_factor=8, non_linearity='gelu', scaling=2.0, leave_out=[0])
    yield 'double_seq_bn_leave_out', double, bn_params(double, g, L, H, *sites)


def main():
    ids, mask = base['input_ids'], base['attention_mask']
    run_cases(OUT, 'DistilBertModel', 'distilbert', H, lambda ad: forward(ids, mask, ad), [(forward(ids, mask, None), base['last_hidden_state'])], cases())


if __name__ == '__main__':
    main()
