// Shared plumbing of the backend conformance suite: one backend per suite run, NaN-poisoned outputs, and
// a case runner that checks every case of a grid and reports all failing cases, not just the first.
// Invariant: tests touch a backend only through the Backend interface (upload/zeros/write/read), so the
// same cases run unchanged on device backends. Must not: hold any expected values or op math.
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import type { Backend } from '../../src/runtime/backend.js';
import { bf16ToF32, f32ToBf16, fromF32, makeTensor, numel, type Tensor } from '../../src/runtime/tensor.js';
import type { Rng } from '../ref/f64.js';

/** Creates the backend before the enclosing describe's tests and disposes it after them. */
export function useBackend(makeBackend: () => Backend): () => Backend {
  let backend: Backend | null = null;
  before(() => {
    backend = makeBackend();
  });
  after(() => {
    backend?.dispose();
    backend = null;
  });
  return () => {
    if (backend === null) throw new Error('backend used outside its describe block');
    return backend;
  };
}

/** An f32 tensor on the backend holding `values`. */
export function uploadF32(be: Backend, shape: readonly number[], values: Float32Array): Tensor {
  return be.upload(makeTensor('f32', shape, Float32Array.from(values)));
}

/** KV cache element types the conformance suite runs (Backend.kvCacheDtypes). */
export type KvDtype = 'f32' | 'bf16';

/** values rounded to the KV dtype and widened back (exact f32 values the cache will hold). */
export function roundToKv(values: Float32Array, dtype: KvDtype): Float32Array {
  if (dtype === 'f32') return values;
  return Float32Array.from(values, (x) => bf16ToF32(f32ToBf16(x)));
}

/** A KV cache tensor on the backend holding `values` (already representable in `dtype`: see roundToKv). */
export function uploadCache(be: Backend, shape: readonly number[], values: Float32Array, dtype: KvDtype): Tensor {
  if (!be.kvCacheDtypes.includes(dtype)) throw new Error(`backend ${be.name} has no ${dtype} KV cache`);
  return be.upload(dtype === 'f32' ? makeTensor('f32', shape, Float32Array.from(values)) : fromF32(dtype, shape, values));
}

/** An output tensor filled with NaN, so any element the op fails to write fails the comparison. */
export function poisonedOut(be: Backend, shape: readonly number[]): Tensor {
  const out = be.zeros(shape);
  be.write(out, new Float32Array(numel(shape)).fill(NaN));
  return out;
}

/**
 * Runs `check` on every case, then fails once listing every failing case (label + message), so one run
 * of the suite shows the whole failure pattern of a grid (e.g. only K % 8 != 0, only bf16).
 */
export function checkEach<C>(cases: readonly C[], label: (c: C) => string, check: (c: C, label: string) => void): void {
  assert.ok(cases.length > 0, 'a grid with no cases checks nothing');
  const failures: string[] = [];
  for (const c of cases) {
    const name = label(c);
    try {
      check(c, name);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      failures.push(message.startsWith(name) ? message : `${name}: ${message}`);
    }
  }
  if (failures.length > 0) {
    assert.fail(`${failures.length} of ${cases.length} cases failed:\n  ${failures.join('\n  ')}`);
  }
}

/** Every combination of the given axes, in order (the first axis varies slowest). */
export function grid<T extends Record<string, readonly unknown[]>>(axes: T): { [K in keyof T]: T[K][number] }[] {
  let rows: Record<string, unknown>[] = [{}];
  for (const [key, values] of Object.entries(axes)) {
    rows = rows.flatMap((row) => values.map((value) => ({ ...row, [key]: value })));
  }
  return rows as { [K in keyof T]: T[K][number] }[];
}

/** A paged KV layout of the attention suites (PagedKv.kCache/vCache are [numBlocks, blockSize, rowLen] host values). */
export interface PagedKv {
  numBlocks: number;
  maxBlocksPerSeq: number;
  blockTables: Int32Array; // [numSeqs, maxBlocksPerSeq], -1 past each table
  kCache: Float32Array;
  vCache: Float32Array;
}

/**
 * The sequences' keys (already rotated as cached) and values in shuffled physical blocks, `spareBlocks` more
 * blocks never used, one -1 entry past every table; in a sequence's last block, slots past its context hold
 * k = 0 and v = tailV (any weight on them shows); never-used blocks are NaN. Consumes one rng.shuffle.
 */
export function pagedKv(
  rng: Rng,
  seqs: readonly { contextLen: number; kRot: ArrayLike<number>; v: ArrayLike<number> }[],
  blockSize: number,
  rowLen: number,
  spareBlocks: number,
  tailV: number,
): PagedKv {
  const blocksPerSeq = seqs.map((s) => Math.ceil(s.contextLen / blockSize));
  const numBlocks = blocksPerSeq.reduce((a, b) => a + b, 0) + spareBlocks;
  const physical = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const maxBlocksPerSeq = Math.max(...blocksPerSeq) + 1;
  const blockTables = new Int32Array(seqs.length * maxBlocksPerSeq).fill(-1);
  const kCache = new Float32Array(numBlocks * blockSize * rowLen).fill(NaN);
  const vCache = new Float32Array(numBlocks * blockSize * rowLen).fill(NaN);
  let next = 0;
  seqs.forEach((s, si) => {
    for (let b = 0; b < blocksPerSeq[si]; b++) blockTables[si * maxBlocksPerSeq + b] = physical[next++];
    for (let j = 0; j < blocksPerSeq[si] * blockSize; j++) {
      const at = (blockTables[si * maxBlocksPerSeq + Math.floor(j / blockSize)] * blockSize + (j % blockSize)) * rowLen;
      for (let e = 0; e < rowLen; e++) {
        kCache[at + e] = j < s.contextLen ? s.kRot[j * rowLen + e] : 0;
        vCache[at + e] = j < s.contextLen ? s.v[j * rowLen + e] : tailV;
      }
    }
  });
  return { numBlocks, maxBlocksPerSeq, blockTables, kCache, vCache };
}
