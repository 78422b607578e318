// The host memory pool (native/tensor.cpp): freed blocks are reused for the same size, and the pool never
// lets (live + pooled) bytes grow past the most bytes ever live at once. Runs in its own process (one per
// test file), so the high-water mark is this file's own.
import test from 'ava';
import { zeros, full, memoryStats, emptyCache } from '../../lib/index.ts';

const MiB = 1 << 20;
// f32, exactly mib MiB: the sizes used here (2^k and 1.5·2^k MiB) are size classes of their own
const alloc = (mib: number) => zeros([(mib * MiB) / 4]);

test.serial('a freed block serves the next request of its size; a miss below the high-water mark keeps the pool', (t) => {
  alloc(48).dispose();  // high-water mark >= 48 MiB
  emptyCache();
  const a = alloc(4);
  a.dispose();
  const pooled = memoryStats().pooledBytes;
  t.true(pooled >= 4 * MiB);
  const b = alloc(4);  // hit: the pooled 4 MiB block comes back
  t.is(memoryStats().pooledBytes, pooled - 4 * MiB);
  b.dispose();
  const c = alloc(8);  // miss, but live + pooled + 8 MiB stays under the 48 MiB mark: nothing is released
  t.is(memoryStats().pooledBytes, pooled);
  c.dispose();
  t.is(memoryStats().pooledBytes, pooled + 8 * MiB);
  emptyCache();
});

test.serial('a miss that would pass the high-water mark releases the blocks freed longest ago first', (t) => {
  emptyCache();
  // The mark is 48 MiB over what is live here (the first test). A 4 MiB block is freed first, then 16 and 12 MiB:
  // the pool holds 32 MiB.
  const x = alloc(4), y = alloc(16), z = alloc(12);
  x.dispose();
  y.dispose();
  z.dispose();
  const s0 = memoryStats();
  t.true(s0.pooledBytes >= 32 * MiB);
  // 24 MiB (no block of that size) would take live + pooled past the mark: the oldest blocks (4, then 16 MiB)
  // are released until it fits; the newest (12 MiB) stays
  const w = alloc(24);
  const s1 = memoryStats();
  t.is(s1.pooledBytes, s0.pooledBytes - 20 * MiB);
  t.true(s1.liveBytes + s1.pooledBytes <= s0.liveBytes + 48 * MiB, 'the footprint stays at the mark');
  w.dispose();
  const again = alloc(12);  // the 12 MiB block was kept: a hit
  t.is(memoryStats().pooledBytes, s1.pooledBytes + 24 * MiB - 12 * MiB);
  again.dispose();
  emptyCache();
  t.is(memoryStats().pooledBytes, 0);
});

// Page recycling needs mapped blocks: Linux, and not the AddressSanitizer build (which keeps malloc so that ASan checks them).
const recycles = process.platform === 'linux' && process.env.ADAPTERS_SANITIZED !== '1';
(recycles ? test.serial : test.skip)('a miss that evicts builds its block from the evicted pages (no fresh page faults); a donor\'s unused tail stays pooled', (t) => {
  const faults = () => process.resourceUsage().minorPageFault;
  const allEqual = (x: ReturnType<typeof full>, v: number) => (x.toArray() as Float32Array).every((e) => e === v);
  // control: a 24 MiB block of fresh pages, written once
  emptyCache();
  let f0 = faults();
  alloc(24).dispose();
  const fresh = faults() - f0;
  emptyCache();
  // The mark is 48 MiB over what is live here. Three 16 MiB blocks are freed (oldest first): a 24 MiB request must
  // evict the first two; it takes all of the first and half of the second, whose other half goes back to the pool.
  const a = alloc(16), b = alloc(16), c = alloc(16);
  a.dispose();
  b.dispose();
  c.dispose();
  const s0 = memoryStats();
  f0 = faults();
  const w = full([(24 * MiB) / 4], 3);
  const recycled = faults() - f0;
  t.is(memoryStats().pooledBytes, s0.pooledBytes - 24 * MiB, '16 (c) + 8 (b\'s tail) MiB stay pooled');
  t.true(allEqual(w, 3));
  // the pooled blocks are not aliased with the new one
  const c2 = full([(16 * MiB) / 4], 7);  // a hit: c comes back
  const tail = full([(8 * MiB) / 4], 5);  // a hit: b's tail
  t.true(allEqual(w, 3) && allEqual(c2, 7) && allEqual(tail, 5));
  t.is(memoryStats().pooledBytes, s0.pooledBytes - 48 * MiB);
  if (fresh >= 1000) {
    t.true(recycled * 10 < fresh, `writing the recycled block faulted ${recycled} times; fresh pages ${fresh}`);
  } else {
    t.log(`page faults cannot tell fresh from recycled pages here (fresh 24 MiB block: ${fresh} faults)`);
  }
  for (const x of [w, c2, tail]) x.dispose();
  emptyCache();
});
