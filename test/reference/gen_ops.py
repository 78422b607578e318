#!/usr/bin/python3
"""Generate golden op fixtures for test/ops/golden.test.ts.

Run with Debian's python (it has torch):  /usr/bin/python3 test/reference/gen_ops.py

Writes
  test/fixtures/ops/ops.safetensors   all tensors (hand-written safetensors)
  test/fixtures/ops/ops.json          case descriptions

Conventions (also written into ops.json under "conventions"):
  * f32 cases: inputs are random f32; the reference is computed by PyTorch in
    float64 from those exact f32 values and cast back to f32 (outputs + grads).
    grads are d/d(input) of  sum_j sum(out_j * gout_j).
    A grad entry is null for inputs that do not require grad (int/bool
    tensors, rope cos/sin, ...).  The test sets requiresGrad = (grad != null).
  * "transposeInputs": [i] -- input i is stored transposed-contiguous (last two
    dims swapped); the test creates the leaf from the stored data and passes
    leaf.transpose(-2, -1) to the op.  The stored grad for that input is the
    grad of the *stored leaf* (i.e. also in the swapped layout).
    "noncontig" is an alias holding the same list.
  * "tensorAttrs": names of attrs whose value is a tensor key (sdpa mask,
    keyPaddingMask, prefixK, prefixV).  "attrGrads": {attrName: gradKey} for
    tensor attrs that require grad (sdpa prefixK / prefixV).
  * "scalar" attr on add/sub/mul/div: second operand is that JS number.
  * bf16 cases ("dtype": "bf16"): float inputs stored as BF16 (raw bits),
    outputs, gouts and grads are PyTorch's own bf16 CPU results stored as BF16
    (each checked against float64 on the same inputs to half the tolerance
    when generated); integer / bool inputs as in f32 cases.
  * scaledDotProductAttention reference (float64): scores = q@k^T * scale
    (default 1/sqrt(D)); + additive "mask" (only in cases without prefixes);
    then every entry masked by isCausal (key j visible to query i iff
    j <= i + (Tk - Tq)) and/or keyPaddingMask (bool (B,Tk), true = keep) gets
    finfo(float32).min added exactly once; prefixK/prefixV (B,Hkv,P,D) are
    prepended to k/v and are never masked; GQA head h uses kv head
    h // (H / Hkv).  In sdpa_fully_masked_row batch 1 has every key masked, so
    its output is the uniform average of v over keys.
  * Attr names: add/sub/mul/div {scalar?, scalarFirst?} (scalarFirst: the number is the first operand); pow {exponent}; clamp {min, max};
    sum/mean {dim?, keepdim?} (no dim = reduce all -> 0-d); max {dim, keepdim};
    linear {layout?: "conv1d"} (w is (in,out) then); gelu {approximate};
    softmax/logSoftmax {dim}; layerNorm/rmsNorm {eps}; crossEntropy
    {ignoreIndex, labelSmoothing, reduction}; mseLoss {reduction};
    concat {dim} (all inputs are the list); split {splitSize, dim};
    slice {dim, start, end, step}; indexSelect/gather {dim} (inputs [x, idx]);
    transpose {dim0, dim1}; permute {dims}; reshape {shape};
    maskedFill {value} (inputs [x, mask]); where (inputs [cond, a, b]);
    rope {interleaved} (inputs [x, cos, sin]); scaledDotProductAttention
    {isCausal?, scale?, mask?, keyPaddingMask?, prefixK?, prefixV?}.
  * Tolerances: |got - want| <= atol + rtol * |want|, elementwise.  The f32
    default is rtol 1e-5 / atol 1e-6; a case is widened one decade at a time
    (recorded in "tolWidened") only if PyTorch's own float32 computation fails
    the default against the float64 reference.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

SEED = 1234
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../test
OUT_DIR = os.path.join(ROOT, "fixtures", "ops")

rng = np.random.default_rng(SEED)
torch.manual_seed(SEED)

F32_TOL_LADDER = [(1e-5, 1e-6), (1e-4, 1e-5), (1e-3, 1e-4)]
BF16_TOL = (2e-2, 2e-2)
FMIN = float(torch.finfo(torch.float32).min)

TENSORS = {}  # key -> (dtype_str, shape, bytes)
CASES = []
REPORT = []


# ----------------------------------------------------------------------------
# random helpers (all produce numpy arrays)
# ----------------------------------------------------------------------------
def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def uniform(lo, hi, *shape):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def positive(*shape):
    return uniform(0.5, 2.0, *shape)


def away_from_zero(*shape):
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return (sign * rng.uniform(0.5, 2.0, shape)).astype(np.float32)


def ints(lo, hi, *shape):
    return rng.integers(lo, hi, shape).astype(np.int64)


def distinct(*shape):
    """bf16-exact values on a shuffled grid (max without ties)."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 0.125).astype(np.float32).reshape(shape)


def bools(p_true, *shape):
    return rng.random(shape) < p_true


# ----------------------------------------------------------------------------
# storage
# ----------------------------------------------------------------------------
def put(key, arr, bf16=False):
    assert key not in TENSORS, key
    if bf16:
        # arr is a torch bf16 tensor
        t = arr.detach().contiguous()
        raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        TENSORS[key] = ("BF16", list(t.shape), raw)
        return key
    arr = np.array(arr, order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
    if arr.dtype == np.float32:
        TENSORS[key] = ("F32", list(arr.shape), arr.astype("<f4").tobytes())
    elif arr.dtype == np.int64:
        TENSORS[key] = ("I64", list(arr.shape), arr.astype("<i8").tobytes())
    elif arr.dtype == np.bool_:
        TENSORS[key] = ("BOOL", list(arr.shape), arr.astype(np.uint8).tobytes())
    else:
        raise TypeError(f"{key}: unsupported dtype {arr.dtype}")
    return key


def write_safetensors(path):
    header = {}
    off = 0
    blobs = []
    for key, (dt, shape, raw) in TENSORS.items():
        header[key] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - (8 + len(hjson)) % 8) % 8)  # keep data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8 : 8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    np_dt = {"F32": "<f4", "I64": "<i8", "BF16": "<u2", "BOOL": "u1"}
    for k, meta in header.items():
        if k == "__metadata__":
            continue
        b, e = meta["data_offsets"]
        a = np.frombuffer(buf[base + b : base + e], dtype=np_dt[meta["dtype"]]).reshape(meta["shape"])
        out[k] = (meta["dtype"], a)
    return out


# ----------------------------------------------------------------------------
# f32 case machinery
# ----------------------------------------------------------------------------
def swap_last2(a):
    return np.ascontiguousarray(np.swapaxes(a, -1, -2))


def allclose_report(got, want, rtol, atol):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False, f"shape {got.shape} vs {want.shape}"
    if got.size == 0:
        return True, ""
    err = np.abs(got - want)
    ok = err <= atol + rtol * np.abs(want)
    ok &= np.isfinite(got) == np.isfinite(want)
    return bool(ok.all()), f"maxabs={err.max():.3g}"


def run_torch(fn, inputs, req, tattrs, tattr_req, dtype, gouts):
    """Run fn in `dtype` for float inputs; returns (outs list, grads list, attr grads dict)."""
    ts = []
    for a, r in zip(inputs, req):
        if a.dtype == np.float32:
            t = torch.tensor(a, dtype=dtype)
            t.requires_grad_(r)
        else:
            t = torch.tensor(a)
        ts.append(t)
    ta = {}
    for name, a in tattrs.items():
        if a.dtype == np.float32:
            t = torch.tensor(a, dtype=dtype)
            t.requires_grad_(tattr_req.get(name, False))
        else:
            t = torch.tensor(a)
        ta[name] = t
    out = fn(ts, ta)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    leaves = [t for t, r in zip(ts, req) if r] + [ta[n] for n in tattrs if tattr_req.get(n, False)]
    grads_in = [None] * len(ts)
    grads_attr = {}
    if leaves:
        loss = sum((o * torch.tensor(g, dtype=dtype)).sum() for o, g in zip(outs, gouts))
        gs = torch.autograd.grad(loss, leaves, allow_unused=True)
        i = 0
        for j, r in enumerate(req):
            if r:
                g = gs[i]
                grads_in[j] = torch.zeros_like(ts[j]) if g is None else g
                i += 1
        for n in tattrs:
            if tattr_req.get(n, False):
                g = gs[i]
                grads_attr[n] = torch.zeros_like(ta[n]) if g is None else g
                i += 1
    to_np = lambda t: t.detach().to(torch.float64).numpy()
    return (
        [to_np(o) for o in outs],
        [None if g is None else to_np(g) for g in grads_in],
        {n: to_np(g) for n, g in grads_attr.items()},
    )


def case(name, op, inputs, fn, attrs=None, no_grad=(), tensor_attrs=None, attr_grad=(),
         transpose_inputs=(), outputs_are_list=False):
    """Register an f32 case.

    inputs: logical (un-transposed) numpy inputs, fed to fn as torch tensors.
    fn(ts, tattrs) -> tensor | list of tensors (torch semantics).
    no_grad: indices of float inputs that must not require grad.
    tensor_attrs: {attrName: numpy array}; attr_grad: names that require grad.
    """
    assert name not in {c["name"] for c in CASES}, name
    attrs = dict(attrs or {})
    tensor_attrs = dict(tensor_attrs or {})
    req = [a.dtype == np.float32 and i not in no_grad for i, a in enumerate(inputs)]
    tattr_req = {n: (n in attr_grad) for n in tensor_attrs}

    # probe output shapes (f64) to draw gouts
    probe_outs, _, _ = run_torch(fn, inputs, [False] * len(inputs), tensor_attrs, {}, torch.float64,
                                 None)
    gouts = [randn(*o.shape) for o in probe_outs]

    ref_outs, ref_grads, ref_agrads = run_torch(fn, inputs, req, tensor_attrs, tattr_req,
                                                torch.float64, gouts)
    f32_outs, f32_grads, f32_agrads = run_torch(fn, inputs, req, tensor_attrs, tattr_req,
                                                torch.float32, gouts)

    ref_outs = [o.astype(np.float32) for o in ref_outs]
    ref_grads = [None if g is None else g.astype(np.float32) for g in ref_grads]
    ref_agrads = {n: g.astype(np.float32) for n, g in ref_agrads.items()}

    # choose tolerance: widen only if torch's own f32 computation can't meet it
    pairs = list(zip(f32_outs, ref_outs))
    pairs += [(a, b) for a, b in zip(f32_grads, ref_grads) if b is not None]
    pairs += [(f32_agrads[n], ref_agrads[n]) for n in ref_agrads]
    chosen = None
    for (rtol, atol) in F32_TOL_LADDER:
        if all(allclose_report(a, b, rtol, atol)[0] for a, b in pairs):
            chosen = (rtol, atol)
            break
    if chosen is None:
        raise RuntimeError(f"{name}: torch f32 disagrees with f64 ref beyond the ladder")
    for o in ref_outs + [g for g in ref_grads if g is not None]:
        if not np.isfinite(o).all():
            raise RuntimeError(f"{name}: non-finite reference")

    # store
    in_keys = []
    for i, a in enumerate(inputs):
        in_keys.append(put(f"{name}.in{i}", swap_last2(a) if i in transpose_inputs else a))
    out_keys = [put(f"{name}.out{j}", o) for j, o in enumerate(ref_outs)]
    gout_keys = [put(f"{name}.gout{j}", g) for j, g in enumerate(gouts)]
    grad_keys = []
    for i, g in enumerate(ref_grads):
        if g is None:
            grad_keys.append(None)
        else:
            grad_keys.append(put(f"{name}.grad{i}", swap_last2(g) if i in transpose_inputs else g))
    attr_grads = {}
    for n, a in tensor_attrs.items():
        attrs[n] = put(f"{name}.{n}", a)
    for n, g in ref_agrads.items():
        attr_grads[n] = put(f"{name}.grad_{n}", g)

    c = {
        "name": name,
        "op": op,
        "dtype": "f32",
        "inputs": in_keys,
        "attrs": attrs,
        "outputs": out_keys,
        "outputsAreList": bool(outputs_are_list),
        "gouts": gout_keys,
        "grads": grad_keys,
        "rtol": chosen[0],
        "atol": chosen[1],
    }
    if chosen != F32_TOL_LADDER[0]:
        c["tolWidened"] = True
        REPORT.append(f"{name}: tolerance widened to rtol={chosen[0]} atol={chosen[1]}")
    if tensor_attrs:
        c["tensorAttrs"] = list(tensor_attrs.keys())
    if attr_grads:
        c["attrGrads"] = attr_grads
    if transpose_inputs:
        c["transposeInputs"] = list(transpose_inputs)
        c["noncontig"] = list(transpose_inputs)
    CASES.append(c)


# ----------------------------------------------------------------------------
# reference implementations shared by cases
# ----------------------------------------------------------------------------
def rms_norm_ref(x, w, eps):
    xf = x.to(torch.float32) if x.dtype == torch.bfloat16 else x
    var = xf.pow(2).mean(-1, keepdim=True)
    y = xf * torch.rsqrt(var + eps)
    return w * y.to(x.dtype)


def rotate_half(x):
    d = x.shape[-1] // 2
    return torch.cat([-x[..., d:], x[..., :d]], dim=-1)


def rope_ref(x, cos, sin, interleaved):
    if not interleaved:
        return x * cos + rotate_half(x) * sin
    x_even = x[..., 0::2]
    x_odd = x[..., 1::2]
    # rotate_every_two: (x0, x1) -> (-x1, x0)
    rot = torch.stack([-x_odd, x_even], dim=-1).flatten(-2)
    return x * cos + rot * sin


def sdpa_ref(q, k, v, mask=None, is_causal=False, key_padding_mask=None, scale=None,
             prefix_k=None, prefix_v=None):
    B, H, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    assert H % Hkv == 0
    rep = H // Hkv
    P = 0
    if prefix_k is not None:
        assert mask is None, "fixtures never combine additive mask with prefixes"
        P = prefix_k.shape[2]
        k = torch.cat([prefix_k, k], dim=2)
        v = torch.cat([prefix_v, v], dim=2)
    k = k.repeat_interleave(rep, dim=1)  # head h uses kv head h // rep
    v = v.repeat_interleave(rep, dim=1)
    s = (1.0 / math.sqrt(D)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * s
    if mask is not None:
        scores = scores + mask
    keep = torch.ones(B, 1, Tq, P + Tk, dtype=torch.bool)
    if is_causal:
        i = torch.arange(Tq)[:, None]
        j = torch.arange(Tk)[None, :]
        keep[..., P:] &= (j <= i + (Tk - Tq))
    if key_padding_mask is not None:
        keep[..., P:] &= key_padding_mask[:, None, None, :]
    # every masked entry gets finfo(float32).min added exactly once
    # (bf16 cannot hold float32's lowest value: there the lowest bf16, as HF's finfo(dtype).min)
    fmin = torch.finfo(torch.bfloat16).min if scores.dtype == torch.bfloat16 else FMIN
    scores = scores + torch.where(keep, torch.zeros((), dtype=scores.dtype), torch.full((), fmin, dtype=scores.dtype))
    p = torch.softmax(scores, dim=-1)
    return p @ v


def rope_tables(T, D, interleaved):
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, D, 2, dtype=np.float64) / D))
    freqs = np.outer(np.arange(T, dtype=np.float64), inv_freq)  # (T, D/2)
    if interleaved:
        emb = np.repeat(freqs, 2, axis=-1)
    else:
        emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


# ----------------------------------------------------------------------------
# f32 cases
# ----------------------------------------------------------------------------
def build_f32_cases():
    un = lambda f: (lambda ts, ta: f(ts[0]))
    bi = lambda f: (lambda ts, ta: f(ts[0], ts[1]))

    # --- binary elementwise (broadcasting + scalar) ---
    case("add_same", "add", [randn(2, 3, 4), randn(2, 3, 4)], bi(torch.add))
    case("add_bcast_3d_2d", "add", [randn(3, 1, 4), randn(2, 1)], bi(torch.add))
    case("add_bcast_row", "add", [randn(2, 3, 4), randn(4)], bi(torch.add))
    case("add_scalar", "add", [randn(2, 3, 4)], lambda ts, ta: ts[0] + 2.5, attrs={"scalar": 2.5})
    case("sub_bcast", "sub", [randn(2, 3, 4), randn(3, 1)], bi(torch.sub))
    case("sub_bcast_3d_2d", "sub", [randn(3, 1, 4), randn(2, 1)], bi(torch.sub))
    case("sub_scalar", "sub", [randn(3, 4)], lambda ts, ta: ts[0] - 0.75, attrs={"scalar": 0.75})
    case("mul_same", "mul", [randn(2, 3, 4), randn(2, 3, 4)], bi(torch.mul))
    case("mul_bcast_3d_2d", "mul", [randn(3, 1, 4), randn(2, 1)], bi(torch.mul))
    case("mul_scalar", "mul", [randn(2, 3, 4)], lambda ts, ta: ts[0] * -1.5, attrs={"scalar": -1.5})
    case("div_same", "div", [randn(2, 3, 4), away_from_zero(2, 3, 4)], bi(torch.div))
    case("div_bcast", "div", [randn(2, 3, 4), away_from_zero(1, 3, 1)], bi(torch.div))
    case("div_scalar", "div", [randn(3, 4)], lambda ts, ta: ts[0] / 3.0, attrs={"scalar": 3.0})

    # --- unary elementwise ---
    case("neg", "neg", [randn(2, 3, 4)], un(torch.neg))
    case("exp", "exp", [randn(2, 3, 4)], un(torch.exp))
    case("log", "log", [positive(2, 3, 4)], un(torch.log))
    case("sqrt", "sqrt", [positive(2, 3, 4)], un(torch.sqrt))
    case("rsqrt", "rsqrt", [positive(2, 3, 4)], un(torch.rsqrt))
    case("pow_2", "pow", [randn(2, 3, 4)], un(lambda x: torch.pow(x, 2.0)), attrs={"exponent": 2.0})
    case("pow_3", "pow", [randn(3, 4)], un(lambda x: torch.pow(x, 3.0)), attrs={"exponent": 3.0})
    case("pow_frac", "pow", [positive(2, 3, 4)], un(lambda x: torch.pow(x, 1.5)),
         attrs={"exponent": 1.5})
    case("pow_neg_half", "pow", [positive(3, 4)], un(lambda x: torch.pow(x, -0.5)),
         attrs={"exponent": -0.5})
    case("abs", "abs", [randn(2, 3, 4)], un(torch.abs))
    case("clamp", "clamp", [randn(2, 3, 4)], un(lambda x: torch.clamp(x, -0.5, 0.7)),
         attrs={"min": -0.5, "max": 0.7})

    # --- reductions ---
    case("sum_all", "sum", [randn(2, 3, 4)], un(lambda x: x.sum()), attrs={})
    case("sum_dim1", "sum", [randn(2, 3, 4)], un(lambda x: x.sum(1)), attrs={"dim": 1, "keepdim": False})
    case("sum_dim_neg1_keepdim", "sum", [randn(2, 3, 4)], un(lambda x: x.sum(-1, keepdim=True)),
         attrs={"dim": -1, "keepdim": True})
    case("sum_dims02_keepdim", "sum", [randn(2, 3, 4)], un(lambda x: x.sum((0, 2), keepdim=True)),
         attrs={"dim": [0, 2], "keepdim": True})
    case("sum_dims01", "sum", [randn(2, 3, 4)], un(lambda x: x.sum((0, 1))),
         attrs={"dim": [0, 1], "keepdim": False})
    case("mean_all", "mean", [randn(2, 3, 4)], un(lambda x: x.mean()), attrs={})
    case("mean_dim0", "mean", [randn(2, 3, 4)], un(lambda x: x.mean(0)), attrs={"dim": 0, "keepdim": False})
    case("mean_dim_neg1_keepdim", "mean", [randn(2, 3, 4)], un(lambda x: x.mean(-1, keepdim=True)),
         attrs={"dim": -1, "keepdim": True})
    case("mean_dims12", "mean", [randn(2, 3, 4)], un(lambda x: x.mean((1, 2))),
         attrs={"dim": [1, 2], "keepdim": False})
    case("max_dim1", "max", [randn(2, 3, 4)], un(lambda x: x.max(1).values),
         attrs={"dim": 1, "keepdim": False})
    case("max_dim_neg1_keepdim", "max", [randn(2, 3, 5)], un(lambda x: x.max(-1, keepdim=True).values),
         attrs={"dim": -1, "keepdim": True})
    case("max_dim0", "max", [randn(4, 3)], un(lambda x: x.max(0).values),
         attrs={"dim": 0, "keepdim": False})

    # --- matmul / linear ---
    case("matmul_2d", "matmul", [randn(3, 4), randn(4, 5)], bi(torch.matmul))
    case("matmul_batched", "matmul", [randn(2, 3, 4), randn(2, 4, 5)], bi(torch.matmul))
    case("matmul_bcast_4d_3d", "matmul", [randn(2, 1, 3, 4), randn(5, 4, 6)], bi(torch.matmul))
    case("matmul_3d_2d", "matmul", [randn(2, 3, 4), randn(4, 5)], bi(torch.matmul))
    case("matmul_2d_3d", "matmul", [randn(3, 4), randn(2, 4, 5)], bi(torch.matmul))
    case("matmul_1d_2d", "matmul", [randn(4), randn(4, 5)], bi(torch.matmul))
    case("matmul_2d_1d", "matmul", [randn(3, 4), randn(4)], bi(torch.matmul))
    case("matmul_1d_1d", "matmul", [randn(6), randn(6)], bi(torch.matmul))
    case("matmul_larger", "matmul", [randn(16, 32), randn(32, 24)], bi(torch.matmul))
    case("linear_bias", "linear", [randn(2, 3, 4), randn(5, 4), randn(5)],
         lambda ts, ta: F.linear(ts[0], ts[1], ts[2]))
    case("linear_nobias", "linear", [randn(3, 4), randn(5, 4)], lambda ts, ta: F.linear(ts[0], ts[1]))
    case("linear_conv1d", "linear", [randn(2, 3, 4), randn(4, 5), randn(5)],
         lambda ts, ta: ts[0] @ ts[1] + ts[2], attrs={"layout": "conv1d"})

    # --- activations ---
    case("relu", "relu", [randn(2, 3, 4)], un(torch.relu))
    case("gelu_none", "gelu", [randn(2, 3, 4)], un(lambda x: F.gelu(x)), attrs={"approximate": "none"})
    case("gelu_tanh", "gelu", [randn(2, 3, 4)], un(lambda x: F.gelu(x, approximate="tanh")),
         attrs={"approximate": "tanh"})
    case("quickGelu", "quickGelu", [randn(2, 3, 4)], un(lambda x: x * torch.sigmoid(1.702 * x)))
    case("silu", "silu", [randn(2, 3, 4)], un(F.silu))
    case("tanh", "tanh", [randn(2, 3, 4)], un(torch.tanh))
    case("sigmoid", "sigmoid", [randn(2, 3, 4)], un(torch.sigmoid))

    # --- softmax ---
    for d, tag in [(0, "dim0"), (1, "dim1"), (-1, "dim_neg1")]:
        case(f"softmax_{tag}", "softmax", [randn(3, 4, 5)], un(lambda x, d=d: torch.softmax(x, d)),
             attrs={"dim": d})
        case(f"logSoftmax_{tag}", "logSoftmax", [randn(3, 4, 5)],
             un(lambda x, d=d: torch.log_softmax(x, d)), attrs={"dim": d})

    # --- norms ---
    case("layerNorm_3d", "layerNorm", [randn(2, 3, 8), 1 + randn(8, scale=0.1), randn(8, scale=0.1)],
         lambda ts, ta: F.layer_norm(ts[0], (8,), ts[1], ts[2], 1e-5), attrs={"eps": 1e-5})
    case("layerNorm_2d", "layerNorm", [randn(4, 16, scale=2.0) + 0.5, 1 + randn(16, scale=0.1),
                                       randn(16, scale=0.1)],
         lambda ts, ta: F.layer_norm(ts[0], (16,), ts[1], ts[2], 1e-5), attrs={"eps": 1e-5})
    case("rmsNorm_3d", "rmsNorm", [randn(2, 3, 8), 1 + randn(8, scale=0.1)],
         lambda ts, ta: rms_norm_ref(ts[0], ts[1], 1e-6), attrs={"eps": 1e-6})
    case("rmsNorm_2d", "rmsNorm", [randn(4, 16), 1 + randn(16, scale=0.1)],
         lambda ts, ta: rms_norm_ref(ts[0], ts[1], 1e-5), attrs={"eps": 1e-5})

    # --- embedding ---
    ids = np.array([[1, 3, 3, 0, 6], [6, 1, 2, 3, 3]], dtype=np.int64)  # repeated ids
    case("embedding", "embedding", [ids, randn(7, 4)],
         lambda ts, ta: F.embedding(ts[0], ts[1]))
    case("embedding_1d", "embedding", [np.array([2, 2, 0, 4, 2], dtype=np.int64), randn(5, 3)],
         lambda ts, ta: F.embedding(ts[0], ts[1]))

    # --- losses ---
    N, C = 6, 5
    tgt = ints(0, C, N)
    tgt_ign = tgt.copy()
    tgt_ign[[1, 4]] = -100
    def ce(reduction, ls, ii=-100):
        return lambda ts, ta: F.cross_entropy(ts[0], ts[1], ignore_index=ii, reduction=reduction,
                                              label_smoothing=ls)
    for red in ["mean", "sum", "none"]:
        case(f"crossEntropy_{red}", "crossEntropy", [randn(N, C), tgt.copy()], ce(red, 0.0),
             attrs={"ignoreIndex": -100, "labelSmoothing": 0.0, "reduction": red})
        case(f"crossEntropy_ignore_{red}", "crossEntropy", [randn(N, C), tgt_ign.copy()], ce(red, 0.0),
             attrs={"ignoreIndex": -100, "labelSmoothing": 0.0, "reduction": red})
        case(f"crossEntropy_smooth_{red}", "crossEntropy", [randn(N, C), tgt.copy()], ce(red, 0.1),
             attrs={"ignoreIndex": -100, "labelSmoothing": 0.1, "reduction": red})
        case(f"crossEntropy_smooth_ignore_{red}", "crossEntropy", [randn(N, C), tgt_ign.copy()],
             ce(red, 0.1), attrs={"ignoreIndex": -100, "labelSmoothing": 0.1, "reduction": red})
    for red in ["mean", "sum", "none"]:
        case(f"mseLoss_{red}", "mseLoss", [randn(2, 3, 4), randn(2, 3, 4)],
             lambda ts, ta, red=red: F.mse_loss(ts[0], ts[1], reduction=red), attrs={"reduction": red})

    # --- shape ops ---
    case("concat_dim0", "concat", [randn(2, 3), randn(1, 3)],
         lambda ts, ta: torch.cat(ts, 0), attrs={"dim": 0})
    case("concat_dim1_three", "concat", [randn(2, 1, 4), randn(2, 3, 4), randn(2, 2, 4)],
         lambda ts, ta: torch.cat(ts, 1), attrs={"dim": 1})
    case("concat_dim_neg1", "concat", [randn(2, 3, 2), randn(2, 3, 5)],
         lambda ts, ta: torch.cat(ts, -1), attrs={"dim": -1})
    case("split_int", "split", [randn(5, 4)], lambda ts, ta: list(torch.split(ts[0], 2, 0)),
         attrs={"splitSize": 2, "dim": 0}, outputs_are_list=True)
    case("split_sizes", "split", [randn(2, 4, 3)], lambda ts, ta: list(torch.split(ts[0], [1, 3], 1)),
         attrs={"splitSize": [1, 3], "dim": 1}, outputs_are_list=True)
    case("split_sizes_neg_dim", "split", [randn(2, 3, 6)],
         lambda ts, ta: list(torch.split(ts[0], [2, 1, 3], -1)),
         attrs={"splitSize": [2, 1, 3], "dim": -1}, outputs_are_list=True)
    case("slice_dim1", "slice", [randn(2, 6, 3)], un(lambda x: x[:, 1:4]),
         attrs={"dim": 1, "start": 1, "end": 4, "step": 1})
    case("slice_step2", "slice", [randn(2, 3, 7)], un(lambda x: x[..., 1:7:2]),
         attrs={"dim": -1, "start": 1, "end": 7, "step": 2})
    case("slice_dim0_step3", "slice", [randn(8, 3)], un(lambda x: x[0:8:3]),
         attrs={"dim": 0, "start": 0, "end": 8, "step": 3})
    case("indexSelect_dim0", "indexSelect", [randn(5, 3), np.array([4, 0, 4, 2], dtype=np.int64)],
         lambda ts, ta: torch.index_select(ts[0], 0, ts[1]), attrs={"dim": 0})
    case("indexSelect_dim1", "indexSelect", [randn(2, 5, 3), np.array([1, 1, 3], dtype=np.int64)],
         lambda ts, ta: torch.index_select(ts[0], 1, ts[1]), attrs={"dim": 1})
    case("gather_dim1", "gather", [randn(3, 5), ints(0, 5, 3, 4)],
         lambda ts, ta: torch.gather(ts[0], 1, ts[1]), attrs={"dim": 1})
    case("gather_dim0", "gather", [randn(4, 3), ints(0, 4, 6, 3)],
         lambda ts, ta: torch.gather(ts[0], 0, ts[1]), attrs={"dim": 0})
    case("gather_dim_neg1_3d", "gather", [randn(2, 3, 5), ints(0, 5, 2, 3, 2)],
         lambda ts, ta: torch.gather(ts[0], -1, ts[1]), attrs={"dim": -1})
    case("transpose_0_2", "transpose", [randn(2, 3, 4)], un(lambda x: x.transpose(0, 2)),
         attrs={"dim0": 0, "dim1": 2})
    case("transpose_neg", "transpose", [randn(2, 3, 4)], un(lambda x: x.transpose(-2, -1)),
         attrs={"dim0": -2, "dim1": -1})
    case("permute_201", "permute", [randn(2, 3, 4)], un(lambda x: x.permute(2, 0, 1)),
         attrs={"dims": [2, 0, 1]})
    case("permute_4d", "permute", [randn(2, 3, 4, 2)], un(lambda x: x.permute(0, 2, 1, 3)),
         attrs={"dims": [0, 2, 1, 3]})
    case("reshape", "reshape", [randn(2, 3, 4)], un(lambda x: x.reshape(6, 4)), attrs={"shape": [6, 4]})
    case("reshape_infer", "reshape", [randn(2, 3, 4)], un(lambda x: x.reshape(4, -1)),
         attrs={"shape": [4, -1]})
    case("maskedFill", "maskedFill", [randn(3, 4), bools(0.4, 3, 4)],
         lambda ts, ta: ts[0].masked_fill(ts[1], -3.5), attrs={"value": -3.5})
    case("maskedFill_bcast", "maskedFill", [randn(2, 3, 4), bools(0.5, 1, 4)],
         lambda ts, ta: ts[0].masked_fill(ts[1], -1e4), attrs={"value": -1e4})
    case("where", "where", [bools(0.5, 3, 4), randn(3, 4), randn(3, 4)],
         lambda ts, ta: torch.where(ts[0], ts[1], ts[2]))
    case("where_bcast", "where", [bools(0.5, 3, 1), randn(3, 4), randn(4)],
         lambda ts, ta: torch.where(ts[0], ts[1], ts[2]))

    # --- rope (grads only w.r.t. x) ---
    B, H, T, D = 2, 2, 5, 8
    for inter in [False, True]:
        cos, sin = rope_tables(T, D, inter)
        case(f"rope_{'interleaved' if inter else 'half'}", "rope", [randn(B, H, T, D), cos, sin],
             lambda ts, ta, inter=inter: rope_ref(ts[0], ts[1], ts[2], inter),
             attrs={"interleaved": inter}, no_grad=(1, 2))

    # --- scaled dot product attention ---
    def sdpa_fn(**kw):
        def f(ts, ta):
            return sdpa_ref(ts[0], ts[1], ts[2], mask=ta.get("mask"),
                            key_padding_mask=ta.get("keyPaddingMask"),
                            prefix_k=ta.get("prefixK"), prefix_v=ta.get("prefixV"), **kw)
        return f

    def qkv(B, H, Hkv, Tq, Tk, D):
        return [randn(B, H, Tq, D), randn(B, Hkv, Tk, D), randn(B, Hkv, Tk, D)]

    case("sdpa_plain", "scaledDotProductAttention", qkv(2, 2, 2, 4, 4, 8), sdpa_fn(), attrs={})
    case("sdpa_scale", "scaledDotProductAttention", qkv(1, 2, 2, 3, 5, 4), sdpa_fn(scale=0.3),
         attrs={"scale": 0.3})
    case("sdpa_causal", "scaledDotProductAttention", qkv(2, 2, 2, 5, 5, 8), sdpa_fn(is_causal=True),
         attrs={"isCausal": True})
    case("sdpa_causal_tq_lt_tk", "scaledDotProductAttention", qkv(2, 2, 2, 3, 6, 8),
         sdpa_fn(is_causal=True), attrs={"isCausal": True})
    case("sdpa_gqa", "scaledDotProductAttention", qkv(2, 4, 2, 4, 5, 8), sdpa_fn(), attrs={})
    case("sdpa_gqa_causal", "scaledDotProductAttention", qkv(1, 6, 2, 4, 4, 4), sdpa_fn(is_causal=True),
         attrs={"isCausal": True})
    B_, Tk_ = 2, 6
    add_mask = uniform(-2.0, 0.0, B_, 1, 1, Tk_)
    add_mask[0, 0, 0, 4] = FMIN  # HF-style "min" entries
    add_mask[1, 0, 0, 0] = FMIN
    case("sdpa_mask_bcast", "scaledDotProductAttention", qkv(B_, 2, 2, 4, Tk_, 8), sdpa_fn(),
         tensor_attrs={"mask": add_mask})
    kpm = np.ones((2, 6), dtype=bool)
    kpm[0, 4:] = False
    kpm[1, [1, 3]] = False
    case("sdpa_key_padding", "scaledDotProductAttention", qkv(2, 2, 2, 4, 6, 8), sdpa_fn(),
         tensor_attrs={"keyPaddingMask": kpm})
    kpm2 = np.ones((2, 6), dtype=bool)
    kpm2[1, 0] = False
    kpm2[0, 5] = False
    case("sdpa_gqa_causal_key_padding", "scaledDotProductAttention", qkv(2, 4, 1, 3, 6, 8),
         sdpa_fn(is_causal=True), attrs={"isCausal": True}, tensor_attrs={"keyPaddingMask": kpm2})
    P = 3
    case("sdpa_prefix", "scaledDotProductAttention", qkv(2, 2, 2, 4, 4, 8), sdpa_fn(),
         tensor_attrs={"prefixK": randn(2, 2, P, 8), "prefixV": randn(2, 2, P, 8)},
         attr_grad=("prefixK", "prefixV"))
    case("sdpa_prefix_causal_gqa", "scaledDotProductAttention", qkv(2, 4, 2, 4, 4, 8),
         sdpa_fn(is_causal=True), attrs={"isCausal": True},
         tensor_attrs={"prefixK": randn(2, 2, P, 8), "prefixV": randn(2, 2, P, 8)},
         attr_grad=("prefixK", "prefixV"))
    kpm3 = np.ones((2, 5), dtype=bool)
    kpm3[1, :] = False  # batch 1: every key masked -> every query row uniform average of v
    case("sdpa_fully_masked_row", "scaledDotProductAttention", qkv(2, 2, 2, 3, 5, 8), sdpa_fn(),
         tensor_attrs={"keyPaddingMask": kpm3})

    # --- non-contiguous inputs (stored transposed; test applies .transpose(-2,-1)) ---
    case("add_noncontig", "add", [randn(2, 3, 4), randn(2, 3, 4)], bi(torch.add), transpose_inputs=(0,))
    case("add_noncontig_bcast", "add", [randn(2, 3, 4), randn(3, 4)], bi(torch.add),
         transpose_inputs=(1,))
    case("matmul_noncontig_rhs", "matmul", [randn(2, 3, 4), randn(2, 4, 5)], bi(torch.matmul),
         transpose_inputs=(1,))
    case("matmul_noncontig_both", "matmul", [randn(3, 6), randn(6, 4)], bi(torch.matmul),
         transpose_inputs=(0, 1))
    case("softmax_noncontig", "softmax", [randn(2, 3, 5)], un(lambda x: torch.softmax(x, -1)),
         attrs={"dim": -1}, transpose_inputs=(0,))
    case("layerNorm_noncontig", "layerNorm", [randn(2, 4, 8), 1 + randn(8, scale=0.1),
                                              randn(8, scale=0.1)],
         lambda ts, ta: F.layer_norm(ts[0], (8,), ts[1], ts[2], 1e-5), attrs={"eps": 1e-5},
         transpose_inputs=(0,))
    case("sum_noncontig", "sum", [randn(2, 3, 4)], un(lambda x: x.sum(-1)),
         attrs={"dim": -1, "keepdim": False}, transpose_inputs=(0,))
    case("gelu_noncontig", "gelu", [randn(2, 3, 4)], un(lambda x: F.gelu(x)),
         attrs={"approximate": "none"}, transpose_inputs=(0,))
    case("reshape_noncontig", "reshape", [randn(2, 3, 4)], un(lambda x: x.reshape(2, 12)),
         attrs={"shape": [2, 12]}, transpose_inputs=(0,))

    # --- variants: reductions over everything, scalars first, other targets / layouts, missing affine params ---
    case("max_all", "max", [distinct(3, 5)], un(lambda x: x.max()), attrs={})
    case("sub_scalar_first", "sub", [randn(3, 4)], lambda ts, ta: 2.5 - ts[0], attrs={"scalar": 2.5, "scalarFirst": True})
    case("div_scalar_first", "div", [away_from_zero(3, 4)], lambda ts, ta: 3.0 / ts[0], attrs={"scalar": 3.0, "scalarFirst": True})
    tgt3 = ints(0, 5, 2, 3)
    tgt3[0, 1] = 2
    case("crossEntropy_3d_custom_ignore", "crossEntropy", [randn(2, 3, 5), tgt3],
         lambda ts, ta: F.cross_entropy(ts[0].reshape(-1, 5), ts[1].reshape(-1), ignore_index=2,
                                        label_smoothing=0.2, reduction="sum"),
         attrs={"ignoreIndex": 2, "labelSmoothing": 0.2, "reduction": "sum"})
    case("layerNorm_no_affine", "layerNorm", [randn(3, 8)], un(lambda x: F.layer_norm(x, (8,), None, None, 1e-5)),
         attrs={"eps": 1e-5})
    case("rmsNorm_no_weight", "rmsNorm", [randn(3, 8)], un(lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)),
         attrs={"eps": 1e-6})
    case("matmul_batched_lhs_transposed", "matmul", [randn(2, 3, 5), randn(2, 5, 4)], bi(torch.matmul),
         transpose_inputs=(0,))
    case("linear_noncontig", "linear", [randn(3, 6), randn(4, 6), randn(4)],
         lambda ts, ta: F.linear(ts[0], ts[1], ts[2]), transpose_inputs=(0, 1))
    case("contiguous_noncontig", "contiguous", [randn(2, 3, 4)], un(lambda x: x.contiguous()), transpose_inputs=(0,))


# ----------------------------------------------------------------------------
# bf16 cases (PyTorch's bf16 CPU results are the reference, forward and backward)
# ----------------------------------------------------------------------------
def bf16_case(name, op, inputs, fn, attrs=None, no_grad=(), widen=()):
    """inputs: f32 numpy arrays (rounded to bf16 here) or int64 / bool arrays (kept).
    fn(list of torch tensors) -> tensor or list of tensors. Float inputs not in no_grad require grad; the
    gradients are those of sum_j sum(out_j * gout_j) with bf16 gouts, as PyTorch computes them in bf16."""
    def inputs_as(dtype, req):
        ts = []
        for i, a in enumerate(inputs):
            if a.dtype == np.float32:
                t = torch.tensor(a).to(torch.bfloat16).to(dtype)
                t.requires_grad_(req and i not in no_grad)
            else:
                t = torch.tensor(a)
            ts.append(t)
        return ts
    ts = inputs_as(torch.bfloat16, True)
    out = fn(ts)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    for o in outs:
        assert o.dtype == torch.bfloat16, (name, o.dtype)
    gouts = [torch.tensor(randn(*o.shape)).to(torch.bfloat16) for o in outs]
    leaves = [t for t in ts if t.requires_grad]
    grads = torch.autograd.grad(outs, leaves, gouts) if leaves else []
    # sanity: torch's bf16 results vs float64 on the same bf16 inputs and gouts, to half the test's tolerance. Only the
    # gradients of the inputs listed in `widen` (per-feature parameters, whose gradients PyTorch sums over rows in
    # bf16) may exceed it, by at most 0.03 absolute: then the case's atol becomes twice torch's worst excess (recorded
    # as tolWidened), so that ours (summed in f32, rounded once) and torch's can both be within it.
    ts64 = inputs_as(torch.float64, True)
    o64 = fn(ts64)
    o64 = list(o64) if isinstance(o64, (list, tuple)) else [o64]
    l64 = [t for t in ts64 if t.requires_grad]
    g64 = torch.autograd.grad(o64, l64, [g.to(torch.float64) for g in gouts]) if l64 else []
    grad_inputs = [i for i, t in enumerate(ts) if t.requires_grad]
    atol = BF16_TOL[1]
    checks = [(f"out{j}", x, y, False) for j, (x, y) in enumerate(zip(outs, o64))]
    checks += [(f"grad{i}", x, y, i in widen) for i, x, y in zip(grad_inputs, grads, g64)]
    for what, a, b, may_widen in checks:
        a, b = a.detach().to(torch.float64).numpy(), b.detach().numpy()
        if not allclose_report(a, b, BF16_TOL[0] / 2, BF16_TOL[1] / 2)[0]:
            excess = float((np.abs(a - b) - BF16_TOL[0] / 2 * np.abs(b)).max())
            if not may_widen or excess > 0.03:
                raise RuntimeError(f"{name}: torch bf16 {what} far from f64 (excess {excess:.3g})")
            atol = max(atol, 2 * excess)
    in_keys = [put(f"{name}.in{i}", t, bf16=True) if t.dtype == torch.bfloat16 else put(f"{name}.in{i}", inputs[i])
               for i, t in enumerate(ts)]
    out_keys = [put(f"{name}.out{j}", o, bf16=True) for j, o in enumerate(outs)]
    gout_keys = [put(f"{name}.gout{j}", g, bf16=True) for j, g in enumerate(gouts)]
    grad_keys, gi = [], iter(grads)
    for i, t in enumerate(ts):
        grad_keys.append(put(f"{name}.grad{i}", next(gi), bf16=True) if t.requires_grad else None)
    CASES.append({
        "name": name,
        "op": op,
        "dtype": "bf16",
        "inputs": in_keys,
        "attrs": dict(attrs or {}),
        "outputs": out_keys,
        "outputsAreList": isinstance(out, (list, tuple)),
        "gouts": gout_keys,
        "grads": grad_keys,
        "rtol": BF16_TOL[0],
        "atol": atol,
    })
    if atol != BF16_TOL[1]:
        CASES[-1]["tolWidened"] = True
        REPORT.append(f"{name}: atol widened to {atol:.3g} (PyTorch's bf16 sums over rows for the gradients {list(widen)})")


def build_bf16_cases():
    # Products have K >= 64 in the forward and in both gradients: torch 1.13's small-K CPU bf16 matmul path
    # accumulates in bf16 and is off by several ulps (the f64 sanity check in bf16_case catches that).
    bf16_case("bf16_matmul", "matmul", [randn(2, 64, 64), randn(2, 64, 64)], lambda t: t[0] @ t[1])
    bf16_case("bf16_linear", "linear", [randn(64, 64), randn(64, 64, scale=0.25), randn(64)],
              lambda t: F.linear(t[0], t[1], t[2]))
    bf16_case("bf16_linear_conv1d", "linear", [randn(64, 64), randn(64, 64, scale=0.25), randn(64)],
              lambda t: t[0] @ t[1] + t[2], attrs={"layout": "conv1d"})
    bf16_case("bf16_add", "add", [randn(2, 3, 8), randn(8)], lambda t: t[0] + t[1])
    bf16_case("bf16_sub", "sub", [randn(2, 3, 8), randn(3, 1)], lambda t: t[0] - t[1])
    bf16_case("bf16_mul", "mul", [randn(2, 3, 8), randn(3, 1)], lambda t: t[0] * t[1])
    bf16_case("bf16_div", "div", [randn(2, 3, 8), positive(8)], lambda t: t[0] / t[1])
    bf16_case("bf16_neg", "neg", [randn(3, 8)], lambda t: -t[0])
    bf16_case("bf16_exp", "exp", [randn(3, 8)], lambda t: t[0].exp())
    bf16_case("bf16_log", "log", [positive(3, 8)], lambda t: t[0].log())
    bf16_case("bf16_sqrt", "sqrt", [positive(3, 8)], lambda t: t[0].sqrt())
    bf16_case("bf16_rsqrt", "rsqrt", [positive(3, 8)], lambda t: t[0].rsqrt())
    bf16_case("bf16_pow", "pow", [positive(3, 8)], lambda t: t[0].pow(1.5), attrs={"exponent": 1.5})
    bf16_case("bf16_abs", "abs", [away_from_zero(3, 8)], lambda t: t[0].abs())
    bf16_case("bf16_clamp", "clamp", [randn(3, 8)], lambda t: t[0].clamp(-0.5, 0.75), attrs={"min": -0.5, "max": 0.75})
    bf16_case("bf16_relu", "relu", [away_from_zero(3, 8)], lambda t: F.relu(t[0]))
    bf16_case("bf16_gelu", "gelu", [randn(2, 3, 8)], lambda t: F.gelu(t[0]), attrs={"approximate": "none"})
    bf16_case("bf16_gelu_tanh", "gelu", [randn(2, 3, 8)], lambda t: F.gelu(t[0], approximate="tanh"),
              attrs={"approximate": "tanh"})
    bf16_case("bf16_quickGelu", "quickGelu", [randn(3, 8)], lambda t: t[0] * torch.sigmoid(1.702 * t[0]))
    bf16_case("bf16_silu", "silu", [randn(2, 3, 8)], lambda t: F.silu(t[0]))
    bf16_case("bf16_tanh", "tanh", [randn(3, 8)], lambda t: t[0].tanh())
    bf16_case("bf16_sigmoid", "sigmoid", [randn(3, 8)], lambda t: t[0].sigmoid())
    bf16_case("bf16_softmax", "softmax", [randn(2, 3, 8)], lambda t: torch.softmax(t[0], -1),
              attrs={"dim": -1})
    bf16_case("bf16_logSoftmax", "logSoftmax", [randn(2, 3, 8)], lambda t: torch.log_softmax(t[0], 1),
              attrs={"dim": 1})
    bf16_case("bf16_layerNorm", "layerNorm", [randn(2, 3, 16), 1 + randn(16, scale=0.1),
                                              randn(16, scale=0.1)],
              lambda t: F.layer_norm(t[0], (16,), t[1], t[2], 1e-5), attrs={"eps": 1e-5}, widen=(1, 2))
    bf16_case("bf16_rmsNorm", "rmsNorm", [randn(2, 3, 16), 1 + randn(16, scale=0.1)],
              lambda t: rms_norm_ref(t[0], t[1], 1e-6), attrs={"eps": 1e-6}, widen=(1,))
    bf16_case("bf16_sum_dim", "sum", [randn(2, 3, 16)], lambda t: t[0].sum(-1),
              attrs={"dim": -1, "keepdim": False})
    bf16_case("bf16_sum_all", "sum", [randn(4, 8)], lambda t: t[0].sum(), attrs={})
    bf16_case("bf16_mean_dim", "mean", [randn(2, 3, 16)], lambda t: t[0].mean(1, keepdim=True),
              attrs={"dim": 1, "keepdim": True})
    bf16_case("bf16_max_dim", "max", [distinct(3, 8)], lambda t: t[0].max(-1).values,
              attrs={"dim": -1, "keepdim": False})
    bf16_case("bf16_embedding", "embedding", [ints(0, 7, 2, 5), randn(7, 8)], lambda t: F.embedding(t[0], t[1]))
    tg = ints(0, 6, 5)
    tg[2] = -100
    bf16_case("bf16_crossEntropy", "crossEntropy", [randn(5, 6), tg],
              lambda t: F.cross_entropy(t[0], t[1], ignore_index=-100, label_smoothing=0.1),
              attrs={"ignoreIndex": -100, "labelSmoothing": 0.1, "reduction": "mean"})
    # torch 1.13 has no bf16 mse_loss kernel on the CPU: its definition, op by op in bf16 (as ours runs)
    bf16_case("bf16_mseLoss", "mseLoss", [randn(3, 8), randn(3, 8)], lambda t: ((t[0] - t[1]) ** 2).mean(),
              attrs={"reduction": "mean"})
    bf16_case("bf16_concat", "concat", [randn(2, 3), randn(2, 5)], lambda t: torch.cat(t, 1), attrs={"dim": 1})
    bf16_case("bf16_split", "split", [randn(5, 4)], lambda t: list(torch.split(t[0], 2, 0)),
              attrs={"splitSize": 2, "dim": 0})
    bf16_case("bf16_slice", "slice", [randn(4, 9)], lambda t: t[0][:, 1:8:3],
              attrs={"dim": 1, "start": 1, "end": 8, "step": 3})
    bf16_case("bf16_transpose", "transpose", [randn(2, 3, 4)], lambda t: t[0].transpose(0, 2),
              attrs={"dim0": 0, "dim1": 2})
    bf16_case("bf16_permute", "permute", [randn(2, 3, 4)], lambda t: t[0].permute(1, 2, 0), attrs={"dims": [1, 2, 0]})
    bf16_case("bf16_reshape", "reshape", [randn(2, 3, 4)], lambda t: t[0].reshape(4, 6), attrs={"shape": [4, 6]})
    bf16_case("bf16_indexSelect", "indexSelect", [randn(4, 6), np.array([3, 0, 3, 1], dtype=np.int64)],
              lambda t: t[0].index_select(0, t[1]), attrs={"dim": 0})
    bf16_case("bf16_gather", "gather", [randn(3, 5), ints(0, 5, 3, 4)], lambda t: t[0].gather(1, t[1]),
              attrs={"dim": 1})
    bf16_case("bf16_maskedFill", "maskedFill", [randn(3, 8), bools(0.3, 3, 8)],
              lambda t: t[0].masked_fill(t[1], -2.0), attrs={"value": -2.0})
    bf16_case("bf16_where", "where", [bools(0.5, 3, 8), randn(3, 8), randn(8)],
              lambda t: torch.where(t[0], t[1], t[2]))
    for inter in (False, True):
        cos, sin = rope_tables(5, 8, inter)
        bf16_case(f"bf16_rope_{'interleaved' if inter else 'half'}", "rope", [randn(2, 2, 5, 8), cos, sin],
                  lambda t, inter=inter: rope_ref(t[0], t[1], t[2], inter), attrs={"interleaved": inter},
                  no_grad=(1, 2))
    # attention: every product K >= 64 (Tq = Tk = D = 64)
    for causal in (False, True):
        bf16_case(f"bf16_sdpa{'_causal' if causal else ''}", "scaledDotProductAttention",
                  [randn(1, 2, 64, 64), randn(1, 2, 64, 64), randn(1, 2, 64, 64)],
                  lambda t, causal=causal: sdpa_ref(t[0], t[1], t[2], is_causal=causal), attrs={"isCausal": causal})


# ----------------------------------------------------------------------------
# self-check: re-read the file and verify a few values independently
# ----------------------------------------------------------------------------
def validate(st_path, json_path):
    st = read_safetensors(st_path)
    meta = json.load(open(json_path))
    keys = set(st)
    for c in meta["cases"]:
        for k in c["inputs"] + c["outputs"] + c["gouts"] + [g for g in c["grads"] if g]:
            assert k in keys, (c["name"], k)
        for n in c.get("tensorAttrs", []):
            assert c["attrs"][n] in keys, (c["name"], n)
        for n, k in c.get("attrGrads", {}).items():
            assert k in keys
        assert len(c["grads"]) == len(c["inputs"])
        if c["dtype"] == "f32":
            assert len(c["gouts"]) == len(c["outputs"])
            for i, g in enumerate(c["grads"]):
                if g is not None:
                    assert st[g][1].shape == st[c["inputs"][i]][1].shape, (c["name"], i)
    get = lambda k: st[k][1].astype(np.float64)
    bf = lambda k: (st[k][1].astype(np.uint32) << 16).view(np.float32).astype(np.float64)

    # 0-d outputs stay 0-d
    for k in ["sum_all.out0", "sum_all.gout0", "mean_all.out0", "matmul_1d_1d.out0",
              "crossEntropy_mean.out0", "mseLoss_sum.out0", "bf16_sum_all.out0"]:
        assert st[k][1].shape == (), (k, st[k][1].shape)
    assert st["crossEntropy_none.out0"][1].shape == (6,)
    # add broadcast (3,1,4)+(2,1)
    a, b = get("add_bcast_3d_2d.in0"), get("add_bcast_3d_2d.in1")
    assert np.allclose(get("add_bcast_3d_2d.out0"), a + b, rtol=1e-6, atol=1e-7)
    assert get("add_bcast_3d_2d.out0").shape == (3, 2, 4)
    # grad of add w.r.t. b = sum of gout over broadcast dims
    g = get("add_bcast_3d_2d.gout0")
    assert np.allclose(get("add_bcast_3d_2d.grad1"), g.sum(axis=(0, 2))[:, None], rtol=1e-5, atol=1e-6)
    # matmul bcast
    a, b = get("matmul_bcast_4d_3d.in0"), get("matmul_bcast_4d_3d.in1")
    assert np.allclose(get("matmul_bcast_4d_3d.out0"), a @ b, rtol=1e-5, atol=1e-6)
    # conv1d linear
    x, w, bb = (get(f"linear_conv1d.in{i}") for i in range(3))
    assert np.allclose(get("linear_conv1d.out0"), x @ w + bb, rtol=1e-5, atol=1e-6)
    # noncontig matmul: stored rhs transposed
    a, bt = get("matmul_noncontig_rhs.in0"), get("matmul_noncontig_rhs.in1")
    g = get("matmul_noncontig_rhs.gout0")
    assert np.allclose(get("matmul_noncontig_rhs.out0"), a @ np.swapaxes(bt, -1, -2), rtol=1e-5, atol=1e-6)
    gb = np.swapaxes(a, -1, -2) @ g  # grad w.r.t. logical b (2,4,5)
    assert np.allclose(get("matmul_noncontig_rhs.grad1"), np.swapaxes(gb, -1, -2), rtol=1e-5, atol=1e-6)
    # embedding grad accumulation (row 3 appears 3 times)
    ids, gout = st["embedding.in0"][1], get("embedding.gout0")
    exp = np.zeros((7, 4))
    np.add.at(exp, ids.reshape(-1), gout.reshape(-1, 4))
    assert np.allclose(get("embedding.grad1"), exp, rtol=1e-5, atol=1e-6)
    # cross entropy with ignore index: independent numpy formula
    lg, tg = get("crossEntropy_smooth_ignore_mean.in0"), st["crossEntropy_smooth_ignore_mean.in1"][1]
    lsm = lg - lg.max(1, keepdims=True)
    lsm = lsm - np.log(np.exp(lsm).sum(1, keepdims=True))
    valid = tg != -100
    eps, C = 0.1, lg.shape[1]
    nll = -lsm[valid, tg[valid]]
    smooth = -lsm[valid].mean(1)
    loss = ((1 - eps) * nll + eps * smooth).sum() / valid.sum()
    assert abs(get("crossEntropy_smooth_ignore_mean.out0") - loss) < 1e-5, (loss,)
    # rmsNorm
    x, w = get("rmsNorm_3d.in0"), get("rmsNorm_3d.in1")
    assert np.allclose(get("rmsNorm_3d.out0"), x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w,
                       rtol=1e-5, atol=1e-6)
    # rope interleaved, elementwise definition from the brief
    x, cs, sn = get("rope_interleaved.in0"), get("rope_interleaved.in1"), get("rope_interleaved.in2")
    exp = np.empty_like(x)
    exp[..., 0::2] = x[..., 0::2] * cs[:, 0::2] - x[..., 1::2] * sn[:, 0::2]
    exp[..., 1::2] = x[..., 1::2] * cs[:, 1::2] + x[..., 0::2] * sn[:, 1::2]
    assert np.allclose(get("rope_interleaved.out0"), exp, rtol=1e-5, atol=1e-6)
    assert np.allclose(cs[:, 0::2], cs[:, 1::2])
    # rope half: x*cos + cat(-x2, x1)*sin
    x, cs, sn = get("rope_half.in0"), get("rope_half.in1"), get("rope_half.in2")
    h = x.shape[-1] // 2
    exp = x * cs + np.concatenate([-x[..., h:], x[..., :h]], -1) * sn
    assert np.allclose(get("rope_half.out0"), exp, rtol=1e-5, atol=1e-6)
    # fully masked rows: batch 1 output = mean of v over keys (per head)
    v = get("sdpa_fully_masked_row.in2")
    o = get("sdpa_fully_masked_row.out0")
    assert np.allclose(o[1], np.broadcast_to(v[1].mean(1, keepdims=True), o[1].shape), atol=1e-6)
    # causal Tq<Tk: query 0 sees keys 0..Tk-Tq; check via numpy
    q, k, v = (get(f"sdpa_causal_tq_lt_tk.in{i}") for i in range(3))
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    Tq, Tk = s.shape[-2:]
    s = np.where(np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert np.allclose(get("sdpa_causal_tq_lt_tk.out0"), p @ v, rtol=1e-5, atol=1e-6)
    # GQA: head h uses kv head h // (H/Hkv)
    q, k, v = (get(f"sdpa_gqa.in{i}") for i in range(3))
    rep = q.shape[1] // k.shape[1]
    kk, vv = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = q @ np.swapaxes(kk, -1, -2) / math.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert np.allclose(get("sdpa_gqa.out0"), p @ vv, rtol=1e-5, atol=1e-6)
    # split outputs
    x = get("split_sizes.in0")
    assert np.array_equal(get("split_sizes.out1"), x[:, 1:4])
    # bf16 values round-trip
    a, b = bf("bf16_add.in0"), bf("bf16_add.in1")
    assert np.allclose(bf("bf16_add.out0"), a + b, rtol=1e-2, atol=1e-2)
    a, b = bf("bf16_matmul.in0"), bf("bf16_matmul.in1")
    assert np.allclose(bf("bf16_matmul.out0"), a @ b, rtol=2e-2, atol=2e-2)
    # bool / i64 dtypes
    assert st["where.in0"][0] == "BOOL" and st["embedding.in0"][0] == "I64"
    # header padding / alignment
    with open(st_path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    assert (8 + n) % 8 == 0
    return len(meta["cases"])


def build_late_f32_cases():
    # f32 cases added after the bf16 ones, so that the random draws of every earlier case stay as they were
    case("clamp_min_above_max", "clamp", [randn(3, 4)], lambda ts, ta: ts[0].clamp(0.5, -0.5),
         attrs={"min": 0.5, "max": -0.5})


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    build_f32_cases()
    build_bf16_cases()
    build_late_f32_cases()
    st_path = os.path.join(OUT_DIR, "ops.safetensors")
    json_path = os.path.join(OUT_DIR, "ops.json")
    write_safetensors(st_path)
    doc = {
        "version": 1,
        "generator": "test/reference/gen_ops.py",
        "seed": SEED,
        "torch": torch.__version__,
        "conventions": [
            " ".join(item.split())
            for item in __doc__.split('Conventions (also written into ops.json under "conventions"):')[1]
            .split("\n  * ")
            if item.strip()
        ],
        "cases": CASES,
    }
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    n = validate(st_path, json_path)
    print(f"{n} cases ({sum(c['dtype'] == 'f32' for c in CASES)} f32, "
          f"{sum(c['dtype'] == 'bf16' for c in CASES)} bf16), {len(TENSORS)} tensors")
    print(f"{st_path}: {os.path.getsize(st_path)} bytes")
    print(f"{json_path}: {os.path.getsize(json_path)} bytes")
    for line in REPORT:
        print("  " + line)


if __name__ == "__main__":
    main()
