// Native tier: smoke tests of the CPU addon itself, complementing the cross-backend conformance suite:
// GEMM shapes that cross every tiling boundary vs a float64 loop, bit-identical results for 1 vs 2 threads
// and for a row computed alone vs inside a batch, and the addon's own argument checking (errors, not crashes).
// Must not: duplicate the conformance suite's per-op grids.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { Backend, KvCacheLayer } from '../../src/runtime/backend.js';
import { createCpuBackend } from '../../src/runtime/cpu-backend.js';
import { findPackageRoot, loadNativeAddon } from '../../src/runtime/native-addon.js';
import { fromF32, makeTensor, toF32, type DType, type Tensor } from '../../src/runtime/tensor.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

function randomTensor(next: () => number, dtype: DType, shape: number[], scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = next() * 2 * scale;
  return fromF32(dtype, shape, values);
}

function bitsEqual(a: Float32Array, b: Float32Array, label: string): void {
  assert.equal(a.length, b.length, `${label}: lengths differ`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) assert.fail(`${label}: element ${i} differs: ${a[i]} vs ${b[i]}`);
  }
}

const one = createCpuBackend({ numThreads: 1 });
const two = createCpuBackend({ numThreads: 2 });
after(() => {
  one.dispose();
  two.dispose();
});

function runMatmul(be: Backend, x: Tensor, w: Tensor, bias: Tensor | null): Float32Array {
  const out = makeTensor('f32', [x.shape[0], w.shape[0]], new Float32Array(x.shape[0] * w.shape[0]).fill(NaN));
  be.matmul(x, w, bias, out);
  return be.read(out);
}

describe('matmul', () => {
  // T = 70 crosses the 64-row block, K = 600 three 256-wide K-blocks plus a 8-element tail, N = 37 the
  // 16-row weight chunks and the 4-row tiles; T = 1..3 take the streaming (decode) path.
  for (const dtype of ['f32', 'bf16', 'f16'] as const) {
    test(`${dtype} weights: T in {1, 3, 70}, K 600, N 37 vs a float64 loop`, () => {
      const next = rng(7);
      const [K, N] = [600, 37];
      const w = randomTensor(next, dtype, [N, K]);
      const bias = randomTensor(next, 'f32', [N]);
      const wv = toF32(w);
      for (const T of [1, 3, 70]) {
        const x = randomTensor(next, 'f32', [T, K]);
        const got = runMatmul(two, x, w, bias);
        const xv = x.data as Float32Array;
        for (let t = 0; t < T; t++) {
          for (let n = 0; n < N; n++) {
            let ref = (bias.data as Float32Array)[n];
            let mag = Math.abs(ref);
            for (let k = 0; k < K; k++) {
              ref += xv[t * K + k] * wv[n * K + k];
              mag += Math.abs(xv[t * K + k] * wv[n * K + k]);
            }
            // fp32 error bound for K/16 sequential lane sums, a 4-level tree and the bias add.
            const tol = (K / 16 + 6) * 2 ** -24 * mag;
            const err = Math.abs(got[t * N + n] - ref);
            if (!(err <= tol)) assert.fail(`T=${T} [${t}, ${n}]: got ${got[t * N + n]}, want ${ref} (tol ${tol})`);
          }
        }
      }
    });
  }

  test('a row gives the same bits alone, in a 3-row decode batch and in a 70-row prefill', () => {
    const next = rng(11);
    const [K, N] = [300, 45];
    for (const dtype of ['f32', 'bf16', 'f16'] as const) {
      const w = randomTensor(next, dtype, [N, K]);
      const x = randomTensor(next, 'f32', [70, K]);
      const full = runMatmul(two, x, w, null);
      const rowsOf = (t0: number, T: number) =>
        makeTensor('f32', [T, K], (x.data as Float32Array).slice(t0 * K, (t0 + T) * K));
      for (const t of [0, 5, 64, 69]) {
        bitsEqual(runMatmul(two, rowsOf(t, 1), w, null), full.subarray(t * N, (t + 1) * N), `${dtype} row ${t} alone`);
      }
      bitsEqual(runMatmul(two, rowsOf(66, 3), w, null), full.subarray(66 * N, 69 * N), `${dtype} rows 66..68`);
    }
  });

  test('1 and 2 threads give identical bits', () => {
    const next = rng(13);
    for (const [T, K, N] of [[1, 896, 200], [2, 100, 77], [70, 600, 130]]) {
      const w = randomTensor(next, 'bf16', [N, K]);
      const x = randomTensor(next, 'f32', [T, K]);
      bitsEqual(runMatmul(one, x, w, null), runMatmul(two, x, w, null), `T=${T} K=${K} N=${N}`);
    }
  });
});

describe('attention and the other ops: 1 and 2 threads give identical bits', () => {
  test('attention over a shuffled block table, GQA 7:1, two sequences', () => {
    const next = rng(17);
    const [numBlocks, blockSize, numKvHeads, headDim, numHeads] = [40, 16, 2, 64, 14];
    const cacheShape = [numBlocks, blockSize, numKvHeads, headDim];
    const cache: KvCacheLayer = {
      k: randomTensor(next, 'f32', cacheShape), v: randomTensor(next, 'f32', cacheShape),
      numBlocks, blockSize, numKvHeads, headDim,
    };
    const maxBlocksPerSeq = 20;
    const blockTables = new Int32Array(2 * maxBlocksPerSeq).fill(-1);
    const ids = Array.from({ length: numBlocks }, (_, i) => i).sort(() => next());
    for (let i = 0; i < 20; i++) blockTables[i] = ids[i];
    for (let i = 0; i < 10; i++) blockTables[maxBlocksPerSeq + i] = ids[20 + i];
    // Sequence 0: a 90-token prefill chunk ending at 300 keys; sequence 1: one decode query at 150 keys.
    const batch = {
      numSeqs: 2, queryStart: Int32Array.from([0, 90, 91]), contextLens: Int32Array.from([300, 150]),
      blockTables, maxBlocksPerSeq,
    };
    const q = randomTensor(next, 'f32', [91, numHeads, headDim], 2);
    const results = [one, two].map((be) => {
      const out = makeTensor('f32', [91, numHeads, headDim]);
      be.attention(q, cache, batch, 0.125, out);
      return out.data as Float32Array;
    });
    bitsEqual(results[0], results[1], 'attention');
    assert.ok(results[0].every(Number.isFinite));
  });

  test('attentionDca over a shuffled block table, GQA 7:1, a chunked prefill crossing DCA boundaries and a decode', () => {
    const next = rng(23);
    const [numBlocks, blockSize, numKvHeads, headDim, numHeads] = [40, 16, 2, 64, 14];
    const cacheShape = [numBlocks, blockSize, numKvHeads, headDim];
    const cache: KvCacheLayer = {
      k: randomTensor(next, 'f32', cacheShape), v: randomTensor(next, 'f32', cacheShape),
      numBlocks, blockSize, numKvHeads, headDim,
    };
    const maxBlocksPerSeq = 20;
    const blockTables = new Int32Array(2 * maxBlocksPerSeq).fill(-1);
    const ids = Array.from({ length: numBlocks }, (_, i) => i).sort(() => next());
    for (let i = 0; i < 20; i++) blockTables[i] = ids[i];
    for (let i = 0; i < 10; i++) blockTables[maxBlocksPerSeq + i] = ids[20 + i];
    // L = 96: sequence 0's rows 180..299 cross 192 and 288; sequence 1 decodes at 149 (previous chunk clamped).
    const batch = { numSeqs: 2, queryStart: Int32Array.from([0, 120, 121]), contextLens: Int32Array.from([300, 150]), blockTables, maxBlocksPerSeq };
    const positions = Int32Array.from([...Array.from({ length: 120 }, (_, i) => 180 + i), 149]);
    const q = randomTensor(next, 'f32', [121, numHeads, headDim], 2);
    const rowLogitScale = Float32Array.from(positions, (p, t) => (t < 120 ? 1.2 + p / 1000 : 1)); // per row
    const results = [one, two].map((be) => {
      const out = makeTensor('f32', [121, numHeads, headDim]);
      be.attentionDca!(q, cache, batch, positions, { chunkLen: 96, chunkSize: 128, ropeTheta: 1e6, rotaryDim: 64 }, 0.125, rowLogitScale, out);
      return out.data as Float32Array;
    });
    bitsEqual(results[0], results[1], 'attentionDca');
    assert.ok(results[0].every(Number.isFinite));
  });

  test('rmsnorm, siluMul, rope', () => {
    const next = rng(19);
    const x = randomTensor(next, 'f32', [33, 4, 64]);
    const flat = makeTensor('f32', [33, 256], x.data);
    const weight = randomTensor(next, 'f32', [256]);
    const positions = Int32Array.from({ length: 33 }, (_, i) => i * 1000);
    const [a, b] = [one, two].map((be) => {
      const norm = makeTensor('f32', [33, 256]);
      be.rmsnorm(flat, weight, 1e-6, norm);
      const silu = makeTensor('f32', [33, 128]);
      be.siluMul(flat, silu);
      const rotated = makeTensor('f32', [33, 4, 64], Float32Array.from(x.data as Float32Array));
      be.rope(rotated, positions, 1e6, 64);
      return [norm, silu, rotated].map((t) => t.data as Float32Array);
    });
    for (let i = 0; i < 3; i++) bitsEqual(a[i], b[i], ['rmsnorm', 'siluMul', 'rope'][i]);
  });
});

describe('argument checking', () => {
  const addon = loadNativeAddon();
  const ctx = new addon.CpuContext(2);
  after(() => ctx.dispose());

  test('the addon loads once from the package root', () => {
    assert.equal(loadNativeAddon(), addon);
    assert.match(findPackageRoot(), /./);
    assert.ok(['avx512', 'avx2', 'neon', 'generic'].includes(addon.simdLevel));
    assert.equal(ctx.numThreads, 2);
  });

  test('wrong lengths, types and dtype codes are TypeError / RangeError', () => {
    const x = new Float32Array(6);
    const w = new Uint16Array(12);
    assert.throws(() => ctx.matmul(x, 2, 3, w, 1, 4, null, new Float32Array(7)),
      { name: 'RangeError', message: /out has 7 elements, expected T\*N = 2\*4 = 8/ });
    assert.throws(() => ctx.matmul(x, 2, 3, new Float32Array(12), 1, 4, null, new Float32Array(8)),
      { name: 'TypeError', message: /'w' must be a Uint16Array/ });
    assert.throws(() => ctx.matmul(x, 2, 3, w, 5 as never, 4, null, new Float32Array(8)), { name: 'RangeError' });
    assert.throws(() => ctx.matmul(x, 2.5, 3, w, 1, 4, null, new Float32Array(8)), { name: 'RangeError' });
    assert.throws(() => (ctx.add as (...args: unknown[]) => void)(x, x), { name: 'TypeError', message: /3 arguments/ });
  });

  test('overlapping output and input buffers are refused', () => {
    const buf = new Float32Array(20);
    assert.throws(() => ctx.matmul(buf.subarray(0, 6), 2, 3, new Float32Array(12), 0, 4, null, buf.subarray(4, 12)),
      { name: 'RangeError', message: /overlap/ });
  });

  test('indices out of range are RangeErrors and nothing is written', () => {
    assert.throws(() => ctx.embedding(new Uint16Array(8), 1, 4, 2, Int32Array.from([1, 99]), new Float32Array(4)),
      { name: 'RangeError', message: /ids\[1\] = 99 is outside \[0, 4\)/ });
    const kCache = new Float32Array(2 * 4 * 1 * 8);
    assert.throws(() => ctx.writeKv(new Float32Array(16).fill(1), new Float32Array(16).fill(1), 2,
      Int32Array.from([3, 8]), kCache, new Float32Array(64), 2, 4, 1, 8), { name: 'RangeError', message: /slotMapping\[1\] = 8/ });
    assert.ok(kCache.every((v) => v === 0), 'the valid slot must not have been written either');
    const attend = (blockTables: Int32Array, contextLen: number) => ctx.attention(new Float32Array(8), 1, 1,
      kCache, new Float32Array(64), 2, 4, 1, 8, 1, Int32Array.from([0, 1]), Int32Array.from([contextLen]),
      blockTables, 2, 1, new Float32Array(8));
    assert.throws(() => attend(Int32Array.from([0, 2]), 5), { name: 'RangeError', message: /blockTables\[0, 1\] = 2/ });
    assert.throws(() => attend(Int32Array.from([0, -1]), 0), { name: 'RangeError', message: /less than its 1 queries/ });
    assert.throws(() => attend(Int32Array.from([0, 1]), 9), { name: 'RangeError', message: /needs 3 blocks/ });
    attend(Int32Array.from([1, -1]), 3); // unused table entries (-1) are never read
  });

  test('attentionDca: bad positions, DCA constants, rotaryDim and rowLogitScale are RangeErrors', () => {
    // One sequence of 3 keys (blocks 0 and 1 of 4 slots), 2 queries at positions 1 and 2; MHA, headDim 8.
    const dca = (over: { positions?: number[]; chunkLen?: number; chunkSize?: number; rotaryDim?: number; rowLogitScale?: number[]; numHeads?: number; numKvHeads?: number } = {}) => {
      const [numHeads, numKvHeads] = [over.numHeads ?? 1, over.numKvHeads ?? 1];
      const cacheLen = 2 * 4 * numKvHeads * 8;
      return ctx.attentionDca(new Float32Array(2 * numHeads * 8), 2, numHeads, new Float32Array(cacheLen), new Float32Array(cacheLen), 2, 4, numKvHeads, 8,
        1, Int32Array.from([0, 2]), Int32Array.from([3]), Int32Array.from([0, 1]), 2, Int32Array.from(over.positions ?? [1, 2]),
        over.chunkLen ?? 2, over.chunkSize ?? 3, 1e4, over.rotaryDim ?? 8, 0.5, Float32Array.from(over.rowLogitScale ?? [1, 1.25]),
        new Float32Array(2 * numHeads * 8));
    };
    dca();
    assert.throws(() => dca({ positions: [0, 2] }), { name: 'RangeError', message: /positions\[0\] = 0 but the batch places that row at 1/ });
    assert.throws(() => dca({ positions: [1] }), { name: 'RangeError', message: /positions has 1 elements, expected T = 2/ });
    assert.throws(() => dca({ chunkLen: 0 }), { name: 'RangeError', message: /chunkLen/ });
    assert.throws(() => dca({ chunkSize: 1 }), { name: 'RangeError', message: /need 0 < chunkLen <= chunkSize/ });
    assert.throws(() => dca({ rotaryDim: 10 }), { name: 'RangeError', message: /rotaryDim = 10 must be even and in \[2, headDim = 8\]/ });
    assert.throws(() => dca({ rowLogitScale: [1, Number.NaN] }), { name: 'RangeError', message: /rowLogitScale\[1\] is not finite/ });
    assert.throws(() => dca({ rowLogitScale: [1] }), { name: 'RangeError', message: /rowLogitScale has 1 elements, expected T = 2/ });
    dca({ numHeads: 4, numKvHeads: 2 });
    assert.throws(() => dca({ numHeads: 3, numKvHeads: 2 }), { name: 'RangeError', message: /attentionDca: numHeads = 3 is not a multiple of numKvHeads = 2/ });
  });

  test('a disposed context refuses work', () => {
    const c = new addon.CpuContext(1);
    c.dispose();
    c.dispose();
    assert.equal(c.numThreads, 0);
    assert.throws(() => c.add(new Float32Array(1), new Float32Array(1), new Float32Array(1)), /disposed/);
  });

  test('the backend reports shape mismatches with the shapes', () => {
    const x = makeTensor('f32', [2, 3]);
    const w = makeTensor('bf16', [4, 5]);
    assert.throws(() => two.matmul(x, w, null, makeTensor('f32', [2, 4])), /x \[2, 3\] does not match w \[4, 5\]/);
  });
});
