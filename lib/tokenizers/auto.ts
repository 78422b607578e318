/**
 * AutoTokenizer: Hugging Face tokenizers for Node, on top of `@huggingface/tokenizers` (pure JS, reads
 * `tokenizer.json`), with the batch behaviour of transformers' `PreTrainedTokenizerFast.__call__`
 * (https://github.com/huggingface/transformers/blob/v4.47.0/src/transformers/tokenization_utils_base.py):
 * special tokens from tokenizer_config.json / special_tokens_map.json, truncation that keeps the special
 * tokens (the template's tokens are added after truncating the text), padding to the longest sequence or
 * to max_length on the configured side, attention masks, and i64 tensors on request.
 *
 * Like transformers' `LlamaTokenizerFast.update_post_processor`, Llama/CodeLlama/Gemma tokenizers rebuild
 * their BOS/EOS template from `add_bos_token` / `add_eos_token`. Text pairs are not supported.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { FormatError, IOError, ValueError } from '../errors.ts';
import { tensor, type Tensor } from '../tensor.ts';

type Json = Record<string, unknown>;

export interface EncodeOptions {
  /** Add the template's special tokens (BOS, [CLS]/[SEP], ...). Default true, as in transformers. */
  addSpecialTokens?: boolean;
  /** Truncate to maxLength (default: model_max_length) keeping the special tokens. */
  truncation?: boolean;
  maxLength?: number;
}
export interface BatchEncodeOptions extends EncodeOptions {
  /** true / 'longest': pad to the longest sequence; 'max_length': to maxLength (or model_max_length). */
  padding?: boolean | 'longest' | 'max_length' | 'do_not_pad';
  /** Overrides tokenizer_config.json's padding_side. */
  paddingSide?: 'left' | 'right';
  /** Overrides tokenizer_config.json's truncation_side. */
  truncationSide?: 'left' | 'right';
  /** Return (B, T) i64 tensors instead of nested arrays (needs equal lengths: pad or truncate). */
  returnTensors?: boolean;
}
export interface BatchEncoding {
  inputIds: number[][];
  attentionMask: number[][];
}
export interface TensorBatchEncoding {
  inputIds: Tensor;
  attentionMask: Tensor;
}
export interface DecodeOptions {
  skipSpecialTokens?: boolean;
  /** Defaults to tokenizer_config.json's clean_up_tokenization_spaces. */
  cleanUpTokenizationSpaces?: boolean;
}

const SPECIAL_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;
type SpecialKey = (typeof SPECIAL_KEYS)[number];

/** transformers' VERY_LARGE_INTEGER: "no limit" for model_max_length. */
const NO_LIMIT = 1e15;

/** Class defaults of the tokenizers transformers' __init__ would fill in when a config omits them. */
const BERT_DEFAULTS: Json = { unk_token: '[UNK]', sep_token: '[SEP]', pad_token: '[PAD]', cls_token: '[CLS]', mask_token: '[MASK]', clean_up_tokenization_spaces: true };
const ROBERTA_DEFAULTS: Json = { bos_token: '<s>', eos_token: '</s>', sep_token: '</s>', cls_token: '<s>', unk_token: '<unk>', pad_token: '<pad>', mask_token: '<mask>' };
const LLAMA_DEFAULTS: Json = { unk_token: '<unk>', bos_token: '<s>', eos_token: '</s>', add_bos_token: true, add_eos_token: false };
const CLASS_DEFAULTS: Record<string, Json> = {
  BertTokenizer: BERT_DEFAULTS, DistilBertTokenizer: BERT_DEFAULTS, ElectraTokenizer: BERT_DEFAULTS,
  RobertaTokenizer: ROBERTA_DEFAULTS, XLMRobertaTokenizer: ROBERTA_DEFAULTS, BartTokenizer: ROBERTA_DEFAULTS,
  GPT2Tokenizer: { unk_token: '<|endoftext|>', bos_token: '<|endoftext|>', eos_token: '<|endoftext|>' },
  LlamaTokenizer: LLAMA_DEFAULTS, CodeLlamaTokenizer: LLAMA_DEFAULTS,
  GemmaTokenizer: { unk_token: '<unk>', bos_token: '<bos>', eos_token: '<eos>', pad_token: '<pad>', add_bos_token: true, add_eos_token: false },
  T5Tokenizer: { eos_token: '</s>', unk_token: '<unk>', pad_token: '<pad>' },
};
/** Classes whose post-processor transformers rebuilds from add_bos_token / add_eos_token. */
const BOS_EOS_TEMPLATE = new Set(['LlamaTokenizer', 'CodeLlamaTokenizer', 'GemmaTokenizer']);

function readJson(file: string, required: boolean): Json | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (!required && (e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new IOError(`cannot read ${file}: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text);
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Json;
  } catch (e) {
    throw new FormatError(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

/** A special token from a config: a string, an AddedToken dict ({content, ...}) or null. */
function tokenString(v: unknown, where: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  throw new FormatError(`${where}: expected a token string or {content: ...}, got ${JSON.stringify(v)}`);
}

/** Id of `token` in a tokenizer.json (added tokens first, then the model's vocab). */
function idInJson(tj: Json, token: string): number | null {
  for (const a of (tj.added_tokens as Json[] | undefined) ?? []) if (a.content === token && typeof a.id === 'number') return a.id;
  const model = tj.model as Json | undefined;
  const vocab = model?.vocab;
  if (Array.isArray(vocab)) {
    const i = vocab.findIndex((e) => Array.isArray(e) && e[0] === token);
    return i >= 0 ? i : null;
  }
  if (vocab && typeof vocab === 'object' && typeof (vocab as Json)[token] === 'number') return (vocab as Json)[token] as number;
  return null;
}

export class PreTrainedTokenizer {
  readonly tokenizerClass: string;
  /** model_max_length (Infinity when the config has none). */
  readonly modelMaxLength: number;
  paddingSide: 'left' | 'right';
  truncationSide: 'left' | 'right';
  readonly #tok: Tokenizer;
  readonly #special: Record<SpecialKey, string | null>;
  readonly #cleanUp: boolean;
  readonly #vocabSize: number;
  /** Special tokens the template puts before / after the text (ids), or null if it isn't of that form. */
  readonly #wrap: { pre: number[]; post: number[] } | null;

  /** From the parsed tokenizer.json and tokenizer_config.json (+ special_tokens_map.json) objects. */
  constructor(tokenizerJson: Json, config: Json = {}, specialTokensMap: Json | null = null, where = 'tokenizer') {
    const cls = String(config.tokenizer_class ?? '').replace(/Fast$/, '');
    this.tokenizerClass = cls;
    // transformers: class defaults < tokenizer_config.json < special_tokens_map.json (the latter only for
    // configs without added_tokens_decoder, i.e. legacy ones)
    const cfg: Json = { ...(CLASS_DEFAULTS[cls] ?? {}), ...config };
    if (specialTokensMap && !('added_tokens_decoder' in config)) Object.assign(cfg, specialTokensMap);
    this.#special = Object.fromEntries(SPECIAL_KEYS.map((k) => [k, tokenString(cfg[k], `${where}: ${k}`)])) as Record<SpecialKey, string | null>;
    for (const k of ['padding_side', 'truncation_side'])
      if (cfg[k] !== undefined && cfg[k] !== null && cfg[k] !== 'left' && cfg[k] !== 'right')
        throw new ValueError(`${where}: ${k} must be 'left' or 'right', got ${JSON.stringify(cfg[k])}`);
    this.paddingSide = cfg.padding_side === 'left' ? 'left' : 'right';
    this.truncationSide = cfg.truncation_side === 'left' ? 'left' : 'right';
    const mml = cfg.model_max_length;
    this.modelMaxLength = typeof mml === 'number' && mml > 0 && mml < NO_LIMIT ? Math.floor(mml) : Infinity;
    this.#cleanUp = cfg.clean_up_tokenization_spaces === true;

    let tj = tokenizerJson;
    if (BOS_EOS_TEMPLATE.has(cls)) tj = { ...tj, post_processor: this.#bosEosTemplate(tj, cfg, where) };
    try {
      this.#tok = new Tokenizer(tj, { ...cfg, clean_up_tokenization_spaces: this.#cleanUp });
    } catch (e) {
      throw new FormatError(`${where}: unsupported or invalid tokenizer.json (${(e as Error).message})`);
    }
    const model = tj.model as Json | undefined;
    const vocab = model?.vocab;
    this.#vocabSize = Array.isArray(vocab) ? vocab.length : vocab && typeof vocab === 'object' ? Object.keys(vocab).length : this.length;
    this.#wrap = this.#templateWrap();
  }

  /** LlamaTokenizerFast.update_post_processor: `[bos] $A [eos]` per add_bos_token / add_eos_token. */
  #bosEosTemplate(tj: Json, cfg: Json, where: string): Json {
    const addBos = cfg.add_bos_token !== false, addEos = cfg.add_eos_token === true;
    const bos = this.#special.bos_token, eos = this.#special.eos_token;
    if (addBos && bos === null) throw new ValueError(`${where}: add_bos_token = true but bos_token = null`);
    if (addEos && eos === null) throw new ValueError(`${where}: add_eos_token = true but eos_token = null`);
    const seq = (id: string, typeId: number): Json[] => [
      ...(addBos ? [{ SpecialToken: { id: bos, type_id: typeId } }] : []),
      { Sequence: { id, type_id: typeId } },
      ...(addEos ? [{ SpecialToken: { id: eos, type_id: typeId } }] : []),
    ];
    const special: Json = {};
    for (const [on, t] of [[addBos, bos], [addEos, eos]] as const)
      if (on && t !== null) special[t] = { id: t, ids: [idInJson(tj, t) ?? 0], tokens: [t] };
    return { type: 'TemplateProcessing', single: seq('A', 0), pair: [...seq('A', 0), ...seq('B', 1)], special_tokens: special };
  }

  /** Runs the post-processor on a sentinel to learn which special tokens go before and after the text. */
  #templateWrap(): { pre: number[]; post: number[] } | null {
    const pp = this.#tok.post_processor;
    if (!pp) return { pre: [], post: [] };
    const SENTINEL = '\u0000text\u0000';
    const out = pp.post_process([SENTINEL], null, true).tokens;
    const at = out.indexOf(SENTINEL);
    if (at < 0 || out.lastIndexOf(SENTINEL) !== at) return null;
    const id = (t: string) => this.tokenToId(t) ?? this.unkTokenId ?? 0;
    return { pre: out.slice(0, at).map(id), post: out.slice(at + 1).map(id) };
  }

  // ---- special tokens ----

  get bosToken(): string | null { return this.#special.bos_token; }
  get eosToken(): string | null { return this.#special.eos_token; }
  get unkToken(): string | null { return this.#special.unk_token; }
  get sepToken(): string | null { return this.#special.sep_token; }
  get clsToken(): string | null { return this.#special.cls_token; }
  get maskToken(): string | null { return this.#special.mask_token; }
  get padToken(): string | null { return this.#special.pad_token; }
  /** As `tokenizer.pad_token = tokenizer.eos_token` in Python. */
  set padToken(t: string | null) { this.#special.pad_token = t; }

  #idOf(t: string | null): number | null {
    if (t === null) return null;
    // transformers maps a token missing from the vocabulary to the unknown token's id
    return this.tokenToId(t) ?? (this.#special.unk_token !== null ? this.tokenToId(this.#special.unk_token) ?? null : null);
  }
  get bosTokenId(): number | null { return this.#idOf(this.#special.bos_token); }
  get eosTokenId(): number | null { return this.#idOf(this.#special.eos_token); }
  get unkTokenId(): number | null { return this.#idOf(this.#special.unk_token); }
  get sepTokenId(): number | null { return this.#idOf(this.#special.sep_token); }
  get clsTokenId(): number | null { return this.#idOf(this.#special.cls_token); }
  get maskTokenId(): number | null { return this.#idOf(this.#special.mask_token); }
  get padTokenId(): number | null { return this.#idOf(this.#special.pad_token); }

  /** Size of the model's vocabulary without added tokens (transformers' `vocab_size`). */
  get vocabSize(): number { return this.#vocabSize; }
  /** Vocabulary size including added tokens (`len(tokenizer)`). */
  get length(): number { return this.#tok.get_vocab(true).size; }
  tokenToId(token: string): number | undefined { return this.#tok.token_to_id(token); }
  idToToken(id: number): string | undefined { return this.#tok.id_to_token(id); }
  /** The text's tokens (no special tokens). */
  tokenize(text: string): string[] { return this.#tok.tokenize(text); }

  // ---- encoding ----

  /** Token ids of one text. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    return this.#encodeOne(text, opts.addSpecialTokens ?? true, this.#truncLength(opts), this.truncationSide);
  }

  /** Ids and attention masks of a batch, truncated and padded as transformers' `tokenizer(texts, ...)`. */
  encodeBatch(texts: string[], opts: BatchEncodeOptions & { returnTensors: true }): TensorBatchEncoding;
  encodeBatch(texts: string[], opts?: BatchEncodeOptions): BatchEncoding;
  encodeBatch(texts: string[], opts: BatchEncodeOptions = {}): BatchEncoding | TensorBatchEncoding {
    if (!Array.isArray(texts) || texts.some((s) => typeof s !== 'string')) throw new ValueError('encodeBatch: texts must be an array of strings');
    // an option value that would be ignored is an error (transformers' names and values)
    const check = (k: 'padding' | 'paddingSide' | 'truncationSide', ok: unknown[]) => {
      if (opts[k] !== undefined && !ok.includes(opts[k])) throw new ValueError(`encodeBatch: ${k} must be one of ${ok.map((v) => JSON.stringify(v)).join(', ')}, got ${JSON.stringify(opts[k])}`);
    };
    check('padding', [true, false, 'longest', 'max_length', 'do_not_pad']);
    check('paddingSide', ['left', 'right']);
    check('truncationSide', ['left', 'right']);
    const add = opts.addSpecialTokens ?? true;
    const side = opts.truncationSide ?? this.truncationSide;
    const ids = texts.map((s) => this.#encodeOne(s, add, this.#truncLength(opts), side));
    const mode = opts.padding === true || opts.padding === 'longest' ? 'longest' : opts.padding === 'max_length' ? 'max_length' : 'none';
    let target = 0;
    if (mode === 'longest') target = ids.reduce((m, x) => Math.max(m, x.length), 0);
    else if (mode === 'max_length') {
      target = opts.maxLength ?? this.modelMaxLength;
      if (!Number.isFinite(target)) throw new ValueError("encodeBatch: padding 'max_length' needs maxLength (the tokenizer has no model_max_length)");
      this.#checkLength(target);
    }
    const attentionMask = ids.map((x) => new Array<number>(x.length).fill(1));
    if (mode !== 'none' && ids.some((x) => x.length < target)) {
      const pad = this.padTokenId;
      if (pad === null)
        throw new ValueError('encodeBatch: asking to pad but the tokenizer has no padding token; set `tokenizer.padToken = tokenizer.eosToken` or add a pad token');
      const left = (opts.paddingSide ?? this.paddingSide) === 'left';
      for (let i = 0; i < ids.length; i++) {
        const n = target - ids[i]!.length;
        if (n <= 0) continue;
        const p = new Array<number>(n).fill(pad), z = new Array<number>(n).fill(0);
        ids[i] = left ? [...p, ...ids[i]!] : [...ids[i]!, ...p];
        attentionMask[i] = left ? [...z, ...attentionMask[i]!] : [...attentionMask[i]!, ...z];
      }
    }
    if (!opts.returnTensors) return { inputIds: ids, attentionMask };
    const T = ids[0]?.length ?? 0;
    if (ids.some((x) => x.length !== T))
      throw new ValueError(`encodeBatch: sequences have different lengths (${ids.map((x) => x.length)}); use padding (and truncation) to return tensors`);
    const flat = (rows: number[][]) => BigInt64Array.from(rows.flat(), (v) => BigInt(v));
    const inputIds = tensor(flat(ids), [ids.length, T], { dtype: 'i64' });
    try {
      return { inputIds, attentionMask: tensor(flat(attentionMask), [ids.length, T], { dtype: 'i64' }) };
    } catch (e) {
      inputIds.dispose();
      throw e;
    }
  }

  #checkLength(n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new ValueError(`maxLength must be a non-negative integer, got ${n}`);
  }

  /** transformers: truncation defaults to on when max_length is given; off when truncation: false. */
  #truncLength(opts: EncodeOptions): number | null {
    const on = opts.truncation ?? opts.maxLength !== undefined;
    if (!on) return null;
    const n = opts.maxLength ?? this.modelMaxLength;
    if (!Number.isFinite(n)) return null;
    this.#checkLength(n);
    return n;
  }

  #encodeOne(text: string, addSpecial: boolean, maxLen: number | null, side: 'left' | 'right'): number[] {
    if (typeof text !== 'string') throw new ValueError(`encode: text must be a string, got ${typeof text}`);
    if (addSpecial && !this.#wrap) {
      // a post-processor we can't split around the text: truncate the full sequence
      const ids = this.#tok.encode(text, { add_special_tokens: true }).ids;
      return maxLen === null || ids.length <= maxLen ? ids : side === 'left' ? ids.slice(ids.length - maxLen) : ids.slice(0, maxLen);
    }
    let ids = this.#tok.encode(text, { add_special_tokens: false }).ids;
    const { pre, post } = addSpecial ? this.#wrap! : { pre: [], post: [] };
    if (maxLen !== null) {
      // room for the text after the template's tokens (as the Rust tokenizer: never below 0)
      const room = Math.max(0, maxLen - pre.length - post.length);
      if (ids.length > room) ids = side === 'left' ? ids.slice(ids.length - room) : ids.slice(0, room);
    }
    return [...pre, ...ids, ...post];
  }

  // ---- decoding ----

  /** Text of a sequence of ids (a number array or a 1-D integer tensor). */
  decode(ids: ArrayLike<number | bigint> | Tensor, opts: DecodeOptions = {}): string {
    const list = toIdList(ids, 'decode');
    if (list.length === 0) return '';
    return this.#tok.decode(list, {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: opts.cleanUpTokenizationSpaces ?? this.#cleanUp,
    });
  }

  /** decode() of every row (nested arrays or a 2-D integer tensor). */
  batchDecode(batch: ArrayLike<number | bigint>[] | Tensor, opts: DecodeOptions = {}): string[] {
    if (Array.isArray(batch)) return batch.map((row) => this.decode(row, opts));
    const t = batch as Tensor;
    if (t.ndim !== 2) throw new ValueError(`batchDecode: expected a 2-D tensor, got shape [${t.shape}]`);
    const flat = toIdList(t, 'batchDecode');
    const [B, T] = t.shape as [number, number];
    return Array.from({ length: B }, (_, i) => this.decode(flat.slice(i * T, (i + 1) * T), opts));
  }
}

function toIdList(ids: ArrayLike<number | bigint> | Tensor, what: string): number[] {
  let arr: ArrayLike<number | bigint>;
  if (ids && typeof ids === 'object' && 'dtype' in ids && 'toArray' in ids) {
    const t = ids as Tensor;
    if (t.dtype !== 'i64' && t.dtype !== 'i32') throw new ValueError(`${what}: expected an integer tensor, got ${t.dtype}`);
    arr = t.toArray() as BigInt64Array | Int32Array;
  } else arr = ids as ArrayLike<number | bigint>;
  const out = new Array<number>(arr.length);
  for (let i = 0; i < arr.length; i++) {
    const v = Number(arr[i]);
    if (!Number.isSafeInteger(v) || v < 0) throw new ValueError(`${what}: token id ${String(arr[i])} at ${i} is not a non-negative integer`);
    out[i] = v;
  }
  return out;
}

export class AutoTokenizer {
  /**
   * Loads a tokenizer folder: tokenizer.json (required), tokenizer_config.json and special_tokens_map.json
   * (optional). Slow-only tokenizers (vocab.txt / sentencepiece .model without tokenizer.json) are not
   * supported.
   */
  static fromPretrained(dir: string): PreTrainedTokenizer {
    const tjFile = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(tjFile)) throw new IOError(`${dir}: no tokenizer.json found (only fast tokenizers are supported)`);
    const tj = readJson(tjFile, true)!;
    const config = readJson(path.join(dir, 'tokenizer_config.json'), false) ?? {};
    const stm = readJson(path.join(dir, 'special_tokens_map.json'), false);
    return new PreTrainedTokenizer(tj, config, stm, tjFile);
  }
}
