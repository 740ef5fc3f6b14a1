// The offline API, the TypeScript counterpart of vLLM's `LLM`: create an engine from a model directory,
// then generate for many prompts at once (continuous batching does the rest), chat through the model's
// template, or stream one request's deltas. Invariant: outputs come back in prompt order, whatever order
// they finish in; dispose() aborts what is in flight and frees the backend. Must not: parse flags or
// print (the CLI does), or reach into the scheduler.
import { UserError } from '../errors.js';
import { resolveSamplingParams, type SamplingParams, type SamplingRequest } from '../sampling/sampling-params.js';
import type { ChatMessage } from '../tokenizer/chat-template.js';
import { Engine } from './engine.js';
import type { EngineDeltaEvent, EngineEvent, EngineFinishReason, EngineLogprob, EngineTool } from './engine-client.js';
import type { EngineOptions } from './engine-options.js';

export type LLMOptions = EngineOptions;

/** A prompt: text (tokenized with special tokens parsed) or token ids. */
export type Prompt = string | { promptTokenIds: readonly number[] };

export interface CompletionOutput {
  index: number;
  text: string;
  tokenIds: number[];
  finishReason: EngineFinishReason;
  /** The stop string or stop token id that ended it; null for EOS, length and abort. */
  stopReason: string | number | null;
  /** One entry per generated token when params.logprobs is set (log-softmax of the raw logits). */
  logprobs: EngineLogprob[] | null;
  /** Sum of the generated tokens' logprobs, when logprobs were requested. */
  cumulativeLogprob: number | null;
}

export interface RequestOutput {
  requestId: string;
  prompt: string | null;
  promptTokenIds: number[];
  /** Prompt tokens served from the prefix cache. */
  numCachedTokens: number;
  outputs: CompletionOutput[];
}

export interface ChatOptions {
  tools?: EngineTool[];
  addGenerationPrompt?: boolean; // default true
  variables?: Record<string, unknown>;
}

export interface StreamHandle extends AsyncIterable<EngineDeltaEvent> {
  readonly requestId: string;
}

export class LLM {
  private nextId = 0;

  private constructor(readonly engine: Engine) {}

  static async create(opts: LLMOptions): Promise<LLM> {
    return new LLM(await Engine.create(opts));
  }

  get maxModelLen(): number {
    return this.engine.maxModelLen;
  }

  /** Resolves request params against the model's generation_config.json (vLLM's precedence). */
  samplingParams(request: SamplingRequest = {}): SamplingParams {
    return resolveSamplingParams(request, this.engine.generationDefaults);
  }

  /** Runs every prompt to completion, batched; outputs in prompt order. */
  async generate(prompts: Prompt | readonly Prompt[], params: SamplingRequest = {}): Promise<RequestOutput[]> {
    const list = Array.isArray(prompts) ? (prompts as readonly Prompt[]) : [prompts as Prompt];
    const p = this.samplingParams(params);
    const tokenized = await Promise.all(list.map((x) => this.tokenize(x)));
    return Promise.all(tokenized.map(({ text, ids }) => this.collect(this.newId(), text, ids, p)));
  }

  /** Applies the chat template to each conversation, then generates. */
  async chat(conversations: readonly ChatMessage[] | readonly (readonly ChatMessage[])[], params: SamplingRequest = {}, opts: ChatOptions = {}): Promise<RequestOutput[]> {
    const many = conversations.length > 0 && Array.isArray(conversations[0]);
    const list = many ? (conversations as readonly (readonly ChatMessage[])[]) : [conversations as readonly ChatMessage[]];
    const texts = list.map((msgs) =>
      this.engine.tokenizer.applyChatTemplate(msgs, {
        addGenerationPrompt: opts.addGenerationPrompt ?? true,
        ...(opts.tools ? { tools: opts.tools } : {}),
        ...(opts.variables ? { variables: opts.variables } : {}),
      }),
    );
    // The template already wrote the special tokens: add none (as vLLM does for chat).
    const p = this.samplingParams(params);
    const ids = await Promise.all(texts.map((t) => this.engine.encode(t, { addSpecialTokens: false })));
    return Promise.all(texts.map((t, i) => this.collect(this.newId(), t, ids[i], p)));
  }

  /** One request's deltas as they are generated. Breaking out of the loop aborts it. */
  stream(prompt: Prompt, params: SamplingRequest = {}, opts: { requestId?: string; signal?: AbortSignal } = {}): StreamHandle {
    const requestId = opts.requestId ?? this.newId();
    const p = this.samplingParams(params);
    const self = this;
    async function* deltas(): AsyncGenerator<EngineDeltaEvent> {
      const { ids } = await self.tokenize(prompt);
      self.checkLength(ids, p);
      for await (const ev of self.engine.generate({ requestId, promptTokenIds: ids, params: p, ...(opts.signal ? { signal: opts.signal } : {}) })) {
        if (ev.type === 'delta') yield ev;
      }
    }
    return { requestId, [Symbol.asyncIterator]: () => deltas() };
  }

  abort(requestId: string): void {
    this.engine.abort(requestId);
  }

  async dispose(): Promise<void> {
    await this.engine.shutdown();
  }

  private newId(): string {
    return `req-${this.nextId++}`;
  }

  private async tokenize(p: Prompt): Promise<{ text: string | null; ids: number[] }> {
    if (typeof p === 'string') return { text: p, ids: await this.engine.encode(p) };
    return { text: null, ids: [...p.promptTokenIds] };
  }

  private checkLength(ids: readonly number[], p: SamplingParams): void {
    if (ids.length === 0) throw new UserError('the prompt is empty: give at least one token');
    if (ids.length + p.maxTokens > this.engine.maxModelLen) {
      throw new UserError(
        `the prompt has ${ids.length} tokens and max tokens is ${p.maxTokens}: together ${ids.length + p.maxTokens}, over the maximum context of ${this.engine.maxModelLen} tokens; shorten the prompt, lower max tokens or raise max model len`,
      );
    }
  }

  private async collect(requestId: string, text: string | null, ids: number[], p: SamplingParams): Promise<RequestOutput> {
    this.checkLength(ids, p);
    const outs: CompletionOutput[] = Array.from({ length: p.n }, (_, index) => ({
      index,
      text: '',
      tokenIds: [],
      finishReason: 'abort' as EngineFinishReason,
      stopReason: null,
      logprobs: p.logprobs !== null ? [] : null,
      cumulativeLogprob: p.logprobs !== null ? 0 : null,
    }));
    let numCachedTokens = 0;
    for await (const ev of this.engine.generate({ requestId, promptTokenIds: ids, params: p }) as AsyncIterable<EngineEvent>) {
      if (ev.type === 'scheduled') numCachedTokens = ev.numCachedPromptTokens;
      if (ev.type !== 'delta') continue;
      const o = outs[ev.index];
      o.text += ev.text;
      o.tokenIds.push(...ev.tokenIds);
      if (ev.logprobs && o.logprobs) {
        o.logprobs.push(...ev.logprobs);
        for (const l of ev.logprobs) o.cumulativeLogprob! += l.logprob;
      }
      if (ev.finishReason !== null) {
        o.finishReason = ev.finishReason;
        o.stopReason = ev.stopReason ?? null;
      }
    }
    return { requestId, prompt: text, promptTokenIds: ids, numCachedTokens, outputs: outs };
  }
}
