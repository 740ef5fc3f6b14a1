// Parses a Hugging Face config.json (Qwen2ForCausalLM, LlamaForCausalLM) into the normalized ModelConfig.
// Invariant: a returned config is internally consistent (heads divide, head_dim set, DCA chunkLen > 0);
// every problem is one UserError naming the file, the field and the fix.
// Must not: read weights, guess values for required shape fields, or accept features we do not compute
// (rope_scaling, sliding windows, MLP bias, non-silu activations).
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import type { Architecture, DcaConfig, ModelConfig } from './config-types.js';

export const SUPPORTED_ARCHITECTURES: readonly Architecture[] = ['Qwen2ForCausalLM', 'LlamaForCausalLM'];

const MODEL_TYPE_TO_ARCH: Record<string, Architecture> = { qwen2: 'Qwen2ForCausalLM', llama: 'LlamaForCausalLM' };

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** Field readers that fail with `<file>: <field> <problem>` messages. */
class Fields {
  constructor(
    private readonly obj: Json,
    readonly file: string,
    private readonly prefix = '',
  ) {}

  fail(key: string, problem: string): never {
    throw new UserError(`${this.file}: "${this.prefix}${key}" ${problem}`);
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  posInt(key: string, fallback?: number): number {
    const v = this.obj[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.fail(key, 'is missing: it must be a positive integer');
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) this.fail(key, `must be a positive integer, got ${show(v)}`);
    return v;
  }

  posNumber(key: string, fallback: number): number {
    const v = this.obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.fail(key, `must be a positive number, got ${show(v)}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.obj[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, got ${show(v)}`);
    return v;
  }

  tokenId(key: string): number | null {
    const v = this.obj[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) this.fail(key, `must be a token id (integer >= 0), got ${show(v)}`);
    return v;
  }

  tokenIds(key: string): number[] {
    const v = this.obj[key];
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    for (const id of list) {
      if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
        this.fail(key, `must be a token id or a list of token ids, got ${show(v)}`);
      }
    }
    return [...new Set(list as number[])];
  }
}

function parseArchitecture(cfg: Json, f: Fields): Architecture {
  const archs = cfg.architectures;
  if (archs === undefined || archs === null) {
    const mt = cfg.model_type;
    if (typeof mt === 'string' && MODEL_TYPE_TO_ARCH[mt]) return MODEL_TYPE_TO_ARCH[mt];
    f.fail('architectures', `is missing: add "architectures": ["Qwen2ForCausalLM"] or ["LlamaForCausalLM"]`);
  }
  if (!Array.isArray(archs) || archs.length === 0 || typeof archs[0] !== 'string') {
    f.fail('architectures', `must be a non-empty list of strings, got ${show(archs)}`);
  }
  const arch = archs[0] as string;
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(arch)) {
    throw new UserError(
      `${f.file}: unsupported architecture "${arch}" (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`,
    );
  }
  return arch as Architecture;
}

function parseDca(v: unknown, file: string): DcaConfig | null {
  if (v === undefined || v === null) return null;
  if (!isObject(v)) {
    throw new UserError(`${file}: "dual_chunk_attention_config" must be an object with chunk_size and local_size, got ${show(v)}`);
  }
  const f: Fields = new Fields(v, file, 'dual_chunk_attention_config.');
  const chunkSize = f.posInt('chunk_size');
  const localSize = f.posInt('local_size');
  if (localSize >= chunkSize) {
    f.fail('local_size', `(${localSize}) must be smaller than chunk_size (${chunkSize})`);
  }
  const dca: DcaConfig = {
    chunkSize,
    localSize,
    originalMaxPositionEmbeddings: f.posInt('original_max_position_embeddings'),
    chunkLen: chunkSize - localSize,
  };
  if (f.has('sparse_attention_enabled')) dca.sparseAttentionEnabled = f.bool('sparse_attention_enabled', false);
  if (f.has('sparse_attention_threshold')) dca.sparseAttentionThreshold = f.posInt('sparse_attention_threshold');
  if (f.has('sparse_attention_last_q')) dca.sparseAttentionLastQ = f.posInt('sparse_attention_last_q');
  return dca;
}

function parseDtype(cfg: Json, f: Fields): ModelConfig['torchDtype'] {
  const key = cfg.torch_dtype !== undefined ? 'torch_dtype' : 'dtype';
  const v = cfg[key];
  if (v === undefined || v === null) return 'float32'; // Hugging Face's default when the key is absent
  if (v === 'bfloat16' || v === 'float16' || v === 'float32') return v;
  f.fail(key, `must be "bfloat16", "float16" or "float32", got ${show(v)}`);
}

/** Validates a parsed config.json. `file` is used only to name the source in error messages. */
export function parseModelConfig(json: unknown, file: string): ModelConfig {
  if (!isObject(json)) throw new UserError(`${file}: must be a JSON object, got ${show(json)}`);
  const cfg = json;
  const f: Fields = new Fields(cfg, file);
  const architecture = parseArchitecture(cfg, f);
  const isQwen2 = architecture === 'Qwen2ForCausalLM';

  const hiddenSize = f.posInt('hidden_size');
  const numHeads = f.posInt('num_attention_heads');
  const numKvHeads = f.posInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    f.fail('num_key_value_heads', `(${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  }
  if (!f.has('head_dim') && hiddenSize % numHeads !== 0) {
    f.fail('head_dim', `is missing and hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads}): add "head_dim"`);
  }
  const headDim = f.posInt('head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) f.fail('head_dim', `must be even for rotary embeddings, got ${headDim}`);

  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu') f.fail('hidden_act', `${show(act)} is not supported (only "silu")`);
  if (cfg.rope_scaling !== undefined && cfg.rope_scaling !== null) {
    f.fail('rope_scaling', `${show(cfg.rope_scaling)} is not supported: longctx implements plain RoPE and dual_chunk_attention_config; set it to null`);
  }
  // transformers >= 5 writes rope_parameters {rope_type, rope_theta} instead of rope_theta / rope_scaling
  let ropeTheta: number;
  if (cfg.rope_parameters !== undefined && cfg.rope_parameters !== null) {
    const rp = cfg.rope_parameters;
    if (!isObject(rp)) f.fail('rope_parameters', `must be an object like {"rope_type": "default", "rope_theta": 1000000}, got ${show(rp)}`);
    const rf: Fields = new Fields(rp, file, 'rope_parameters.');
    const type = rp.rope_type ?? rp.type ?? 'default';
    if (type !== 'default') {
      rf.fail('rope_type', `${show(type)} is not supported: longctx implements plain RoPE and dual_chunk_attention_config; use "default"`);
    }
    ropeTheta = rf.has('rope_theta') ? rf.posNumber('rope_theta', 10000) : f.posNumber('rope_theta', 10000);
  } else {
    ropeTheta = f.posNumber('rope_theta', 10000);
  }
  if (cfg.use_sliding_window === true) {
    f.fail('use_sliding_window', 'is true: sliding-window attention is not supported; set it to false');
  }
  if (!isQwen2 && cfg.mlp_bias === true) f.fail('mlp_bias', 'is true: MLP biases are not supported');
  const modelType = cfg.model_type ?? (isQwen2 ? 'qwen2' : 'llama');
  if (typeof modelType !== 'string') f.fail('model_type', `must be a string, got ${show(modelType)}`);

  return {
    architecture,
    modelType,
    vocabSize: f.posInt('vocab_size'),
    hiddenSize,
    intermediateSize: f.posInt('intermediate_size'),
    numLayers: f.posInt('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    ropeTheta,
    rmsNormEps: f.posNumber('rms_norm_eps', 1e-6),
    maxPositionEmbeddings: f.posInt('max_position_embeddings', isQwen2 ? 32768 : 2048),
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    attentionBias: isQwen2 ? true : f.bool('attention_bias', false),
    hiddenAct: 'silu',
    bosTokenId: f.tokenId('bos_token_id'),
    eosTokenIds: f.tokenIds('eos_token_id'),
    torchDtype: parseDtype(cfg, f),
    dca: parseDca(cfg.dual_chunk_attention_config, file),
  };
}

/** Reads and validates `<dir>/config.json`. */
export function readModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new UserError(`${file} not found: is ${dir} a Hugging Face model directory?`);
    }
    throw new UserError(`${file}: cannot read (${code ?? String(e)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseModelConfig(json, file);
}
