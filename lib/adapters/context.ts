/**
 * Adapter state shared by every hook site of one model: the added adapters' configs and the active setup.
 * Sites read it at forward time, so `setActiveAdapters` takes effect without touching the modules.
 */
import type { AdapterConfig } from './config.ts';
import { Stack, filterSetup, type Setup } from './composition.ts';

export class AdapterContext {
  readonly configs = new Map<string, AdapterConfig>();
  /** The active setup (a name or a composition block); null = base model. */
  setup: Setup | null = null;
  /** Layers to skip (AdapterDrop): adapters are not applied in these layer indices. */
  skipLayers = new Set<number>();
  /** Set once a Parallel block has replicated the batch during the current forward pass. */
  parallelized = false;
  /** The batch size before replication. */
  originalBatch = -1;
  /** Fusion attention probabilities collected during this forward pass (outputAdapterFusionAttentions), or null. */
  fusionAttentions: Record<string, Record<number, Record<string, import('../tensor.ts').Tensor>>> | null = null;
  /**
   * Prefix-tuning states (P, n_layers·2·H) computed during the current forward pass, per prefix module: the
   * reparametrisation MLP runs once per forward (as the Python library's prefix pool does), not once per
   * layer. null outside a forward pass (then every layer computes them itself).
   */
  prefixStates: Map<object, import('../tensor.ts').Tensor> | null = null;
  beginForward(collectFusionAttentions = false): void {
    this.parallelized = false;
    this.originalBatch = -1;
    this.fusionAttentions = collectFusionAttentions ? {} : null;
    this.prefixStates = new Map();
  }
  endForward(): void {
    this.prefixStates = null;
  }

  /** Active adapter names in setup order. */
  get active(): string[] {
    const s = this.setup;
    return s === null ? [] : typeof s === 'string' ? [s] : s.flatten();
  }
  set active(names: string[]) {
    this.setup = names.length ? new Stack(...names) : null;
  }

  private applies(name: string, layer: number): boolean {
    return !(this.configs.get(name)?.leaveOut ?? []).includes(layer);
  }
  /** Active adapter names at `layer` (leave_out and AdapterDrop applied), in setup order. */
  activeAt(layer: number): string[] {
    if (this.skipLayers.has(layer)) return [];
    return this.active.filter((n) => this.applies(n, layer));
  }
  /** The setup as one site at `layer` sees it (see filterSetup); `present` says which names the site holds. */
  setupAt(layer: number, present: (name: string) => boolean): Setup | null {
    if (this.skipLayers.has(layer)) return null;
    return filterSetup(this.setup, (n) => present(n) && this.applies(n, layer));
  }
}

/** The hook sites of one transformer layer, declared by each model (see STYLE.md rule 11). */
export interface LayerSites {
  index: number;
  /** Attention projections: separate q/k/v, or GPT-2's fused (in → 3·out) `qkv`. */
  q?: import('../nn/layers.ts').Linear;
  k?: import('../nn/layers.ts').Linear;
  v?: import('../nn/layers.ts').Linear;
  qkv?: import('../nn/layers.ts').Linear;
  /** Cross-attention projections of encoder–decoder decoders (LoRA's selfattn_lora covers them too). */
  cross?: { q: import('../nn/layers.ts').Linear; k: import('../nn/layers.ts').Linear; v: import('../nn/layers.ts').Linear };
  /** LoRA `intermediate_lora` / `output_lora` targets (arch-specific: LLaMA maps them to down/up_proj). */
  intermediate?: import('../nn/layers.ts').Linear;
  output?: import('../nn/layers.ts').Linear;
  /** Bottleneck sites after attention (mh_adapter) and after the feed-forward block (output_adapter). */
  attnBottleneck?: import('./methods/bottleneck.ts').BottleneckSite;
  ffnBottleneck?: import('./methods/bottleneck.ts').BottleneckSite;
  /** Bottleneck site after cross-attention (encoder–decoder decoders; `cross_adapter: true`). */
  crossBottleneck?: import('./methods/bottleneck.ts').BottleneckSite;
  /** Prefix-tuning site of the self-attention. */
  prefix?: import('./methods/prefix_tuning.ts').PrefixSite;
  /** Prefix-tuning site of the cross-attention (encoder–decoder decoders). */
  crossPrefix?: import('./methods/prefix_tuning.ts').PrefixSite;
  /** ReFT site on the layer output. */
  reft?: import('./methods/reft.ts').ReftSite;
}

/**
 * The Python library's adjust_tensors_for_parallel: after a Parallel block replicated the batch, tensors that
 * still have the original batch (masks, residuals, keys) are repeated to match `ref`.
 */
export function matchBatch(ref: import('../tensor.ts').Tensor, t: import('../tensor.ts').Tensor): import('../tensor.ts').Tensor;
export function matchBatch(ref: import('../tensor.ts').Tensor, t: import('../tensor.ts').Tensor | null): import('../tensor.ts').Tensor | null;
export function matchBatch(ref: import('../tensor.ts').Tensor, t: import('../tensor.ts').Tensor | null): import('../tensor.ts').Tensor | null {
  if (!t) return t;
  const B = ref.shape[0]!, b = t.shape[0]!;
  if (B === b || b === 0 || B % b !== 0) return t;
  return repeatBatch(t, B / b);
}
/** Repeats a tensor n times along dim 0 (torch's x.repeat(n, 1, …)). */
/**
 * Row offsets [0, …, M] of a BatchSplit's children in x flattened to (M, features): batch rows × positions per row
 * (for the segmented multi-adapter kernels).
 */
export function segmentStarts(x: import('../tensor.ts').Tensor, batchSizes: number[]): number[] {
  const per = x.numel / (x.shape[0]! * x.shape[x.ndim - 1]!);  // positions per batch row
  const starts = [0];
  for (const n of batchSizes) starts.push(starts[starts.length - 1]! + n * per);
  return starts;
}

export function repeatBatch(t: import('../tensor.ts').Tensor, n: number): import('../tensor.ts').Tensor {
  return opsRepeat(t, n);
}
import * as opsNs from '../ops/index.ts';
function opsRepeat(t: import('../tensor.ts').Tensor, n: number): import('../tensor.ts').Tensor {
  return n === 1 ? t : opsNs.concat(Array.from({ length: n }, () => t), 0);
}

/** A base model that exposes hook sites. */
export interface AdaptableModel {
  adapterLayers(): LayerSites[];
  /** The model repeats masks/keys for Parallel-replicated batches (BERT family, GPT-2). */
  supportsParallel?(): boolean;
  hiddenSize(): number;
  /** Attention heads that prefixes get (num_attention_heads). */
  numHeads?(): number;
  /** The model-level prefix pool (`prefix_tuning`), when the architecture supports prefix tuning. */
  prefixPool?(): import('./methods/prefix_tuning.ts').PrefixTuningPool;
  /** Prefix locations with their layer counts (encoder–decoder models); default: one location, all layers. */
  prefixLocations?(cfg: import('./config.ts').PrefixTuningConfig): { key: string; nLayers: number }[];
  /** Model-level `invertible_adapters` (NICE blocks on the embedding output). */
  invertibleAdapters?(): import('./methods/invertible.ts').InvertibleAdapters;
  /** The prompt-tuning pool (`prompt_tuning`), when the architecture supports prompt tuning. */
  promptPool?(): import('./methods/prompt_tuning.ts').PromptTuningPool;
  /** The word-embedding module, for PEFT prompt tuning's virtual tokens. */
  wordEmbedding?(): import('../nn/layers.ts').Embedding;
}
