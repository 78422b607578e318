/**
 * Restricted reader for PyTorch `torch.save` checkpoints (`pytorch_model.bin`, `pytorch_adapter.bin`, ...).
 *
 * Formats (https://github.com/pytorch/pytorch/blob/v1.13.0/torch/serialization.py):
 *  - zip (torch >= 1.6): `<archive>/data.pkl` (a pickle of the state dict whose tensors refer to storages
 *    through persistent ids) and `<archive>/data/<key>` (raw little-endian storage bytes), stored
 *    uncompressed. The zip is parsed here from its central directory (zip64 understood, deflated entries
 *    inflated with node:zlib); every offset and size is checked and `..`/absolute entry names are refused.
 *  - legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row (magic number,
 *    protocol version, sys info, the object, the storage keys) followed by each storage as an 8-byte
 *    element count and its bytes.
 *
 * Unpickling an arbitrary pickle runs arbitrary code, so this is NOT Python's unpickler: a small pickle
 * VM (https://github.com/python/cpython/blob/3.11/Lib/pickle.py, opcodes of protocols 0-5 that build
 * plain data) that resolves GLOBAL / STACK_GLOBAL only against an allowlist of what torch writes for a
 * state dict (OrderedDict, the tensor/parameter rebuild functions, storage classes, dtypes). Anything
 * else (`posix.system`, `builtins.eval`, `subprocess.*`, numpy, ...) is refused with a FormatError naming
 * the global as soon as the opcode is read; nothing is ever called or imported. Tensors become
 * descriptors (storage key, offset, size, stride) during unpickling and are materialised only after the
 * whole pickle and every view were validated; views are gathered (non-contiguous and shared storages
 * allowed) into fresh tensors of the matching dtype. f64 is narrowed to f32 and u8/i8/i16 widened to i32
 * (our dtypes). Nested dicts/lists are flattened with '.'-joined keys; non-tensor leaves are skipped.
 * Work and memory are bounded by the file's size: shared sub-objects, cycles, broadcast (stride-0) views
 * and names repeating one storage are capped (see MAX_* below), so a hostile file fails fast instead.
 *
 * Writing .bin files is not supported (use safetensors).
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import { FormatError, IOError } from '../errors.ts';
import { Tensor, tensor, type DType } from '../tensor.ts';

// ---- zip ---------------------------------------------------------------------------------------------

interface ZipEntry {
  name: string;
  method: number;
  compSize: number;
  size: number;
  dataStart: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOC = 0x07064b50;

/** Byte reader over a buffer that throws FormatError instead of RangeError. */
class Bytes {
  readonly dv: DataView;
  constructor(readonly buf: Uint8Array, readonly file: string) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  check(pos: number, n: number, what: string): void {
    if (!(pos >= 0 && n >= 0 && pos + n <= this.buf.length))
      throw new FormatError(`${this.file}: ${what} at byte ${pos} (+${n}) lies outside the file (${this.buf.length} bytes)`);
  }
  u16(p: number, what: string): number { this.check(p, 2, what); return this.dv.getUint16(p, true); }
  u32(p: number, what: string): number { this.check(p, 4, what); return this.dv.getUint32(p, true); }
  /** A u64 that must fit a safe integer (sizes and offsets). */
  u64(p: number, what: string): number {
    this.check(p, 8, what);
    const v = this.dv.getBigUint64(p, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`${this.file}: ${what} ${v} is too large`);
    return Number(v);
  }
}

/** Entry names that could escape a folder if someone extracted the archive: refused outright. */
function unsafeName(name: string): boolean {
  return name.length === 0 || name.includes('\0') || name.includes('\\') || name.startsWith('/') ||
    /^[A-Za-z]:/.test(name) || name.split('/').some((s) => s === '..');
}

/** Parses the central directory of a zip held in memory. */
function readZip(b: Bytes): Map<string, ZipEntry> {
  const { buf, file } = b;
  // End of central directory: last 22 bytes plus up to 64 KiB of comment.
  let eocd = -1;
  for (let p = buf.length - 22; p >= Math.max(0, buf.length - 22 - 0xffff); p--) {
    if (b.dv.getUint32(p, true) === SIG_EOCD) { eocd = p; break; }
  }
  if (eocd < 0) throw new FormatError(`${file}: not a zip archive (no end-of-central-directory record)`);
  let count = b.u16(eocd + 10, 'entry count');
  let cdSize = b.u32(eocd + 12, 'central directory size');
  let cdOff = b.u32(eocd + 16, 'central directory offset');
  if (count === 0xffff || cdSize === 0xffffffff || cdOff === 0xffffffff) {
    // zip64: the locator sits right before the classic record
    if (eocd < 20 || b.u32(eocd - 20, 'zip64 locator') !== SIG_EOCD64_LOC)
      throw new FormatError(`${file}: zip64 archive without a zip64 end-of-central-directory locator`);
    const rec = b.u64(eocd - 20 + 8, 'zip64 record offset');
    if (b.u32(rec, 'zip64 record') !== SIG_EOCD64) throw new FormatError(`${file}: bad zip64 end-of-central-directory record`);
    count = b.u64(rec + 32, 'zip64 entry count');
    cdSize = b.u64(rec + 40, 'zip64 central directory size');
    cdOff = b.u64(rec + 48, 'zip64 central directory offset');
  }
  b.check(cdOff, cdSize, 'central directory');
  if (count > cdSize / 46) throw new FormatError(`${file}: ${count} zip entries cannot fit a ${cdSize}-byte central directory`);
  const entries = new Map<string, ZipEntry>();
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let p = cdOff;
  const cdEnd = cdOff + cdSize;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdEnd || b.u32(p, 'central directory entry') !== SIG_CENTRAL)
      throw new FormatError(`${file}: corrupt zip central directory (entry ${i})`);
    const flags = b.u16(p + 8, 'flags');
    const method = b.u16(p + 10, 'method');
    let compSize = b.u32(p + 20, 'compressed size');
    let size = b.u32(p + 24, 'size');
    const nameLen = b.u16(p + 28, 'name length');
    const extraLen = b.u16(p + 30, 'extra length');
    const commentLen = b.u16(p + 32, 'comment length');
    let local = b.u32(p + 42, 'local header offset');
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cdEnd) throw new FormatError(`${file}: zip central directory entry ${i} overruns the directory`);
    let name: string;
    try {
      name = utf8.decode(buf.subarray(p + 46, p + 46 + nameLen));
    } catch {
      throw new FormatError(`${file}: zip entry ${i} has a name that is not UTF-8`);
    }
    if (unsafeName(name)) throw new FormatError(`${file}: refusing zip entry with unsafe name ${JSON.stringify(name)}`);
    if (entries.has(name)) throw new FormatError(`${file}: duplicate zip entry '${name}'`);
    if (flags & 1) throw new FormatError(`${file}: zip entry '${name}' is encrypted`);
    // zip64 extra field (id 1): the 64-bit values of the fields that hold 0xffffffff, in this order
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen;) {
      const id = b.u16(e, 'extra id');
      const len = b.u16(e + 2, 'extra length');
      if (e + 4 + len > p + 46 + nameLen + extraLen) throw new FormatError(`${file}: zip entry '${name}' has a corrupt extra field`);
      if (id === 1) {
        let q = e + 4;
        const take = (what: string): number => {
          if (q + 8 > e + 4 + len) throw new FormatError(`${file}: zip entry '${name}' has a short zip64 extra field`);
          const v = b.u64(q, what);
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = take('zip64 size');
        if (compSize === 0xffffffff) compSize = take('zip64 compressed size');
        if (local === 0xffffffff) local = take('zip64 local header offset');
      }
      e += 4 + len;
    }
    if (b.u32(local, `local header of '${name}'`) !== SIG_LOCAL) throw new FormatError(`${file}: zip entry '${name}' has no local header at ${local}`);
    const dataStart = local + 30 + b.u16(local + 26, 'local name length') + b.u16(local + 28, 'local extra length');
    b.check(dataStart, compSize, `data of zip entry '${name}'`);
    if (method !== 0 && method !== 8) throw new FormatError(`${file}: zip entry '${name}' uses unsupported compression method ${method}`);
    if (method === 0 && compSize !== size) throw new FormatError(`${file}: stored zip entry '${name}' has size ${size} but ${compSize} stored bytes`);
    entries.set(name, { name, method, compSize, size, dataStart });
    p = next;
  }
  return entries;
}

function entryBytes(b: Bytes, e: ZipEntry): Uint8Array {
  const raw = b.buf.subarray(e.dataStart, e.dataStart + e.compSize);
  if (e.method === 0) return raw;
  let out: Buffer;
  try {
    // maxOutputLength bounds the memory a lying header can make us allocate
    out = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) });
  } catch (err) {
    throw new FormatError(`${b.file}: cannot inflate zip entry '${e.name}': ${(err as Error).message}`);
  }
  if (out.length !== e.size) throw new FormatError(`${b.file}: zip entry '${e.name}' inflates to ${out.length} bytes, header says ${e.size}`);
  return out;
}

// ---- pickle values -------------------------------------------------------------------------------

/** A Python tuple (immutable; hashable when its items are). */
class PyTuple {
  constructor(readonly items: PyValue[]) {}
}
/** A Python list. */
class PyList {
  constructor(readonly items: PyValue[] = []) {}
}
/** A Python dict / OrderedDict, insertion-ordered; keys are canonicalised for hashing. */
class PyDict {
  readonly entries = new Map<string, [PyValue, PyValue]>();
}
/** A resolved, allowlisted global (never callable by itself: calls go through `callGlobal`). */
class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualname(): string { return `${this.module}.${this.name}`; }
}
/** A storage referenced by a persistent id. */
class StorageRef {
  constructor(readonly key: string, readonly dtype: StorageDType, readonly numel: number) {}
}
/** A tensor view of a storage, not yet materialised. */
class TensorRef {
  constructor(readonly storage: StorageRef, readonly offset: number, readonly size: number[], readonly stride: number[]) {}
}
type PyValue = null | boolean | number | bigint | string | Uint8Array | PyTuple | PyList | PyDict | PyGlobal | StorageRef | TensorRef;

/** Storage element types torch writes; `f64`, `u8`, `i8`, `i16` are converted on load. */
type StorageDType = DType | 'f64' | 'u8' | 'i8' | 'i16';
const STORAGE_CLASSES: Record<string, [StorageDType, number]> = {
  FloatStorage: ['f32', 4], HalfStorage: ['f16', 2], BFloat16Storage: ['bf16', 2], DoubleStorage: ['f64', 8],
  LongStorage: ['i64', 8], IntStorage: ['i32', 4], ShortStorage: ['i16', 2], CharStorage: ['i8', 1],
  ByteStorage: ['u8', 1], BoolStorage: ['bool', 1],
};
const ESIZE: Record<StorageDType, number> = { f32: 4, f16: 2, bf16: 2, f64: 8, i64: 8, i32: 4, i16: 2, i8: 1, u8: 1, bool: 1 };
/** torch dtype objects (`torch.float32`, ...): accepted as plain values. */
const TORCH_DTYPES = new Set([
  'float32', 'float', 'float16', 'half', 'bfloat16', 'float64', 'double', 'int64', 'long', 'int32', 'int',
  'int16', 'short', 'int8', 'uint8', 'bool',
]);
/** Functions the VM may "call" (interpreted here, never executed). */
const CALLABLES = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  'torch._tensor._rebuild_from_type_v2',
]);
/** Classes that may appear as values (the `type` argument of `_rebuild_from_type_v2`). */
const TYPES = new Set(['torch.Tensor', 'torch.nn.parameter.Parameter']);

function resolveGlobal(file: string, module: string, name: string): PyGlobal {
  const q = `${module}.${name}`;
  const ok = CALLABLES.has(q) || TYPES.has(q) ||
    (module === 'torch' && (name in STORAGE_CLASSES || TORCH_DTYPES.has(name)));
  if (!ok) throw new FormatError(`${file}: refusing pickle global '${q}' (only tensors and plain containers are loaded; this file may run code under Python's pickle)`);
  return new PyGlobal(module, name);
}

const MAX_KEY_NODES = 1024;
/**
 * Canonical hash key of a dict key (Python's hashable primitives and tuples of them). A node budget keeps
 * keys built from shared sub-tuples ((x, x), ((x, x), (x, x)), ...) from expanding exponentially.
 */
function hashKey(file: string, k: PyValue, budget = { nodes: MAX_KEY_NODES }): string {
  if (--budget.nodes < 0) throw new FormatError(`${file}: dict key is too large`);
  if (k === null) return 'N';
  switch (typeof k) {
    case 'string': return `s${k}`;
    case 'boolean': return k ? 'i1' : 'i0';  // True == 1 in Python
    case 'bigint': return `i${k}`;
    case 'number': return Number.isInteger(k) ? `i${k}` : `f${k}`;
  }
  if (k instanceof PyTuple) return `t(${k.items.map((x) => hashKey(file, x, budget)).join(',')})`;
  throw new FormatError(`${file}: unsupported dict key (${describe(k)})`);
}

function describe(v: PyValue): string {
  if (v === null) return 'None';
  if (v instanceof PyTuple) return 'tuple';
  if (v instanceof PyList) return 'list';
  if (v instanceof PyDict) return 'dict';
  if (v instanceof PyGlobal) return v.qualname;
  if (v instanceof TensorRef) return 'tensor';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof StorageRef) return 'storage';
  return typeof v;
}

// ---- the pickle VM ---------------------------------------------------------------------------------

const MAX_INT_BYTES = 64;
const MAX_DIMS = 64;

type PersistentLoad = (pid: PyValue) => StorageRef;

/**
 * Runs one pickle starting at `pos`; returns the value and the position after STOP. Only data-building
 * opcodes exist here; globals resolve through the allowlist and "calls" are interpreted by callGlobal.
 */
function unpickle(b: Bytes, pos: number, persistentLoad: PersistentLoad): { value: PyValue; end: number } {
  const { buf, file } = b;
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  let stack: PyValue[] = [];
  const metastack: PyValue[][] = [];
  const memo = new Map<number, PyValue>();
  let p = pos;

  const fail = (msg: string): never => { throw new FormatError(`${file}: invalid pickle at byte ${p}: ${msg}`); };
  const need = (n: number): void => { if (n < 0 || p + n > buf.length) fail(`truncated (needs ${n} more bytes)`); };
  const u8 = (): number => { need(1); return buf[p++]!; };
  const take = (n: number): Uint8Array => { need(n); const s = buf.subarray(p, p + n); p += n; return s; };
  const lenU32 = (): number => { need(4); const v = b.dv.getUint32(p, true); p += 4; return v; };
  const lenU64 = (): number => {
    need(8);
    const v = b.dv.getBigUint64(p, true);
    p += 8;
    if (v > BigInt(buf.length)) fail(`length ${v} exceeds the file`);
    return Number(v);
  };
  const line = (): string => {
    const nl = buf.indexOf(0x0a, p);
    if (nl < 0) fail('unterminated text argument');
    const s = Buffer.from(buf.subarray(p, nl)).toString('latin1');
    p = nl + 1;
    return s;
  };
  const text = (bytes: Uint8Array): string => {
    try {
      return utf8.decode(bytes);
    } catch {
      return fail('string is not valid UTF-8');
    }
  };
  const pop = (): PyValue => (stack.length ? stack.pop()! : fail('stack underflow'));
  const top = (): PyValue => (stack.length ? stack[stack.length - 1]! : fail('stack underflow'));
  const popMark = (): PyValue[] => {
    const items = stack;
    if (!metastack.length) fail('no MARK on the stack');
    stack = metastack.pop()!;
    return items;
  };
  const getMemo = (i: number): PyValue => (memo.has(i) ? memo.get(i)! : fail(`memo key ${i} is not defined`));
  const putMemo = (i: number): void => { memo.set(i, top()); };
  const setItems = (d: PyValue, kv: PyValue[]): void => {
    if (!(d instanceof PyDict)) fail(`SETITEM(S) on a ${describe(d)}`);
    if (kv.length % 2) fail('odd number of items for SETITEMS');
    for (let i = 0; i < kv.length; i += 2) (d as PyDict).entries.set(hashKey(file, kv[i]!), [kv[i]!, kv[i + 1]!]);
  };
  const append = (l: PyValue, items: PyValue[]): void => {
    if (!(l instanceof PyList)) fail(`APPEND(S) on a ${describe(l)}`);
    for (const x of items) (l as PyList).items.push(x);
  };
  const intFromLE = (bytes: Uint8Array): number | bigint => {
    if (bytes.length > MAX_INT_BYTES) fail(`integer of ${bytes.length} bytes is too large`);
    if (bytes.length === 0) return 0;
    let v = 0n;
    for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
    if (bytes[bytes.length - 1]! & 0x80) v -= 1n << BigInt(bytes.length * 8);
    return small(v);
  };
  const small = (v: bigint): number | bigint => (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
  const parseIntText = (s: string): number | bigint | boolean => {
    const t = s.endsWith('L') ? s.slice(0, -1) : s;
    if (t === '00') return false;  // protocol 0 booleans
    if (t === '01') return true;
    if (!/^[+-]?\d{1,40}$/.test(t)) fail(`bad integer literal ${JSON.stringify(s.slice(0, 40))}`);
    return small(BigInt(t));
  };

  const parseFloatText = (s: string): number => {
    const t = s.trim();
    if (/^[+-]?(inf|infinity)$/i.test(t)) return t.startsWith('-') ? -Infinity : Infinity;
    if (/^[+-]?nan$/i.test(t)) return NaN;
    if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) fail(`bad float literal ${JSON.stringify(t.slice(0, 40))}`);
    return Number(t);
  };

  if (p >= buf.length) fail('empty pickle');
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const v = u8();
        if (v > 5) fail(`unsupported pickle protocol ${v}`);
        break;
      }
      case 0x95: take(8); break;            // FRAME: framing is only a hint
      case 0x2e: {                          // STOP
        if (stack.length !== 1 || metastack.length) fail(`STOP with ${stack.length} values on the stack`);
        return { value: stack[0]!, end: p };
      }
      case 0x28: metastack.push(stack); stack = []; break;  // MARK
      case 0x30: pop(); break;                                // POP
      case 0x31: popMark(); break;                            // POP_MARK
      case 0x32: stack.push(top()); break;                    // DUP
      case 0x4e: stack.push(null); break;                     // NONE
      case 0x88: stack.push(true); break;                     // NEWTRUE
      case 0x89: stack.push(false); break;                    // NEWFALSE
      case 0x4a: need(4); stack.push(b.dv.getInt32(p, true)); p += 4; break;   // BININT
      case 0x4b: stack.push(u8()); break;                                       // BININT1
      case 0x4d: need(2); stack.push(b.dv.getUint16(p, true)); p += 2; break;  // BININT2
      case 0x8a: stack.push(intFromLE(take(u8()))); break;                      // LONG1
      case 0x8b: {                                                              // LONG4
        need(4);
        const n = b.dv.getInt32(p, true);
        p += 4;
        if (n < 0) fail('negative LONG4 length');
        stack.push(intFromLE(take(n)));
        break;
      }
      case 0x49: stack.push(parseIntText(line())); break;  // INT
      case 0x4c: stack.push(parseIntText(line())); break;  // LONG
      case 0x47: need(8); stack.push(b.dv.getFloat64(p, false)); p += 8; break;  // BINFLOAT (big-endian)
      case 0x46: stack.push(parseFloatText(line())); break;                      // FLOAT
      case 0x58: stack.push(text(take(lenU32()))); break;  // BINUNICODE
      case 0x8c: stack.push(text(take(u8()))); break;      // SHORT_BINUNICODE
      case 0x8d: stack.push(text(take(lenU64()))); break;  // BINUNICODE8
      case 0x54: {                                          // BINSTRING (py2 str): latin-1
        need(4);
        const n = b.dv.getInt32(p, true);
        p += 4;
        if (n < 0) fail('negative BINSTRING length');
        stack.push(Buffer.from(take(n)).toString('latin1'));
        break;
      }
      case 0x55: stack.push(Buffer.from(take(u8())).toString('latin1')); break;  // SHORT_BINSTRING
      case 0x42: stack.push(take(lenU32()).slice()); break;  // BINBYTES
      case 0x43: stack.push(take(u8()).slice()); break;      // SHORT_BINBYTES
      case 0x8e: stack.push(take(lenU64()).slice()); break;  // BINBYTES8
      case 0x29: stack.push(new PyTuple([])); break;                       // EMPTY_TUPLE
      case 0x74: { const items = popMark(); stack.push(new PyTuple(items)); break; }  // TUPLE (popMark swaps `stack`)
      case 0x85: { const a = pop(); stack.push(new PyTuple([a])); break; }  // TUPLE1
      case 0x86: { const y = pop(), x = pop(); stack.push(new PyTuple([x, y])); break; }  // TUPLE2
      case 0x87: { const z = pop(), y = pop(), x = pop(); stack.push(new PyTuple([x, y, z])); break; }  // TUPLE3
      case 0x5d: stack.push(new PyList()); break;                          // EMPTY_LIST
      case 0x6c: { const items = popMark(); stack.push(new PyList(items)); break; }  // LIST
      case 0x61: { const x = pop(); append(top(), [x]); break; }          // APPEND
      case 0x65: { const items = popMark(); append(top(), items); break; }  // APPENDS
      case 0x7d: stack.push(new PyDict()); break;                          // EMPTY_DICT
      case 0x64: { const d = new PyDict(); const kv = popMark(); setItems(d, kv); stack.push(d); break; }  // DICT
      case 0x73: { const v = pop(), k = pop(); setItems(top(), [k, v]); break; }  // SETITEM
      case 0x75: { const kv = popMark(); setItems(top(), kv); break; }            // SETITEMS
      case 0x71: putMemo(u8()); break;                                     // BINPUT
      case 0x72: putMemo(lenU32()); break;                                 // LONG_BINPUT
      case 0x94: putMemo(memo.size); break;                                // MEMOIZE
      case 0x70: putMemo(Number(parseIntText(line()))); break;            // PUT
      case 0x68: stack.push(getMemo(u8())); break;                         // BINGET
      case 0x6a: stack.push(getMemo(lenU32())); break;                     // LONG_BINGET
      case 0x67: stack.push(getMemo(Number(parseIntText(line())))); break;  // GET
      case 0x63: {                                                         // GLOBAL
        const module = line();
        const name = line();
        stack.push(resolveGlobal(file, module, name));
        break;
      }
      case 0x93: {                                                         // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(resolveGlobal(file, module as string, name as string));
        break;
      }
      case 0x52: {                                                         // REDUCE
        const args = pop(), fn = pop();
        stack.push(callGlobal(file, fn, args));
        break;
      }
      case 0x81: {                                                         // NEWOBJ: cls.__new__(cls, *args)
        const args = pop(), cls = pop();
        stack.push(callGlobal(file, cls, args));
        break;
      }
      case 0x62: {                                                         // BUILD: obj.__setstate__(state)
        const state = pop();
        const obj = top();
        // OrderedDict state dicts carry `_metadata` (module versions); tensors may carry Python attributes.
        if (!(obj instanceof PyDict || obj instanceof TensorRef)) fail(`BUILD on a ${describe(obj)}`);
        void state;
        break;
      }
      case 0x51: stack.push(persistentLoad(pop())); break;                 // BINPERSID
      case 0x69: fail(`INST opcode (instantiates '${line()}.${line()}') is not allowed`); break;
      case 0x6f: fail('OBJ opcode is not allowed'); break;
      case 0x50: fail('text PERSID is not supported'); break;
      default: fail(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}

const isInt = (v: PyValue): v is number => typeof v === 'number' && Number.isSafeInteger(v);

/** Interprets a call of an allowlisted global (REDUCE / NEWOBJ); nothing is executed. */
function callGlobal(file: string, fn: PyValue, args: PyValue): PyValue {
  const bad = (msg: string): never => { throw new FormatError(`${file}: ${msg}`); };
  if (!(fn instanceof PyGlobal)) return bad(`pickle calls a ${describe(fn)}, not an allowed function`);
  if (!(args instanceof PyTuple)) return bad(`arguments of ${fn.qualname} must be a tuple, got ${describe(args)}`);
  const a = args.items;
  switch (fn.qualname) {
    case 'collections.OrderedDict':
      if (a.length) bad('collections.OrderedDict called with arguments');
      return new PyDict();
    case 'torch._utils._rebuild_tensor':
    case 'torch._utils._rebuild_tensor_v2': {
      // (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
      if (fn.name === '_rebuild_tensor' ? a.length !== 4 : a.length < 6 || a.length > 7) bad(`${fn.qualname} called with ${a.length} arguments`);
      const [storage, offset, size, stride] = a;
      if (!(storage instanceof StorageRef)) return bad(`${fn.qualname}: first argument is a ${describe(storage ?? null)}, not a storage`);
      const dims = (v: PyValue | undefined, what: string): number[] => {
        if (!(v instanceof PyTuple) || v.items.length > MAX_DIMS || !v.items.every((d) => isInt(d) && d >= 0))
          return bad(`${fn.qualname}: invalid ${what} ${v instanceof PyTuple ? `(${v.items.map(String)})` : describe(v ?? null)}`);
        return v.items as number[];
      };
      const sz = dims(size, 'size'), st = dims(stride, 'stride');
      if (sz.length !== st.length) bad(`${fn.qualname}: size (${sz}) and stride (${st}) differ in length`);
      if (!isInt(offset ?? null) || (offset as number) < 0) bad(`${fn.qualname}: invalid storage offset ${String(offset)}`);
      return new TensorRef(storage, offset as number, sz, st);
    }
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      // (data, requires_grad, backward_hooks[, state]): a Parameter is just its tensor here
      if (!(a[0] instanceof TensorRef) || a.length < 3 || a.length > 4) return bad(`${fn.qualname}: expected (tensor, requires_grad, hooks)`);
      return a[0];
    case 'torch._tensor._rebuild_from_type_v2': {
      // (func, type, args, state): func(*args) re-typed as `type`; only plain tensors/parameters
      const [f, type, inner] = a;
      if (a.length !== 4 || !(type instanceof PyGlobal) || !TYPES.has(type.qualname)) return bad(`${fn.qualname}: unsupported tensor type ${describe(type ?? null)}`);
      if (!(f instanceof PyGlobal) || !f.name.startsWith('_rebuild_')) return bad(`${fn.qualname}: unsupported rebuild function ${describe(f ?? null)}`);
      const r = callGlobal(file, f, inner ?? null);
      if (!(r instanceof TensorRef)) bad(`${fn.qualname}: did not produce a tensor`);
      return r;
    }
    default:
      return bad(`pickle calls '${fn.qualname}', which is not a function`);
  }
}

/**
 * persistent_id of a storage: ('storage', torch.<T>Storage, key, location, numel) in the zip format,
 * plus a sixth view_metadata item (None) in the legacy format.
 */
function parseStoragePid(file: string, pid: PyValue, legacy: boolean): { key: string; dtype: StorageDType; numel: number } {
  const items = pid instanceof PyTuple ? pid.items : null;
  if (!items || items[0] !== 'storage' || items.length !== (legacy ? 6 : 5))
    throw new FormatError(`${file}: unsupported persistent id (${pid instanceof PyTuple ? `tuple of ${pid.items.length}` : describe(pid)}); expected a storage reference`);
  const [, type, key, location, numel] = items;
  if (!(type instanceof PyGlobal) || type.module !== 'torch' || !(type.name in STORAGE_CLASSES))
    throw new FormatError(`${file}: unsupported storage type ${describe(type ?? null)}`);
  if (typeof key !== 'string' || !/^[A-Za-z0-9_]{1,64}$/.test(key)) throw new FormatError(`${file}: invalid storage key ${JSON.stringify(String(key))}`);
  if (typeof location !== 'string') throw new FormatError(`${file}: storage '${key}' has an invalid location`);
  if (!isInt(numel ?? null) || (numel as number) < 0) throw new FormatError(`${file}: storage '${key}' has an invalid size ${String(numel)}`);
  if (legacy && items[5] !== null) throw new FormatError(`${file}: legacy storage views (storage '${key}') are not supported`);
  return { key, dtype: STORAGE_CLASSES[type.name]![0], numel: numel as number };
}

// ---- flattening and materialising ------------------------------------------------------------------

const MAX_DEPTH = 64;
/** Containers may be shared (memo), so a walk can revisit them: bounded to stop exponential blow-ups. */
const MAX_VISITS = 1_000_000;

/** Flattens nested dicts/lists/tuples of tensors into '.'-joined names; other leaves are skipped. */
function flatten(file: string, root: PyValue): Map<string, TensorRef> {
  if (!(root instanceof PyDict)) throw new FormatError(`${file}: expected a state dict (a dict of tensors) but the pickle holds a ${describe(root)}`);
  const out = new Map<string, TensorRef>();
  const onPath = new Set<object>();
  let visits = 0;
  const walk = (v: PyValue, name: string, depth: number): void => {
    if (++visits > MAX_VISITS) throw new FormatError(`${file}: the pickled object has more than ${MAX_VISITS} entries`);
    if (v instanceof TensorRef) {
      if (out.has(name)) throw new FormatError(`${file}: tensor name '${name}' occurs twice after flattening`);
      out.set(name, v);
      return;
    }
    if (!(v instanceof PyDict || v instanceof PyList || v instanceof PyTuple)) return;
    if (depth > MAX_DEPTH) throw new FormatError(`${file}: containers nested deeper than ${MAX_DEPTH} levels`);
    if (onPath.has(v)) throw new FormatError(`${file}: the pickled object contains a reference cycle at '${name}'`);
    onPath.add(v);
    const pre = name ? `${name}.` : '';
    if (v instanceof PyDict) {
      for (const [k, x] of v.entries.values()) {
        if (typeof k !== 'string' && !isInt(k)) throw new FormatError(`${file}: dict key of type ${describe(k)} under '${name}' cannot name a tensor`);
        walk(x, pre + String(k), depth + 1);
      }
    } else {
      v.items.forEach((x, i) => walk(x, pre + String(i), depth + 1));
    }
    onPath.delete(v);
  };
  walk(root, '', 0);
  return out;
}

/** Views whose elements outnumber their storage (stride 0 broadcasts) may not exceed this size. */
const MAX_EXPANDED_BYTES = 64 * 1024 * 1024;

/** Checks that a view lies inside its storage; returns its element count. */
function checkView(file: string, name: string, t: TensorRef, storageNumel: number): number {
  let numel = 1;
  let last = t.offset;
  for (let d = 0; d < t.size.length; d++) {
    numel *= t.size[d]!;
    if (t.size[d]! > 0) last += (t.size[d]! - 1) * t.stride[d]!;
  }
  if (!Number.isSafeInteger(numel) || !Number.isSafeInteger(last)) throw new FormatError(`${file}: tensor '${name}' has an impossible size [${t.size}]`);
  if (numel > 0 && last >= storageNumel)
    throw new FormatError(`${file}: tensor '${name}' (offset ${t.offset}, size [${t.size}], stride [${t.stride}]) reaches element ${last} of a ${storageNumel}-element storage`);
  const esize = ESIZE[t.storage.dtype];
  if (numel > storageNumel && numel * esize > MAX_EXPANDED_BYTES)
    throw new FormatError(`${file}: tensor '${name}' expands a ${storageNumel}-element storage to ${numel} elements; refusing`);
  return numel;
}

/** Copies a (possibly strided) view out of storage bytes into a fresh, aligned, contiguous buffer. */
function gather(src: Uint8Array, esize: number, t: TensorRef, numel: number): Uint8Array {
  const out = new Uint8Array(numel * esize);
  if (numel === 0) return out;
  const { size, stride, offset } = t;
  const nd = size.length;
  let contiguous = true;
  for (let d = nd - 1, expect = 1; d >= 0; d--) {
    if (size[d] !== 1 && stride[d] !== expect) { contiguous = false; break; }
    expect *= size[d]!;
  }
  if (contiguous) {
    out.set(src.subarray(offset * esize, (offset + numel) * esize));
    return out;
  }
  // odometer over all dims but the last; the last dim is copied as a run when its stride is 1
  const idx = new Array<number>(nd).fill(0);
  const inner = size[nd - 1]!, innerStride = stride[nd - 1]!;
  let o = 0;
  for (let done = 0; done < numel; done += inner) {
    let base = offset;
    for (let d = 0; d < nd - 1; d++) base += idx[d]! * stride[d]!;
    if (innerStride === 1) {
      out.set(src.subarray(base * esize, (base + inner) * esize), o);
      o += inner * esize;
    } else {
      for (let i = 0; i < inner; i++, o += esize) {
        const s = (base + i * innerStride) * esize;
        for (let k = 0; k < esize; k++) out[o + k] = src[s + k]!;
      }
    }
    for (let d = nd - 2; d >= 0; d--) {
      if (++idx[d]! < size[d]!) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** Builds our tensor from contiguous little-endian element bytes. */
function makeTensor(bytes: Uint8Array, dtype: StorageDType, shape: number[]): Tensor {
  const ab = bytes.buffer as ArrayBuffer;
  switch (dtype) {
    case 'f32': return tensor(new Float32Array(ab), shape, { dtype: 'f32' });
    case 'f16':
    case 'bf16': return tensor(new Uint16Array(ab), shape, { dtype });
    case 'f64': return tensor(Float32Array.from(new Float64Array(ab)), shape, { dtype: 'f32' });
    case 'i64': return tensor(new BigInt64Array(ab), shape, { dtype: 'i64' });
    case 'i32': return tensor(new Int32Array(ab), shape, { dtype: 'i32' });
    case 'i16': return tensor(Int32Array.from(new Int16Array(ab)), shape, { dtype: 'i32' });
    case 'i8': return tensor(Int32Array.from(new Int8Array(ab)), shape, { dtype: 'i32' });
    case 'u8': return tensor(Int32Array.from(bytes), shape, { dtype: 'i32' });
    case 'bool': return tensor(bytes.map((v) => (v ? 1 : 0)), shape, { dtype: 'bool' });
  }
}

/**
 * Output tensors may repeat shared storages (tied weights; prefix-tuning pools saved once per layer), but
 * no more than this many times the file's size in total (plus MAX_EXPANDED_BYTES).
 */
const MAX_AMPLIFICATION = 64;

/** Validates every view against its storage bytes, then creates the tensors (all or none). */
function materialise(file: string, fileSize: number, refs: Map<string, TensorRef>, storageBytes: (s: StorageRef) => Uint8Array): Map<string, Tensor> {
  const plan: [string, TensorRef, Uint8Array, number][] = [];
  let total = 0;
  for (const [name, t] of refs) {
    const bytes = storageBytes(t.storage);
    const esize = ESIZE[t.storage.dtype];
    if (bytes.length !== t.storage.numel * esize)
      throw new FormatError(`${file}: storage '${t.storage.key}' holds ${bytes.length} bytes but ${t.storage.numel} ${t.storage.dtype} elements need ${t.storage.numel * esize}`);
    const numel = checkView(file, name, t, t.storage.numel);
    total += numel * esize;
    if (total > MAX_AMPLIFICATION * fileSize + MAX_EXPANDED_BYTES)
      throw new FormatError(`${file}: its tensors would take more than ${MAX_AMPLIFICATION}x the file's ${fileSize} bytes; refusing`);
    plan.push([name, t, bytes, numel]);
  }
  const out = new Map<string, Tensor>();
  try {
    for (const [name, t, bytes, numel] of plan)
      out.set(name, makeTensor(gather(bytes, ESIZE[t.storage.dtype], t, numel), t.storage.dtype, t.size));
  } catch (e) {
    for (const x of out.values()) x.dispose();
    throw e;
  }
  return out;
}

// ---- the two container formats -----------------------------------------------------------------------

function readZipCheckpoint(b: Bytes): Map<string, Tensor> {
  const { file } = b;
  const entries = readZip(b);
  // torch names every record `<archive>/...`; the archive folder is whatever holds data.pkl
  const pkls = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkls.length !== 1) throw new FormatError(`${file}: expected exactly one '<archive>/data.pkl' in the zip, found ${pkls.length}`);
  const prefix = pkls[0]!.slice(0, -'data.pkl'.length);
  const order = entries.get(`${prefix}byteorder`);
  if (order) {
    const s = Buffer.from(entryBytes(b, order)).toString('latin1');
    if (s !== 'little') throw new FormatError(`${file}: byteorder '${s.slice(0, 16)}' is not supported (little-endian only)`);
  }
  const pkl = new Bytes(entryBytes(b, entries.get(pkls[0]!)!), `${file}:${pkls[0]}`);
  const { value, end } = unpickle(pkl, 0, (pid) => {
    const s = parseStoragePid(file, pid, false);
    return new StorageRef(s.key, s.dtype, s.numel);
  });
  if (end !== pkl.buf.length) throw new FormatError(`${file}: ${pkl.buf.length - end} stray bytes after the pickle in data.pkl`);
  const refs = flatten(file, value);
  const cache = new Map<string, Uint8Array>();
  return materialise(file, b.buf.length, refs, (s) => {
    let bytes = cache.get(s.key);
    if (!bytes) {
      const e = entries.get(`${prefix}data/${s.key}`);
      if (!e) throw new FormatError(`${file}: storage '${s.key}' is missing (no '${prefix}data/${s.key}' in the zip)`);
      bytes = entryBytes(b, e);
      cache.set(s.key, bytes);
    }
    return bytes;
  });
}

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

function readLegacyCheckpoint(b: Bytes): Map<string, Tensor> {
  const { file, buf } = b;
  const noPid: PersistentLoad = () => { throw new FormatError(`${file}: unexpected persistent id in the legacy header`); };
  let r = unpickle(b, 0, noPid);
  if (r.value !== LEGACY_MAGIC) throw new FormatError(`${file}: not a PyTorch checkpoint (bad magic number)`);
  r = unpickle(b, r.end, noPid);
  if (r.value !== LEGACY_PROTOCOL) throw new FormatError(`${file}: unsupported legacy protocol version ${String(r.value)}`);
  r = unpickle(b, r.end, noPid);  // sys_info
  if (r.value instanceof PyDict && r.value.entries.get(hashKey(file, 'little_endian'))?.[1] === false)
    throw new FormatError(`${file}: big-endian checkpoints are not supported`);
  const refsByKey = new Map<string, StorageRef>();
  r = unpickle(b, r.end, (pid) => {
    const s = parseStoragePid(file, pid, true);
    const prev = refsByKey.get(s.key);
    if (prev && (prev.dtype !== s.dtype || prev.numel !== s.numel)) throw new FormatError(`${file}: storage '${s.key}' is declared twice differently`);
    const ref = prev ?? new StorageRef(s.key, s.dtype, s.numel);
    refsByKey.set(s.key, ref);
    return ref;
  });
  const refs = flatten(file, r.value);
  r = unpickle(b, r.end, noPid);
  if (!(r.value instanceof PyList) || !r.value.items.every((k) => typeof k === 'string'))
    throw new FormatError(`${file}: the legacy storage key list is missing`);
  // storages follow in key order, each as an i64 element count and its bytes
  const data = new Map<string, Uint8Array>();
  let p = r.end;
  for (const key of r.value.items as string[]) {
    const ref = refsByKey.get(key);
    if (!ref) throw new FormatError(`${file}: storage '${key}' has data but no tensor refers to it`);
    if (data.has(key)) throw new FormatError(`${file}: storage '${key}' is stored twice`);
    b.check(p, 8, `size of storage '${key}'`);
    const n = b.dv.getBigInt64(p, true);
    if (n !== BigInt(ref.numel)) throw new FormatError(`${file}: storage '${key}' holds ${n} elements, expected ${ref.numel}`);
    const nbytes = ref.numel * ESIZE[ref.dtype];
    b.check(p + 8, nbytes, `data of storage '${key}'`);
    data.set(key, buf.subarray(p + 8, p + 8 + nbytes));
    p += 8 + nbytes;
  }
  return materialise(file, buf.length, refs, (s) => {
    const bytes = data.get(s.key);
    if (!bytes) throw new FormatError(`${file}: storage '${s.key}' has no data`);
    return bytes;
  });
}

// ---- public API ----------------------------------------------------------------------------------

/**
 * Reads a `torch.save` checkpoint held in memory; `name` labels errors. Returns the state dict's tensors
 * (nested containers flattened with '.'). Throws FormatError for anything it does not accept.
 */
export function readTorchBinBuffer(buf: Uint8Array, name: string): Map<string, Tensor> {
  const b = new Bytes(buf, name);
  if (buf.length >= 4 && b.dv.getUint32(0, true) === SIG_LOCAL) return readZipCheckpoint(b);
  if (buf.length >= 2 && buf[0] === 0x80) return readLegacyCheckpoint(b);
  if (buf.length >= 262 && Buffer.from(buf.subarray(257, 262)).toString('latin1') === 'ustar')
    throw new FormatError(`${name}: tar-format PyTorch checkpoints (torch < 0.4) are not supported`);
  throw new FormatError(`${name}: not a PyTorch checkpoint (neither a zip archive nor a pickle)`);
}

/** Loads the tensors of a `pytorch_model.bin`-style file (see readTorchBinBuffer). */
export function loadTorchBin(file: string): Map<string, Tensor> {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new IOError(`cannot read ${file}: ${(e as Error).message}`);
  }
  return readTorchBinBuffer(buf, file);
}
