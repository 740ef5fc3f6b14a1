// The Hugging Face tensor names and shapes a Qwen2/Llama checkpoint must hold for a given ModelConfig.
// Shared by the loader (what to check and read) and the random-model writer (what to write), so the two
// can never disagree. Invariant: names and shapes follow transformers' Qwen2/Llama modules exactly.
// Must not: touch files.
import type { ModelConfig } from './config-types.js';

export type TensorRole = 'matrix' | 'vector'; // matrices keep the checkpoint dtype; vectors become f32

export interface CheckpointTensor {
  name: string;
  shape: number[];
  role: TensorRole;
}

/** Every tensor the architecture needs, in a natural checkpoint order (embed, layers, norm, lm_head). */
export function checkpointTensors(config: ModelConfig): CheckpointTensor[] {
  const H = config.hiddenSize;
  const I = config.intermediateSize;
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKvHeads * config.headDim;
  const out: CheckpointTensor[] = [{ name: 'model.embed_tokens.weight', shape: [config.vocabSize, H], role: 'matrix' }];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    out.push({ name: `${p}input_layernorm.weight`, shape: [H], role: 'vector' });
    out.push({ name: `${p}self_attn.q_proj.weight`, shape: [qDim, H], role: 'matrix' });
    if (config.attentionBias) out.push({ name: `${p}self_attn.q_proj.bias`, shape: [qDim], role: 'vector' });
    out.push({ name: `${p}self_attn.k_proj.weight`, shape: [kvDim, H], role: 'matrix' });
    if (config.attentionBias) out.push({ name: `${p}self_attn.k_proj.bias`, shape: [kvDim], role: 'vector' });
    out.push({ name: `${p}self_attn.v_proj.weight`, shape: [kvDim, H], role: 'matrix' });
    if (config.attentionBias) out.push({ name: `${p}self_attn.v_proj.bias`, shape: [kvDim], role: 'vector' });
    out.push({ name: `${p}self_attn.o_proj.weight`, shape: [H, qDim], role: 'matrix' });
    out.push({ name: `${p}post_attention_layernorm.weight`, shape: [H], role: 'vector' });
    out.push({ name: `${p}mlp.gate_proj.weight`, shape: [I, H], role: 'matrix' });
    out.push({ name: `${p}mlp.up_proj.weight`, shape: [I, H], role: 'matrix' });
    out.push({ name: `${p}mlp.down_proj.weight`, shape: [H, I], role: 'matrix' });
  }
  out.push({ name: 'model.norm.weight', shape: [H], role: 'vector' });
  if (!config.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [config.vocabSize, H], role: 'matrix' });
  return out;
}
