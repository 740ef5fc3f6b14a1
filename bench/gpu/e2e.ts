// End-to-end GPU benchmark of our ModelRunner on the CUDA backend at the Qwen2.5-7B-Instruct-1M shape (28
// layers, hidden 3584, 28 q / 4 kv heads, intermediate 18944, vocab 152064, its DCA config): random bf16
// weights made in memory (no files), prompts of random token ids, chunked prefill through
// singleSequenceStep (--chunk tokens per step), then greedy decode at that context. Per prompt length:
// TTFT (first chunk enqueued to the last chunk's logits on the host), decode tokens/s, and peak device
// memory (the backend's high-water mark of tensors + scratch, the analogue of torch.cuda.max_memory_allocated,
// and cudaMemGetInfo's used bytes for the whole device). One variant per --variant (each a fresh backend:
//   default   createCudaBackend()                      (bf16 tensor-core GEMM, fp32 attention)
//   tc-attn   createCudaBackend({ tensorCoreAttention }) (also bf16 tensor-core prefill attention)
//   exact     createCudaBackend({ exactMatmul: true })  (fp32 everywhere)
// Prints one JSON object per line. Usage (GPU machine, from the repo root):
//   node --import tsx bench/gpu/e2e.ts [--lengths 4096,16384,32768] [--decode 32] [--chunk 8192] [--variant default ...]
import { performance } from 'node:perf_hooks';
import { parseModelConfig } from '../../src/model/config.js';
import { PRESETS, presetConfigJson } from '../../src/model/init-presets.js';
import { syntheticWeights } from '../../src/model/synthetic-weights.js';
import { promptIds } from '../../src/cli/bench.js';
import { createCudaBackend, type CudaBackendOptions } from '../../src/runtime/cuda-backend.js';
import { ModelRunner, singleSequenceStep } from '../../src/runtime/model-runner.js';

const VARIANTS: Record<string, CudaBackendOptions> = {
  default: {},
  'tc-attn': { tensorCoreAttention: true },
  exact: { exactMatmul: true },
};

function argList(name: string, fallback: string[]): string[] {
  const out: string[] = [];
  process.argv.forEach((a, i) => {
    if (a === `--${name}` && process.argv[i + 1] !== undefined) out.push(...process.argv[i + 1].split(','));
  });
  return out.length > 0 ? out : fallback;
}

const lengths = argList('lengths', ['4096', '16384', '32768']).map(Number);
const decodeTokens = Number(argList('decode', ['32'])[0]);
const chunk = Number(argList('chunk', ['8192'])[0]);
const variants = argList('variant', ['default']);
const blockSize = 16;
const GiB = 2 ** 30;

function emit(rec: Record<string, unknown>): void {
  console.log(JSON.stringify(rec));
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** Prefill `ids` in chunks, then `decodeTokens` greedy steps. Returns seconds for both phases. */
function generate(runner: ModelRunner, ids: Int32Array, numBlocks: number, nDecode: number): { ttft: number; decode: number } {
  const P = ids.length;
  const t0 = performance.now();
  let logits: Float32Array = new Float32Array(0);
  for (let start = 0; start < P; start += chunk) {
    const piece = ids.subarray(start, Math.min(P, start + chunk));
    logits = runner.step(singleSequenceStep(piece, start, blockSize, numBlocks, P));
  }
  const t1 = performance.now();
  let token = argmax(logits);
  for (let i = 0; i < nDecode; i++) {
    logits = runner.step(singleSequenceStep([token], P + i, blockSize, numBlocks, P));
    token = argmax(logits);
  }
  const t2 = performance.now();
  if (!logits.every(Number.isFinite)) throw new Error('non-finite logits');
  return { ttft: (t1 - t0) / 1000, decode: (t2 - t1) / 1000 };
}

const preset = PRESETS['qwen2.5-7b-1m'];
const config = parseModelConfig(presetConfigJson(preset, 'bf16'), 'qwen2.5-7b-1m preset');
const maxLen = Math.max(...lengths) + decodeTokens;
const numBlocks = Math.ceil(maxLen / blockSize) + 1;
const tg = performance.now();
const weights = syntheticWeights(config, 'bf16'); // the same synthetic weights `longctx bench` uses
emit({ kind: 'setup', weightsSeconds: +((performance.now() - tg) / 1000).toFixed(2), numBlocks, blockSize, chunk, decodeTokens, dca: config.dca });

for (const variant of variants) {
  const opts = VARIANTS[variant];
  if (opts === undefined) throw new Error(`unknown --variant ${variant} (have ${Object.keys(VARIANTS).join(', ')})`);
  const backend = createCudaBackend(opts);
  const tu = performance.now();
  const runner = new ModelRunner(backend, config, weights, { numBlocks, blockSize });
  backend.synchronize();
  const kvBytes = 2 * config.numLayers * numBlocks * blockSize * config.numKvHeads * config.headDim * 4;
  emit({ kind: 'load', variant, device: backend.info.name, uploadSeconds: +((performance.now() - tu) / 1000).toFixed(2), liveGiB: +(backend.liveBytes() / GiB).toFixed(2), kvPoolGiB: +(kvBytes / GiB).toFixed(2) });
  try {
    let seed = 777;
    const prompt = (n: number) => promptIds(n, config.vocabSize, seed++);
    generate(runner, prompt(1024), numBlocks, 2); // warm-up: module load, cuBLAS handles, scratch growth
    for (const P of lengths) {
      backend.resetPeak();
      const { ttft, decode } = generate(runner, prompt(P), numBlocks, decodeTokens);
      const mem = backend.memInfo();
      emit({
        kind: 'e2e', engine: `longctx-${variant}`, promptTokens: P, chunk, ttftSeconds: +ttft.toFixed(3),
        prefillTokensPerSecond: Math.round(P / ttft), decodeTokens, decodeTokensPerSecond: +(decodeTokens / decode).toFixed(2),
        peakGiB: +(backend.peakBytes() / GiB).toFixed(2), deviceUsedGiB: +((mem.total - mem.free) / GiB).toFixed(2),
      });
    }
  } catch (e) {
    emit({ kind: 'error', variant, message: e instanceof Error ? e.message : String(e) });
  } finally {
    runner.dispose();
  }
}
