"""Shared pieces of the independent adapter references (gen_llama_adapters.py, gen_vit_adapters.py): a tiny
safetensors reader/writer, the adapter methods as the Python Adapters library computes them (../shared/FORMATS.md
§2), random adapter weights under the library's parameter names, and the case writer."""
import json
import os
import struct
import sys

import torch

D = torch.float64
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
SHARED = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, '..', 'shared'))
REF = os.path.join(SHARED, 'reference')
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
        out[k] = torch.frombuffer(bytearray(buf[8 + n + b:8 + n + e]), dtype=ST[m['dtype']]).reshape(m['shape']).clone()
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


def act(name, x):
    return {'relu': torch.relu, 'swish': torch.nn.functional.silu, 'silu': torch.nn.functional.silu,
            'gelu': torch.nn.functional.gelu, 'tanh': torch.tanh}[name](x)


LORA_KEYS = {'alpha': 8, 'architecture': 'lora', 'attn_matrices': ['q', 'v'], 'composition_mode': 'add', 'dropout': 0.0,
             'dtype': None, 'init_weights': 'lora', 'intermediate_lora': False, 'leave_out': [], 'output_lora': False,
             'r': 8, 'selfattn_lora': True, 'use_gating': False}
# the LoRA and (IA)^3 variants every architecture's script generates
LORA_ALL = dict(LORA_KEYS, attn_matrices=['q', 'k', 'v'], intermediate_lora=True, output_lora=True, r=4, alpha=8)
IA3_KEYS = dict(LORA_KEYS, alpha=1, attn_matrices=['k', 'v'], composition_mode='scale', init_weights='ia3', intermediate_lora=True, r=1)
BN_KEYS = json.load(open(os.path.join(REF, 'bert', 'seq_bn', 'a', 'adapter_config.json')))['config']


class Adapter:
    """One adapter 'a': its parameters (Python names, relative to the base model) and how it hooks in."""

    def __init__(self, config, params, aliases=None):
        self.config = config
        self.params = {k: v.to(D).clone().requires_grad_(True) for k, v in params.items()}
        # other names the library's state_dict (and hence its .bin) gives the same tensor: {alias: name}
        self.aliases = aliases or {}

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

    def bottleneck(self, site, hidden, input_tensor, layer_norm=None):
        """Sequential bottleneck at a sub-layer output: `hidden` the sub-layer output, `input_tensor` the residual
        stream entering it, `layer_norm` the sub-layer's post-LN (None for pre-LN models). Without an adapter at
        the site this is the model's own `layer_norm(hidden + input_tensor)`."""
        c = self.config
        pre = f'{site}.adapters.a'
        norm = layer_norm or (lambda y: y)
        if self.p(f'{pre}.adapter_up.weight') is None:
            return norm(hidden + input_tensor)
        residual = hidden if c['residual_before_ln'] is True else None
        if c['original_ln_before']:
            hidden = norm(hidden + input_tensor)
        if residual is None:
            residual = hidden
        down = act(c['non_linearity'], hidden @ self.p(f'{pre}.adapter_down.0.weight').T + self.p(f'{pre}.adapter_down.0.bias'))
        up = (down @ self.p(f'{pre}.adapter_up.weight').T + self.p(f'{pre}.adapter_up.bias')) * c['scaling']
        out = up + residual
        return norm(out + input_tensor) if c['original_ln_after'] else out


def prefix_kv(adapter, pool, layer, n_layers, batch, heads, head_dim):
    """Prefix tuning: (keys, values) [batch, heads, P, head_dim] of `layer` from the pool at `pool`
    (`E = wte(arange(P))`, `Linear2(tanh(Linear1(E)))`, view(batch, P, n_layers*2, heads, head_dim))."""
    p = adapter.p
    e = p(f'{pool}.wte.weight')
    hid = act(adapter.config['non_linearity'], e @ p(f'{pool}.control_trans.0.weight').T + p(f'{pool}.control_trans.0.bias'))
    kv = hid @ p(f'{pool}.control_trans.2.weight').T + p(f'{pool}.control_trans.2.bias')
    P = e.shape[0]
    kv = kv.expand(batch, P, kv.shape[-1]).reshape(batch, P, n_layers * 2, heads, head_dim).permute(2, 0, 3, 1, 4)
    return kv[2 * layer], kv[2 * layer + 1]


def prefix_params(config, g, hidden, rows, names):
    """Random prefix-pool weights under names[0] (the parameter name) and aliases for names[1:]."""
    P, b = config['prefix_length'], config['bottleneck_size']
    shapes = {'wte.weight': (P, hidden), 'control_trans.0.weight': (b, hidden), 'control_trans.0.bias': (b,),
              'control_trans.2.weight': (rows, b), 'control_trans.2.bias': (rows,)}
    params = {f'{names[0]}.{k}': 0.3 * torch.randn(*s, generator=g, dtype=D) for k, s in shapes.items()}
    aliases = {f'{n}.{k}': f'{names[0]}.{k}' for n in names[1:] for k in shapes}
    return params, aliases


PREFIX_KEYS = {'architecture': 'prefix_tuning', 'bottleneck_size': 16, 'cross_prefix': True, 'dropout': 0.0, 'encoder_prefix': True,
               'flat': False, 'leave_out': [], 'non_linearity': 'tanh', 'prefix_length': 5, 'shared_gating': True, 'use_gating': False}


def seq2seq_prefix_pools(g, hidden, enc_layers, dec_layers, modules):
    """Encoder-decoder prefix tuning: the encoder/self/cross pools, each under the first attention module's name
    (named_parameters(), FORMATS §4) and, as the .bin does, under the model and every module in `modules`."""
    params, aliases = {}, {}
    for pool, n in (('encoder_prefix', enc_layers), ('self_prefix', dec_layers), ('cross_prefix', dec_layers)):
        names = [f'{m}.prefix_tuning.pool.prefix_tunings.a.{pool}' for m in modules] + [f'prefix_tuning.prefix_tunings.a.{pool}']
        pp, aa = prefix_params(PREFIX_KEYS, g, hidden, n * 2 * hidden, names)
        params.update(pp)
        aliases.update(aa)
    return params, aliases


def lora_params(config, g, n_layers, layer_targets, ia3=False):
    """layer_targets(i, config) -> [(module name, in, out)] of the linears the config wraps in layer i."""
    out = {}
    for i in range(n_layers):
        if i in config['leave_out']:
            continue
        for mod, fin, fout in layer_targets(i, config):
            n = f'{mod}.loras.a'
            if ia3:
                out[f'{n}.lora_B'] = 1 + 0.3 * torch.randn(fout, 1, generator=g, dtype=D)
            else:
                out[f'{n}.lora_A'] = 0.3 * torch.randn(config['r'], fin, generator=g, dtype=D)
                out[f'{n}.lora_B'] = 0.3 * torch.randn(fout, config['r'], generator=g, dtype=D)
    return out


def bn_params(config, g, n_layers, hidden, attn_site, ffn_site):
    """attn_site(i) / ffn_site(i) -> the module path of layer i's mh / output bottleneck."""
    out, r = {}, hidden // config['reduction_factor']
    for i in range(n_layers):
        if i in config['leave_out']:
            continue
        for s in ([attn_site(i)] if config['mh_adapter'] else []) + ([ffn_site(i)] if config['output_adapter'] else []):
            n = f'{s}.adapters.a'
            out[f'{n}.adapter_down.0.weight'] = 0.3 * torch.randn(r, hidden, generator=g, dtype=D)
            out[f'{n}.adapter_down.0.bias'] = 0.1 * torch.randn(r, generator=g, dtype=D)
            out[f'{n}.adapter_up.weight'] = 0.3 * torch.randn(hidden, r, generator=g, dtype=D)
            out[f'{n}.adapter_up.bias'] = 0.1 * torch.randn(hidden, generator=g, dtype=D)
    return out


def write_case(out_dir, name, adapter, h, meta):
    """Backprop loss = Σ h² and write <out_dir>/<name>/{a/adapter_config.json, a/adapter.safetensors, expected.safetensors}."""
    loss = (h * h).sum()
    loss.backward()
    d = os.path.join(out_dir, name, 'a')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'adapter_config.json'), 'w') as f:
        json.dump(dict(meta, config=adapter.config, name='a', model_name='', version='adapters.1.1.0'), f, indent=2, sort_keys=True)
    saved = dict(adapter.params)
    saved.update({a: adapter.params[n] for a, n in adapter.aliases.items()})
    save_st(os.path.join(d, 'adapter.safetensors'), dict(sorted(saved.items())))
    exp = {'last_hidden_state': h, 'loss': loss.reshape(1)}
    exp.update({f'grad/{k}': v.grad for k, v in sorted(adapter.params.items())})
    save_st(os.path.join(out_dir, name, 'expected.safetensors'), exp)


def run_cases(out_dir, model_class, model_type, hidden, forward, base_pairs, cases):
    """Check the from-scratch base model against transformers' outputs (`base_pairs`: (ours, theirs)), then write
    every case: `forward(adapter)` gives the compared output (the decoder's for encoder-decoders); cases yield
    (name, config, params) with params a dict or (params, aliases)."""
    err = max((ours - theirs.to(D)).abs().max().item() for ours, theirs in base_pairs)
    assert err < 1e-5, f'base {model_class} disagrees with transformers: {err}'
    print(f'base model vs transformers: max abs diff {err:.2e}')
    plain = base_pairs[-1][0]
    meta = {'hidden_size': hidden, 'model_class': model_class, 'model_type': model_type}
    for name, config, params in cases:
        params, aliases = params if isinstance(params, tuple) else (params, {})
        ad = Adapter(config, params, aliases)
        h = forward(ad)
        write_case(out_dir, name, ad, h, meta)
        print(f'{name}: {len(params)} tensors, |h - base| max {(h - plain).abs().max().item():.3f}')
