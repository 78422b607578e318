// The adapters-node CLI: a short causal-LM run on the real stories260K model (when ../shared is present),
// classification on a small TSV, and clear errors with exit codes for bad flags and files.
import test from 'ava';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../../lib/cli.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const shared = path.resolve(root, process.env.ADAPTERS_SHARED ?? '../shared');
const model = path.join(shared, 'data', 'stories260K-hf');
const have = fs.existsSync(path.join(model, 'config.json'));
const run = async (args: string[]) => {
  const out: string[] = [], err: string[] = [];
  const code = await main(args, { out: (s) => out.push(s), err: (s) => err.push(s) });
  return { code, out, err: err.join('\n') };
};

test.serial('--help and usage errors (exit 2), missing files (exit 1)', async (t) => {
  const h = await run(['--help']);
  t.is(h.code, 0);
  t.regex(h.out.join(''), /adapters-node train/);
  const bad = await run(['train', '--model', 'x', '--bogus', '1']);
  t.is(bad.code, 2);
  t.regex(bad.err, /Unknown option '--bogus'/);
  t.is((await run(['frobnicate'])).code, 2);
  const optim = await run(['train', '--model', 'x', '--optim', 'lamb']);
  t.is(optim.code, 2);
  t.regex(optim.err, /--optim must be adamw_torch, adafactor or sgd, got 'lamb'/);
  const steps = await run(['train', '--model', 'x', '--max-steps', 'many']);
  t.is(steps.code, 1);  // the missing model folder is found before the flag value is read
  t.regex(steps.err, /x/);
  // a flag the command does not read is a usage error
  const gen = await run(['generate', '--model', 'x', '--prompt', 'hi', '--lr', 'abc', '--device', 'tpu']);
  t.is(gen.code, 2);
  t.regex(gen.err, /generate does not take --lr, --device/);
  const nomodel = await run(['summary', '--model', '/nonexistent/model']);
  t.is(nomodel.code, 1);
  t.regex(nomodel.err, /nonexistent/);
});

if (!have) test('CLI runs on stories260K skipped: ../shared not found (set ADAPTERS_SHARED)', (t) => t.pass());
else {
  test.serial('train --task causal-lm on stories260K with LoRA: eval loss falls; --json prints the results last', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cli-'));
    const text = fs.readFileSync(path.join(shared, 'data', 'tinyshakespeare', 'input.txt'), 'utf8').slice(0, 60000);
    fs.writeFileSync(path.join(dir, 'train.txt'), text);
    const r = await run(['train', '--model', model, '--task', 'causal-lm', '--train', path.join(dir, 'train.txt'), '--adapter', 'lora[r=8, alpha=16]',
      '--max-steps', '12', '--batch-size', '4', '--seq-len', '64', '--lr', '5e-3', '--output', path.join(dir, 'out'), '--json']);
    t.is(r.code, 0, r.err);
    const res = JSON.parse(r.out.at(-1)!);
    for (const k of ['eval_loss_before', 'eval_loss_after', 'trainable_params', 'tokens_per_second']) t.is(typeof res[k], 'number', k);
    t.true(res.eval_loss_after < res.eval_loss_before - 0.2, `${res.eval_loss_before} → ${res.eval_loss_after}`);
    t.true(Math.abs(res.eval_perplexity_after - Math.exp(res.eval_loss_after)) < 1e-9 * res.eval_perplexity_after);
    t.true(fs.existsSync(path.join(dir, 'out', 'adapter_config.json')));
    const ev = await run(['eval', '--model', model, '--task', 'causal-lm', '--validation', path.join(dir, 'train.txt'), '--seq-len', '64', '--max-eval', '8',
      '--adapter-dir', path.join(dir, 'out'), '--json']);
    t.is(ev.code, 0, ev.err);
    t.true(JSON.parse(ev.out.at(-1)!).perplexity > 1);
    // checkpoints + exact resume through the CLI, with bf16 and gradient checkpointing
    const common = ['train', '--model', model, '--task', 'causal-lm', '--train', path.join(dir, 'train.txt'), '--adapter', 'seq_bn', '--batch-size', '4',
      '--seq-len', '32', '--lr', '5e-3', '--max-eval', '4', '--bf16', '--gradient-checkpointing', '--json'];
    const full = await run([...common, '--max-steps', '6', '--save-steps', '3', '--output', path.join(dir, 'o1'), '--log', path.join(dir, 'log.jsonl')]);
    t.is(full.code, 0, full.err);
    t.true(fs.existsSync(path.join(dir, 'o1.checkpoints', 'checkpoint-3', 'trainer_state.json')));
    const resumed = await run([...common, '--max-steps', '6', '--resume', path.join(dir, 'o1.checkpoints', 'checkpoint-3'), '--output', path.join(dir, 'o2')]);
    t.is(resumed.code, 0, resumed.err);
    t.is(JSON.parse(resumed.out.at(-1)!).eval_loss_after, JSON.parse(full.out.at(-1)!).eval_loss_after);
    t.true(fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8').split('\n').filter(Boolean).every((l) => 'step' in JSON.parse(l)));
    t.is((await run([...common, '--save-steps', '2'])).code, 2);
    const g = await run(['generate', '--model', model, '--prompt', 'Once upon a time', '--max-new-tokens', '8', '--json']);
    t.is(g.code, 0, g.err);
    t.regex(JSON.parse(g.out[0]!).text, /^Once upon a time/);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test.serial('classification from a TSV; a missing column is a clear error', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cli-'));
    const rows = ['sentence\tlabel', ...Array.from({ length: 16 }, (_, i) => `${i % 2 ? 'a happy cat' : 'a sad dog'} number ${i}\t${i % 2}`)];
    fs.writeFileSync(path.join(dir, 'd.tsv'), rows.join('\n'));
    const ok = await run(['train', '--model', model, '--task', 'classification', '--glue', 'sst-2', '--train', path.join(dir, 'd.tsv'), '--validation', path.join(dir, 'd.tsv'),
      '--adapter', 'seq_bn', '--max-steps', '4', '--batch-size', '8', '--json']);
    t.is(ok.code, 0, ok.err);
    t.is(typeof JSON.parse(ok.out.at(-1)!).eval_accuracy_after, 'number');
    fs.writeFileSync(path.join(dir, 'bad.tsv'), 'text\tlabel\nhello\t1\n');
    const bad = await run(['train', '--model', model, '--task', 'classification', '--glue', 'sst-2', '--train', path.join(dir, 'bad.tsv'), '--validation', path.join(dir, 'bad.tsv'),
      '--adapter', 'seq_bn', '--max-steps', '1']);
    t.is(bad.code, 1);
    t.regex(bad.err, /missing column 'sentence'/);
    // named classes: the head stores them (id2label), and eval on a file holding only some of them maps each label to
    // the id it had in training (the validation file alone would renumber them)
    const named = ['text\tlabel', ...Array.from({ length: 18 }, (_, i) => `word${i % 3} ${'abc'[i % 3]} item ${i}\t${'abc'[i % 3]}`)];
    fs.writeFileSync(path.join(dir, 'n.tsv'), named.join('\n'));
    const tr = await run(['train', '--model', model, '--task', 'classification', '--train', path.join(dir, 'n.tsv'), '--validation', path.join(dir, 'n.tsv'),
      '--adapter', 'seq_bn', '--max-steps', '2', '--batch-size', '6', '--output', path.join(dir, 'out'), '--json']);
    t.is(tr.code, 0, tr.err);
    const head = JSON.parse(fs.readFileSync(path.join(dir, 'out', 'head_config.json'), 'utf8'));
    t.deepEqual(head.config.label2id, { a: 0, b: 1, c: 2 });
    const ac = named.filter((l, i) => i === 0 || !l.endsWith('\tb'));
    fs.writeFileSync(path.join(dir, 'ac.tsv'), ac.join('\n'));
    const full = await run(['eval', '--model', model, '--task', 'classification', '--validation', path.join(dir, 'n.tsv'), '--adapter-dir', path.join(dir, 'out'), '--json']);
    const part = await run(['eval', '--model', model, '--task', 'classification', '--validation', path.join(dir, 'ac.tsv'), '--adapter-dir', path.join(dir, 'out'), '--json']);
    t.is(full.code, 0, full.err);
    t.is(part.code, 0, part.err);
    t.is(typeof JSON.parse(part.out.at(-1)!).eval_accuracy, 'number');
    fs.rmSync(dir, { recursive: true, force: true });
  });
}
