/**
 * Architecture registry: HF `model_type` → config parser, base-model builder, and the flex-head prefix
 * under which the Python library's `<Arch>AdapterModel` stores the base model's parameters.
 * How to add a row: write lib/models/<arch>.ts exporting a Module with forward(ForwardInput), then add
 * `registerArch({...})` below.
 */
import type { Module } from '../nn/module.ts';
import type { ForwardInput, HFConfig, ModelOutput } from './common.ts';
import { ValueError } from '../errors.ts';
import type { Tensor } from '../tensor.ts';
import { BertModel, parseBertConfig } from './bert.ts';

export interface BaseModel extends Module {
  forward(input: ForwardInput): ModelOutput;
  /** The input (word) embedding matrix (V, C), for tied LM heads. */
  inputEmbeddings?(): Tensor;
  /** The hidden size (adapter and head widths). */
  hiddenSize?(): number;
  /** The word-embedding module (PEFT prompt tuning's virtual tokens attach to it). */
  wordEmbedding?(): import('../nn/layers.ts').Embedding;
  /** The model-level invertible adapters (applied to the embedding output; LM outputs undo them). */
  invertibleAdapters?(): import('../adapters/methods/invertible.ts').InvertibleAdapters;
}

export interface ArchSpec {
  modelTypes: string[];
  /** Prefix of base-model parameters in the flex-head model (`bert`, `roberta`, `transformer`, `model`, ...). */
  prefix: string;
  build(cfg: HFConfig): BaseModel;
  /** Keys that may be absent from a checkpoint because they are tied to another tensor: [missing, source]. */
  tied?: (cfg: HFConfig) => [string, string][];
  /**
   * Causal / seq2seq LM output projection: 'tied' (logits = h·Eᵀ with the input embeddings) or 'untied'
   * (a separate `lm_head.weight` (V, C), loaded from the checkpoint when present). Absent = no LM head.
   */
  lmHead?: (cfg: HFConfig) => 'tied' | 'untied';
  /** Encoder–decoder (T5, BART): generate() runs the seq2seq loop. */
  encoderDecoder?: boolean;
}

const archs = new Map<string, ArchSpec>();

export function registerArch(spec: ArchSpec): void {
  for (const t of spec.modelTypes) archs.set(t, spec);
}
export function archFor(modelType: unknown): ArchSpec {
  const spec = typeof modelType === 'string' ? archs.get(modelType) : undefined;
  if (!spec) throw new ValueError(`unsupported model_type ${JSON.stringify(modelType)}; supported: ${[...archs.keys()].join(', ')}`);
  return spec;
}
export function supportedModelTypes(): string[] {
  return [...archs.keys()];
}

registerArch({ modelTypes: ['bert'], prefix: 'bert', build: (c) => new BertModel(parseBertConfig(c)) });

// Encoders (RoBERTa / XLM-R share BERT's layers; both flex-head models use the `roberta.` prefix)
import { buildRoberta } from './roberta.ts';
import { DistilBertModel, parseDistilBertConfig } from './distilbert.ts';
import { ViTModel, parseViTConfig } from './vit.ts';
import { ElectraModel, parseElectraConfig } from './electra.ts';
registerArch({ modelTypes: ['roberta', 'xlm-roberta'], prefix: 'roberta', build: buildRoberta });
registerArch({ modelTypes: ['distilbert'], prefix: 'distilbert', build: (c) => new DistilBertModel(parseDistilBertConfig(c)) });
registerArch({ modelTypes: ['vit'], prefix: 'vit', build: (c) => new ViTModel(parseViTConfig(c)) });
registerArch({ modelTypes: ['electra'], prefix: 'electra', build: (c) => new ElectraModel(parseElectraConfig(c)) });

// Decoders (causal LM heads: GPT-2 always ties to wte; the LLaMA family unless tie_word_embeddings says so)
import { GPT2Model, parseGPT2Config } from './gpt2.ts';
import { LlamaModel, parseLlamaConfig } from './llama.ts';
registerArch({ modelTypes: ['gpt2'], prefix: 'transformer', build: (c) => new GPT2Model(parseGPT2Config(c)),
  lmHead: (c) => (c.tie_word_embeddings === false ? 'untied' : 'tied') });
registerArch({
  modelTypes: ['llama', 'mistral', 'qwen2'], prefix: 'model', build: (c) => new LlamaModel(parseLlamaConfig(c)),
  lmHead: (c) => (c.tie_word_embeddings === true ? 'tied' : 'untied'),
});

// Encoder–decoders (shared embeddings; LM heads tied unless tie_word_embeddings is false. Tied T5 needs the
// decoder output scaled by the base model's lmScale = d_model^-0.5 before the head)
import { T5Model, parseT5Config, t5TiesWordEmbeddings } from './t5.ts';
import { BartModel, parseBartConfig } from './bart.ts';
registerArch({
  modelTypes: ['t5', 'mt5'], prefix: 'transformer', build: (c) => new T5Model(parseT5Config(c)),
  lmHead: (c) => (t5TiesWordEmbeddings(c) ? 'tied' : 'untied'), encoderDecoder: true,
});
registerArch({
  modelTypes: ['bart'], prefix: 'model', build: (c) => new BartModel(parseBartConfig(c)),
  lmHead: (c) => (c.tie_word_embeddings === false ? 'untied' : 'tied'), encoderDecoder: true,
});
