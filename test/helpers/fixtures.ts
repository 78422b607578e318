// Minimal safetensors reader for test fixtures (no dependencies).
//
// Format: 8-byte little-endian u64 header length N, N bytes of JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}},
// then the raw little-endian data; offsets are relative to the data section.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export type StDtype = 'F32' | 'I64' | 'BF16' | 'BOOL';
export type StData = Float32Array | BigInt64Array | Uint8Array | Uint16Array;

export interface StTensor {
  dtype: StDtype;
  shape: number[];
  /** F32 -> Float32Array, I64 -> BigInt64Array, BF16 -> Uint16Array (raw bits), BOOL -> Uint8Array (0/1) */
  data: StData;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

const BYTES: Record<StDtype, number> = { F32: 4, I64: 8, BF16: 2, BOOL: 1 };

export function readSafetensors(path: string | URL): Map<string, StTensor> {
  const buf = readFileSync(path);
  if (buf.length < 8) throw new Error(`${String(path)}: too short for safetensors`);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, HeaderEntry>;
  const base = 8 + headerLen;
  const out = new Map<string, StTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const dtype = entry.dtype as StDtype;
    if (!(dtype in BYTES)) throw new Error(`${name}: unsupported safetensors dtype ${entry.dtype}`);
    const [b, e] = entry.data_offsets;
    const numel = entry.shape.reduce((p, d) => p * d, 1);
    if (e - b !== numel * BYTES[dtype]) {
      throw new Error(`${name}: ${e - b} bytes for shape [${entry.shape}] ${dtype}`);
    }
    // Copy into a fresh, aligned ArrayBuffer (file data need not be aligned for the typed array).
    const start = buf.byteOffset + base + b;
    const ab = buf.buffer.slice(start, start + (e - b)) as ArrayBuffer;
    let data: StData;
    switch (dtype) {
      case 'F32': data = new Float32Array(ab); break;
      case 'I64': data = new BigInt64Array(ab); break;
      case 'BF16': data = new Uint16Array(ab); break;
      case 'BOOL': data = new Uint8Array(ab); break;
    }
    out.set(name, { dtype, shape: [...entry.shape], data });
  }
  return out;
}

/** Widen raw bf16 bit patterns to float32 (exact). */
export function bf16ToF32(bits: Uint16Array): Float32Array {
  const u32 = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) u32[i] = bits[i]! << 16;
  return new Float32Array(u32.buffer);
}

/** Numeric view of a fixture tensor: F32 as-is, BF16 widened, I64/BOOL converted to numbers. */
export function toFloat(t: StTensor): Float32Array | Float64Array {
  switch (t.dtype) {
    case 'F32': return t.data as Float32Array;
    case 'BF16': return bf16ToF32(t.data as Uint16Array);
    case 'I64': return Float64Array.from(t.data as BigInt64Array, (v) => Number(v));
    case 'BOOL': return Float64Array.from(t.data as Uint8Array);
  }
}

/** Absolute path of a file under test/fixtures/. */
export function fixturePath(...parts: string[]): string {
  return fileURLToPath(new URL(`../fixtures/${parts.join('/')}`, import.meta.url));
}
