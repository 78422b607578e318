/**
 * Composition blocks of the Python Adapters library (`composition.py`): Stack, Fuse, Split, BatchSplit,
 * Parallel, Average, with its nesting table and validation. A setup is a name, or a block of names and blocks;
 * a plain list means Stack. Sites evaluate the (per-layer filtered) setup with their method's primitives.
 * https://docs.adapterhub.ml/adapter_composition.html
 */
import { ValueError } from '../errors.ts';

export type Setup = string | CompositionBlock;

export abstract class CompositionBlock {
  abstract readonly type: 'Stack' | 'Fuse' | 'Split' | 'BatchSplit' | 'Parallel' | 'Average';
  readonly children: Setup[];
  constructor(children: (Setup | Setup[])[]) {
    this.children = children.map((c) => (Array.isArray(c) ? new Stack(...c) : c));
    for (const c of this.children)
      if (typeof c !== 'string' && !(c instanceof CompositionBlock)) throw new ValueError(`invalid adapter setup element ${JSON.stringify(c)}`);
  }
  /** Every adapter name in the block, depth first, without repeats. */
  flatten(): string[] {
    const out: string[] = [];
    for (const c of this.children) for (const n of typeof c === 'string' ? [c] : c.flatten()) if (!out.includes(n)) out.push(n);
    return out;
  }
  protected kwargs(): Record<string, unknown> | null {
    return null;
  }
  /** The serialized form of adapter_setup.json (`{type, children, kwargs?}`; names as `single` blocks). */
  toDict(): Record<string, unknown> {
    const d: Record<string, unknown> = {
      type: this.type,
      children: this.children.map((c) => (typeof c === 'string' ? { type: 'single', children: [c] } : c.toDict())),
    };
    const kw = this.kwargs();
    if (kw) d.kwargs = kw;
    return d;
  }
  toString(): string {
    return `${this.type}[${this.children.map(String).join(', ')}]`;
  }
}

/** The last adapter of a setup (the Python library's AdapterCompositionBlock.last). */
export function lastOf(s: Setup): string {
  if (typeof s === 'string') return s;
  return lastOf(s.children[s.children.length - 1]!);
}

export class Stack extends CompositionBlock {
  readonly type = 'Stack';
  constructor(...children: (Setup | Setup[])[]) {
    super(children);
  }
}
export class Fuse extends CompositionBlock {
  readonly type = 'Fuse';
  readonly name: string;
  constructor(...args: (Setup | Setup[] | { name?: string })[]) {
    const opts = args.length && typeof args[args.length - 1] === 'object' && !(args[args.length - 1] instanceof CompositionBlock) && !Array.isArray(args[args.length - 1])
      ? (args.pop() as { name?: string }) : {};
    super(args as Setup[]);
    // the Python library's name: each child's name, or a nested block's last adapter
    this.name = opts.name ?? this.children.map((c) => (typeof c === 'string' ? c : lastOf(c))).join(',');
  }
}
export class Split extends CompositionBlock {
  readonly type = 'Split';
  constructor(children: Setup[], readonly splits: number[]) {
    super(children);
    if (!Array.isArray(splits) || splits.length !== this.children.length || splits.some((s) => !Number.isInteger(s) || s <= 0))
      throw new ValueError(`Split: splits must be one positive integer per child, got ${JSON.stringify(splits)}`);
  }
  protected override kwargs(): Record<string, unknown> {
    return { splits: this.splits };
  }
}
export class BatchSplit extends CompositionBlock {
  readonly type = 'BatchSplit';
  constructor(children: Setup[], readonly batchSizes: number[]) {
    super(children);
    if (!Array.isArray(batchSizes) || batchSizes.length !== this.children.length || batchSizes.some((s) => !Number.isInteger(s) || s < 0))
      throw new ValueError(`BatchSplit: batch_sizes must be one non-negative integer per child, got ${JSON.stringify(batchSizes)}`);
  }
  protected override kwargs(): Record<string, unknown> {
    return { batch_sizes: this.batchSizes };
  }
}
export class Parallel extends CompositionBlock {
  readonly type = 'Parallel';
  constructor(...children: (Setup | Setup[])[]) {
    super(children);
  }
}
export class Average extends CompositionBlock {
  readonly type = 'Average';
  readonly weights: number[];
  constructor(children: Setup[], opts: { weights?: number[]; normalizeWeights?: boolean } = {}) {
    super(children);
    let w = opts.weights ?? this.children.map(() => 1 / this.children.length);
    if (w.length !== this.children.length) throw new ValueError(`Average: ${w.length} weights for ${this.children.length} children`);
    if (opts.normalizeWeights ?? true) {
      const s = w.reduce((a, b) => a + b, 0);
      w = w.map((x) => x / s);
    }
    this.weights = w;
  }
  protected override kwargs(): Record<string, unknown> {
    return { weights: this.weights };
  }
}

/** ALLOWED_NESTINGS of the Python library: which children each block may hold. */
const ALLOWED: Record<string, string[]> = {
  Stack: ['str', 'Fuse', 'Split', 'Parallel', 'BatchSplit', 'Average'],
  Fuse: ['str', 'Stack'],
  Split: ['str', 'Split', 'Stack', 'BatchSplit', 'Average'],
  Parallel: ['str', 'Stack', 'BatchSplit', 'Average'],
  BatchSplit: ['str', 'Stack', 'Split', 'BatchSplit', 'Average'],
  Average: ['str', 'Stack', 'Split', 'BatchSplit'],
};

/** validate_composition: nesting rules and the depth limit (below level 1 only Stack and names). */
export function validateComposition(setup: Setup, level = 0): void {
  if (level > 1 && !(typeof setup === 'string' || setup instanceof Stack))
    throw new ValueError(`Adapter setup is too deep. Cannot have ${String(setup)} at level ${level}.`);
  if (typeof setup === 'string') return;
  for (const c of setup.children) {
    const kind = typeof c === 'string' ? 'str' : c.type;
    if (!ALLOWED[setup.type]!.includes(kind)) throw new ValueError(`Adapter setup is invalid. Cannot nest ${String(c)} in ${String(setup)}`);
    validateComposition(c, level + 1);
  }
}

/** parse_composition: a name at level 0 becomes Stack(name); a list becomes a Stack, a list inside it a Fuse (v1.x lists). */
export function parseComposition(setup: Setup | Setup[] | null, level = 0): CompositionBlock | string | null {
  if (setup === null) return null;
  if (Array.isArray(setup)) {
    const kids = setup.map((s) => parseComposition(s, level + 1)!);
    return level === 1 ? new Fuse(...kids) : new Stack(...kids);
  }
  if (typeof setup === 'string') {
    if (setup.includes(',')) return new Stack(...setup.split(',').map((s) => s.trim()).filter(Boolean));
    return level === 0 ? new Stack(setup) : setup;
  }
  return setup;
}

/** Reads the `adapter_setup` object of adapter_setup.json. */
export function compositionFromDict(d: Record<string, unknown>): Setup {
  const type = d.type as string;
  const kids = (d.children as unknown[]) ?? [];
  if (type === 'single') return String(kids[0]);
  const children = kids.map((k) => compositionFromDict(k as Record<string, unknown>));
  const kw = (d.kwargs as Record<string, unknown>) ?? {};
  switch (type) {
    case 'Stack': return new Stack(...children);
    case 'Fuse': return new Fuse(...children);
    case 'Parallel': return new Parallel(...children);
    case 'Split': return new Split(children, kw.splits as number[]);
    case 'BatchSplit': return new BatchSplit(children, kw.batch_sizes as number[]);
    case 'Average': return new Average(children, { weights: kw.weights as number[], normalizeWeights: false });
    default: throw new ValueError(`unknown composition block type ${JSON.stringify(type)}`);
  }
}

/**
 * The setup as seen by one site: names it doesn't hold are dropped, emptied blocks vanish, a Stack of one
 * child becomes that child. Returns null when nothing is left.
 */
export function filterSetup(setup: Setup | null, present: (name: string) => boolean): Setup | null {
  if (setup === null) return null;
  if (typeof setup === 'string') return present(setup) ? setup : null;
  const kids: Setup[] = [];
  const keptIdx: number[] = [];
  setup.children.forEach((c, i) => {
    const f = filterSetup(c, present);
    if (f !== null) { kids.push(f); keptIdx.push(i); }
  });
  if (!kids.length) return null;
  if (setup instanceof Stack) return kids.length === 1 ? kids[0]! : new Stack(...kids);
  if (kids.length !== setup.children.length) {
    if (setup instanceof Average) return kids.length === 1 ? kids[0]! : new Average(kids, { weights: keptIdx.map((i) => setup.weights[i]!), normalizeWeights: true });
    // positional blocks keep their geometry: a child absent at this site becomes an empty Stack (identity rows)
    const full: Setup[] = setup.children.map((_, i) => (keptIdx.includes(i) ? kids[keptIdx.indexOf(i)]! : new Stack()));
    if (setup instanceof Split) return new Split(full, setup.splits);
    if (setup instanceof BatchSplit) return new BatchSplit(full, setup.batchSizes);
    if (setup instanceof Parallel) return new Parallel(...full);
    throw new ValueError(`${String(setup)}: every adapter of the block must be present in each layer it applies to`);
  }
  if (setup instanceof Split) return new Split(kids, setup.splits);
  if (setup instanceof BatchSplit) return new BatchSplit(kids, setup.batchSizes);
  if (setup instanceof Average) return new Average(kids, { weights: setup.weights, normalizeWeights: false });
  if (setup instanceof Parallel) return new Parallel(...kids);
  return new Fuse(...kids, { name: (setup as Fuse).name });
}
