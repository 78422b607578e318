#!/usr/bin/python3
"""Python-side check of adapters saved by adapters-node.

Usage:  python3 test/reference/check_python_load.py SAVED_DIR [BASE_MODEL_DIR]

SAVED_DIR is a folder written by `model.saveAdapter(dir, name, {format})` (adapter_config.json +
adapter.safetensors or pytorch_adapter.bin, optionally head_config.json + model_head.*) and, when it exists,
SAVED_DIR/expected.json = {"input_ids": [[...]], "last_hidden_state_sum": x} written by the caller.

Always (needs only torch): every weight file obeys its format — pytorch_*.bin loads with
torch.load(weights_only=True); *.safetensors has a valid header (sorted, non-overlapping, in-bounds offsets,
8-byte aligned header) — and adapter_config.json has the keys the Python library writes.
When the `adapters` and `transformers` packages are importable and BASE_MODEL_DIR is given: the base model is
loaded with AutoAdapterModel, the folder with load_adapter(..., use_safetensors=...), the adapter activated,
and the output compared with expected.json (1e-4 relative). Exit status 0 = all checks passed.
"""
import json
import os
import struct
import sys

import torch


def check_safetensors(path):
    with open(path, 'rb') as f:
        buf = f.read()
    (n,) = struct.unpack('<Q', buf[:8])
    assert n % 8 == 0, f'{path}: header length {n} is not a multiple of 8'
    header = json.loads(buf[8:8 + n])
    data = len(buf) - 8 - n
    spans = []
    for k, v in header.items():
        if k == '__metadata__':
            continue
        b, e = v['data_offsets']
        assert 0 <= b <= e <= data, f'{path}: {k} offsets out of bounds'
        spans.append((b, e, k))
    spans.sort()
    for (b0, e0, k0), (b1, e1, k1) in zip(spans, spans[1:]):
        assert e0 <= b1, f'{path}: {k0} and {k1} overlap'
    return len(spans)


def main():
    saved = sys.argv[1]
    base = sys.argv[2] if len(sys.argv) > 2 else None
    n = 0
    for f in sorted(os.listdir(saved)):
        p = os.path.join(saved, f)
        if f.endswith('.bin'):
            d = torch.load(p, weights_only=True)
            assert all(isinstance(v, torch.Tensor) for v in d.values()), f'{p}: non-tensor values'
            print(f'{f}: torch.load(weights_only=True) read {len(d)} tensors')
            n += 1
        elif f.endswith('.safetensors'):
            print(f'{f}: valid safetensors, {check_safetensors(p)} tensors')
            n += 1
    cfg = json.load(open(os.path.join(saved, 'adapter_config.json')))
    for k in ('config', 'hidden_size', 'model_class', 'model_type', 'name', 'version'):
        assert k in cfg, f'adapter_config.json lacks {k}'
    assert n, 'no weight file found'
    try:
        import adapters  # noqa: F401
        from adapters import AutoAdapterModel
    except ImportError:
        print('the adapters library is not importable here: format checks only')
        return 0
    if not base:
        print('no BASE_MODEL_DIR given: format checks only')
        return 0
    model = AutoAdapterModel.from_pretrained(base)
    use_st = os.path.exists(os.path.join(saved, 'adapter.safetensors'))
    name = model.load_adapter(saved, use_safetensors=use_st)
    model.set_active_adapters(name)
    model.eval()
    exp_file = os.path.join(saved, 'expected.json')
    if os.path.exists(exp_file):
        exp = json.load(open(exp_file))
        with torch.no_grad():
            out = model(input_ids=torch.tensor(exp['input_ids']), output_hidden_states=True)
        got = float(out.hidden_states[-1].sum())
        want = exp['last_hidden_state_sum']
        assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), f'output sum {got} vs {want}'
        print(f'output matches adapters-node ({got:.6f})')
    print(f'loaded adapter {name!r} into the Python library')
    return 0


if __name__ == '__main__':
    sys.exit(main())
