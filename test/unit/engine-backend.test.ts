// The CUDA engine's plan: weight bytes by dtype (tied lm_head counted once), the plan made from config.json
// and a device size (no GPU needed), the limits it gives, and the one-line refusals. Numbers by hand.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkPlannedWeights, planCudaEngine, resolveBackendKind, weightBytes } from '../../src/engine/engine-backend.js';
import { limitsFromPlan } from '../../src/engine/engine-options.js';
import { stepBufferBytes } from '../../src/model/step-buffers.js';
import type { ModelConfig } from '../../src/model/config-types.js';
import type { ModelWeights } from '../../src/model/weights-types.js';
import { makeTensor } from '../../src/runtime/tensor.js';
import { isUserError } from '../../src/errors.js';
import { isCudaAvailable } from '../../src/runtime/cuda-backend.js';

// hidden 8, 2 q heads / 1 kv head of 4, intermediate 16, vocab 32, 1 layer
const cfg = { hiddenSize: 8, numHeads: 2, numKvHeads: 1, headDim: 4, intermediateSize: 16, vocabSize: 32, numLayers: 1 } as ModelConfig;
const bf = (...s: number[]) => makeTensor('bf16', s);
const f = (...s: number[]) => makeTensor('f32', s);
function weights(tied: boolean): ModelWeights {
  const embed = bf(32, 8);
  return {
    embed,
    norm: f(8),
    lmHead: tied ? embed : bf(32, 8),
    layers: [{ inputNorm: f(8), q: bf(8, 8), k: bf(4, 8), v: bf(4, 8), qBias: f(8), kBias: f(4), vBias: f(4), o: bf(8, 8), postNorm: f(8), gateUp: bf(32, 8), down: bf(8, 16) }],
  };
}

describe('engine device budget', () => {
  it('counts weight bytes by dtype, a tied lm_head once', () => {
    // bf16 matrices: embed 256 + q 64 + k 32 + v 32 + o 64 + gateUp 256 + down 128 = 832 elements = 1664 bytes
    // f32 vectors: norm 8 + inputNorm 8 + postNorm 8 + biases 16 = 40 elements = 160 bytes
    assert.equal(weightBytes(weights(true)), 1664 + 160);
    assert.equal(weightBytes(weights(false)), 1664 + 160 + 512);
  });

  it('plans the CUDA engine from config.json and the device size alone: the pool takes what the cap leaves, in whole blocks', () => {
    const c = { ...cfg, torchDtype: 'bfloat16', maxPositionEmbeddings: 4096, dca: null, tieWordEmbeddings: true, attentionBias: true } as ModelConfig;
    const p = planCudaEngine({ model: '' }, c, { totalMemory: 4 * 1024 ** 3, name: 'test GPU' });
    const d = p.plan.devices[0];
    assert.equal(p.numerics.kvCacheDtype, 'bf16');
    assert.equal(p.plan.kvCacheBytesPerToken, 1 * 1 * 4 * 2 * 2); // 1 layer, 1 KV head of 4, K and V, bf16
    assert.equal(d.weightsBytes, weightBytes(weights(true)));
    assert.equal(d.kvCacheBytes, p.plan.numBlocks * 16 * 16);
    assert.equal(d.weightsBytes + d.workspaceBytes + d.marginBytes + d.kvCacheBytes + d.freeBytes, d.capBytes);
    // the step activations are the graph's buffers at T = 8192, R = 256 (src/model/step-buffers.ts)
    assert.equal(d.arenaBytes, stepBufferBytes(c, { tokens: 8192, rows: 256 }));
    assert.deepEqual(p.scratch, d.scratch);
    const limits = limitsFromPlan({ model: '' }, p.plan);
    assert.equal(limits.numKvBlocks, p.plan.numBlocks);
    assert.equal(limits.maxModelLen, 4096); // auto: capped by max_position_embeddings
    // an f32 checkpoint computes exactly and keeps an f32 cache
    const f = planCudaEngine({ model: '' }, { ...c, torchDtype: 'float32' }, { totalMemory: 4 * 1024 ** 3, name: 'test GPU' });
    assert.deepEqual([f.numerics.kvCacheDtype, f.numerics.exactMatmul, f.numerics.tensorCoreAttention], ['f32', true, false]);
    assert.equal(f.plan.kvCacheBytesPerToken, 32);
    // a KV cache memory limit shrinks the pool (never grows it) and max_model_len with it
    const small = limitsFromPlan({ model: '', kvCacheMemoryBytes: 100 * 16 * 16 }, p.plan);
    assert.deepEqual([small.numKvBlocks, small.maxModelLen], [100, 1601]);
    assert.throws(() => limitsFromPlan({ model: '', kvCacheMemoryBytes: 100 * 16 * 16, maxModelLen: 4000 }, p.plan), (e: unknown) => isUserError(e) && /--max-model-len 1,601 or less/.test((e as Error).message));
  });

  it('refuses a plan that does not fit before anything is loaded, in one line with the numbers', () => {
    const c = { ...cfg, torchDtype: 'bfloat16', maxPositionEmbeddings: 4096, dca: null, tieWordEmbeddings: true, attentionBias: true } as ModelConfig;
    assert.throws(
      () => planCudaEngine({ model: '', maxNumBatchedTokens: 8192 }, c, { totalMemory: 256 * 1024 ** 2, name: 'test GPU' }),
      (e: unknown) => isUserError(e) && /GiB/.test((e as Error).message) && !(e as Error).message.includes('\n'),
    );
  });

  it('refuses weights that are not what config.json plans', () => {
    const c = { ...cfg, torchDtype: 'float32', maxPositionEmbeddings: 4096, dca: null, tieWordEmbeddings: true, attentionBias: true } as ModelConfig;
    const p = planCudaEngine({ model: '' }, c, { totalMemory: 4 * 1024 ** 3, name: 'test GPU' });
    assert.throws(() => checkPlannedWeights(p, weights(true)), (e: unknown) => isUserError(e) && /torch_dtype \(float32\)/.test((e as Error).message));
  });

  it('resolves auto to cuda only where CUDA is usable, and refuses cuda with the reason elsewhere', () => {
    assert.equal(resolveBackendKind('reference'), 'reference');
    if (isCudaAvailable()) {
      assert.equal(resolveBackendKind('auto'), 'cuda');
      return;
    }
    assert.equal(resolveBackendKind('auto'), 'cpu');
    assert.throws(() => resolveBackendKind('cuda'), (e: unknown) => isUserError(e) && /--device cpu/.test((e as Error).message));
  });
});
