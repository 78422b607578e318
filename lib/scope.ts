/**
 * scope(fn): every tensor created while fn runs is disposed when it returns, except the tensors it
 * returns (a Tensor, or Tensors inside a returned array/object) and tensors explicitly kept with keep().
 * Scopes nest; an async fn is awaited before cleanup.
 */
import type { Tensor } from './tensor.ts';

const stack: Set<Tensor>[] = [];

/** @internal called by the Tensor constructor. */
export function trackInScope(t: Tensor): void {
  const top = stack[stack.length - 1];
  if (top) top.add(t);
}

/** Removes t from the current scope (and its parents) so that it survives them. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of stack) s.delete(t);
  return t;
}

function collect(v: unknown, out: Set<unknown>, depth = 0): void {
  if (!v || typeof v !== 'object' || depth > 4) return;
  if ((v as { handle?: unknown }).constructor?.name === 'Tensor') {
    out.add(v);
    return;
  }
  if (Array.isArray(v)) for (const x of v) collect(x, out, depth + 1);
  else if (v instanceof Map) for (const x of v.values()) collect(x, out, depth + 1);
  else if (Object.getPrototypeOf(v) === Object.prototype) for (const x of Object.values(v)) collect(x, out, depth + 1);
}

function finish(set: Set<Tensor>, result: unknown): void {
  const keepSet = new Set<unknown>();
  collect(result, keepSet);
  const parent = stack[stack.length - 1];
  for (const t of set) {
    if (keepSet.has(t)) {
      parent?.add(t);  // returned tensors belong to the enclosing scope
      continue;
    }
    // tensors still referenced as a gradient or by a returned tensor's graph are owned elsewhere
    t.dispose();
  }
}

export function scope<T>(fn: () => T): T {
  const set = new Set<Tensor>();
  stack.push(set);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    stack.pop();
    finish(set, undefined);
    throw e;
  }
  if (result instanceof Promise) {
    // async scopes: tensors created before the first await are tracked; cleanup after settle
    stack.pop();
    return result.then(
      (r) => { finish(set, r); return r; },
      (e) => { finish(set, undefined); throw e; },
    ) as T;
  }
  stack.pop();
  finish(set, result);
  return result;
}
