// Unit tier: the memory plan's arithmetic for the Qwen2.5-7B/14B-Instruct-1M shapes (long-context-attention.md
// §1.1, §1.3), its three one-line errors, `auto`, monotonicity, the workspace the CUDA engine allocates, and the `plan` command
// end to end (spawned from source on a config.json written here). Must not: need a GPU or model weights.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findGpu, KNOWN_GPUS } from '../../src/core/gpus.js';
import { assertPlanFits, capBytes, marginBytes, planMemory, type MemoryPlanInput } from '../../src/core/memory-plan.js';
import { planToJson, formatPlanTable } from '../../src/core/memory-plan-format.js';
import { GiB, kvCacheBytesPerToken } from '../../src/core/memory-workspace.js';
import { isUserError, UserError } from '../../src/errors.js';
import { checkpointTensors } from '../../src/model/checkpoint-layout.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import { cliArgs } from '../helpers/models.js';

const DCA = { chunkSize: 262144, localSize: 8192, originalMaxPositionEmbeddings: 262144, chunkLen: 253952 };

function qwen1M(shape: Pick<ModelConfig, 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'numKvHeads'>): ModelConfig {
  return {
    architecture: 'Qwen2ForCausalLM',
    modelType: 'qwen2',
    vocabSize: 152064,
    headDim: 128,
    ropeTheta: 10_000_000,
    rmsNormEps: 1e-5,
    maxPositionEmbeddings: 1_010_000,
    tieWordEmbeddings: false,
    attentionBias: true,
    hiddenAct: 'silu',
    bosTokenId: 151643,
    eosTokenIds: [151645],
    torchDtype: 'bfloat16',
    dca: { ...DCA },
    ...shape,
  };
}

const QWEN_7B = qwen1M({ hiddenSize: 3584, intermediateSize: 18944, numLayers: 28, numHeads: 28, numKvHeads: 4 });
const QWEN_14B = qwen1M({ hiddenSize: 5120, intermediateSize: 13824, numLayers: 48, numHeads: 40, numKvHeads: 8 });
const H100 = findGpu('H100-80GB').totalBytes;
const H200 = findGpu('H200').totalBytes;
const RTX4090 = findGpu('RTX4090').totalBytes;
const LEN_1M = 1_010_000;

const gib1 = (bytes: number): string => (bytes / GiB).toFixed(1);
const plan = (config: ModelConfig, gpuMemoryBytes: number, extra: Partial<MemoryPlanInput> = {}) => planMemory({ config, gpuMemoryBytes, ...extra });
const errorOf = (p: ReturnType<typeof plan>): string => {
  assert.ok(p.failure, 'expected the plan not to fit');
  assert.ok(isUserError(p.failure.error));
  return p.failure.error.message;
};

test('KV bytes per token: whole model, all layers, K and V, per KV dtype', () => {
  assert.equal(kvCacheBytesPerToken(QWEN_7B, 'bf16'), 57_344);
  assert.equal(kvCacheBytesPerToken(QWEN_14B, 'bf16'), 196_608);
  assert.equal(kvCacheBytesPerToken(QWEN_7B, 'fp8'), 28_672);
  assert.equal(kvCacheBytesPerToken(QWEN_14B, 'fp8'), 98_304);
  // the plan reports the whole-model figure whatever the tensor-parallel size; the per-device share splits heads
  const p = plan(QWEN_7B, H200, { tensorParallelSize: 4, kvCacheDtype: 'fp8' });
  assert.equal(p.kvCacheBytesPerToken, 28_672);
  assert.equal(p.kvCacheBytesPerTokenPerDevice, 7_168);
  assert.equal(p.kvBlockBytesPerDevice, 7_168 * 16);
});

test('KV for 1,010,000 tokens: 53.9 GiB (7B) and 184.9 GiB (14B) in bf16', () => {
  const p7 = plan(QWEN_7B, H200, { maxModelLen: LEN_1M });
  const p14 = plan(QWEN_14B, H200, { maxModelLen: LEN_1M });
  assert.equal(p7.kvCacheBytesNeededPerDevice, 57_917_440_000); // 1,010,000 = 63,125 blocks of 16
  assert.equal(p14.kvCacheBytesNeededPerDevice, 198_574_080_000);
  assert.equal(gib1(p7.kvCacheBytesNeededPerDevice), '53.9');
  assert.equal(gib1(p14.kvCacheBytesNeededPerDevice), '184.9');
  // max TP (one KV head per GPU): 13.5 and 23.1 GiB per GPU (§1.3)
  assert.equal(gib1(plan(QWEN_7B, H200, { tensorParallelSize: 4 }).kvCacheBytesNeededPerDevice), '13.5');
  assert.equal(gib1(plan(QWEN_14B, H200, { tensorParallelSize: 8 }).kvCacheBytesNeededPerDevice), '23.1');
});

test('weights from shapes: 7B 15,231,899,648 B (14.2 GiB), 14B 29,541,748,736 B (27.5 GiB)', () => {
  const w7 = plan(QWEN_7B, H200).devices[0].weightsBytes;
  const w14 = plan(QWEN_14B, H200).devices[0].weightsBytes;
  assert.equal(w7, 15_231_899_648);
  assert.equal(w14, 29_541_748_736);
  assert.equal(gib1(w7), '14.2');
  // 14.77 B parameters: the "27.4 GiB" of §1.3 comes from the model card's rounded 14.7 B, the shapes give 27.5
  assert.equal(gib1(w14), '27.5');
  // independent cross-check: the checkpoint tensor list (matrices 2 B in bf16, norms/biases kept fp32)
  for (const [cfg, w] of [[QWEN_7B, w7], [QWEN_14B, w14]] as const) {
    const bytes = checkpointTensors(cfg).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * (t.role === 'matrix' ? 2 : 4), 0);
    assert.equal(bytes, w);
  }
});

test('tensor-parallel sharding: everything but the norms splits evenly when the shapes divide', () => {
  for (const [cfg, tps] of [[QWEN_7B, [2, 4]], [QWEN_14B, [2, 4, 8]]] as const) {
    const one = plan(cfg, H200).devices[0];
    const norms = (2 * cfg.numLayers + 1) * cfg.hiddenSize * 4;
    for (const tp of tps) {
      const p = plan(cfg, H200, { tensorParallelSize: tp });
      assert.equal(p.devices.length, tp);
      assert.equal(p.devices[0].weightsBytes, (one.weightsBytes - norms) / tp + norms, `tp ${tp}`);
      assert.deepEqual(p.devices[tp - 1], { ...p.devices[0], index: tp - 1 });
    }
  }
  // fp8 weights: matrices 1 B + an fp32 scale per output row; embedding and lm_head stay bf16
  const fp8 = plan(QWEN_7B, H200, { weightDtype: 'fp8' }).devices[0].weightsBytes;
  const embed = 2 * 152064 * 3584 * 2;
  const matrices = 28 * (4608 * 3584 + 3584 * 3584 + 37888 * 3584 + 3584 * 18944);
  const scales = 28 * (4608 + 3584 + 37888 + 3584) * 4;
  assert.equal(fp8, embed + matrices + scales + 28 * 4608 * 4 + 57 * 3584 * 4);
});

test('tensor-parallel size must divide the KV heads (no KV-head replication)', () => {
  assert.throws(
    () => plan(QWEN_7B, H100, { tensorParallelSize: 8 }),
    new UserError('--tensor-parallel-size 8 must divide num_key_value_heads (4) and num_attention_heads (28): use 1, 2, or 4'),
  );
  assert.throws(
    () => plan(QWEN_7B, H100, { maxModelLen: 2_000_000 }),
    new UserError("--max-model-len 2,000,000 exceeds the model's max_position_embeddings (1,010,000): use 1010000 or less"),
  );
  assert.throws(() => plan(QWEN_7B, H100, { gpuMemoryUtilization: 1.5 }), UserError);
});

test('the budget adds up: weights + workspace + margin + KV pool + free = cap, pool in whole blocks', () => {
  for (const cfg of [QWEN_7B, QWEN_14B]) {
    for (const kvCacheDtype of ['bf16', 'fp8'] as const) {
      const p = plan(cfg, H200, { kvCacheDtype, maxModelLen: 131072 });
      const d = p.devices[0];
      assert.equal(d.capBytes, capBytes(H200, 0.9));
      assert.equal(d.marginBytes, marginBytes(d.capBytes));
      assert.equal(d.weightsBytes + d.workspaceBytes + d.marginBytes + d.kvCacheBytes + d.freeBytes, d.capBytes);
      assert.equal(d.kvCacheBytes, p.numBlocks * p.kvBlockBytesPerDevice);
      assert.ok(d.freeBytes >= 0 && d.freeBytes < p.kvBlockBytesPerDevice);
      assert.equal(p.numKvTokens, p.numBlocks * 16);
      for (const it of [...d.weights, ...d.workspace]) assert.ok(Number.isSafeInteger(it.bytes) && it.bytes > 0, it.name);
    }
  }
});

test('workspace items are what the CUDA engine allocates (7B, TP 1, T 8192, S 256, N 1,010,000)', () => {
  const d = plan(QWEN_7B, H200, { maxModelLen: LEN_1M }).devices[0];
  const bytes = (name: string): number => {
    const it = d.workspace.find((x) => x.name === name);
    assert.ok(it, name);
    return it.bytes;
  };
  // the graph's step buffers, f32, at T = 8192 tokens and R = min(S, T) = 256 sampled rows
  assert.equal(bytes('residual stream'), 8192 * 3584 * 4);
  assert.equal(bytes('q projection'), 8192 * 28 * 128 * 4);
  assert.equal(bytes('k projection'), 8192 * 4 * 128 * 4);
  assert.equal(bytes('MLP gate/up output'), 8192 * 2 * 18944 * 4);
  assert.equal(bytes('MLP activation'), 8192 * 18944 * 4);
  assert.equal(bytes('logits of the sampled rows'), 256 * 152064 * 4);
  const perToken = 3 * 3584 + 2 * 28 * 128 + 2 * 4 * 128 + 3 * 18944; // x, h, proj; q, attn; k, v; gate/up, act
  assert.equal(d.arenaBytes, 4 * (8192 * perToken + 256 * (2 * 3584 + 152064)));
  // the CUDA scratch reservation: bf16 GEMM inputs (largest K = intermediate), split partials, cuBLAS workspace
  assert.equal(bytes('GEMM inputs rounded to bf16'), 2 * 8192 * 18944);
  assert.equal(bytes('attention split-KV partials'), 4 * 32 * 256 * 28 * 130);
  assert.equal(bytes('cuBLAS workspace'), 32 * 2 ** 20);
  assert.ok(!d.workspace.some((it) => it.name === 'GEMM weights widened to f32 (exact path)')); // bf16 on tensor cores
  assert.equal(d.workspace.find((x) => x.name === 'attention tiles and block tables')?.bytes, d.scratch.attentionIndices);
  assert.ok(!d.workspace.some((it) => it.name === 'gathered logits' || it.name === 'NCCL buffers')); // TP 1 only
  const scratch = Object.values(d.scratch).reduce((n, b) => n + b, 0);
  assert.equal(d.workspaceBytes, d.arenaBytes + scratch + 1024 * 2 ** 20); // + the CUDA context estimate
  // an f32 checkpoint: exact GEMMs, no bf16 inputs, f32 weights
  const f32 = plan(QWEN_7B, H200, { maxModelLen: 32768, weightDtype: 'fp32', kvCacheDtype: 'fp32', exactMatmul: true, tensorCoreAttention: false }).devices[0];
  assert.ok(!f32.workspace.some((it) => it.name === 'GEMM inputs rounded to bf16'));
  assert.equal(f32.weightsBytes, 2 * (15_231_899_648 - 28 * 4608 * 4 - 57 * 3584 * 4) + 28 * 4608 * 4 + 57 * 3584 * 4);
});

test('planned tensor parallelism: gathered logits, NCCL buffers, sparse buffers when budgets are given', () => {
  const d = plan(QWEN_7B, H200, { tensorParallelSize: 2, sparseAttention: { maxVerticalSize: 22032, maxSlashSize: 24528 } }).devices[0];
  assert.ok(d.workspace.some((it) => it.name === 'gathered logits'));
  assert.ok(d.workspace.some((it) => it.name === 'sparse prefill estimation, scores and index'));
  assert.ok(d.workspace.some((it) => it.name === 'NCCL buffers'));
  for (const it of d.workspace) assert.ok(Number.isSafeInteger(it.bytes) && it.bytes > 0, it.name);
});

test('sparse prefill with sparse_attention_last_q above what the CUDA estimation takes: one line naming the key and the fix', () => {
  const config = { ...QWEN_7B, dca: { ...QWEN_7B.dca!, sparseAttentionLastQ: 65 } };
  assert.throws(
    () => plan(config, H200, { sparseAttention: { maxVerticalSize: 1000, maxSlashSize: 6096 } }),
    (e) => isUserError(e) && /sparse_attention_last_q = 65 .*set it to 64 or less/.test(e.message) && !e.message.includes('\n'),
  );
  assert.ok(plan(config, H200).fits); // no budgets: no sparse prefill, nothing to refuse
});

test('(b) KV does not fit: 7B at 1,010,000 tokens, bf16 KV, one H100-80GB at 0.90', () => {
  const p = plan(QWEN_7B, H100, { maxModelLen: LEN_1M });
  assert.equal(p.fits, false);
  assert.equal(p.failure?.kind, 'kv_cache');
  assert.equal(
    errorOf(p),
    'max_model_len 1,010,000 needs 53.9 GiB of KV; 51.5 GiB is available after weights, workspace and margin at utilization 0.90: ' +
      'use --max-model-len 965000 or less, --kv-cache-dtype fp8, or --tensor-parallel-size 2',
  );
  assert.throws(() => assertPlanFits(p), (e) => isUserError(e) && e.message === errorOf(p));
  assert.equal(p.maxModelLenThatFits, 965_264);
  // every suggested change fits on its own
  for (const fix of [{ maxModelLen: 965_000 }, { kvCacheDtype: 'fp8' as const }, { tensorParallelSize: 2 }]) {
    assert.equal(plan(QWEN_7B, H100, { maxModelLen: LEN_1M, ...fix }).fits, true, JSON.stringify(fix));
  }
});

test('(b) 14B at 1,010,000 on H100-80GB: without TP, and per GPU with TP 2', () => {
  assert.equal(
    errorOf(plan(QWEN_14B, H100)),
    'max_model_len 1,010,000 needs 184.9 GiB of KV; 38.5 GiB is available after weights, workspace and margin at utilization 0.90: ' +
      'use --max-model-len 210000 or less, or --tensor-parallel-size 4',
  );
  assert.equal(
    errorOf(plan(QWEN_14B, H100, { tensorParallelSize: 2 })),
    'max_model_len 1,010,000 needs 92.5 GiB of KV per GPU; 52.2 GiB is available after weights, workspace and margin at utilization 0.90: ' +
      'use --max-model-len 570000 or less, --kv-cache-dtype fp8, or --tensor-parallel-size 4',
  );
});

test('(a) weights alone exceed the cap: 14B on an RTX 4090', () => {
  const p = plan(QWEN_14B, RTX4090);
  assert.equal(p.failure?.kind, 'weights');
  assert.equal(
    errorOf(p),
    'weights need 27.5 GiB per GPU, 7.7 GiB more than the 19.8 GiB usable at utilization 0.90 (cap 21.3 GiB of 23.6 GiB, less 1.5 GiB ' +
      'CUDA runtime reserve and margin): use --tensor-parallel-size 2 with --max-model-len 35000 or less, or --quantization fp8 with --max-model-len 9000 or less',
  );
  assert.equal(plan(QWEN_14B, RTX4090, { tensorParallelSize: 2, maxModelLen: 35000 }).fits, true);
  assert.equal(plan(QWEN_14B, RTX4090, { weightDtype: 'fp8', maxModelLen: 9000 }).fits, true);
});

test('(c) workspace does not fit: a huge max_num_batched_tokens', () => {
  // ~84 KB of activations per token (the MLP's widest buffers hold M = 16,384 rows, not T), so it takes
  // millions of tokens per step to overflow an H200
  const p = plan(QWEN_7B, H200, { maxNumBatchedTokens: 4_194_304 });
  assert.equal(p.failure?.kind, 'workspace');
  assert.equal(
    errorOf(p),
    'workspace for --max-num-batched-tokens 4,194,304 and --max-num-seqs 256 needs 329.0 GiB per GPU; 109.1 GiB is available after weights ' +
      'and margin at utilization 0.90: use --max-num-batched-tokens 649216 or less',
  );
  assert.equal(plan(QWEN_7B, H200, { maxNumBatchedTokens: 649_216 }).fits, true);
  assert.equal(plan(QWEN_7B, H200, { maxNumBatchedTokens: 649_216 + 8192 }).fits, false);
});

test('auto picks the largest max_model_len that fits; one block more does not fit', () => {
  for (const [cfg, gpu] of [[QWEN_7B, H100], [QWEN_14B, H100], [QWEN_14B, H200], [QWEN_7B, 24 * GiB]] as const) {
    const auto = plan(cfg, gpu, { maxModelLen: 'auto' });
    assert.equal(auto.fits, true);
    assert.equal(auto.maxModelLen, auto.maxModelLenThatFits);
    assert.ok(auto.maxModelLen < cfg.maxPositionEmbeddings);
    assert.ok(auto.numKvTokens >= auto.maxModelLen);
    assert.equal(auto.numSeqsThatFit(auto.maxModelLen) >= 1, true);
    assert.equal(plan(cfg, gpu, { maxModelLen: auto.maxModelLen }).fits, true);
    assert.equal(plan(cfg, gpu, { maxModelLen: auto.maxModelLen + 1 }).fits, false);
    assert.equal(plan(cfg, gpu, { maxModelLen: auto.maxModelLen + 16 }).fits, false);
  }
  // capped by the model's max_position_embeddings when memory is plentiful
  assert.equal(plan(QWEN_7B, H200, { maxModelLen: 'auto' }).maxModelLen, LEN_1M);
  // nothing fits: auto reports the reason instead of a length
  const none = plan(QWEN_7B, 10 * GiB, { maxModelLen: 'auto' });
  assert.equal(none.fits, false);
  assert.equal(none.maxModelLenThatFits, 0);
  assert.equal(none.failure?.kind, 'weights');
});

test('7B at 1,010,000 tokens with fp8 KV fits on one H100-80GB at the default utilization', () => {
  const p = plan(QWEN_7B, H100, { maxModelLen: LEN_1M, kvCacheDtype: 'fp8' });
  assert.equal(p.fits, true);
  assert.equal(p.failure, null);
  assert.equal(gib1(p.kvCacheBytesNeededPerDevice), '27.0');
  // headroom beyond one 1,010,000-token sequence: the pool holds ~1.94 M tokens (24.6 GiB spare)
  assert.equal(gib1(p.kvAvailableBytesPerDevice - p.kvCacheBytesNeededPerDevice), '24.6');
  assert.equal(p.numSeqsThatFit(LEN_1M), 1);
  // and bf16 KV needs utilization 0.95 (or the fixes of the (b) message)
  assert.equal(plan(QWEN_7B, H100, { maxModelLen: LEN_1M, gpuMemoryUtilization: 0.95 }).fits, true);
});

test('monotonic: more memory never shortens max_model_len; fp8 KV is never shorter than bf16', () => {
  for (const cfg of [QWEN_7B, QWEN_14B]) {
    let prev = 0;
    for (let g = 8; g <= 200; g += 6) {
      const bf16 = plan(cfg, g * GiB, { maxModelLen: 'auto' }).maxModelLenThatFits;
      const fp8 = plan(cfg, g * GiB, { maxModelLen: 'auto', kvCacheDtype: 'fp8' }).maxModelLenThatFits;
      assert.ok(bf16 >= prev, `${g} GiB: ${bf16} < ${prev}`);
      assert.ok(fp8 >= bf16, `${g} GiB: fp8 ${fp8} < bf16 ${bf16}`);
      prev = bf16;
    }
  }
});

test('numSeqsThatFit: whole blocks per sequence', () => {
  const p = plan(QWEN_7B, H200, { maxModelLen: 32768 });
  assert.equal(p.numSeqsThatFit(16), p.numBlocks);
  assert.equal(p.numSeqsThatFit(17), Math.floor(p.numBlocks / 2));
  assert.equal(p.numSeqsThatFit(32768), Math.floor(p.numBlocks / 2048));
});

test('known GPUs: names and aliases, one-line error for unknown ones', () => {
  assert.equal(findGpu('h100').totalBytes, 85_017_493_504);
  assert.equal(findGpu('H200').totalBytes, 150_109_880_320);
  assert.equal(findGpu('rtx-4090').name, 'RTX4090');
  for (const g of KNOWN_GPUS) assert.ok(Number.isSafeInteger(g.totalBytes) && g.source.length > 0);
  assert.throws(() => findGpu('B200'), /unknown GPU "B200": known GPUs are H100-80GB, H200, A100-80GB, A100-40GB, L40S, RTX4090/);
});

test('report: the table prints the budget and the reason; JSON has exact integers', () => {
  const p = plan(QWEN_7B, H100);
  const table = formatPlanTable(p, { gpuName: 'H100-80GB' });
  assert.match(table, /^ {2}weights +14\.19 +15,231,899,648/m);
  assert.match(table, /^fits: no$/m);
  assert.ok(table.includes(errorOf(p)));
  const j = planToJson(p) as { fits: boolean; devices: { weights_bytes: number; workspace: unknown[] }[] };
  assert.equal(j.fits, false);
  assert.equal(j.devices[0].weights_bytes, 15_231_899_648);
  assert.ok(j.devices[0].workspace.length > 10);
});

test('CLI: longctx plan --json from a config.json alone; exit 0 when it fits, 2 when it does not', () => {
  const dir = mkdtempSync(join(tmpdir(), 'longctx-plan-'));
  try {
    const config = {
      architectures: ['Qwen2ForCausalLM'],
      model_type: 'qwen2',
      vocab_size: 152064,
      hidden_size: 3584,
      intermediate_size: 18944,
      num_hidden_layers: 28,
      num_attention_heads: 28,
      num_key_value_heads: 4,
      rope_theta: 10000000.0,
      rms_norm_eps: 1e-5,
      max_position_embeddings: 1010000,
      tie_word_embeddings: false,
      hidden_act: 'silu',
      bos_token_id: 151643,
      eos_token_id: 151645,
      torch_dtype: 'bfloat16',
      use_sliding_window: false,
      rope_scaling: null,
      dual_chunk_attention_config: { chunk_size: 262144, local_size: 8192, original_max_position_embeddings: 262144 },
    };
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    const run = (...args: string[]) => spawnSync(process.execPath, cliArgs('plan', '--model', dir, ...args), { encoding: 'utf8' });

    const ok = run('--gpu', 'H200', '--json');
    assert.equal(ok.status, 0, ok.stderr);
    const j = JSON.parse(ok.stdout);
    assert.equal(j.fits, true);
    assert.equal(j.error, null);
    assert.equal(j.kv_cache_bytes_per_token, 57_344);
    assert.equal(j.max_model_len, 1_010_000);
    assert.equal(j.max_model_len_that_fits, 1_010_000);
    assert.equal(j.devices.length, 1);
    const d = j.devices[0];
    assert.equal(d.total_bytes, 150_109_880_320);
    assert.equal(d.weights_bytes, 15_231_899_648);
    assert.equal(d.weights_bytes + d.workspace_bytes + d.margin_bytes + d.kv_cache_bytes + d.free_bytes, d.cap_bytes);
    for (const k of ['weights_bytes', 'kv_cache_bytes', 'workspace_bytes', 'margin_bytes', 'free_bytes', 'total_bytes']) assert.ok(Number.isSafeInteger(d[k]), k);
    assert.ok(d.workspace.some((it: { name: string; formula: string }) => it.name === 'MLP gate/up output' && it.formula.startsWith('[M=8192, cols=37888] fp32')));

    const fp8 = JSON.parse(run('--gpu', 'H200', '--json', '--kv-cache-dtype', 'fp8', '--tensor-parallel-size', '2').stdout);
    assert.equal(fp8.kv_cache_bytes_per_token, 28_672);
    assert.equal(fp8.devices.length, 2);

    const no = run('--gpu', 'H100-80GB');
    assert.equal(no.status, 2);
    assert.match(no.stdout, /^fits: no$/m);
    assert.match(no.stdout, /use --max-model-len 965000 or less, --kv-cache-dtype fp8, or --tensor-parallel-size 2/);

    const bad = run('--gpu', 'H100-80GB', '--tensor-parallel-size', '3');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^error: --tensor-parallel-size 3 must divide/);
    const noGpu = run();
    assert.equal(noGpu.status, 1);
    assert.match(noGpu.stderr, /give --gpu NAME/);

    // a sparse_attention_config.json adds the sparse-prefill buffers
    // (one entry per layer and head, as the graph requires; the largest budgets: 3500 columns, 800 diagonals)
    const heads = (l: number) =>
      Object.fromEntries(Array.from({ length: 28 }, (_, h) => [String(h), ['vertical_and_slash', h === 0 ? 30 : h === 1 && l === 5 ? 3500 : 100, h === 0 && l === 3 ? 800 : 100, 0.9]]));
    writeFileSync(join(dir, 'sparse_attention_config.json'), JSON.stringify(Array.from({ length: 28 }, (_, l) => heads(l))));
    const sparse = JSON.parse(run('--gpu-memory-gib', '141', '--json').stdout);
    // sized from the largest per-layer budget sums: 130 + 3500 + 26·100 columns (layer 5), 800 + 27·100 diagonals (layer 3)
    const idx = sparse.devices[0].workspace.find((it: { name: string }) => it.name === 'sparse prefill estimation, scores and index');
    assert.match(idx.formula, /last_q=64, h=28, .*budget sums v=6230, s=3500$/);
    assert.ok(idx.bytes > 0 && idx.group === 'library');
    // a budgets file that does not cover every layer is refused in one line naming it, as the loader does
    writeFileSync(join(dir, 'sparse_attention_config.json'), JSON.stringify([heads(0)]));
    const short = run('--gpu-memory-gib', '141', '--json');
    assert.equal(short.status, 1);
    assert.match(short.stderr, /^error: .*sparse_attention_config\.json/);
    assert.equal(short.stderr.trim().split('\n').length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
