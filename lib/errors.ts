/**
 * Typed errors. Every failure of the library surfaces as an `AdaptersError` subclass whose message names
 * the op (or API) and the offending shapes, dtypes or names. Native errors carry a `code` that maps here.
 */
export class AdaptersError extends Error {
  /** Machine-readable kind, e.g. 'ShapeError'. */
  readonly code: string;
  constructor(message: string, code = 'AdaptersError') {
    super(message);
    this.name = code;
    this.code = code;
  }
}
/** Shapes that don't match or can't broadcast. */
export class ShapeError extends AdaptersError {
  constructor(m: string) { super(m, 'ShapeError'); }
}
/** Wrong or mixed dtypes. */
export class DTypeError extends AdaptersError {
  constructor(m: string) { super(m, 'DTypeError'); }
}
/** Tensors on different or unsupported devices. */
export class DeviceError extends AdaptersError {
  constructor(m: string) { super(m, 'DeviceError'); }
}
/** Out-of-range index, dimension or id. */
export class IndexError extends AdaptersError {
  constructor(m: string) { super(m, 'IndexError'); }
}
/** A tensor used after dispose(). */
export class DisposedError extends AdaptersError {
  constructor(m: string) { super(m, 'DisposedError'); }
}
/** Bad argument values (wrong type, out-of-range option). */
export class ValueError extends AdaptersError {
  constructor(m: string) { super(m, 'ValueError'); }
}
/** Misuse of the autograd tape (backward through a freed graph, non-scalar root, ...). */
export class AutogradError extends AdaptersError {
  constructor(m: string) { super(m, 'AutogradError'); }
}
/** Native allocation failure. */
export class MemoryError extends AdaptersError {
  constructor(m: string) { super(m, 'MemoryError'); }
}

/** A file that doesn't follow its format (safetensors header, config.json, pickle, ...). */
export class FormatError extends AdaptersError {
  constructor(m: string) { super(m, 'FormatError'); }
}
/** A file that can't be read or written. */
export class IOError extends AdaptersError {
  constructor(m: string) { super(m, 'IOError'); }
}

const byCode: Record<string, new (m: string) => AdaptersError> = {
  ShapeError, DTypeError, DeviceError, IndexError, DisposedError, ValueError, AutogradError, MemoryError, FormatError, IOError,
  TypeError: ValueError,
};

/** Converts a native exception (with `.code`) into the matching AdaptersError; rethrows others. */
export function fromNative(e: unknown): never {
  if (e instanceof AdaptersError) throw e;
  const err = e as { code?: string; message?: string };
  if (err && typeof err.code === 'string') {
    const C = byCode[err.code] ?? AdaptersError;
    throw new C(err.message ?? String(e));
  }
  throw e;
}
