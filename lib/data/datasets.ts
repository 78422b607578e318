/**
 * Training data from files: plain text packed into causal-LM blocks, and TSV / CSV / JSONL tables mapped to
 * classification examples (GLUE presets for CoLA, SST-2, MRPC, RTE, STS-B). Every problem (missing file or
 * column, empty set, unknown label) is a clear error naming the file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { IOError, ValueError } from '../errors.ts';
import type { Example } from '../train/trainer.ts';

export interface TextTokenizer {
  encode(text: string, o?: { addSpecialTokens?: boolean; truncation?: boolean; maxLength?: number }): number[];
  /** The separator id (BERT-style pairs: [CLS] a [SEP] b [SEP] with token types 0 / 1), when the tokenizer has one. */
  readonly sepTokenId?: number | null;
}

function readFile(file: string): string {
  if (!fs.existsSync(file)) throw new IOError(`${file}: no such file`);
  const s = fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  if (!s.trim()) throw new ValueError(`${file}: the file is empty`);
  return s;
}

/** Packs token ids into consecutive blocks of blockSize (the remainder is dropped), labels = inputs (causal LM). */
export function packBlocks(ids: number[], blockSize: number): Example[] {
  if (!Number.isInteger(blockSize) || blockSize < 2) throw new ValueError(`packBlocks: block size must be an integer >= 2, got ${blockSize}`);
  const out: Example[] = [];
  for (let i = 0; i + blockSize <= ids.length; i += blockSize) {
    const b = ids.slice(i, i + blockSize);
    out.push({ inputIds: b, labels: b });
  }
  return out;
}

/** A text file tokenised (one BOS-less stream, as run_clm does) and packed; `split` keeps a leading or trailing fraction. */
export function textBlocks(file: string, tok: TextTokenizer, blockSize: number, split?: { part: 'head' | 'tail'; fraction: number }): Example[] {
  let text = readFile(file);
  if (split) {
    const cut = Math.floor(text.length * (split.part === 'head' ? split.fraction : 1 - split.fraction));
    text = split.part === 'head' ? text.slice(0, cut) : text.slice(cut);
  }
  const blocks = packBlocks(tok.encode(text, { addSpecialTokens: false }), blockSize);
  if (!blocks.length) throw new ValueError(`${file}: too little text for one block of ${blockSize} tokens`);
  return blocks;
}

/** Rows of a TSV, CSV (RFC 4180 quoting) or JSONL file as records keyed by the header (JSONL: by its keys). */
export function readTable(file: string): Record<string, string>[] {
  const s = readFile(file);
  const ext = path.extname(file).toLowerCase();
  if (ext === '.jsonl' || ext === '.json') {
    return s.split(/\r?\n/).filter((l) => l.trim()).map((l, i) => {
      try {
        const o = JSON.parse(l);
        return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, String(v)]));
      } catch (e) {
        throw new ValueError(`${file}:${i + 1}: invalid JSON (${(e as Error).message})`);
      }
    });
  }
  const rows = ext === '.csv' ? parseCsv(s, file) : s.split(/\r?\n/).filter((l) => l.length).map((l) => l.split('\t'));
  const [header, ...body] = rows;
  if (!header || !body.length) throw new ValueError(`${file}: no data rows`);
  // a row with fewer cells than the header would read its missing cells as empty text or labels
  body.forEach((r, i) => {
    if (r.length < header.length) throw new ValueError(`${file}: row ${i + 1} has ${r.length} cells, the header ${header.length}`);
  });
  return body.map((r) => Object.fromEntries(header.map((h, i) => [h.trim(), r[i]!])));
}

function parseCsv(s: string, file = 'csv'): string[][] {
  const rows: string[][] = [];
  let row: string[] = [], cell = '', q = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (q) {
      if (c === '"' && s[i + 1] === '"') { cell += '"'; i++; } else if (c === '"') q = false; else cell += c;
    } else if (c === '"') q = true;
    else if (c === ',') { row.push(cell); cell = ''; }
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && s[i + 1] === '\n') i++;
      row.push(cell); cell = '';
      if (row.some((x) => x.length)) rows.push(row);
      row = [];
    } else cell += c;
  }
  if (q) throw new ValueError(`${file}: a quoted field is not closed before the end of the file`);
  if (cell.length || row.length) { row.push(cell); rows.push(row); }
  return rows;
}

/** Column mapping of a classification / regression table. */
export interface TableTask {
  text: string;
  textPair?: string;
  label: string;
  /** Label values in id order (classification); omitted = regression (float labels). */
  labels?: string[];
  /** Files without a header (CoLA): column names by position. */
  columns?: string[];
}

export const GLUE_TASKS: Record<string, TableTask> = {
  cola: { text: 'sentence', label: 'label', labels: ['0', '1'], columns: ['source', 'label', 'original_label', 'sentence'] },
  'sst-2': { text: 'sentence', label: 'label', labels: ['0', '1'] },
  mrpc: { text: '#1 String', textPair: '#2 String', label: 'Quality', labels: ['0', '1'] },
  // (HF datasets' glue/rte order: 0 = entailment, 1 = not_entailment, so heads move between the libraries)
  rte: { text: 'sentence1', textPair: 'sentence2', label: 'label', labels: ['entailment', 'not_entailment'] },
  'sts-b': { text: 'sentence1', textPair: 'sentence2', label: 'score' },
};

/** Tokenised examples of a table (pairs are joined as "a b" with the tokenizer's own specials around them). */
export function tableExamples(file: string, task: TableTask, tok: TextTokenizer, maxLen: number): Example[] {
  let rows: Record<string, string>[];
  if (task.columns) {
    const lines = readFile(file).split(/\r?\n/).filter((l) => l.length);
    rows = lines.map((l) => Object.fromEntries(l.split('\t').map((v, i) => [task.columns![i] ?? String(i), v])));
  } else rows = readTable(file);
  if (!rows.length) throw new ValueError(`${file}: the dataset is empty`);
  // every row needs the columns (JSONL rows carry their own keys)
  rows.forEach((r, i) => {
    for (const col of [task.text, task.textPair, task.label].filter((c): c is string => !!c))
      if (!(col in r)) throw new ValueError(`${file}: ${i === 0 ? '' : `row ${i + 1}: `}missing column '${col}' (columns: ${Object.keys(r).join(', ')})`);
  });
  const sep = tok.sepTokenId ?? null;
  return rows.map((r, i) => {
    // truncation keeps the special tokens; pairs follow run_glue's tokenizer(a, b): [CLS] a [SEP] b [SEP] with
    // token types 0 / 1 where the tokenizer has a separator, else the two texts joined by a space
    let ids: number[], types: number[] | undefined;
    if (task.textPair && sep !== null) {
      const a = tok.encode(r[task.text]!, { truncation: true, maxLength: maxLen });
      const b = tok.encode(r[task.textPair]!, { addSpecialTokens: false }).slice(0, Math.max(0, maxLen - a.length - 1));
      ids = [...a, ...b, sep];
      types = [...a.map(() => 0), ...b.map(() => 1), 1];
    } else ids = tok.encode(task.textPair ? `${r[task.text]} ${r[task.textPair]}` : r[task.text]!, { truncation: true, maxLength: maxLen });
    const raw = r[task.label]!.trim();
    let label: number;
    if (task.labels) {
      label = task.labels.indexOf(raw);
      if (label < 0) throw new ValueError(`${file}: row ${i + 1}: label '${raw}' is not one of ${task.labels.join(', ')}`);
    } else {
      label = Number(raw);
      if (raw === '' || !Number.isFinite(label)) throw new ValueError(`${file}: row ${i + 1}: label '${raw}' is not a number`);
    }
    return types ? { inputIds: ids, tokenTypeIds: types, labels: label } : { inputIds: ids, labels: label };
  });
}
