/**
 * PEFT's on-disk format (adapter_config.json with `peft_type` + adapter_model.safetensors, names
 * `base_model.model.<module path>.lora_A.weight` / `.lora_B.weight` / `.ia3_l`) for the methods whose math
 * the Adapters library shares:
 *   LoRA:  y = W x + (x Aᵀ Bᵀ)·s, s = lora_alpha / r (rsLoRA: lora_alpha / √r) — the Adapters library's LoRA with
 *          alpha = s·r. GPT-2's fused c_attn: PEFT has one A for all of q, k, v (A tiled per block here); saving
 *          an Adapters c_attn LoRA writes A stacked (n·r, in) and B block-diagonal, rank n·r, which is the same map
 *          (other modules of that adapter are zero-padded to rank n·r).
 *   (IA)³: y = (W x)·l for non-feed-forward modules — the Adapters library's (IA)³ on that projection.
 *   prompt tuning: prompt_embeddings (P, H) → PeftPromptTuningConfig (PEFT's own injection before the position
 *          embeddings; not the Adapters library's prompt tuning, so it converts to PEFT's format only).
 *   prefix tuning: prefix_encoder (embedding, or embedding → Linear → tanh → Linear) → PeftPrefixTuningConfig: the
 *          Adapters library's prefix pool plus PEFT's position shift (prefixes are past_key_values there).
 *   modules_to_save of sequence classification: BERT's `classifier`, the `score` of GPT-2 / the LLaMA family ↔ a
 *          flex classification head named like the adapter.
 * No equivalent (refused with the module named): IA3 on a feed-forward module (PEFT scales that module's
 * input), LoRA/IA3 on modules the Adapters library never adapts (attention output, LM head), DoRA, per-module
 * rank/alpha patterns, other `modules_to_save`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { noGrad } from '../autograd/tape.ts';
import { FormatError, IOError, ValueError } from '../errors.ts';
import { loadSafetensors, saveSafetensors } from './safetensors.ts';
import { loadTorchBin } from './torch_bin.ts';
import { LoRAConfig, PeftPrefixTuningConfig, PeftPromptTuningConfig, PrefixTuningConfig, type ConfigDict } from '../adapters/config.ts';
import type { Linear } from '../nn/layers.ts';
import type { HeadConfig } from '../heads/heads.ts';
import type { AdapterModel } from '../models/auto.ts';
import { writeFolderAtomic } from '../adapters/model.ts';

type Role = 'q' | 'k' | 'v' | 'qkv' | 'intermediate' | 'output';
interface Target { layer: number; role: Role; linear: Linear; cross: boolean }

/** adapter_config.json's dict when `dir` holds a PEFT adapter, else null. */
export function readPeftConfig(dir: string): Record<string, unknown> | null {
  const f = path.join(dir, 'adapter_config.json');
  if (!fs.existsSync(f)) return null;
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(fs.readFileSync(f, 'utf8'));
  } catch (e) {
    throw new FormatError(`${f}: ${(e as Error).message}`);
  }
  return c && typeof c === 'object' && typeof c.peft_type === 'string' ? c : null;
}

/** Every projection the Adapters library can put a LoRA / (IA)³ on, with its role and module path. */
function targets(model: AdapterModel): Map<string, Target> {
  const byLinear = new Map<Linear, Target>();
  for (const l of model.adapters.layerSites()) {
    const add = (lin: Linear | undefined, role: Role, cross = false) => { if (lin) byLinear.set(lin, { layer: l.index, role, linear: lin, cross }); };
    add(l.q, 'q'); add(l.k, 'k'); add(l.v, 'v'); add(l.qkv, 'qkv');
    if (l.cross) { add(l.cross.q, 'q', true); add(l.cross.k, 'k', true); add(l.cross.v, 'v', true); }
    add(l.intermediate, 'intermediate'); add(l.output, 'output');
  }
  const out = new Map<string, Target>();
  for (const [p, m] of model.namedModules()) { const t = byLinear.get(m as Linear); if (t) out.set(p, t); }
  return out;
}

/** Module path in our model for a PEFT key's module (with or without the flex-head prefix). */
function resolve(model: AdapterModel, modules: Set<string>, peftModule: string): string | null {
  const m = peftModule.replace(/^base_model\.model\./, '');
  const pre = `${model.spec.prefix}.`;
  if (modules.has(m)) return m;
  if (modules.has(pre + m)) return pre + m;
  return null;
}

function readWeights(dir: string): { weights: Map<string, Tensor>; file: string } {
  const st = path.join(dir, 'adapter_model.safetensors'), bin = path.join(dir, 'adapter_model.bin');
  if (fs.existsSync(st)) return { weights: loadSafetensors(st), file: st };
  if (fs.existsSync(bin)) return { weights: loadTorchBin(bin), file: bin };
  throw new IOError(`${dir}: no adapter_model.safetensors or adapter_model.bin`);
}

/** Loads a PEFT LoRA / IA3 folder as Adapters-library adapter `name`; returns the name. */
export function loadPeftAdapter(model: AdapterModel, dir: string, opts: { loadAs?: string; setActive?: boolean; withHead?: boolean } = {}): string {
  const c = readPeftConfig(dir);
  if (!c) throw new FormatError(`${dir}: adapter_config.json is not a PEFT config (no peft_type)`);
  const type = String(c.peft_type);
  const name = opts.loadAs ?? 'default';
  if (type === 'PROMPT_TUNING') return loadPeftPrompt(model, dir, c, name, opts);
  if (type === 'PREFIX_TUNING') return loadPeftPrefix(model, dir, c, name, opts);
  if (type !== 'LORA' && type !== 'IA3')
    throw new ValueError(`PEFT ${type} adapters have no equivalent here yet (supported: LORA, IA3, PROMPT_TUNING); ${dir}`);
  if (c.use_dora) throw new ValueError(`PEFT DoRA (use_dora) has no Adapters-library equivalent; ${dir}`);
  for (const k of ['rank_pattern', 'alpha_pattern'])
    if (c[k] && Object.keys(c[k] as object).length) throw new ValueError(`PEFT ${k} (per-module ranks/alphas) has no Adapters-library equivalent; ${dir}`);
  if (c.bias && c.bias !== 'none') throw new ValueError(`PEFT bias='${String(c.bias)}' (trained biases) has no Adapters-library equivalent; ${dir}`);
  const { weights, file } = readWeights(dir);
  // modules_to_save: the sequence-classification head's trained copy, as a flex head named like the adapter
  let head: ReturnType<typeof takeClassifier> = null;
  try {
    head = takeClassifier(model, c, weights, file);
    if (opts.withHead === false && head) {  // the classifier is left out, as loadAdapter(…, {withHead: false}) asks
      for (const t of head.weights.values()) t.dispose();
      head = null;
    }
    const tg = targets(model);
    const modules = new Set(tg.keys());
    // PEFT's feedforward_modules: a list of name suffixes, or one regex the whole module name must match
    const ffSpec = c.feedforward_modules as string[] | string | null | undefined;
    const isFF = (mod: string) => (typeof ffSpec === 'string' ? new RegExp(`^(?:${ffSpec})$`).test(mod.replace(/^[^.]+\./, '')) || new RegExp(`^(?:${ffSpec})$`).test(mod)
      : (ffSpec ?? []).some((f) => mod === f || mod.endsWith(`.${f}`)));
    // group tensors by module
    const per = new Map<string, Record<string, Tensor>>();
    for (const [k, t] of weights) {
      const m = /^(.*)\.(lora_A\.weight|lora_B\.weight|ia3_l|lora_A\.default\.weight|lora_B\.default\.weight)$/.exec(k);
      if (!m) throw new FormatError(`${file}: unexpected PEFT tensor '${k}'`);
      const mod = resolve(model, modules, m[1]!);
      if (!mod) {
        const allModules = new Set([...model.namedModules()].map(([p]) => p));
        const known = resolve(model, allModules, m[1]!);
        throw new ValueError(`${file}: PEFT ${type} on '${m[1]!.replace(/^base_model\.model\./, '')}' has no Adapters-library equivalent` +
          (known ? ' (the Adapters library adapts only q/k/v, the intermediate and the output projections)' : ' (no such module in this model)'));
      }
      if (type === 'IA3' && isFF(mod))
        throw new ValueError(`${file}: PEFT IA3 on the feed-forward module '${mod}' scales its input; the Adapters library's (IA)³ scales outputs only`);
      (per.get(mod) ?? per.set(mod, {}).get(mod)!)[m[2]!.split('.')[0]!] = t;
    }
    if (!per.size) throw new FormatError(`${file}: no LoRA/IA3 tensors`);
    // the Adapters config that puts modules on exactly these projections
    const used = [...per.keys()].map((p) => tg.get(p)!);
    const layers = [...new Set(used.map((u) => u.layer))].sort((a, b) => a - b);
    const allLayers = [...new Set([...tg.values()].map((u) => u.layer))];
    const mats = new Set<string>();
    let inter = false, outp = false;
    for (const u of used) {
      if (u.role === 'qkv') ['q', 'k', 'v'].forEach((x) => mats.add(x));
      else if (u.role === 'intermediate') inter = true;
      else if (u.role === 'output') outp = true;
      else mats.add(u.role);
    }
    let r = 1, alpha = 1;
    if (type === 'LORA') {
      r = Number(c.r);
      const la = Number(c.lora_alpha ?? 8);
      alpha = c.use_rslora ? (la / Math.sqrt(r)) * r : la;  // scaling alpha / r = PEFT's s
    }
    const order = ['q', 'k', 'v'].filter((x) => mats.has(x));
    const dict: ConfigDict = type === 'LORA'
      ? { architecture: 'lora', r, alpha, attn_matrices: order, selfattn_lora: order.length > 0, intermediate_lora: inter, output_lora: outp,
        dropout: Number(c.lora_dropout ?? 0), composition_mode: 'add', init_weights: 'lora', leave_out: allLayers.filter((i) => !layers.includes(i)), use_gating: false, dtype: null }
      : { architecture: 'lora', r: 1, alpha: 1, attn_matrices: order, selfattn_lora: order.length > 0, intermediate_lora: inter, output_lora: outp,
        dropout: 0, composition_mode: 'scale', init_weights: 'ia3', leave_out: allLayers.filter((i) => !layers.includes(i)), use_gating: false, dtype: null };
    const cfg = LoRAConfig.fromDict(dict);
    model.addAdapter(name, cfg);
    try {
      // the projections that config adapts must be exactly the PEFT ones
      const mine = new Set(model.namedParameters().filter(([k]) => k.includes(`.loras.${name}.`)).map(([k]) => k.slice(0, k.indexOf(`.loras.${name}.`))));
      const extra = [...mine].filter((p) => !per.has(p)), missing = [...per.keys()].filter((p) => !mine.has(p));
      if (extra.length || missing.length)
        throw new ValueError(`${file}: the PEFT target modules cannot be expressed as one Adapters-library config (it would also adapt ${extra.slice(0, 4).join(', ') || '-'}; ` +
          `it cannot adapt ${missing.slice(0, 4).join(', ') || '-'})`);
      const own = new Map(model.namedParameters());
      noGrad(() => {
        for (const [mod, ts] of per) {
          const A = own.get(`${mod}.loras.${name}.lora_A`), B = own.get(`${mod}.loras.${name}.lora_B`)!;
          const t = tg.get(mod)!;
          if (type === 'LORA') {
            if (!ts.lora_A || !ts.lora_B) throw new FormatError(`${file}: '${mod}' lacks lora_A or lora_B`);
            // fused c_attn: one PEFT A for all three blocks → the same A in each block
            const a = t.role === 'qkv' ? ops.concat([ts.lora_A, ts.lora_A, ts.lora_A], 0) : ts.lora_A;
            try {
              for (const [dst, src, what] of [[A!, a, 'lora_A'], [B, ts.lora_B, 'lora_B']] as const) {
                if (dst.shape.join() !== src.shape.join()) throw new FormatError(`${file}: '${mod}.${what}' has shape [${src.shape}], expected [${dst.shape}]`);
                dst.copy_(src);
              }
            } finally {
              if (a !== ts.lora_A) a.dispose();
            }
          } else {
            const l = ts.ia3_l;
            if (!l) throw new FormatError(`${file}: '${mod}' lacks ia3_l`);
            if (l.numel !== B.numel) throw new FormatError(`${file}: '${mod}.ia3_l' has shape [${l.shape}], expected [${B.shape}]`);
            B.copy_(ops.reshape(l, B.shape));
          }
        }
      });
      const h = head;
      if (h) {
        model.addPredictionHead(name, h.config, { overwriteOk: true, setActive: false });
        noGrad(() => {
          const own = new Map(model.namedParameters().filter(([k]) => k.startsWith(`heads.${name}.`)));
          for (const [k, t] of h.weights) own.get(`heads.${name}.${k}`)!.copy_(t);
        });
      }
    } catch (e) {
      model.deleteAdapter(name);
      throw e;
    }
  } finally {
    for (const t of weights.values()) t.dispose();
    for (const t of head?.weights.values() ?? []) t.dispose();
  }
  if (opts.setActive) model.setActiveAdapters(name);
  return name;
}

/**
 * PEFT's modules_to_save for sequence classification, where a flex head computes the same function:
 * BertForSequenceClassification's `classifier` (Linear on the pooler output) = a classification head with
 * use_pooler and one layer; GPT2/Llama/Mistral/Qwen2ForSequenceClassification's `score` (Linear without bias on
 * the last real token) = a one-layer head without bias. Takes those tensors out of `weights`; null when none.
 */
function takeClassifier(model: AdapterModel, c: Record<string, unknown>, weights: Map<string, Tensor>, file: string):
  { config: HeadConfig; weights: Map<string, Tensor> } | null {
  const mods = Array.isArray(c.modules_to_save) ? (c.modules_to_save as string[]) : [];
  const keys = [...weights.keys()].filter((k) => /^base_model\.model\.(classifier|score)\./.test(k));
  if (!mods.length && !keys.length) return null;
  const other = mods.filter((m) => m !== 'classifier' && m !== 'score');
  if (other.length) throw new ValueError(`${file}: PEFT modules_to_save ${JSON.stringify(other)} (fully trained copies of modules) have no Adapters-library equivalent`);
  if (!keys.length) return null;
  const mt = model.modelType;
  const decoder = ['gpt2', 'llama', 'mistral', 'qwen2'].includes(mt);
  const want = mt === 'bert' ? ['base_model.model.classifier.weight', 'base_model.model.classifier.bias'] : decoder ? ['base_model.model.score.weight'] : null;
  if (!want || keys.sort().join() !== [...want].sort().join())
    throw new ValueError(`${file}: PEFT's ${keys.map((k) => k.replace('base_model.model.', '')).join(', ')} has no flex-head equivalent on ${mt} here (supported: BERT's classifier, the score of GPT-2 and the LLaMA family)`);
  const W = weights.get(want[0]!)!;
  const out = new Map<string, Tensor>([['1.weight', W]]);
  if (want[1]) out.set('1.bias', weights.get(want[1])!);
  for (const k of want) weights.delete(k);
  const config: HeadConfig = { head_type: 'classification', num_labels: W.shape[0]!, layers: 1, activation_function: 'tanh', use_pooler: mt === 'bert',
    bias: mt === 'bert', dropout_prob: null, label2id: Object.fromEntries(Array.from({ length: W.shape[0]! }, (_, i) => [`LABEL_${i}`, i])) };
  return { config, weights: out };
}

/** The head named `name` as PEFT modules_to_save tensors, when a PEFT sequence-classification model has that head. */
function classifierOut(model: AdapterModel, name: string): { module: string; tensors: [string, Tensor][] } | null {
  if (!model.heads.includes(name)) return null;
  const h = model.headManager.get(name);
  const c = h.config, mt = model.modelType;
  const p = (k: string) => h.param(k) ?? h.child('1')?.param(k.split('.')[1]!) ?? null;
  if (mt === 'bert' && c.head_type === 'classification' && c.layers === 1 && c.use_pooler && (c.bias ?? true))
    return { module: 'classifier', tensors: [['base_model.model.classifier.weight', p('1.weight')!], ['base_model.model.classifier.bias', p('1.bias')!]] };
  if (['gpt2', 'llama', 'mistral', 'qwen2'].includes(mt) && c.head_type === 'classification' && c.layers === 1 && !c.use_pooler && c.bias === false)
    return { module: 'score', tensors: [['base_model.model.score.weight', p('1.weight')!]] };
  throw new ValueError(`saveAdapter(format 'peft'): head '${name}' has no PEFT modules_to_save equivalent (BERT: one layer on the pooler; decoders: one layer without bias); pass {withHead: false}`);
}

/** PEFT PROMPT_TUNING → a PeftPromptTuningConfig adapter (lib/adapters/methods/peft_prompt.ts). */
function loadPeftPrompt(model: AdapterModel, dir: string, c: Record<string, unknown>, name: string, opts: { setActive?: boolean }): string {
  const P = Number(c.num_virtual_tokens), subs = Number(c.num_transformer_submodules ?? 1);
  if (subs !== 1) throw new ValueError(`PEFT prompt tuning with num_transformer_submodules=${subs} (encoder–decoder) is not supported; ${dir}`);
  const { weights, file } = readWeights(dir);
  try {
    const w = weights.get('prompt_embeddings');
    const H = model.base.hiddenSize!();
    if (!w || w.ndim !== 2 || w.shape[0] !== P || w.shape[1] !== H)
      throw new FormatError(`${file}: prompt_embeddings must be [${P}, ${H}], got ${w ? `[${w.shape}]` : 'none'}`);
    model.addAdapter(name, new PeftPromptTuningConfig({ num_virtual_tokens: P }));
    noGrad(() => model.adapters.peftPrompts().get(name)!.copy_(w));
  } finally {
    for (const t of weights.values()) t.dispose();
  }
  if (opts.setActive) model.setActiveAdapters(name);
  return name;
}

/** PEFT prefix_encoder names ↔ the Adapters library's pool names (under `.prefix_tunings.<name>.self_prefix.`). */
const PREFIX_NAMES: [string, string][] = [['prefix_encoder.embedding.weight', 'wte.weight'], ['prefix_encoder.transform.0.weight', 'control_trans.0.weight'],
  ['prefix_encoder.transform.0.bias', 'control_trans.0.bias'], ['prefix_encoder.transform.2.weight', 'control_trans.2.weight'],
  ['prefix_encoder.transform.2.bias', 'control_trans.2.bias']];

function poolParams(model: AdapterModel, name: string): Map<string, Tensor> {
  const tag = `.prefix_tunings.${name}.self_prefix.`;
  return new Map(model.namedParameters().filter(([k]) => k.includes(tag)).map(([k, p]) => [k.slice(k.indexOf(tag) + tag.length), p]));
}

/** PEFT PREFIX_TUNING → a PeftPrefixTuningConfig adapter (the Adapters pool + PEFT's position shift). */
function loadPeftPrefix(model: AdapterModel, dir: string, c: Record<string, unknown>, name: string, opts: { setActive?: boolean }): string {
  const P = Number(c.num_virtual_tokens), subs = Number(c.num_transformer_submodules ?? 1);
  if (subs !== 1) throw new ValueError(`PEFT prefix tuning with num_transformer_submodules=${subs} (encoder–decoder) is not supported; ${dir}`);
  const H = model.base.hiddenSize!(), L = model.adapters.layerSites().length;
  if (Number(c.token_dim ?? H) !== H || Number(c.num_layers ?? L) !== L)
    throw new FormatError(`${dir}: PEFT prefix for token_dim ${String(c.token_dim)} × ${String(c.num_layers)} layers, the model has ${H} × ${L}`);
  const { weights, file } = readWeights(dir);
  // PEFT saves one tensor, `prompt_embeddings` [P, L·2·H]: the prefixes themselves, after the projection MLP when
  // prefix_projection (get_prompt_embedding_to_save); its inference-mode PrefixEncoder loads them as a flat embedding.
  // Folders in the older layout of this library (prefix_encoder.embedding / transform) load too.
  const pe = weights.get('prompt_embeddings');
  const proj = !pe && !!c.prefix_projection;
  try {
    const cfg = new PeftPrefixTuningConfig({ prefix_length: P, flat: !proj, bottleneck_size: proj ? Number(c.encoder_hidden_size) : 512, non_linearity: 'tanh', dropout: 0 });
    model.addAdapter(name, cfg);
    try {
      const own = poolParams(model, name);
      noGrad(() => {
        if (pe) {
          const dst = own.get('control_trans')!;
          if (pe.numel !== dst.numel) throw new FormatError(`${file}: prompt_embeddings must be [${P}, ${L * 2 * H}], got [${pe.shape}]`);
          dst.copy_(ops.reshape(pe, dst.shape));
          return;
        }
        if (!proj) {
          const e = weights.get('prefix_encoder.embedding.weight');
          const dst = own.get('control_trans')!;
          if (!e || e.numel !== dst.numel) throw new FormatError(`${file}: prefix_encoder.embedding.weight must be [${P}, ${L * 2 * H}], got ${e ? `[${e.shape}]` : 'none'}`);
          dst.copy_(ops.reshape(e, dst.shape));
          return;
        }
        for (const [theirs, ours] of PREFIX_NAMES) {
          const src = weights.get(theirs), dst = own.get(ours)!;
          if (!src || src.shape.join() !== dst.shape.join()) throw new FormatError(`${file}: '${theirs}' must be [${dst.shape}], got ${src ? `[${src.shape}]` : 'none'}`);
          dst.copy_(src);
        }
      });
    } catch (e) {
      model.deleteAdapter(name);
      throw e;
    }
  } finally {
    for (const t of weights.values()) t.dispose();
  }
  if (opts.setActive) model.setActiveAdapters(name);
  return name;
}

function savePeftPrefix(model: AdapterModel, dir: string, name: string, cfg: PeftPrefixTuningConfig): void {
  const own = poolParams(model, name);
  const P = cfg.get('prefix_length') as number, H = model.base.hiddenSize!(), L = model.adapters.layerSites().length;
  const flat = cfg.get('flat') as boolean;
  // PEFT's file: `prompt_embeddings` [P, L·2·H], the prefixes after the projection (what its get_prompt_embedding_to_save
  // returns, and what its inference-mode PrefixEncoder loads)
  const pool = (model.adapters.model.base as { prefixPool?(): import('../adapters/methods/prefix_tuning.ts').PrefixTuningPool }).prefixPool!().get(name)!;
  const e = noGrad(() => ops.reshape(pool.states(false), [P, L * 2 * H]).contiguous());
  const out = new Map<string, Tensor>([['prompt_embeddings', e]]);
  const owned: Tensor[] = [e];
  void own;
  const mc = model.config;
  const conf = { auto_mapping: null, base_model_name_or_path: String(mc._name_or_path ?? '') || null, encoder_hidden_size: flat ? null : cfg.get('bottleneck_size'),
    inference_mode: true, num_attention_heads: mc.num_attention_heads ?? mc.n_head ?? null, num_layers: L, num_transformer_submodules: 1,
    num_virtual_tokens: P, peft_type: 'PREFIX_TUNING', prefix_projection: !flat, revision: null, task_type: peftTaskType(model), token_dim: H };
  try {
    writeFolderAtomic(dir, (tmp) => {
      saveSafetensors(path.join(tmp, 'adapter_model.safetensors'), out, { format: 'pt' });
      writeConfig(tmp, conf);
    });
  } finally {
    for (const t of owned) t.dispose();
  }
}

/**
 * The task_type a PEFT prompt / prefix folder needs: PEFT builds its prompt-injecting model class from it (a folder without
 * one loads as the plain PeftModel, whose forward ignores the prompts). Decoders: CAUSAL_LM; encoders: FEATURE_EXTRACTION.
 */
function peftTaskType(model: AdapterModel): string {
  return ['gpt2', 'llama', 'mistral', 'qwen2'].includes(model.modelType) ? 'CAUSAL_LM' : 'FEATURE_EXTRACTION';
}

function savePeftPrompt(model: AdapterModel, dir: string, name: string): void {
  const w = model.adapters.peftPrompts().get(name)!;
  const cfg = model.config;
  const conf = { auto_mapping: null, base_model_name_or_path: String(cfg._name_or_path ?? '') || null, inference_mode: true,
    num_attention_heads: cfg.num_attention_heads ?? cfg.n_head ?? null, num_layers: cfg.num_hidden_layers ?? cfg.n_layer ?? null,
    num_transformer_submodules: 1, num_virtual_tokens: w.shape[0], peft_type: 'PROMPT_TUNING', prompt_tuning_init: 'RANDOM',
    prompt_tuning_init_text: null, revision: null, task_type: peftTaskType(model), token_dim: w.shape[1], tokenizer_kwargs: null, tokenizer_name_or_path: null };
  writeFolderAtomic(dir, (tmp) => {
    saveSafetensors(path.join(tmp, 'adapter_model.safetensors'), new Map([['prompt_embeddings', w]]), { format: 'pt' });
    writeConfig(tmp, conf);
  });
}

/** adapter_config.json with sorted keys (written inside the folder that writeFolderAtomic renames into place). */
function writeConfig(dir: string, conf: Record<string, unknown>): void {
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(Object.fromEntries(Object.entries(conf).sort(([a], [b]) => (a < b ? -1 : 1))), null, 2));
}

/**
 * Writes Adapters-library LoRA / (IA)³ adapter `name` in PEFT's format (module paths as in the flex-head model,
 * i.e. *ForCausalLM / *ForSequenceClassification; stripPrefix: as in the bare base model, e.g. BertModel).
 */
export function savePeftAdapter(model: AdapterModel, dir: string, name: string, opts: { stripPrefix?: boolean; withHead?: boolean } = {}): void {
  if (!model.hasAdapter(name)) throw new ValueError(`No adapter with name '${name}' was found.`);
  const cfg = model.adapters.ctx.configs.get(name)!;
  if (cfg instanceof PeftPromptTuningConfig) return savePeftPrompt(model, dir, name);
  if (cfg instanceof PeftPrefixTuningConfig) return savePeftPrefix(model, dir, name, cfg);
  if (cfg instanceof PrefixTuningConfig)
    throw new ValueError(`saveAdapter(format 'peft'): '${name}' is the Adapters library's prefix tuning; PEFT's prefix tuning shifts the real tokens' positions, so the math differs`);
  if (!(cfg instanceof LoRAConfig)) throw new ValueError(`saveAdapter(format 'peft'): '${name}' is ${cfg.architecture ?? cfg.className}; only LoRA, (IA)³ and PEFT prompt tuning have a PEFT equivalent`);
  if (cfg.get('use_gating')) throw new ValueError(`saveAdapter(format 'peft'): gated LoRA/(IA)³ ('${name}') has no PEFT equivalent`);
  const scale = cfg.get('composition_mode') === 'scale';
  const tg = targets(model);
  const pre = `${model.spec.prefix}.`;
  const out = new Map<string, Tensor>();
  const owned: Tensor[] = [];
  const modules: string[] = [];
  let r = cfg.r, alpha = cfg.alpha;
  const params = new Map(model.namedParameters());
  for (const [mod, t] of tg) {
    const A = params.get(`${mod}.loras.${name}.lora_A`), B = params.get(`${mod}.loras.${name}.lora_B`);
    if (!B) continue;
    const rel = opts.stripPrefix && mod.startsWith(pre) ? mod.slice(pre.length) : mod;
    modules.push(rel);
    const key = `base_model.model.${rel}`;
    if (scale) {
      const a = cfg.alpha;
      const l = noGrad(() => ops.mul(B, a));  // PEFT's l = the Adapters library's B·alpha
      owned.push(l);
      let full = l;
      if (t.role === 'qkv') {
        // c_attn with only some of q/k/v: PEFT scales all three thirds — ones where the Adapters library has none
        const parts = (model.adapters as unknown as { fusedParts(n: string): number[] }).fusedParts(name);
        const H = t.linear.outFeatures / 3;
        const pieces: Tensor[] = [];
        let blk = 0;
        for (let third = 0; third < 3; third++)
          pieces.push(parts.includes(third) ? ops.slice(l, 0, blk++ * H, blk * H) : ops.ones([H, 1]));
        full = noGrad(() => ops.concat(pieces, 0));
        for (const x of pieces) x.dispose();
        owned.push(full);
      }
      out.set(`${key}.ia3_l`, full);
      continue;
    }
    if (t.role === 'qkv') {
      // block-diagonal: A (n·r, in) stacked, B (3H, n·r) with block j in the rows of its third → rank n·r, same map
      const parts = (model.adapters as unknown as { fusedParts(n: string): number[] }).fusedParts(name);
      const n = parts.length, H = t.linear.outFeatures / 3;
      const Bf = noGrad(() => {
        const rows: Tensor[] = [];
        let blk = 0;
        for (let third = 0; third < 3; third++) {
          const cols: Tensor[] = [];
          const j = parts.indexOf(third);
          for (let b = 0; b < n; b++) cols.push(b === j ? ops.slice(B, 0, blk * H, (blk + 1) * H) : ops.zeros([H, cfg.r]));
          if (j >= 0) blk++;
          rows.push(ops.concat(cols, 1));
        }
        return ops.concat(rows, 0);
      });
      owned.push(Bf);
      out.set(`${key}.lora_A.weight`, A!);
      out.set(`${key}.lora_B.weight`, Bf);
      r = cfg.r * n;
      alpha = cfg.alpha * n;  // s = alpha / r unchanged
    } else {
      out.set(`${key}.lora_A.weight`, A!);
      out.set(`${key}.lora_B.weight`, B);
    }
  }
  // PEFT has one rank per config: with GPT-2's block-diagonal c_attn (rank n·r), the other modules are zero-padded
  // to that rank (their map is unchanged)
  if (!scale && r !== cfg.r)
    for (const [k, t] of out) {
      if (!k.endsWith('lora_A.weight') && !k.endsWith('lora_B.weight')) continue;
      if (k.endsWith('lora_A.weight') ? t.shape[0] === r : t.shape[1] === r) continue;  // c_attn's blocks already have rank r
      const padded = noGrad(() => (k.endsWith('lora_A.weight') ? ops.concat([t, ops.zeros([r - cfg.r, t.shape[1]!])], 0) : ops.concat([t, ops.zeros([t.shape[0]!, r - cfg.r])], 1)));
      owned.push(padded);
      out.set(k, padded);
    }
  if (!modules.length) throw new ValueError(`saveAdapter(format 'peft'): adapter '${name}' has no modules`);
  const cls = opts.withHead === false ? null : classifierOut(model, name);
  for (const [k, t] of cls?.tensors ?? []) out.set(k, t);
  // exact module paths as a full-match regex (PEFT's str target_modules), so 'output.dense' never also
  // selects attention.output.dense
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const target = `(?:${esc(pre)})?(?:${[...new Set(modules.map((m) => (m.startsWith(pre) ? m.slice(pre.length) : m)))].map(esc).join('|')})`;
  const common = { auto_mapping: null, base_model_name_or_path: String(model.config._name_or_path ?? '') || null, inference_mode: true,
    modules_to_save: cls ? [cls.module] : null, revision: null, target_modules: target, task_type: cls ? 'SEQ_CLS' : null };
  const conf = scale
    ? { ...common, fan_in_fan_out: model.modelType === 'gpt2', feedforward_modules: [], init_ia3_weights: true, peft_type: 'IA3' }
    : { ...common, alpha_pattern: {}, bias: 'none', fan_in_fan_out: model.modelType === 'gpt2', init_lora_weights: true, layer_replication: null,
      layers_pattern: null, layers_to_transform: null, loftq_config: {}, lora_alpha: alpha, lora_dropout: cfg.get('dropout'), megatron_config: null,
      megatron_core: 'megatron.core', peft_type: 'LORA', r, rank_pattern: {}, use_dora: false, use_rslora: false };
  try {
    writeFolderAtomic(dir, (tmp) => {
      saveSafetensors(path.join(tmp, 'adapter_model.safetensors'), out, { format: 'pt' });
      writeConfig(tmp, conf);
    });
  } finally {
    for (const t of owned) t.dispose();
  }
}
