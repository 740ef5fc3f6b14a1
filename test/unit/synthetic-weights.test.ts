// Unit tier: the synthetic weights of `longctx bench`: deterministic, and the 'local' attention pattern puts
// one q and one k bias component per head on the rotary pair nearest LOCAL_FREQUENCY, sized so their dot
// product after the 1/sqrt(head_dim) scale is LOCAL_LOGIT (what makes its attention local).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseModelConfig } from '../../src/model/config.js';
import { PRESETS, presetConfigJson } from '../../src/model/init-presets.js';
import { LOCAL_FREQUENCY, LOCAL_LOGIT, rotaryPairNear, syntheticWeights } from '../../src/model/synthetic-weights.js';

test('rotaryPairNear: the pair whose inv_freq is nearest the frequency', () => {
  // theta 1e7, 128 dims: inv_freq_i = 1e7^(-i/64); 1e-4 sits between i = 36 (1.17e-4) and 37 (8.9e-5).
  assert.equal(rotaryPairNear(1e7, 128, 1e-4), 37);
  assert.equal(rotaryPairNear(1e4, 16, 1), 0);
  assert.equal(rotaryPairNear(1e4, 16, 1e-9), 7); // clamped to the last pair
});

test("'local' pattern: one large q/k bias per head on that pair; 'random' has none; both deterministic", () => {
  const config = parseModelConfig(presetConfigJson(PRESETS['tiny-dca'], 'f32'), 'tiny-dca');
  const D = config.headDim;
  const pair = rotaryPairNear(config.ropeTheta, D, LOCAL_FREQUENCY);
  const local = syntheticWeights(config, 'f32', 5, 'local');
  const random = syntheticWeights(config, 'f32', 5, 'random');
  const q = local.layers[0].qBias!.data as Float32Array;
  const k = local.layers[0].kBias!.data as Float32Array;
  for (let h = 0; h < config.numHeads; h++) {
    const g = Math.floor(h / (config.numHeads / config.numKvHeads));
    assert.ok(Math.abs((q[h * D + pair] * k[g * D + pair]) / Math.sqrt(D) - LOCAL_LOGIT) < 1e-4);
  }
  const big = (t: Float32Array) => t.filter((x) => Math.abs(x) > 1).length;
  assert.equal(big(q), config.numHeads);
  assert.equal(big(k), config.numKvHeads);
  assert.equal(big(random.layers[0].qBias!.data as Float32Array), 0);
  assert.deepEqual(syntheticWeights(config, 'f32', 5, 'local').layers[1].kBias!.data, local.layers[1].kBias!.data);
});
