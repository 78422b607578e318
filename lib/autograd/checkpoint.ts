/**
 * Gradient checkpointing (torch.utils.checkpoint, reentrant form): run a block without recording the tape,
 * keep only its input, and in the backward pass run it again with recording on and backpropagate through
 * that recomputation. Memory per block drops to its input; compute grows by one forward.
 * The global RNG is rewound for the recomputation, so dropout masks are the same as in the forward.
 * Parameters inside the block receive their gradients from the nested backward directly.
 */
import type { Tensor } from '../tensor.ts';
import { isGradEnabled, noGrad, withGradEnabled } from './tape.ts';
import { withGrad } from '../tensor.ts';
import { scope, keep } from '../scope.ts';
import { getRngState, setRngState } from '../ops/creation.ts';

/**
 * @param params the block's parameters (the trainable ones link the recomputation into the tape)
 * @param context other tensors the block reads (masks, rotary tables): kept alive until the backward
 */
export function checkpoint(fn: (x: Tensor) => Tensor, x: Tensor, params: Tensor[], context: (Tensor | null | undefined)[] = []): Tensor {
  const trainable = params.filter((p) => p.requiresGrad);
  if (!isGradEnabled() || (!x.requiresGrad && !trainable.length)) return fn(x);
  const rngBefore = getRngState();
  const y = noGrad(() => fn(x));
  withGrad([y], 'checkpoint', [x, ...trainable], ([g]) => {
    const rngNow = getRngState();
    setRngState(rngBefore);
    try {
      const gx = scope(() => {
        const xi = x.detach();
        xi.requiresGrad = x.requiresGrad;
        const out = withGradEnabled(true, () => fn(xi));
        if (out.requiresGrad) out.backward(g!);
        const r = xi.grad ?? null;
        xi.grad = null;
        return r ? keep(r) : null;
      });
      return [gx, ...trainable.map(() => null)];
    } finally {
      setRngState(rngNow);
    }
  }, [], [x, ...context.filter((t): t is Tensor => !!t)]);
  return y;
}
