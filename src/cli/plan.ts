// `longctx plan --model DIR ...`: answers "does it fit, what is the largest max_model_len that fits, how many
// sequences fit" from config.json alone, without a GPU. Owns argument parsing, reading the model's config
// (and sparse_attention_config.json budgets when present) and printing; all arithmetic is src/core/memory-plan.ts.
// Exit codes: 0 = fits, 2 = answered but does not fit (table and reason still printed), 1 = bad input.
import { Command, InvalidArgumentError, Option } from 'commander';
import { UserError } from '../errors.js';
import { findGpu, KNOWN_GPUS } from '../core/gpus.js';
import { planMemory, DEFAULT_BLOCK_SIZE, DEFAULT_GPU_MEMORY_UTILIZATION, DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS, type SparseBudget } from '../core/memory-plan.js';
import { formatPlanTable, planToJson } from '../core/memory-plan-format.js';
import type { ModelConfig } from '../model/config-types.js';
import { readModelConfig } from '../model/config.js';
import { maxSparseBudget, readSparseAttentionConfig } from '../model/sparse-config.js';

export const EXIT_DOES_NOT_FIT = 2;

function parsePosInt(v: string): number {
  const s = v.replace(/[,_]/g, '');
  if (!/^\d+$/.test(s) || !Number.isSafeInteger(Number(s)) || Number(s) <= 0) throw new InvalidArgumentError('must be a positive integer');
  return Number(s);
}

function parseMaxModelLen(v: string): number | 'auto' {
  return v === 'auto' ? 'auto' : parsePosInt(v);
}

function parsePosNumber(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number');
  return n;
}

/** Largest per-head budgets of <dir>/sparse_attention_config.json (after vLLM's 30 → 130 bump), read and
 * validated by src/model/sparse-config.ts, as the graph reads them; null when sparse prefill is off. */
export function readSparseBudget(dir: string, config: ModelConfig): SparseBudget | null {
  return maxSparseBudget(readSparseAttentionConfig(dir, config));
}

interface PlanOptions {
  model: string;
  gpu?: string;
  gpuMemoryGib?: number;
  tensorParallelSize: number;
  maxModelLen?: number | 'auto';
  kvCacheDtype: 'bf16' | 'fp8';
  quantization?: 'fp8';
  maxNumBatchedTokens: number;
  maxNumSeqs: number;
  gpuMemoryUtilization: number;
  blockSize: number;
  seqLen?: number;
  json: boolean;
}

export function registerPlan(program: Command): void {
  program
    .command('plan')
    .description('plan GPU memory from config.json alone (no GPU needed): does it fit, the largest max_model_len that fits, how many sequences fit')
    .requiredOption('--model <dir>', 'model directory holding config.json')
    .addOption(new Option('--gpu <name>', `known GPU: ${KNOWN_GPUS.map((g) => g.name).join(', ')}`).conflicts('gpuMemoryGib'))
    .addOption(new Option('--gpu-memory-gib <n>', 'total memory per GPU in GiB (what cudaMemGetInfo reports)').argParser(parsePosNumber))
    .addOption(new Option('--tensor-parallel-size <n>', 'GPUs per model (must divide the KV heads)').argParser(parsePosInt).default(1))
    .addOption(new Option('--max-model-len <n|auto>', "context length to plan; auto = the largest that fits (default: the model's max_position_embeddings)").argParser(parseMaxModelLen))
    .addOption(new Option('--kv-cache-dtype <dtype>', 'KV cache element type').choices(['bf16', 'fp8']).default('bf16'))
    .addOption(new Option('--quantization <method>', 'weight quantization (embedding and lm_head stay bf16)').choices(['fp8']))
    .addOption(new Option('--max-num-batched-tokens <n>', 'tokens per step (prefill chunk): activation memory grows with it').argParser(parsePosInt).default(DEFAULT_MAX_NUM_BATCHED_TOKENS))
    .addOption(new Option('--max-num-seqs <n>', 'most sequences in one step').argParser(parsePosInt).default(DEFAULT_MAX_NUM_SEQS))
    .addOption(new Option('--gpu-memory-utilization <u>', 'hard cap on everything the engine allocates, as a fraction of GPU memory').argParser(parsePosNumber).default(DEFAULT_GPU_MEMORY_UTILIZATION))
    .addOption(new Option('--block-size <n>', 'tokens per KV block').argParser(parsePosInt).default(DEFAULT_BLOCK_SIZE))
    .addOption(new Option('--seq-len <n>', 'length for the "how many sequences fit" answer (default: a ladder up to max_model_len)').argParser(parsePosInt))
    .option('--json', 'print the plan as JSON (snake_case keys, exact bytes)', false)
    .addHelpText('after', '\nExit status: 0 if it fits, 2 if it does not (the plan and the reason are still printed), 1 on bad input.')
    .action((o: PlanOptions) => {
      if (o.gpu === undefined && o.gpuMemoryGib === undefined) {
        throw new UserError(`give --gpu NAME (${KNOWN_GPUS.map((g) => g.name).join(', ')}) or --gpu-memory-gib N`);
      }
      const gpu = o.gpu !== undefined ? findGpu(o.gpu) : null;
      const gpuMemoryBytes = gpu ? gpu.totalBytes : Math.round((o.gpuMemoryGib as number) * 2 ** 30);
      const config = readModelConfig(o.model);
      const plan = planMemory({
        config,
        gpuMemoryBytes,
        gpuMemoryUtilization: o.gpuMemoryUtilization,
        tensorParallelSize: o.tensorParallelSize,
        weightDtype: o.quantization === 'fp8' ? 'fp8' : 'bf16',
        kvCacheDtype: o.kvCacheDtype,
        maxModelLen: o.maxModelLen,
        maxNumBatchedTokens: o.maxNumBatchedTokens,
        maxNumSeqs: o.maxNumSeqs,
        blockSize: o.blockSize,
        sparseAttention: readSparseBudget(o.model, config),
      });
      const report = { gpuName: gpu ? gpu.name : `${o.gpuMemoryGib} GiB GPU`, seqLens: o.seqLen !== undefined ? [o.seqLen] : undefined };
      process.stdout.write(o.json ? `${JSON.stringify(planToJson(plan, report), null, 2)}\n` : formatPlanTable(plan, report));
      if (!plan.fits) process.exitCode = EXIT_DOES_NOT_FIT;
    });
}
