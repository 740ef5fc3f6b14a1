// One choice of a request as the engine runs it: its random stream, token history (for penalties),
// incremental detokenizer and stop checker. It turns the logits row of each sampled step into one delta
// event. Invariant: a choice samples exactly one token per sampled step with one draw from its own
// generator (seed + index), so its tokens do not depend on what else is batched. Must not: touch the
// scheduler or the backend.
import { computeLogprobs, sampleToken, type TokenHistory, type RequestRng } from '../sampling/sampler.js';
import { StopChecker } from '../sampling/stop-checker.js';
import type { SamplingParams } from '../sampling/sampling-params.js';
import { IncrementalDetokenizer, type IdToBytes } from '../tokenizer/detokenizer.js';
import type { EngineDeltaEvent, EngineLogprob, EngineTopLogprob } from './engine-client.js';
import type { SeqId } from '../core/ids.js';

export class ChoiceState {
  readonly stop: StopChecker;
  readonly detok: IncrementalDetokenizer;
  finished = false;
  /** Added to the scheduler yet (choices 1.. wait for choice 0's prefill so they hit the prefix cache). */
  added = false;
  scheduled = false;

  constructor(
    readonly seqId: SeqId,
    readonly index: number,
    readonly params: SamplingParams,
    readonly rng: RequestRng,
    readonly history: TokenHistory,
    private readonly table: IdToBytes,
    eosTokenIds: readonly number[],
  ) {
    this.stop = new StopChecker(params, eosTokenIds);
    this.detok = new IncrementalDetokenizer(table, { skipSpecialTokens: params.skipSpecialTokens });
  }

  /** Samples from one raw logits row; returns the token and its delta event. */
  step(row: Float32Array): { tokenId: number; delta: EngineDeltaEvent } {
    const p = this.params;
    const tokenId = sampleToken(row, p, this.history, this.rng);
    this.history.append(tokenId);
    let logprobs: EngineLogprob[] | undefined;
    if (p.logprobs !== null) {
      const lp = computeLogprobs(row, tokenId, p.logprobs);
      logprobs = [
        {
          tokenId,
          token: this.table.displayText(tokenId),
          logprob: lp.logprob,
          top: lp.top.map((t): EngineTopLogprob => ({ tokenId: t.tokenId, token: this.table.displayText(t.tokenId), logprob: t.logprob })),
        },
      ];
    }
    const u = this.stop.push(tokenId, this.detok);
    if (u.finishReason !== null) this.finished = true;
    const delta: EngineDeltaEvent = { type: 'delta', index: this.index, text: u.text, tokenIds: [tokenId], finishReason: u.finishReason };
    if (logprobs) delta.logprobs = logprobs;
    if (u.finishReason !== null) delta.stopReason = u.stopReason;
    return { tokenId, delta };
  }

  /** The final delta of a choice ended from outside (abort, or the context filled up). */
  end(reason: 'abort' | 'length'): EngineDeltaEvent {
    this.finished = true;
    const text = reason === 'length' ? this.stop.heldText + this.detok.flush() : '';
    const delta: EngineDeltaEvent = { type: 'delta', index: this.index, text, tokenIds: [], finishReason: reason, stopReason: null };
    if (this.params.logprobs !== null) delta.logprobs = [];
    return delta;
  }
}
