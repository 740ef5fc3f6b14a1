// Prints the op table of scripts/gpu/check.sh: one realistic case per op (Qwen2.5-7B sizes) on the CUDA
// backend against the float64 references of test/ref/f64.ts, with the suite's own tolerances: max |error|,
// the allowance at the worst element, the worst error/allowance ratio (pass: <= 1) and the op's time.
// Runs with exactMatmul (fp32 bounds). Run on the GPU machine: node --import tsx scripts/gpu/op-table.ts.
// Exits 1 if any row fails.
import type { KvCacheLayer } from '../../src/runtime/backend.js';
import { createCudaBackend } from '../../src/runtime/cuda-backend.js';
import { fromF32, type DType } from '../../src/runtime/tensor.js';
import { poisonedOut, uploadF32 } from '../../test/conformance/harness.js';
import { runAttentionCase } from '../../test/conformance/paged-attention.js';
import {
  EXACT, ONE_ROUNDING, SILU_MUL, addF64, dotTolerance, embeddingF64, gatherRowsF64, makeRng, matmulF64, randomF32,
  rmsnormF64, rmsnormTolerance, ropeF64, ropeTolerance, siluMulF64, valuesF64, writeKvF64, type Tolerance,
} from '../../test/ref/f64.js';

const be = createCudaBackend({ exactMatmul: true }); // the fp32 suite bounds; bf16 GEMM: cuda-matmul-bf16.test.ts
const rng = makeRng(20261201);
const f64 = (a: Float32Array) => Float64Array.from(a);
const rows: string[][] = [];
let failed = 0;

function report(op: string, shapes: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: Tolerance, ms: number): void {
  let maxErr = 0;
  let worst = 0;
  let worstAllowed = 0;
  for (let i = 0; i < ref.length; i++) {
    const allowed = (typeof tol.atol === 'number' ? tol.atol : tol.atol[i]) + tol.rtol * Math.abs(ref[i]);
    const err = Math.abs(got[i] - ref[i]);
    const ratio = Number.isNaN(err) ? Infinity : err === 0 ? 0 : err / Math.max(allowed, Number.MIN_VALUE);
    maxErr = Math.max(maxErr, Number.isNaN(err) ? Infinity : err);
    if (ratio > worst || i === 0) [worst, worstAllowed] = [ratio, allowed];
  }
  const pass = worst <= 1 && got.length === ref.length;
  if (!pass) failed++;
  rows.push([op, shapes, maxErr.toExponential(2), worstAllowed.toExponential(2), worst.toFixed(3), ms.toFixed(3), pass ? 'pass' : 'FAIL']);
}

/** Runs fn once to warm up, then once timed (synchronized) and returns ms. */
function timed(fn: () => void): number {
  fn();
  be.synchronize();
  const t0 = performance.now();
  fn();
  be.synchronize();
  return performance.now() - t0;
}

const [T, H, I, V] = [64, 3584, 18944, 4096];
{
  const table = fromF32('bf16', [V, H], randomF32(rng, V * H));
  const ids = Int32Array.from({ length: T }, () => rng.int(V));
  const out = poisonedOut(be, [T, H]);
  const dev = be.upload(table);
  const ms = timed(() => be.embedding(dev, ids, out));
  report('embedding', `bf16 [${V}, ${H}], T ${T}`, be.read(out), embeddingF64(valuesF64(table), H, ids), EXACT, ms);
}
for (const [dtype, t, n] of [['f32', 1, 512], ['bf16', 1, 4608], ['bf16', T, 4608], ['f16', T, 512], ['f32', T, 512]] as [DType, number, number][]) {
  const x = randomF32(rng, t * H);
  const w = fromF32(dtype, [n, H], randomF32(rng, n * H, 0.05));
  const bias = randomF32(rng, n);
  const out = poisonedOut(be, [t, n]);
  const [xd, wd, bd] = [uploadF32(be, [t, H], x), be.upload(w), uploadF32(be, [n], bias)];
  const ms = timed(() => be.matmul(xd, wd, bd, out));
  const [x64, w64, b64] = [f64(x), valuesF64(w), f64(bias)];
  report('matmul', `${dtype} w [${n}, ${H}] + bias, T ${t} (${t <= 8 ? 'GEMV' : 'cuBLAS'})`, be.read(out),
    matmulF64(x64, w64, b64, t, H, n), dotTolerance(x64, w64, b64, t, H, n), ms);
}
{
  const x = randomF32(rng, T * H, 3);
  const w = randomF32(rng, H);
  const out = poisonedOut(be, [T, H]);
  const [xd, wd] = [uploadF32(be, [T, H], x), uploadF32(be, [H], w)];
  const ms = timed(() => be.rmsnorm(xd, wd, 1e-6, out));
  report('rmsnorm', `[${T}, ${H}], eps 1e-6`, be.read(out), rmsnormF64(f64(x), f64(w), 1e-6, T, H), rmsnormTolerance(H), ms);
}
{
  const [a, b] = [randomF32(rng, T * H, 3), randomF32(rng, T * H, 1e-3)];
  const out = poisonedOut(be, [T, H]);
  const [ad, bd] = [uploadF32(be, [T, H], a), uploadF32(be, [T, H], b)];
  const ms = timed(() => be.add(ad, bd, out));
  report('add', `[${T}, ${H}]`, be.read(out), addF64(f64(a), f64(b)), ONE_ROUNDING, ms);
}
{
  const gu = randomF32(rng, T * 2 * I, 6);
  const out = poisonedOut(be, [T, I]);
  const gd = uploadF32(be, [T, 2 * I], gu);
  const ms = timed(() => be.siluMul(gd, out));
  report('siluMul', `[${T}, ${2 * I}] -> [${T}, ${I}]`, be.read(out), siluMulF64(f64(gu), T, I), SILU_MUL, ms);
}
{
  const x = randomF32(rng, T * 28 * 128, 3);
  const positions = Int32Array.from({ length: T }, (_, t) => (t === 0 ? 1048575 : rng.int(1 << 20)));
  const xd = uploadF32(be, [T, 28, 128], x);
  be.rope(xd, positions, 1e7, 128);
  const got = be.read(xd);
  const ms = timed(() => be.rope(uploadF32(be, [T, 28, 128], x), positions, 1e7, 128));
  report('rope', `[${T}, 28, 128], theta 1e7, positions < 2^20`, got, ropeF64(f64(x), positions, 1e7, 128, 28, 128), ropeTolerance(f64(x), 128, 128), ms);
}
{
  const [numBlocks, bs, rowLen] = [64, 16, 4 * 128];
  const shape = [numBlocks, bs, 4, 128];
  const cacheHost = randomF32(rng, numBlocks * bs * rowLen);
  const k = randomF32(rng, T * rowLen);
  const v = randomF32(rng, T * rowLen);
  const slots = Int32Array.from(rng.shuffle(Array.from({ length: numBlocks * bs }, (_, i) => i)).slice(0, T));
  slots[3] = -1;
  const cache: KvCacheLayer = { k: uploadF32(be, shape, cacheHost), v: uploadF32(be, shape, cacheHost), numBlocks, blockSize: bs, numKvHeads: 4, headDim: 128 };
  const [kd, vd] = [uploadF32(be, [T, 4, 128], k), uploadF32(be, [T, 4, 128], v)];
  const ms = timed(() => be.writeKv(kd, vd, cache, slots));
  const want = writeKvF64(f64(cacheHost), f64(k), slots, rowLen);
  const wantV = writeKvF64(f64(cacheHost), f64(v), slots, rowLen);
  report('writeKv', `T ${T} into [${shape}] (k)`, be.read(cache.k), want, EXACT, ms);
  report('writeKv', `T ${T} into [${shape}] (v)`, be.read(cache.v), wantV, EXACT, 0);
}
{
  const x = randomF32(rng, T * H);
  const pick = Int32Array.from([63, 0, 17, 17, 5]);
  const out = poisonedOut(be, [pick.length, H]);
  const xd = uploadF32(be, [T, H], x);
  const ms = timed(() => be.gatherRows(xd, pick, out));
  report('gatherRows', `[${T}, ${H}] rows ${pick.length}`, be.read(out), gatherRowsF64(f64(x), H, pick), EXACT, ms);
}
const gqa = { numHeads: 28, numKvHeads: 4, headDim: 128, blockSize: 16, numHoleBlocks: 2 };
for (const [label, seqs] of [
  ['prefill 512', [{ contextLen: 512, numQueries: 512 }]],
  ['chunk 64 after 960', [{ contextLen: 1024, numQueries: 64 }]],
  ['decode x4: 1, 300, 1500, 4096', [1, 300, 1500, 4096].map((contextLen) => ({ contextLen, numQueries: 1 }))],
] as [string, { contextLen: number; numQueries: number }[]][]) {
  const t0 = performance.now();
  const r = runAttentionCase(be, { ...gqa, seed: label.length, seqs });
  const ms = performance.now() - t0; // includes uploads and the read (one call)
  report('attention', `28/4 heads, d 128, ${label}`, r.got, r.ref, r.tol, ms);
}
be.dispose();

const header = ['op', 'shapes', 'max |err|', 'allowed@worst', 'err/allowed', 'ms', 'result'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ');
console.log(line(header));
console.log(widths.map((w) => '-'.repeat(w)).join('-|-'));
for (const r of rows) console.log(line(r));
console.log(`${rows.length - failed} of ${rows.length} rows pass (attention ms include the uploads and read)`);
process.exit(failed === 0 ? 0 : 1);
