// Soak benchmark (not part of npm test): `longctx serve` over the real engine with the tiny random-weight
// model, hammered by N requests at concurrency C (mixed chat / completions, streamed and not, various
// max_tokens, n, stop strings, logprobs, sampled and greedy, a share of prompts with common prefixes).
// Checks: every request answered 200 with a well-formed body (SSE framing included), the KV pool fully
// free after the load (/metrics), the metrics' token counters equal to the sum of the responses' usage,
// no error logged, a clean SIGTERM exit; reports the server's RSS (/proc/PID/status VmRSS) at start, at
// the checkpoint and at the end. Prints one table; exits 1 if any check failed.
// Usage: npm run bench:soak [-- --requests 2000 --concurrency 32 --checkpoint 500 --seed 1]
import { modelDir } from '../test/helpers/models.js';
import { metricValue, readBody, rssKiB, scrape, spawnServe, sseData, waitForMetrics, type ServeProcess } from '../test/e2e/serve-process.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : dflt;
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${name} must be a non-negative integer`);
  return v;
}

const NUM_REQUESTS = arg('requests', 2000);
const CONCURRENCY = arg('concurrency', 32);
const CHECKPOINT = Math.min(arg('checkpoint', 500), NUM_REQUESTS);
const SEED = arg('seed', 1);
const MAX_MODEL_LEN = 1024;

// ------------------------------------------------------------------ the request mix

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = 'alpha beta gamma delta river stone cloud paper engine window garden silver number quiet bright long context token cache block'.split(' ');
function words(rand: () => number, n: number): string {
  return Array.from({ length: n }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(' ');
}

interface Spec {
  i: number;
  kind: 'chat' | 'completions';
  stream: boolean;
  body: Record<string, unknown>;
  n: number;
  maxTokens: number;
  shared: boolean;
}

function makeSpecs(count: number, seed: number): Spec[] {
  const rand = mulberry32(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
  const prefixRand = mulberry32(seed ^ 0x9e3779b9);
  const prefixes = Array.from({ length: 4 }, (_, k) => `Document ${k}. ${words(prefixRand, 120 + 40 * k)}\n\n`);
  const specs: Spec[] = [];
  for (let i = 0; i < count; i++) {
    const kind = rand() < 0.5 ? 'chat' : 'completions';
    const stream = rand() < 0.5;
    const maxTokens = pick([1, 2, 8, 16, 32, 48, 64, 96]);
    const shared = rand() < 0.5;
    const text = `${shared ? pick(prefixes) : ''}Question ${i}: ${words(rand, 3 + Math.floor(rand() * 30))}?`;
    const n = rand() < 0.1 ? 2 : 1;
    const body: Record<string, unknown> = { max_tokens: maxTokens };
    if (rand() < 0.5) body.temperature = 0;
    else Object.assign(body, { temperature: 0.8, seed: i });
    if (rand() < 0.5) body.ignore_eos = true;
    if (n > 1) body.n = n;
    if (rand() < 0.1) body.stop = [pick(['e', 'a', '.', 'the', 'zzzz'])];
    if (rand() < 0.1) {
      if (kind === 'chat') Object.assign(body, { logprobs: true, top_logprobs: 2 });
      else body.logprobs = 2;
    }
    if (stream) Object.assign(body, { stream: true, stream_options: { include_usage: true } });
    if (kind === 'chat') body.messages = shared ? [{ role: 'system', content: text.slice(0, text.indexOf('Question')) }, { role: 'user', content: text.slice(text.indexOf('Question')) }] : [{ role: 'user', content: text }];
    else body.prompt = text;
    specs.push({ i, kind, stream, body, n, maxTokens, shared });
  }
  return specs;
}

// ------------------------------------------------------------------ running and validating one request

interface Outcome {
  ok: boolean;
  error?: string;
  ms: number;
  ttftMs: number | null;
  promptTokens: number;
  completionTokens: number;
  finish: string[];
}

function validateChoices(spec: Spec, finish: (string | null)[], usage: Json): string | null {
  if (finish.length !== spec.n) return `expected ${spec.n} choices, got ${finish.length}`;
  if (!finish.every((f) => f === 'stop' || f === 'length')) return `bad finish reasons ${JSON.stringify(finish)}`;
  if (!usage || !Number.isInteger(usage.prompt_tokens) || !Number.isInteger(usage.completion_tokens)) return 'no usage';
  if (usage.total_tokens !== usage.prompt_tokens + usage.completion_tokens) return 'usage.total_tokens is not the sum';
  if (usage.completion_tokens < spec.n || usage.completion_tokens > spec.n * spec.maxTokens) return `completion_tokens ${usage.completion_tokens} outside [${spec.n}, ${spec.n * spec.maxTokens}]`;
  if (spec.body.ignore_eos && !spec.body.stop && usage.completion_tokens !== spec.n * spec.maxTokens) return `ignore_eos yet ${usage.completion_tokens} tokens, not ${spec.n * spec.maxTokens}`;
  return null;
}

async function runOne(url: string, spec: Spec): Promise<Outcome> {
  const t0 = performance.now();
  const fail = (error: string): Outcome => ({ ok: false, error: `#${spec.i} ${spec.kind}${spec.stream ? ' stream' : ''}: ${error}`, ms: performance.now() - t0, ttftMs: null, promptTokens: 0, completionTokens: 0, finish: [] });
  let res: Response;
  try {
    res = await fetch(`${url}/v1/${spec.kind === 'chat' ? 'chat/completions' : 'completions'}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(spec.body),
    });
  } catch (e) {
    return fail(`fetch failed: ${(e as Error).message}`);
  }
  if (res.status !== 200) return fail(`HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`);
  if (!spec.stream) {
    const body = (await res.json()) as Json;
    const finish = (body.choices ?? []).map((c: Json) => c.finish_reason);
    const bad = validateChoices(spec, finish, body.usage);
    if (bad) return fail(bad);
    return { ok: true, ms: performance.now() - t0, ttftMs: null, promptTokens: body.usage.prompt_tokens, completionTokens: body.usage.completion_tokens, finish };
  }
  if (!/^text\/event-stream/.test(res.headers.get('content-type') ?? '')) return fail(`content-type ${res.headers.get('content-type')}`);
  // Read incrementally to time the first token, keeping the exact bytes.
  const reader = res.body!.getReader();
  const chunks: Uint8Array[] = [];
  let ttftMs: number | null = null;
  let sawContent = false;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    if (!sawContent) {
      const s = Buffer.from(value).toString('utf8');
      if (/"(content|text)":"[^"]/.test(s)) {
        sawContent = true;
        ttftMs = performance.now() - t0;
      }
    }
  }
  let raw: string;
  try {
    raw = await readBody(new Response(Buffer.concat(chunks)));
  } catch {
    return fail('the stream is not valid UTF-8');
  }
  if (!/^(?:(?::[^\n]*|data: \{[^\n]*\})\n\n)+data: \[DONE\]\n\n$/.test(raw)) return fail(`bad SSE framing: ${JSON.stringify(raw.slice(-200))}`);
  const events = sseData(raw).slice(0, -1).map((d) => JSON.parse(d) as Json);
  if (events.some((e) => e.error)) return fail(`error event: ${JSON.stringify(events.find((e) => e.error))}`);
  if (new Set(events.map((e) => e.id)).size !== 1) return fail('chunks carry different ids');
  const last = events.at(-1);
  if (!Array.isArray(last.choices) || last.choices.length !== 0) return fail('no final usage chunk with choices: []');
  const finish: (string | null)[] = Array.from({ length: spec.n }, () => null);
  for (const e of events.slice(0, -1)) {
    if (e.usage !== null) return fail('a chunk before the usage chunk has usage != null');
    for (const c of e.choices) if (c.finish_reason) finish[c.index] = c.finish_reason;
  }
  const bad = validateChoices(spec, finish, last.usage);
  if (bad) return fail(bad);
  return { ok: true, ms: performance.now() - t0, ttftMs, promptTokens: last.usage.prompt_tokens, completionTokens: last.usage.completion_tokens, finish: finish as string[] };
}

async function runPhase(url: string, specs: Spec[], concurrency: number): Promise<{ outcomes: Outcome[]; wallS: number }> {
  const outcomes: Outcome[] = new Array(specs.length);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, specs.length) }, async () => {
      while (next < specs.length) {
        const k = next++;
        outcomes[k] = await runOne(url, specs[k]!);
      }
    }),
  );
  return { outcomes, wallS: (performance.now() - t0) / 1000 };
}

// ------------------------------------------------------------------ reporting

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
const fmt = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-');
const mib = (kib: number) => (kib / 1024).toFixed(1);

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n');
}

interface Snapshot {
  label: string;
  done: number;
  rssKiB: number;
  kvUsed: number;
  kvTotal: number;
  settled: boolean;
}

async function snapshot(srv: ServeProcess, label: string, done: number): Promise<Snapshot> {
  // The pool must drain once no request is in flight; give the engine a moment to finish its last step.
  const w = await waitForMetrics(
    srv.url,
    (m) =>
      metricValue(m, 'longctx:kv_cache_blocks_used') === 0 &&
      metricValue(m, 'longctx:num_requests_running') === 0 &&
      metricValue(m, 'longctx:num_requests_waiting') === 0 &&
      metricValue(m, 'longctx:num_requests_queued') === 0,
    10_000,
    20,
  );
  return {
    label,
    done,
    rssKiB: rssKiB(srv.pid),
    kvUsed: metricValue(w.text, 'longctx:kv_cache_blocks_used'),
    kvTotal: metricValue(w.text, 'longctx:kv_cache_blocks_total'),
    settled: w.ok,
  };
}

// ------------------------------------------------------------------ main

async function main(): Promise<number> {
  const model = modelDir('tiny', 1, 'f32');
  const srv = await spawnServe(['--model', model, '--port', '0', '--max-model-len', String(MAX_MODEL_LEN), '--max-num-seqs', String(CONCURRENCY), '--log-level', 'warn']);
  const checks: [string, boolean, string][] = [];
  try {
    console.log(`longctx soak: ${NUM_REQUESTS} requests at concurrency ${CONCURRENCY} against ${srv.url} (pid ${srv.pid}, model ${srv.modelName}, --max-model-len ${MAX_MODEL_LEN})`);
    const specs = makeSpecs(NUM_REQUESTS, SEED);
    const m0 = await scrape(srv.url);
    const snaps: Snapshot[] = [await snapshot(srv, 'start', 0)];
    const phases: { label: string; outcomes: Outcome[]; wallS: number }[] = [];
    // Peaks while the load runs (one scrape every 100 ms), to show the concurrency was real.
    const peak = { running: 0, waiting: 0, kvUsage: 0, queued: 0 };
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const m = await scrape(srv.url).catch(() => null);
        if (m) {
          peak.running = Math.max(peak.running, metricValue(m, 'longctx:num_requests_running'));
          peak.waiting = Math.max(peak.waiting, metricValue(m, 'longctx:num_requests_waiting'));
          peak.kvUsage = Math.max(peak.kvUsage, metricValue(m, 'longctx:kv_cache_usage_perc'));
          peak.queued = Math.max(peak.queued, metricValue(m, 'longctx:num_requests_queued'));
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const bounds = CHECKPOINT > 0 && CHECKPOINT < NUM_REQUESTS ? [0, CHECKPOINT, NUM_REQUESTS] : [0, NUM_REQUESTS];
    for (let p = 0; p + 1 < bounds.length; p++) {
      const [from, to] = [bounds[p]!, bounds[p + 1]!];
      const r = await runPhase(srv.url, specs.slice(from, to), CONCURRENCY);
      phases.push({ label: `requests ${from + 1}-${to}`, ...r });
      snaps.push(await snapshot(srv, `after ${to}`, to));
      process.stderr.write(`  ${to}/${NUM_REQUESTS} done in ${r.wallS.toFixed(1)} s\n`);
    }
    sampling = false;
    await sampler;
    const m1 = await scrape(srv.url);
    const all = phases.flatMap((p) => p.outcomes);
    const failed = all.filter((o) => !o.ok);

    // ---- the table
    const rows: string[][] = [['phase', 'requests', 'ok', 'failed', 'wall s', 'req/s', 'gen tok/s', 'p50 ms', 'p95 ms', 'p99 ms', 'TTFT p50', 'TTFT p95']];
    for (const p of phases) {
      const ok = p.outcomes.filter((o) => o.ok);
      const ms = ok.map((o) => o.ms);
      const ttft = ok.flatMap((o) => (o.ttftMs === null ? [] : [o.ttftMs]));
      const tokens = ok.reduce((a, o) => a + o.completionTokens, 0);
      rows.push([p.label, String(p.outcomes.length), String(ok.length), String(p.outcomes.length - ok.length), fmt(p.wallS, 1), fmt(p.outcomes.length / p.wallS, 1), fmt(tokens / p.wallS), fmt(quantile(ms, 0.5)), fmt(quantile(ms, 0.95)), fmt(quantile(ms, 0.99)), fmt(quantile(ttft, 0.5)), fmt(quantile(ttft, 0.95))]);
    }
    console.log(`\n${table(rows)}\n`);
    const memRows: string[][] = [['checkpoint', 'completed', 'RSS MiB', 'KV blocks used', 'KV blocks total', 'settled']];
    for (const s of snaps) memRows.push([s.label, String(s.done), mib(s.rssKiB), String(s.kvUsed), String(s.kvTotal), s.settled ? 'yes' : 'NO']);
    console.log(`${table(memRows)}\n`);

    const count = (pred: (s: Spec) => boolean) => specs.filter(pred).length;
    const finishes = all.flatMap((o) => o.finish);
    const queries = metricValue(m1, 'longctx:prefix_cache_queries_total') - metricValue(m0, 'longctx:prefix_cache_queries_total');
    const hits = metricValue(m1, 'longctx:prefix_cache_hits_total') - metricValue(m0, 'longctx:prefix_cache_hits_total');
    console.log(
      `mix: ${count((s) => s.kind === 'chat')} chat / ${count((s) => s.kind === 'completions')} completions, ${count((s) => s.stream)} streamed, ` +
        `${count((s) => s.n > 1)} with n=2, ${count((s) => s.shared)} with a shared prefix, ${count((s) => s.body.stop !== undefined)} with stop, ` +
        `${count((s) => s.body.logprobs !== undefined)} with logprobs; finish: ${finishes.filter((f) => f === 'stop').length} stop / ${finishes.filter((f) => f === 'length').length} length`,
    );
    console.log(`peaks during the load: ${peak.running} requests running, ${peak.waiting} waiting in the engine, ${peak.queued} queued in the server, KV usage ${fmt(100 * peak.kvUsage, 1)} %`);
    console.log(`prefix cache: ${hits} of ${queries} prompt tokens hit (${fmt((100 * hits) / Math.max(1, queries), 1)} %)`);
    const rssGrowth = snaps.length > 2 ? snaps.at(-1)!.rssKiB - snaps[1]!.rssKiB : NaN;
    console.log(`RSS: start ${mib(snaps[0]!.rssKiB)} MiB, ${snaps.map((s) => `${s.label} ${mib(s.rssKiB)}`).slice(1).join(', ')} MiB; growth from the checkpoint to the end ${fmt(rssGrowth / 1024, 1)} MiB\n`);

    // ---- the checks
    const promptSum = all.reduce((a, o) => a + o.promptTokens, 0);
    const genSum = all.reduce((a, o) => a + o.completionTokens, 0);
    const genMetric = metricValue(m1, 'longctx:generation_tokens_total') - metricValue(m0, 'longctx:generation_tokens_total');
    const promptMetric = metricValue(m1, 'longctx:prompt_tokens_total') - metricValue(m0, 'longctx:prompt_tokens_total');
    const successMetric = ['stop', 'length', 'abort', 'tool_calls']
      .map((r) => metricValue(m1, 'longctx:request_success_total', { finished_reason: r }) - metricValue(m0, 'longctx:request_success_total', { finished_reason: r }))
      .reduce((a, b) => a + b, 0);
    checks.push([`all ${NUM_REQUESTS} requests answered 200 with a well-formed body`, failed.length === 0, `${failed.length} failed${failed.length ? `, first: ${failed[0]!.error}` : ''}`]);
    checks.push(['the KV pool is fully free after the load (and at every checkpoint)', snaps.every((s) => s.settled && s.kvUsed === 0), snaps.map((s) => `${s.label}: ${s.kvUsed} used`).join(', ')]);
    checks.push(['generation_tokens_total equals the sum of usage.completion_tokens', genMetric === genSum, `${genMetric} vs ${genSum}`]);
    checks.push(['prompt_tokens_total equals the sum of usage.prompt_tokens', promptMetric === promptSum, `${promptMetric} vs ${promptSum}`]);
    checks.push(['request_success_total counts every choice, none aborted', successMetric === finishes.length && metricValue(m1, 'longctx:request_success_total', { finished_reason: 'abort' }) === 0, `${successMetric} vs ${finishes.length}`]);
    checks.push(['shared prefixes hit the prefix cache', hits > 0, `${hits} tokens`]);
    const health = await fetch(`${srv.url}/health`);
    checks.push(['/health is ok after the load', health.status === 200, `HTTP ${health.status}`]);
    const errors = srv.stderr().split('\n').filter((l) => /"level":(50|60)/.test(l));
    checks.push(['no error logged by the server', errors.length === 0, errors.length ? errors[0]!.slice(0, 200) : 'none']);
    srv.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const exit = await Promise.race([srv.exited, new Promise<null>((r) => (timer = setTimeout(() => r(null), 30_000)))]);
    clearTimeout(timer);
    checks.push(['SIGTERM: the server exits 0', exit !== null && exit.code === 0, exit ? `code ${exit.code}, signal ${exit.signal}` : 'still running after 30 s']);
  } finally {
    await srv.kill();
  }
  for (const [name, ok, detail] of checks) console.log(`${ok ? 'PASS' : 'FAIL'}  ${name}  (${detail})`);
  const bad = checks.filter(([, ok]) => !ok).length;
  console.log(bad === 0 ? '\nsoak: all checks passed' : `\nsoak: ${bad} check(s) FAILED`);
  return bad === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
