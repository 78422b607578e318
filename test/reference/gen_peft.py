#!/usr/bin/python3
"""PEFT-format adapters with their expected outputs, computed with PEFT's math in plain PyTorch.

For the tiny BERT and GPT-2 of SHARED/reference/models, writes test/fixtures/peft/<case>/ with
adapter_config.json (PEFT's keys) + adapter_model.safetensors (PEFT's names: base_model.model.<module>.lora_A.weight,
lora_B.weight, <module>.ia3_l) + expected.safetensors (input_ids, attention_mask, last_hidden_state).
PEFT's forward on a target module (peft/tuners/lora/layer.py, peft/tuners/ia3/layer.py):
  LoRA:  y = base(x) + (x · Aᵀ · Bᵀ) · s,  s = lora_alpha / r  (use_rslora: lora_alpha / √r)
  IA3:   y = base(x) · l   (l: (out, 1), l broadcast over the output features), or for a feed-forward module
         y = base(x · l)   (l: (1, in), scales the input)
GPT-2's c_attn / c_fc are Conv1D (fan_in_fan_out): LoRA's A/B are still stored (r, in) / (out, r).
Cases that the Adapters library cannot express (IA3 on a feed-forward module, LoRA on attention.output.dense)
are written too, for the loader's refusal tests.
Run: /usr/bin/python3 test/reference/gen_peft.py /work/shared
"""
import json
import os
import shutil

import torch

from adapter_ref import ROOT, save_st
from gen_train_steps import FORWARD, load_arch

OUT = os.path.join(ROOT, 'test', 'fixtures', 'peft')
LORA_KEYS = dict(alpha_pattern={}, auto_mapping=None, base_model_name_or_path=None, bias='none', fan_in_fan_out=False, inference_mode=True,
                 init_lora_weights=True, layer_replication=None, layers_pattern=None, layers_to_transform=None, loftq_config={},
                 lora_dropout=0.0, megatron_config=None, megatron_core='megatron.core', modules_to_save=None, peft_type='LORA',
                 rank_pattern={}, revision=None, task_type=None, use_dora=False, use_rslora=False)
IA3_KEYS = dict(auto_mapping=None, base_model_name_or_path=None, fan_in_fan_out=False, feedforward_modules=[], inference_mode=True,
                init_ia3_weights=True, modules_to_save=None, peft_type='IA3', revision=None, task_type=None)

# (case, arch, peft_type, config overrides, module paths (as in BertModel / GPT2LMHeadModel), key prefix)
CASES = [
    ('bert_lora', 'bert', 'LORA', dict(r=4, lora_alpha=8, target_modules=['query', 'value', 'intermediate.dense']), None),
    ('bert_lora_rslora', 'bert', 'LORA', dict(r=4, lora_alpha=8, use_rslora=True, target_modules=['query', 'key', 'value'], layers_to_transform=[1]), None),
    ('bert_ia3', 'bert', 'IA3', dict(target_modules=['key', 'value', 'intermediate.dense'], feedforward_modules=[]), None),
    ('gpt2_lora', 'gpt2', 'LORA', dict(r=4, lora_alpha=16, fan_in_fan_out=True, target_modules=['c_attn', 'c_fc']), None),
    ('gpt2_ia3', 'gpt2', 'IA3', dict(fan_in_fan_out=True, target_modules=['c_attn']), None),
    # refused by the Adapters-format loader (no equivalent there)
    ('bert_ia3_feedforward', 'bert', 'IA3', dict(target_modules=['key', 'value', 'output.dense'], feedforward_modules=['output.dense']), 'refuse'),
    ('bert_lora_attn_output', 'bert', 'LORA', dict(r=4, lora_alpha=8, target_modules=['attention.output.dense']), 'refuse'),
    ('bert_prompt', 'bert', 'PROMPT_TUNING', dict(num_virtual_tokens=5), None),
    ('gpt2_prompt', 'gpt2', 'PROMPT_TUNING', dict(num_virtual_tokens=4), None),
    ('bert_prefix', 'bert', 'PREFIX_TUNING', dict(num_virtual_tokens=5, prefix_projection=False), None),
    ('bert_prefix_proj', 'bert', 'PREFIX_TUNING', dict(num_virtual_tokens=4, prefix_projection=True, encoder_hidden_size=24), None),
    ('gpt2_prefix', 'gpt2', 'PREFIX_TUNING', dict(num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=16), None),
    # task_type SEQ_CLS: the classifier (BertForSequenceClassification) / score (GPT2ForSequenceClassification) trained too
    ('bert_lora_cls', 'bert', 'LORA', dict(r=4, lora_alpha=8, target_modules=['query', 'value'], task_type='SEQ_CLS', modules_to_save=['classifier', 'score']), None),
    ('gpt2_lora_cls', 'gpt2', 'LORA', dict(r=4, lora_alpha=8, fan_in_fan_out=True, target_modules=['c_attn'], task_type='SEQ_CLS', modules_to_save=['classifier', 'score']), None),
]
PROMPT_KEYS = dict(auto_mapping=None, base_model_name_or_path=None, inference_mode=True, num_attention_heads=None, num_layers=None,
                   num_transformer_submodules=1, peft_type='PROMPT_TUNING', prompt_tuning_init='RANDOM', prompt_tuning_init_text=None,
                   revision=None, task_type=None, token_dim=None, tokenizer_kwargs=None, tokenizer_name_or_path=None)
PREFIX_KEYS = dict(PROMPT_KEYS, peft_type='PREFIX_TUNING', encoder_hidden_size=None, prefix_projection=False)
for k in ('prompt_tuning_init', 'prompt_tuning_init_text', 'tokenizer_kwargs', 'tokenizer_name_or_path'):
    PREFIX_KEYS.pop(k)
STRIP = {'bert': 'bert.', 'gpt2': ''}  # BertModel keys have no 'bert.' prefix; GPT2LMHeadModel keeps 'transformer.'


def targets(arch, cfg, names, layers):
    """Module names (our P-dict names, with the flex prefix) that PEFT's suffix match selects."""
    out = []
    n_layers = cfg['num_hidden_layers'] if arch == 'bert' else cfg['n_layer']
    for i in range(n_layers):
        if layers is not None and i not in layers:
            continue
        if arch == 'bert':
            p = f'bert.encoder.layer.{i}'
            mods = [f'{p}.attention.self.query', f'{p}.attention.self.key', f'{p}.attention.self.value', f'{p}.attention.output.dense',
                    f'{p}.intermediate.dense', f'{p}.output.dense']
        else:
            p = f'transformer.h.{i}'
            mods = [f'{p}.attn.c_attn', f'{p}.attn.c_proj', f'{p}.mlp.c_fc', f'{p}.mlp.c_proj']
        out += [m for m in mods if any(m == t or m.endswith('.' + t) for t in names)]
    return out


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    g = torch.Generator().manual_seed(7)
    for case, arch, kind, over, note in CASES:
        cfg, base_w = load_arch(arch)
        H = cfg['hidden_size'] if arch == 'bert' else cfg['n_embd']
        if kind == 'PROMPT_TUNING':
            prompt_case(case, arch, cfg, base_w, H, dict(PROMPT_KEYS, **over), g)
            continue
        if kind == 'PREFIX_TUNING':
            prefix_case(case, arch, cfg, base_w, H, dict(PREFIX_KEYS, **over), g)
            continue
        conf = dict(LORA_KEYS if kind == 'LORA' else IA3_KEYS, **over)
        mods = targets(arch, cfg, conf['target_modules'], conf.get('layers_to_transform'))
        w = {n: v.clone() for n, v in base_w.items()}
        peft = {}
        for m in mods:
            wt = w[f'{m}.weight']
            fin, fout = (wt.shape[0], wt.shape[1]) if arch == 'gpt2' else (wt.shape[1], wt.shape[0])
            if kind == 'LORA':
                peft[m] = ('lora', torch.randn(conf['r'], fin, generator=g) * 0.1, torch.randn(fout, conf['r'], generator=g) * 0.1)
            elif any(m.endswith('.' + f) or m == f for f in conf['feedforward_modules']):
                peft[m] = ('ia3_ff', 1 + torch.randn(1, fin, generator=g) * 0.2)
            else:
                peft[m] = ('ia3', 1 + torch.randn(fout, 1, generator=g) * 0.2)
        s = conf.get('lora_alpha', 1) / (conf['r'] ** 0.5 if conf.get('use_rslora') else conf.get('r', 1))

        def hook(n, x, base):
            p = peft.get(n)
            if p is None:
                return base(x)
            if p[0] == 'lora':
                return base(x) + (x @ p[1].T @ p[2].T) * s
            if p[0] == 'ia3':
                return base(x) * p[1].flatten()
            return base(x * p[1].flatten())

        ids = torch.randint(3, 98, (2, 7), generator=g)
        mask = torch.ones(2, 7, dtype=torch.long)
        mask[1, 5:] = 0
        ids[1, 5:] = 0
        h = FORWARD[arch](cfg, w, None, ids, mask, hook=hook)
        d = os.path.join(OUT, case)
        os.makedirs(d)
        tensors = {}
        extra = {}
        if conf.get('task_type') == 'SEQ_CLS':
            # the trained classifier copies (modules_to_save), saved as base_model.model.<module>.*; 3 labels
            if arch == 'bert':  # BertForSequenceClassification: classifier(dropout(pooler(h)))
                W, b = torch.randn(3, H, generator=g) * 0.3, torch.randn(3, generator=g) * 0.1
                pooled = torch.tanh(h[:, 0] @ w['bert.pooler.dense.weight'].T + w['bert.pooler.dense.bias'])
                extra['logits'] = pooled @ W.T + b
                tensors['base_model.model.classifier.weight'], tensors['base_model.model.classifier.bias'] = W, b
            else:  # GPT2ForSequenceClassification: score (no bias) at each row's last non-pad token
                W = torch.randn(3, H, generator=g) * 0.3
                last = mask.sum(1) - 1
                extra['logits'] = h[torch.arange(2), last] @ W.T
                tensors['base_model.model.score.weight'] = W
        for m, p in peft.items():
            key = 'base_model.model.' + (m[len(STRIP[arch]):] if STRIP[arch] and m.startswith(STRIP[arch]) else m)
            if p[0] == 'lora':
                tensors[f'{key}.lora_A.weight'] = p[1]
                tensors[f'{key}.lora_B.weight'] = p[2]
            else:
                tensors[f'{key}.ia3_l'] = p[1]
        save_st(os.path.join(d, 'adapter_model.safetensors'), tensors)
        json.dump(dict(sorted(conf.items())), open(os.path.join(d, 'adapter_config.json'), 'w'), indent=2)
        save_st(os.path.join(d, 'expected.safetensors'), {'input_ids': ids.float(), 'attention_mask': mask.float(), 'last_hidden_state': h, **extra})
        print(f'{case}: {len(tensors)} tensors, |h| {h.abs().mean():.4f}' + (' (refusal case)' if note else ''))


def prompt_case(case, arch, cfg, w, H, conf, g):
    """PEFT prompt tuning: inputs_embeds = cat(prompt, word_embeddings(ids)); mask = cat(ones, mask); the model then
    adds positions 0..P+T-1 (and token type 0) to every row, so the output has P + T positions."""
    Pn = conf['num_virtual_tokens']
    conf['token_dim'] = H
    conf['num_layers'] = cfg.get('num_hidden_layers', cfg.get('n_layer'))
    conf['num_attention_heads'] = cfg.get('num_attention_heads', cfg.get('n_head'))
    prompt = torch.randn(Pn, H, generator=g) * 0.5
    ids = torch.randint(3, 98, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    ids[1, 4:] = 0
    word = w['bert.embeddings.word_embeddings.weight' if arch == 'bert' else 'transformer.wte.weight']
    embeds = torch.cat([prompt.expand(2, -1, -1), word[ids]], 1)
    full_mask = torch.cat([torch.ones(2, Pn, dtype=torch.long), mask], 1)
    h = FORWARD[arch](cfg, w, None, torch.zeros(2, Pn + 6, dtype=torch.long), full_mask, embeds=embeds)
    d = os.path.join(OUT, case)
    os.makedirs(d)
    save_st(os.path.join(d, 'adapter_model.safetensors'), {'prompt_embeddings': prompt})
    json.dump(dict(sorted(conf.items())), open(os.path.join(d, 'adapter_config.json'), 'w'), indent=2)
    save_st(os.path.join(d, 'expected.safetensors'), {'input_ids': ids.float(), 'attention_mask': mask.float(), 'last_hidden_state': h})
    print(f'{case}: prompt ({Pn}, {H}), output {list(h.shape)}')


def prefix_case(case, arch, cfg, w, H, conf, g):
    """PEFT prefix tuning: prefix_encoder(arange(P)) (embedding, or embedding → Linear → tanh → Linear with
    prefix_projection) → (P, L·2·H) → view (P, L·2, NH, HD) → layer l's keys / values = rows 2l / 2l+1, passed as
    past_key_values: always visible, and the real tokens' positions start at P."""
    Pn = conf['num_virtual_tokens']
    L = cfg.get('num_hidden_layers', cfg.get('n_layer'))
    NH = cfg.get('num_attention_heads', cfg.get('n_head'))
    conf.update(token_dim=H, num_layers=L, num_attention_heads=NH)
    t = {}
    if conf['prefix_projection']:
        E = conf['encoder_hidden_size']
        t['prefix_encoder.embedding.weight'] = torch.randn(Pn, H, generator=g) * 0.5
        t['prefix_encoder.transform.0.weight'] = torch.randn(E, H, generator=g) * 0.3
        t['prefix_encoder.transform.0.bias'] = torch.randn(E, generator=g) * 0.1
        t['prefix_encoder.transform.2.weight'] = torch.randn(L * 2 * H, E, generator=g) * 0.3
        t['prefix_encoder.transform.2.bias'] = torch.randn(L * 2 * H, generator=g) * 0.1
        h0 = torch.tanh(t['prefix_encoder.embedding.weight'] @ t['prefix_encoder.transform.0.weight'].T + t['prefix_encoder.transform.0.bias'])
        kv = h0 @ t['prefix_encoder.transform.2.weight'].T + t['prefix_encoder.transform.2.bias']
    else:
        t['prefix_encoder.embedding.weight'] = torch.randn(Pn, L * 2 * H, generator=g) * 0.5
        kv = t['prefix_encoder.embedding.weight']
    kv = kv.view(Pn, L * 2, NH, H // NH).permute(1, 2, 0, 3)  # (L·2, NH, P, HD)
    past = [(kv[2 * l], kv[2 * l + 1]) for l in range(L)]
    ids = torch.randint(3, 98, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    ids[1, 4:] = 0
    h = FORWARD[arch](cfg, w, None, ids, mask, past=past)
    d = os.path.join(OUT, case)
    os.makedirs(d)
    # what PEFT writes (save_and_load.get_peft_model_state_dict): one tensor, `prompt_embeddings` = the prefix encoder's
    # output [P, L·2·H] (after the projection MLP when prefix_projection), with inference_mode true and the task type
    # PEFT builds its prompt-injecting model class from
    kv_flat = (h0 @ t['prefix_encoder.transform.2.weight'].T + t['prefix_encoder.transform.2.bias']) if conf['prefix_projection'] else t['prefix_encoder.embedding.weight']
    save_st(os.path.join(d, 'adapter_model.safetensors'), {'prompt_embeddings': kv_flat.contiguous()})
    conf.update(inference_mode=True, task_type='FEATURE_EXTRACTION' if arch == 'bert' else 'CAUSAL_LM')
    json.dump(dict(sorted(conf.items())), open(os.path.join(d, 'adapter_config.json'), 'w'), indent=2)
    save_st(os.path.join(d, 'expected.safetensors'), {'input_ids': ids.float(), 'attention_mask': mask.float(), 'last_hidden_state': h})
    print(f'{case}: prefix ({Pn} tokens, projection {conf["prefix_projection"]}), output {list(h.shape)}')


if __name__ == '__main__':
    main()
