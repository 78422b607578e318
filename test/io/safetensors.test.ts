// safetensors reader/writer (lib/io/safetensors.ts) and checkpoint robustness:
// * round trips of every dtype (incl. 0-d and empty tensors) and hand-written F64;
// * malformed files: each raises FormatError (or IOError) naming the file and, where there is one, the tensor;
// * a fuzz loop of 12,000 mutated headers (byte flips, truncations, JSON field mutations) through
//   parseHeader, and readTensor for those that validate: only AdaptersError subclasses may come out;
// * AutoAdapterModel.fromPretrained on tampered copies of the reference BERT (missing tensor, wrong shape)
//   and on a sharded copy (model.safetensors.index.json + 2 shards) that must give the same output.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { AdaptersError, FormatError, IOError, ShapeError, ops, tensor, type Tensor } from '../../lib/index.ts';
import { loadSafetensors, parseHeader, readSafetensorsHeader, readTensor, saveSafetensors } from '../../lib/io/safetensors.ts';
import { AutoAdapterModel } from '../../lib/models/auto.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const shared = path.resolve(repo, process.env.ADAPTERS_SHARED ?? '../shared');
const BERT_DIR = path.join(shared, 'reference', 'models', 'bert');
const BERT_BASE = path.join(shared, 'reference', 'bert', 'base.safetensors');
const haveBert = fs.existsSync(path.join(BERT_DIR, 'model.safetensors')) && fs.existsSync(BERT_BASE);
const bertTest = haveBert ? test : test.skip;
if (!haveBert) test('reference data', (t) => { t.log(`skipped: ${BERT_DIR} not found (set ADAPTERS_SHARED)`); t.pass(); });

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'st-test-'));
test.after.always(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let tmpCount = 0;
const tmpFile = (name = 'x.safetensors') => path.join(fs.mkdtempSync(path.join(tmpRoot, `${tmpCount++}-`)), name);

const disposeAll = (m: Map<string, Tensor>): void => { for (const t of m.values()) t.dispose(); };
const raw = (t: Tensor): Buffer => Buffer.from(t.handle.toBuffer());

/** A safetensors file from a header object and data bytes (no validation: for malformed cases). */
function writeRaw(file: string, header: unknown, data: Uint8Array = new Uint8Array(0), headerText?: string): void {
  const h = Buffer.from(headerText ?? JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  fs.writeFileSync(file, Buffer.concat([len, h, data]));
}

// ---- round trips ----------------------------------------------------------------------------------

test('round trip of every dtype, 0-d and empty tensors, metadata', (t) => {
  const src = new Map<string, Tensor>([
    ['f32', tensor([[1.5, -2, 3.25], [0, -0, 1e-30]])],
    ['f16', tensor([0.5, -1.25, 65504, 6e-5], [4], { dtype: 'f16' })],
    ['bf16', tensor([[1, -3.5], [1e30, -1e-30]], undefined, { dtype: 'bf16' })],
    ['i64', tensor(BigInt64Array.from([-(2n ** 62n), 0n, 2n ** 62n + 7n]), [3])],
    ['i32', tensor(Int32Array.from([-(2 ** 31), 5, 2 ** 31 - 1]), [1, 3])],
    ['bool', tensor([true, false, true, true], [2, 2])],
    ['scalar', tensor(Float32Array.from([7.5]), [])],
    ['empty', tensor(new Float32Array(0), [0, 4])],
    ['empty_i64', tensor(new BigInt64Array(0), [2, 0])],
    ['a.nested.name', tensor([1, 2, 3])],
  ]);
  const file = tmpFile();
  saveSafetensors(file, src, { format: 'pt', note: 'hi' });
  const h = readSafetensorsHeader(file);
  t.deepEqual(h.metadata, { format: 'pt', note: 'hi' });
  t.deepEqual([...h.entries.keys()].sort(), [...src.keys()].sort());
  t.is((fs.readFileSync(file).readBigUInt64LE(0) + 8n) % 8n, 0n, 'data starts 8-byte aligned');
  const back = loadSafetensors(file);
  for (const [name, want] of src) {
    const got = back.get(name)!;
    t.is(got.dtype, want.dtype, name);
    t.deepEqual(got.shape, want.shape, name);
    t.true(raw(got).equals(raw(want)), `${name}: bytes differ`);
  }
  t.is(back.get('scalar')!.item(), 7.5);
  // floats converted on load when asked
  const asBf16 = loadSafetensors(file, { dtype: 'bf16' });
  t.is(asBf16.get('f32')!.dtype, 'bf16');
  t.is(asBf16.get('i64')!.dtype, 'i64', 'integers are never converted');
  disposeAll(asBf16);
  disposeAll(back);
  disposeAll(src);
});

test('F64 tensors (written by hand) are read as f32', (t) => {
  const file = tmpFile();
  const data = new Uint8Array(Float64Array.from([1.5, -2.25, 1e-3]).buffer);
  writeRaw(file, { x: { dtype: 'F64', shape: [3], data_offsets: [0, 24] } }, data);
  const m = loadSafetensors(file);
  t.is(m.get('x')!.dtype, 'f32');
  t.deepEqual([...(m.get('x')!.toArray() as Float32Array)], [...Float32Array.from([1.5, -2.25, 1e-3])]);
  disposeAll(m);
});

// ---- malformed files ----------------------------------------------------------------------------

test('malformed files raise FormatError naming the file and the tensor', (t) => {
  const f32 = (n: number) => new Uint8Array(n * 4);
  const cases: [string, () => string, RegExp][] = [
    ['file < 8 bytes', () => { const f = tmpFile(); fs.writeFileSync(f, Buffer.from([1, 2, 3])); return f; }, /too small/],
    ['empty file', () => { const f = tmpFile(); fs.writeFileSync(f, ''); return f; }, /too small/],
    ['header length beyond the file', () => {
      const f = tmpFile();
      const b = Buffer.alloc(16);
      b.writeBigUInt64LE(1000n);
      fs.writeFileSync(f, b);
      return f;
    }, /header length 1000 goes beyond the end of the file/],
    ['header length of 2^64-1', () => {
      const f = tmpFile();
      const b = Buffer.alloc(16, 0xff);
      fs.writeFileSync(f, b);
      return f;
    }, /goes beyond the end of the file/],
    ['invalid JSON', () => { const f = tmpFile(); writeRaw(f, null, f32(1), '{"w": {"dtype": "F32", '); return f; }, /not valid JSON/],
    ['header not an object', () => { const f = tmpFile(); writeRaw(f, [1, 2]); return f; }, /must be a JSON object/],
    ['entry not an object', () => { const f = tmpFile(); writeRaw(f, { w: 3 }); return f; }, /entry 'w' must be an object/],
    ['unknown dtype', () => { const f = tmpFile(); writeRaw(f, { w: { dtype: 'C64', shape: [1], data_offsets: [0, 8] } }, f32(2)); return f; }, /tensor 'w' has unknown or unsupported dtype "C64"/],
    ['negative dims', () => { const f = tmpFile(); writeRaw(f, { w: { dtype: 'F32', shape: [-1, 2], data_offsets: [0, 8] } }, f32(2)); return f; }, /tensor 'w' has an invalid shape \[-1,2\]/],
    ['fractional dims', () => { const f = tmpFile(); writeRaw(f, { w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 8] } }, f32(2)); return f; }, /tensor 'w' has an invalid shape/],
    ['size/shape mismatch', () => { const f = tmpFile(); writeRaw(f, { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }, f32(6)); return f; }, /tensor 'w' of shape \[2,3\] F32 needs 24 bytes but data_offsets span 20/],
    ['out-of-range offsets', () => { const f = tmpFile(); writeRaw(f, { w: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, f32(4)); return f; }, /tensor 'w' data_offsets \[8, 24\] reach beyond the data \(16 bytes\)/],
    ['offsets in the wrong order', () => { const f = tmpFile(); writeRaw(f, { w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, f32(4)); return f; }, /tensor 'w' has data_offsets \[8, 4\] in the wrong order/],
    ['negative offsets', () => { const f = tmpFile(); writeRaw(f, { w: { dtype: 'F32', shape: [1], data_offsets: [-4, 0] } }, f32(4)); return f; }, /tensor 'w' has invalid data_offsets/],
    ['overlapping offsets', () => {
      const f = tmpFile();
      writeRaw(f, { a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, f32(4));
      return f;
    }, /tensors 'a' and 'b' overlap/],
    ['truncated file (valid file cut short)', () => {
      const f = tmpFile();
      const src = tensor(new Float32Array(64), [8, 8]);
      saveSafetensors(f, { w: src });
      src.dispose();
      const b = fs.readFileSync(f);
      fs.writeFileSync(f, b.subarray(0, b.length - 10));
      return f;
    }, /tensor 'w' data_offsets \[0, 256\] reach beyond the data \(246 bytes\)/],
    ['truncated inside the header', () => {
      const f = tmpFile();
      const src = tensor([1, 2]);
      saveSafetensors(f, { w: src });
      src.dispose();
      fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 20));
      return f;
    }, /goes beyond the end of the file/],
    ['bad __metadata__', () => { const f = tmpFile(); writeRaw(f, { __metadata__: { a: 1 } }); return f; }, /__metadata__\.a must be a string/],
  ];
  for (const [what, make, re] of cases) {
    const f = make();
    const e = t.throws(() => loadSafetensors(f), { instanceOf: FormatError, message: re }, what);
    if (e) t.true(e.message.includes(f), `${what}: the error names the file`);
  }
  // a missing file and a folder are IOErrors
  t.throws(() => loadSafetensors(path.join(tmpRoot, 'nope.safetensors')), { instanceOf: IOError });
  // asking for a tensor that isn't there names it
  const f = tmpFile();
  const one = tensor([1]);
  saveSafetensors(f, { w: one });
  one.dispose();
  t.throws(() => readTensor(readSafetensorsHeader(f), 'missing.weight'), { instanceOf: FormatError, message: /no tensor named 'missing\.weight'/ });
});

// ---- fuzz -----------------------------------------------------------------------------------------

/** xorshift32: deterministic, so a failure can be replayed from its iteration number. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

test('fuzz: 12,000 mutated headers never crash and only raise AdaptersError', (t) => {
  const base = new Map<string, Tensor>([
    ['a', tensor([[1, 2, 3], [4, 5, 6]])],
    ['b', tensor([1, 2], [2], { dtype: 'bf16' })],
    ['c', tensor(BigInt64Array.from([1n, -2n]), [2])],
    ['d', tensor([true, false, true])],
    ['e', tensor(Float32Array.from([2]), [])],
    ['f', tensor(new Float32Array(0), [0])],
  ]);
  const file0 = tmpFile();
  saveSafetensors(file0, base, { format: 'pt' });
  disposeAll(base);
  const buf = fs.readFileSync(file0);
  const hlen = Number(buf.readBigUInt64LE(0));
  const header = buf.subarray(8, 8 + hlen);
  const data = buf.subarray(8 + hlen);
  const json = JSON.parse(header.toString('utf8')) as Record<string, Record<string, unknown>>;
  const names = Object.keys(json).filter((k) => k !== '__metadata__');

  const rand = rng(7331);
  const ri = (n: number) => Math.floor(rand() * n);
  const pick = <T>(xs: readonly T[]): T => xs[ri(xs.length)]!;
  const numbers = [0, 1, -1, 2, 3, 7, 8, 12, 24, 25, 31, 32, 48, 49, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e300, -1e300, 0.5, -0.0, 1e-300];
  const values: unknown[] = [null, true, 'F32', 'F16', 'BF16', 'I64', 'I32', 'BOOL', 'F64', 'U8', 'C64', '', 'x', [], [1], [0, 0], [1, 2, 3], {}, { a: 1 }, '0', ...numbers];
  const randomValue = (): unknown => {
    switch (ri(4)) {
      case 0: return pick(values);
      case 1: return pick(numbers);
      case 2: return Array.from({ length: ri(5) }, () => (rand() < 0.8 ? ri(64) : pick(numbers)));
      default: return [ri(data.length + 8), ri(data.length + 8)];
    }
  };
  const mutateJson = (): Buffer => {
    const j = structuredClone(json) as Record<string, unknown>;
    for (let k = 1 + ri(3); k > 0; k--) {
      const name = pick([...names, '__metadata__', 'new']);
      const r = rand();
      if (r < 0.1) delete j[name];
      else if (r < 0.2) j[name] = randomValue();
      else {
        const e = (j[name] && typeof j[name] === 'object' && !Array.isArray(j[name]) ? j[name] : (j[name] = {})) as Record<string, unknown>;
        const field = pick(['dtype', 'shape', 'data_offsets', 'format', 'extra']);
        if (rand() < 0.15) delete e[field];
        else if (field === 'data_offsets' && rand() < 0.5) {
          const [b, en] = (Array.isArray(e.data_offsets) ? e.data_offsets : [0, 0]) as number[];
          e.data_offsets = [Number(b) + ri(9) - 4, Number(en) + ri(9) - 4];
        } else e[field] = randomValue();
      }
    }
    return Buffer.from(JSON.stringify(j), 'utf8');
  };

  const stats = { valid: 0, refused: 0, tensorsRead: 0 };
  const N = 12000;
  for (let it = 0; it < N; it++) {
    let h: Buffer;
    const kind = it % 3;
    if (kind === 0) {
      h = Buffer.from(header);
      for (let f = 1 + ri(4); f > 0; f--) h[ri(h.length)] = rand() < 0.5 ? ri(256) : h[ri(h.length)]! ^ (1 << ri(8));
      if (rand() < 0.3) h = h.subarray(0, ri(h.length + 1));
    } else if (kind === 1) {
      h = mutateJson();
    } else {
      h = mutateJson();
      if (rand() < 0.5) h = h.subarray(0, ri(h.length + 1));
      else h[ri(h.length)] = ri(256);
    }
    // the data section may be shortened too
    const d = rand() < 0.2 ? data.subarray(0, ri(data.length + 1)) : data;
    const label = `fuzz-${it}.safetensors`;
    try {
      const parsed = parseHeader(label, h, 8 + h.length + d.length);
      stats.valid++;
      if (parsed.entries.size) {
        // read every tensor of the accepted header from a real file
        const f = path.join(path.dirname(file0), 'fuzz.safetensors');
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(h.length));
        fs.writeFileSync(f, Buffer.concat([len, h, d]));
        const hdr = readSafetensorsHeader(f);
        for (const name of hdr.entries.keys()) {
          const x = readTensor(hdr, name, rand() < 0.3 ? 'f32' : undefined);
          t.deepEqual(x.shape, hdr.entries.get(name)!.shape);
          x.dispose();
          stats.tensorsRead++;
        }
      }
    } catch (e) {
      if (!(e instanceof AdaptersError)) {
        t.fail(`iteration ${it} (kind ${kind}) threw a non-AdaptersError: ${(e as Error)?.stack ?? String(e)}\nheader: ${h.toString('latin1')}`);
        return;
      }
      stats.refused++;
    }
  }
  t.log(`fuzz: ${stats.valid} headers accepted (${stats.tensorsRead} tensors read), ${stats.refused} refused`);
  t.is(stats.valid + stats.refused, N);
  t.true(stats.valid > 200 && stats.refused > 5000, 'the mutations exercise both outcomes');
});

// ---- through AutoAdapterModel -------------------------------------------------------------------

/** A copy of the reference BERT folder whose weights are `edit`ed. */
function tamperedBert(edit: (m: Map<string, Tensor>) => void): string {
  const dir = path.dirname(tmpFile());
  fs.copyFileSync(path.join(BERT_DIR, 'config.json'), path.join(dir, 'config.json'));
  const m = loadSafetensors(path.join(BERT_DIR, 'model.safetensors'));
  edit(m);
  saveSafetensors(path.join(dir, 'model.safetensors'), m, { format: 'pt' });
  disposeAll(m);
  return dir;
}

bertTest('a checkpoint missing a tensor is refused, naming the tensor', (t) => {
  const dir = tamperedBert((m) => {
    m.get('encoder.layer.1.attention.self.key.weight')!.dispose();
    m.delete('encoder.layer.1.attention.self.key.weight');
  });
  const e = t.throws(() => AutoAdapterModel.fromPretrained(dir), { instanceOf: FormatError });
  t.regex(e!.message, /missing 1 tensor\(s\): bert\.encoder\.layer\.1\.attention\.self\.key\.weight/);
  t.true(e!.message.includes(dir), 'names the model folder');
});

bertTest('a tensor stored twice, or tensors of layers the config lacks, are refused (not silently overwritten / dropped)', (t) => {
  const twice = tamperedBert((m) => {
    // the same weight under its flex-head name and its base name: which one wins would be arbitrary
    m.set('bert.encoder.layer.0.output.dense.bias', ops.zeros(m.get('encoder.layer.0.output.dense.bias')!.shape));
  });
  t.throws(() => AutoAdapterModel.fromPretrained(twice), { instanceOf: FormatError, message: /stored more than once/ });
  const extra = tamperedBert((m) => {
    // a third layer in a checkpoint whose config.json says two
    for (const [k, v] of [...m]) if (k.startsWith('encoder.layer.1.')) m.set(k.replace('layer.1.', 'layer.2.'), v.clone());
  });
  t.throws(() => AutoAdapterModel.fromPretrained(extra), { instanceOf: FormatError, message: /belong to layers the config does not have.*encoder\.layer\.2\./ });
});

bertTest('a tensor whose shape disagrees with config.json is refused, naming file and tensor', (t) => {
  const dir = tamperedBert((m) => {
    m.get('encoder.layer.0.intermediate.dense.weight')!.dispose();
    m.set('encoder.layer.0.intermediate.dense.weight', tensor(new Float32Array(48 * 32), [48, 32]));
  });
  const file = path.join(dir, 'model.safetensors');
  t.throws(() => AutoAdapterModel.fromPretrained(dir), {
    instanceOf: ShapeError,
    message: new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: tensor 'encoder\\.layer\\.0\\.intermediate\\.dense\\.weight' has shape \\[48,32\\]`),
  });
});

bertTest('a corrupt model.safetensors is refused, naming the file', (t) => {
  const dir = tamperedBert(() => {});
  const file = path.join(dir, 'model.safetensors');
  const b = fs.readFileSync(file);
  fs.writeFileSync(file, b.subarray(0, b.length - 100));
  const e = t.throws(() => AutoAdapterModel.fromPretrained(dir), { instanceOf: FormatError });
  t.true(e!.message.includes(file) && /tensor '.*' data_offsets/.test(e!.message), e!.message);
});

bertTest('a sharded checkpoint (index + 2 shards) loads and gives the same output as the single file', (t) => {
  const dir = path.dirname(tmpFile());
  fs.copyFileSync(path.join(BERT_DIR, 'config.json'), path.join(dir, 'config.json'));
  const m = loadSafetensors(path.join(BERT_DIR, 'model.safetensors'));
  const names = [...m.keys()].sort();
  const shards = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const weightMap: Record<string, string> = {};
  const parts: Map<string, Tensor>[] = [new Map(), new Map()];
  let total = 0;
  names.forEach((n, i) => {
    const s = i < names.length / 2 ? 0 : 1;
    parts[s]!.set(n, m.get(n)!);
    weightMap[n] = shards[s]!;
    total += m.get(n)!.nbytes;
  });
  shards.forEach((s, i) => saveSafetensors(path.join(dir, s), parts[i]!, { format: 'pt' }));
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  disposeAll(m);

  const single = AutoAdapterModel.fromPretrained(BERT_DIR);
  const sharded = AutoAdapterModel.fromPretrained(dir);
  const ref = loadSafetensors(BERT_BASE);
  const input = { inputIds: ref.get('input_ids')!, attentionMask: ref.get('attention_mask')! };
  const a = single.forward(input), b = sharded.forward(input);
  t.true(raw(a.lastHiddenState).equals(raw(b.lastHiddenState)), 'sharded and single-file outputs are identical');
  const x = b.lastHiddenState.toArray() as Float32Array, y = ref.get('last_hidden_state')!.toArray() as Float32Array;
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
  t.log(`sharded bert vs reference last_hidden_state: max abs diff ${d.toExponential(2)}`);
  t.true(d <= 1e-4);
  for (const o of [a, b]) { o.lastHiddenState.dispose(); o.pooledOutput?.dispose(); }
  single.dispose();
  sharded.dispose();
  disposeAll(ref);

  // a shard listed in the index but missing on disk, and a shard name escaping the folder
  fs.unlinkSync(path.join(dir, shards[1]!));
  t.throws(() => AutoAdapterModel.fromPretrained(dir), { instanceOf: IOError, message: new RegExp(shards[1]!.replace(/\./g, '\\.')) });
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { [names[0]!]: '../model.safetensors' } }));
  t.throws(() => AutoAdapterModel.fromPretrained(dir), { instanceOf: FormatError, message: /invalid shard file name/ });
});
