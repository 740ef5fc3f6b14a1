// A float64 forward of a whole Qwen2 model with Dual Chunk Attention and vertical-slash sparse prefill,
// written from long-context-attention.md §2 and §4: keys rotated at k mod L and kept unscaled, each row's
// logits multiplied by its temperature product (§2.6: s(P)^2 for prompt rows, s(p + 1)·s(P) for generated
// ones); the prompt rows of a step use the float64 sparse reference (test/ref/sparse-f64.ts) when the
// prompt is longer than sparse_attention_threshold and sparse attention is enabled (§1.2, §4.4), with the
// budgets of sparse_attention_config.json (a vertical budget of 30 counts as 130); everything else is dense
// DCA (test/ref/dca-f64.ts). Records the smallest top-k margin of every selection it made.
// Invariant: independent of src/ (reads config.json, sparse_attention_config.json and model.safetensors
// itself). Must not: share code with the engine's loader, graph or backends.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dcaAttentionF64, temperatureF64, type DcaShape } from './dca-f64.js';
import { linearF64 as linear, readSafetensorsF64, rmsnormRowsF64 as rmsnorm } from './checkpoint-f64.js';
import { minMargin, sparseDcaAttentionF64 } from './sparse-f64.js';

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
  dual_chunk_attention_config: {
    chunk_size: number;
    local_size: number;
    original_max_position_embeddings: number;
    sparse_attention_enabled?: boolean;
    sparse_attention_threshold?: number;
    sparse_attention_last_q?: number;
  };
}

/** One sequence through the model step by step (prefill chunks, then decodes), with its own dense KV history. */
export class Qwen2SparseForwardF64 {
  readonly cfg: RawConfig;
  /** [layer][head] [vertical (after the bump), slash], or null when sparse prefill is off. */
  readonly budgets: [number, number][][] | null;
  /** The smallest top-k margin over every sparse selection so far (Infinity: none was data-dependent). */
  minMargin = Infinity;
  /** How many (sub-range, head) selections the sparse prefill made so far. */
  numSelections = 0;
  private readonly w: Map<string, Float64Array>;
  private readonly ks: number[][] = [];
  private readonly vs: number[][] = [];
  private numTokens = 0;

  constructor(dir: string, opts: { sparse?: boolean } = {}) {
    this.cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as RawConfig;
    const file = join(dir, 'sparse_attention_config.json');
    const enabled = opts.sparse !== false && this.cfg.dual_chunk_attention_config.sparse_attention_enabled !== false && existsSync(file);
    this.budgets = !enabled
      ? null
      : (JSON.parse(readFileSync(file, 'utf8')) as Record<string, [string, number, number, number]>[]).map((layer) =>
        Array.from({ length: this.cfg.num_attention_heads }, (_, h): [number, number] => [layer[h][1] === 30 ? 130 : layer[h][1], layer[h][2]]));
    this.w = readSafetensorsF64(join(dir, 'model.safetensors'));
    for (let l = 0; l < this.cfg.num_hidden_layers; l++) this.ks.push([]), this.vs.push([]);
  }

  private get(name: string): Float64Array {
    const t = this.w.get(name);
    if (t === undefined) throw new Error(`model.safetensors has no ${name}`);
    return t;
  }

  /**
   * Feeds tokens at positions [numTokens, numTokens + ids.length) of a request with a promptLen-token prompt;
   * returns the natural-log softmax over the vocabulary for each row in `rows` (indices into ids).
   */
  step(ids: readonly number[], promptLen: number, rows: readonly number[]): Float64Array[] {
    const c = this.cfg;
    const dca = c.dual_chunk_attention_config;
    const H = c.hidden_size;
    const numHeads = c.num_attention_heads;
    const numKvHeads = c.num_key_value_heads;
    const D = H / numHeads;
    const T = ids.length;
    const P0 = this.numTokens;
    const s = (N: number) => temperatureF64(N, dca.original_max_position_embeddings);
    // §2.6 with unscaled keys: a prompt row's logits gain s(P)^2, a generated row's s(p + 1)·s(P).
    const rowScale = Array.from({ length: T }, (_, t) => (P0 + t < promptLen ? s(promptLen) ** 2 : s(P0 + t + 1) * s(promptLen)) / Math.sqrt(D));
    const sparse = this.budgets !== null && promptLen > (dca.sparse_attention_threshold ?? 32768);
    const numSparseRows = sparse ? Math.max(0, Math.min(T, promptLen - P0)) : 0;
    const shape: DcaShape = { numHeads, numKvHeads, headDim: D };
    const params = { chunkLen: dca.chunk_size - dca.local_size, chunkSize: dca.chunk_size, theta: c.rope_theta, rotaryDim: D };
    const embed = this.get('model.embed_tokens.weight');
    let x = new Float64Array(T * H);
    ids.forEach((id, t) => x.set(embed.subarray(id * H, (id + 1) * H), t * H));
    for (let l = 0; l < c.num_hidden_layers; l++) {
      const p = `model.layers.${l}.`;
      const h = rmsnorm(x, this.get(`${p}input_layernorm.weight`), c.rms_norm_eps, H);
      const q = linear(h, this.get(`${p}self_attn.q_proj.weight`), this.w.get(`${p}self_attn.q_proj.bias`), T, H, numHeads * D);
      const k = linear(h, this.get(`${p}self_attn.k_proj.weight`), this.w.get(`${p}self_attn.k_proj.bias`), T, H, numKvHeads * D);
      const v = linear(h, this.get(`${p}self_attn.v_proj.weight`), this.w.get(`${p}self_attn.v_proj.bias`), T, H, numKvHeads * D);
      for (let e = 0; e < k.length; e++) this.ks[l].push(k[e]), this.vs[l].push(v[e]);
      let attn: Float64Array;
      if (numSparseRows > 0) {
        const sp = { lastQ: dca.sparse_attention_last_q ?? 64, verticalSize: this.budgets![l].map((b) => b[0]), slashSize: this.budgets![l].map((b) => b[1]) };
        const r = sparseDcaAttentionF64(q, this.ks[l], this.vs[l], shape, params, rowScale, sp, numSparseRows);
        this.minMargin = Math.min(this.minMargin, minMargin(r.selections));
        this.numSelections += r.selections.length;
        attn = r.out;
      } else {
        attn = dcaAttentionF64(q, this.ks[l], this.vs[l], shape, params, rowScale);
      }
      const o = linear(attn, this.get(`${p}self_attn.o_proj.weight`), undefined, T, numHeads * D, H);
      x = x.map((xi, e) => xi + o[e]);
      const h2 = rmsnorm(x, this.get(`${p}post_attention_layernorm.weight`), c.rms_norm_eps, H);
      const I = c.intermediate_size;
      const gate = linear(h2, this.get(`${p}mlp.gate_proj.weight`), undefined, T, H, I);
      const up = linear(h2, this.get(`${p}mlp.up_proj.weight`), undefined, T, H, I);
      const act = gate.map((g, e) => (g / (1 + Math.exp(-g))) * up[e]);
      const down = linear(act, this.get(`${p}mlp.down_proj.weight`), undefined, T, I, H);
      x = x.map((xi, e) => xi + down[e]);
    }
    this.numTokens = P0 + T;
    const lmHead = c.tie_word_embeddings ? embed : this.get('lm_head.weight');
    return rows.map((r) => {
      const logits = linear(rmsnorm(x.subarray(r * H, (r + 1) * H), this.get('model.norm.weight'), c.rms_norm_eps, H), lmHead, undefined, 1, H, c.vocab_size);
      let max = -Infinity;
      for (const z of logits) max = Math.max(max, z);
      let sum = 0;
      for (const z of logits) sum += Math.exp(z - max);
      const lse = max + Math.log(sum);
      return logits.map((z) => z - lse);
    });
  }
}
