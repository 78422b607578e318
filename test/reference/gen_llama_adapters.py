#!/usr/bin/python3
"""Independent reference for adapters on LLaMA (issue 4): a from-scratch float64 PyTorch LlamaModel with
LoRA, (IA)^3 and bottleneck adapters wired in as the Python Adapters library does on Llama (../shared/FORMATS.md
§1.3, §2: intermediate_lora wraps mlp.down_proj, output_lora mlp.up_proj, bottlenecks are called with
layer_norm=None so seq_bn on the FFN = residual + ffn + up(act(down(ffn + residual)))).

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_llama_adapters.py [SHARED]
SHARED defaults to ../shared. Inputs: SHARED/reference/models/llama (config + weights) and
SHARED/reference/llama/base.safetensors (input_ids, attention_mask, last_hidden_state). The script first checks
its own base model against the transformers output stored there, then writes, for each case, under
test/fixtures/llama_adapters/<case>/:
  a/adapter_config.json, a/adapter.safetensors   the adapter folder in the Python library's layout and names
  expected.safetensors                            last_hidden_state with the adapter active (f32), and
                                                  grad/<param> of loss = sum(h^2) for every adapter parameter
"""
import json
import math
import os
import struct
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
SHARED = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, '..', 'shared'))
REF = os.path.join(SHARED, 'reference')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'llama_adapters')
D = torch.float64

ST = {'F32': torch.float32, 'I64': torch.int64, 'F64': torch.float64}


def load_st(path):
    with open(path, 'rb') as f:
        buf = f.read()
    (n,) = struct.unpack('<Q', buf[:8])
    header = json.loads(buf[8:8 + n])
    out = {}
    for k, m in header.items():
        if k == '__metadata__':
            continue
        b, e = m['data_offsets']
        t = torch.frombuffer(bytearray(buf[8 + n + b:8 + n + e]), dtype=ST[m['dtype']]).reshape(m['shape'])
        out[k] = t.clone()
    return out


def save_st(path, tensors):
    header, blobs, off = {}, [], 0
    for k, t in tensors.items():
        raw = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[k] = {'dtype': 'F32', 'shape': list(t.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


cfg = json.load(open(os.path.join(REF, 'models', 'llama', 'config.json')))
W = {k: v.to(D) for k, v in load_st(os.path.join(REF, 'models', 'llama', 'model.safetensors')).items()}
base = load_st(os.path.join(REF, 'llama', 'base.safetensors'))
H, NH, NKV, HD = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['head_dim']
L, EPS, THETA = cfg['num_hidden_layers'], cfg['rms_norm_eps'], cfg['rope_theta']


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def rot_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)


def act(name, x):
    return {'relu': torch.relu, 'swish': torch.nn.functional.silu, 'silu': torch.nn.functional.silu,
            'gelu': lambda y: torch.nn.functional.gelu(y), 'tanh': torch.tanh}[name](x)


class Adapter:
    """One adapter's parameters (Python names, relative to the base model) and how it hooks in."""

    def __init__(self, config, params):
        self.config = config
        self.params = {k: v.to(D).clone().requires_grad_(True) for k, v in params.items()}

    def p(self, name):
        return self.params.get(name)

    def linear(self, name, x, y):
        """y = module(x) for the wrapped linear `name`; apply LoRA (add) or (IA)^3 (scale) if present."""
        c = self.config
        A, B = self.p(f'{name}.loras.a.lora_A'), self.p(f'{name}.loras.a.lora_B')
        if B is None:
            return y
        if c['composition_mode'] == 'scale':
            return y * (B.reshape(-1) * c['alpha'])
        return y + (x @ A.T @ B.T) * (c['alpha'] / c['r'])

    def bottleneck(self, site, hidden, input_tensor):
        """Pfeiffer-style sequential bottleneck with layer_norm=None (pre-LN model)."""
        c = self.config
        pre = f'{site}.adapters.a'
        if self.p(f'{pre}.adapter_up.weight') is None:
            return hidden + input_tensor
        residual = hidden if c['residual_before_ln'] is True else None
        if c['original_ln_before']:
            hidden = hidden + input_tensor
        if residual is None:
            residual = hidden
        down = act(c['non_linearity'], hidden @ self.p(f'{pre}.adapter_down.0.weight').T + self.p(f'{pre}.adapter_down.0.bias'))
        up = (down @ self.p(f'{pre}.adapter_up.weight').T + self.p(f'{pre}.adapter_up.bias')) * c['scaling']
        out = up + residual
        return out + input_tensor if c['original_ln_after'] else out


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
        lin = lambda name, inp: ad.linear(name, inp, inp @ W[f'{name}.weight'].T) if ad else inp @ W[f'{name}.weight'].T
        h = rms(x, W[f'{p}.input_layernorm.weight'])
        q = lin(f'{p}.self_attn.q_proj', h).view(B, T, NH, HD).transpose(1, 2)
        k = lin(f'{p}.self_attn.k_proj', h).view(B, T, NKV, HD).transpose(1, 2)
        v = lin(f'{p}.self_attn.v_proj', h).view(B, T, NKV, HD).transpose(1, 2)
        q, k = q * cos + rot_half(q) * sin, k * cos + rot_half(k) * sin
        k, v = k.repeat_interleave(NH // NKV, 1), v.repeat_interleave(NH // NKV, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HD) + bias, -1) @ v
        o = lin(f'{p}.self_attn.o_proj', att.transpose(1, 2).reshape(B, T, NH * HD))
        x = ad.bottleneck(f'{p}.attention_adapters', o, x) if ad else o + x
        h = rms(x, W[f'{p}.post_attention_layernorm.weight'])
        up = lin(f'{p}.mlp.up_proj', h)
        mid = torch.nn.functional.silu(lin(f'{p}.mlp.gate_proj', h)) * up
        f = lin(f'{p}.mlp.down_proj', mid)
        x = ad.bottleneck(f'{p}.output_adapters', f, x) if ad else f + x
    return rms(x, W['norm.weight'])


LORA_KEYS = {'alpha': 8, 'architecture': 'lora', 'attn_matrices': ['q', 'v'], 'composition_mode': 'add', 'dropout': 0.0,
             'dtype': None, 'init_weights': 'lora', 'intermediate_lora': False, 'leave_out': [], 'output_lora': False,
             'r': 8, 'selfattn_lora': True, 'use_gating': False}
BN_KEYS = json.load(open(os.path.join(REF, 'bert', 'seq_bn', 'a', 'adapter_config.json')))['config']


def lora_params(config, g, ia3=False):
    out = {}
    sizes = {'q': ('self_attn.q_proj', H, NH * HD), 'k': ('self_attn.k_proj', H, NKV * HD), 'v': ('self_attn.v_proj', H, NKV * HD)}
    for i in range(L):
        if i in config['leave_out']:
            continue
        targets = [sizes[m] for m in config['attn_matrices']] if config['selfattn_lora'] else []
        if config['intermediate_lora']:
            targets.append(('mlp.down_proj', cfg['intermediate_size'], H))
        if config['output_lora']:
            targets.append(('mlp.up_proj', H, cfg['intermediate_size']))
        for mod, fin, fout in targets:
            n = f'layers.{i}.{mod}.loras.a'
            if ia3:
                out[f'{n}.lora_B'] = 1 + 0.3 * torch.randn(fout, 1, generator=g, dtype=D)
            else:
                out[f'{n}.lora_A'] = 0.3 * torch.randn(config['r'], fin, generator=g, dtype=D)
                out[f'{n}.lora_B'] = 0.3 * torch.randn(fout, config['r'], generator=g, dtype=D)
    return out


def bn_params(config, g):
    out, r = {}, H // config['reduction_factor']
    for i in range(L):
        if i in config['leave_out']:
            continue
        sites = (['attention_adapters'] if config['mh_adapter'] else []) + (['output_adapters'] if config['output_adapter'] else [])
        for s in sites:
            n = f'layers.{i}.{s}.adapters.a'
            out[f'{n}.adapter_down.0.weight'] = 0.3 * torch.randn(r, H, generator=g, dtype=D)
            out[f'{n}.adapter_down.0.bias'] = 0.1 * torch.randn(r, generator=g, dtype=D)
            out[f'{n}.adapter_up.weight'] = 0.3 * torch.randn(H, r, generator=g, dtype=D)
            out[f'{n}.adapter_up.bias'] = 0.1 * torch.randn(H, generator=g, dtype=D)
    return out


def cases():
    g = torch.Generator().manual_seed(4242)
    lora_all = dict(LORA_KEYS, attn_matrices=['q', 'k', 'v'], intermediate_lora=True, output_lora=True, r=4, alpha=8)
    yield 'lora_all', lora_all, lora_params(lora_all, g)
    lora_leave = dict(LORA_KEYS, leave_out=[0])
    yield 'lora_leave_out', lora_leave, lora_params(lora_leave, g)
    ia3 = dict(LORA_KEYS, alpha=1, attn_matrices=['k', 'v'], composition_mode='scale', init_weights='ia3',
               intermediate_lora=True, r=1)
    yield 'ia3', ia3, lora_params(ia3, g, ia3=True)
    seq_bn = dict(BN_KEYS)
    yield 'seq_bn', seq_bn, bn_params(seq_bn, g)
    double = dict(BN_KEYS, mh_adapter=True, reduction_factor=8, non_linearity='swish', scaling=0.5)
    yield 'double_seq_bn_swish', double, bn_params(double, g)


def main():
    ids, mask = base['input_ids'], base['attention_mask']
    got = forward(ids, mask, None)
    err = (got - base['last_hidden_state'].to(D)).abs().max().item()
    assert err < 1e-5, f'base LlamaModel disagrees with transformers: {err}'
    print(f'base model vs transformers: max abs diff {err:.2e}')
    for name, config, params in cases():
        ad = Adapter(config, params)
        h = forward(ids, mask, ad)
        (h * h).sum().backward()
        d = os.path.join(OUT, name, 'a')
        os.makedirs(d, exist_ok=True)
        meta = {'config': config, 'hidden_size': H, 'model_class': 'LlamaModel', 'model_name': '', 'model_type': 'llama',
                'name': 'a', 'version': 'adapters.1.1.0'}
        with open(os.path.join(d, 'adapter_config.json'), 'w') as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        save_st(os.path.join(d, 'adapter.safetensors'), {k: v for k, v in sorted(ad.params.items())})
        exp = {'last_hidden_state': h, 'loss': (h * h).sum().reshape(1)}
        exp.update({f'grad/{k}': v.grad for k, v in sorted(ad.params.items())})
        save_st(os.path.join(OUT, name, 'expected.safetensors'), exp)
        print(f'{name}: {len(params)} tensors, |h - base| max {(h - got).abs().max().item():.3f}')


if __name__ == '__main__':
    main()
