"""PyTorch baseline for bench/methods.ts: the plain-torch BERT of torch_bert.py (frozen base) with each adapter
method's math; one forward+backward of sum(h**2). Prints {"version", "results": {method: {"s", "peak"}}}."""
import json
import resource
import sys
import time

import torch

import torch_bert as tb

req = json.load(sys.stdin)
torch.set_num_threads(req["threads"])
tb.setup(req["layers"], req["seq"], req["batch"])

out = {}
for m in req["methods"]:
    p = tb.make(m)
    base = tb.base_params()
    for t in base:
        t.requires_grad_(m == "none")  # 'none' = full fine-tuning; adapters train only their own parameters

    def step():
        h = tb.step(m, p)
        (h * h).sum().backward()
    step()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
        for t in base:
            t.grad = None
    out[m] = {"s": best, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
print(json.dumps({"version": torch.__version__, "results": out}))
