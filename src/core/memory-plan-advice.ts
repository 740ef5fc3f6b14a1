// When a plan does not fit: which of the three cases it is (weights, workspace, KV cache) and one UserError
// line with the numbers (GiB to one decimal, token counts with separators) and the single changes that would
// fit, each verified by re-planning. Invariant: a suggested change is only named if fitsAt says it fits (or,
// for a "with --max-model-len" pair, if the pair fits). Must not: change the budget arithmetic.
import { UserError } from '../errors.js';
import type { ModelConfig } from '../model/config-types.js';
import { fitsAt, kvNeededBytes, largestFittingLen, validTensorParallelSizes, type Budget, type PlanSettings } from './memory-budget.js';
import { GiB, MiB } from './memory-workspace.js';

/** Smallest --max-num-batched-tokens / --max-num-seqs the advice will suggest. */
const MIN_SUGGESTED_TOKENS = 256;

export type PlanFailureKind = 'weights' | 'workspace' | 'kv_cache';

export interface PlanFailure {
  readonly kind: PlanFailureKind;
  readonly error: UserError; // one line: the numbers and the changes that fit
}

// ---------------------------------------------------------------------------------------------------------
// formatting used in messages

export function formatInt(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function gib1(bytes: number): string {
  return (Math.max(0, bytes) / GiB).toFixed(1);
}

/** "A", "A, or B", "A, B, or C": the comma keeps "N or less, or X" readable. */
export function joinAlternatives(alts: string[]): string {
  if (alts.length <= 1) return alts.join('');
  return `${alts.slice(0, -1).join(', ')}, or ${alts[alts.length - 1]}`;
}

/** A suggested length: rounded down to a multiple of 1000 (or of the block size below 1000). */
function roundSuggestion(n: number, blockSize: number): number {
  return n >= 1000 ? Math.floor(n / 1000) * 1000 : Math.floor(n / blockSize) * blockSize;
}

/** Largest value in [lo, hi] for which ok() holds, given ok is monotone decreasing; 0 if none. */
function largestWhere(lo: number, hi: number, ok: (v: number) => boolean): number {
  if (hi < lo || !ok(lo)) return 0;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (ok(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// ---------------------------------------------------------------------------------------------------------
// advice: the single changes that would make the plan fit

function smallestTpWhere(cfg: ModelConfig, s: PlanSettings, ok: (t: PlanSettings) => boolean): number | null {
  for (const tp of validTensorParallelSizes(cfg)) if (tp > s.tensorParallelSize && ok({ ...s, tensorParallelSize: tp })) return tp;
  return null;
}

/** Largest value < current (>= MIN_SUGGESTED_TOKENS, rounded down to a multiple of 1024 when >= 1024) keeping ok. */
function smallerKnob(current: number, ok: (v: number) => boolean): number | null {
  const v = largestWhere(MIN_SUGGESTED_TOKENS, current - 1, ok);
  if (v === 0) return null;
  return v >= 1024 ? Math.floor(v / 1024) * 1024 : v;
}

function weightsAdvice(cfg: ModelConfig, s: PlanSettings, target: number): string[] {
  const alts: string[] = [];
  const fullFit = (t: PlanSettings): boolean => fitsAt(cfg, t, target);
  const someFit = (t: PlanSettings): boolean => largestFittingLen(cfg, t) >= Math.min(s.blockSize, cfg.maxPositionEmbeddings);
  const withLen = (t: PlanSettings): string => ` with --max-model-len ${roundSuggestion(largestFittingLen(cfg, t), s.blockSize)} or less`;
  const tp = smallestTpWhere(cfg, s, fullFit);
  if (tp !== null) alts.push(`--tensor-parallel-size ${tp}`);
  else {
    const tp2 = smallestTpWhere(cfg, s, someFit);
    if (tp2 !== null) alts.push(`--tensor-parallel-size ${tp2}${withLen({ ...s, tensorParallelSize: tp2 })}`);
  }
  if (s.weightDtype === 'bf16') {
    const q: PlanSettings = { ...s, weightDtype: 'fp8' };
    if (fullFit(q)) alts.push('--quantization fp8');
    else if (someFit(q)) alts.push(`--quantization fp8${withLen(q)}`);
  }
  return alts;
}

function workspaceAdvice(cfg: ModelConfig, s: PlanSettings, target: number): string[] {
  const alts: string[] = [];
  const t = smallerKnob(s.maxNumBatchedTokens, (v) => fitsAt(cfg, { ...s, maxNumBatchedTokens: v }, target));
  if (t !== null) alts.push(`--max-num-batched-tokens ${t} or less`);
  const n = smallerKnob(s.maxNumSeqs, (v) => fitsAt(cfg, { ...s, maxNumSeqs: v }, target));
  if (n !== null) alts.push(`--max-num-seqs ${n} or less`);
  const tp = smallestTpWhere(cfg, s, (x) => fitsAt(cfg, x, target));
  if (tp !== null) alts.push(`--tensor-parallel-size ${tp}`);
  return alts;
}

function kvAdvice(cfg: ModelConfig, s: PlanSettings, target: number, maxFit: number): string[] {
  const alts: string[] = [];
  const suggestedLen = roundSuggestion(maxFit, s.blockSize);
  if (s.maxModelLen !== 'auto' && suggestedLen > 0) alts.push(`--max-model-len ${suggestedLen} or less`);
  const usual: string[] = [];
  if (s.kvCacheDtype === 'bf16' && fitsAt(cfg, { ...s, kvCacheDtype: 'fp8' }, target)) usual.push('--kv-cache-dtype fp8');
  const tp = smallestTpWhere(cfg, s, (x) => fitsAt(cfg, x, target));
  if (tp !== null) usual.push(`--tensor-parallel-size ${tp}`);
  if (usual.length > 0) return [...alts, ...usual];
  // neither fp8 KV nor more GPUs fit: the bigger changes
  if (s.weightDtype === 'bf16' && fitsAt(cfg, { ...s, weightDtype: 'fp8' }, target)) alts.push('--quantization fp8');
  const tokens = smallerKnob(s.maxNumBatchedTokens, (v) => fitsAt(cfg, { ...s, maxNumBatchedTokens: v }, target));
  if (tokens !== null) alts.push(`--max-num-batched-tokens ${tokens} or less`);
  return alts;
}

function fixes(alts: string[]): string {
  return alts.length > 0 ? `use ${joinAlternatives(alts)}` : 'no single change fits: use a GPU with more memory or more GPUs';
}

export function failureOf(cfg: ModelConfig, s: PlanSettings, maxModelLen: number, b: Budget, maxFit: number): PlanFailure {
  const u = s.gpuMemoryUtilization.toFixed(2);
  const target = s.maxModelLen === 'auto' ? Math.min(s.blockSize, cfg.maxPositionEmbeddings) : maxModelLen;
  const reserve = b.runtimeBytes + b.marginBytes;
  if (b.weightsBytes + reserve > b.capBytes) {
    const usable = b.capBytes - reserve;
    const msg =
      `weights need ${gib1(b.weightsBytes)} GiB per GPU, ${gib1(b.weightsBytes - Math.max(0, usable))} GiB more than the ` +
      `${gib1(usable)} GiB usable at utilization ${u} (cap ${gib1(b.capBytes)} GiB of ${gib1(s.gpuMemoryBytes)} GiB, less ` +
      `${gib1(reserve)} GiB CUDA runtime reserve and margin): ${fixes(weightsAdvice(cfg, s, target))}`;
    return { kind: 'weights', error: new UserError(msg) };
  }
  if (b.kvAvailableBytes < 0) {
    const msg =
      `workspace for --max-num-batched-tokens ${formatInt(s.maxNumBatchedTokens)} and --max-num-seqs ${formatInt(s.maxNumSeqs)} ` +
      `needs ${gib1(b.workspaceBytes)} GiB per GPU; ${gib1(b.capBytes - b.weightsBytes - b.marginBytes)} GiB is available after ` +
      `weights and margin at utilization ${u}: ${fixes(workspaceAdvice(cfg, s, target))}`;
    return { kind: 'workspace', error: new UserError(msg) };
  }
  const perGpu = s.tensorParallelSize > 1 ? ' per GPU' : '';
  const avail = `${gib1(b.kvAvailableBytes)} GiB is available after weights, workspace and margin at utilization ${u}`;
  const head =
    s.maxModelLen === 'auto'
      ? `no max_model_len fits: one ${s.blockSize}-token KV block needs ${(b.blockBytes / MiB).toFixed(1)} MiB${perGpu}; ${avail}`
      : `max_model_len ${formatInt(maxModelLen)} needs ${gib1(kvNeededBytes(b, s, maxModelLen))} GiB of KV${perGpu}; ${avail}`;
  return { kind: 'kv_cache', error: new UserError(`${head}: ${fixes(kvAdvice(cfg, s, target, maxFit))}`) };
}
