// Decides when one choice finishes and which of its text may be emitted: stop token ids and EOS (unless
// ignoreEos) → 'stop' without the token's text; stop strings matched on the detokenized text across token
// boundaries → 'stop', text cut at the match; maxTokens → 'length'.
// Invariant: emitted text never contains any part of a matched stop string (unless includeStopStrInOutput);
// text that might begin a stop string is held back until it cannot, and the result depends only on the
// text, not on how tokens split it. Must not: decode ids itself or look at logits.
import type { SamplingParams } from './sampling-params.js';

export type StopParams = Pick<SamplingParams, 'stop' | 'stopTokenIds' | 'ignoreEos' | 'maxTokens' | 'includeStopStrInOutput'>;

export type FinishReason = 'stop' | 'length';

/** Where the text of each token comes from: an IncrementalDetokenizer (src/tokenizer/detokenizer.ts) fits. */
export interface TokenTextSource {
  /** Feeds one id; returns the text that became decodable. */
  push(id: number): string;
  /** Ends the stream; returns any text still held (e.g. U+FFFD for an unfinished UTF-8 character). */
  flush(): string;
}

export interface StopUpdate {
  /** Text safe to emit now ('' while everything new is held back). */
  text: string;
  /** Set on the last update of the choice. */
  finishReason: FinishReason | null;
  /** vLLM's stop_reason: the matched stop string or stop token id; null for EOS, length, or running. */
  stopReason: string | number | null;
}

export class StopChecker {
  private readonly stops: readonly string[];
  private readonly stopIds: ReadonlySet<number>;
  private readonly eosIds: ReadonlySet<number>;
  private readonly maxHold: number; // longest stop string − 1 (UTF-16 units)
  private pending = ''; // held-back text: the longest suffix that is a proper prefix of a stop string
  private numGenerated = 0;
  private done = false;

  constructor(
    private readonly params: StopParams,
    eosTokenIds: readonly number[] = [],
  ) {
    if (params.stop.some((s) => s.length === 0)) throw new Error('StopChecker: empty stop string');
    this.stops = params.stop;
    this.stopIds = new Set(params.stopTokenIds);
    this.eosIds = new Set(params.ignoreEos ? [] : eosTokenIds);
    this.maxHold = Math.max(0, ...params.stop.map((s) => s.length - 1));
  }

  get finished(): boolean {
    return this.done;
  }

  get numGeneratedTokens(): number {
    return this.numGenerated;
  }

  /** The characters currently held back (for tests and debugging). */
  get heldText(): string {
    return this.pending;
  }

  /**
   * One generated token. A stop/EOS token is not pushed to `source` (its text is never emitted); a
   * finishing token flushes `source`, and the held-back text is released when no stop string matched.
   */
  push(tokenId: number, source: TokenTextSource): StopUpdate {
    if (this.done) throw new Error('StopChecker: push after the choice finished');
    this.numGenerated++;
    const isEos = this.eosIds.has(tokenId);
    const isStopToken = isEos || this.stopIds.has(tokenId);
    const atLimit = this.numGenerated >= this.params.maxTokens;
    let text = isStopToken ? '' : source.push(tokenId);
    if (isStopToken || atLimit) text += source.flush();
    const buf = this.pending + text;

    const match = this.findStop(buf);
    if (match !== null) {
      const cut = this.params.includeStopStrInOutput ? match.end : match.start;
      return this.finish(buf.slice(0, cut), 'stop', match.stop);
    }
    if (isStopToken) return this.finish(buf, 'stop', isEos ? null : tokenId);
    if (atLimit) return this.finish(buf, 'length', null);

    const hold = this.holdLength(buf);
    this.pending = buf.slice(buf.length - hold);
    return { text: buf.slice(0, buf.length - hold), finishReason: null, stopReason: null };
  }

  private finish(text: string, reason: FinishReason, stopReason: string | number | null): StopUpdate {
    this.done = true;
    this.pending = '';
    return { text, finishReason: reason, stopReason };
  }

  /**
   * The stop occurrence that would complete first if the text arrived one character at a time: the
   * earliest end, ties → the earliest start (the longer string). This makes the outcome independent of
   * token boundaries and of the order of the stop list. O(|buf| · #stops) with indexOf; buf is at most
   * the longest stop string plus one token's text, since everything older was already released.
   */
  private findStop(buf: string): { start: number; end: number; stop: string } | null {
    let best: { start: number; end: number; stop: string } | null = null;
    for (const stop of this.stops) {
      const start = buf.indexOf(stop);
      if (start < 0) continue;
      const end = start + stop.length;
      if (best === null || end < best.end || (end === best.end && start < best.start)) best = { start, end, stop };
    }
    return best;
  }

  /** Length of the longest suffix of buf that is a proper prefix of some stop string (0 if none). */
  private holdLength(buf: string): number {
    const from = Math.max(0, buf.length - this.maxHold);
    for (let i = from; i < buf.length; i++) {
      const tail = buf.slice(i);
      for (const stop of this.stops) {
        if (stop.length > tail.length && stop.charCodeAt(0) === tail.charCodeAt(0) && stop.startsWith(tail)) {
          return buf.length - i;
        }
      }
    }
    return 0;
  }
}
