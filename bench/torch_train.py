"""PyTorch side of bench/train.ts: one adapter-training step (forward, classification-head cross-entropy,
backward, AdamW over the trainable parameters) on the plain-torch BERT of torch_bert.py, in f32 or under
torch.autocast('cpu', dtype=torch.bfloat16). One method and dtype per process, so ru_maxrss is that run's peak.
Reads {"threads", "layers", "seq", "batch", "method", "dtype", "steps", "device"?, "warmup"? (default 1)}; prints {"version", "s", "peak_rss"}.
With "serve": true it reads the request as the first stdin line and then runs one step per "step" line (see below).
With "device": "cuda" (bench/cuda/train.ts) everything is created on the GPU (torch >= 2.0's default device), autocast
targets CUDA and each step is timed to the end of its GPU work."""
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F

import torch_bert as tb

req = json.loads(sys.stdin.readline())  # one line, so that serve mode can go on reading stdin
torch.set_num_threads(req["threads"])
DEV = req.get("device", "cpu")
if DEV != "cpu":
    torch.set_default_device(DEV)
tb.setup(req["layers"], req["seq"], req["batch"])
m = req["method"]
p = tb.make(m)
base = tb.base_params()
for t in base:
    t.requires_grad_(m == "none")
head = [(tb.w(768, 768)).requires_grad_(), torch.zeros(768, requires_grad=True), tb.w(2, 768).requires_grad_(), torch.zeros(2, requires_grad=True)]
labels = torch.tensor([b % 2 for b in range(tb.B)])


def leaves(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from leaves(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from leaves(v)


trainable = [t for t in base if t.requires_grad] + list(leaves(p)) + head
opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)


def step():
    with torch.autocast("cuda" if DEV != "cpu" else "cpu", dtype=torch.bfloat16, enabled=req["dtype"] == "bf16"):
        h = tb.step(m, p)
        x = torch.tanh(F.linear(h[:, 0], head[0], head[1]))
        loss = F.cross_entropy(F.linear(x, head[2], head[3]).float(), labels)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if DEV != "cpu":
        torch.cuda.synchronize()


if req.get("serve"):
    # bench/train.ts pairs our steps with these: one step per "step" line, its time as a JSON line; "quit" ends with
    # the peak RSS
    print(json.dumps({"version": torch.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip() == "step":
            t0 = time.perf_counter()
            step()
            print(json.dumps({"s": time.perf_counter() - t0}), flush=True)
        else:
            break
    print(json.dumps({"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)
    sys.exit(0)

for _ in range(req.get("warmup", 1)):
    step()
best = float("inf")
for _ in range(req["steps"]):
    t0 = time.perf_counter()
    step()
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"version": torch.__version__, "s": best, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
