#!/usr/bin/python3
"""Reference trajectories for Adafactor (lib/train/optim.ts): transformers' Adafactor update rule, restated here in
torch (python3-torch has no transformers) from transformers/optimization.py, applied for 8 steps to a matrix
(factored second moment), a 3-d tensor (factored over its last two dims) and a vector (unfactored), with fixed
gradient sequences, in float32 like the library.

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_adafactor.py
Writes test/fixtures/optim/adafactor.json: {"shapes", "params0", "grads": [step][param], "<case>": [step][param]}
"""
import json
import math
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'optim', 'adafactor.json')
STEPS = 8
gen = torch.Generator().manual_seed(5)
shapes = [[5, 7], [2, 3, 4], [6]]
params0 = [torch.randn(*s, generator=gen) for s in shapes]
grads = [[torch.randn(*s, generator=gen) * (0.1 + k) for s in shapes] for k in range(STEPS)]


def rms(t):
    return t.norm(2) / (t.numel() ** 0.5)


def run(lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None, weight_decay=0.0,
        scale_parameter=True, relative_step=True, warmup_init=False):
    ps = [p.clone() for p in params0]
    state = [{} for _ in ps]
    out = []
    for k in range(STEPS):
        for i, p in enumerate(ps):
            grad = grads[k][i]
            st = state[i]
            factored = grad.dim() >= 2
            if not st:
                st['step'] = 0
                if beta1 is not None:
                    st['exp_avg'] = torch.zeros_like(grad)
                if factored:
                    st['row'] = torch.zeros(grad.shape[:-1])
                    st['col'] = torch.zeros(grad.shape[:-2] + grad.shape[-1:])
                else:
                    st['sq'] = torch.zeros_like(grad)
            st['step'] += 1
            step_lr = lr
            if relative_step:
                min_step = 1e-6 * st['step'] if warmup_init else 1e-2
                step_lr = min(min_step, 1.0 / math.sqrt(st['step']))
            if scale_parameter:
                step_lr = max(eps[1], rms(p).item()) * step_lr
            beta2t = 1.0 - math.pow(st['step'], decay_rate)
            update = grad ** 2 + eps[0]
            if factored:
                st['row'].mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
                st['col'].mul_(beta2t).add_(update.mean(dim=-2), alpha=1.0 - beta2t)
                r = (st['row'] / st['row'].mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
                c = st['col'].unsqueeze(-2).rsqrt()
                update = torch.mul(r, c).mul_(grad)
            else:
                st['sq'].mul_(beta2t).add_(update, alpha=1.0 - beta2t)
                update = st['sq'].rsqrt().mul_(grad)
            update.div_((rms(update) / clip_threshold).clamp_(min=1.0))
            update.mul_(step_lr)
            if beta1 is not None:
                st['exp_avg'].mul_(beta1).add_(update, alpha=1 - beta1)
                update = st['exp_avg']
            if weight_decay != 0:
                p.add_(p, alpha=-weight_decay * step_lr)
            p.add_(-update)
        out.append([p.flatten().tolist() for p in ps])
    return out


res = {'shapes': shapes, 'params0': [p.flatten().tolist() for p in params0],
       'grads': [[g.flatten().tolist() for g in gs] for gs in grads]}
res['defaults'] = run()  # relative_step, scale_parameter
res['trainer'] = run(lr=1e-2, relative_step=False, scale_parameter=False)  # HF Trainer's optim="adafactor"
res['beta1_wd_warmup'] = run(beta1=0.9, weight_decay=0.1, warmup_init=True, clip_threshold=0.5)
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, 'w') as f:
    json.dump(res, f)
print('wrote', OUT)
