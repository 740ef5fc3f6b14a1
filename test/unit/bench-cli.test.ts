// Unit tier: `longctx bench` runs end to end on the CPU backend (tiny shape, synthetic weights): one row per
// prompt length with a positive TTFT and decode speed, and lengths past max_model_len refused in one line.
// It asserts that the numbers exist and are sane, never how fast they are.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatOpTimes, runBench } from '../../src/cli/bench.js';
import { isUserError } from '../../src/errors.js';

test('bench on the CPU: a row per length, chunked prefill and decode measured', async () => {
  const lines: string[] = [];
  const rows = await runBench(
    { preset: 'tiny', lengths: [40, 300], decodeTokens: 3, device: 'cpu', maxNumBatchedTokens: 128, json: true },
    (l) => lines.push(l),
  );
  assert.equal(rows.length, 2);
  for (const [i, r] of rows.entries()) {
    assert.equal(r.prompt_tokens, [40, 300][i]);
    assert.ok((r.ttft_s as number) > 0 && Number.isFinite(r.decode_tok_s as number) && (r.decode_tok_s as number) > 0);
    assert.equal(r.peak_bytes, null); // host backends report no device memory
  }
  assert.equal(JSON.parse(lines[0]).kind, 'setup');
  assert.equal(lines.length, 3);
});

test('bench decodes with the backend sampling (as the engine does) unless --host-sampling', async () => {
  for (const hostSampling of [false, true]) {
    const rows = await runBench({ preset: 'tiny', lengths: [30], decodeTokens: 4, device: 'cpu', hostSampling, json: true }, () => {});
    assert.equal(rows[0].decode_sampling, hostSampling ? 'host' : 'backend');
    assert.ok((rows[0].decode_tok_s as number) > 0);
  }
});

test('bench refuses a length the limits cannot hold, in one line', async () => {
  await assert.rejects(
    runBench({ preset: 'tiny', lengths: [5000], decodeTokens: 1, device: 'cpu', maxModelLen: 1024, json: true }, () => {}),
    (e: unknown) => isUserError(e) && /exceeds max_model_len 1024/.test((e as Error).message),
  );
});

test('bench runs a sparse preset with its budgets, and --dense turns them off', async () => {
  for (const dense of [false, true]) {
    const lines: string[] = [];
    const rows = await runBench(
      { preset: 'tiny-dca-sparse', lengths: [200], decodeTokens: 1, device: 'cpu', maxNumBatchedTokens: 64, dense, json: true },
      (l) => lines.push(l),
    );
    const setup = JSON.parse(lines[0]);
    assert.equal(setup.sparse_prefill, dense ? 'off' : 'above 128 prompt tokens');
    assert.equal(rows.length, 1);
  }
});

test('bench --op-times: refused on the CPU in one line; the per-op lines sum and sort the times', async () => {
  await assert.rejects(
    runBench({ preset: 'tiny', lengths: [8], decodeTokens: 1, device: 'cpu', opTimes: true, json: true }, () => {}),
    (e: unknown) => isUserError(e) && /--op-times needs the CUDA backend/.test((e as Error).message),
  );
  const ops = { rmsnorm: { count: 57, gpuMs: 0.5, hostMs: 0.1 }, 'attentionDca decode': { count: 28, gpuMs: 4, hostMs: 0.2 } };
  const line = JSON.parse(formatOpTimes(100, 'decode', ops, true));
  assert.deepEqual(Object.keys(line.ops), ['attentionDca decode', 'rmsnorm']);
  assert.equal(line.gpu_ms_total, 4.5);
  assert.equal(line.ops.rmsnorm.count, 57);
  assert.match(formatOpTimes(100, 'prefill', ops, false), /prefill op GPU times, 4\.5 ms in all: attentionDca decode 4\.0 ms \(28\), rmsnorm 0\.5 ms \(57\)/);
});
