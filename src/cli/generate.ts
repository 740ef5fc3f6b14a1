// `longctx generate --model DIR --prompt TEXT`: one completion through the offline LLM API, streamed to
// stdout, or one JSON object with --json. Owns flag parsing and output formatting only. Log-probabilities
// are log-softmax of the raw logits (before temperature / top-p), like vLLM's default.
import fs from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEMO_NOTICE, ensureDemoModel } from '../engine/demo-model.js';
import { LLM } from '../engine/llm.js';
import type { EngineLogprob } from '../engine/engine-client.js';
import type { SamplingRequest } from '../sampling/sampling-params.js';
import { UserError } from '../errors.js';

interface GenerateOptions {
  model?: string;
  prompt?: string;
  promptFile?: string;
  raw: boolean;
  maxTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
  logprobs?: number;
  ignoreEos: boolean;
  stop?: string[];
  json: boolean;
  maxModelLen?: number;
  device: 'auto' | 'cpu' | 'cuda' | 'reference';
  threads: number;
}

const int = (min: number) => (v: string) => {
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v)) || Number(v) < min) throw new InvalidArgumentError(`must be an integer >= ${min}`);
  return Number(v);
};
const num = (v: string) => {
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x)) throw new InvalidArgumentError('must be a number');
  return x;
};

function jsonLogprob(l: EngineLogprob) {
  return { token_id: l.tokenId, logprob: l.logprob, top_logprobs: l.top.map((t) => ({ token_id: t.tokenId, logprob: t.logprob })) };
}

async function run(o: GenerateOptions): Promise<void> {
  let prompt = o.prompt;
  if (o.promptFile !== undefined) {
    if (prompt !== undefined) throw new UserError('give --prompt or --prompt-file, not both');
    try {
      prompt = fs.readFileSync(o.promptFile, 'utf8');
    } catch (e) {
      throw new UserError(`cannot read --prompt-file ${o.promptFile} (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    }
  }
  if (prompt === undefined) throw new UserError('missing --prompt TEXT (or --prompt-file FILE)');
  let model = o.model;
  if (model === undefined) {
    process.stderr.write(`${DEMO_NOTICE}\n`);
    model = await ensureDemoModel();
  }
  const llm = await LLM.create({
    model,
    backend: o.device,
    numThreads: o.threads,
    progress: process.stderr.isTTY === true,
    ...(o.maxModelLen !== undefined ? { maxModelLen: o.maxModelLen } : {}),
  });
  try {
    const params: SamplingRequest = {
      temperature: o.temperature,
      topP: o.topP,
      topK: o.topK,
      minP: o.minP,
      repetitionPenalty: o.repetitionPenalty,
      seed: o.seed,
      maxTokens: o.maxTokens,
      ignoreEos: o.ignoreEos,
      stop: o.stop,
      // --json always reports the sampled tokens' log-probabilities (with --logprobs K alternatives)
      logprobs: o.logprobs ?? (o.json ? 0 : undefined),
    };
    const text = o.raw ? prompt : llm.engine.tokenizer.applyChatTemplate([{ role: 'user', content: prompt }], { addGenerationPrompt: true });
    const promptTokenIds = await llm.engine.encode(text, { addSpecialTokens: o.raw });
    if (o.json) {
      const [out] = await llm.generate({ promptTokenIds }, params);
      const c = out.outputs[0];
      const doc = {
        prompt_token_ids: out.promptTokenIds,
        completion_token_ids: c.tokenIds,
        text: c.text,
        finish_reason: c.finishReason,
        logprobs: (c.logprobs ?? []).map(jsonLogprob),
      };
      process.stdout.write(`${JSON.stringify(doc)}\n`);
      return;
    }
    for await (const d of llm.stream({ promptTokenIds }, params)) {
      if (d.text) process.stdout.write(d.text);
      if (d.logprobs && o.logprobs !== undefined) {
        for (const l of d.logprobs) process.stderr.write(`${JSON.stringify(jsonLogprob(l))}\n`);
      }
      if (d.finishReason !== null) process.stdout.write(`\n`);
    }
  } finally {
    await llm.dispose();
  }
}

export function registerGenerate(program: Command): void {
  program
    .command('generate')
    .description('generate one completion for a prompt (streamed; --json for one JSON object)')
    .option('--model <dir>', 'model directory (default: the built-in demo model, random weights)')
    .option('--prompt <text>', 'the prompt (the chat template is applied unless --raw)')
    .option('--prompt-file <file>', 'read the prompt from a file')
    .option('--raw', 'send the prompt as-is, without the chat template', false)
    .addOption(new Option('--max-tokens <n>', 'most tokens to generate (default: generation_config, else 16)').argParser(int(1)))
    .addOption(new Option('--temperature <t>', 'sampling temperature (0: greedy)').argParser(num))
    .addOption(new Option('--top-p <p>', 'nucleus sampling mass').argParser(num))
    .addOption(new Option('--top-k <k>', 'keep the k most likely tokens (-1: all)').argParser(int(-1)))
    .addOption(new Option('--min-p <p>', 'drop tokens below p x the top probability').argParser(num))
    .addOption(new Option('--repetition-penalty <r>', 'penalty for tokens already seen').argParser(num))
    .addOption(new Option('--seed <n>', 'random seed (same seed, same output)').argParser(int(0)))
    .addOption(new Option('--logprobs <k>', 'report log-probabilities with k alternatives per token (stderr, or in --json)').argParser(int(0)))
    .option('--ignore-eos', 'keep generating past end-of-sequence tokens', false)
    .option('--stop <strings...>', 'stop strings (not included in the output)')
    .option('--json', 'print one JSON object: token ids, text, finish reason, log-probabilities', false)
    .addOption(new Option('--max-model-len <n>', 'largest prompt + completion tokens').argParser(int(2)))
    .addOption(new Option('--device <name>', 'compute backend (auto: cuda when a GPU and the CUDA addon are there, else cpu)').choices(['auto', 'cpu', 'cuda', 'reference']).default('auto'))
    .addOption(new Option('--threads <n>', 'CPU threads (0: all cores)').argParser(int(0)).default(0))
    .action(async (o: GenerateOptions) => {
      await run(o);
    });
}
