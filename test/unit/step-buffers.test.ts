// Unit tier: the step activation buffers (src/model/step-buffers.ts): what a fixed capacity allocates equals
// stepBufferBytes (the memory plan's formula), a step never allocates, a larger step is refused at a fixed
// capacity and regrows otherwise, and every view has its step's shape.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Backend } from '../../src/runtime/backend.js';
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { numel, type DType } from '../../src/runtime/tensor.js';
import { StepBuffers, stepBufferBytes } from '../../src/model/step-buffers.js';
import type { ModelConfig } from '../../src/model/config-types.js';

const config = { hiddenSize: 24, numHeads: 6, numKvHeads: 2, headDim: 4, intermediateSize: 40, vocabSize: 97 } as ModelConfig;

/** The reference backend, counting the bytes zeros() allocates. */
function counting(): { be: Backend; bytes: () => number; calls: () => number } {
  const inner = createReferenceBackend();
  let bytes = 0;
  let calls = 0;
  const be: Backend = {
    ...inner,
    zeros(shape: readonly number[], dtype: DType = 'f32') {
      calls++;
      bytes += numel(shape) * (dtype === 'f32' ? 4 : 2);
      return inner.zeros(shape, dtype);
    },
  };
  return { be, bytes: () => bytes, calls: () => calls };
}

test('a fixed capacity allocates exactly stepBufferBytes, once; steps only take views', () => {
  const c = counting();
  const cap = { tokens: 13, rows: 5 };
  const bufs = new StepBuffers(c.be, config, cap);
  // 3H + 2·qDim + 2·kvDim + 3I per token, 2H + V per row, 4 bytes each
  const perToken = 3 * 24 + 2 * 24 + 2 * 8 + 3 * 40;
  assert.equal(stepBufferBytes(config, cap), 4 * (13 * perToken + 5 * (2 * 24 + 97)));
  assert.equal(c.bytes(), stepBufferBytes(config, cap));
  const callsAfterCreate = c.calls();
  for (const [T, R] of [[13, 5], [1, 1], [7, 0]]) {
    const v = bufs.views(T, R);
    assert.deepEqual([...v.x.shape], [T, 24]);
    assert.deepEqual([...v.gateUp.shape], [T, 80]);
    assert.deepEqual([...v.logits.shape], [R, 97]);
  }
  assert.equal(c.calls(), callsAfterCreate, 'views allocate nothing');
  assert.throws(() => bufs.views(14, 1), /exceeds the step capacity 13 \/ 5/);
  assert.throws(() => bufs.views(3, 6), /exceeds the step capacity/);
});

test('without a capacity the buffers are allocated at the first step and regrown for a larger one', () => {
  const c = counting();
  const bufs = new StepBuffers(c.be, config, null);
  assert.equal(c.bytes(), 0);
  bufs.views(4, 1);
  assert.equal(c.bytes(), stepBufferBytes(config, { tokens: 4, rows: 1 }));
  bufs.views(2, 1);
  assert.equal(c.bytes(), stepBufferBytes(config, { tokens: 4, rows: 1 }), 'a smaller step reuses them');
  bufs.views(9, 2);
  assert.deepEqual(bufs.capacity, { tokens: 9, rows: 2 });
  assert.throws(() => new StepBuffers(c.be, config, { tokens: 2, rows: 3 }), /rows <= tokens/);
});

test('the MLP buffers have M = min(T, chunk rows) rows: a capacity above the chunk allocates M, not T, of them', () => {
  const c = counting();
  const cap = { tokens: 13, rows: 5 };
  const bufs = new StepBuffers(c.be, config, cap, 8);
  // 3H + 2·qDim + 2·kvDim per token (T = 13), 3I per MLP row (M = 8), 2H + V per sampled row
  const bytes = 4 * (13 * (3 * 24 + 2 * 24 + 2 * 8) + 8 * 3 * 40 + 5 * (2 * 24 + 97));
  assert.equal(stepBufferBytes(config, cap, 8), bytes);
  assert.equal(c.bytes(), bytes);
  assert.deepEqual([...bufs.views(13, 5).gateUp.shape], [8, 80]);
  assert.deepEqual([...bufs.views(6, 1).act.shape], [6, 40], 'a step under the chunk takes T rows');
  assert.throws(() => new StepBuffers(c.be, config, cap, 6), /multiple of 4/);
});
