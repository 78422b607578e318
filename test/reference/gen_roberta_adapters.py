#!/usr/bin/python3
"""Independent reference for adapters on RoBERTa (issue 4): a from-scratch float64 PyTorch RobertaModel with
LoRA, (IA)^3 and bottleneck adapters placed as the Python Adapters library does on BERT/RoBERTa
(../shared/FORMATS.md §1.3: LoRA/IA3 on encoder.layer.L.attention.self.{query,key,value}, intermediate.dense,
output.dense; bottlenecks `encoder.layer.L.attention.output.adapters` and `encoder.layer.L.output.adapters`
called with the sub-layer's post-LN).

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_roberta_adapters.py [SHARED]
Checks its base model against SHARED/reference/roberta/base.safetensors (transformers' output), then writes
test/fixtures/roberta_adapters/<case>/ like gen_llama_adapters.py.
"""
import json
import math
import os

import torch

from adapter_ref import BN_KEYS, D, IA3_KEYS, LORA_ALL, REF, ROOT, bn_params, load_st, lora_params, run_cases

OUT = os.path.join(ROOT, 'test', 'fixtures', 'roberta_adapters')
cfg = json.load(open(os.path.join(REF, 'models', 'roberta', 'config.json')))
W = {k: v.to(D) for k, v in load_st(os.path.join(REF, 'models', 'roberta', 'model.safetensors')).items()}
base = load_st(os.path.join(REF, 'roberta', 'base.safetensors'))
H, NH, L, I = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_hidden_layers'], cfg['intermediate_size']
HD, EPS, PAD = H // NH, cfg['layer_norm_eps'], cfg['pad_token_id']


def ln(name):
    return lambda x: torch.nn.functional.layer_norm(x, (H,), W[f'{name}.weight'], W[f'{name}.bias'], EPS)


def forward(ids, mask, ad):
    def lin(name, inp):
        y = inp @ W[f'{name}.weight'].T + W[f'{name}.bias']
        return ad.linear(name, inp, y) if ad else y

    def bottleneck(site, hidden, inp, norm):
        return ad.bottleneck(site, hidden, inp, norm) if ad else norm(hidden + inp)

    B, T = ids.shape
    # RoBERTa numbers non-pad tokens from pad_token_id + 1; pads get pad_token_id
    real = (ids != PAD).long()
    pos = torch.cumsum(real, 1) * real + PAD
    x = W['embeddings.word_embeddings.weight'][ids] + W['embeddings.position_embeddings.weight'][pos] + W['embeddings.token_type_embeddings.weight'][0]
    x = ln('embeddings.LayerNorm')(x)
    bias = torch.zeros(B, T, dtype=D).masked_fill(mask == 0, torch.finfo(D).min)[:, None, None, :]
    for i in range(L):
        p = f'encoder.layer.{i}'
        heads = lambda t: t.view(B, T, NH, HD).transpose(1, 2)
        q, k, v = (heads(lin(f'{p}.attention.self.{m}', x)) for m in ('query', 'key', 'value'))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HD) + bias, -1) @ v
        o = lin(f'{p}.attention.output.dense', att.transpose(1, 2).reshape(B, T, H))
        x = bottleneck(f'{p}.attention.output', o, x, ln(f'{p}.attention.output.LayerNorm'))
        f = lin(f'{p}.output.dense', torch.nn.functional.gelu(lin(f'{p}.intermediate.dense', x)))
        x = bottleneck(f'{p}.output', f, x, ln(f'{p}.output.LayerNorm'))
    return x


def targets(i, c):
    p = f'encoder.layer.{i}'
    names = {'q': 'query', 'k': 'key', 'v': 'value'}
    out = [(f'{p}.attention.self.{names[m]}', H, H) for m in c['attn_matrices']] if c['selfattn_lora'] else []
    if c['intermediate_lora']:
        out.append((f'{p}.intermediate.dense', H, I))
    if c['output_lora']:
        out.append((f'{p}.output.dense', I, H))
    return out


def cases():
    g = torch.Generator().manual_seed(4747)
    yield 'lora_all', LORA_ALL, lora_params(LORA_ALL, g, L, targets)
    ia3 = dict(IA3_KEYS)
    yield 'ia3', ia3, lora_params(ia3, g, L, targets, ia3=True)
    sites = (lambda i: f'encoder.layer.{i}.attention.output', lambda i: f'encoder.layer.{i}.output')
    double = dict(BN_KEYS, mh_adapter=True, reduction_factor=8, non_linearity='swish', scaling=0.5)
    yield 'double_seq_bn_swish', double, bn_params(double, g, L, H, *sites)


def main():
    ids, mask = base['input_ids'], base['attention_mask']
    run_cases(OUT, 'RobertaModel', 'roberta', H, lambda ad: forward(ids, mask, ad), [(forward(ids, mask, None), base['last_hidden_state'])], cases())


if __name__ == '__main__':
    main()
