/**
 * Writes a state dict the way `torch.save(state_dict, f)` does (zip format, torch >= 1.6), so that
 * `torch.load(f, weights_only=True)` and the Python adapters library read it:
 *   archive/data.pkl   pickle (protocol 2) of an OrderedDict name → torch._utils._rebuild_tensor_v2(
 *                      persistent_id(('storage', torch.<T>Storage, key, 'cpu', numel)), offset, size, stride,
 *                      False, OrderedDict())
 *   archive/data/<key> the storage's raw little-endian bytes (64-byte aligned, as torch aligns them)
 *   archive/version    "3", archive/byteorder "little"
 * Entries are stored uncompressed. Tensors that are the same object share one storage (the Python library's
 * prefix-tuning pools appear under several names). Only the globals the restricted reader allows are written.
 * The file is written to a temporary name and renamed into place.
 */
import zlib from 'node:zlib';
import { ValueError } from '../errors.ts';
import { writeAtomic } from './safetensors.ts';
import type { Tensor } from '../tensor.ts';

const STORAGE: Record<string, string> = { f32: 'FloatStorage', bf16: 'BFloat16Storage', f16: 'HalfStorage', i64: 'LongStorage', i32: 'IntStorage', bool: 'BoolStorage' };

class Pickler {
  private parts: number[] = [];
  private memo = new Map<string, number>();
  byte(...b: number[]): void { this.parts.push(...b); }
  u32(n: number): void { this.byte(n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255); }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.byte(0x58);  // BINUNICODE
    this.u32(b.length);
    for (const x of b) this.parts.push(x);
  }
  int(n: number): void {
    if (!Number.isInteger(n) || n < 0) throw new ValueError(`pickle: cannot write ${n}`);
    if (n < 256) this.byte(0x4b, n);                       // BININT1
    else if (n < 65536) this.byte(0x4d, n & 255, n >>> 8); // BININT2
    else if (n < 2 ** 31) { this.byte(0x4a); this.u32(n); } // BININT
    else {                                                  // LONG1 (8 bytes, little endian)
      this.byte(0x8a, 8);
      let v = BigInt(n);
      for (let i = 0; i < 8; i++) { this.byte(Number(v & 255n)); v >>= 8n; }
    }
  }
  /** GLOBAL, memoised (BINPUT/BINGET) like pickle does. */
  global(module: string, name: string): void {
    const k = `${module}\n${name}`;
    const m = this.memo.get(k);
    if (m !== undefined) { this.byte(0x68, m); return; }  // BINGET
    this.byte(0x63, ...Buffer.from(`${module}\n${name}\n`, 'latin1'));  // GLOBAL
    if (this.memo.size < 256) {
      this.memo.set(k, this.memo.size);
      this.byte(0x71, this.memo.size - 1);  // BINPUT
    }
  }
  tuple(items: number[]): void {
    this.byte(0x28);  // MARK
    for (const x of items) this.int(x);
    this.byte(0x74);  // TUPLE
  }
  bytes(): Buffer { return Buffer.from(this.parts); }
}

/** The bytes of a torch.save zip holding `tensors` (insertion order kept). */
export function torchSaveBuffer(tensors: Map<string, Tensor>, archive = 'archive'): Buffer {
  const storages: { key: string; bytes: Buffer }[] = [];
  const keyOf = new Map<Tensor, string>();
  const p = new Pickler();
  p.byte(0x80, 2);  // PROTO 2
  p.global('collections', 'OrderedDict');
  p.byte(0x29, 0x52);  // EMPTY_TUPLE, REDUCE
  p.byte(0x28);  // MARK (SETITEMS)
  for (const [name, t] of tensors) {
    const sname = STORAGE[t.dtype];
    if (!sname) throw new ValueError(`torch.save: unsupported dtype ${t.dtype} for '${name}'`);
    let key = keyOf.get(t);
    if (key === undefined) {
      key = String(storages.length);
      keyOf.set(t, key);
      storages.push({ key, bytes: Buffer.from(t.handle.toBuffer()) });  // raw little-endian bytes, row-major
    }
    p.str(name);
    p.global('torch._utils', '_rebuild_tensor_v2');
    p.byte(0x28);  // MARK (args)
    p.byte(0x28);  // MARK (persistent id tuple)
    p.str('storage');
    p.global('torch', sname);
    p.str(key);
    p.str('cpu');
    p.int(t.numel);
    p.byte(0x74, 0x51);  // TUPLE, BINPERSID
    p.int(0);
    p.tuple(t.shape);
    const strides: number[] = [];
    let acc = 1;
    for (let d = t.ndim - 1; d >= 0; d--) { strides.unshift(acc); acc *= t.shape[d]!; }
    p.tuple(strides);
    p.byte(0x89);  // NEWFALSE (requires_grad)
    p.global('collections', 'OrderedDict');
    p.byte(0x29, 0x52);  // OrderedDict() backward hooks
    p.byte(0x74, 0x52);  // TUPLE, REDUCE
  }
  p.byte(0x75, 0x2e);  // SETITEMS, STOP
  const entries: { name: string; data: Buffer }[] = [
    { name: `${archive}/data.pkl`, data: p.bytes() },
    { name: `${archive}/byteorder`, data: Buffer.from('little') },
    ...storages.map((s) => ({ name: `${archive}/data/${s.key}`, data: s.bytes })),
    { name: `${archive}/version`, data: Buffer.from('3\n') },
  ];
  return zipStored(entries);
}

/** A zip of uncompressed entries, each data start aligned to 64 bytes through the local extra field. */
function zipStored(entries: { name: string; data: Buffer }[]): Buffer {
  const chunks: Buffer[] = [];
  const central: Buffer[] = [];
  let off = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const crc = zlib.crc32(e.data) >>> 0;
    const base = off + 30 + name.length;
    const pad = (64 - ((base + 4) % 64)) % 64;  // extra field: 4-byte header + padding
    const extra = Buffer.alloc(4 + pad);
    extra.writeUInt16LE(0x5046, 0);  // a private id, as torch's writer uses for padding ("FB")
    extra.writeUInt16LE(pad, 2);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);  // version needed
    local.writeUInt16LE(0, 6);   // flags
    local.writeUInt16LE(0, 8);   // stored
    local.writeUInt32LE(0, 10);  // time/date
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(e.data.length, 18);
    local.writeUInt32LE(e.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(extra.length, 28);
    chunks.push(local, name, extra, e.data);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(0, 8);
    c.writeUInt16LE(0, 10);
    c.writeUInt32LE(0, 12);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(e.data.length, 20);
    c.writeUInt32LE(e.data.length, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt16LE(0, 30);  // extra
    c.writeUInt16LE(0, 32);  // comment
    c.writeUInt16LE(0, 34);  // disk
    c.writeUInt16LE(0, 36);
    c.writeUInt32LE(0, 38);
    c.writeUInt32LE(off, 42);
    central.push(c, name);
    off += 30 + name.length + extra.length + e.data.length;
    if (off > 0xffffffff) throw new ValueError('torch.save: files over 4 GiB (zip64) are not written');
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(off, 16);
  return Buffer.concat([...chunks, cd, end]);
}

/** Writes `tensors` as a torch.save file, atomically (temporary file, fsync, rename). */
export function saveTorchBin(file: string, tensors: Map<string, Tensor>): void {
  writeAtomic(file, [torchSaveBuffer(tensors)]);
}
