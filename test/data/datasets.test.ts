// Data files: CSV (RFC 4180 quoting), TSV, JSONL and plain text into examples; GLUE presets; clear errors for a
// missing column, an empty file, an unknown label and too little text.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readTable, tableExamples, textBlocks, packBlocks, GLUE_TASKS } from '../../lib/data/datasets.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'data-'));
const write = (name: string, s: string) => { const f = path.join(dir, name); fs.writeFileSync(f, s); return f; };
// a whitespace tokenizer stands in for the real one (the CLI tests use stories260K's tokenizer)
const tok = { encode: (s: string) => s.split(/\s+/).filter(Boolean).map((w) => w.length) };
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

test('CSV with quotes, commas and newlines in fields; TSV; JSONL', (t) => {
  const csv = write('a.csv', 'sentence,label\n"hello, ""world""",1\r\n"two\nlines",0\n');
  t.deepEqual(readTable(csv), [{ sentence: 'hello, "world"', label: '1' }, { sentence: 'two\nlines', label: '0' }]);
  t.deepEqual(readTable(write('a.tsv', 'sentence\tlabel\nhi there\t1\n')), [{ sentence: 'hi there', label: '1' }]);
  t.deepEqual(readTable(write('a.jsonl', '{"sentence": "x y", "label": 0}\n\n{"sentence": "z", "label": 1}\n')), [{ sentence: 'x y', label: '0' }, { sentence: 'z', label: '1' }]);
  const ex = tableExamples(csv, GLUE_TASKS['sst-2']!, tok, 8);
  t.deepEqual(ex.map((e) => e.labels), [1, 0]);
  t.deepEqual(ex[0]!.inputIds, [6, 7]);  // 'hello,' '"world"'
});

test('GLUE presets: CoLA without a header, RTE string labels, STS-B regression', (t) => {
  const cola = write('cola.tsv', 'gj04\t1\t\tOur friends will buy this.\ngj04\t0\t*\tThey drank the pub.\n');
  t.deepEqual(tableExamples(cola, GLUE_TASKS.cola!, tok, 16).map((e) => e.labels), [1, 0]);
  const rte = write('rte.tsv', 'index\tsentence1\tsentence2\tlabel\n0\ta b\tc\tnot_entailment\n1\td\te f\tentailment\n');
  // HF datasets' glue/rte ids: 0 = entailment, 1 = not_entailment
  t.deepEqual(tableExamples(rte, GLUE_TASKS.rte!, tok, 16).map((e) => e.labels), [1, 0]);
  const sts = write('sts.tsv', 'index\tsentence1\tsentence2\tscore\n0\ta\tb\t3.800\n');
  t.deepEqual(tableExamples(sts, GLUE_TASKS['sts-b']!, tok, 16).map((e) => e.labels), [3.8]);
});

test('bad input: missing column, empty file, unknown label, invalid JSONL, too little text', (t) => {
  t.throws(() => tableExamples(write('m.csv', 'text,label\nhello,1\n'), GLUE_TASKS['sst-2']!, tok, 8), { message: /missing column 'sentence' \(columns: text, label\)/ });
  t.throws(() => tableExamples(write('e.tsv', '   \n'), GLUE_TASKS['sst-2']!, tok, 8), { message: /the file is empty/ });
  t.throws(() => tableExamples(write('h.tsv', 'sentence\tlabel\n'), GLUE_TASKS['sst-2']!, tok, 8), { message: /no data rows/ });
  t.throws(() => tableExamples(write('l.tsv', 'sentence\tlabel\nok\t7\n'), GLUE_TASKS['sst-2']!, tok, 8), { message: /row 1: label '7' is not one of 0, 1/ });
  t.throws(() => readTable(write('j.jsonl', '{"a": 1}\n{oops\n')), { message: /j\.jsonl:2: invalid JSON/ });
  t.throws(() => textBlocks(write('s.txt', 'a b c'), tok, 8), { message: /too little text for one block of 8 tokens/ });
  t.throws(() => readTable(path.join(dir, 'nope.csv')), { message: /no such file/ });
  // holes in a table are errors naming the row, not empty text or a label of 0
  t.throws(() => tableExamples(write('sts2.tsv', 'index\tsentence1\tsentence2\tscore\n0\ta\tb\t3.5\n1\tc\td\t\n'), GLUE_TASKS['sts-b']!, tok, 16), { message: /row 2: label '' is not a number/ });
  t.throws(() => tableExamples(write('short.tsv', 'sentence\tlabel\nok\t1\nshort\n'), GLUE_TASKS['sst-2']!, tok, 8), { message: /row 2 has 1 cells, the header 2/ });
  t.throws(() => readTable(write('q.csv', 'sentence,label\n"unclosed,1\nnext,0\n')), { message: /quoted field is not closed/ });
  t.throws(() => tableExamples(write('p.jsonl', '{"sentence1": "a", "sentence2": "b", "label": "entailment"}\n{"sentence1": "c", "label": "entailment"}\n'), GLUE_TASKS.rte!, tok, 16), { message: /row 2: missing column 'sentence2'/ });
  t.throws(() => tableExamples(write('nl.jsonl', '{"sentence": "a", "label": "1"}\n{"sentence": "b"}\n'), GLUE_TASKS['sst-2']!, tok, 8), { message: /row 2: missing column 'label'/ });
});

test('plain text packs into fixed blocks (labels = inputs); head/tail splits', (t) => {
  const blocks = packBlocks(Array.from({ length: 10 }, (_, i) => i), 4);
  t.deepEqual(blocks.map((b) => b.inputIds), [[0, 1, 2, 3], [4, 5, 6, 7]]);
  t.deepEqual(blocks[0]!.labels, [0, 1, 2, 3]);
  const f = write('t.txt', Array.from({ length: 100 }, (_, i) => `w${'x'.repeat(i % 5)}`).join(' '));
  const head = textBlocks(f, tok, 5, { part: 'head', fraction: 0.9 }), tail = textBlocks(f, tok, 5, { part: 'tail', fraction: 0.1 });
  t.is(head.length, 18);
  t.is(tail.length, 2);
});
