// Benchmark (numbers, never pass/fail): one layer of the Qwen2.5-7B-1M attention shape (28 query heads, 4 KV
// heads, headDim 128, bf16 KV cache, DCA chunk 262144 / local 8192) for one prefill step of --rows rows (the
// last rows of a context of N keys), through attentionDcaSparse (every row sparse, budgets --budget on every
// head, tensor-core attention) and dense attentionDca (tensor cores) on the same inputs, on one CUDA device.
// Random data: q uniform in [-1, 1]; K and V random bf16 in [-1, 1] over --period distinct tokens, the block
// table cycling through them (so a 1M context repeats a 128K-token cache 8 times; every key is still read
// from memory at its own slot address). Per N: the median GPU time of each phase (estimate, select, index,
// attention) over --repeat calls, the dense time, and the fraction of key-row pairs the sparse blocks load
// vs dense causal attention. Each N runs two variants: the fp32 estimation with the serial index (the
// kernels before) and the defaults (tensor-core estimation, warp index); one JSON line per N and variant.
// Usage: node --import tsx bench/gpu/sparse-bench.ts [--contexts 131072,524288,1048576 --rows 8192
// --budget 1000:6096 --repeat 3 --period 131072 --exact].
import type { AttentionBatch, DcaParams, KvCacheLayer, SparseDcaParams } from '../../src/runtime/backend.js';
import { createCudaBackend } from '../../src/runtime/cuda-backend.js';
import { makeTensor } from '../../src/runtime/tensor.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const contexts = arg('contexts', '131072,524288,1048576').split(',').map(Number);
const rows = Number(arg('rows', '8192'));
const [vBudget, sBudget] = arg('budget', '1000:6096').split(':').map(Number);
const repeat = Number(arg('repeat', '3'));
const period = Number(arg('period', '131072'));
const exact = process.argv.includes('--exact');
// Per context, the estimation / index variants side by side (environment read by the native side per call):
// "fp32 est, serial index" (the kernels before the tensor-core estimation) and the defaults ("tc est, warp
// index" with tensor-core attention; with --exact the default estimation is fp32, so the first row repeats it).
const variants: [string, Record<string, string | undefined>][] = [
  ['fp32 est, serial index', { LONGCTX_SPARSE_EST: 'fp32', LONGCTX_SPARSE_INDEX: 'serial' }],
  [exact ? 'default (fp32 est), warp index' : 'tc est, warp index', { LONGCTX_SPARSE_EST: undefined, LONGCTX_SPARSE_INDEX: undefined }],
];
const numHeads = 28, numKvHeads = 4, headDim = 128, blockSize = 16;
const dca: DcaParams = { chunkLen: 262144 - 8192, chunkSize: 262144, ropeTheta: 1e7, rotaryDim: headDim };

let state = 0x9e3779b9;
const next = () => {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) / 2 ** 32;
};
function randomBf16(n: number): Uint16Array {
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const bits = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    f[0] = 2 * next() - 1;
    out[i] = bits[0] >>> 16;
  }
  return out;
}
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const be = createCudaBackend({ tensorCoreAttention: !exact });
const physBlocks = period / blockSize;
const cacheShape = [physBlocks, blockSize, numKvHeads, headDim];
const cache: KvCacheLayer = {
  k: be.upload(makeTensor('bf16', cacheShape, randomBf16(period * numKvHeads * headDim))),
  v: be.upload(makeTensor('bf16', cacheShape, randomBf16(period * numKvHeads * headDim))),
  numBlocks: physBlocks, blockSize, numKvHeads, headDim,
};
const qHost = new Float32Array(rows * numHeads * headDim);
for (let i = 0; i < qHost.length; i++) qHost[i] = 2 * next() - 1;
const q = be.upload(makeTensor('f32', [rows, numHeads, headDim], qHost));
const out = be.zeros([rows, numHeads, headDim]);

for (const N of contexts) {
  const maxBlocksPerSeq = N / blockSize + 1;
  const blockTables = new Int32Array(maxBlocksPerSeq).fill(-1);
  for (let b = 0; b < N / blockSize; b++) blockTables[b] = b % physBlocks;
  const batch: AttentionBatch = { numSeqs: 1, queryStart: Int32Array.of(0, rows), contextLens: Int32Array.of(N), blockTables, maxBlocksPerSeq };
  const positions = Int32Array.from({ length: rows }, (_, i) => N - rows + i);
  const rowLogitScale = new Float32Array(rows).fill(1);
  const sparse: SparseDcaParams = {
    numSparseRows: Int32Array.of(rows), lastQ: 64,
    verticalSize: new Int32Array(numHeads).fill(vBudget), slashSize: new Int32Array(numHeads).fill(sBudget),
  };
  const scale = 1 / Math.sqrt(headDim);
  const sparseCall = () => be.attentionDcaSparse(q, cache, batch, positions, dca, scale, rowLogitScale, sparse, out);
  const denseCall = () => be.attentionDca(q, cache, batch, positions, dca, scale, rowLogitScale, out);
  let denseMs = 0;
  for (const [name, env] of variants) {
    for (const [k, v] of Object.entries(env)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    sparseCall(); // warm-up: module load, scratch growth
    if (denseMs === 0) denseCall();
    be.synchronize();
    be.setOpTiming(true);
    be.opTimes();
    const phases: Record<string, number[]> = {};
    let keys = { loaded: 0, dense: 0 };
    for (let r = 0; r < repeat; r++) {
      sparseCall();
      keys = be.lastSparseKeys();
      for (const [label, t] of Object.entries(be.opTimes())) (phases[label] ??= []).push(t.gpuMs);
    }
    if (denseMs === 0) {
      const dense: number[] = [];
      for (let r = 0; r < repeat; r++) {
        denseCall();
        dense.push(Object.entries(be.opTimes()).filter(([l]) => l.startsWith('attentionDca prefill')).reduce((s, [, t]) => s + t.gpuMs, 0));
      }
      denseMs = Number(median(dense).toFixed(2));
    }
    be.setOpTiming(false);
    const ms = (label: string) => Number(median(phases[`attentionDcaSparse ${label}`] ?? [0]).toFixed(2));
    console.log(JSON.stringify({
      context: N, rows, budget: `${vBudget}:${sBudget}`, attention: exact ? 'fp32' : 'tensor cores', variant: name,
      estimateMs: ms('estimate'), selectMs: ms('select'), indexMs: ms('index'), attentionMs: ms('attention'),
      sparseTotalMs: Number((ms('estimate') + ms('select') + ms('index') + ms('attention')).toFixed(2)),
      // op total with the per-sub-range key count (a device-to-host copy and a sync) of the diagnostic
      sparseOpMs: Number(median(phases.attentionDcaSparse ?? [0]).toFixed(2)),
      denseMs,
      keyFraction: Number((keys.loaded / keys.dense).toFixed(4)),
    }));
  }
}
for (const t of [q, out, cache.k, cache.v]) be.free(t);
be.dispose();
