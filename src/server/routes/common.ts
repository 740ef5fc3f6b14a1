// Scaffolding shared by the generation routes: registering a request in flight with its abort wiring
// (client disconnect → AbortController → engine), and running a streaming producer behind an SSE
// response with error events and guaranteed cleanup. Invariant: `end()` of the in-flight registration
// runs exactly once, when the response is complete or abandoned. Must not: build OpenAI chunks.
import type { Context } from 'hono';
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
