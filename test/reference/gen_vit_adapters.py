#!/usr/bin/python3
"""Independent reference for adapters on ViT (issue 4): a from-scratch float64 PyTorch ViTModel with LoRA,
(IA)^3 and bottleneck adapters placed as the Python Adapters library does on ViT (../shared/FORMATS.md §1.3:
LoRA on attention.attention.{query,key,value}, intermediate.dense, output.dense; the attention bottleneck
`encoder.layer.L.attention_adapters` and the FFN one `encoder.layer.L.output.output_adapters`, both called
with layer_norm=None since ViT is pre-LN).

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_vit_adapters.py [SHARED]
Checks its base model against SHARED/reference/vit/base.safetensors (transformers' output), then writes
test/fixtures/vit_adapters/<case>/ like gen_llama_adapters.py.
"""
import json
import math
import os

import torch

from adapter_ref import BN_KEYS, D, IA3_KEYS, LORA_ALL, REF, ROOT, bn_params, load_st, lora_params, run_cases

OUT = os.path.join(ROOT, 'test', 'fixtures', 'vit_adapters')
cfg = json.load(open(os.path.join(REF, 'models', 'vit', 'config.json')))
W = {k: v.to(D) for k, v in load_st(os.path.join(REF, 'models', 'vit', 'model.safetensors')).items()}
base = load_st(os.path.join(REF, 'vit', 'base.safetensors'))
H, NH, L, I = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_hidden_layers'], cfg['intermediate_size']
HD, EPS, P = H // NH, cfg['layer_norm_eps'], cfg['patch_size']


def ln(x, name):
    return torch.nn.functional.layer_norm(x, (H,), W[f'{name}.weight'], W[f'{name}.bias'], EPS)


def forward(pixels, ad):
    B = pixels.shape[0]
    x = torch.nn.functional.conv2d(pixels, W['embeddings.patch_embeddings.projection.weight'],
                                   W['embeddings.patch_embeddings.projection.bias'], stride=P).flatten(2).transpose(1, 2)
    x = torch.cat([W['embeddings.cls_token'].expand(B, 1, H), x], 1) + W['embeddings.position_embeddings']
    T = x.shape[1]
    for i in range(L):
        p = f'encoder.layer.{i}'

        def lin(name, inp):
            y = inp @ W[f'{name}.weight'].T + W[f'{name}.bias']
            return ad.linear(name, inp, y) if ad else y

        h = ln(x, f'{p}.layernorm_before')
        heads = lambda t: t.view(B, T, NH, HD).transpose(1, 2)
        q, k, v = (heads(lin(f'{p}.attention.attention.{m}', h)) for m in ('query', 'key', 'value'))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HD), -1) @ v
        o = lin(f'{p}.attention.output.dense', att.transpose(1, 2).reshape(B, T, H))
        x = ad.bottleneck(f'{p}.attention_adapters', o, x) if ad else o + x
        f = torch.nn.functional.gelu(lin(f'{p}.intermediate.dense', ln(x, f'{p}.layernorm_after')))
        f = lin(f'{p}.output.dense', f)
        x = ad.bottleneck(f'{p}.output.output_adapters', f, x) if ad else f + x
    return ln(x, 'layernorm')


def targets(i, c):
    p = f'encoder.layer.{i}'
    names = {'q': 'query', 'k': 'key', 'v': 'value'}
    out = [(f'{p}.attention.attention.{names[m]}', H, H) for m in c['attn_matrices']] if c['selfattn_lora'] else []
    if c['intermediate_lora']:
        out.append((f'{p}.intermediate.dense', H, I))
    if c['output_lora']:
        out.append((f'{p}.output.dense', I, H))
    return out


def cases():
    g = torch.Generator().manual_seed(4343)
    yield 'lora_all', LORA_ALL, lora_params(LORA_ALL, g, L, targets)
    ia3 = dict(IA3_KEYS, leave_out=[1])
    yield 'ia3_leave_out', ia3, lora_params(ia3, g, L, targets, ia3=True)
    sites = (lambda i: f'encoder.layer.{i}.attention_adapters', lambda i: f'encoder.layer.{i}.output.output_adapters')
    double = dict(BN_KEYS, mh_adapter=True, reduction_factor=8, non_linearity='gelu', scaling=2.0)
    yield 'double_seq_bn_gelu', double, bn_params(double, g, L, H, *sites)


def main():
    pixels = base['pixel_values'].to(D)
    run_cases(OUT, 'ViTModel', 'vit', H, lambda ad: forward(pixels, ad), [(forward(pixels, None), base['last_hidden_state'])], cases())


if __name__ == '__main__':
    main()
