// The weights of a Qwen2/Llama decoder as host tensors, in the layout the graph (src/model/qwen2.ts)
// consumes. Produced by the loader (src/model/load.ts) from safetensors; uploaded to a backend by the runner.
// Invariants: projection matrices keep the checkpoint dtype (f32 | bf16 | f16), [outFeatures, inFeatures];
// norms and biases are converted to f32; gate and up are concatenated into one [2I, H] matrix
// (gate rows first) so the MLP needs one GEMM; lmHead is the same object as embed when embeddings are tied.
import type { Tensor } from '../runtime/tensor.js';

export interface LayerWeights {
  inputNorm: Tensor; // [H] f32            model.layers.i.input_layernorm.weight
  q: Tensor; // [numHeads*headDim, H]       self_attn.q_proj.weight
  k: Tensor; // [numKvHeads*headDim, H]     self_attn.k_proj.weight
  v: Tensor; // [numKvHeads*headDim, H]     self_attn.v_proj.weight
  qBias: Tensor | null; // [numHeads*headDim] f32   self_attn.q_proj.bias (Qwen2; Llama with attention_bias)
  kBias: Tensor | null; // [numKvHeads*headDim] f32
  vBias: Tensor | null; // [numKvHeads*headDim] f32
  o: Tensor; // [H, numHeads*headDim]       self_attn.o_proj.weight (no bias)
  postNorm: Tensor; // [H] f32             post_attention_layernorm.weight
  gateUp: Tensor; // [2I, H]                mlp.gate_proj.weight ++ mlp.up_proj.weight
  down: Tensor; // [H, I]                   mlp.down_proj.weight
  /**
   * Set by uploadWeights on device backends: q, k and v as one [qDim + 2·kvDim, H] matrix (and their biases as
   * one vector when all three have one); q, k, v (and the biases) are then views of its row blocks.
   */
  qkv?: Tensor;
  qkvBias?: Tensor | null;
}

export interface ModelWeights {
  embed: Tensor; // [vocab, H]   model.embed_tokens.weight
  layers: LayerWeights[];
  norm: Tensor; // [H] f32       model.norm.weight
  lmHead: Tensor; // [vocab, H]  lm_head.weight, or embed when tie_word_embeddings
}
