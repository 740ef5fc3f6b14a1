// createApp(engine, options): the Hono application of the OpenAI-compatible server, testable in-process
// with app.request(). Wires the API-key guard, the draining gate, every route, JSON 404/405 and the error
// handler that renders the catalogue (errors.ts) and turns any unexpected exception into a logged 500.
// Invariant: every non-2xx answer is OpenAI's error JSON; one bad request never stops the server.
// Must not: listen on sockets or install signal handlers (lifecycle.ts does).
import { Hono } from 'hono';
import type { EngineClient } from '../engine/engine-client.js';
import { ApiError, INTERNAL_ERROR_MESSAGE } from './errors.js';
import { apiKeyAuth } from './http.js';
import { registerChatRoutes } from './routes/chat.js';
import { registerCompletionRoutes } from './routes/completions.js';
import { registerMiscRoutes } from './routes/misc.js';
import { ServerRuntime, type ServerOptions } from './runtime.js';

/** Paths we serve and their methods (anything else on them is 405). */
const ROUTES: Record<string, string[]> = {
  '/v1/chat/completions': ['POST'],
  '/v1/completions': ['POST'],
  '/v1/models': ['GET', 'HEAD'],
  '/v1/models/*': ['GET', 'HEAD'],
  '/tokenize': ['POST'],
  '/detokenize': ['POST'],
  '/health': ['GET', 'HEAD'],
  '/metrics': ['GET', 'HEAD'],
};

export interface CreateAppOptions extends ServerOptions {
  /** Share state with startServer (drain, in-flight registry); created from the options when absent. */
  runtime?: ServerRuntime;
}

export type LongctxApp = Hono & { readonly runtime: ServerRuntime };

export function createApp(engine: EngineClient, options: CreateAppOptions = {}): LongctxApp {
  const runtime = options.runtime ?? new ServerRuntime(engine, options);
  const app = new Hono();

  app.onError((e, c) => {
    if (e instanceof ApiError) {
      if (e.status >= 500) runtime.log.warn({ code: e.code, path: c.req.path }, e.message);
      else runtime.log.debug({ code: e.code, status: e.status, path: c.req.path }, e.message);
      return c.json(e.toJSON(), e.status, e.headers);
    }
    runtime.log.error({ err: e, method: c.req.method, path: c.req.path }, 'unexpected error');
    return c.json(new ApiError('internal_error', INTERNAL_ERROR_MESSAGE).toJSON(), 500);
  });
  app.notFound((c) => c.json(new ApiError('not_found', `No route for ${c.req.method} ${c.req.path}.`, null).toJSON(), 404));

  // Draining: only the probes keep answering (health says 'draining').
  app.use('*', async (c, next) => {
    if (runtime.draining && c.req.path !== '/health' && c.req.path !== '/metrics') {
      throw new ApiError('server_shutting_down', 'The server is shutting down and accepts no new requests.', null, { connection: 'close' });
    }
    await next();
  });
  const auth = apiKeyAuth(runtime);
  app.use('/v1/*', auth);
  app.use('/tokenize', auth);
  app.use('/detokenize', auth);

  registerChatRoutes(app, runtime);
  registerCompletionRoutes(app, runtime);
  registerMiscRoutes(app, runtime);

  for (const [path, methods] of Object.entries(ROUTES)) {
    app.all(path, (c) => {
      throw new ApiError('method_not_allowed', `Method ${c.req.method} is not allowed on ${c.req.path}; use ${methods.filter((m) => m !== 'HEAD').join(' or ')}.`, null, {
        allow: methods.join(', '),
      });
    });
  }
  return Object.assign(app, { runtime });
}
