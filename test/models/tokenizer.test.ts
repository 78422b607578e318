// AutoTokenizer (lib/tokenizers/auto.ts).
// * stories260K-hf (a Llama sentencepiece-BPE tokenizer, shared data): the prompt of
//   stories260K/reference_outputs.json must encode to its `prompt_ids_with_bos` (the tokenizer adds BOS
//   itself) and decode back; padding needs a pad token (Llama has none: transformers raises too).
// * a tiny WordPiece/BERT tokenizer written here: [CLS]/[SEP] templates, truncation that keeps them,
//   right/left padding, attention masks, tensors. Expected ids are worked out by hand from the vocab below
//   (transformers' fast tokenizers: truncation happens before the template adds [CLS]/[SEP]; max_length
//   without `truncation` turns truncation on; padding=True pads to the longest sequence).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { FormatError, IOError, ValueError, tensor } from '../../lib/index.ts';
import { AutoTokenizer, PreTrainedTokenizer } from '../../lib/tokenizers/auto.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const shared = path.resolve(repo, process.env.ADAPTERS_SHARED ?? '../shared');
const storiesDir = path.join(shared, 'data', 'stories260K-hf');
const haveStories = fs.existsSync(path.join(storiesDir, 'tokenizer.json'));
const storiesTest = haveStories ? test : test.skip;
if (!haveStories) console.log(`tokenizer tests: ${storiesDir} not found, stories260K cases skipped (set ADAPTERS_SHARED)`);

// ---- stories260K (Llama) ----------------------------------------------------------------------------

storiesTest('stories260K: the reference prompt encodes to prompt_ids_with_bos and decodes back', (t) => {
  const ref = JSON.parse(fs.readFileSync(path.join(shared, 'data', 'stories260K', 'reference_outputs.json'), 'utf8'));
  const tok = AutoTokenizer.fromPretrained(storiesDir);
  t.is(tok.bosTokenId, 1);
  t.is(tok.eosTokenId, 2);
  t.is(tok.unkTokenId, 0);
  t.is(tok.padTokenId, null, 'pad_token is null in tokenizer_config.json');
  t.is(tok.vocabSize, 512);
  t.is(tok.length, 512);
  t.is(tok.modelMaxLength, 512);
  const ids = tok.encode(ref.prompt);
  t.deepEqual(ids, ref.prompt_ids_with_bos, 'BOS is added by the tokenizer (add_bos_token)');
  t.deepEqual(tok.encode(ref.prompt, { addSpecialTokens: false }), ref.prompt_ids_with_bos.slice(1));
  t.is(tok.decode(ids, { skipSpecialTokens: true }), ref.prompt);
  t.is(tok.decode(ids), `<s> ${ref.prompt}`);
  // the greedy continuation decodes to the reference text too (from BOS on)
  t.is(tok.decode(ref.greedy_from_bos_ids, { skipSpecialTokens: true }), ref.greedy_from_bos_text);
  // byte fallback round trip of text outside the 512-piece vocabulary
  for (const s of ['ünïcödé 😀 ok', '  two  spaces', 'tab\tand\nnewline', ''])
    t.is(tok.decode(tok.encode(s), { skipSpecialTokens: true }), s, JSON.stringify(s));
  t.deepEqual(tok.encode(''), [1]);
  t.is(tok.decode([]), '');
  const ids3 = tensor(BigInt64Array.from([1n, 403n, 407n]), [3]);
  t.is(tok.decode(ids3), '<s> Once upon');
  ids3.dispose();
});

storiesTest('stories260K: batch padding needs a pad token; then pads right or left with masks', (t) => {
  const tok = AutoTokenizer.fromPretrained(storiesDir);
  const texts = ['Once upon a time', 'Lily'];
  t.deepEqual(tok.encode(texts[0]!), [1, 403, 407, 261, 378]);
  t.deepEqual(tok.encode(texts[1]!), [1, 317]);
  // no padding requested: ragged lists, all-ones masks
  t.deepEqual(tok.encodeBatch(texts), { inputIds: [[1, 403, 407, 261, 378], [1, 317]], attentionMask: [[1, 1, 1, 1, 1], [1, 1]] });
  t.throws(() => tok.encodeBatch(texts, { padding: true }), { instanceOf: ValueError, message: /no padding token/ });
  t.throws(() => tok.encodeBatch(texts, { returnTensors: true }), { instanceOf: ValueError, message: /different lengths/ });
  tok.padToken = tok.eosToken;
  t.is(tok.padTokenId, 2);
  t.deepEqual(tok.encodeBatch(texts, { padding: true }), {
    inputIds: [[1, 403, 407, 261, 378], [1, 317, 2, 2, 2]],
    attentionMask: [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]],
  });
  t.deepEqual(tok.encodeBatch(texts, { padding: true, paddingSide: 'left' }), {
    inputIds: [[1, 403, 407, 261, 378], [2, 2, 2, 1, 317]],
    attentionMask: [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]],
  });
  // truncation keeps BOS; left truncation drops from the start of the text
  t.deepEqual(tok.encode('Once upon a time', { maxLength: 3 }), [1, 403, 407]);
  t.deepEqual(tok.encodeBatch(['Once upon a time'], { maxLength: 3, truncationSide: 'left' }).inputIds, [[1, 261, 378]]);
  const enc = tok.encodeBatch(texts, { padding: 'max_length', maxLength: 4, returnTensors: true });
  t.deepEqual(enc.inputIds.shape, [2, 4]);
  t.is(enc.inputIds.dtype, 'i64');
  t.deepEqual(enc.inputIds.tolist(), [[1, 403, 407, 261], [1, 317, 2, 2]]);
  t.deepEqual(enc.attentionMask.tolist(), [[1, 1, 1, 1], [1, 1, 0, 0]]);
  t.deepEqual(tok.batchDecode(enc.inputIds, { skipSpecialTokens: true }), ['Once upon a', 'Lily']);
  enc.inputIds.dispose();
  enc.attentionMask.dispose();
  // misspelled option values are errors, not silently the default
  t.throws(() => tok.encodeBatch(texts, { padding: 'max-length' as never, maxLength: 4 }), { instanceOf: ValueError, message: /padding must be one of/ });
  t.throws(() => tok.encodeBatch(texts, { padding: true, paddingSide: 'Left' as never }), { instanceOf: ValueError, message: /paddingSide/ });
  t.throws(() => tok.encodeBatch(texts, { maxLength: 2, truncationSide: 'middle' as never }), { instanceOf: ValueError, message: /truncationSide/ });
});

storiesTest('stories260K: add_bos_token / add_eos_token / padding_side from tokenizer_config.json', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-llama-'));
  try {
    fs.copyFileSync(path.join(storiesDir, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    const cfg = JSON.parse(fs.readFileSync(path.join(storiesDir, 'tokenizer_config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, add_eos_token: true, pad_token: '<unk>', padding_side: 'left' }));
    const tok = AutoTokenizer.fromPretrained(dir);
    t.deepEqual(tok.encode('Lily'), [1, 317, 2], 'LlamaTokenizerFast rebuilds its template: <s> $A </s>');
    t.deepEqual(tok.encode('Once upon a time', { maxLength: 4 }), [1, 403, 407, 2]);
    t.deepEqual(tok.encodeBatch(['Lily', 'Once upon a time'], { padding: true }), {
      inputIds: [[0, 0, 0, 1, 317, 2], [1, 403, 407, 261, 378, 2]],
      attentionMask: [[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]],
    });
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, add_bos_token: false }));
    t.deepEqual(AutoTokenizer.fromPretrained(dir).encode('Lily'), [317]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---- a tiny BERT WordPiece tokenizer --------------------------------------------------------------

const BERT_VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'hello', 'world', 'the', 'cat', 'sat', '##s', 'on', 'mat', ',', '.', 'un', '##believ', '##able'];
const V = Object.fromEntries(BERT_VOCAB.map((w, i) => [w, i]));

function writeBert(dir: string, config: Record<string, unknown> = {}): void {
  const added = BERT_VOCAB.slice(0, 5).map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: '[SEP]', type_id: 1 } }],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [2], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [3], tokens: ['[SEP]'] } },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: V },
  };
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson));
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({
    tokenizer_class: 'BertTokenizer', do_lower_case: true, model_max_length: 8, clean_up_tokenization_spaces: true,
    cls_token: '[CLS]', sep_token: '[SEP]', pad_token: '[PAD]', unk_token: '[UNK]', mask_token: '[MASK]',
    added_tokens_decoder: Object.fromEntries(added.map((a) => [String(a.id), { ...a, id: undefined }])),
    ...config,
  }));
}

function withBert<T>(config: Record<string, unknown>, fn: (tok: PreTrainedTokenizer) => T): T {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-bert-'));
  try {
    writeBert(dir, config);
    return fn(AutoTokenizer.fromPretrained(dir));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const TEXTS = ['Hello world.', 'The cats sat on the mat', 'xyz'];
// [CLS] hello world . [SEP] / [CLS] the cat ##s sat on the mat [SEP] / [CLS] [UNK] [SEP]
const IDS = [[2, 5, 6, 14, 3], [2, 7, 8, 10, 9, 11, 7, 12, 3], [2, 1, 3]];

test('bert: WordPiece ids with [CLS]/[SEP], special token ids, decode', (t) => {
  withBert({}, (tok) => {
    t.deepEqual(TEXTS.map((s) => tok.encode(s, { truncation: false })), IDS);
    t.deepEqual(tok.encode('UNBELIEVABLE, hello', { truncation: false }), [2, 15, 16, 17, 13, 5, 3]);
    t.deepEqual(tok.encode('Hello world.', { addSpecialTokens: false }), [5, 6, 14]);
    t.is(tok.padTokenId, 0);
    t.is(tok.clsTokenId, 2);
    t.is(tok.sepTokenId, 3);
    t.is(tok.maskTokenId, 4);
    t.is(tok.bosTokenId, null);
    t.is(tok.vocabSize, BERT_VOCAB.length);
    t.is(tok.decode(IDS[0]!), '[CLS] hello world. [SEP]');
    t.is(tok.decode(IDS[0]!, { skipSpecialTokens: true }), 'hello world.');
    t.deepEqual(tok.batchDecode(IDS, { skipSpecialTokens: true }), ['hello world.', 'the cats sat on the mat', '']);
    t.is(tok.decode([2, 15, 16, 17, 3], { skipSpecialTokens: true }), 'unbelievable');
  });
});

test('bert: padding=true pads to the longest with [PAD] and zero masks (right)', (t) => {
  withBert({}, (tok) => {
    const enc = tok.encodeBatch(TEXTS, { padding: true, truncation: false });
    t.deepEqual(enc.inputIds, [
      [2, 5, 6, 14, 3, 0, 0, 0, 0],
      [2, 7, 8, 10, 9, 11, 7, 12, 3],
      [2, 1, 3, 0, 0, 0, 0, 0, 0],
    ]);
    t.deepEqual(enc.attentionMask, [
      [1, 1, 1, 1, 1, 0, 0, 0, 0],
      [1, 1, 1, 1, 1, 1, 1, 1, 1],
      [1, 1, 1, 0, 0, 0, 0, 0, 0],
    ]);
  });
});

test('bert: truncation keeps [CLS]/[SEP]; maxLength alone turns truncation on; model_max_length is the default', (t) => {
  withBert({}, (tok) => {
    t.deepEqual(tok.encodeBatch(TEXTS, { padding: true, maxLength: 6 }), {
      inputIds: [[2, 5, 6, 14, 3, 0], [2, 7, 8, 10, 9, 3], [2, 1, 3, 0, 0, 0]],
      attentionMask: [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]],
    });
    // truncation: true without maxLength uses model_max_length (8)
    t.deepEqual(tok.encode(TEXTS[1]!, { truncation: true }), [2, 7, 8, 10, 9, 11, 7, 3]);
    // without truncation options nothing is cut, even past model_max_length (as in transformers)
    t.deepEqual(tok.encode(TEXTS[1]!), IDS[1]);
    // max_length smaller than the template: only the special tokens remain (Rust tokenizers do the same)
    t.deepEqual(tok.encode(TEXTS[0]!, { maxLength: 1 }), [2, 3]);
    // padding 'max_length' without truncation leaves longer sequences alone
    const enc = tok.encodeBatch(TEXTS, { padding: 'max_length', maxLength: 7, truncation: false });
    t.deepEqual(enc.inputIds, [[2, 5, 6, 14, 3, 0, 0], IDS[1], [2, 1, 3, 0, 0, 0, 0]]);
    t.deepEqual(enc.attentionMask, [[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0]]);
    t.throws(() => tok.encodeBatch(TEXTS, { padding: 'max_length', maxLength: 7, truncation: false, returnTensors: true }), { instanceOf: ValueError });
    // 'max_length' without maxLength pads (and here truncates) to model_max_length
    const enc8 = tok.encodeBatch(TEXTS, { padding: 'max_length', truncation: true, returnTensors: true });
    t.deepEqual(enc8.inputIds.shape, [3, 8]);
    t.deepEqual(enc8.inputIds.tolist(), [[2, 5, 6, 14, 3, 0, 0, 0], [2, 7, 8, 10, 9, 11, 7, 3], [2, 1, 3, 0, 0, 0, 0, 0]]);
    t.deepEqual(enc8.attentionMask.tolist(), [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0, 0]]);
    enc8.inputIds.dispose();
    enc8.attentionMask.dispose();
  });
});

test('bert: padding_side left from tokenizer_config.json', (t) => {
  withBert({ padding_side: 'left' }, (tok) => {
    t.is(tok.paddingSide, 'left');
    const enc = tok.encodeBatch(TEXTS, { padding: true, returnTensors: true });
    t.is(enc.inputIds.dtype, 'i64');
    t.is(enc.attentionMask.dtype, 'i64');
    t.deepEqual(enc.inputIds.tolist(), [
      [0, 0, 0, 0, 2, 5, 6, 14, 3],
      [2, 7, 8, 10, 9, 11, 7, 12, 3],
      [0, 0, 0, 0, 0, 0, 2, 1, 3],
    ]);
    t.deepEqual(enc.attentionMask.tolist(), [
      [0, 0, 0, 0, 1, 1, 1, 1, 1],
      [1, 1, 1, 1, 1, 1, 1, 1, 1],
      [0, 0, 0, 0, 0, 0, 1, 1, 1],
    ]);
    t.deepEqual(tok.batchDecode(enc.inputIds, { skipSpecialTokens: true }), ['hello world.', 'the cats sat on the mat', '']);
    enc.inputIds.dispose();
    enc.attentionMask.dispose();
  });
});

test('bert: special_tokens_map.json overrides legacy configs (without added_tokens_decoder)', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-bert-'));
  try {
    writeBert(dir, { added_tokens_decoder: undefined, pad_token: '[PAD]' });
    fs.writeFileSync(path.join(dir, 'special_tokens_map.json'), JSON.stringify({ pad_token: { content: '[MASK]', lstrip: false } }));
    t.is(AutoTokenizer.fromPretrained(dir).padTokenId, 4);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('errors: missing folder, invalid JSON, bad ids', (t) => {
  t.throws(() => AutoTokenizer.fromPretrained(path.join(os.tmpdir(), 'no-such-tokenizer-dir')), { instanceOf: IOError });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-bad-'));
  try {
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{ not json');
    t.throws(() => AutoTokenizer.fromPretrained(dir), { instanceOf: FormatError, message: /tokenizer\.json/ });
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'NoSuchModel' } }));
    t.throws(() => AutoTokenizer.fromPretrained(dir), { instanceOf: FormatError });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  withBert({}, (tok) => {
    t.throws(() => tok.decode([1.5]), { instanceOf: ValueError });
    t.throws(() => tok.decode([-1]), { instanceOf: ValueError });
    t.throws(() => tok.encodeBatch(TEXTS, { maxLength: -2 }), { instanceOf: ValueError });
    t.throws(() => tok.encodeBatch('abc' as unknown as string[]), { instanceOf: ValueError });
  });
});
