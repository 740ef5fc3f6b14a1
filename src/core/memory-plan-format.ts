// Renders a MemoryPlan for people (an aligned table in GiB/MiB) and for machines (snake_case JSON with exact
// byte counts). Shared by `longctx plan` and, later, by serve / LLM.create, which print the plan before
// loading weights. Invariant: pure string/object building from the plan; every number shown is derived from
// the plan's integers. Must not: recompute any budget, or write anywhere.
import { formatInt, type MemoryPlan } from './memory-plan.js';
import { GiB, groupBytes, MiB, type PlanItem } from './memory-workspace.js';

export interface PlanReportOptions {
  readonly gpuName?: string; // shown in the title (e.g. "H100-80GB"); default "GPU"
  readonly seqLens?: readonly number[]; // lengths for the concurrency answer (default: a standard ladder + max_model_len)
}

const LADDER = [4096, 32768, 131072, 262144];

function concurrencyLens(plan: MemoryPlan, opts: PlanReportOptions): number[] {
  const lens = new Set(opts.seqLens ?? [...LADDER.filter((n) => n < plan.maxModelLen), plan.maxModelLen]);
  return [...lens].filter((n) => Number.isSafeInteger(n) && n > 0).sort((a, b) => a - b);
}

function gib(bytes: number, digits = 2): string {
  return (bytes / GiB).toFixed(digits);
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(1);
}

function itemLabel(it: PlanItem): string {
  if (it.group === 'arena') return `activations: ${it.name}`;
  return `${it.group}: ${it.name}`;
}

/** The human table: budget per GPU, itemized weights and workspace, the answers. Lines end with "\n". */
export function formatPlanTable(plan: MemoryPlan, opts: PlanReportOptions = {}): string {
  const s = plan.settings;
  const cfg = plan.config;
  const d = plan.devices[0];
  const out: string[] = [];
  const gpu = opts.gpuName ?? 'GPU';
  out.push(
    `memory plan: ${cfg.architecture}, ${cfg.numLayers} layers, ${cfg.numHeads} heads / ${cfg.numKvHeads} KV heads, on ${s.tensorParallelSize} x ${gpu} (${gib(d.totalBytes)} GiB each)`,
  );
  out.push(
    `settings: tensor parallel ${s.tensorParallelSize}, weights ${s.weightDtype}, KV cache ${s.kvCacheDtype}, ` +
      `max_model_len ${formatInt(plan.maxModelLen)}${s.maxModelLen === 'auto' ? ' (auto)' : ''}, ` +
      `max_num_batched_tokens ${formatInt(s.maxNumBatchedTokens)}, max_num_seqs ${formatInt(s.maxNumSeqs)}, ` +
      `block size ${s.blockSize}, ${s.exactMatmul ? 'exact fp32 GEMMs' : 'bf16 tensor-core GEMMs'}, utilization ${s.gpuMemoryUtilization.toFixed(2)}`,
  );
  out.push('');
  const rows: [string, number, string][] = [
    ['total', d.totalBytes, ''],
    [`cap (utilization ${s.gpuMemoryUtilization.toFixed(2)})`, d.capBytes, 'everything below lives under the cap'],
    ['weights', d.weightsBytes, `${s.weightDtype}, shard 1/${s.tensorParallelSize}`],
    ['workspace', d.workspaceBytes, `step activations ${gib(d.arenaBytes)} GiB + CUDA scratch + runtime`],
    ['margin', d.marginBytes, 'max(2% of cap, 512 MiB)'],
    ['KV cache', d.kvCacheBytes, `${formatInt(plan.numBlocks)} blocks = ${formatInt(plan.numKvTokens)} tokens`],
    ['free', d.freeBytes, d.freeBytes < 0 ? 'OVERCOMMITTED' : 'less than one block'],
  ];
  out.push(`${'per GPU'.padEnd(28)}${'GiB'.padStart(9)}${'bytes'.padStart(18)}`);
  for (const [label, bytes, note] of rows) {
    out.push(`  ${label.padEnd(26)}${gib(bytes).padStart(9)}${formatInt(bytes).padStart(18)}  ${note}`.trimEnd());
  }
  out.push('');
  const width = Math.max(...[...d.weights, ...d.workspace].map((it) => itemLabel(it).length)) + 2;
  out.push(`${'weights per GPU'.padEnd(width + 2)}${'MiB'.padStart(10)}  formula`);
  for (const it of d.weights) out.push(`  ${it.name.padEnd(width)}${mib(it.bytes).padStart(10)}  ${it.formula}`);
  out.push(`${'workspace per GPU'.padEnd(width + 2)}${'MiB'.padStart(10)}  formula`);
  for (const it of d.workspace) out.push(`  ${itemLabel(it).padEnd(width)}${mib(it.bytes).padStart(10)}  ${it.formula}`);
  out.push(`  ${'step activations total'.padEnd(width)}${mib(d.arenaBytes).padStart(10)}`);
  out.push('');
  out.push(
    `KV cache: ${formatInt(plan.kvCacheBytesPerToken)} bytes per token (whole model: all layers, K and V, ${s.kvCacheDtype}); ` +
      `${formatInt(plan.kvCacheBytesPerTokenPerDevice)} per GPU; max_model_len ${formatInt(plan.maxModelLen)} needs ` +
      `${gib(plan.kvCacheBytesNeededPerDevice)} GiB per GPU, ${gib(Math.max(0, plan.kvAvailableBytesPerDevice))} GiB available`,
  );
  out.push(`fits: ${plan.fits ? 'yes' : 'no'}`);
  if (plan.failure) out.push(`  ${plan.failure.error.message}`);
  out.push(`largest max_model_len that fits: ${formatInt(plan.maxModelLenThatFits)} (model maximum ${formatInt(cfg.maxPositionEmbeddings)})`);
  out.push(`concurrent sequences that fit (by memory; the scheduler also caps at max_num_seqs ${formatInt(s.maxNumSeqs)}):`);
  for (const n of concurrencyLens(plan, opts)) out.push(`  ${formatInt(n).padStart(11)} tokens: ${formatInt(plan.numSeqsThatFit(n))}`);
  return `${out.join('\n')}\n`;
}

function itemJson(it: PlanItem): Record<string, unknown> {
  return { name: it.name, group: it.group, bytes: it.bytes, formula: it.formula };
}

/** The machine form: snake_case keys, exact integers in bytes. */
export function planToJson(plan: MemoryPlan, opts: PlanReportOptions = {}): Record<string, unknown> {
  const s = plan.settings;
  return {
    fits: plan.fits,
    failure: plan.failure?.kind ?? null,
    error: plan.failure?.error.message ?? null,
    gpu: opts.gpuName ?? null,
    tensor_parallel_size: s.tensorParallelSize,
    weight_dtype: s.weightDtype,
    kv_cache_dtype: s.kvCacheDtype,
    max_model_len: plan.maxModelLen,
    max_model_len_auto: s.maxModelLen === 'auto',
    max_num_batched_tokens: s.maxNumBatchedTokens,
    max_num_seqs: s.maxNumSeqs,
    block_size: s.blockSize,
    exact_matmul: s.exactMatmul,
    tensor_core_attention: s.tensorCoreAttention,
    gpu_memory_utilization: s.gpuMemoryUtilization,
    kv_cache_bytes_per_token: plan.kvCacheBytesPerToken,
    kv_cache_bytes_per_token_per_device: plan.kvCacheBytesPerTokenPerDevice,
    kv_block_bytes_per_device: plan.kvBlockBytesPerDevice,
    kv_cache_bytes_needed_per_device: plan.kvCacheBytesNeededPerDevice,
    kv_available_bytes_per_device: plan.kvAvailableBytesPerDevice,
    num_blocks: plan.numBlocks,
    num_kv_tokens: plan.numKvTokens,
    max_model_len_that_fits: plan.maxModelLenThatFits,
    model_max_position_embeddings: plan.config.maxPositionEmbeddings,
    num_seqs_that_fit: concurrencyLens(plan, opts).map((n) => ({ seq_len: n, num_seqs: plan.numSeqsThatFit(n) })),
    devices: plan.devices.map((d) => ({
      index: d.index,
      total_bytes: d.totalBytes,
      cap_bytes: d.capBytes,
      weights_bytes: d.weightsBytes,
      kv_cache_bytes: d.kvCacheBytes,
      workspace_bytes: d.workspaceBytes,
      arena_bytes: d.arenaBytes,
      margin_bytes: d.marginBytes,
      free_bytes: d.freeBytes,
      weights: d.weights.map(itemJson),
      workspace: d.workspace.map(itemJson),
    })),
  };
}

/**
 * The few lines serve and LLM.create print before loading weights: the budget by kind and what it buys.
 * Every number comes from the plan (activations = the step buffers, scratch = the CUDA reservation).
 */
export function formatPlanSummary(plan: MemoryPlan, deviceName: string): string {
  const s = plan.settings;
  const d = plan.devices[0];
  const scratch = groupBytes(d.workspace, 'library');
  const runtime = groupBytes(d.workspace, 'runtime') + groupBytes(d.workspace, 'static');
  const seqs = plan.numSeqsThatFit(plan.maxModelLen);
  return (
    `memory plan: ${deviceName}, ${gib(d.totalBytes)} GiB, cap ${gib(d.capBytes)} GiB (--gpu-memory-utilization ${s.gpuMemoryUtilization.toFixed(2)})\n` +
    `  weights ${gib(d.weightsBytes)} GiB (${s.weightDtype}), step activations ${gib(d.arenaBytes)} GiB (${formatInt(s.maxNumBatchedTokens)} tokens, ` +
    `${formatInt(Math.min(s.maxNumSeqs, s.maxNumBatchedTokens))} sampled rows), CUDA scratch ${gib(scratch)} GiB, runtime ${gib(runtime)} GiB, margin ${gib(d.marginBytes)} GiB\n` +
    `  KV cache ${gib(d.kvCacheBytes)} GiB (${s.kvCacheDtype}) = ${formatInt(plan.numKvTokens)} tokens in ${formatInt(plan.numBlocks)} blocks; ` +
    `max_model_len ${formatInt(plan.maxModelLen)}${s.maxModelLen === 'auto' ? ' (auto)' : ''}: ${formatInt(seqs)} such sequence${seqs === 1 ? '' : 's'} at once\n`
  );
}
