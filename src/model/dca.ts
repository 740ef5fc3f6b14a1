// Dual Chunk Attention position rules and temperature (long-context-attention.md §2): pure integer/float
// functions of (p, k, L, C), the per-row logit scale, and the config checks that guard them.
// Invariant: every relative distance fed to RoPE lies in [0, C]; keys are rotated once at k mod L and
// stored unscaled, so the temperature is one logit multiplier per query row (rowLogitScale), a function
// of the row's position and its prompt length only.
// Must not: touch tensors, sequences or I/O. Caller bugs throw Error; bad user input throws UserError.
import { UserError } from '../errors.js';
import type { DcaParams } from '../runtime/backend.js';
import type { DcaConfig, ModelConfig } from './config-types.js';

/** L = chunk_size − local_size (chunk length), C = chunk_size (largest query rotation), W = local_size. §1.1 */
export interface DcaConstants {
  readonly L: number;
  readonly C: number;
  readonly W: number;
}

/** The three query rotations used for the output, plus the two selection-only ("critical") ones. §2.3 */
export interface QueryRotations {
  readonly intra: number; // p mod L: keys in the same DCA chunk
  readonly succ: number; // min(p mod L + L, C): keys in the previous chunk
  readonly inter: number; // min(2L − 1, C): keys in older chunks (a constant)
  readonly succCrit: number; // p mod L + L (no clamp): sparse index selection only
  readonly interCrit: number; // p mod L + C: sparse index selection only
}

export type DcaVariant = 'intra' | 'succ' | 'inter';

function requireIndex(what: string, x: number): void {
  if (!Number.isSafeInteger(x) || x < 0) throw new Error(`DCA: ${what} must be an integer >= 0, got ${x}`);
}

function requireChunk(L: number, C?: number): void {
  if (!Number.isSafeInteger(L) || L <= 0) throw new Error(`DCA: chunk length L must be a positive integer, got ${L}`);
  if (C !== undefined && (!Number.isSafeInteger(C) || C < L)) throw new Error(`DCA: chunk size C must be an integer >= L=${L}, got ${C}`);
}

export function dcaConstants(cfg: DcaConfig): DcaConstants {
  return { L: cfg.chunkSize - cfg.localSize, C: cfg.chunkSize, W: cfg.localSize };
}

/** The Backend's DcaParams for a model: Qwen2 rotates the full head (rotaryDim = headDim). */
export function toDcaParams(cfg: DcaConfig, ropeTheta: number, rotaryDim: number): DcaParams {
  const { L, C } = dcaConstants(cfg);
  return { chunkLen: L, chunkSize: C, ropeTheta, rotaryDim };
}

/** Position a key at absolute position k is rotated at when it is written to the cache: k mod L. §2.2 */
export function keyRotationPosition(k: number, L: number): number {
  requireIndex('key position', k);
  requireChunk(L);
  return k % L;
}

/** Rotation positions of a query at absolute position p. §2.3 */
export function queryRotationPositions(p: number, L: number, C: number): QueryRotations {
  requireIndex('query position', p);
  requireChunk(L, C);
  const offset = p % L;
  return {
    intra: offset,
    succ: Math.min(offset + L, C),
    inter: Math.min(2 * L - 1, C),
    succCrit: offset + L,
    interCrit: offset + C,
  };
}

/** Which key range (k ≤ p) a key falls in, by d = floor(p/L) − floor(k/L): 0 intra, 1 succ, ≥ 2 inter. §2.1 */
export function dcaVariant(p: number, k: number, L: number): DcaVariant {
  requireIndex('query position', p);
  requireIndex('key position', k);
  requireChunk(L);
  if (k > p) throw new Error(`DCA: key position ${k} is after query position ${p} (causal attention has k <= p)`);
  const d = Math.floor(p / L) - Math.floor(k / L);
  return d === 0 ? 'intra' : d === 1 ? 'succ' : 'inter';
}

/** Relative distance RoPE sees for (p, k): the variant's query rotation minus k mod L, in [0, C]. §2.4 */
export function relativeDistance(p: number, k: number, L: number, C: number): number {
  const rotations = queryRotationPositions(p, L, C);
  return rotations[dcaVariant(p, k, L)] - keyRotationPosition(k, L);
}

/** s(N) = max(1, 0.1·ln(N / original_max_position_embeddings) + 1). §2.6 */
export function attentionTemperature(N: number, originalMax: number): number {
  if (!Number.isFinite(N) || N <= 0) throw new Error(`DCA: sequence length must be positive, got ${N}`);
  if (!Number.isFinite(originalMax) || originalMax <= 0) throw new Error(`DCA: original_max_position_embeddings must be positive, got ${originalMax}`);
  return Math.max(1, 0.1 * Math.log(N / originalMax) + 1);
}

export interface RowLogitScaleInput {
  promptLen: number; // the request's full prompt length (also during early chunks of a chunked prefill)
  position: number; // absolute position p of the query row (the sequence has p + 1 tokens once it is fed)
  originalMax: number; // original_max_position_embeddings
}

/**
 * The logit multiplier s_q·s_k of one query row at position p, applied to q·k (keys are cached unscaled).
 * §2.6. A prompt row (p < promptLen) gets s(promptLen)^2: vLLM's prefill N = max(prompt_len, seq_len) is
 * promptLen in every prefill chunk. A generated row (p >= promptLen) gets s(p + 1)·s(promptLen): the decode
 * that produced it saw p + 1 tokens (s_q = s(N_cur)); generated keys are treated as prompt keys (vLLM scaled
 * them by s at their own length, within 0.001 of s(promptLen) over an 8K generation at 1M, §2.6 last
 * bullet). The factor depends only on (p, promptLen), never on what else the step feeds, so a recompute
 * after preemption (prompt and generated rows in one step) reproduces the original prefill and decodes.
 */
export function rowLogitScale(input: RowLogitScaleInput): number {
  const { promptLen, position, originalMax } = input;
  if (!Number.isSafeInteger(promptLen) || promptLen <= 0) throw new Error(`DCA: promptLen must be a positive integer, got ${promptLen}`);
  requireIndex('query position', position);
  if (position < promptLen) {
    const s = attentionTemperature(promptLen, originalMax);
    return s * s;
  }
  return attentionTemperature(position + 1, originalMax) * attentionTemperature(promptLen, originalMax);
}

/**
 * rowLogitScale of every query row of a step (the Backend's attentionDca input, [T]): row t belongs to the
 * sequence s with queryStart[s] <= t < queryStart[s + 1] and sits at positions[t]. Without promptLens,
 * every context counts as a prompt (all rows are prompt rows): exact (all factors are 1) as long as no
 * context exceeds originalMax, and refused beyond (the temperature would be wrong).
 */
export function stepRowLogitScales(
  positions: Int32Array,
  queryStart: Int32Array,
  contextLens: Int32Array,
  promptLens: Int32Array | undefined,
  originalMax: number,
): Float32Array {
  const numSeqs = contextLens.length;
  if (promptLens !== undefined && promptLens.length !== numSeqs) {
    throw new Error(`DCA: promptLens has ${promptLens.length} entries for ${numSeqs} sequences`);
  }
  if (queryStart.length !== numSeqs + 1 || queryStart[0] !== 0 || queryStart[numSeqs] !== positions.length) {
    throw new Error(`DCA: queryStart must have ${numSeqs + 1} entries from 0 to T = ${positions.length}`);
  }
  const out = new Float32Array(positions.length);
  for (let s = 0; s < numSeqs; s++) {
    const currentLen = contextLens[s];
    if (promptLens === undefined && currentLen > originalMax) {
      throw new Error(
        `DCA: sequence ${s} has ${currentLen} tokens > original_max_position_embeddings ${originalMax}: ` +
          'the step inputs must carry promptLens for the attention temperature',
      );
    }
    const promptLen = promptLens === undefined ? currentLen : promptLens[s];
    for (let t = queryStart[s]; t < queryStart[s + 1]; t++) {
      out[t] = rowLogitScale({ promptLen, position: positions[t], originalMax });
    }
  }
  return out;
}

/** Up to four block sizes in [2, 256] dividing n (1 only if nothing else does): powers of two first, nearest `near`. */
function suggestBlockSizes(n: number, near: number): number[] {
  const divisors: number[] = [];
  for (let d = 2; d <= Math.min(n, 256); d++) if (n % d === 0) divisors.push(d);
  if (divisors.length === 0) return [1];
  const isPow2 = (d: number) => (d & (d - 1)) === 0;
  divisors.sort((a, b) => Number(isPow2(b)) - Number(isPow2(a)) || Math.abs(a - near) - Math.abs(b - near) || b - a);
  return divisors.slice(0, 4).sort((a, b) => a - b);
}

/**
 * Checks a DCA config against the KV block size (§1.1: vLLM requires chunk_len % block_size == 0; the paged
 * kernels re-base block tables at chunk boundaries). Throws a UserError naming the field and the fix.
 */
export function validateDca(cfg: DcaConfig, blockSize: number, file = 'config.json'): void {
  const where = `${file}: dual_chunk_attention_config`;
  const fields: [string, number][] = [
    ['chunk_size', cfg.chunkSize],
    ['local_size', cfg.localSize],
    ['original_max_position_embeddings', cfg.originalMaxPositionEmbeddings],
  ];
  for (const [name, value] of fields) {
    if (!Number.isSafeInteger(value) || value <= 0) throw new UserError(`${where} ${name} must be a positive integer, got ${value}`);
  }
  if (cfg.localSize >= cfg.chunkSize) {
    throw new UserError(`${where} local_size (${cfg.localSize}) must be smaller than chunk_size (${cfg.chunkSize}): the DCA chunk length chunk_size - local_size must be positive`);
  }
  const L = cfg.chunkSize - cfg.localSize;
  if (cfg.chunkLen !== L) {
    throw new UserError(`${where} is inconsistent: chunk length ${cfg.chunkLen} != chunk_size ${cfg.chunkSize} - local_size ${cfg.localSize}; derive it from the two fields`);
  }
  for (const [name, value] of [['sparse_attention_threshold', cfg.sparseAttentionThreshold], ['sparse_attention_last_q', cfg.sparseAttentionLastQ]] as const) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value <= 0)) throw new UserError(`${where} ${name} must be a positive integer, got ${value}`);
  }
  if (!Number.isSafeInteger(blockSize) || blockSize <= 0) throw new UserError(`KV block size must be a positive integer, got ${blockSize}`);
  if (L % blockSize !== 0) {
    throw new UserError(
      `${where} chunk_size - local_size = ${L} is not a multiple of the KV block size ${blockSize}: ` +
        `use a block size dividing ${L} (e.g. ${suggestBlockSizes(L, blockSize).join(', ')}), ` +
        `or a local_size that makes chunk_size - local_size a multiple of ${blockSize}`,
    );
  }
}

/**
 * Refuses a --max-model-len the model cannot serve: beyond max_position_embeddings plain RoPE leaves its
 * training range (quality collapses), and DCA models are configured up to max_position_embeddings (§1.1).
 */
export function checkMaxModelLen(config: ModelConfig, maxModelLen: number): void {
  if (!Number.isSafeInteger(maxModelLen) || maxModelLen <= 0) {
    throw new UserError(`--max-model-len must be a positive integer, got ${maxModelLen}`);
  }
  const limit = config.maxPositionEmbeddings;
  if (maxModelLen <= limit) return;
  if (config.dca === null) {
    throw new UserError(
      `--max-model-len ${maxModelLen} exceeds this model's max_position_embeddings ${limit} and the model has no ` +
        `dual_chunk_attention_config: quality would collapse beyond its training length; use --max-model-len ${limit} or less`,
    );
  }
  throw new UserError(
    `--max-model-len ${maxModelLen} exceeds this model's max_position_embeddings ${limit}, the longest context its ` +
      `dual_chunk_attention_config is made for; use --max-model-len ${limit} or less`,
  );
}
