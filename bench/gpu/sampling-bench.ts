// Micro-benchmark of Backend.sampleRows on the GPU against the host sampler, ms per step for R = 1, 8, 64
// rows of 152064 logits with Qwen's defaults (t 0.7, top-k 20, top-p 0.8), plain temperature 1 (OpenAI's
// defaults) and top-p 0.95 alone. GPU: one sampleRows call (params up, kernels, the ids down, synchronized).
// Host: reading the [R, V] logits back plus sampleTokenWithUniform per row, i.e. what a step costs without
// the op. One JSON line per case, then a table. Run on the GPU machine: node --import tsx bench/gpu/sampling-bench.ts
import { performance } from 'node:perf_hooks';
import { createCudaBackend, cudaUnavailableReason } from '../../src/runtime/cuda-backend.js';
import { makeTensor } from '../../src/runtime/tensor.js';
import { sampleTokenWithUniform, type TransformParams } from '../../src/sampling/sampler.js';
import type { SamplingRow } from '../../src/sampling/sample-rows.js';
import { makeLogits } from '../../test/conformance/sampling-suite.js';
import { makeRng } from '../../test/ref/f64.js';

const why = cudaUnavailableReason();
if (why !== null) {
  console.log(`sampling-bench: CUDA unavailable: ${why}`);
  process.exit(0);
}
const V = 152064;
const BASE: TransformParams = { temperature: 1, topP: 1, topK: -1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };
const SETS: [string, TransformParams][] = [
  ['qwen (t0.7 k20 p0.8)', { ...BASE, temperature: 0.7, topK: 20, topP: 0.8 }],
  ['temperature 1', BASE],
  ['top-p 0.95', { ...BASE, topP: 0.95 }],
];
const be = createCudaBackend();
const rng = makeRng(11);
const lines: string[] = [];
for (const R of [1, 8, 64]) {
  const host = new Float32Array(R * V);
  for (let r = 0; r < R; r++) host.set(makeLogits(rng, V, 'normal'), r * V);
  const t = be.upload(makeTensor('f32', [R, V], host));
  for (const [name, params] of SETS) {
    const rows: SamplingRow[] = Array.from({ length: R }, () => ({ params, u: rng.next(), history: null }));
    for (let i = 0; i < 3; i++) be.sampleRows!(t, rows); // warm-up
    const gpuIters = 20;
    let t0 = performance.now();
    for (let i = 0; i < gpuIters; i++) be.sampleRows!(t, rows);
    const gpuMs = (performance.now() - t0) / gpuIters;
    const hostIters = R >= 64 ? 2 : 5;
    let readMs = 0;
    t0 = performance.now();
    for (let i = 0; i < hostIters; i++) {
      const r0 = performance.now();
      const z = be.read(t);
      readMs += performance.now() - r0;
      for (let r = 0; r < R; r++) sampleTokenWithUniform(z.subarray(r * V, (r + 1) * V), params, null, rows[r].u);
    }
    const hostMs = (performance.now() - t0) / hostIters;
    readMs /= hostIters;
    console.log(JSON.stringify({ bench: 'sampling', R, V, params: name, gpuMs, hostMs, hostReadMs: readMs }));
    lines.push(`R ${String(R).padStart(2)}  ${name.padEnd(22)} gpu ${gpuMs.toFixed(3).padStart(8)} ms/step   host ${hostMs.toFixed(2).padStart(8)} ms/step (read ${readMs.toFixed(2)})   x${(hostMs / gpuMs).toFixed(0)}`);
  }
  be.free(t);
}
be.dispose();
console.log(`== sampleRows on the GPU vs the host sampler, V = ${V} ==`);
for (const l of lines) console.log(l);
