// A float64 forward of a whole Qwen2 model with Dual Chunk Attention, written from long-context-attention.md
// §2: keys rotated at k mod L (§2.2); prompt rows scale the softmax by s(prompt length) in every chunk,
// the row of a generated token at position p scales its query by s(p + 1), the length of the decode that
// produced it (§2.6); per row, so a step may feed prompt and generated rows together (a recompute after
// preemption) and equals feeding them one by one. Attention per DCA sub-range as three partials merged by
// LSE (§2.8, via dca-f64.ts). Two key temperatures: 'at-write' multiplies each key by its row's s (vLLM,
// §2.2), 'prompt' gives every key s(prompt length) (unscaled keys with s_k applied in the kernel, §2.6
// last bullet / §3.3; generated keys count as prompt keys). They differ only for generated rows.
// Invariant: independent of src/ (reads config.json and model.safetensors itself, HF tensor
// names, separate gate/up); plain RoPE when the config has no dual_chunk_attention_config.
// Must not: share code with the engine's loader, graph or backends, or optimize beyond what tests need.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dcaAttentionF64, plainRopeAttentionF64, temperatureF64, type DcaShape } from './dca-f64.js';
import { linearF64 as linear, readSafetensorsF64, rmsnormRowsF64 as rmsnorm } from './checkpoint-f64.js';

interface RawConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  rope_theta: number;
  rms_norm_eps: number;
  vocab_size: number;
  tie_word_embeddings?: boolean;
  dual_chunk_attention_config?: { chunk_size: number; local_size: number; original_max_position_embeddings: number } | null;
}

/**
 * One sequence through the model, step by step (prefill chunks, then decodes), with its own dense KV
 * history: kScaled [numTokens, numKvHeads, headDim] holds s_write · (W_k h + b_k), un-rotated (rotation is
 * linear, so rotating at attention time equals caching the rotated key), v the values.
 */
export class Qwen2DcaForwardF64 {
  readonly cfg: RawConfig;
  private readonly w: Map<string, Float64Array>;
  private readonly kScaled: number[][] = [];
  private readonly vs: number[][] = [];
  private numTokens = 0;

  constructor(dir: string, readonly keyTemperature: 'at-write' | 'prompt' = 'at-write') {
    this.cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as RawConfig;
    this.w = readSafetensorsF64(join(dir, 'model.safetensors'));
    for (let l = 0; l < this.cfg.num_hidden_layers; l++) {
      this.kScaled.push([]);
      this.vs.push([]);
    }
  }

  private get(name: string): Float64Array {
    const t = this.w.get(name);
    if (t === undefined) throw new Error(`model.safetensors has no ${name}`);
    return t;
  }

  /**
   * Feeds tokens at positions [numTokens, numTokens + ids.length) of a request whose prompt has
   * promptLen tokens: prompt rows (positions < promptLen), generated rows (>= promptLen), or both.
   * Returns the natural-log softmax over the vocabulary for each row in `rows` (indices into ids).
   */
  step(ids: readonly number[], promptLen: number, rows: readonly number[]): Float64Array[] {
    const c = this.cfg;
    const H = c.hidden_size;
    const numHeads = c.num_attention_heads;
    const numKvHeads = c.num_key_value_heads;
    const D = H / numHeads;
    const I = c.intermediate_size;
    const T = ids.length;
    const P0 = this.numTokens;
    const P1 = P0 + T;
    const dca = c.dual_chunk_attention_config ?? null;
    // §2.6: a prompt row uses N = max(prompt_len, seq_len) = promptLen (every prefill chunk ends within the
    // prompt); a generated token at p was decoded with N = p + 1 tokens.
    const sOf = (N: number) => (dca === null ? 1 : temperatureF64(N, dca.original_max_position_embeddings));
    const sRow = Array.from({ length: T }, (_, t) => (P0 + t < promptLen ? sOf(promptLen) : sOf(P0 + t + 1)));
    const sKey = sRow.map((s) => (this.keyTemperature === 'at-write' ? s : sOf(promptLen)));
    const shape: DcaShape = { numHeads, numKvHeads, headDim: D };
    const embed = this.get('model.embed_tokens.weight');
    let x = new Float64Array(T * H);
    ids.forEach((id, t) => x.set(embed.subarray(id * H, (id + 1) * H), t * H));
    for (let l = 0; l < c.num_hidden_layers; l++) {
      const p = `model.layers.${l}.`;
      const h = rmsnorm(x, this.get(`${p}input_layernorm.weight`), c.rms_norm_eps, H);
      const q = linear(h, this.get(`${p}self_attn.q_proj.weight`), this.w.get(`${p}self_attn.q_proj.bias`), T, H, numHeads * D);
      const k = linear(h, this.get(`${p}self_attn.k_proj.weight`), this.w.get(`${p}self_attn.k_proj.bias`), T, H, numKvHeads * D);
      const v = linear(h, this.get(`${p}self_attn.v_proj.weight`), this.w.get(`${p}self_attn.v_proj.bias`), T, H, numKvHeads * D);
      for (let e = 0; e < k.length; e++) {
        this.kScaled[l].push(sKey[Math.floor(e / (numKvHeads * D))] * k[e]); // §2.2: K_cached = s_write · R(k mod L) · k
        this.vs[l].push(v[e]);
      }
      const scale = 1 / Math.sqrt(D);
      // Prefill: softmax scale × s; decode: query × s. Either way each row's logits gain its factor s.
      const attn = dca === null
        ? plainRopeAttentionF64(q, this.kScaled[l], this.vs[l], shape, c.rope_theta, D, scale)
        : dcaAttentionF64(q, this.kScaled[l], this.vs[l], shape, { chunkLen: dca.chunk_size - dca.local_size, chunkSize: dca.chunk_size, theta: c.rope_theta, rotaryDim: D }, sRow.map((s) => scale * s));
      const o = linear(attn, this.get(`${p}self_attn.o_proj.weight`), undefined, T, numHeads * D, H);
      x = x.map((xi, e) => xi + o[e]);
      const h2 = rmsnorm(x, this.get(`${p}post_attention_layernorm.weight`), c.rms_norm_eps, H);
      const gate = linear(h2, this.get(`${p}mlp.gate_proj.weight`), undefined, T, H, I);
      const up = linear(h2, this.get(`${p}mlp.up_proj.weight`), undefined, T, H, I);
      const act = gate.map((g, e) => (g / (1 + Math.exp(-g))) * up[e]);
      const down = linear(act, this.get(`${p}mlp.down_proj.weight`), undefined, T, I, H);
      x = x.map((xi, e) => xi + down[e]);
    }
    this.numTokens = P1;
    const lmHead = c.tie_word_embeddings ? embed : this.get('lm_head.weight');
    return rows.map((r) => {
      const last = rmsnorm(x.subarray(r * H, (r + 1) * H), this.get('model.norm.weight'), c.rms_norm_eps, H);
      const logits = linear(last, lmHead, undefined, 1, H, c.vocab_size);
      let max = -Infinity;
      for (const z of logits) max = Math.max(max, z);
      let sum = 0;
      for (const z of logits) sum += Math.exp(z - max);
      const lse = max + Math.log(sum);
      return logits.map((z) => z - lse);
    });
  }
}
