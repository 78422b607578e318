/**
 * Evaluation metrics as the GLUE tasks report them (scikit-learn / scipy definitions): accuracy, binary F1,
 * Matthews correlation, Pearson and Spearman correlation, and perplexity from a mean cross-entropy.
 */
import { ValueError } from '../errors.ts';

function same(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  if (a.length !== b.length) throw new ValueError(`${what}: ${a.length} predictions for ${b.length} labels`);
  if (!a.length) throw new ValueError(`${what}: no examples`);
}

export function accuracy(pred: ArrayLike<number>, label: ArrayLike<number>): number {
  same(pred, label, 'accuracy');
  let ok = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === label[i]) ok++;
  return ok / pred.length;
}

/** F1 of the positive class (sklearn f1_score, average='binary'); 0 when there are no true or predicted positives. */
export function f1(pred: ArrayLike<number>, label: ArrayLike<number>, positive = 1): number {
  same(pred, label, 'f1');
  let tp = 0, fp = 0, fn = 0;
  for (let i = 0; i < pred.length; i++) {
    const p = pred[i] === positive, l = label[i] === positive;
    if (p && l) tp++; else if (p) fp++; else if (l) fn++;
  }
  return tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
}

/** Matthews correlation coefficient, multiclass form (sklearn matthews_corrcoef); 0 when undefined. */
export function matthewsCorrcoef(pred: ArrayLike<number>, label: ArrayLike<number>): number {
  same(pred, label, 'matthews_corrcoef');
  const classes = [...new Set([...Array.from(pred), ...Array.from(label)])];
  const idx = new Map(classes.map((c, i) => [c, i]));
  const K = classes.length, n = pred.length;
  const t = new Float64Array(K), p = new Float64Array(K);
  let c = 0;
  for (let i = 0; i < n; i++) {
    t[idx.get(label[i]!)!]++;
    p[idx.get(pred[i]!)!]++;
    if (pred[i] === label[i]) c++;
  }
  let tp = 0, tt = 0, pp = 0;
  for (let k = 0; k < K; k++) { tp += t[k]! * p[k]!; tt += t[k]! * t[k]!; pp += p[k]! * p[k]!; }
  const den = Math.sqrt((n * n - pp) * (n * n - tt));
  return den === 0 ? 0 : (c * n - tp) / den;
}

export function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  same(x, y, 'pearson');
  const n = x.length;
  let mx = 0, my = 0;
  for (let i = 0; i < n; i++) { mx += x[i]!; my += y[i]!; }
  mx /= n; my /= n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) { const a = x[i]! - mx, b = y[i]! - my; sxy += a * b; sxx += a * a; syy += b * b; }
  return sxx === 0 || syy === 0 ? NaN : sxy / Math.sqrt(sxx * syy);
}

/** Average ranks (ties share the mean rank), as scipy.stats.rankdata. */
function ranks(v: ArrayLike<number>): Float64Array {
  const order = Array.from(v, (x, i) => [x, i] as const).sort((a, b) => a[0] - b[0]);
  const r = new Float64Array(v.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++;
    for (let k = i; k <= j; k++) r[order[k]![1]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return r;
}

export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  same(x, y, 'spearman');
  return pearson(ranks(x), ranks(y));
}

/** exp(mean token cross-entropy). */
export function perplexity(meanLoss: number): number {
  return Math.exp(meanLoss);
}
