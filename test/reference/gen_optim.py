#!/usr/bin/python3
"""Reference trajectories for lib/train/optim.ts: torch.optim.AdamW / SGD over 6 steps with fixed gradient
sequences, and the transformers learning-rate schedules (re-stated from transformers' optimization.py
formulas, as python3-torch has no transformers), evaluated at every step.

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_optim.py
Writes test/fixtures/optim/optim.json: {"params0": [...], "grads": [[...] per step], "<case>": [[params after step k]]}
"""
import json
import math
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'optim', 'optim.json')
g = torch.Generator().manual_seed(11)
p0 = torch.randn(7, generator=g, dtype=torch.float64)
grads = [torch.randn(7, generator=g, dtype=torch.float64) for _ in range(6)]


def run(make, lr_at=None):
    p = torch.nn.Parameter(p0.clone())
    opt = make([p])
    out = []
    for k, gr in enumerate(grads):
        if lr_at:
            for grp in opt.param_groups:
                grp['lr'] = lr_at(k)
        p.grad = gr.clone()
        opt.step()
        out.append(p.detach().tolist())
    return out


def linear(step, warmup=2, total=6):
    return step / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup))


def cosine(step, warmup=2, total=6, cycles=0.5):
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1 + math.cos(math.pi * cycles * 2 * progress)))


def polynomial(step, warmup=2, total=6, lr_init=0.1, lr_end=1e-3, power=2.0):
    if step < warmup:
        return step / max(1, warmup)
    if step > total:
        return lr_end / lr_init
    return ((lr_init - lr_end) * (1 - (step - warmup) / (total - warmup)) ** power + lr_end) / lr_init


res = {'params0': p0.tolist(), 'grads': [x.tolist() for x in grads]}
res['adamw'] = run(lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1))
res['adamw_nowd'] = run(lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.0))
res['sgd_momentum'] = run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01))
res['sgd_nesterov'] = run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True))
res['sgd_plain'] = run(lambda ps: torch.optim.SGD(ps, lr=0.1))
# AdamW under a linear warmup/decay schedule (LambdaLR: lr at step k = base * lambda(k))
res['adamw_linear'] = run(lambda ps: torch.optim.AdamW(ps, lr=0.05), lambda k: 0.05 * linear(k))
res['schedules'] = {
    'linear': [linear(s) for s in range(9)],
    'cosine': [cosine(s) for s in range(9)],
    'polynomial': [polynomial(s) for s in range(9)],
}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, 'w') as f:
    json.dump(res, f)
print('wrote', OUT)
