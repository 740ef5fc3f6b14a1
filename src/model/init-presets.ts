// Shapes of the random models `longctx init-model` writes, the config.json / generation_config.json each
// gets, and the weight distributions (chosen so the next-token distribution is peaked, not flat).
// Invariant: a preset's config.json parses with parseModelConfig; real presets match the official
// Qwen2.5-{7B,14B}-Instruct-1M shapes (long-context-attention.md §1.1). Must not: write files.
import type { CheckpointTensor } from './checkpoint-layout.js';
import type { ModelConfig } from './config-types.js';
import { publishedSparseBudgets } from './published-budgets.js';
import type { Distribution } from './random-weights.js';

export interface Preset {
  name: string;
  description: string;
  numLayers: number;
  hiddenSize: number;
  intermediateSize: number;
  numHeads: number;
  numKvHeads: number;
  vocabSize: number;
  ropeTheta: number;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  dca: { chunk_size: number; local_size: number; original_max_position_embeddings: number } | null;
  /** Sparse prefill (§4): dual_chunk_attention_config's sparse keys and sparse_attention_config.json's budgets. */
  sparse?: {
    threshold: number; // sparse_attention_threshold
    lastQ: number; // sparse_attention_last_q
    budgets: readonly (readonly (readonly [vertical: number, slash: number])[])[]; // [layer][head], as in the file
    /** Write the sparse keys into config.json (default true); the official 1M configs have none: the file alone turns it on. */
    configKeys?: boolean;
  };
}

// 151,936 covers the Qwen2.5 tokenizer's 151,665 ids (the small official Qwen2.5 models use it);
// 152,064 is the 7B/14B value.
const SMALL_VOCAB = 151936;
const REAL_VOCAB = 152064;

const tiny: Preset = {
  name: 'tiny',
  description: '3 layers, hidden 64, 4 q / 2 kv heads of 16, intermediate 160 (~20M params, mostly embeddings)',
  numLayers: 3,
  hiddenSize: 64,
  intermediateSize: 160,
  numHeads: 4,
  numKvHeads: 2,
  vocabSize: SMALL_VOCAB,
  ropeTheta: 1e6,
  rmsNormEps: 1e-6,
  maxPositionEmbeddings: 32768,
  tieWordEmbeddings: false,
  dca: null,
};

const REAL_DCA = { chunk_size: 262144, local_size: 8192, original_max_position_embeddings: 262144 };
// The official defaults (threshold 32,768, last_q 64) and budgets of the published files' statistics.
const realSparse = (model: '7b' | '14b', layers: number, heads: number) =>
  ({ threshold: 32768, lastQ: 64, budgets: publishedSparseBudgets(model, layers, heads), configKeys: false }) as const;

export const PRESETS: Readonly<Record<string, Preset>> = {
  tiny,
  'tiny-tied': { ...tiny, name: 'tiny-tied', description: 'tiny with tied embeddings (lm_head = embed_tokens)', tieWordEmbeddings: true },
  'tiny-dca': {
    ...tiny,
    name: 'tiny-dca',
    description: 'tiny with dual chunk attention: chunk 64, local 16 (chunk_len 48), original length 64',
    ropeTheta: 1e7,
    maxPositionEmbeddings: 4096,
    dca: { chunk_size: 64, local_size: 16, original_max_position_embeddings: 64 },
  },
  'tiny-dca-sparse': {
    ...tiny,
    name: 'tiny-dca-sparse',
    description: 'tiny-dca with vertical-slash sparse prefill above 128 prompt tokens (last_q 16, budgets that drop keys at a few hundred tokens)',
    ropeTheta: 1e7,
    maxPositionEmbeddings: 4096,
    dca: { chunk_size: 64, local_size: 16, original_max_position_embeddings: 64 },
    sparse: {
      threshold: 128,
      lastQ: 16,
      // Per head: sinks and band only (20, 100); a few picks (3x, 10x); the 30 -> 130 bump; budgets past any prompt.
      budgets: [
        [[20, 100], [34, 104], [30, 100], [1000, 6096]],
        [[36, 106], [20, 100], [1000, 6096], [33, 103]],
        [[1000, 6096], [35, 100], [20, 105], [32, 102]],
      ],
    },
  },
  small: {
    name: 'small',
    description: 'Qwen2.5-0.5B shape: 24 layers, hidden 896, 14 q / 2 kv heads of 64, intermediate 4864, tied (~494M params)',
    numLayers: 24,
    hiddenSize: 896,
    intermediateSize: 4864,
    numHeads: 14,
    numKvHeads: 2,
    vocabSize: SMALL_VOCAB,
    ropeTheta: 1e6,
    rmsNormEps: 1e-6,
    maxPositionEmbeddings: 32768,
    tieWordEmbeddings: true,
    dca: null,
  },
  'qwen2.5-7b-1m': {
    name: 'qwen2.5-7b-1m',
    description: 'Qwen2.5-7B-Instruct-1M shape with its DCA config and sparse budgets of the published statistics (7.6B params, ~15 GB in bf16)',
    numLayers: 28,
    hiddenSize: 3584,
    intermediateSize: 18944,
    numHeads: 28,
    numKvHeads: 4,
    vocabSize: REAL_VOCAB,
    ropeTheta: 1e7,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 1010000,
    tieWordEmbeddings: false,
    dca: REAL_DCA,
    sparse: realSparse('7b', 28, 28),
  },
  'qwen2.5-14b-1m': {
    name: 'qwen2.5-14b-1m',
    description: 'Qwen2.5-14B-Instruct-1M shape with its DCA config and sparse budgets of the published statistics (14.7B params, ~29 GB in bf16)',
    numLayers: 48,
    hiddenSize: 5120,
    intermediateSize: 13824,
    numHeads: 40,
    numKvHeads: 8,
    vocabSize: REAL_VOCAB,
    ropeTheta: 1e7,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 1010000,
    tieWordEmbeddings: false,
    dca: REAL_DCA,
    sparse: realSparse('14b', 48, 40),
  },
};

export const PRESET_NAMES = Object.keys(PRESETS);

export const BOS_TOKEN_ID = 151643; // <|endoftext|>
export const EOS_TOKEN_ID = 151645; // <|im_end|>

/** config.json as Hugging Face writes it for Qwen2 (head_dim is implied by hidden / heads). */
export function presetConfigJson(p: Preset, dtype: 'bf16' | 'f32'): Record<string, unknown> {
  const json: Record<string, unknown> = {
    architectures: ['Qwen2ForCausalLM'],
    attention_dropout: 0.0,
    bos_token_id: BOS_TOKEN_ID,
    eos_token_id: EOS_TOKEN_ID,
    hidden_act: 'silu',
    hidden_size: p.hiddenSize,
    initializer_range: 0.02,
    intermediate_size: p.intermediateSize,
    max_position_embeddings: p.maxPositionEmbeddings,
    max_window_layers: p.numLayers,
    model_type: 'qwen2',
    num_attention_heads: p.numHeads,
    num_hidden_layers: p.numLayers,
    num_key_value_heads: p.numKvHeads,
    rms_norm_eps: p.rmsNormEps,
    rope_scaling: null,
    rope_theta: p.ropeTheta,
    sliding_window: p.maxPositionEmbeddings,
    tie_word_embeddings: p.tieWordEmbeddings,
    torch_dtype: dtype === 'bf16' ? 'bfloat16' : 'float32',
    transformers_version: '4.43.1',
    use_cache: true,
    use_sliding_window: false,
    vocab_size: p.vocabSize,
  };
  if (p.dca) json.dual_chunk_attention_config = { ...p.dca };
  if (p.dca && p.sparse && p.sparse.configKeys !== false) {
    json.dual_chunk_attention_config = {
      ...p.dca,
      sparse_attention_enabled: true,
      sparse_attention_threshold: p.sparse.threshold,
      sparse_attention_last_q: p.sparse.lastQ,
    };
  }
  return json;
}

/** sparse_attention_config.json of a preset (§1.2: per layer, head index -> [pattern, vertical, slash, score]), or null. */
export function presetSparseConfigJson(p: Preset): Record<string, [string, number, number, number]>[] | null {
  if (!p.sparse) return null;
  return p.sparse.budgets.map((heads) => Object.fromEntries(heads.map(([v, s], h) => [String(h), ['vertical_and_slash', v, s, 0.9]])));
}

/** Qwen2.5-Instruct's generation_config.json (its sampling defaults). */
export function generationConfigJson(): Record<string, unknown> {
  return {
    bos_token_id: BOS_TOKEN_ID,
    do_sample: true,
    eos_token_id: [EOS_TOKEN_ID, BOS_TOKEN_ID],
    pad_token_id: BOS_TOKEN_ID,
    repetition_penalty: 1.05,
    temperature: 0.7,
    top_k: 20,
    top_p: 0.8,
    transformers_version: '4.43.1',
  };
}

/** Target standard deviation of the logits, which sets lm_head's scale (see weightDistribution). */
export const LOGIT_STD = 6;
/** Gain on q/k projections: attention scores get std ≈ QK_GAIN², so attention is position-sensitive. */
export const QK_GAIN = 1.5;

/**
 * Per-tensor distribution. Activations entering every projection are RMS-normalized (unit scale), so a
 * matrix with std g/sqrt(fan_in) gives outputs of std g:
 *  - q, k: QK_GAIN/sqrt(H); v: 1/sqrt(H); o: 1/sqrt(heads·head_dim); gate, up: 1/sqrt(H); down: 1/sqrt(I)
 *    (attention and MLP outputs are O(1), comparable to the embedding, so context shapes the residual)
 *  - q/k/v biases N(0, 0.2²); RMSNorm weights N(1, 0.05²)
 *  - untied: embed_tokens N(0, 1), lm_head N(0, LOGIT_STD²/H): logits ≈ N(0, LOGIT_STD²) over the
 *    vocabulary, so the top token stands clearly above the rest (the max of 152K draws is ~4.4 std out)
 *  - tied: embed_tokens N(0, 1/H) and the final norm N(LOGIT_STD, (0.05·LOGIT_STD)²), which gives the
 *    same logit scale while keeping the current token's own embedding a small part of the final residual
 *    (with a large tied embedding the model mostly predicts the token it just read, and greedy loops)
 */
export function weightDistribution(t: CheckpointTensor, c: ModelConfig): Distribution {
  const H = c.hiddenSize;
  const n = t.name;
  if (n === 'model.norm.weight' && c.tieWordEmbeddings) return { mean: LOGIT_STD, std: 0.05 * LOGIT_STD };
  if (t.role === 'vector') return n.endsWith('.bias') ? { mean: 0, std: 0.2 } : { mean: 1, std: 0.05 };
  if (n === 'model.embed_tokens.weight') return { mean: 0, std: c.tieWordEmbeddings ? 1 / Math.sqrt(H) : 1 };
  if (n === 'lm_head.weight') return { mean: 0, std: LOGIT_STD / Math.sqrt(H) };
  if (n.endsWith('q_proj.weight') || n.endsWith('k_proj.weight')) return { mean: 0, std: QK_GAIN / Math.sqrt(H) };
  if (n.endsWith('o_proj.weight')) return { mean: 0, std: 1 / Math.sqrt(c.numHeads * c.headDim) };
  if (n.endsWith('down_proj.weight')) return { mean: 0, std: 1 / Math.sqrt(c.intermediateSize) };
  return { mean: 0, std: 1 / Math.sqrt(H) }; // v, gate, up
}
