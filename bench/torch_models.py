"""PyTorch baseline for bench/models.ts: BERT-base-shaped and LLaMA-style encoder/decoder forwards written
with plain torch ops (transformers isn't packaged for Debian's python3-torch), same shapes, same thread count.
Reads {"threads", "cases": [{"key", "arch", "batch", "seq", "cfg"}]} on stdin; prints {"results": [{"key", "tokens_per_s"}]}."""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

req = json.load(sys.stdin)
torch.set_num_threads(req["threads"])
torch.manual_seed(0)


def bert_forward(cfg, B, T):
    C, L, H, I, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["intermediate_size"], cfg["vocab_size"]
    w = lambda *s: torch.randn(*s) * 0.02
    emb, pos = w(V, C), w(512, C)
    layers = [dict(q=w(C, C), k=w(C, C), v=w(C, C), o=w(C, C), up=w(I, C), down=w(C, I), bq=torch.zeros(C), bk=torch.zeros(C),
                   bv=torch.zeros(C), bo=torch.zeros(C), bu=torch.zeros(I), bd=torch.zeros(C), g1=torch.ones(C), b1=torch.zeros(C),
                   g2=torch.ones(C), b2=torch.zeros(C)) for _ in range(L)]
    ids = torch.randint(0, V, (B, T))

    def run():
        h = F.layer_norm(emb[ids] + pos[:T], (C,))
        for p in layers:
            q = F.linear(h, p["q"], p["bq"]).view(B, T, H, C // H).transpose(1, 2)
            k = F.linear(h, p["k"], p["bk"]).view(B, T, H, C // H).transpose(1, 2)
            v = F.linear(h, p["v"], p["bv"]).view(B, T, H, C // H).transpose(1, 2)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(C // H), -1) @ v
            a = a.transpose(1, 2).reshape(B, T, C)
            h = F.layer_norm(F.linear(a, p["o"], p["bo"]) + h, (C,), p["g1"], p["b1"])
            f = F.linear(F.gelu(F.linear(h, p["up"], p["bu"])), p["down"], p["bd"])
            h = F.layer_norm(f + h, (C,), p["g2"], p["b2"])
        return h
    return run


def llama_forward(cfg, B, T):
    C, L, H, KV, I, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]
    D = C // H
    w = lambda *s: torch.randn(*s) * 0.02
    emb = w(V, C)
    layers = [dict(q=w(C, C), k=w(KV * D, C), v=w(KV * D, C), o=w(C, C), g=w(I, C), u=w(I, C), d=w(C, I), n1=torch.ones(C), n2=torch.ones(C))
              for _ in range(L)]
    ids = torch.randint(0, V, (B, T))
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    fr = torch.outer(torch.arange(T).float(), inv)
    cos, sin = torch.cat([fr, fr], -1).cos(), torch.cat([fr, fr], -1).sin()
    mask = torch.full((T, T), float("-inf")).triu(1)

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * g

    def rot(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([-x2, x1], -1)

    def run():
        h = emb[ids]
        for p in layers:
            x = rms(h, p["n1"])
            q = F.linear(x, p["q"]).view(B, T, H, D).transpose(1, 2)
            k = F.linear(x, p["k"]).view(B, T, KV, D).transpose(1, 2)
            v = F.linear(x, p["v"]).view(B, T, KV, D).transpose(1, 2)
            q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
            k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + mask, -1) @ v
            h = h + F.linear(a.transpose(1, 2).reshape(B, T, C), p["o"])
            x = rms(h, p["n2"])
            h = h + F.linear(F.silu(F.linear(x, p["g"])) * F.linear(x, p["u"]), p["d"])
        return rms(h, torch.ones(C))
    return run


out = []
for c in req["cases"]:
    fn = (bert_forward if c["arch"] == "bert" else llama_forward)(c["cfg"], c["batch"], c["seq"])
    with torch.no_grad():
        fn()
        best = float("inf")
        for _ in range(c.get("reps", 3)):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    out.append({"key": c["key"], "tokens_per_s": c["batch"] * c["seq"] / best})
print(json.dumps({"version": torch.__version__, "results": out}))
