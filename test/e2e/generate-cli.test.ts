// `longctx generate` as a user runs it (the CLI from source, in a child process): --json on the tiny model
// reproduces the transformers golden fixture (test/fixtures/golden-tiny.json: greedy tokens and their
// log-probs = logit - logsumexp), the streamed text equals the --json text, the demo model is announced as
// random, and bad input is one line on stderr with exit code 1.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cliArgs, modelDir, repoRoot } from '../helpers/models.js';

interface GoldenStep { token_id: number; logsumexp: number; top: [number, number][] }
const golden = JSON.parse(fs.readFileSync(path.join(repoRoot, 'test/fixtures/golden-tiny.json'), 'utf8')) as {
  prompt_token_ids: number[];
  steps: GoldenStep[];
};
const GOLDEN_PROMPT =
  '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n';

function cli(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(process.execPath, cliArgs(...args), { encoding: 'utf8', env, maxBuffer: 64 << 20 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('longctx generate', () => {
  const model = modelDir('tiny', 1, 'f32');

  it('--json --raw --temperature 0 reproduces transformers: prompt ids, greedy tokens, log-probs', () => {
    const r = cli(['generate', '--model', model, '--prompt', GOLDEN_PROMPT, '--raw', '--temperature', '0', '--max-tokens', '8', '--ignore-eos', '--logprobs', '3', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.prompt_token_ids, golden.prompt_token_ids);
    assert.deepEqual(out.completion_token_ids, golden.steps.slice(0, 8).map((s) => s.token_id));
    assert.equal(out.finish_reason, 'length');
    assert.equal(out.logprobs.length, 8);
    out.logprobs.forEach((l: { token_id: number; logprob: number; top_logprobs: { token_id: number; logprob: number }[] }, i: number) => {
      const g = golden.steps[i];
      const logit = g.top.find(([id]) => id === g.token_id)![1];
      assert.ok(Math.abs(l.logprob - (logit - g.logsumexp)) < 1e-3, `step ${i}: ${l.logprob} vs ${logit - g.logsumexp}`);
      assert.equal(l.top_logprobs.length, 3);
      for (const t of l.top_logprobs) {
        const ref = g.top.find(([id]) => id === t.token_id);
        assert.ok(ref, `step ${i}: alternative ${t.token_id} is not in transformers' top 20`);
        assert.ok(Math.abs(t.logprob - (ref[1] - g.logsumexp)) < 1e-3);
      }
    });
    assert.equal(typeof out.text, 'string');
  });

  it('streams the same text as --json prints', () => {
    const args = ['generate', '--model', model, '--prompt', 'Long contexts need', '--temperature', '0', '--max-tokens', '10', '--ignore-eos'];
    const streamed = cli(args);
    const json = cli([...args, '--json']);
    assert.equal(streamed.code, 0, streamed.stderr);
    assert.equal(streamed.stdout, `${JSON.parse(json.stdout).text}\n`);
    assert.ok(JSON.parse(json.stdout).prompt_token_ids.length > 20, 'the chat template was applied (system prompt + markers)');
  });

  it('seeded sampling is reproducible and differs across seeds', () => {
    const run = (seed: string) => JSON.parse(cli(['generate', '--model', model, '--prompt', 'Hi', '--raw', '--temperature', '1', '--seed', seed, '--max-tokens', '8', '--json']).stdout);
    assert.deepEqual(run('7').completion_token_ids, run('7').completion_token_ids);
    assert.notDeepEqual(run('7').completion_token_ids, run('8').completion_token_ids);
  });

  it('without --model uses the demo model and says its weights are random', () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-demo-'));
    try {
      const r = cli(['generate', '--prompt', 'Hello', '--max-tokens', '4', '--json'], { ...process.env, XDG_CACHE_HOME: cache });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /demo model \(random weights/);
      assert.equal(JSON.parse(r.stdout).completion_token_ids.length > 0, true);
      assert.ok(fs.existsSync(path.join(cache, 'longctx', 'demo-tiny-s0', 'model.safetensors')));
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });

  it('bad input: one line naming the problem, exit code 1, no stack trace', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-bad-'));
    try {
      const broken = path.join(tmp, 'broken');
      fs.mkdirSync(broken);
      for (const f of fs.readdirSync(model)) fs.copyFileSync(path.join(model, f), path.join(broken, f));
      const st = path.join(broken, 'model.safetensors');
      fs.truncateSync(st, fs.statSync(st).size - 1000);
      const cases: [string[], RegExp][] = [
        [['generate', '--model', path.join(tmp, 'nope'), '--prompt', 'x'], /does not exist/],
        [['generate', '--model', model], /--prompt/],
        [['generate', '--model', broken, '--prompt', 'x'], /model\.safetensors/],
        [['generate', '--model', model, '--prompt', 'x', '--max-model-len', '99999999'], /max model len/],
        [['generate', '--model', model, '--prompt', 'x', '--top-p', '7'], /top_p/],
        [['generate', '--model', model, '--prompt', 'x', '--max-tokens', 'many'], /max-tokens/],
      ];
      for (const [args, re] of cases) {
        const r = cli(args);
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, re);
        assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
        assert.doesNotMatch(r.stderr, /\n\s+at /);
        assert.equal(r.stdout, '');
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
