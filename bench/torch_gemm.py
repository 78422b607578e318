"""Times torch.mm / torch.bmm for the shapes bench/gemm.ts asks for, same thread count.
Batch mode: the request (JSON on stdin, {"threads", "cases": [{"key", "batch", "m", "n", "k", "dtype", "reps"?, "min_time"?}]})
-> one JSON object: {"version": ..., "results": [{"key": ..., "gflops": ...}]}.
Serve mode ("serve": true in the request, which is then the first stdin line): prints {"version"}, then answers each
"run I SECONDS" line with {"gflops"} of case I timed for at least SECONDS (bench/gemm.ts alternates these bursts with
its own); "quit" ends it."""
import json
import sys
import time

import torch

req = json.loads(sys.stdin.readline())
torch.set_num_threads(req["threads"])


def make(case):
    b, m, n, k, dt = case["batch"], case["m"], case["n"], case["k"], case["dtype"]
    dtype = torch.float32 if dt == "f32" else torch.bfloat16
    g = torch.Generator().manual_seed(0)
    if b == 0:
        A = torch.randn(m, k, generator=g).to(dtype)
        B = torch.randn(k, n, generator=g).to(dtype)
        return (lambda: torch.mm(A, B)), 2.0 * m * n * k
    A = torch.randn(b, m, k, generator=g).to(dtype)
    B = torch.randn(b, k, n, generator=g).to(dtype)
    return (lambda: torch.bmm(A, B)), 2.0 * b * m * n * k


def burst(fn, min_time):
    iters = 0
    t0 = time.perf_counter()
    while True:
        fn()
        iters += 1
        el = time.perf_counter() - t0
        if el > min_time:
            return el / iters


if req.get("serve"):
    made = {}
    print(json.dumps({"version": torch.__version__}), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] != "run":
            break
        i, min_time = int(parts[1]), float(parts[2])
        if i not in made:
            made[i] = make(req["cases"][i])
            made[i][0]()  # warm-up
        fn, flops = made[i]
        print(json.dumps({"gflops": flops / burst(fn, min_time) / 1e9}), flush=True)
    print(json.dumps({"done": 1}), flush=True)
    sys.exit(0)

out = []
for case in req["cases"]:
    fn, flops = make(case)
    fn()
    best = min(burst(fn, case.get("min_time", 0.3)) for _ in range(case.get("reps", 5)))
    out.append({"key": case["key"], "gflops": flops / best / 1e9})
print(json.dumps({"version": torch.__version__, "results": out}))
