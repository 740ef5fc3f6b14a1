// Benchmark (not a test): one prefill step of N tokens through the CPU backend's attentionDca (dense) and
// attentionDcaSparse (vertical-slash, every row sparse) on random q/K/V, for budget pairs from the Qwen
// configs (§1.2), with the Qwen DCA constants. Usage: npx tsx bench/sparse.ts [--tokens 2048,4096
// --heads 8 --kv-heads 2 --head-dim 128 --threads N --budgets 130:100,1000:6096,all --last-q 64]. Prints one
// table: time per call (median of --repeat runs) and the sparse speed-up; numbers, never pass/fail.
import { cpus } from 'node:os';
import type { AttentionBatch, DcaParams, KvCacheLayer, SparseDcaParams } from '../src/runtime/backend.js';
import { createCpuBackend } from '../src/runtime/cpu-backend.js';
import { makeTensor } from '../src/runtime/tensor.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

const tokenCounts = arg('tokens', '2048,4096').split(',').map(Number);
const numHeads = Number(arg('heads', '8'));
const numKvHeads = Number(arg('kv-heads', '2'));
const headDim = Number(arg('head-dim', '128'));
const numThreads = Number(arg('threads', String(cpus().length)));
const repeat = Number(arg('repeat', '3'));
const lastQ = Number(arg('last-q', '64'));
// 'all' = budgets >= N: every key, the dense set through the sparse path (what the 64-row blocking alone buys).
const budgetArgs = arg('budgets', '130:100,130:800,1000:6096,all').split(',');
const blockSize = 16;
const dca: DcaParams = { chunkLen: 262144 - 8192, chunkSize: 262144, ropeTheta: 1e7, rotaryDim: headDim };

let seed = 12345;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;

function median(run: () => void): number {
  const times: number[] = [];
  for (let i = 0; i < repeat; i++) {
    const t0 = performance.now();
    run();
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
}

const be = createCpuBackend({ numThreads });
const rows: string[][] = [['tokens', 'op', 'budgets (v:s)', 'ms', 'speed-up']];
for (const N of tokenCounts) {
  const numBlocks = Math.ceil(N / blockSize);
  const cacheShape = [numBlocks, blockSize, numKvHeads, headDim];
  const fill = (n: number) => Float32Array.from({ length: n }, random);
  const cache: KvCacheLayer = { k: makeTensor('f32', cacheShape, fill(N * numKvHeads * headDim)), v: makeTensor('f32', cacheShape, fill(N * numKvHeads * headDim)), numBlocks, blockSize, numKvHeads, headDim };
  const q = makeTensor('f32', [N, numHeads, headDim], fill(N * numHeads * headDim));
  const out = be.zeros([N, numHeads, headDim]);
  const batch: AttentionBatch = { numSeqs: 1, queryStart: Int32Array.of(0, N), contextLens: Int32Array.of(N), blockTables: Int32Array.from({ length: numBlocks }, (_, i) => i), maxBlocksPerSeq: numBlocks };
  const positions = Int32Array.from({ length: N }, (_, i) => i);
  const rowLogitScale = new Float32Array(N).fill(1);
  const scale = 1 / Math.sqrt(headDim);
  be.attentionDca!(q, cache, batch, positions, dca, scale, rowLogitScale, out); // warm-up
  const dense = median(() => be.attentionDca!(q, cache, batch, positions, dca, scale, rowLogitScale, out));
  rows.push([String(N), 'attentionDca', '-', dense.toFixed(1), '1.00']);
  for (const b of budgetArgs) {
    const [v, s] = b === 'all' ? [N, N] : b.split(':').map(Number);
    const sparse: SparseDcaParams = { numSparseRows: Int32Array.of(N), lastQ, verticalSize: new Int32Array(numHeads).fill(v), slashSize: new Int32Array(numHeads).fill(s) };
    const ms = median(() => be.attentionDcaSparse!(q, cache, batch, positions, dca, scale, rowLogitScale, sparse, out));
    rows.push([String(N), 'attentionDcaSparse', b === 'all' ? 'all keys' : b, ms.toFixed(1), (dense / ms).toFixed(2)]);
  }
}
be.dispose();
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
process.stdout.write(`${numHeads} q / ${numKvHeads} kv heads of ${headDim}, ${numThreads} threads, last_q ${lastQ}, Qwen DCA constants\n`);
for (const r of rows) process.stdout.write(`${r.map((x, c) => x.padEnd(widths[c])).join('  ')}\n`);
