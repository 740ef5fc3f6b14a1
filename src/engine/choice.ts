// One choice of a request as the engine runs it: its random stream, token history (for penalties),
// incremental detokenizer and stop checker. It turns the logits row of each sampled step into one delta
// event: on the host (step(row)), or in two halves when the backend samples (samplingRow(): this step's
// draw, params and history; accept(id, row): the token and its event). Invariant: a choice samples exactly
// one token per sampled step with one draw from its own generator (seed + index), made before the token is
// picked either way, so its tokens do not depend on what else is batched or on where it was sampled.
// Must not: touch the scheduler or the backend.
import { computeLogprobs, sampleTokenWithUniform, type TokenHistory, type RequestRng } from '../sampling/sampler.js';
import type { SamplingRow } from '../sampling/sample-rows.js';
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

  /** Samples from one raw logits row on the host; returns the token and its delta event. */
  step(row: Float32Array): { tokenId: number; delta: EngineDeltaEvent } {
    const tokenId = sampleTokenWithUniform(row, this.params, this.history, this.rng.nextFloat());
    return this.accept(tokenId, row);
  }

  /** The first half of a step sampled on the backend: this step's one draw, the params and the history. */
  samplingRow(): SamplingRow {
    return { params: this.params, u: this.rng.nextFloat(), history: this.history };
  }

  /** The second half: the sampled token (row: its raw logits, needed only when the request wants logprobs). */
  accept(tokenId: number, row: Float32Array | null): { tokenId: number; delta: EngineDeltaEvent } {
    const p = this.params;
    this.history.append(tokenId);
    let logprobs: EngineLogprob[] | undefined;
    if (p.logprobs !== null) {
      if (row === null) throw new Error('ChoiceState.accept: a request with logprobs needs its logits row');
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
