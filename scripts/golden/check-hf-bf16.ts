// Checks `longctx generate --json --raw --temperature 0` on model directories written by transformers'
// save_pretrained (bf16, tied and untied/sharded embeddings) against transformers' own greedy tokens and
// next-token log-probs. Inputs come from scripts/golden/make-hf-bf16.py (run on a machine with torch; see
// scripts/golden/device-golden.sh); the Qwen2.5 tokenizer files are copied in from `longctx init-model`.
// Usage: npx tsx scripts/golden/check-hf-bf16.ts DIR   (DIR holds hf-tied/, hf-untied/, hf-bf16-reference.json)
// Prints one line per model and exits 1 when a greedy token differs or a log-prob is off by more than 0.03.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PROMPT = 'The quick brown fox jumps over the lazy dog. Long contexts need';
const TOL = 0.03;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const cli = (...args: string[]) => execFileSync(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/main.ts'), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });

interface Step { token_id: number; logprob: number; top_logprobs: [number, number][] }
const dir = process.argv[2];
if (!dir) {
  console.error('usage: check-hf-bf16.ts DIR');
  process.exit(1);
}
const ref = JSON.parse(fs.readFileSync(path.join(dir, 'hf-bf16-reference.json'), 'utf8'));
const tokDir = fs.mkdtempSync(path.join(os.tmpdir(), 'longctx-tok-'));
cli('init-model', tokDir, '--preset', 'tiny', '--force');
let ok = true;
for (const [name, m] of Object.entries<{ f32: Step[]; bf16: Step[] }>(ref.models)) {
  const modelDir = path.join(dir, name);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(tokDir, f), path.join(modelDir, f));
  const out = JSON.parse(cli('generate', '--model', modelDir, '--prompt', PROMPT, '--raw', '--temperature', '0', '--max-tokens', String(m.f32.length), '--logprobs', '5', '--ignore-eos', '--json'));
  const promptOk = JSON.stringify(out.prompt_token_ids) === JSON.stringify(ref.prompt_token_ids);
  const tokensOk = JSON.stringify(out.completion_token_ids) === JSON.stringify(m.f32.map((s) => s.token_id));
  let maxF32 = 0;
  let maxBf16 = 0;
  let maxTop = 0;
  out.logprobs.forEach((l: { logprob: number; top_logprobs: { token_id: number; logprob: number }[] }, i: number) => {
    maxF32 = Math.max(maxF32, Math.abs(l.logprob - m.f32[i].logprob));
    maxBf16 = Math.max(maxBf16, Math.abs(l.logprob - m.bf16[i].logprob));
    for (const [id, lp] of m.f32[i].top_logprobs) {
      const ours = l.top_logprobs.find((t) => t.token_id === id);
      maxTop = ours ? Math.max(maxTop, Math.abs(ours.logprob - lp)) : Infinity;
    }
  });
  const pass = promptOk && tokensOk && maxF32 <= TOL && maxTop <= TOL;
  ok &&= pass;
  console.log(
    `${pass ? 'PASS' : 'FAIL'} ${name}: prompt ids ${promptOk ? 'equal' : 'DIFFER'}, greedy tokens ${tokensOk ? 'equal' : 'DIFFER'} ` +
      `(${out.completion_token_ids.join(',')}); max |logprob diff| vs transformers f32 ${maxF32.toExponential(2)}, ` +
      `top-5 ${maxTop.toExponential(2)}; vs transformers bf16 compute ${maxBf16.toExponential(2)} (tolerance ${TOL} applies to f32)`,
  );
}
fs.rmSync(tokDir, { recursive: true, force: true });
process.exit(ok ? 0 : 1);
