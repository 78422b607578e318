/**
 * The only module that loads the native addon (node-gyp-build: prebuilds, then build/Release).
 * Declares the addon's TypeScript surface; everything else goes through `Tensor` and `ops`.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface TensorHandle {
  readonly shape: number[];
  readonly strides: number[];
  readonly offset: number;
  readonly dtype: string;
  readonly device: string;
  readonly nbytes: number;
  readonly storageBytes: number;
  readonly disposed: boolean;
  readonly isContiguous: boolean;
  /** Another handle (a view, an alias) holds this storage too. */
  readonly storageShared: boolean;
  /** In-place writes to this storage so far (shared by all its views; autograd's saved-tensor check). */
  readonly version: number;
  bumpVersion(): void;
  toBuffer(): ArrayBuffer;
  dispose(): void;
  sameStorage(other: TensorHandle): boolean;
}

/** The CUDA caching allocator's counters (all devices). */
export interface CudaMemoryStats {
  liveBytes: number; peakBytes: number; requestedBytes: number; reservedBytes: number; peakReservedBytes: number; pooledBytes: number;
  numAllocs: number; numFrees: number; numCacheHits: number; numDeviceMallocs: number; numOomRetries: number;
}

export type AttrValue = number | boolean | string | number[] | null | undefined;

export interface Binding {
  fromBuffer(data: ArrayBufferView, dtype: string, shape: number[]): TensorHandle;
  asStrided(h: TensorHandle, shape: number[], strides: number[], offset: number): TensorHandle;
  runOp(name: string, inputs: (TensorHandle | null)[], attrs?: Record<string, AttrValue>): TensorHandle[];
  readRegion(path: string, byteOffset: number, dtype: string, shape: number[]): TensorHandle;
  memoryStats(): { liveStorages: number; liveBytes: number; pooledBytes: number; peakBytes: number; reportedToV8Bytes: number };
  emptyCache(): void;
  resetPeakMemory(): void;
  numThreads(): number;
  setNumThreads(n: number): void;
  cpuFeatures(): { avx2: boolean; fma: boolean; avx512f: boolean; avx512bf16: boolean; amxBf16: boolean; sgemm: string; bgemm: string };
  gemmForceIsa(f32: string, bf16: string): void;
  supportsOp(name: string, device: string): boolean;
  opNames(): string[];
  hasCuda(): boolean;
  toDevice(h: TensorHandle, device: string): TensorHandle;
  cudaInfo(): { available: boolean; devices: string[]; error: string };
  cudaMemory(what: 'stats'): CudaMemoryStats;
  cudaMemory(what: 'empty' | 'resetPeak' | 'sync'): undefined;
  cudaMatmulPrecision(mode?: 'highest' | 'high'): 'highest' | 'high';
  fmaPeak(threads?: number, iters?: number): { gflops: number; isa: string };
  amxPeak(threads?: number, iters?: number): number;
  bf16DotPeak(threads?: number, iters?: number): number;
  /** Test hook: ChunkQueue over nchunks chunks with the pool's other threads starting lateUs late. */
  poolCheck(nchunks: number, lateUs: number): { runs: number[]; byCaller: number };
}

const here = path.dirname(fileURLToPath(import.meta.url));
// lib/ (sources, run via tsx) and dist/ (compiled) both sit one level below the package root.
const root = path.resolve(here, '..');
const require = createRequire(import.meta.url);

function load(): Binding {
  const override = process.env.ADAPTERS_ADDON;  // e.g. the sanitizer build
  if (override) return require(path.resolve(override)) as Binding;
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => Binding;
  return nodeGypBuild(root);
}

export const native: Binding = load();
