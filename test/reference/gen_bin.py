#!/usr/bin/python3
"""Generate the PyTorch checkpoint fixtures of test/io/torch_bin.test.ts.

Run with Debian's python (it has torch 1.13):  /usr/bin/python3 test/reference/gen_bin.py

Writes into test/fixtures/bin/
  state.bin                 torch.save (zip format, pickle protocol 2) of a module state dict (with the
                            `_metadata` attribute torch adds) extended with: f32, f16, bf16, f64, i64 (values
                            beyond 2**53), i32, bool, a 0-d and an empty tensor, a transposed (non-contiguous)
                            tensor, two views sharing one storage (one with a storage offset), an nn.Parameter,
                            a nested OrderedDict holding a tensor and a list of tensors, and a non-tensor int.
  state_p4.bin              the same object saved with pickle protocol 4 (STACK_GLOBAL, FRAME, MEMOIZE, ...).
  state_legacy.bin          the same object in the legacy non-zip format (_use_new_zipfile_serialization=False).
  state_deflated.bin        state.bin re-packed by Python's zipfile with deflate compression (torch itself
                            stores entries uncompressed; other tools may not).
  state_expected.safetensors  the expected tensors, flattened with '.'-joined keys (`nested.inner.w`,
                            `nested.list.0`), contiguous, written by hand below; f64 is stored narrowed to F32
                            (the reader converts f64 to f32).
  malicious_system.bin      torch.save of an object whose __reduce__ calls os.system('touch /tmp/pwned_adapters')
                            (pickle global `posix.system`); nothing runs when it is *written*.
  malicious_eval_p4.bin     torch.save (protocol 4, STACK_GLOBAL) of a state dict whose value reduces through
                            builtins.eval.
  malicious_raw.pkl         a bare pickle (no zip) calling subprocess.call(['touch', '/tmp/pwned_adapters']).
"""
import collections
import json
import os
import struct
import subprocess

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, '..', 'fixtures', 'bin')
PWNED = '/tmp/pwned_adapters'


def build_state():
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 3, generator=g))
        lin.bias.copy_(torch.randn(2, generator=g))
    sd = lin.state_dict()  # an OrderedDict carrying `_metadata` (pickled with BUILD)
    sd['f32'] = torch.randn(3, 4, generator=g)
    sd['f16'] = torch.randn(5, generator=g).half()
    sd['bf16'] = torch.randn(2, 3, generator=g).bfloat16()
    sd['f64'] = torch.randn(4, generator=g, dtype=torch.float64)
    sd['i64'] = torch.tensor([-(2 ** 40), 0, 7, 2 ** 62 + 1, -1], dtype=torch.int64)
    sd['i32'] = torch.tensor([[-5, 2 ** 31 - 1], [-(2 ** 31), 9]], dtype=torch.int32)
    sd['bool'] = torch.tensor([True, False, True, True])
    sd['scalar'] = torch.tensor(3.25)
    sd['empty'] = torch.zeros(0, 3)
    sd['transposed'] = torch.randn(3, 5, generator=g).t()  # (5, 3), stride (1, 5)
    base = torch.randn(4, 3, generator=g)
    sd['shared_a'] = base                  # whole storage
    sd['shared_b'] = base[1:3, 1:]         # same storage, offset 4, stride (3, 1)
    sd['param'] = torch.nn.Parameter(torch.randn(2, generator=g))  # _rebuild_parameter
    sd['nested'] = collections.OrderedDict(
        inner=collections.OrderedDict(w=torch.arange(6, dtype=torch.float32).reshape(2, 3)),
        list=[torch.tensor([1, 2], dtype=torch.int64), torch.tensor([0.5])],
    )
    sd['epoch'] = 3  # not a tensor: skipped by the reader
    assert not sd['transposed'].is_contiguous()
    assert sd['shared_b'].storage_offset() == 4
    return sd


def flatten(obj, prefix=''):
    out = collections.OrderedDict()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f'{prefix}{k}.'))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f'{prefix}{i}.'))
    elif isinstance(obj, torch.Tensor):
        out[prefix[:-1]] = obj.detach()
    return out


ST_DTYPE = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.int64: 'I64',
            torch.int32: 'I32', torch.bool: 'BOOL'}


def save_safetensors(path, tensors):
    """Hand-written safetensors writer (8-byte LE header length, JSON header, raw LE data)."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        if t.dtype == torch.float64:
            t = t.float()
        t = t.contiguous()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[name] = {'dtype': ST_DTYPE[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


class TouchFile:
    """Pickles to os.system('touch /tmp/pwned_adapters'); only unpickling would run it."""

    def __reduce__(self):
        return (os.system, (f'touch {PWNED}',))


class EvalIt:
    def __reduce__(self):
        return (eval, (f"__import__('os').system('touch {PWNED}')",))


class SubprocessIt:
    def __reduce__(self):
        return (subprocess.call, (['touch', PWNED],))


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = build_state()
    torch.save(sd, os.path.join(OUT, 'state.bin'))
    torch.save(sd, os.path.join(OUT, 'state_p4.bin'), pickle_protocol=4)
    torch.save(sd, os.path.join(OUT, 'state_legacy.bin'), _use_new_zipfile_serialization=False)
    save_safetensors(os.path.join(OUT, 'state_expected.safetensors'), flatten(sd))

    import zipfile
    with zipfile.ZipFile(os.path.join(OUT, 'state.bin')) as src, \
            zipfile.ZipFile(os.path.join(OUT, 'state_deflated.bin'), 'w', zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename.replace('state/', 'state_deflated/', 1), src.read(info.filename))

    # round-trip sanity with torch itself
    for name in ('state.bin', 'state_p4.bin', 'state_legacy.bin', 'state_deflated.bin'):
        back = flatten(torch.load(os.path.join(OUT, name)))
        for k, v in flatten(sd).items():
            assert torch.equal(back[k], v), (name, k)

    torch.save(collections.OrderedDict(w=torch.ones(2), evil=TouchFile()), os.path.join(OUT, 'malicious_system.bin'))
    torch.save(collections.OrderedDict(w=torch.ones(2), evil=EvalIt()), os.path.join(OUT, 'malicious_eval_p4.bin'),
               pickle_protocol=4)
    import pickle
    with open(os.path.join(OUT, 'malicious_raw.pkl'), 'wb') as f:
        pickle.dump(SubprocessIt(), f, protocol=2, fix_imports=False)
    assert not os.path.exists(PWNED), 'generating the fixtures must not run the payload'
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == '__main__':
    main()
