/**
 * ELECTRA (https://arxiv.org/abs/2003.10555) as HF transformers' ElectraModel
 * (models/electra/modeling_electra.py): BERT's encoder layers behind embeddings of width embedding_size,
 * projected to hidden_size by `embeddings_project` when the two differ; no pooler. HF weight names; hook
 * sites as BERT (attn.q/k/v/o, ffn.up/down). The Python library's ElectraAdapterModel keeps the base model
 * under the `electra.` prefix.
 */
import { Module } from '../nn/module.ts';
import { PrefixTuningPool } from '../adapters/methods/prefix_tuning.ts';
import type { LayerSites } from '../adapters/context.ts';
import { Dropout, Embedding, LayerNorm, Linear } from '../nn/layers.ts';
import { Tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope } from '../scope.ts';
import { type ForwardInput, type HFConfig, type ModelOutput, asIds, keepMask, num, onDevice } from './common.ts';
import { type BertConfig, BertLayer, parseBertConfig } from './bert.ts';

export interface ElectraConfig extends BertConfig {
  embeddingSize: number;
}

export function parseElectraConfig(c: HFConfig): ElectraConfig {
  // ELECTRA has no pooler; everything else reads like BERT's config
  const bert = parseBertConfig({ ...c, add_pooling_layer: false });
  return { ...bert, embeddingSize: num(c, 'embedding_size', 128) };  // ElectraConfig's default
}

class ElectraEmbeddings extends Module {
  word: Embedding; pos: Embedding; type: Embedding; ln: LayerNorm; drop: Dropout;
  constructor(cfg: ElectraConfig) {
    super();
    const E = cfg.embeddingSize;
    this.word = this.registerModule('word_embeddings', new Embedding(cfg.vocabSize, E));
    this.pos = this.registerModule('position_embeddings', new Embedding(cfg.maxPositions, E));
    this.type = this.registerModule('token_type_embeddings', new Embedding(cfg.typeVocabSize, E));
    this.ln = this.registerModule('LayerNorm', new LayerNorm(E, cfg.eps));
    this.drop = this.registerModule('dropout', new Dropout(cfg.dropout));
  }
  forward(ids: Tensor, tokenTypes: Tensor | null, positions: Tensor | null): Tensor {
    const [B, T] = ids.shape as [number, number];
    const pos = positions ?? ops.unsqueeze(ops.arange(0, T), 0);
    const tt = tokenTypes ?? ops.zeros([B, T], { dtype: 'i64' });
    const dev = this.word.weight.device;
    const h = ops.add(ops.add(this.word.forward(onDevice(ids, dev)), this.pos.forward(onDevice(pos, dev))), this.type.forward(onDevice(tt, dev)));
    return this.drop.forward(this.ln.forward(h));
  }
}

/** The ELECTRA encoder (discriminator or generator body, HF `ElectraModel`); names without the model prefix. */
export class ElectraModel extends Module {
  embeddings: ElectraEmbeddings;
  project: Linear | null = null;
  layers: BertLayer[] = [];
  constructor(readonly cfg: ElectraConfig) {
    super();
    this.embeddings = this.registerModule('embeddings', new ElectraEmbeddings(cfg));
    if (cfg.embeddingSize !== cfg.hiddenSize)
      this.project = this.registerModule('embeddings_project', new Linear(cfg.embeddingSize, cfg.hiddenSize));
    const list = this.registerModule('encoder', new Module()).registerModule('layer', new Module());
    for (let i = 0; i < cfg.numLayers; i++) this.layers.push(list.registerModule(String(i), new BertLayer(cfg, i)));
    this.prefixes = this.registerModule('prefix_tuning', new PrefixTuningPool());
  }
  inputEmbeddings(): Tensor {
    return this.embeddings.word.weight;
  }
  hiddenSize(): number {
    return this.cfg.hiddenSize;
  }
  numHeads(): number {
    return this.cfg.numHeads;
  }
  supportsParallel(): boolean {
    return true;
  }
  prefixPool(): PrefixTuningPool {
    return this.prefixes;
  }
  prefixes!: PrefixTuningPool;
  /** Hook sites of the BERT-style layers (ElectraAdapterModel places adapters like BERT). */
  adapterLayers(): LayerSites[] {
    return this.layers.map((l, i) => ({ index: i, q: l.q, k: l.k, v: l.v, intermediate: l.up, output: l.down,
      attnBottleneck: l.attnSite, ffnBottleneck: l.ffnSite, prefix: l.prefixSite, reft: l.reftSite }));
  }
  forward(input: ForwardInput): ModelOutput {
    return scope(() => {
      const ids = asIds(input.inputIds, 'inputIds').t;
      if (!ids) throw new Error('ELECTRA forward needs inputIds');
      const keepKeys = keepMask(asIds(input.attentionMask, 'attentionMask').t);
      let h = this.embeddings.forward(ids, asIds(input.tokenTypeIds, 'tokenTypeIds').t, asIds(input.positionIds, 'positionIds').t);
      if (this.project) h = this.project.forward(h);
      // HF's hidden_states[0] is the encoder input, i.e. after embeddings_project
      const hidden: Tensor[] = input.outputHiddenStates ? [h] : [];
      for (const layer of this.layers) {
        h = layer.forward(h, keepKeys);
        if (input.outputHiddenStates) hidden.push(h);
      }
      const out: ModelOutput = { lastHiddenState: h };
      if (input.outputHiddenStates) out.hiddenStates = hidden;
      return out;
    });
  }
}
