// `longctx generate --json` on a model with a dual_chunk_attention_config (tiny-dca: chunk 64, local 16,
// so L = 48) and a prompt of 300+ tokens spanning 7 DCA chunks reproduces an independent float64 forward
// written from the spec (test/ref/qwen2-dca-f64.ts): same greedy tokens, next-token log-probs within 0.03
// of vLLM's key-temperature convention and within 1e-3 of ours (keys cached unscaled).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Qwen2DcaForwardF64 } from '../ref/qwen2-dca-f64.js';
import { cliArgs, modelDir } from '../helpers/models.js';

const model = modelDir('tiny-dca', 1, 'f32');
const PROMPT = Array.from({ length: 40 }, (_, i) => `Chapter ${i + 1}: the ${['river', 'mountain', 'city', 'forest'][i % 4]} remembers.`).join(' ');
const NUM_DECODES = 6;

describe('longctx generate with Dual Chunk Attention', () => {
  it('matches the float64 DCA forward for a prompt spanning 4+ chunks', () => {
    const r = spawnSync(
      process.execPath,
      cliArgs('generate', '--model', model, '--prompt', PROMPT, '--raw', '--temperature', '0', '--max-tokens', String(NUM_DECODES), '--ignore-eos', '--max-model-len', '1024', '--json'),
      { encoding: 'utf8', maxBuffer: 64 << 20 },
    );
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { prompt_token_ids: number[]; completion_token_ids: number[]; logprobs: { token_id: number; logprob: number }[] };
    const P = out.prompt_token_ids.length;
    assert.ok(P >= 4 * 48, `prompt of ${P} tokens spans ${Math.ceil(P / 48)} chunks`);
    for (const keyTemperature of ['prompt', 'at-write'] as const) {
      const ref = new Qwen2DcaForwardF64(model, keyTemperature);
      let lp = ref.step(out.prompt_token_ids, P, [P - 1])[0];
      let maxDiff = 0;
      for (let i = 0; i < NUM_DECODES; i++) {
        let best = 0;
        for (let j = 1; j < lp.length; j++) if (lp[j] > lp[best]) best = j;
        assert.equal(out.completion_token_ids[i], best, `${keyTemperature}: greedy token ${i}`);
        maxDiff = Math.max(maxDiff, Math.abs(out.logprobs[i].logprob - lp[best]));
        if (i + 1 < NUM_DECODES) lp = ref.step([best], P, [0])[0];
      }
      assert.ok(maxDiff < (keyTemperature === 'prompt' ? 1e-3 : 0.03), `${keyTemperature}: max |logprob diff| ${maxDiff}`);
    }
  });
});
