#!/usr/bin/python3
"""Independent reference for adapters on T5 (issue 4): a from-scratch float64 PyTorch T5Model with LoRA, (IA)^3,
bottleneck adapters and prefix tuning (encoder/self/cross pools, the position bias spanning the prefix) placed as the Python Adapters library does on T5 (../shared/FORMATS.md §1.3: LoRA/IA3 on
…layer.0.SelfAttention.{q,k,v} and the decoder's layer.1.EncDecAttention.{q,k,v}, intermediate DenseReluDense.wi,
output DenseReluDense.wo; pre-LN bottlenecks with layer_norm=None: self-attention `…block.L.layer.0.adapters`,
FFN `encoder.block.L.layer.1.adapters` / `decoder.block.L.layer.2.adapters`, cross-attention left alone).

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_t5_adapters.py [SHARED]
Checks its base model against SHARED/reference/t5/base.safetensors (transformers' encoder and decoder outputs),
then writes test/fixtures/t5_adapters/<case>/ like gen_llama_adapters.py (last_hidden_state = decoder output).
"""
import json
import math
import os

import torch

from adapter_ref import (BN_KEYS, D, IA3_KEYS, LORA_ALL, PREFIX_KEYS, REF, ROOT, bn_params, load_st, lora_params,
                         prefix_kv, run_cases, seq2seq_prefix_pools)

OUT = os.path.join(ROOT, 'test', 'fixtures', 't5_adapters')
cfg = json.load(open(os.path.join(REF, 'models', 't5', 'config.json')))
W = {k: v.to(D) for k, v in load_st(os.path.join(REF, 'models', 't5', 'model.safetensors')).items()}
base = load_st(os.path.join(REF, 't5', 'base.safetensors'))
H, NH, HD, I = cfg['d_model'], cfg['num_heads'], cfg['d_kv'], cfg['d_ff']
E, DL, EPS = cfg['num_layers'], cfg['num_decoder_layers'], cfg['layer_norm_epsilon']
NB, MAXD = cfg['relative_attention_num_buckets'], cfg['relative_attention_max_distance']
NEG = torch.finfo(D).min


def rms(name):
    return lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * W[f'{name}.weight']


def bucket(rel, bidirectional):
    """T5's relative position bucket: exact for small distances, log-spaced up to max_distance."""
    n, out = NB, torch.zeros_like(rel)
    if bidirectional:
        n //= 2
        out += (rel > 0).long() * n
        rel = rel.abs()
    else:
        rel = -torch.min(rel, torch.zeros_like(rel))
    exact = n // 2
    large = exact + (torch.log(rel.double() / exact) / math.log(MAXD / exact) * (n - exact)).long()
    large = torch.min(large, torch.full_like(large, n - 1))
    return out + torch.where(rel < exact, rel, large)


def position_bias(stack, T, S, bidirectional):
    rel = torch.arange(S)[None, :] - torch.arange(T)[:, None]
    table = W[f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight']
    return table[bucket(rel, bidirectional)].permute(2, 0, 1)[None]  # [1, heads, T, S]


def forward(ids, mask, dec_ids, ad):
    def lin(name, inp):
        y = inp @ W[f'{name}.weight'].T
        return ad.linear(name, inp, y) if ad else y

    def residual(site, out, x):
        return ad.bottleneck(site, out, x) if ad else out + x

    def attention(p, x, kv, bias, pool=None):
        B, T, S = x.shape[0], x.shape[1], kv.shape[1]
        q = lin(f'{p}.q', x).view(B, T, NH, HD).transpose(1, 2)
        k = lin(f'{p}.k', kv).view(B, S, NH, HD).transpose(1, 2)
        v = lin(f'{p}.v', kv).view(B, S, NH, HD).transpose(1, 2)
        if P:
            # prefix keys/values in front; `bias` already spans them (position bias over P + S keys, mask 0 there)
            pk, pv = prefix_kv(ad, f'{POOL}.{pool[0]}', pool[1], pool[2], B, NH, HD)
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        att = torch.softmax(q @ k.transpose(-1, -2) + bias, -1) @ v  # T5: no 1/sqrt(d) scaling
        return lin(f'{p}.o', att.transpose(1, 2).reshape(B, T, NH * HD))

    def ffn(p, x):
        return lin(f'{p}.DenseReluDense.wo', torch.relu(lin(f'{p}.DenseReluDense.wi', rms(f'{p}.layer_norm')(x))))

    B, T = ids.shape
    P = ad.config['prefix_length'] if ad and ad.config.get('architecture') == 'prefix_tuning' else 0
    zeros = torch.zeros(B, 1, 1, P, dtype=D)
    pad = torch.zeros(B, T, dtype=D).masked_fill(mask == 0, NEG)[:, None, None, :]
    # with prefixes the stack's position bias covers P + T keys, the prefix at key positions 0..P-1 (FORMATS §5.2)
    enc_bias = position_bias('encoder', T, P + T, True) + torch.cat([zeros, pad], -1)
    x = W['shared.weight'][ids]
    for i in range(E):
        p = f'encoder.block.{i}'
        h = rms(f'{p}.layer.0.layer_norm')(x)
        x = residual(f'{p}.layer.0', attention(f'{p}.layer.0.SelfAttention', h, h, enc_bias, ('encoder_prefix', i, E)), x)
        x = residual(f'{p}.layer.1', ffn(f'{p}.layer.1', x), x)
    enc = rms('encoder.final_layer_norm')(x)
    S = dec_ids.shape[1]
    causal = torch.zeros(S, S, dtype=D).masked_fill(~torch.tril(torch.ones(S, S, dtype=torch.bool)), NEG)
    dec_bias = position_bias('decoder', S, P + S, False) + torch.cat([torch.zeros(S, P, dtype=D), causal], -1)
    cross_bias = torch.cat([zeros, pad], -1)  # cross-attention: no position bias
    y = W['shared.weight'][dec_ids]
    for i in range(DL):
        p = f'decoder.block.{i}'
        h = rms(f'{p}.layer.0.layer_norm')(y)
        y = residual(f'{p}.layer.0', attention(f'{p}.layer.0.SelfAttention', h, h, dec_bias, ('self_prefix', i, DL)), y)
        y = y + attention(f'{p}.layer.1.EncDecAttention', rms(f'{p}.layer.1.layer_norm')(y), enc, cross_bias, ('cross_prefix', i, DL))
        y = residual(f'{p}.layer.2', ffn(f'{p}.layer.2', y), y)
    return enc, rms('decoder.final_layer_norm')(y)


# named_parameters() lists all three pools under the first attention module's alias (FORMATS §4)
POOL = 'encoder.block.0.layer.0.SelfAttention.prefix_tuning.pool.prefix_tunings.a'


def prefix_pools(g):
    modules = [f'encoder.block.{i}.layer.0.SelfAttention' for i in range(E)] + \
        [f'decoder.block.{i}.layer.{a}' for i in range(DL) for a in ('0.SelfAttention', '1.EncDecAttention')]
    return seq2seq_prefix_pools(g, H, E, DL, modules)


def block(i):
    """Adapter layer ids count the encoder's blocks first, then the decoder's."""
    return (f'encoder.block.{i}', 1) if i < E else (f'decoder.block.{i - E}', 2)


def targets(i, c):
    p, ff = block(i)
    out = []
    if c['selfattn_lora']:
        attns = [f'{p}.layer.0.SelfAttention'] + ([f'{p}.layer.1.EncDecAttention'] if i >= E else [])
        out += [(f'{a}.{m}', H, NH * HD) for a in attns for m in c['attn_matrices']]
    if c['intermediate_lora']:
        out.append((f'{p}.layer.{ff}.DenseReluDense.wi', H, I))
    if c['output_lora']:
        out.append((f'{p}.layer.{ff}.DenseReluDense.wo', I, H))
    return out


def cases():
    g = torch.Generator().manual_seed(4646)
    yield 'lora_all', LORA_ALL, lora_params(LORA_ALL, g, E + DL, targets)
    ia3 = dict(IA3_KEYS)
    yield 'ia3', ia3, lora_params(ia3, g, E + DL, targets, ia3=True)
    sites = (lambda i: f'{block(i)[0]}.layer.0', lambda i: f'{block(i)[0]}.layer.{block(i)[1]}')
    double = dict(BN_KEYS, mh_adapter=True, reduction_factor=8, non_linearity='swish', scaling=0.5)
    yield 'double_seq_bn_swish', double, bn_params(double, g, E + DL, H, *sites)
    yield 'prefix_tuning', PREFIX_KEYS, prefix_pools(g)


def main():
    ids, mask, dec = base['input_ids'], base['attention_mask'], base['decoder_input_ids']
    enc, got = forward(ids, mask, dec, None)
    run_cases(OUT, 'T5Model', 't5', H, lambda ad: forward(ids, mask, dec, ad)[1], [(enc, base['encoder_last_hidden_state']), (got, base['last_hidden_state'])], cases())


if __name__ == '__main__':
    main()
