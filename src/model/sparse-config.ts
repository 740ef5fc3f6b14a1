// sparse_attention_config.json (long-context-attention.md §1.2) and the sparse-prefill switch (§4.4): parses
// and validates the per-layer, per-head [pattern, vertical_size, slash_size, score] budgets, applies vLLM's
// 30 -> 130 vertical bump once (the engine's graph and `longctx plan` read the same numbers), decides which
// rows of a step are sparse prefill rows, and attaches the budgets to the model's DcaConfig.
// Invariant: every problem with the file is one UserError naming the file, the layer, the head and the fix.
// Must not: read weights or tensors.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import type { AttentionBatch, SparseDcaParams } from '../runtime/backend.js';
import type { DcaConfig, ModelConfig } from './config-types.js';

export const SPARSE_CONFIG_FILE = 'sparse_attention_config.json';
export const DEFAULT_SPARSE_THRESHOLD = 32768; // sparse_attention_threshold (§1.2)
export const DEFAULT_SPARSE_LAST_Q = 64; // sparse_attention_last_q (§1.2)

/** Budgets of every layer: verticalSize after the bump, slashSize as in the file; [numHeads] each. */
export interface SparseAttentionConfig {
  readonly file: string; // where the budgets came from, for messages
  readonly layers: readonly { readonly verticalSize: Int32Array; readonly slashSize: Int32Array }[];
}

/** vLLM bumps a vertical budget of exactly 30 (only the attention sinks) to 130. §4.1 */
export function effectiveVerticalSize(verticalSize: number): number {
  return verticalSize === 30 ? verticalSize + 100 : verticalSize;
}

function describe(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/**
 * Validates a parsed sparse_attention_config.json against the model: a list of numLayers objects, each
 * mapping every head index "0".."numHeads-1" to [pattern, vertical_size, slash_size, score] with pattern
 * "vertical_and_slash" and positive integer sizes (score is the offline search score and is ignored).
 */
export function parseSparseAttentionConfig(json: unknown, file: string, numLayers: number, numHeads: number): SparseAttentionConfig {
  const shape = `a list of ${numLayers} objects (one per layer) mapping head "0".."${numHeads - 1}" to [pattern, vertical_size, slash_size, score]`;
  if (!Array.isArray(json)) throw new UserError(`${file}: must be ${shape}, got ${describe(json)}`);
  if (json.length !== numLayers) {
    throw new UserError(`${file}: has ${json.length} layer entries, but config.json has num_hidden_layers = ${numLayers}: the file belongs to another model`);
  }
  const layers = json.map((layer: unknown, l) => {
    if (typeof layer !== 'object' || layer === null || Array.isArray(layer)) throw new UserError(`${file}: layer ${l} must be an object mapping head index to [pattern, vertical_size, slash_size, score], got ${describe(layer)}`);
    const entries = layer as Record<string, unknown>;
    for (const key of Object.keys(entries)) {
      if (!/^(0|[1-9]\d*)$/.test(key) || Number(key) >= numHeads) {
        throw new UserError(`${file}: layer ${l} has head "${key}", but config.json has num_attention_heads = ${numHeads} (heads "0".."${numHeads - 1}")`);
      }
    }
    const verticalSize = new Int32Array(numHeads);
    const slashSize = new Int32Array(numHeads);
    for (let h = 0; h < numHeads; h++) {
      const where = `${file}: layer ${l} head "${h}"`;
      const entry = entries[String(h)];
      if (entry === undefined) throw new UserError(`${where} is missing: every layer needs an entry for each of the ${numHeads} heads`);
      if (!Array.isArray(entry) || entry.length < 3) throw new UserError(`${where} must be [pattern, vertical_size, slash_size, score], got ${describe(entry)}`);
      if (entry[0] !== 'vertical_and_slash') throw new UserError(`${where} has pattern ${describe(entry[0])}: only "vertical_and_slash" is supported`);
      for (const [i, name] of [[1, 'vertical_size'], [2, 'slash_size']] as const) {
        const v = entry[i] as unknown;
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0 || v > 2 ** 31 - 1) throw new UserError(`${where} ${name} must be a positive integer, got ${describe(v)}`);
      }
      verticalSize[h] = effectiveVerticalSize(entry[1] as number);
      slashSize[h] = entry[2] as number;
    }
    return { verticalSize, slashSize };
  });
  return { file, layers };
}

/**
 * The budgets of <dir>/sparse_attention_config.json when sparse prefill applies to this model: it has a DCA
 * section, sparse_attention_enabled is not false, and the file exists (enabled defaults to "the file
 * exists", §1.2). null otherwise. UserError when enabled is true but the file is missing, or it is invalid.
 */
export function readSparseAttentionConfig(dir: string, config: ModelConfig): SparseAttentionConfig | null {
  const dca = config.dca;
  if (dca === null || dca.sparseAttentionEnabled === false) return null;
  const file = path.join(dir, SPARSE_CONFIG_FILE);
  if (!fs.existsSync(file)) {
    if (dca.sparseAttentionEnabled === true) {
      throw new UserError(
        `${path.join(dir, 'config.json')} sets dual_chunk_attention_config.sparse_attention_enabled to true, but ${file} is missing: ` +
          'add the per-head budgets file or set sparse_attention_enabled to false',
      );
    }
    return null;
  }
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseSparseAttentionConfig(json, file, config.numLayers, config.numHeads);
}

/** The config with the sparse budgets of `dir` attached to its DcaConfig (the same object when there are none). */
export function withSparseAttention(dir: string, config: ModelConfig): ModelConfig {
  const sparse = readSparseAttentionConfig(dir, config);
  return sparse === null ? config : { ...config, dca: { ...(config.dca as DcaConfig), sparseAttention: sparse } };
}

/** The largest budgets (after the bump), as `longctx plan` sizes its sparse buffers; null when sparse is off. */
export function maxSparseBudget(sparse: SparseAttentionConfig | null | undefined): { maxVerticalSize: number; maxSlashSize: number; maxVerticalSum: number; maxSlashSum: number } | null {
  if (sparse === null || sparse === undefined) return null;
  let maxVerticalSize = 0;
  let maxSlashSize = 0;
  let maxVerticalSum = 0;
  let maxSlashSum = 0;
  for (const layer of sparse.layers) {
    for (const v of layer.verticalSize) maxVerticalSize = Math.max(maxVerticalSize, v);
    for (const s of layer.slashSize) maxSlashSize = Math.max(maxSlashSize, s);
    maxVerticalSum = Math.max(maxVerticalSum, layer.verticalSize.reduce((a, b) => a + b, 0));
    maxSlashSum = Math.max(maxSlashSum, layer.slashSize.reduce((a, b) => a + b, 0));
  }
  return { maxVerticalSize, maxSlashSize, maxVerticalSum, maxSlashSum };
}

/** Whether a DCA model prefills sparsely at all: budgets attached and sparse_attention_enabled not false. */
export function sparsePrefillEnabled(dca: DcaConfig | null): boolean {
  return dca !== null && dca.sparseAttention !== undefined && dca.sparseAttentionEnabled !== false;
}

/**
 * [numSeqs] sparse rows of each sequence of a step (SparseDcaParams.numSparseRows), or null when no row
 * is sparse: a sequence whose full prompt length exceeds sparse_attention_threshold prefills sparsely in
 * every step (§4.4), i.e. its rows at positions < promptLen; decodes and the generated rows of a recompute
 * stay dense. promptLens absent: each context counts as its prompt (as for the temperature).
 */
export function sparseRowsOfStep(dca: DcaConfig | null, batch: AttentionBatch, promptLens: Int32Array | undefined): Int32Array | null {
  if (!sparsePrefillEnabled(dca)) return null;
  const threshold = dca!.sparseAttentionThreshold ?? DEFAULT_SPARSE_THRESHOLD;
  const rows = new Int32Array(batch.numSeqs);
  let any = false;
  for (let s = 0; s < batch.numSeqs; s++) {
    const numQueries = batch.queryStart[s + 1] - batch.queryStart[s];
    const promptLen = promptLens === undefined ? batch.contextLens[s] : promptLens[s];
    if (promptLen <= threshold) continue;
    const first = batch.contextLens[s] - numQueries; // position of the sequence's first row in this step
    rows[s] = Math.max(0, Math.min(numQueries, promptLen - first));
    any ||= rows[s] > 0;
  }
  return any ? rows : null;
}

/** Layer l's SparseDcaParams for a step with these sparse rows. */
export function sparseParamsOfLayer(dca: DcaConfig, numSparseRows: Int32Array, layer: number): SparseDcaParams {
  const budgets = dca.sparseAttention!.layers[layer];
  return { numSparseRows, lastQ: dca.sparseAttentionLastQ ?? DEFAULT_SPARSE_LAST_Q, verticalSize: budgets.verticalSize, slashSize: budgets.slashSize };
}
