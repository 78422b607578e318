/**
 * safetensors reader and writer (https://github.com/huggingface/safetensors, format: 8-byte little-endian
 * header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?},
 * then the data). The header is validated completely (length, JSON, dtypes, shapes, offsets inside the
 * data, sizes matching shapes, no overlaps) before any tensor is read; tensors are then read natively
 * straight from the file into native memory (no JS-heap copy). Writes are atomic (temp file + rename).
 */
import fs from 'node:fs';
import path from 'node:path';
import { native } from '../binding.ts';
import { FormatError, IOError, fromNative } from '../errors.ts';
import { Tensor, tensor, type DType } from '../tensor.ts';

export interface SafetensorsEntry {
  name: string;
  dtype: string;         // safetensors dtype, e.g. F32
  shape: number[];
  begin: number;         // absolute byte offset in the file
  nbytes: number;
}
export interface SafetensorsHeader {
  path: string;
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
  dataStart: number;
  fileSize: number;
}

/** safetensors dtype → [our dtype, element size]; F64 is read and narrowed to f32. */
const DTYPES: Record<string, [DType | 'f64', number]> = {
  F32: ['f32', 4], F16: ['f16', 2], BF16: ['bf16', 2], I64: ['i64', 8], I32: ['i32', 4], BOOL: ['bool', 1], F64: ['f64', 8],
};
const TO_ST: Record<DType, string> = { f32: 'F32', f16: 'F16', bf16: 'BF16', i64: 'I64', i32: 'I32', bool: 'BOOL' };

const MAX_HEADER = 100 * 1024 * 1024;

/** Reads and validates the header of a safetensors file. Throws FormatError naming the file and tensor. */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new IOError(`cannot open ${file}: ${(e as Error).message}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw new FormatError(`${file}: too small to be a safetensors file (${size} bytes)`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(size - 8)) throw new FormatError(`${file}: header length ${n} goes beyond the end of the file (${size} bytes)`);
    if (n > BigInt(MAX_HEADER)) throw new FormatError(`${file}: header length ${n} exceeds ${MAX_HEADER} bytes`);
    const hlen = Number(n);
    const hbuf = Buffer.alloc(hlen);
    if (hlen) fs.readSync(fd, hbuf, 0, hlen, 8);
    return parseHeader(file, hbuf, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** Validates a header given as bytes (exported for fuzzing). `fileSize` is the whole file's size. */
export function parseHeader(file: string, hbuf: Uint8Array, fileSize: number): SafetensorsHeader {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(hbuf).toString('utf8'));
  } catch (e) {
    throw new FormatError(`${file}: header is not valid JSON (${(e as Error).message})`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new FormatError(`${file}: header must be a JSON object`);
  const dataStart = 8 + hbuf.length;
  const dataLen = fileSize - dataStart;
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw new FormatError(`${file}: __metadata__ must be an object of strings`);
      for (const [k, s] of Object.entries(v)) if (typeof s !== 'string') throw new FormatError(`${file}: __metadata__.${k} must be a string`);
      metadata = v as Record<string, string>;
      continue;
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new FormatError(`${file}: entry '${name}' must be an object`);
    const e = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPES))
      throw new FormatError(`${file}: tensor '${name}' has unknown or unsupported dtype ${JSON.stringify(e.dtype)}`);
    if (!Array.isArray(e.shape) || e.shape.some((d) => !Number.isSafeInteger(d) || (d as number) < 0))
      throw new FormatError(`${file}: tensor '${name}' has an invalid shape ${JSON.stringify(e.shape)}`);
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || offs.some((o) => !Number.isSafeInteger(o) || (o as number) < 0))
      throw new FormatError(`${file}: tensor '${name}' has invalid data_offsets ${JSON.stringify(offs)}`);
    const [b, end] = offs as [number, number];
    if (b > end) throw new FormatError(`${file}: tensor '${name}' has data_offsets [${b}, ${end}] in the wrong order`);
    if (end > dataLen) throw new FormatError(`${file}: tensor '${name}' data_offsets [${b}, ${end}] reach beyond the data (${dataLen} bytes)`);
    const shape = e.shape as number[];
    let numel = 1;
    for (const d of shape) numel *= d;
    const esize = DTYPES[e.dtype]![1];
    if (!Number.isSafeInteger(numel) || numel * esize !== end - b)
      throw new FormatError(`${file}: tensor '${name}' of shape [${shape}] ${e.dtype} needs ${numel * esize} bytes but data_offsets span ${end - b}`);
    entries.set(name, { name, dtype: e.dtype, shape, begin: dataStart + b, nbytes: end - b });
  }
  // no two tensors may share bytes
  const sorted = [...entries.values()].filter((e) => e.nbytes > 0).sort((x, y) => x.begin - y.begin);
  for (let i = 1; i < sorted.length; i++) {
    const p = sorted[i - 1]!, c = sorted[i]!;
    if (c.begin < p.begin + p.nbytes) throw new FormatError(`${file}: tensors '${p.name}' and '${c.name}' overlap`);
  }
  return { path: file, entries, metadata, dataStart, fileSize };
}

/** Reads one tensor of a validated header, converted to `dtype` when given (floats only). */
export function readTensor(h: SafetensorsHeader, name: string, dtype?: DType): Tensor {
  const e = h.entries.get(name);
  if (!e) throw new FormatError(`${h.path}: no tensor named '${name}'`);
  const [dt] = DTYPES[e.dtype]!;
  let t: Tensor;
  if (dt === 'f64') {
    const buf = Buffer.alloc(e.nbytes);
    const fd = fs.openSync(h.path, 'r');
    try {
      fs.readSync(fd, buf, 0, e.nbytes, e.begin);
    } finally {
      fs.closeSync(fd);
    }
    const f64 = new Float64Array(buf.buffer, buf.byteOffset, e.nbytes / 8);
    t = tensor(Float32Array.from(f64), e.shape);
  } else {
    try {
      t = new Tensor(native.readRegion(h.path, e.begin, dt, e.shape));
    } catch (err) {
      fromNative(err);
    }
  }
  const isFloat = (d: string) => d === 'f32' || d === 'bf16' || d === 'f16';
  if (dtype && dtype !== t.dtype && isFloat(t.dtype) && isFloat(dtype)) {
    const c = t.to(dtype);
    t.dispose();
    t = c;
  }
  return t;
}

/** Loads every tensor of a safetensors file (floats converted to `dtype` when given). */
export function loadSafetensors(file: string, opts: { dtype?: DType } = {}): Map<string, Tensor> {
  const h = readSafetensorsHeader(file);
  const out = new Map<string, Tensor>();
  try {
    for (const name of h.entries.keys()) out.set(name, readTensor(h, name, opts.dtype));
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
  return out;
}

/**
 * Writes tensors to a safetensors file atomically (temp file in the same folder, fsync, rename).
 * Names are written in sorted order; `metadata` goes to `__metadata__`.
 */
export function saveSafetensors(file: string, tensors: Map<string, Tensor> | Record<string, Tensor>, metadata?: Record<string, string>): void {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const bufs: Uint8Array[] = [];
  let off = 0;
  for (const [name, t] of entries) {
    const data = new Uint8Array(t.handle.toBuffer());
    header[name] = { dtype: TO_ST[t.dtype], shape: t.shape, data_offsets: [off, off + data.length] };
    bufs.push(data);
    off += data.length;
  }
  let hjson = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (hjson.length % 8)) % 8;
  if (pad) hjson = Buffer.concat([hjson, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hjson.length));
  writeAtomic(file, [len, hjson, ...bufs]);
}

/** Writes chunks to `file` via a temp file and rename, so readers see the old or the new file only. */
export function writeAtomic(file: string, chunks: Uint8Array[]): void {
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Date.now().toString(36)}`);
  let fd: number | null = null;
  try {
    fd = fs.openSync(tmp, 'w');
    for (const c of chunks) fs.writeSync(fd, c);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== null) fs.closeSync(fd);
    try { fs.unlinkSync(tmp); } catch { /* already gone */ }
    throw new IOError(`cannot write ${file}: ${(e as Error).message}`);
  }
}
