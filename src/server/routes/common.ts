// Scaffolding shared by the generation routes: registering a request in flight with its abort wiring
// (client disconnect → AbortController → engine), and running a streaming producer behind an SSE
// response with error events and guaranteed cleanup. Invariant: `end()` of the in-flight registration
// runs exactly once, when the response is complete or abandoned. Must not: build OpenAI chunks.
import type { Context } from 'hono';
import type { EngineProgressEvent } from '../../engine/engine-client.js';
import { ApiError, INTERNAL_ERROR_MESSAGE, toApiError } from '../errors.js';
import type { InflightRequest, ServerRuntime } from '../runtime.js';
import { SSE_HEADERS, SseWriter } from '../sse.js';

export interface Flight {
  request: InflightRequest;
  end: () => void;
}

/** Registers the request (503 while draining) and aborts it when the client disconnects. */
export function beginFlight(c: Context, runtime: ServerRuntime, id: string): Flight {
  const flight = runtime.begin(id);
  const signal = c.req.raw.signal;
  const abort = () => flight.request.controller.abort(new Error('client disconnected'));
  if (signal.aborted) abort();
  else signal.addEventListener('abort', abort, { once: true });
  return flight;
}

/** Maps an error to an ApiError, logging it when it is a bug. */
export function apiErrorOf(runtime: ServerRuntime, e: unknown, requestId: string): ApiError {
  const mapped = toApiError(e);
  if (mapped) return mapped;
  runtime.log.error({ err: e, requestId }, 'unexpected error while generating');
  return new ApiError('internal_error', INTERNAL_ERROR_MESSAGE, null);
}

/**
 * Returns an SSE response whose events `produce` writes. Errors thrown by `produce` become one
 * `data: {"error": ...}` event followed by `data: [DONE]` (the status line is already sent).
 */
export function streamResponse(c: Context, runtime: ServerRuntime, flight: Flight, produce: (sse: SseWriter) => Promise<void>): Response {
  const sse = new SseWriter({ keepAliveIntervalMs: runtime.options.keepAliveIntervalMs, requestSignal: c.req.raw.signal });
  sse.clientGone.addEventListener('abort', () => flight.request.controller.abort(new Error('client disconnected')), { once: true });
  void (async () => {
    try {
      await produce(sse);
    } catch (e) {
      const err = apiErrorOf(runtime, e, flight.request.id);
      await sse.send(err.toJSON());
    } finally {
      await sse.done().catch(() => {});
      flight.end();
    }
  })();
  return new Response(sse.body, { status: 200, headers: { ...SSE_HEADERS, ...(runtime.draining ? { connection: 'close' } : {}) } });
}

/**
 * The body of a generation route after validation: registers the request in flight, runs `prepare`
 * (tokenize, admission), then answers with the SSE stream (which then owns the flight) or with the JSON
 * body `collect` builds. The flight ends exactly once on every path.
 */
export async function answerGeneration(
  c: Context,
  runtime: ServerRuntime,
  id: string,
  stream: boolean,
  prepare: (flight: Flight) => Promise<{ stream: (sse: SseWriter) => Promise<void>; collect: () => Promise<unknown> }>,
): Promise<Response> {
  const flight = beginFlight(c, runtime, id);
  let handedOff = false;
  try {
    const answer = await prepare(flight);
    if (stream) {
      handedOff = true;
      return streamResponse(c, runtime, flight, answer.stream);
    }
    return c.json((await answer.collect()) as object);
  } finally {
    if (!handedOff) flight.end();
  }
}

/** The opt-in `prompt_progress` chunk of a long prefill (stream_options.include_progress). */
export function progressChunk(base: object, event: EngineProgressEvent, startMs: number, tail: object, extra: object = {}): object {
  return {
    ...base,
    choices: [],
    prompt_progress: {
      ...extra,
      total_tokens: event.numPromptTokens,
      cached_tokens: event.numCachedPromptTokens,
      processed_tokens: event.numComputedPromptTokens,
      elapsed_ms: Date.now() - startMs,
    },
    ...tail,
  };
}
