// The engine's worker thread: owns an in-process Engine (model, KV pool, backend) and runs its loop, so
// forward steps never block the thread that serves HTTP and handles signals. Speaks the messages of
// threaded-engine.ts. Invariant: every 'generate' gets exactly one terminal message ('end' or 'error'),
// and every message carries a fresh stats/health snapshot. Must not: be imported by anything but the
// Worker constructor.
import { parentPort, workerData } from 'node:worker_threads';
import { Engine } from './engine.js';
import { EngineRequestError, type GenerateRequest } from './engine-client.js';
import type { EngineOptions } from './engine-options.js';
import type { FromWorker, ToWorker } from './threaded-engine.js';
import { isUserError } from '../errors.js';

const port = parentPort!;
let engine: Engine;

function post(msg: FromWorker): void {
  port.postMessage({ ...msg, stats: engine.stats(), health: engine.health() });
}

async function serveRequest(req: Omit<GenerateRequest, 'signal'>): Promise<void> {
  try {
    for await (const ev of engine.generate(req)) post({ type: 'event', requestId: req.requestId, event: ev });
    post({ type: 'end', requestId: req.requestId });
  } catch (e) {
    const code = e instanceof EngineRequestError ? e.code : null;
    post({ type: 'error', requestId: req.requestId, code, message: e instanceof Error ? e.message : String(e) });
  }
}

try {
  engine = await Engine.create(workerData as EngineOptions);
} catch (e) {
  port.postMessage({ type: 'init-error', message: e instanceof Error ? e.message : String(e), userError: isUserError(e) });
  process.exit(0);
}

port.postMessage({
  type: 'ready',
  info: {
    modelName: engine.modelName,
    modelSource: engine.modelSource,
    maxModelLen: engine.maxModelLen,
    vocabSize: engine.vocabSize,
    eosTokenIds: [...engine.eosTokenIds],
    generationDefaults: engine.generationDefaults,
    limits: engine.limits,
  },
  stats: engine.stats(),
  health: engine.health(),
});

// Between steps the loop yields, so this heartbeat reports progress (and a stuck step shows as silence).
const heartbeat = setInterval(() => post({ type: 'heartbeat' }), 200);

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'generate') void serveRequest(msg.request);
  else if (msg.type === 'abort') engine.abort(msg.requestId);
  else if (msg.type === 'shutdown') {
    clearInterval(heartbeat);
    void engine.shutdown().then(() => {
      port.postMessage({ type: 'shutdown-done' });
      port.close();
    });
  }
});
