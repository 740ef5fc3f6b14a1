// Prometheus metrics of the server (prom-client, on a Registry of our own, never the global one), named
// after vLLM's with the `longctx:` prefix so existing dashboards work, plus what no peer has: prefill
// progress of in-flight requests, admission rejections by reason, KV blocks, tokenization time.
// Invariant: engine-owned gauges and cumulative counters are read from engine.stats() at scrape time (no
// timers). Must not: hold per-request state (the request recorder in generation.ts does).
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { EngineClient } from '../engine/engine-client.js';

const TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560];
const ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680];
const TOKENIZE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** 1, 2, 5, 10, 20, 50, ... up to and including the first value >= max (vLLM's token-count buckets). */
function buckets125(max: number): number[] {
  const out: number[] = [];
  for (let scale = 1; ; scale *= 10) {
    for (const m of [1, 2, 5]) {
      out.push(m * scale);
      if (m * scale >= max) return out;
    }
  }
}

export type RejectReason = 'queue_requests' | 'queue_tokens' | 'context_length' | 'draining';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  readonly requestSuccess: Counter<'finished_reason'>;
  readonly requestRejected: Counter<'reason'>;
  readonly ttft: Histogram;
  readonly itl: Histogram;
  readonly e2e: Histogram;
  readonly queueTime: Histogram;
  readonly prefillTime: Histogram;
  readonly decodeTime: Histogram;
  readonly requestPromptTokens: Histogram;
  readonly requestGenerationTokens: Histogram;
  readonly tokenizationTime: Histogram;
  /** Reads engine.stats() into the engine-owned gauges and counters (once per scrape). */
  private readonly refresh: () => void;

  constructor(
    engine: EngineClient,
    modelName: string,
    /** Server-side admission queue (requests accepted but not yet scheduled by the engine). */
    queued: () => { numRequests: number; numTokens: number },
  ) {
    const registers = [this.registry];
    this.registry.setDefaultLabels({ model_name: modelName });
    const counter = <L extends string = never>(name: string, help: string, labelNames: L[] = []) =>
      new Counter<L>({ name: `longctx:${name}`, help, labelNames, registers });
    const histogram = (name: string, help: string, buckets: number[]) => new Histogram({ name: `longctx:${name}`, help, buckets, registers });

    // Everything read from the engine is refreshed by the first gauge's collect(), once per scrape.
    let last = { preemptions: 0, queries: 0, hits: 0 };
    const preemptions = counter('num_preemptions_total', 'Cumulative number of preemptions from the engine.');
    const prefixQueries = counter('prefix_cache_queries_total', 'Prompt tokens looked up in the prefix cache.');
    const prefixHits = counter('prefix_cache_hits_total', 'Prompt tokens found in the prefix cache.');
    const gauge = (name: string, help: string, labelNames: string[] = []) => new Gauge({ name: `longctx:${name}`, help, labelNames, registers });
    const running = gauge('num_requests_running', 'Number of requests in model execution batches.');
    const waiting = gauge('num_requests_waiting', 'Number of requests waiting to be processed.');
    const kvUsage = gauge('kv_cache_usage_perc', 'KV-cache usage. 1 means 100 percent usage.');
    const blocksUsed = gauge('kv_cache_blocks_used', 'KV-cache blocks referenced by requests.');
    const blocksTotal = gauge('kv_cache_blocks_total', 'KV-cache blocks in the pool.');
    const prefillProgress = gauge('request_prefill_progress', 'Fraction of the prompt prefilled, per in-flight request in prefill.', ['request_id']);
    const prefillRemaining = gauge('num_prefill_tokens_remaining', 'Prompt tokens still to prefill over all in-flight requests.');
    const sinceProgress = gauge('engine_seconds_since_progress', 'Seconds since the engine loop last made progress or idled.');
    const queuedRequests = gauge('num_requests_queued', 'Requests admitted by the server and not yet scheduled by the engine.');
    const queuedTokens = gauge('num_queued_prompt_tokens', 'Prompt tokens of the requests counted by num_requests_queued.');
    const refresh = () => {
      const s = engine.stats();
      running.set(s.numRequestsRunning);
      waiting.set(s.numRequestsWaiting);
      kvUsage.set(s.numKvBlocksTotal > 0 ? s.numKvBlocksUsed / s.numKvBlocksTotal : 0);
      blocksUsed.set(s.numKvBlocksUsed);
      blocksTotal.set(s.numKvBlocksTotal);
      prefillProgress.reset();
      let remaining = 0;
      for (const p of s.prefill) {
        prefillProgress.set({ request_id: p.requestId }, p.numPromptTokens > 0 ? p.numComputedPromptTokens / p.numPromptTokens : 1);
        remaining += p.numPromptTokens - p.numComputedPromptTokens;
      }
      prefillRemaining.set(remaining);
      sinceProgress.set(engine.health().msSinceProgress / 1000);
      const q = queued();
      queuedRequests.set(q.numRequests);
      queuedTokens.set(q.numTokens);
      // Mirror the engine's cumulative totals into counters (they only move forward).
      const now = { preemptions: s.numPreemptionsTotal, queries: s.prefixCacheQueriesTotal, hits: s.prefixCacheHitsTotal };
      if (now.preemptions > last.preemptions) preemptions.inc(now.preemptions - last.preemptions);
      if (now.queries > last.queries) prefixQueries.inc(now.queries - last.queries);
      if (now.hits > last.hits) prefixHits.inc(now.hits - last.hits);
      last = now;
    };
    this.refresh = refresh;

    this.promptTokens = counter('prompt_tokens_total', 'Number of prefill tokens processed.');
    this.generationTokens = counter('generation_tokens_total', 'Number of generation tokens processed.');
    this.requestSuccess = counter('request_success_total', 'Count of successfully processed requests (per choice).', ['finished_reason']);
    this.requestRejected = counter('request_rejected_total', 'Requests refused at admission, by reason.', ['reason']);
    this.ttft = histogram('time_to_first_token_seconds', 'Histogram of time to first token in seconds.', TTFT_BUCKETS);
    this.itl = histogram('inter_token_latency_seconds', 'Histogram of inter-token latency in seconds.', ITL_BUCKETS);
    this.e2e = histogram('e2e_request_latency_seconds', 'Histogram of end to end request latency in seconds.', LATENCY_BUCKETS);
    this.queueTime = histogram('request_queue_time_seconds', 'Histogram of time spent in the waiting queue in seconds.', LATENCY_BUCKETS);
    this.prefillTime = histogram('request_prefill_time_seconds', 'Histogram of time spent in prefill in seconds.', LATENCY_BUCKETS);
    this.decodeTime = histogram('request_decode_time_seconds', 'Histogram of time spent in decode in seconds.', LATENCY_BUCKETS);
    const tokenBuckets = buckets125(engine.maxModelLen);
    this.requestPromptTokens = histogram('request_prompt_tokens', 'Number of prefill tokens processed, per request.', tokenBuckets);
    this.requestGenerationTokens = histogram('request_generation_tokens', 'Number of generation tokens processed, per request.', tokenBuckets);
    this.tokenizationTime = histogram('tokenization_time_seconds', 'Time to render and tokenize a prompt, per request.', TOKENIZE_BUCKETS);
    for (const r of ['queue_requests', 'queue_tokens', 'context_length', 'draining'] satisfies RejectReason[]) this.requestRejected.inc({ reason: r }, 0);
    for (const r of ['stop', 'length', 'abort', 'tool_calls']) this.requestSuccess.inc({ finished_reason: r }, 0);
  }

  /** The text exposition of every metric (engine gauges read now). */
  async render(): Promise<{ contentType: string; body: string }> {
    this.refresh();
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
