// The one catalogue of HTTP errors the server can answer: a stable code → HTTP status + OpenAI error type.
// Every error response is OpenAI's JSON {"error": {"message", "type", "param", "code"}} built here.
// Invariant: messages are one line, name the offending parameter and value, and never carry a stack
// trace or internal detail; codes are stable (clients and tests match on them). Must not: log or do I/O.
import { EngineRequestError } from '../engine/engine-client.js';
import { isUserError } from '../errors.js';

export const ERROR_CATALOGUE = {
  invalid_json: { status: 400, type: 'invalid_request_error' }, // body is not JSON / too deeply nested
  invalid_parameter: { status: 400, type: 'invalid_request_error' }, // wrong type, out of range, bad shape
  unknown_parameter: { status: 400, type: 'invalid_request_error' }, // a top-level key we do not know
  unsupported_parameter: { status: 400, type: 'invalid_request_error' }, // known to OpenAI, not implemented here
  context_length_exceeded: { status: 400, type: 'invalid_request_error' }, // prompt + max_tokens > max_model_len
  invalid_token_id: { status: 400, type: 'invalid_request_error' }, // a token id outside the vocabulary
  invalid_prompt: { status: 400, type: 'invalid_request_error' }, // template/tokenizer refused the input
  missing_api_key: { status: 401, type: 'authentication_error' },
  invalid_api_key: { status: 401, type: 'authentication_error' },
  model_not_found: { status: 404, type: 'not_found_error' },
  not_found: { status: 404, type: 'not_found_error' }, // unknown path
  method_not_allowed: { status: 405, type: 'invalid_request_error' },
  payload_too_large: { status: 413, type: 'invalid_request_error' }, // body over --max-body-bytes
  unsupported_media_type: { status: 415, type: 'invalid_request_error' }, // Content-Type is not JSON
  queue_full: { status: 429, type: 'rate_limit_error' }, // --max-queued-requests / --max-queued-tokens
  internal_error: { status: 500, type: 'server_error' }, // a bug: logged with its stack, message generic
  server_shutting_down: { status: 503, type: 'server_error' }, // draining after SIGTERM
  engine_unavailable: { status: 503, type: 'server_error' }, // the engine refused or is shutting down
} as const satisfies Record<string, { status: number; type: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;
export type ErrorStatus = (typeof ERROR_CATALOGUE)[ErrorCode]['status'];

export interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: ErrorCode };
}

/** An error that becomes an HTTP response. Throw it anywhere below a route; the app's onError renders it. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly status: ErrorStatus;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message.replace(/\s*\n\s*/g, ' '));
    this.status = ERROR_CATALOGUE[code].status;
  }

  toJSON(): OpenAIErrorBody {
    return { error: { message: this.message, type: ERROR_CATALOGUE[this.code].type, param: this.param, code: this.code } };
  }
}

/** A short, one-line rendering of a client-supplied value for error messages. */
export function showValue(v: unknown, maxChars = 60): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > maxChars ? `${s.slice(0, maxChars)}…` : s;
}

/** The context-length message, in the wording OpenAI clients and users recognise. */
export function contextLengthError(maxModelLen: number, numPromptTokens: number, maxTokens: number | null, what: 'messages' | 'prompt'): ApiError {
  const requested = numPromptTokens + (maxTokens ?? 0);
  const detail = maxTokens === null ? `${numPromptTokens} in the ${what}` : `${numPromptTokens} in the ${what}, ${maxTokens} in the completion`;
  const param = what === 'messages' ? 'messages' : 'prompt';
  return new ApiError(
    'context_length_exceeded',
    `This model's maximum context length is ${maxModelLen} tokens. However, you requested ${requested} tokens (${detail}). ` +
      `Please reduce the length of the ${what} or completion.`,
    param,
  );
}

/** Maps whatever a route threw to an ApiError; `null` means a bug (the caller logs it and answers 500). */
export function toApiError(e: unknown): ApiError | null {
  if (e instanceof ApiError) return e;
  if (e instanceof EngineRequestError) {
    switch (e.code) {
      case 'context_length_exceeded':
        return new ApiError('context_length_exceeded', e.message, null);
      case 'invalid_token_id':
        return new ApiError('invalid_token_id', e.message, null);
      case 'invalid_request':
        return new ApiError('invalid_prompt', e.message, null);
      case 'queue_full':
        return new ApiError('queue_full', e.message, null, { 'retry-after': '1' });
      case 'shutting_down':
        return new ApiError('engine_unavailable', e.message, null);
    }
  }
  if (isUserError(e)) return new ApiError('invalid_prompt', e.message, null);
  return null;
}

export const INTERNAL_ERROR_MESSAGE = 'The server had an internal error while processing the request; it has been logged.';
