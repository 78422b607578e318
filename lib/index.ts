/**
 * adapters-node public API. Tensors and ops (PyTorch names in camelCase), the autograd tape, memory
 * scopes, and capability queries. Model, adapter and training APIs build on these.
 */
import { native, type CudaMemoryStats } from './binding.ts';
import { DeviceError, fromNative } from './errors.ts';
import * as ops from './ops/index.ts';
import { liveTensorCount } from './tensor.ts';

export { Tensor, tensor, opProfile, type DType, type TensorOptions } from './tensor.ts';
export { ops };
export {
  zeros, ones, full, zerosLike, onesLike, fullLike, arange, rand, randn, manualSeed, getRngState, setRngState,
} from './ops/index.ts';
export { noGrad, isGradEnabled, withGradEnabled } from './autograd/tape.ts';
export { gradcheck, type GradcheckOptions } from './autograd/gradcheck.ts';
export { scope, keep } from './scope.ts';
export * from './errors.ts';

// models, tokenizers, checkpoints
export { AutoAdapterModel, AdapterModel, type FromPretrainedOptions } from './models/auto.ts';
export { supportedModelTypes, registerArch, type ArchSpec } from './models/registry.ts';
export type { ForwardInput, ModelOutput, KVCache, HFConfig } from './models/common.ts';
export { generate, type GenerateOptions } from './models/generate.ts';
export { generateSeq2seq } from './models/seq2seq_generate.ts';
export { AutoTokenizer, PreTrainedTokenizer } from './tokenizers/auto.ts';
export { loadSafetensors, saveSafetensors, readSafetensorsHeader } from './io/safetensors.ts';
export { loadTorchBin, readTorchBinBuffer } from './io/torch_bin.ts';
export { Module } from './nn/module.ts';
export { Linear, Embedding, LayerNorm, RMSNorm, Dropout } from './nn/layers.ts';
export { AdamW, SGD, Adafactor, LrScheduler, lrLambda, hfParamGroups, type ParamGroup, type ScheduleKind } from './train/optim.ts';
export { autocast, autocastActive } from './autocast.ts';
export { AdapterTrainer, type Example, type TrainingArguments, type TrainerData, type LogRecord } from './train/trainer.ts';
export { accuracy, f1, matthewsCorrcoef, pearson, spearman, perplexity } from './train/metrics.ts';
export { PredictionHead, lmLoss, type HeadConfig, type HeadType, type HeadOutput } from './heads/heads.ts';
export * from './adapters/config.ts';
export { Stack, Fuse, Split, BatchSplit, Parallel, Average, CompositionBlock, validateComposition, parseComposition, type Setup } from './adapters/composition.ts';

/**
 * Native memory in use: live tensors (JS objects), live storages and their bytes, pooled bytes, peak, and the bytes
 * reported to V8 as external memory (GC pressure for forgotten tensors; at most 256 MiB at a time).
 */
export function memoryStats(): { liveTensors: number; liveStorages: number; liveBytes: number; pooledBytes: number; peakBytes: number; reportedToV8Bytes: number } {
  return { liveTensors: liveTensorCount(), ...native.memoryStats() };
}
/** Returns pooled (cached, unused) native memory to the OS. */
export function emptyCache(): void {
  native.emptyCache();
}
/** Restarts the peak-bytes counter of memoryStats() from the bytes live now. */
export function resetPeakMemory(): void {
  native.resetPeakMemory();
}
/** Threads used by CPU kernels (cores, or ADAPTERS_NUM_THREADS). */
export function numThreads(): number {
  return native.numThreads();
}
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}
/** CPU features detected at run time and the GEMM kernels chosen. */
export function cpuInfo(): ReturnType<typeof native.cpuFeatures> {
  return native.cpuFeatures();
}
/** Whether a CUDA device is usable (the CUDA library loaded and found a GPU). */
export function hasCuda(): boolean {
  return native.hasCuda();
}
/**
 * The CUDA backend (cuda/, loaded at run time): device names, the caching allocator's statistics and cache.
 * Tensors move with `t.to('cuda')` / `t.cuda()` / `t.cpu()`; ops with a CUDA kernel (supportsOp(op, 'cuda'))
 * run where their inputs are, others throw a DeviceError naming the op.
 */
export const cuda = {
  isAvailable: (): boolean => native.hasCuda(),
  deviceCount: (): number => native.cudaInfo().devices.length,
  deviceName: (i = 0): string => {
    const d = native.cudaInfo().devices;
    if (!(i >= 0 && i < d.length)) throw new DeviceError(`cuda.deviceName(${i}): ${d.length} CUDA device(s)`);
    return d[i]!;
  },
  /** Why CUDA is unavailable ('' when the library loaded). */
  loadError: (): string => native.cudaInfo().error,
  memoryStats: (): CudaMemoryStats => call(() => native.cudaMemory('stats')),
  emptyCache: (): void => call(() => native.cudaMemory('empty')),
  resetPeakMemory: (): void => call(() => native.cudaMemory('resetPeak')),
  /** Waits for queued GPU work and reports its first error. */
  synchronize: (): void => call(() => native.cudaMemory('sync')),
  /**
   * f32 matmul precision on the GPU, as torch.set_float32_matmul_precision: 'highest' (the default) multiplies with
   * f32 FMAs on the CUDA cores, like torch with TF32 off; 'high' uses 3xTF32 on the tensor cores (each operand split
   * into two TF32 parts: about 2^-22 of each product, more precise than torch's single-pass TF32 'high'). Process-wide;
   * also set by ADAPTERS_CUDA_F32_GEMM=3xtf32. The CPU's f32 products are always full precision.
   */
  setFloat32MatmulPrecision: (mode: 'highest' | 'high'): void => void call(() => native.cudaMatmulPrecision(mode)),
  getFloat32MatmulPrecision: (): 'highest' | 'high' => call(() => native.cudaMatmulPrecision()),
};
function call<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    return fromNative(e);
  }
}

/** Whether `op` has a kernel on `device` ('cpu' | 'cuda'). */
export function supportsOp(op: string, device = 'cpu'): boolean {
  return native.supportsOp(op, device);
}
/** Names of the native ops (the table in native/ops.def). */
export function opNames(): string[] {
  return native.opNames();
}
