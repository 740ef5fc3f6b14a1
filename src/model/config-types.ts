// The normalized model configuration every layer of the engine works from (parsed from a Hugging Face
// config.json by src/model/config.ts). Field names are ours (camelCase, with units/counts named);
// the config.json key each comes from is noted. Invariant: numHeads % numKvHeads === 0.

import type { SparseAttentionConfig } from './sparse-config.js';

export type Architecture = 'Qwen2ForCausalLM' | 'LlamaForCausalLM';

/** dual_chunk_attention_config, carried verbatim plus derived constants (long-context-attention.md §1.1). */
export interface DcaConfig {
  chunkSize: number; // chunk_size (C), e.g. 262144
  localSize: number; // local_size (W), e.g. 8192
  originalMaxPositionEmbeddings: number; // original_max_position_embeddings, e.g. 262144
  chunkLen: number; // L = chunkSize - localSize
  sparseAttentionEnabled?: boolean; // sparse_attention_enabled
  sparseAttentionThreshold?: number; // sparse_attention_threshold (default 32768)
  sparseAttentionLastQ?: number; // sparse_attention_last_q (default 64)
  /** sparse_attention_config.json next to config.json (attached by loadModelDir); absent: no sparse prefill. */
  sparseAttention?: SparseAttentionConfig;
}

export interface ModelConfig {
  architecture: Architecture; // architectures[0]
  modelType: string; // model_type
  vocabSize: number; // vocab_size
  hiddenSize: number; // hidden_size
  intermediateSize: number; // intermediate_size
  numLayers: number; // num_hidden_layers
  numHeads: number; // num_attention_heads
  numKvHeads: number; // num_key_value_heads (defaults to num_attention_heads)
  headDim: number; // head_dim, or hidden_size / num_attention_heads
  ropeTheta: number; // rope_theta (default 10000)
  rmsNormEps: number; // rms_norm_eps
  maxPositionEmbeddings: number; // max_position_embeddings
  tieWordEmbeddings: boolean; // tie_word_embeddings (default false)
  attentionBias: boolean; // q/k/v projections carry a bias: true for Qwen2, attention_bias for Llama
  hiddenAct: 'silu'; // hidden_act (only silu is supported)
  bosTokenId: number | null; // bos_token_id
  eosTokenIds: number[]; // eos_token_id (number or list)
  torchDtype: 'bfloat16' | 'float16' | 'float32'; // torch_dtype / dtype
  dca: DcaConfig | null; // dual_chunk_attention_config
}
