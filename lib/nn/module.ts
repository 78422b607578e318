/**
 * Module: a tree of named parameters, buffers and submodules with PyTorch's naming rules, so that
 * `namedParameters()` / `stateDict()` keys equal the Hugging Face state-dict keys (e.g.
 * `bert.encoder.layer.0.attention.self.query.weight`). Parameters are leaf tensors with requiresGrad.
 */
import { Tensor } from '../tensor.ts';
import { noGrad } from '../autograd/tape.ts';
import { ShapeError, ValueError } from '../errors.ts';

export interface LoadResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

export class Module {
  training = true;
  readonly #params = new Map<string, Tensor | null>();
  readonly #buffers = new Map<string, Tensor | null>();
  readonly #modules = new Map<string, Module | null>();

  /** Registers (or replaces) a parameter; it becomes a leaf with requiresGrad. */
  registerParameter(name: string, t: Tensor | null): Tensor | null {
    if (t) {
      t.requiresGrad = true;
    }
    this.#params.set(name, t);
    return t;
  }
  registerBuffer(name: string, t: Tensor | null): Tensor | null {
    this.#buffers.set(name, t);
    return t;
  }
  registerModule<M extends Module | null>(name: string, m: M): M {
    this.#modules.set(name, m);
    return m;
  }
  param(name: string): Tensor | null {
    return this.#params.get(name) ?? null;
  }
  buffer(name: string): Tensor | null {
    return this.#buffers.get(name) ?? null;
  }
  /** (name, submodule) pairs of the direct children, in registration order. */
  namedChildren(): [string, Module][] {
    return [...this.#modules].filter((e): e is [string, Module] => e[1] !== null);
  }
  child(name: string): Module | null {
    return this.#modules.get(name) ?? null;
  }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [n, m] of this.#modules) if (m) yield* m.namedModules(prefix ? `${prefix}.${n}` : n);
  }
  /**
   * (name, parameter) pairs in registration order; a parameter shared by two modules is listed once, unless
   * `aliases` (then once per path, as a PyTorch state_dict lists shared modules).
   */
  namedParameters(prefix = '', opts: { aliases?: boolean } = {}): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    const seen = new Set<Tensor>();
    for (const [mp, m] of this.namedModules(prefix))
      for (const [n, p] of m.#params)
        if (p && (opts.aliases || !seen.has(p))) {
          seen.add(p);
          out.push([mp ? `${mp}.${n}` : n, p]);
        }
    return out;
  }
  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }
  namedBuffers(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [mp, m] of this.namedModules(prefix))
      for (const [n, b] of m.#buffers) if (b) out.push([mp ? `${mp}.${n}` : n, b]);
    return out;
  }
  /** Parameters and buffers by name (the tensors themselves, not copies). */
  stateDict(prefix = ''): Map<string, Tensor> {
    return new Map([...this.namedParameters(prefix), ...this.namedBuffers(prefix)]);
  }
  /** Number of parameter elements (optionally only trainable ones). */
  numParameters(opts: { onlyTrainable?: boolean } = {}): number {
    return this.namedParameters()
      .filter(([, p]) => !opts.onlyTrainable || p.requiresGrad)
      .reduce((a, [, p]) => a + p.numel, 0);
  }

  /**
   * Copies tensors into the matching parameters/buffers (converted to their dtype). With `strict` (the
   * default) missing or unexpected keys are an error; shape mismatches always are.
   */
  loadStateDict(entries: Map<string, Tensor> | Record<string, Tensor>, opts: { strict?: boolean } = {}): LoadResult {
    const strict = opts.strict ?? true;
    const src = entries instanceof Map ? entries : new Map(Object.entries(entries));
    const own = this.stateDict();
    const missingKeys = [...own.keys()].filter((k) => !src.has(k));
    const unexpectedKeys = [...src.keys()].filter((k) => !own.has(k));
    if (strict && (missingKeys.length || unexpectedKeys.length))
      throw new ValueError(
        `loadStateDict: ${missingKeys.length ? `missing keys: ${missingKeys.slice(0, 10).join(', ')}${missingKeys.length > 10 ? ', ...' : ''}` : ''}` +
          `${missingKeys.length && unexpectedKeys.length ? '; ' : ''}` +
          `${unexpectedKeys.length ? `unexpected keys: ${unexpectedKeys.slice(0, 10).join(', ')}${unexpectedKeys.length > 10 ? ', ...' : ''}` : ''}`,
      );
    for (const [k, t] of src) {
      const dst = own.get(k);
      if (!dst) continue;
      if (dst.shape.join() !== t.shape.join())
        throw new ShapeError(`loadStateDict: '${k}' has shape [${t.shape}] but the model expects [${dst.shape}]`);
    }
    noGrad(() => {
      for (const [k, t] of src) own.get(k)?.copy_(t);
    });
    return { missingKeys, unexpectedKeys };
  }

  /** Sets training mode (dropout on) recursively. */
  /**
   * Moves every parameter and buffer to `device` ('cpu', 'cuda', 'cuda:N') in place (tensor identities, and so
   * optimisers' references, are kept), like torch's Module.to(device). Gradients move with their parameters.
   */
  to(device: string): this {
    const seen = new Set<Tensor>();
    for (const [, t] of [...this.namedParameters('', { aliases: true }), ...this.namedBuffers()])
      if (!seen.has(t)) {
        seen.add(t);
        t._moveTo(device);
      }
    return this;
  }
  /** The device of the first parameter ('cpu' for a module without parameters). */
  get device(): string {
    return this.parameters()[0]?.device ?? 'cpu';
  }
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }
  eval(): this {
    return this.train(false);
  }
  /** Disposes every parameter and buffer. */
  dispose(): void {
    for (const [, p] of this.namedParameters()) p.dispose();
    for (const [, b] of this.namedBuffers()) b.dispose();
  }
}
