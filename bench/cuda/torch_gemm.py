"""torch.matmul on the GPU for the shapes test/cuda/gpu/check.cu times, printing the same JSON lines
({"type": "bench", "impl": "torch", ...}, one per measurement) so that ours / torch ratios can be computed.

  bf16: torch.matmul on bf16 operands (bf16 output, what torch returns), layouts nn (A·B), nt (A·Bᵀ, as
        nn.Linear), tn (Aᵀ·B, a weight gradient); plus torch.mm(..., out_dtype=torch.float32) where this torch
        has it (f32 output, like ours).
  f32:  nn and nt with TF32 off (torch's default, full f32 like ours) and on (for reference).
Timing as in check.cu: 3 warm-up calls, then the median over samples of the mean time per call, each sample
long enough (>= ~2 ms) for CUDA events, rotating among input sets so repeated calls do not run from L2.

Usage: python3 bench/cuda/torch_gemm.py [--quick]
"""
import json
import math
import sys

import torch

SHAPES = [
    ("square-4096", 4096, 4096, 4096),
    ("square-8192", 8192, 8192, 8192),
    ("bert-qkvo 4096x768x768", 4096, 768, 768),
    ("bert-ffn-up 4096x3072x768", 4096, 3072, 768),
    ("bert-ffn-down 4096x768x3072", 4096, 768, 3072),
    ("llama-up 4096x11008x4096", 4096, 11008, 4096),
    ("skinny lora-dA 8x768x4096", 8, 768, 4096),
    ("skinny bn-dW 48x768x4096", 48, 768, 4096),
    ("skinny ft-dW 768x768x4096", 768, 768, 4096),
]


def emit(obj):
    print(json.dumps(obj), flush=True)


def time_calls(call, samples):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    i = 0
    for _ in range(3):
        call(i)
        i += 1
    torch.cuda.synchronize()
    e0.record()
    call(i)
    i += 1
    e1.record()
    e1.synchronize()
    one = max(e0.elapsed_time(e1), 1e-3)
    iters = max(1, min(500, math.ceil(2.0 / one)))
    v = []
    for _ in range(samples):
        e0.record()
        for _ in range(iters):
            call(i)
            i += 1
        e1.record()
        e1.synchronize()
        v.append(e0.elapsed_time(e1) / iters)
    torch.cuda.synchronize()
    v.sort()
    return v[len(v) // 2], v[0], v[-1], iters, samples


def record(dtype, layout, variant, kernel, shape, t, sets):
    name, M, N, K = shape
    med, lo, hi, iters, samples = t
    emit({"type": "bench", "impl": "torch", "dtype": dtype, "layout": layout, "variant": variant, "kernel": kernel,
          "shape": name, "M": M, "N": N, "K": K, "ms": round(med, 5), "ms_min": round(lo, 5), "ms_max": round(hi, 5),
          "tflops": round(2.0 * M * N * K / (med * 1e-3) / 1e12, 2), "iters": iters, "samples": samples,
          "input_sets": sets, "torch": torch.__version__})


def operands(M, N, K, dtype, sets, gen):
    def rnd(r, c):
        return (torch.rand(r, c, device="cuda", generator=gen) * 2 - 1).to(dtype)
    return [dict(A=rnd(M, K), B=rnd(K, N), Bt=rnd(N, K), At=rnd(K, M)) for _ in range(sets)]


def main():
    quick = "--quick" in sys.argv
    if not torch.cuda.is_available():
        emit({"type": "summary", "skipped": True, "why": "torch sees no CUDA device"})
        return 77
    dev = torch.cuda.get_device_properties(0)
    emit({"type": "device", "impl": "torch", "name": dev.name, "sms": dev.multi_processor_count,
          "torch": torch.__version__, "cuda": torch.version.cuda})
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1234)

    # memory ceiling, once: device-to-device copy, bytes read + written
    x = torch.empty(1 << 29, dtype=torch.float32, device="cuda")  # 2 GiB
    y = torch.empty_like(x)
    t = time_calls(lambda i: y.copy_(x), 5)
    emit({"type": "ceiling", "what": "d2d copy GB/s (read+write)", "value": round(2 * x.numel() * 4 / (t[0] * 1e-3) / 1e9, 1)})
    del x, y

    has_out_dtype = True
    for shape in (SHAPES[:1] if quick else SHAPES):
        name, M, N, K = shape
        samples = 7 if M * N * K > (1 << 38) else 11
        # ---- bf16
        ab = (M * K + K * N) * 2
        sets = max(1, min(4, (256 << 20) // ab))
        ops = operands(M, N, K, torch.bfloat16, sets, gen)
        layouts = {
            "nn": lambda o: torch.matmul(o["A"], o["B"]),
            "nt": lambda o: torch.matmul(o["A"], o["Bt"].t()),
            "tn": lambda o: torch.matmul(o["At"].t(), o["B"]),
        }
        for lay, f in layouts.items():
            t = time_calls(lambda i, f=f: f(ops[i % sets]), samples)
            record("bf16", lay, "torch.matmul", "cublas, bf16 out", shape, t, sets)
        if has_out_dtype:
            for lay, (a, b) in {"nn": ("A", "B"), "nt": ("A", "Bt")}.items():
                def f(i, a=a, b=b, lay=lay):
                    o = ops[i % sets]
                    return torch.mm(o[a], o[b] if lay == "nn" else o[b].t(), out_dtype=torch.float32)
                try:
                    f(0)
                except (TypeError, RuntimeError) as e:  # this torch has no out_dtype
                    has_out_dtype = False
                    emit({"type": "note", "what": "torch.mm(out_dtype=float32) unavailable: %s" % str(e)[:200]})
                    break
                t = time_calls(f, samples)
                record("bf16", lay, "torch.mm(out_dtype=f32)", "cublas, f32 out", shape, t, sets)
        del ops
        # ---- f32, TF32 off (torch's default) and on
        ab = (M * K + K * N) * 4
        sets = max(1, min(4, (256 << 20) // ab))
        ops = operands(M, N, K, torch.float32, sets, gen)
        for prec, label in (("highest", "torch.matmul tf32=off"), ("high", "torch.matmul tf32=on")):
            torch.set_float32_matmul_precision(prec)
            for lay, f in (("nn", lambda o: torch.matmul(o["A"], o["B"])), ("nt", lambda o: torch.matmul(o["A"], o["Bt"].t())),
                           ("tn", lambda o: torch.matmul(o["At"].t(), o["B"]))):
                t = time_calls(lambda i, f=f: f(ops[i % sets]), samples)
                record("f32" if prec == "highest" else "f32_tf32", lay, label, "cublas", shape, t, sets)
        torch.set_float32_matmul_precision("highest")
        del ops
        torch.cuda.empty_cache()
    emit({"type": "summary", "impl": "torch", "done": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
