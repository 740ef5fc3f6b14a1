// Request plumbing shared by the routes: reading a JSON body under the byte limit (413), with the
// content-type check (415), parse errors (400) and the nesting-depth guard; the API-key check (401);
// the model-name check (404). Invariant: a body is never buffered past maxBodyBytes. Must not: know
// about any particular endpoint's fields.
import { timingSafeEqual } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { ApiError, showValue } from './errors.js';
import type { ServerRuntime } from './runtime.js';
import { checkJsonDepth } from './schemas.js';

function tooLarge(maxBytes: number): ApiError {
  return new ApiError('payload_too_large', `The request body is larger than the server's limit of ${maxBytes} bytes (--max-body-bytes).`, null, {
    connection: 'close',
  });
}

/** Reads and parses the JSON body: 415 for a non-JSON Content-Type, 413 over the limit, 400 when not JSON. */
export async function readJsonBody(c: Context, maxBytes: number): Promise<unknown> {
  const type = c.req.header('content-type');
  if (type !== undefined && !/^application\/([\w.+-]*\+)?json\s*(;|$)/i.test(type.trim())) {
    throw new ApiError('unsupported_media_type', `Content-Type must be application/json, got ${showValue(type, 80)}.`, null);
  }
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > maxBytes) throw tooLarge(maxBytes);
  const body = c.req.raw.body;
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (body) {
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge(maxBytes);
      }
      chunks.push(value);
    }
  }
  if (size === 0) throw new ApiError('invalid_json', 'The request body is empty; send a JSON object.', null);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks, size));
  } catch {
    throw new ApiError('invalid_json', 'The request body is not valid UTF-8.', null);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ApiError('invalid_json', `We could not parse the JSON body of your request (${(e as Error).message.split('\n')[0]}).`, null);
  }
  checkJsonDepth(value);
  return value;
}

/** 404 unless `model` is absent or one of the served names. */
export function checkModel(runtime: ServerRuntime, model: string | null | undefined): void {
  if (model === null || model === undefined || runtime.options.servedModelNames.includes(model)) return;
  throw new ApiError('model_not_found', `The model \`${model}\` does not exist.`, 'model');
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** `Authorization: Bearer <key>` on the routes it guards (no-op without --api-key). */
export function apiKeyAuth(runtime: ServerRuntime): MiddlewareHandler {
  return async (c, next) => {
    const key = runtime.options.apiKey;
    if (key !== null) {
      const header = c.req.header('authorization');
      const m = header === undefined ? null : /^Bearer\s+(.+)$/i.exec(header.trim());
      if (!m) {
        throw new ApiError('missing_api_key', "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.", null, {
          'www-authenticate': 'Bearer',
        });
      }
      if (!sameSecret(m[1]!, key)) throw new ApiError('invalid_api_key', 'Incorrect API key provided.', null, { 'www-authenticate': 'Bearer' });
    }
    await next();
  };
}
