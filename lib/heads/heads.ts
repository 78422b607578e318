/**
 * Prediction heads of the Python Adapters library's flex-head models (`heads/base.py`,
 * `heads/language_modeling.py`): each head is an nn.Sequential stored under `heads.<name>.<i>.*`, with a
 * `head_config.json` whose keys are kept here as written (snake_case).
 *   classification / multilabel / multiple choice / tagging / QA / image: `layers` × [Dropout, Linear(H,H), act]
 *     with the last Linear to num_labels (1 for multiple choice, 2 for QA) → e.g. layers=2: `heads.a.1.*`, `heads.a.4.*`
 *   causal_lm / masked_lm: (layers−1) × [Linear(H,H), act, LayerNorm?] then Linear(H, vocab) — tied to the input
 *     embeddings when the model ties them (the tied weight is still saved, as the Python library does)
 *   seq2seq_lm: Linear(H, vocab) without bias (tied likewise)
 * Losses follow transformers: cross-entropy (MSE when num_labels = 1), BCE-with-logits for multilabel, tagging
 * ignores masked positions, QA averages start/end losses with out-of-range positions ignored, LM heads shift
 * labels by one for causal LM, ignore index −100 everywhere.
 */
import { Module } from '../nn/module.ts';
import { Dropout, LayerNorm, Linear, adapterActivation } from '../nn/layers.ts';
import { Tensor, tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { noGrad } from '../autograd/tape.ts';
import { ValueError } from '../errors.ts';

export type HeadType = 'classification' | 'multilabel_classification' | 'tagging' | 'multiple_choice' | 'question_answering' |
  'causal_lm' | 'masked_lm' | 'seq2seq_lm' | 'image_classification';

/** head_config.json's `config` (snake_case, as the Python library writes it). */
export interface HeadConfig {
  head_type: HeadType;
  num_labels?: number;
  num_choices?: number;
  layers: number;
  activation_function: string | null;
  label2id?: Record<string, number> | null;
  use_pooler?: boolean;
  bias?: boolean;
  dropout_prob?: number | null;
  vocab_size?: number;
  embedding_size?: number;
  layer_norm?: boolean;
  shift_labels?: boolean;
  [k: string]: unknown;
}

export interface HeadInput {
  /** (B, T, H) sequence output of the base model. */
  hidden: Tensor;
  pooled?: Tensor;
  /** (B, H) sentence representation chosen by the model (first token / last non-pad token). */
  cls?: Tensor;
  /**
   * The model passes `cls` as its cls_output (decoder-only and encoder–decoder models): the heads use it whatever
   * use_pooler says, as the Python heads do when cls_output is given.
   */
  clsFixed?: boolean;
  attentionMask?: Tensor | null;
  labels?: Tensor | null;
  startPositions?: Tensor | null;
  endPositions?: Tensor | null;
  /**
   * The active invertible adapter run in reverse, if any: LM heads apply it just before their output layer (the Python
   * library passes `invertible_adapter` to every head; its LM heads undo it there).
   */
  invertible?: ((h: Tensor) => Tensor) | null;
}
export interface HeadOutput {
  logits: Tensor;
  loss?: Tensor;
  startLogits?: Tensor;
  endLogits?: Tensor;
}

const LM_TYPES = new Set<HeadType>(['causal_lm', 'masked_lm', 'seq2seq_lm']);

/**
 * The keys each head type's config may hold: the Python library builds a head from head_config.json as
 * `head_class(model, name, **config)`, so any other key is an error there (label2id becomes id2label).
 */
const HEAD_KEYS: Record<HeadType, string[]> = {
  classification: ['num_labels', 'layers', 'activation_function', 'label2id', 'use_pooler', 'bias', 'dropout_prob'],
  multilabel_classification: ['num_labels', 'layers', 'activation_function', 'label2id', 'use_pooler', 'bias', 'dropout_prob'],
  multiple_choice: ['num_choices', 'layers', 'activation_function', 'label2id', 'use_pooler', 'dropout_prob'],
  tagging: ['num_labels', 'layers', 'activation_function', 'label2id', 'dropout_prob'],
  question_answering: ['num_labels', 'layers', 'activation_function', 'label2id', 'dropout_prob'],
  image_classification: ['num_labels', 'layers', 'activation_function', 'multilabel', 'label2id', 'use_pooler', 'bias', 'dropout_prob'],
  causal_lm: ['vocab_size', 'embedding_size', 'layers', 'activation_function', 'layer_norm', 'bias', 'shift_labels', 'label2id', 'dropout_prob'],
  masked_lm: ['vocab_size', 'embedding_size', 'layers', 'activation_function', 'layer_norm', 'bias', 'shift_labels', 'label2id'],
  seq2seq_lm: ['vocab_size', 'layers', 'activation_function', 'layer_norm', 'bias', 'shift_labels', 'label2id'],
};

/** Refuses a head config the Python library could not build: an unknown head_type, or keys its head class does not take. */
export function checkHeadConfig(name: string, c: HeadConfig): void {
  const keys = HEAD_KEYS[c.head_type];
  if (!keys) {
    const hint = String(c.head_type) === 'dependency_parsing' ? ' (the biaffine dependency-parsing head is not implemented)' : '';
    throw new ValueError(`head '${name}': unknown head_type '${String(c.head_type)}'${hint}`);
  }
  for (const k of Object.keys(c))
    if (k !== 'head_type' && !keys.includes(k)) throw new ValueError(`head '${name}': a ${c.head_type} head takes no '${k}' (its keys: ${keys.join(', ')})`);
}

export class PredictionHead extends Module {
  /** The output Linear, whose weight is the input embedding matrix when tied. */
  readonly out: Linear;
  /** True when the output weight is the model's input embedding matrix. */
  tied = false;
  /**
   * @param hidden the model's hidden size; @param dropout the model's hidden dropout (used when dropout_prob is
   * null); @param tiedEmbedding the input embeddings when the model ties its LM output to them.
   */
  constructor(readonly name: string, readonly config: HeadConfig, hidden: number, opts: { dropout?: number; initStd?: number; lnEps?: number; tiedEmbedding?: Tensor | null } = {}) {
    super();
    const c = config;
    checkHeadConfig(name, c);
    if (!Number.isInteger(c.layers) || c.layers < 1) throw new ValueError(`head '${name}': layers must be a positive integer, got ${c.layers}`);
    const bias = c.bias ?? true;
    const act = () => {
      const f = adapterActivation(String(c.activation_function));
      return Object.assign(new Module(), { forward: f }) as Module & { forward(x: Tensor): Tensor };
    };
    let i = 0;
    const add = (m: Module) => this.registerModule(String(i++), m);
    let out: Linear;
    if (LM_TYPES.has(c.head_type)) {
      const V = c.vocab_size;
      if (!V) throw new ValueError(`head '${name}': ${c.head_type} needs vocab_size`);
      const E = c.embedding_size ?? hidden;
      for (let l = 0; l < c.layers - 1; l++) {
        add(new Linear(l === 0 ? hidden : E, E));
        if (c.activation_function) add(act());
        if (c.layer_norm) add(new LayerNorm(E, opts.lnEps ?? 1e-12));
      }
      // the output layer reads embedding_size features (ELECTRA's LM heads project H → E first), as in the Python library
      out = add(new Linear(E, V, { bias: c.bias ?? c.head_type !== 'seq2seq_lm' })) as Linear;
    } else {
      const n = c.head_type === 'multiple_choice' ? 1 : c.head_type === 'question_answering' ? (c.num_labels ?? 2) : c.num_labels;
      if (!n || n < 1) throw new ValueError(`head '${name}': num_labels must be >= 1, got ${n}`);
      const p = c.dropout_prob ?? opts.dropout ?? 0.1;
      for (let l = 0; l < c.layers; l++) {
        add(new Dropout(p));
        if (l < c.layers - 1) {
          add(new Linear(hidden, hidden));  // (`bias` applies to the output layer only, as in the Python library)
          if (c.activation_function) add(act());
        } else out = add(new Linear(hidden, n, { bias })) as Linear;
      }
    }
    this.out = out!;
    // transformers' _init_weights: N(0, initializer_range) weights, zero biases, LayerNorm (1, 0)
    noGrad(() => {
      for (const m of this.children()) if (m instanceof Linear) {
        m.weight.copy_(ops.randn(m.weight.shape, { std: opts.initStd ?? 0.02 }));
        m.bias?.copy_(ops.zeros(m.bias.shape));
      }
    });
    if (opts.tiedEmbedding && LM_TYPES.has(c.head_type)) {
      // the output projection *is* the input embedding matrix (not a second parameter; it keeps its frozen state)
      const E = opts.tiedEmbedding, rg = E.requiresGrad;
      if (E.shape[0] !== this.out.outFeatures || E.shape[1] !== this.out.inFeatures)
        throw new ValueError(`head '${name}': cannot tie a (${this.out.outFeatures}, ${this.out.inFeatures}) output to embeddings [${E.shape}]`);
      this.out.param('weight')!.dispose();
      this.out.registerParameter('weight', E);
      E.requiresGrad = rg;
      this.tied = true;
    }
  }

  private children(): Module[] {
    const r: Module[] = [];
    for (let i = 0; this.child(String(i)); i++) r.push(this.child(String(i))!);
    return r;
  }
  /** Runs the Sequential. */
  private seq(x: Tensor): Tensor {
    for (const m of this.children()) x = (m as unknown as { forward(t: Tensor): Tensor }).forward(x);
    return x;
  }

  forward(inp: HeadInput): HeadOutput {
    const c = this.config;
    switch (c.head_type) {
      case 'classification':
      case 'multilabel_classification':
      case 'image_classification': {
        const x = c.use_pooler && !inp.clsFixed ? inp.pooled : inp.cls;
        if (!x) throw new ValueError(`head '${this.name}': ${c.use_pooler ? 'the model has no pooler output' : 'no sentence representation'}`);
        const logits = this.seq(x);
        if (!inp.labels) return { logits };
        const n = logits.shape[1]!;
        if (c.head_type === 'multilabel_classification' || (c.head_type === 'image_classification' && c.multilabel))
          return { logits, loss: bceWithLogits(logits, ops.cast(inp.labels, 'f32')) };
        if (n === 1) return { logits, loss: ops.mseLoss(ops.reshape(logits, [-1]), ops.reshape(ops.cast(inp.labels, 'f32'), [-1])) };
        return { logits, loss: ops.crossEntropy(logits, checkLabels(this.name, ops.reshape(inp.labels, [-1]), n, logits.device)) };
      }
      case 'multiple_choice': {
        const x = c.use_pooler && !inp.clsFixed ? inp.pooled : inp.cls;
        if (!x) throw new ValueError(`head '${this.name}': ${c.use_pooler ? 'the model has no pooler output' : 'no sentence representation'}`);
        const nc = c.num_choices ?? 2;
        const logits = ops.reshape(this.seq(x), [-1, nc]);
        return inp.labels ? { logits, loss: ops.crossEntropy(logits, checkLabels(this.name, ops.reshape(inp.labels, [-1]), nc, logits.device)) } : { logits };
      }
      case 'tagging': {
        const logits = this.seq(inp.hidden);
        if (!inp.labels) return { logits };
        const n = logits.shape[2]!;
        let lab = ops.cast(inp.labels, 'i64'), mask = inp.attentionMask ?? null;
        // prompt tuning put its tokens before the sequence: their labels are ignored (and their mask is 1), as the
        // Python TaggingHead pads by prompt_tokens_length
        const P = logits.shape[1]! - lab.shape[lab.ndim - 1]!;
        if (P > 0 && lab.ndim === 2) {
          const B = lab.shape[0]!;
          lab = ops.concat([ops.full([B, P], -100, { dtype: 'i64', device: lab.device }), lab], 1);
          if (mask && mask.ndim === 2) mask = ops.concat([ops.ones([B, P], { dtype: mask.dtype, device: mask.device }), mask], 1);
        }
        let labels = ops.reshape(lab, [-1]);
        // positions with attention_mask 0 are ignored (transformers' active_loss)
        if (mask) labels = ops.where(ops.eq(ops.reshape(mask, [-1]), 1), labels, tensor([-100], [1], { dtype: 'i64' }));
        return { logits, loss: ops.crossEntropy(ops.reshape(logits, [-1, n]), checkLabels(this.name, labels, n, logits.device), { ignoreIndex: -100 }) };
      }
      case 'question_answering': {
        const logits = this.seq(inp.hidden);
        const [s, e] = ops.split(logits, 1, -1);
        const startLogits = ops.squeeze(s!, -1), endLogits = ops.squeeze(e!, -1);
        const out: HeadOutput = { logits, startLogits, endLogits };
        if (inp.startPositions && inp.endPositions) {
          // positions outside the sequence are clamped to T and ignored, as in transformers
          const T = startLogits.shape[1]!;
          const pos = (p: Tensor) => ops.cast(ops.clamp(ops.cast(ops.reshape(p, [-1]), 'f32'), 0, T), 'i64');
          const ls = ops.crossEntropy(startLogits, pos(inp.startPositions), { ignoreIndex: T });
          const le = ops.crossEntropy(endLogits, pos(inp.endPositions), { ignoreIndex: T });
          out.loss = ops.div(ops.add(ls, le), 2);
        }
        return out;
      }
      case 'causal_lm':
      case 'masked_lm':
      case 'seq2seq_lm': {
        // the transform layers, the invertible adapter in reverse, then the output embedding layer
        const layers = this.children();
        let x = inp.hidden;
        for (const m of layers.slice(0, -1)) x = (m as unknown as { forward(t: Tensor): Tensor }).forward(x);
        if (inp.invertible) x = inp.invertible(x);
        const logits = (layers[layers.length - 1] as unknown as { forward(t: Tensor): Tensor }).forward(x);
        if (!inp.labels) return { logits };
        // every LM head follows its config's shift_labels (causal: true, masked / seq2seq: false by default)
        const shift = c.shift_labels ?? c.head_type === 'causal_lm';
        return { logits, loss: lmLoss(logits, inp.labels, shift) };
      }
      default:
        throw new ValueError(`head '${this.name}': unknown head_type '${String(c.head_type)}'`);
    }
  }
}

/** transformers' LM loss: optional shift (predict token t+1 from position t), ignore index −100, mean. */
export function lmLoss(logits: Tensor, labels: Tensor, shift: boolean): Tensor {
  const V = logits.shape[logits.ndim - 1]!, T = logits.shape[1]!;
  let lg = logits, lb = ops.cast(labels, 'i64');
  if (shift) {
    lg = ops.slice(logits, 1, 0, T - 1);
    lb = ops.slice(lb, 1, 1);
  }
  return ops.crossEntropy(ops.reshape(lg.contiguous(), [-1, V]), checkLabels('lm', ops.reshape(lb.contiguous(), [-1]), V, lg.device), { ignoreIndex: -100 });
}

/** BCEWithLogitsLoss (mean): max(x,0) − x·y + log(1 + e^{−|x|}). */
export function bceWithLogits(x: Tensor, y: Tensor): Tensor {
  return ops.mean(ops.add(ops.sub(ops.relu(x), ops.mul(x, y)), ops.log(ops.add(ops.exp(ops.neg(ops.abs(x))), 1))));
}

/** Labels must lie in [0, n) or be −100: a clear error instead of a native index failure. */
function checkLabels(name: string, labels: Tensor, n: number, device = 'cpu'): Tensor {
  const v = labels.toArray() as BigInt64Array | Int32Array | Float32Array;
  for (let i = 0; i < v.length; i++) {
    const x = Number(v[i]);
    if (x !== -100 && !(x >= 0 && x < n)) throw new ValueError(`head '${name}': label ${x} at position ${i} is out of range [0, ${n}) (use -100 to ignore)`);
  }
  const l = ops.cast(labels, 'i64');
  return device === l.device ? l : l.to(device);  // host labels for a model on the GPU
}
