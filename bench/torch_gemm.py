"""Times torch.mm / torch.bmm for the shapes bench/gemm.ts asks for (JSON on stdin), same thread count.
Prints one JSON object: {"version": ..., "results": [{"key": ..., "gflops": ...}]}."""
import json
import sys
import time

import torch

req = json.load(sys.stdin)
torch.set_num_threads(req["threads"])
out = []
for case in req["cases"]:
    b, m, n, k, dt = case["batch"], case["m"], case["n"], case["k"], case["dtype"]
    dtype = torch.float32 if dt == "f32" else torch.bfloat16
    g = torch.Generator().manual_seed(0)
    if b == 0:
        A = torch.randn(m, k, generator=g).to(dtype)
        B = torch.randn(k, n, generator=g).to(dtype)
        fn = lambda: torch.mm(A, B)
    else:
        A = torch.randn(b, m, k, generator=g).to(dtype)
        B = torch.randn(b, k, n, generator=g).to(dtype)
        fn = lambda: torch.bmm(A, B)
    flops = 2.0 * max(b, 1) * m * n * k
    fn()
    best = float("inf")
    for _ in range(case.get("reps", 5)):
        iters = 0
        t0 = time.perf_counter()
        while True:
            fn()
            iters += 1
            el = time.perf_counter() - t0
            if el > case.get("min_time", 0.3):
                break
        best = min(best, el / iters)
    out.append({"key": case["key"], "gflops": flops / best / 1e9})
print(json.dumps({"version": torch.__version__, "results": out}))
