// The non-generation endpoints: GET /v1/models (+ /v1/models/:id), POST /tokenize and POST /detokenize
// (vLLM's shapes), GET /health (engine-loop liveness and draining) and GET /metrics (Prometheus text).
// Invariant: /health answers 503 while draining or when the engine loop is dead or stalled with work,
// so a load balancer stops routing to us. Must not: start generation.
import type { Hono } from 'hono';
import { ApiError } from '../errors.js';
import { checkModel, readJsonBody } from '../http.js';
import type { ServerRuntime } from '../runtime.js';
import { normalizeMessages } from '../chat-messages.js';
import { detokenizeRequestSchema, parseRequest, tokenizeRequestSchema } from '../schemas.js';
import type { EngineTool } from '../../engine/engine-client.js';

export function registerMiscRoutes(app: Hono, runtime: ServerRuntime): void {
  const engine = runtime.engine;
  const startedAt = Math.floor(Date.now() / 1000);
  const card = (id: string) => ({
    id,
    object: 'model',
    created: startedAt,
    owned_by: 'longctx',
    root: engine.modelSource,
    parent: null,
    max_model_len: engine.maxModelLen,
  });

  app.get('/v1/models', (c) => c.json({ object: 'list', data: runtime.options.servedModelNames.map(card) }));
  app.get('/v1/models/:model{.+}', (c) => {
    const model = c.req.param('model');
    checkModel(runtime, model);
    return c.json(card(model));
  });

  app.post('/tokenize', async (c) => {
    const req = parseRequest(tokenizeRequestSchema, await readJsonBody(c, runtime.options.maxBodyBytes));
    checkModel(runtime, req.model);
    let tokens: number[];
    if ('prompt' in req) {
      tokens = await engine.encode(req.prompt, { addSpecialTokens: req.add_special_tokens ?? true });
    } else {
      const tools = req.tools && req.tools.length > 0 ? (req.tools as EngineTool[]) : undefined;
      const text = await engine.applyChatTemplate(normalizeMessages(req.messages), {
        addGenerationPrompt: req.add_generation_prompt ?? true,
        ...(tools ? { tools } : {}),
        ...(req.chat_template_kwargs ? { variables: req.chat_template_kwargs } : {}),
      });
      tokens = await engine.encode(text, { addSpecialTokens: req.add_special_tokens ?? false });
    }
    const tokenStrs = req.return_token_strs ? await Promise.all(tokens.map((t) => engine.decode([t], { skipSpecialTokens: false }))) : null;
    return c.json({ count: tokens.length, max_model_len: engine.maxModelLen, tokens, token_strs: tokenStrs });
  });

  app.post('/detokenize', async (c) => {
    const req = parseRequest(detokenizeRequestSchema, await readJsonBody(c, runtime.options.maxBodyBytes));
    checkModel(runtime, req.model);
    const bad = req.tokens.find((t) => t >= engine.vocabSize);
    if (bad !== undefined) {
      throw new ApiError('invalid_token_id', `Invalid value for 'tokens': token id ${bad} is outside the vocabulary [0, ${engine.vocabSize}).`, 'tokens');
    }
    return c.json({ prompt: await engine.decode(req.tokens, { skipSpecialTokens: false }) });
  });

  app.get('/health', (c) => {
    if (runtime.draining) return c.json({ status: 'draining', requests_in_flight: runtime.numInflight }, 503, { connection: 'close' });
    const h = engine.health();
    if (!h.loopAlive) return c.json({ status: 'unhealthy', reason: `the engine loop is not running${h.error ? `: ${h.error}` : ''}` }, 503);
    const limit = runtime.options.engineStallTimeoutMs;
    if (h.hasWork && h.msSinceProgress > limit) {
      const reason = `the engine made no progress for ${(h.msSinceProgress / 1000).toFixed(1)} s while it has work (limit ${limit / 1000} s)`;
      return c.json({ status: 'unhealthy', reason }, 503);
    }
    return c.json({ status: 'ok' });
  });

  app.get('/metrics', async (c) => {
    const { contentType, body } = await runtime.metrics.render();
    return c.body(body, 200, { 'content-type': contentType });
  });
}
