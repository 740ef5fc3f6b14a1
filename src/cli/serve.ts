// `longctx serve`: the OpenAI-compatible HTTP server, with vLLM's flag names. Owns flag parsing and
// validation (flags we do not implement yet fail with one line, never silently ignored), the pino logger,
// the engine factory (createEngineFromOptions: the worker-thread engine, or the fake one for tests) and the startup line
// `longctx: serving <name> on http://HOST:PORT` on stdout. Must not: contain server logic (src/server/).
import { Command, InvalidArgumentError, Option } from 'commander';
import pino from 'pino';
import type { EngineClient } from '../engine/engine-client.js';
import { FakeEngine, type FakeEngineOptions } from '../engine/fake-engine.js';
import { DEMO_NOTICE, ensureDemoModel } from '../engine/demo-model.js';
import { ThreadedEngine } from '../engine/threaded-engine.js';
import { resolveBackendKind } from '../engine/engine-backend.js';
import { UserError } from '../errors.js';
import { startServer } from '../server/lifecycle.js';

export interface ServeOptions {
  model?: string;
  host: string;
  port: number;
  servedModelName?: string[];
  apiKey?: string;
  maxModelLen?: number | 'auto';
  maxNumBatchedTokens?: number;
  maxNumSeqs?: number;
  kvCacheMemoryBytes?: number;
  enablePrefixCaching: boolean;
  gpuMemoryUtilization?: number;
  enforceEager: boolean;
  device: 'auto' | 'cpu' | 'cuda';
  tensorParallelSize: number;
  kvCacheDtype: string;
  quantization?: string;
  shutdownTimeout: number; // seconds
  maxQueuedRequests: number;
  maxQueuedTokens: number;
  keepAliveInterval: number; // seconds
  maxBodyBytes: number;
  engineStallTimeout: number; // seconds
  logLevel: string;
  fakeEngine: boolean;
  fakeEngineOptions?: FakeEngineOptions;
}

const int = (min: number) => (v: string) => {
  if (!/^-?\d+$/.test(v) || !Number.isSafeInteger(Number(v)) || Number(v) < min) throw new InvalidArgumentError(`must be an integer >= ${min}`);
  return Number(v);
};
const seconds = (v: string) => {
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x) || x < 0) throw new InvalidArgumentError('must be a number of seconds >= 0');
  return x;
};
const fraction = (v: string) => {
  const x = Number(v);
  if (!Number.isFinite(x) || x <= 0 || x > 1) throw new InvalidArgumentError('must be a number in (0, 1]');
  return x;
};
const maxModelLen = (v: string) => (v === 'auto' ? 'auto' : int(1)(v));
const json = (v: string) => {
  try {
    return JSON.parse(v) as FakeEngineOptions;
  } catch {
    throw new InvalidArgumentError('must be a JSON object');
  }
};

/** Refuses flags whose feature does not exist yet, in one line each. */
export function checkUnimplementedFlags(o: ServeOptions): void {
  if (o.tensorParallelSize > 1) throw new UserError(`--tensor-parallel-size ${o.tensorParallelSize} is not implemented yet: only 1 is supported`);
  if (o.kvCacheDtype.startsWith('fp8')) throw new UserError(`--kv-cache-dtype ${o.kvCacheDtype} is not implemented yet: use auto`);
  if (o.quantization !== undefined) throw new UserError(`--quantization ${o.quantization} is not implemented yet: serve unquantized weights`);
  if (o.gpuMemoryUtilization !== undefined && !o.fakeEngine && resolveBackendKind(o.device) !== 'cuda') {
    throw new UserError('--gpu-memory-utilization applies to --device cuda only; on the CPU size the KV cache with --kv-cache-memory-bytes');
  }
}

/**
 * Builds the engine the server talks to: the in-process engine over --model (or the built-in demo model
 * when absent) with the scheduler limits of the flags, or the fake engine for tests.
 */
export async function createEngineFromOptions(opts: ServeOptions): Promise<EngineClient> {
  if (opts.fakeEngine) {
    return new FakeEngine({
      ...(opts.maxModelLen !== undefined && opts.maxModelLen !== 'auto' ? { maxModelLen: opts.maxModelLen } : {}),
      ...(opts.maxNumSeqs !== undefined ? { maxNumSeqs: opts.maxNumSeqs } : {}),
      ...(opts.maxNumBatchedTokens !== undefined ? { prefillChunkTokens: opts.maxNumBatchedTokens } : {}),
      enablePrefixCaching: opts.enablePrefixCaching,
      ...opts.fakeEngineOptions,
    });
  }
  let model = opts.model;
  if (model === undefined) {
    process.stderr.write(`${DEMO_NOTICE}\n`);
    model = await ensureDemoModel();
  }
  // The engine runs in a worker thread: HTTP, keep-alives and signals never wait for a forward step.
  return ThreadedEngine.create({
    model,
    progress: process.stderr.isTTY === true,
    backend: opts.device,
    enablePrefixCaching: opts.enablePrefixCaching,
    ...(opts.gpuMemoryUtilization !== undefined ? { gpuMemoryUtilization: opts.gpuMemoryUtilization } : {}),
    enforceEager: opts.enforceEager,
    ...(opts.maxModelLen !== undefined ? { maxModelLen: opts.maxModelLen } : {}),
    ...(opts.maxNumBatchedTokens !== undefined ? { maxNumBatchedTokens: opts.maxNumBatchedTokens } : {}),
    ...(opts.maxNumSeqs !== undefined ? { maxNumSeqs: opts.maxNumSeqs } : {}),
    ...(opts.kvCacheMemoryBytes !== undefined ? { kvCacheMemoryBytes: opts.kvCacheMemoryBytes } : {}),
  });
}

export async function serve(opts: ServeOptions): Promise<void> {
  checkUnimplementedFlags(opts);
  const logger = pino(
    { name: 'longctx', level: opts.logLevel, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: 2, sync: true }),
  );
  // A stray rejection must not take every in-flight request down with it: log it and keep serving.
  process.on('unhandledRejection', (e) => logger.error({ err: e }, 'unhandled promise rejection'));
  const engine = await createEngineFromOptions(opts);
  const running = await startServer(engine, {
    host: opts.host,
    port: opts.port,
    servedModelNames: opts.servedModelName ?? [],
    apiKey: opts.apiKey ?? process.env.LONGCTX_API_KEY ?? null,
    maxBodyBytes: opts.maxBodyBytes,
    keepAliveIntervalMs: opts.keepAliveInterval * 1000,
    maxQueuedRequests: opts.maxQueuedRequests,
    maxQueuedTokens: opts.maxQueuedTokens,
    engineStallTimeoutMs: opts.engineStallTimeout * 1000,
    shutdownTimeoutMs: opts.shutdownTimeout * 1000,
    logger,
    handleSignals: true,
  });
  logger.info({ url: running.url, model: running.runtime.modelName, maxModelLen: engine.maxModelLen }, 'listening');
  if (engine instanceof ThreadedEngine && engine.limits) {
    const l = engine.limits;
    const mib = (l.numKvBlocks * l.blockSize * l.kvBytesPerToken) / 1024 ** 2;
    process.stderr.write(
      `longctx: KV cache ${l.numKvBlocks} blocks x ${l.blockSize} tokens = ${l.numKvBlocks * l.blockSize} tokens (${mib.toFixed(0)} MiB); ` +
        `device ${l.backend ?? 'cpu'}, max_model_len ${l.maxModelLen}, max_num_seqs ${l.maxNumSeqs}, max_num_batched_tokens ${l.maxNumBatchedTokens}, prefix caching ${l.enablePrefixCaching ? 'on' : 'off'}\n`,
    );
  }
  process.stdout.write(`longctx: serving ${running.runtime.modelName} on ${running.url}\n`);
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve a model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /metrics, ...)')
    .option('--model <dir>', 'model directory (default: the built-in demo model)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .addOption(new Option('--port <n>', 'port (0 picks a free one; the address is printed)').argParser(int(0)).default(8000))
    .option('--served-model-name <names...>', 'model name(s) accepted in requests; the first is reported (default: the model directory name)')
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on /v1/*, /tokenize and /detokenize (default: $LONGCTX_API_KEY)')
    .addOption(new Option('--max-model-len <n|auto>', 'largest prompt + completion tokens per request').argParser(maxModelLen))
    .addOption(new Option('--max-num-batched-tokens <n>', 'token budget per engine step (prefill chunk size)').argParser(int(1)))
    .addOption(new Option('--max-num-seqs <n>', 'requests running at once').argParser(int(1)))
    .addOption(new Option('--kv-cache-memory-bytes <n>', 'bytes of KV cache to allocate (host memory on the CPU backend; default 1 GiB)').argParser(int(1)))
    .option('--enable-prefix-caching', 'reuse KV blocks of shared prompt prefixes', true)
    .option('--no-enable-prefix-caching', 'disable prefix caching')
    .addOption(new Option('--device <name>', 'compute backend (auto: cuda when a GPU and the CUDA addon are there, else cpu)').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .addOption(new Option('--gpu-memory-utilization <f>', 'fraction of the GPU memory the engine may use (--device cuda; default 0.9)').argParser(fraction))
    .option('--enforce-eager', 'CUDA: run decode steps op by op instead of as CUDA graphs', false)
    .addOption(new Option('--tensor-parallel-size <n>', 'GPUs to shard the model over (only 1 for now)').argParser(int(1)).default(1))
    .addOption(new Option('--kv-cache-dtype <dtype>', 'KV cache dtype (fp8 not implemented yet)').choices(['auto', 'bfloat16', 'fp8', 'fp8_e4m3', 'fp8_e5m2']).default('auto'))
    .option('--quantization <method>', 'weight quantization (not implemented yet)')
    .addOption(new Option('--shutdown-timeout <s>', 'on SIGTERM, seconds to let in-flight requests finish before aborting them').argParser(seconds).default(30))
    .addOption(new Option('--max-queued-requests <n>', 'requests waiting for the engine before new ones get 429').argParser(int(1)).default(1024))
    .addOption(new Option('--max-queued-tokens <n>', 'prompt tokens waiting for the engine before new requests get 429').argParser(int(1)).default(8 * 1024 * 1024))
    .addOption(new Option('--keep-alive-interval <s>', 'SSE comment ": keep-alive" after this many seconds without output (0: never)').argParser(seconds).default(10))
    .addOption(new Option('--max-body-bytes <n>', 'largest request body; larger gets 413').argParser(int(1)).default(64 * 1024 * 1024))
    .addOption(new Option('--engine-stall-timeout <s>', '/health answers 503 when the engine has work and made no progress for this long').argParser(seconds).default(120))
    .addOption(new Option('--log-level <level>', 'JSON log level on stderr').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addOption(new Option('--fake-engine', 'serve the deterministic fake engine (tests)').hideHelp().default(false))
    .addOption(new Option('--fake-engine-options <json>', 'FakeEngineOptions as JSON (tests)').hideHelp().argParser(json))
    .action(async (o: ServeOptions) => {
      await serve(o);
    });
}
