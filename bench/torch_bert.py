"""Plain-torch BERT-base (random weights, frozen base) with the Adapters library's math for seq_bn (Pfeiffer,
reduction 16, relu), LoRA (r 8 on q/v), prefix tuning (30 prefixes, MLP 512) and (IA)3 (k, v, intermediate):
the PyTorch side of bench/methods.ts and bench/train.ts. setup(layers, seq, batch) builds it; step(method, p)
returns the last hidden state."""
import math

import torch
import torch.nn.functional as F

C, H, I, V = 768, 12, 3072, 30522
D = C // H
L = T = B = 0
emb = pos = layers = ids = None


def setup(n_layers, seq, batch):
    global L, T, B, emb, pos, layers, ids
    L, T, B = n_layers, seq, batch
    torch.manual_seed(0)
    emb, pos = w(V, C), w(512, C)
    layers = [dict(q=w(C, C), k=w(C, C), v=w(C, C), o=w(C, C), up=w(I, C), down=w(C, I), bq=torch.zeros(C), bk=torch.zeros(C), bv=torch.zeros(C),
                   bo=torch.zeros(C), bu=torch.zeros(I), bd=torch.zeros(C), g1=torch.ones(C), b1=torch.zeros(C), g2=torch.ones(C), b2=torch.zeros(C))
              for _ in range(L)]
    ids = torch.tensor([[(b * 131 + t * 7) % 30000 + 100 for t in range(T)] for b in range(B)])


def base_params():
    return [emb, pos] + [t for l in layers for t in l.values()]


def w(*s):
    return torch.randn(*s) * 0.02


def make(method):
    p = {}
    if method == "seq_bn":
        p["ad"] = [dict(dw=w(C // 16, C).requires_grad_(), db=torch.zeros(C // 16, requires_grad=True), uw=w(C, C // 16).requires_grad_(),
                        ub=torch.zeros(C, requires_grad=True)) for _ in range(L)]
    if method == "lora":
        p["lora"] = [{m: (w(8, C).requires_grad_(), w(C, 8).requires_grad_()) for m in ("q", "v")} for _ in range(L)]
    if method == "ia3":
        p["ia3"] = [dict(k=torch.ones(C, requires_grad=True), v=torch.ones(C, requires_grad=True), up=torch.ones(I, requires_grad=True)) for _ in range(L)]
    if method == "prefix_tuning":
        p["wte"] = w(30, C).requires_grad_()
        p["c1"] = (w(512, C).requires_grad_(), torch.zeros(512, requires_grad=True))
        p["c2"] = (w(L * 2 * C, 512).requires_grad_(), torch.zeros(L * 2 * C, requires_grad=True))
    return p


def step(method, p):
    h = F.layer_norm(emb[ids] + pos[:T], (C,))
    if method == "prefix_tuning":
        kv = F.linear(torch.tanh(F.linear(p["wte"], *p["c1"])), *p["c2"]).view(30, L * 2, H, D).permute(1, 2, 0, 3)
    for i, l in enumerate(layers):
        def proj(x, name, wt, b):
            y = F.linear(x, wt, b)
            if method == "lora" and name in ("q", "v"):
                A, Bm = p["lora"][i][name]
                y = y + F.linear(F.linear(x, A), Bm)
            if method == "ia3" and name in ("k", "v"):
                y = y * p["ia3"][i][name]
            return y
        q = proj(h, "q", l["q"], l["bq"]).view(B, T, H, D).transpose(1, 2)
        k = proj(h, "k", l["k"], l["bk"]).view(B, T, H, D).transpose(1, 2)
        v = proj(h, "v", l["v"], l["bv"]).view(B, T, H, D).transpose(1, 2)
        if method == "prefix_tuning":
            k = torch.cat([kv[2 * i].unsqueeze(0).expand(B, -1, -1, -1), k], 2)
            v = torch.cat([kv[2 * i + 1].unsqueeze(0).expand(B, -1, -1, -1), v], 2)
        a = (torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), -1) @ v).transpose(1, 2).reshape(B, T, C)
        h = F.layer_norm(F.linear(a, l["o"], l["bo"]) + h, (C,), l["g1"], l["b1"])
        u = F.gelu(F.linear(h, l["up"], l["bu"]))
        if method == "ia3":
            u = u * p["ia3"][i]["up"]
        f = F.linear(u, l["down"], l["bd"])
        if method == "seq_bn":
            ad = p["ad"][i]
            x = F.layer_norm(f + h, (C,), l["g2"], l["b2"])
            f = F.linear(F.relu(F.linear(x, ad["dw"], ad["db"])), ad["uw"], ad["ub"]) + f
        h = F.layer_norm(f + h, (C,), l["g2"], l["b2"])
    return h


