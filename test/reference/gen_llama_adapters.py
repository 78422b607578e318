#!/usr/bin/python3
"""Independent reference for adapters on LLaMA (issue 4): a from-scratch float64 PyTorch LlamaModel with
LoRA, (IA)^3, bottleneck adapters and prefix tuning wired in as the Python Adapters library does on Llama (../shared/FORMATS.md
§1.3, §2: intermediate_lora wraps mlp.down_proj, output_lora mlp.up_proj, bottlenecks are called with
layer_norm=None so seq_bn on the FFN = residual + ffn + up(act(down(ffn + residual)))).

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_llama_adapters.py [SHARED]
SHARED defaults to ../shared. Inputs: SHARED/reference/models/llama (config + weights) and
SHARED/reference/llama/base.safetensors (input_ids, attention_mask, last_hidden_state). The script first checks
its own base model against the transformers output stored there, then writes, for each case, under
test/fixtures/llama_adapters/<case>/:
  a/adapter_config.json, a/adapter.safetensors   the adapter folder in the Python library's layout and names
  expected.safetensors                            last_hidden_state with the adapter active (f32), the loss
                                                  sum(h^2) and grad/<param> of it for every adapter parameter
"""
import json
import math
import os

import torch

from adapter_ref import (BN_KEYS, D, IA3_KEYS, LORA_ALL, LORA_KEYS, PREFIX_KEYS, REF, ROOT, bn_params, load_st,
                         lora_params, prefix_kv, prefix_params, run_cases)

OUT = os.path.join(ROOT, 'test', 'fixtures', 'llama_adapters')
cfg = json.load(open(os.path.join(REF, 'models', 'llama', 'config.json')))
W = {k: v.to(D) for k, v in load_st(os.path.join(REF, 'models', 'llama', 'model.safetensors')).items()}
base = load_st(os.path.join(REF, 'llama', 'base.safetensors'))
H, NH, NKV, HD = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['head_dim']
L, EPS, THETA, I = cfg['num_hidden_layers'], cfg['rms_norm_eps'], cfg['rope_theta'], cfg['intermediate_size']


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def rot_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)


def forward(ids, mask, ad):
    B, T = ids.shape
    x = W['embed_tokens.weight'][ids]
    # HF: causal + padding mask, positions 0..T-1 regardless of padding
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    allowed = causal[None, None] & mask[:, None, None, :].bool()
    bias = torch.zeros(B, 1, T, T, dtype=D).masked_fill(~allowed, torch.finfo(D).min)
    inv = 1.0 / (THETA ** (torch.arange(0, HD, 2, dtype=D) / HD))
    fr = torch.arange(T, dtype=D)[:, None] * inv[None]
    emb = torch.cat([fr, fr], -1)
    cos, sin = emb.cos(), emb.sin()
    for i in range(L):
        p = f'layers.{i}'

        def lin(name, inp):
            y = inp @ W[f'{name}.weight'].T
            return ad.linear(name, inp, y) if ad else y

        h = rms(x, W[f'{p}.input_layernorm.weight'])
        q = lin(f'{p}.self_attn.q_proj', h).view(B, T, NH, HD).transpose(1, 2)
        k = lin(f'{p}.self_attn.k_proj', h).view(B, T, NKV, HD).transpose(1, 2)
        v = lin(f'{p}.self_attn.v_proj', h).view(B, T, NKV, HD).transpose(1, 2)
        q, k = q * cos + rot_half(q) * sin, k * cos + rot_half(k) * sin
        k, v = k.repeat_interleave(NH // NKV, 1), v.repeat_interleave(NH // NKV, 1)
        layer_bias = bias
        if ad and ad.p(f'{POOL}.wte.weight') is not None:
            # prefixes come after RoPE and repeat_kv (all NH heads) and are always attended
            pk, pv = prefix_kv(ad, POOL, i, L, B, NH, HD)
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            layer_bias = torch.cat([torch.zeros(B, 1, T, pk.shape[2], dtype=D), bias], -1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HD) + layer_bias, -1) @ v
        o = lin(f'{p}.self_attn.o_proj', att.transpose(1, 2).reshape(B, T, NH * HD))
        x = ad.bottleneck(f'{p}.attention_adapters', o, x) if ad else o + x
        h = rms(x, W[f'{p}.post_attention_layernorm.weight'])
        up = lin(f'{p}.mlp.up_proj', h)
        mid = torch.nn.functional.silu(lin(f'{p}.mlp.gate_proj', h)) * up
        f = lin(f'{p}.mlp.down_proj', mid)
        x = ad.bottleneck(f'{p}.output_adapters', f, x) if ad else f + x
    return rms(x, W['norm.weight'])


POOL = 'layers.0.self_attn.prefix_tuning.pool.prefix_tunings.a.self_prefix'


def targets(i, c):
    p = f'layers.{i}'
    sizes = {'q': (f'{p}.self_attn.q_proj', H, NH * HD), 'k': (f'{p}.self_attn.k_proj', H, NKV * HD),
             'v': (f'{p}.self_attn.v_proj', H, NKV * HD)}
    out = [sizes[m] for m in c['attn_matrices']] if c['selfattn_lora'] else []
    if c['intermediate_lora']:
        out.append((f'{p}.mlp.down_proj', I, H))
    if c['output_lora']:
        out.append((f'{p}.mlp.up_proj', H, I))
    return out


def cases():
    g = torch.Generator().manual_seed(4242)
    yield 'lora_all', LORA_ALL, lora_params(LORA_ALL, g, L, targets)
    lora_leave = dict(LORA_KEYS, leave_out=[0])
    yield 'lora_leave_out', lora_leave, lora_params(lora_leave, g, L, targets)
    ia3 = dict(IA3_KEYS)
    yield 'ia3', ia3, lora_params(ia3, g, L, targets, ia3=True)
    sites = (lambda i: f'layers.{i}.attention_adapters', lambda i: f'layers.{i}.output_adapters')
    seq_bn = dict(BN_KEYS)
    yield 'seq_bn', seq_bn, bn_params(seq_bn, g, L, H, *sites)
    double = dict(BN_KEYS, mh_adapter=True, reduction_factor=8, non_linearity='swish', scaling=0.5)
    yield 'double_seq_bn_swish', double, bn_params(double, g, L, H, *sites)
    # the pool is one module reachable from every layer and from the model: the .bin repeats it under each name
    names = [POOL] + [f'layers.{i}.self_attn.prefix_tuning.pool.prefix_tunings.a.self_prefix' for i in range(1, L)]
    yield 'prefix_tuning', PREFIX_KEYS, prefix_params(PREFIX_KEYS, g, H, L * 2 * H, names + ['prefix_tuning.prefix_tunings.a.self_prefix'])


def main():
    ids, mask = base['input_ids'], base['attention_mask']
    run_cases(OUT, 'LlamaModel', 'llama', H, lambda ad: forward(ids, mask, ad), [(forward(ids, mask, None), base['last_hidden_state'])], cases())


if __name__ == '__main__':
    main()
