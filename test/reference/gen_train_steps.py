#!/usr/bin/python3
"""Reference training trajectories: 20 AdamW steps of adapter training on the tiny BERT and GPT-2 models.

A from-scratch float32 PyTorch BertModel / GPT2Model with LoRA (r 8, alpha 8, q+v) or a seq_bn (Pfeiffer)
bottleneck, wired in and named as the Python Adapters library's flex-head models (BertAdapterModel /
GPT2AdapterModel) do (../shared/FORMATS.md §1.3, §2). Before training the script checks itself against the
library's outputs in SHARED/reference: the plain base models (base.safetensors), the lora / seq_bn adapters
(last_hidden_state; for GPT-2 also grad/* of sum(h^2)) and, for BERT, the classification head (head_classification).

Cases: bert_lora, bert_seq_bn (classification head 'a', cross-entropy on token 0), gpt2_lora, gpt2_seq_bn
(causal LM loss with the LM head tied to wte). Adapter and head weights are re-drawn N(0, 0.05^2)
(torch.manual_seed(0), trainable parameters in the order listed in `trainable`), so no gradient is zero.
Training: 8 examples, batches of 4 taken in order (step s uses examples (s%2)*4 .. +4), right padding with 0,
AdamW(lr 5e-3, wd 0.01 on non-bias weights) + linear schedule (2 warmup of 20 steps), grad-norm clipping 1.0.

Run with Debian's python (torch 1.13):  /usr/bin/python3 test/reference/gen_train_steps.py /work/shared
Writes test/fixtures/train_steps/<case>.safetensors (init/<param> for every parameter, final/<param> for the
trainable ones after 20 steps; f32) and <case>.json (config, examples, per-step losses, hyper-parameters).
"""
import json
import math
import os

import torch

from adapter_ref import REF, ROOT, load_st, save_st

F = torch.nn.functional
OUT = os.path.join(ROOT, 'test', 'fixtures', 'train_steps')
STEPS, BATCH, WARMUP, LR, WD, CLIP, STD = 20, 4, 2, 5e-3, 0.01, 1.0, 0.05
LORA_R, LORA_SCALING = 8, 8 / 8  # LoRA defaults: r 8, alpha 8 -> scaling alpha / r = 1
PREFIX = {'bert': 'bert.', 'gpt2': 'transformer.'}
torch.set_num_threads(1)


def load_arch(arch):
    cfg = json.load(open(os.path.join(REF, 'models', arch, 'config.json')))
    for k in ('attention_probs_dropout_prob', 'hidden_dropout_prob', 'attn_pdrop', 'embd_pdrop', 'resid_pdrop'):
        if k in cfg:
            cfg[k] = 0.0
    if 'summary_first_dropout' in cfg:
        cfg['summary_first_dropout'] = 0.0
    w = load_st(os.path.join(REF, 'models', arch, 'model.safetensors'))
    return cfg, {PREFIX[arch] + k: v.float() for k, v in w.items()}


# ---------------------------------------------------------------- BERT (post-LN), BertAdapterModel names

def bert_forward(cfg, P, kind, ids, mask, hook=None, embeds=None, past=None):
    """hook(module_name, x, base) -> y replaces a projection (gen_peft.py applies PEFT's LoRA / IA3 there);
    embeds (B, T, H) replaces the word-embedding lookup (PEFT prompt tuning); past = [(k, v) per layer, each
    (NH, Pp, HD)] are prepended keys/values, always visible, and shift the positions by Pp (HF's past_key_values,
    as PEFT prefix tuning passes them; `mask` then covers only the T real tokens)."""
    H, NH, L, EPS = cfg['hidden_size'], cfg['num_attention_heads'], cfg['num_hidden_layers'], cfg['layer_norm_eps']
    HD = H // NH
    B, T = ids.shape

    def ln(n, x):
        return F.layer_norm(x, (H,), P[f'{n}.weight'], P[f'{n}.bias'], EPS)

    def lin(n, x):
        if hook:
            return hook(n, x, lambda z: z @ P[f'{n}.weight'].T + P[f'{n}.bias'])
        y = x @ P[f'{n}.weight'].T + P[f'{n}.bias']
        if f'{n}.loras.a.lora_A' in P:  # LoRA
            y = y + (x @ P[f'{n}.loras.a.lora_A'].T @ P[f'{n}.loras.a.lora_B'].T) * LORA_SCALING
        return y

    def out_bottleneck(site, hidden, inp, norm):
        """seq_bn: LN(up(relu(down(LN(hidden + inp)))) + hidden + inp); plain: LN(hidden + inp)."""
        a = f'{site}.adapters.a'
        if f'{a}.adapter_up.weight' not in P:
            return norm(hidden + inp)
        residual = hidden
        h = norm(hidden + inp)
        up = torch.relu(h @ P[f'{a}.adapter_down.0.weight'].T + P[f'{a}.adapter_down.0.bias']) @ P[f'{a}.adapter_up.weight'].T + P[f'{a}.adapter_up.bias']
        return norm(up * 1.0 + residual + inp)

    e = 'bert.embeddings'
    words = P[f'{e}.word_embeddings.weight'][ids] if embeds is None else embeds
    off = past[0][0].shape[1] if past else 0
    x = words + P[f'{e}.position_embeddings.weight'][off:off + T] + P[f'{e}.token_type_embeddings.weight'][0]
    x = ln(f'{e}.LayerNorm', x)
    if past:
        mask = torch.cat([torch.ones(B, off, dtype=mask.dtype), mask], 1)
    bias = ((1.0 - mask.float()) * torch.finfo(torch.float32).min)[:, None, None, :]
    for i in range(L):
        p = f'bert.encoder.layer.{i}'
        heads = lambda t: t.view(B, T, NH, HD).transpose(1, 2)
        q, k, v = (heads(lin(f'{p}.attention.self.{m}', x)) for m in ('query', 'key', 'value'))
        if past:
            k = torch.cat([past[i][0].expand(B, -1, -1, -1), k], 2)
            v = torch.cat([past[i][1].expand(B, -1, -1, -1), v], 2)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HD) + bias, -1) @ v
        o = lin(f'{p}.attention.output.dense', att.transpose(1, 2).reshape(B, T, H))
        x = out_bottleneck(f'{p}.attention.output', o, x, lambda y: ln(f'{p}.attention.output.LayerNorm', y))
        f = lin(f'{p}.output.dense', F.gelu(lin(f'{p}.intermediate.dense', x)))
        x = out_bottleneck(f'{p}.output', f, x, lambda y: ln(f'{p}.output.LayerNorm', y))
    return x


def bert_head(P, h):
    """Classification head 'a' (layers 2, tanh, no pooler): [Dropout, Linear, tanh, Dropout, Linear] on token 0."""
    c = torch.tanh(h[:, 0] @ P['heads.a.1.weight'].T + P['heads.a.1.bias'])
    return c @ P['heads.a.4.weight'].T + P['heads.a.4.bias']


# ---------------------------------------------------------------- GPT-2 (pre-LN), GPT2AdapterModel names

def gpt2_forward(cfg, P, kind, ids, mask, hook=None, embeds=None, past=None):
    H, NH, L, EPS = cfg['n_embd'], cfg['n_head'], cfg['n_layer'], cfg['layer_norm_epsilon']
    HD = H // NH
    B, T = ids.shape
    MIN = torch.finfo(torch.float32).min

    def ln(n, x):
        return F.layer_norm(x, (H,), P[f'{n}.weight'], P[f'{n}.bias'], EPS)

    def conv1d(n, x):  # transformers' Conv1D: weight stored (in, out)
        if hook:
            return hook(n, x, lambda z: z @ P[f'{n}.weight'] + P[f'{n}.bias'])
        return x @ P[f'{n}.weight'] + P[f'{n}.bias']

    def c_attn(n, x):
        y = conv1d(n, x)
        if f'{n}.loras.a.lora_A' in P:
            # LoRAMergedLinear, attn_matrices q,v: lora_A [2r, H], lora_B [2H, r] (grouped conv1d, 2 groups); the
            # q delta goes to output columns 0..H-1, the v delta to 2H..3H-1, k gets nothing. scaling alpha/r = 1
            A, Bm = P[f'{n}.loras.a.lora_A'], P[f'{n}.loras.a.lora_B']
            r = A.shape[0] // 2
            dq = x @ A[:r].T @ Bm[:H].T
            dv = x @ A[r:].T @ Bm[H:].T
            y = y + torch.cat([dq, torch.zeros_like(dq), dv], -1) * LORA_SCALING
        return y

    def bottleneck(site, hidden, residual_stream):
        """Called with layer_norm=None: seq_bn gives residual + hidden + up(relu(down(hidden + residual)))."""
        a = f'{site}.adapters.a'
        if f'{a}.adapter_up.weight' not in P:
            return hidden + residual_stream
        h = hidden + residual_stream
        up = torch.relu(h @ P[f'{a}.adapter_down.0.weight'].T + P[f'{a}.adapter_down.0.bias']) @ P[f'{a}.adapter_up.weight'].T + P[f'{a}.adapter_up.bias']
        return up * 1.0 + hidden + residual_stream

    t = 'transformer'
    off = past[0][0].shape[1] if past else 0
    # positions off..off+T-1 regardless of padding (off = the past length, as HF counts past_key_values)
    x = (P[f'{t}.wte.weight'][ids] if embeds is None else embeds) + P[f'{t}.wpe.weight'][off:off + T]
    causal = torch.cat([torch.ones(T, off, dtype=torch.bool), torch.tril(torch.ones(T, T, dtype=torch.bool))], 1)
    if past:
        mask = torch.cat([torch.ones(B, off, dtype=mask.dtype), mask], 1)
    pad = ((1.0 - mask.float()) * MIN)[:, None, None, :]
    for i in range(L):
        p = f'{t}.h.{i}'
        heads = lambda z: z.view(B, T, NH, HD).transpose(1, 2)
        q, k, v = (heads(z) for z in c_attn(f'{p}.attn.c_attn', ln(f'{p}.ln_1', x)).split(H, -1))
        if past:
            k = torch.cat([past[i][0].expand(B, -1, -1, -1), k], 2)
            v = torch.cat([past[i][1].expand(B, -1, -1, -1), v], 2)
        s = q @ k.transpose(-1, -2) / math.sqrt(HD)
        s = torch.where(causal, s, torch.tensor(MIN)) + pad
        att = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, H)
        x = bottleneck(f'{p}.attention_adapters', conv1d(f'{p}.attn.c_proj', att), x)
        m = conv1d(f'{p}.mlp.c_proj', F.gelu(conv1d(f'{p}.mlp.c_fc', ln(f'{p}.ln_2', x)), approximate='tanh'))
        x = bottleneck(f'{p}.output_adapters', m, x)
    return ln(f'{t}.ln_f', x)


FORWARD = {'bert': bert_forward, 'gpt2': gpt2_forward}


# ---------------------------------------------------------------- adapter parameters (module order)

def adapter_shapes(arch, cfg, kind):
    H = cfg.get('hidden_size') or cfg['n_embd']
    L = cfg.get('num_hidden_layers') or cfg['n_layer']
    out = []
    for i in range(L):
        if kind == 'lora':
            mods = ([(f'bert.encoder.layer.{i}.attention.self.{m}', H, LORA_R) for m in ('query', 'value')] if arch == 'bert'
                    else [(f'transformer.h.{i}.attn.c_attn', 2 * H, 2 * LORA_R)])  # (module, lora_B rows, lora_A rows)
            for n, out_rows, a_rows in mods:
                out += [(f'{n}.loras.a.lora_A', (a_rows, H)), (f'{n}.loras.a.lora_B', (out_rows, LORA_R))]
        else:
            site = f'bert.encoder.layer.{i}.output' if arch == 'bert' else f'transformer.h.{i}.output_adapters'
            d = H // 16
            a = f'{site}.adapters.a'
            out += [(f'{a}.adapter_down.0.weight', (d, H)), (f'{a}.adapter_down.0.bias', (d,)),
                    (f'{a}.adapter_up.weight', (H, d)), (f'{a}.adapter_up.bias', (H,))]
    if arch == 'bert':
        out += [('heads.a.1.weight', (H, H)), ('heads.a.1.bias', (H,)), ('heads.a.4.weight', (3, H)), ('heads.a.4.bias', (3,))]
    return out


# ---------------------------------------------------------------- validation against the Python library

def validate(arch, cfg, base_w):
    base = load_st(os.path.join(REF, arch, 'base.safetensors'))
    ids, mask = base['input_ids'], base['attention_mask']
    fwd = FORWARD[arch]
    err = (fwd(cfg, base_w, None, ids, mask) - base['last_hidden_state']).abs().max().item()
    print(f'{arch} base vs library: max abs diff {err:.2e}')
    assert err < 1e-5, err
    for kind in ('lora', 'seq_bn'):
        ad = {PREFIX[arch] + k: v.float().requires_grad_(True)
              for k, v in load_st(os.path.join(REF, arch, kind, 'a', 'adapter.safetensors')).items()}
        exp = load_st(os.path.join(REF, arch, kind, 'expected.safetensors'))
        h = fwd(cfg, dict(base_w, **ad), kind, ids, mask)
        err = (h - exp['last_hidden_state']).abs().max().item()
        (h * h).sum().backward()
        print(f'{arch} {kind} vs library: last_hidden_state max abs diff {err:.2e}')
        assert err < 1e-4, err
        if arch == 'gpt2':
            # BERT's grad/* are rounding noise (|g| < 2e-6): its last LayerNorm has weight 1, bias 0, so sum(h^2) is
            # constant. GPT-2's are real; the library's are f32 through that near-cancellation (a float64 run of this
            # model differs from them by the same 1.3e-4), hence the looser bound relative to the largest entry.
            gerr = max(((v.grad - exp['grad/' + k[len(PREFIX[arch]):]]).abs().max() / exp['grad/' + k[len(PREFIX[arch]):]].abs().max()).item()
                       for k, v in ad.items())
            print(f'{arch} {kind} vs library: grad/* of sum(h^2), max abs diff / max |grad| {gerr:.2e}')
            assert gerr < 1e-3, gerr
    if arch == 'bert':
        d = os.path.join(REF, 'bert', 'head_classification')
        P = dict(base_w, **load_st(os.path.join(d, 'a', 'adapter.safetensors')), **load_st(os.path.join(d, 'a', 'model_head.safetensors')))
        err = (bert_head(P, fwd(cfg, P, 'seq_bn', ids, mask)) - load_st(os.path.join(d, 'expected.safetensors'))['logits']).abs().max().item()
        print(f'bert head_classification (flex names) vs library: logits max abs diff {err:.2e}')
        assert err < 1e-4, err


# ---------------------------------------------------------------- data, loss, training

def make_examples():
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(5, 9, (8,), generator=g).tolist()  # [6, 8, 5, 5, 8, 6, 8, 6]: both batches are padded
    ex = [torch.randint(3, 98, (n,), generator=g).tolist() for n in lengths]
    labels = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(2)).tolist()
    return ex, labels


def batch(arch, examples, cls_labels, s):
    rows = list(range((s % 2) * BATCH, (s % 2) * BATCH + BATCH))
    T = max(len(examples[r]) for r in rows)
    ids = torch.tensor([examples[r] + [0] * (T - len(examples[r])) for r in rows])
    mask = torch.tensor([[1] * len(examples[r]) + [0] * (T - len(examples[r])) for r in rows])
    if arch == 'bert':
        labels = torch.tensor([cls_labels[r] for r in rows])
    else:
        labels = torch.tensor([examples[r] + [-100] * (T - len(examples[r])) for r in rows])
    return ids, mask, labels


def loss_fn(arch, cfg, P, kind, ids, mask, labels):
    h = FORWARD[arch](cfg, P, kind, ids, mask)
    if arch == 'bert':
        return F.cross_entropy(bert_head(P, h), labels)
    logits = h @ P['transformer.wte.weight'].T  # tied LM head
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


def lr_lambda(step):
    return step / max(1, WARMUP) if step < WARMUP else max(0.0, (STEPS - step) / max(1, STEPS - WARMUP))


def run_case(arch, kind, cfg, base_w, examples, cls_labels):
    torch.manual_seed(0)
    trainable = {}
    for name, shape in adapter_shapes(arch, cfg, kind):
        trainable[name] = torch.nn.Parameter(torch.randn(*shape) * STD)
    P = dict(base_w, **trainable)
    init = {k: v.detach().clone() for k, v in P.items()}
    decay = [n for n in trainable if not n.endswith('bias') and 'LayerNorm.weight' not in n]
    no_decay = [n for n in trainable if n not in decay]
    opt = torch.optim.AdamW([{'params': [trainable[n] for n in decay], 'weight_decay': WD},
                             {'params': [trainable[n] for n in no_decay], 'weight_decay': 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    losses = []
    for s in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(arch, cfg, P, kind, *batch(arch, examples, cls_labels, s))
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().max() > 0 for p in trainable.values())
        torch.nn.utils.clip_grad_norm_(list(trainable.values()), CLIP)
        opt.step()
        sched.step()
        losses.append(loss.item())
    name = f'{arch}_{kind}'
    tensors = {f'init/{k}': v for k, v in sorted(init.items())}
    tensors.update({f'final/{k}': v.detach() for k, v in sorted(trainable.items())})
    save_st(os.path.join(OUT, f'{name}.safetensors'), tensors)
    meta = {'model_config': cfg, 'adapter': kind,
            'examples': [{'inputIds': e, 'labels': (cls_labels[i] if arch == 'bert' else e)} for i, e in enumerate(examples)],
            'losses': losses, 'trainable': list(trainable), 'lr': LR, 'weight_decay': WD, 'warmup_steps': WARMUP,
            'max_grad_norm': CLIP, 'batch_size': BATCH, 'steps': STEPS}
    with open(os.path.join(OUT, f'{name}.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    print(f'{name}: {len(trainable)} trainable tensors, loss {losses[0]:.5f} {losses[1]:.5f} ... {losses[-2]:.5f} {losses[-1]:.5f}')


def main():
    os.makedirs(OUT, exist_ok=True)
    examples, cls_labels = make_examples()
    for arch in ('bert', 'gpt2'):
        cfg, base_w = load_arch(arch)
        validate(arch, cfg, base_w)
        for kind in ('lora', 'seq_bn'):
            run_case(arch, kind, cfg, base_w, examples, cls_labels)


if __name__ == '__main__':
    main()
