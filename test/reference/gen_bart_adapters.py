#!/usr/bin/python3
"""Independent reference for adapters on BART (issue 4): a from-scratch float64 PyTorch BartModel with LoRA,
(IA)^3, bottleneck adapters and prefix tuning (encoder/self/cross pools) placed as the Python Adapters library does on BART (../shared/FORMATS.md §1.3):
LoRA/IA3 on {encoder,decoder}.layers.L.self_attn.{q,k,v}_proj *and* decoder.layers.L.encoder_attn.{q,k,v}_proj
(attn_matrices cover cross-attention too), intermediate fc1, output fc2; bottlenecks
`{encoder,decoder}.layers.L.{attention,output}_adapters` called with the sub-layer's post-LN
(self_attn_layer_norm / final_layer_norm), cross-attention left alone.

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_bart_adapters.py [SHARED]
Checks its base model against SHARED/reference/bart/base.safetensors (transformers' encoder and decoder
outputs), then writes test/fixtures/bart_adapters/<case>/ like gen_llama_adapters.py (last_hidden_state is the
decoder output; encoder adapters are reached through cross-attention).
"""
import json
import math
import os

import torch

from adapter_ref import (BN_KEYS, D, IA3_KEYS, LORA_ALL, PREFIX_KEYS, REF, ROOT, bn_params, load_st, lora_params,
                         prefix_kv, run_cases, seq2seq_prefix_pools)

OUT = os.path.join(ROOT, 'test', 'fixtures', 'bart_adapters')
cfg = json.load(open(os.path.join(REF, 'models', 'bart', 'config.json')))
W = {k: v.to(D) for k, v in load_st(os.path.join(REF, 'models', 'bart', 'model.safetensors')).items()}
base = load_st(os.path.join(REF, 'bart', 'base.safetensors'))
H, NH, I = cfg['d_model'], cfg['encoder_attention_heads'], cfg['encoder_ffn_dim']
E, DL, HD = cfg['encoder_layers'], cfg['decoder_layers'], H // NH
NEG = torch.finfo(D).min


def ln(name):
    return lambda x: torch.nn.functional.layer_norm(x, (H,), W[f'{name}.weight'], W[f'{name}.bias'], 1e-5)


def forward(ids, mask, dec_ids, ad):
    def lin(name, inp):
        y = inp @ W[f'{name}.weight'].T + W[f'{name}.bias']
        return ad.linear(name, inp, y) if ad else y

    def bottleneck(site, hidden, inp, norm):
        return ad.bottleneck(site, hidden, inp, norm) if ad else norm(hidden + inp)

    def attention(p, x, kv, bias, pool=None):
        B, T, S = x.shape[0], x.shape[1], kv.shape[1]
        q = (lin(f'{p}.q_proj', x) * HD ** -0.5).view(B, T, NH, HD).transpose(1, 2)
        k = lin(f'{p}.k_proj', kv).view(B, S, NH, HD).transpose(1, 2)
        v = lin(f'{p}.v_proj', kv).view(B, S, NH, HD).transpose(1, 2)
        if ad and pool and ad.p(f'{POOL}.{pool[0]}.wte.weight') is not None:
            # prefix keys/values go in front of the projected ones (cross: of the encoder's) and are always attended
            pk, pv = prefix_kv(ad, f'{POOL}.{pool[0]}', pool[1], pool[2], B, NH, HD)
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            bias = torch.cat([torch.zeros(B, 1, T, pk.shape[2], dtype=D), bias.expand(B, 1, T, S)], -1)
        att = torch.softmax(q @ k.transpose(-1, -2) + bias, -1) @ v
        return lin(f'{p}.out_proj', att.transpose(1, 2).reshape(B, T, H))

    def layer(p, i, x, self_bias, enc=None, cross_bias=None):
        self_pool = ('encoder_prefix', i, E) if enc is None else ('self_prefix', i, DL)
        x = bottleneck(f'{p}.attention_adapters', attention(f'{p}.self_attn', x, x, self_bias, self_pool), x, ln(f'{p}.self_attn_layer_norm'))
        if enc is not None:
            x = ln(f'{p}.encoder_attn_layer_norm')(x + attention(f'{p}.encoder_attn', x, enc, cross_bias, ('cross_prefix', i, DL)))
        f = lin(f'{p}.fc2', torch.nn.functional.gelu(lin(f'{p}.fc1', x)))
        return bottleneck(f'{p}.output_adapters', f, x, ln(f'{p}.final_layer_norm'))

    def embed(side, t):
        T = t.shape[1]
        return ln(f'{side}.layernorm_embedding')(W['shared.weight'][t] + W[f'{side}.embed_positions.weight'][2:T + 2])

    pad_bias = torch.zeros(mask.shape, dtype=D).masked_fill(mask == 0, NEG)[:, None, None, :]
    x = embed('encoder', ids)
    for i in range(E):
        x = layer(f'encoder.layers.{i}', i, x, pad_bias)
    enc = x
    T = dec_ids.shape[1]
    causal = torch.zeros(T, T, dtype=D).masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), NEG)
    y = embed('decoder', dec_ids)
    for i in range(DL):
        y = layer(f'decoder.layers.{i}', i, y, causal, enc, pad_bias)
    return enc, y


# named_parameters() lists all three pools under the first attention module's alias (FORMATS §4)
POOL = 'encoder.layers.0.self_attn.prefix_tuning.pool.prefix_tunings.a'


def prefix_pools(g):
    modules = [f'encoder.layers.{i}.self_attn' for i in range(E)] + \
        [f'decoder.layers.{i}.{a}' for i in range(DL) for a in ('self_attn', 'encoder_attn')]
    return seq2seq_prefix_pools(g, H, E, DL, modules)


def layer_path(i):
    """Adapter layer ids count the encoder's layers first, then the decoder's."""
    return f'encoder.layers.{i}' if i < E else f'decoder.layers.{i - E}'


def targets(i, c):
    p = layer_path(i)
    out = []
    if c['selfattn_lora']:
        attns = ['self_attn'] + (['encoder_attn'] if i >= E else [])
        out += [(f'{p}.{a}.{m}_proj', H, H) for a in attns for m in c['attn_matrices']]
    if c['intermediate_lora']:
        out.append((f'{p}.fc1', H, I))
    if c['output_lora']:
        out.append((f'{p}.fc2', I, H))
    return out


def cases():
    g = torch.Generator().manual_seed(4444)
    yield 'lora_all', LORA_ALL, lora_params(LORA_ALL, g, E + DL, targets)
    ia3 = dict(IA3_KEYS)
    yield 'ia3', ia3, lora_params(ia3, g, E + DL, targets, ia3=True)
    sites = (lambda i: f'{layer_path(i)}.attention_adapters', lambda i: f'{layer_path(i)}.output_adapters')
    yield 'seq_bn', dict(BN_KEYS), bn_params(dict(BN_KEYS), g, E + DL, H, *sites)
    double = dict(BN_KEYS, mh_adapter=True, reduction_factor=8, non_linearity='swish', scaling=0.5)
    yield 'double_seq_bn_swish', double, bn_params(double, g, E + DL, H, *sites)
    yield 'prefix_tuning', PREFIX_KEYS, prefix_pools(g)


def main():
    ids, mask, dec = base['input_ids'], base['attention_mask'], base['decoder_input_ids']
    enc, got = forward(ids, mask, dec, None)
    run_cases(OUT, 'BartModel', 'bart', H, lambda ad: forward(ids, mask, dec, ad)[1], [(enc, base['encoder_last_hidden_state']), (got, base['last_hidden_state'])], cases())


if __name__ == '__main__':
    main()
