// Elementwise |got - want| <= atol + rtol * |want|  (numpy/torch allclose semantics).
// NaN matches only NaN; +/-Infinity matches only the same infinity.

export interface AllcloseResult {
  ok: boolean;
  /** max |got - want| over finite pairs */
  maxAbs: number;
  /** max |got - want| / |want| over finite pairs with want != 0 */
  maxRel: number;
  /** first failing flat index, -1 if none */
  firstBad: number;
  /** number of failing elements */
  numBad: number;
  /** human readable summary, suitable as an assertion message */
  message: string;
}

export function allclose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  rtol: number,
  atol: number,
  label = '',
): AllcloseResult {
  const prefix = label ? `${label}: ` : '';
  if (got.length !== want.length) {
    return {
      ok: false, maxAbs: Infinity, maxRel: Infinity, firstBad: 0, numBad: Math.max(got.length, want.length),
      message: `${prefix}length mismatch: got ${got.length}, want ${want.length}`,
    };
  }
  let maxAbs = 0;
  let maxRel = 0;
  let firstBad = -1;
  let numBad = 0;
  for (let i = 0; i < got.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    let bad: boolean;
    if (Number.isNaN(w) || Number.isNaN(g)) {
      bad = !(Number.isNaN(w) && Number.isNaN(g));
    } else if (!Number.isFinite(w) || !Number.isFinite(g)) {
      bad = g !== w;
    } else {
      const err = Math.abs(g - w);
      if (err > maxAbs) maxAbs = err;
      if (w !== 0) {
        const rel = err / Math.abs(w);
        if (rel > maxRel) maxRel = rel;
      }
      bad = !(err <= atol + rtol * Math.abs(w));
    }
    if (bad) {
      numBad++;
      if (firstBad < 0) firstBad = i;
    }
  }
  const ok = numBad === 0;
  let message = `${prefix}${ok ? 'ok' : 'MISMATCH'} n=${got.length} maxAbs=${maxAbs.toExponential(3)} ` +
    `maxRel=${maxRel.toExponential(3)} (rtol=${rtol}, atol=${atol})`;
  if (!ok) {
    message += `; ${numBad} bad, first at [${firstBad}]: got ${got[firstBad]} want ${want[firstBad]}`;
  }
  return { ok, maxAbs, maxRel, firstBad, numBad, message };
}
