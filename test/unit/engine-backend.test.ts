// The CUDA KV budget of the engine: weights bytes by dtype (tied lm_head counted once), float32 step
// activations, and the one-line error when the GPU budget holds no KV cache. Numbers computed by hand.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { deviceKvBudget, resolveBackendKind, stepActivationBytes, weightBytes } from '../../src/engine/engine-backend.js';
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

  it('sizes float32 step activations: per token 3H + 2 qDim + 2 kvDim + 3I, per sampled row 2H + V', () => {
    // per token 24 + 16 + 8 + 48 = 96 floats; per row 16 + 32 = 48 floats
    assert.equal(stepActivationBytes(cfg, 10, 3), 4 * (10 * 96 + 3 * 48));
  });

  it('leaves the budget minus weights, activations and a 1 GiB margin to the KV cache', () => {
    const budget = 2 * 1024 ** 3;
    const left = deviceKvBudget(budget, cfg, weights(true), 10, 3);
    assert.equal(left, budget - 1824 - 4 * (10 * 96 + 3 * 48) - 1024 ** 3);
  });

  it('explains a budget with no room for a KV cache in one line with the numbers', () => {
    assert.throws(
      () => deviceKvBudget(1024 ** 3, cfg, weights(true), 10, 3),
      (e: unknown) => isUserError(e) && /--gpu-memory-utilization/.test((e as Error).message) && /GiB/.test((e as Error).message) && !(e as Error).message.includes('\n'),
    );
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
