// The hostile requests the real-engine server test (serve-real.test.ts) sends, each with the status and
// OpenAI-style error code it must get back while the server keeps serving.
// ------------------------------------------------------------------ the hostile inputs

export interface BadCase {
  name: string;
  path?: string; // default /v1/chat/completions
  method?: string; // default POST
  body?: unknown; // JSON-encoded unless `raw`
  raw?: string | Blob;
  headers?: Record<string, string>;
  noAuth?: boolean;
  status: number;
  code: string;
  param?: string | null;
}

/** A JSON value nested `depth` objects deep. */
export function nested(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
}

/** The cases for a server serving MODEL with this API key and request-body limit. */
export function badInputCases(MODEL: string, API_KEY: string, MAX_BODY_BYTES: number): BadCase[] {
  const msgs = [{ role: 'user', content: 'hi' }];
  const chat = (extra: Record<string, unknown>) => ({ model: MODEL, messages: msgs, max_tokens: 4, ...extra });
  const C = '/v1/completions';
  const compl = (extra: Record<string, unknown>) => ({ model: MODEL, max_tokens: 4, prompt: 'x', ...extra });
  const V = 151_936; // the tiny preset's vocabulary
  return [
    // ---- not JSON, or not an object
    { name: 'truncated JSON', raw: '{"messages": [', status: 400, code: 'invalid_json' },
    { name: 'not JSON at all', raw: 'hello', status: 400, code: 'invalid_json' },
    { name: 'empty body', raw: '', status: 400, code: 'invalid_json' },
    { name: 'trailing garbage', raw: '{"messages": []} x', status: 400, code: 'invalid_json' },
    { name: 'invalid UTF-8', raw: new Blob([Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d)]), status: 400, code: 'invalid_json' },
    { name: 'body is null', raw: 'null', status: 400, code: 'invalid_parameter' },
    { name: 'body is an array', raw: '[1,2]', status: 400, code: 'invalid_parameter' },
    { name: 'body is a number', path: C, raw: '42', status: 400, code: 'invalid_parameter' },
    { name: 'deeply nested arrays', raw: '['.repeat(100_000) + ']'.repeat(100_000), status: 400, code: 'invalid_json' },
    { name: 'deeply nested objects in tool parameters', body: chat({ tools: [{ type: 'function', function: { name: 'f', parameters: nested(500) } }] }), status: 400, code: 'invalid_json' },
    { name: 'deeply nested chat_template_kwargs', body: chat({ chat_template_kwargs: nested(200) }), status: 400, code: 'invalid_json' },
    { name: 'body over --max-body-bytes', path: C, raw: JSON.stringify(compl({ prompt: 'x'.repeat(MAX_BODY_BYTES + 10) })), status: 413, code: 'payload_too_large' },
    { name: 'text/plain content type', raw: JSON.stringify(chat({})), headers: { 'content-type': 'text/plain' }, status: 415, code: 'unsupported_media_type' },
    // ---- wrong types and shapes
    { name: 'messages missing', body: { model: MODEL }, status: 400, code: 'invalid_parameter', param: 'messages' },
    { name: 'messages not a list', body: { messages: 'hi' }, status: 400, code: 'invalid_parameter', param: 'messages' },
    { name: 'empty messages', body: { messages: [] }, status: 400, code: 'invalid_parameter', param: 'messages' },
    { name: 'unknown role', body: { messages: [{ role: 'wizard', content: 'x' }] }, status: 400, code: 'invalid_parameter', param: 'messages[0].role' },
    { name: 'content is a number', body: { messages: [{ role: 'user', content: 42 }] }, status: 400, code: 'invalid_parameter', param: 'messages[0].content' },
    { name: 'image content part', body: { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, status: 400, code: 'unsupported_parameter', param: 'messages[0].content[0].type' },
    { name: 'tool_call arguments not JSON', body: { messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'a', type: 'function', function: { name: 'f', arguments: '{nope' } }] }] }, status: 400, code: 'invalid_parameter', param: 'messages[0].tool_calls[0].function.arguments' },
    { name: 'temperature a string', body: chat({ temperature: 'hot' }), status: 400, code: 'invalid_parameter', param: 'temperature' },
    { name: 'stream "yes"', body: chat({ stream: 'yes' }), status: 400, code: 'invalid_parameter', param: 'stream' },
    { name: 'seed a string', body: chat({ seed: 'abc' }), status: 400, code: 'invalid_parameter', param: 'seed' },
    { name: 'model is a number', body: chat({ model: 7 }), status: 400, code: 'invalid_parameter', param: 'model' },
    { name: 'prompt is an object', path: C, body: compl({ prompt: { text: 'x' } }), status: 400, code: 'invalid_parameter', param: 'prompt' },
    { name: 'prompt mixing strings and ids', path: C, body: compl({ prompt: ['a', 1] }), status: 400, code: 'invalid_parameter' },
    { name: 'empty prompt', path: C, body: compl({ prompt: '' }), status: 400, code: 'invalid_parameter', param: 'prompt' },
    { name: 'empty prompt list', path: C, body: compl({ prompt: [] }), status: 400, code: 'invalid_parameter', param: 'prompt' },
    { name: 'stop is a number', body: chat({ stop: 5 }), status: 400, code: 'invalid_parameter', param: 'stop' },
    // ---- out of range
    { name: 'temperature -1', body: chat({ temperature: -1 }), status: 400, code: 'invalid_parameter', param: 'temperature' },
    { name: 'temperature 1e308', body: chat({ temperature: 1e308 }), status: 400, code: 'invalid_parameter', param: 'temperature' },
    { name: 'top_p 0', body: chat({ top_p: 0 }), status: 400, code: 'invalid_parameter', param: 'top_p' },
    { name: 'top_k -5', body: chat({ top_k: -5 }), status: 400, code: 'invalid_parameter', param: 'top_k' },
    { name: 'min_p 1.5', body: chat({ min_p: 1.5 }), status: 400, code: 'invalid_parameter', param: 'min_p' },
    { name: 'repetition_penalty 0', body: chat({ repetition_penalty: 0 }), status: 400, code: 'invalid_parameter', param: 'repetition_penalty' },
    { name: 'frequency_penalty -3', body: chat({ frequency_penalty: -3 }), status: 400, code: 'invalid_parameter', param: 'frequency_penalty' },
    { name: 'n 0', body: chat({ n: 0 }), status: 400, code: 'invalid_parameter', param: 'n' },
    { name: 'n 1.5', body: chat({ n: 1.5 }), status: 400, code: 'invalid_parameter', param: 'n' },
    { name: 'n 100000', body: chat({ n: 100_000 }), status: 400, code: 'invalid_parameter', param: 'n' },
    { name: 'max_tokens 0', body: chat({ max_tokens: 0 }), status: 400, code: 'invalid_parameter', param: 'max_tokens' },
    { name: 'max_tokens -5', path: C, body: compl({ max_tokens: -5 }), status: 400, code: 'invalid_parameter', param: 'max_tokens' },
    { name: 'max_tokens 1e300', body: chat({ max_tokens: 1e300 }), status: 400, code: 'invalid_parameter', param: 'max_tokens' },
    { name: 'max_completion_tokens over the context', body: chat({ max_tokens: undefined, max_completion_tokens: 100_000 }), status: 400, code: 'context_length_exceeded' },
    { name: 'seed 1e20', path: C, body: compl({ seed: 1e20 }), status: 400, code: 'invalid_parameter', param: 'seed' },
    { name: 'top_logprobs 50', body: chat({ logprobs: true, top_logprobs: 50 }), status: 400, code: 'invalid_parameter', param: 'top_logprobs' },
    { name: 'top_logprobs without logprobs', body: chat({ top_logprobs: 2 }), status: 400, code: 'invalid_parameter', param: 'top_logprobs' },
    { name: 'completions logprobs 21', path: C, body: compl({ logprobs: 21 }), status: 400, code: 'invalid_parameter', param: 'logprobs' },
    // ---- stop lists
    { name: 'enormous stop list', body: chat({ stop: Array.from({ length: 10_000 }, (_, i) => `s${i}`) }), status: 400, code: 'invalid_parameter', param: 'stop' },
    { name: 'one enormous stop string', path: C, body: compl({ stop: ['y'.repeat(100_000)] }), status: 400, code: 'invalid_parameter', param: 'stop[0]' },
    { name: 'empty stop string', body: chat({ stop: [''] }), status: 400, code: 'invalid_parameter', param: 'stop[0]' },
    { name: 'enormous stop_token_ids list', path: C, body: compl({ stop_token_ids: Array.from({ length: 5_000 }, (_, i) => i) }), status: 400, code: 'invalid_parameter', param: 'stop_token_ids' },
    { name: 'stop_token_ids at the vocabulary size', path: C, body: compl({ stop_token_ids: [V] }), status: 400, code: 'invalid_parameter', param: 'stop_token_ids' },
    // ---- token ids outside the vocabulary
    { name: 'token-id prompt with an id equal to the vocabulary size', path: C, body: compl({ prompt: [1, 2, V] }), status: 400, code: 'invalid_token_id', param: 'prompt' },
    { name: 'token-id prompt with a huge id', path: C, body: compl({ prompt: [99_999_999_999] }), status: 400, code: 'invalid_token_id', param: 'prompt' },
    { name: 'second prompt of a batch out of the vocabulary', path: C, body: compl({ prompt: [[1, 2], [3, V + 5]] }), status: 400, code: 'invalid_token_id', param: 'prompt[1]' },
    { name: 'negative token id', path: C, body: compl({ prompt: [1, -3] }), status: 400, code: 'invalid_parameter' },
    { name: 'fractional token id', path: C, body: compl({ prompt: [1.5] }), status: 400, code: 'invalid_parameter' },
    { name: 'token id beyond 2^53', path: C, raw: `{"prompt": [1, 123456789012345678901234567890], "max_tokens": 2}`, status: 400, code: 'invalid_parameter' },
    { name: 'detokenize out-of-vocabulary ids', path: '/detokenize', body: { tokens: [1, V] }, status: 400, code: 'invalid_token_id', param: 'tokens' },
    // ---- unknown / unsupported parameters
    { name: 'unknown top-level parameter', body: chat({ frobnicate: true }), status: 400, code: 'unknown_parameter', param: 'frobnicate' },
    { name: '__proto__ key', raw: `{"messages": [{"role": "user", "content": "hi"}], "__proto__": {"polluted": true}}`, status: 400, code: 'unknown_parameter' },
    { name: 'unknown stream option', body: chat({ stream: true, stream_options: { include_everything: true } }), status: 400, code: 'unknown_parameter', param: 'stream_options.include_everything' },
    { name: 'stream_options without stream', body: chat({ stream_options: { include_usage: true } }), status: 400, code: 'invalid_parameter', param: 'stream_options' },
    { name: 'response_format json_schema', body: chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } } }), status: 400, code: 'unsupported_parameter', param: 'response_format' },
    { name: 'tool_choice required', body: chat({ tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: 'required' }), status: 400, code: 'unsupported_parameter', param: 'tool_choice' },
    { name: 'logit_bias', body: chat({ logit_bias: { '5': 100 } }), status: 400, code: 'unsupported_parameter', param: 'logit_bias' },
    { name: 'suffix', path: C, body: compl({ suffix: 'y' }), status: 400, code: 'unsupported_parameter', param: 'suffix' },
    { name: 'echo with logprobs', path: C, body: compl({ echo: true, logprobs: 1 }), status: 400, code: 'unsupported_parameter', param: 'echo' },
    // ---- model, auth, paths, methods
    { name: 'wrong model name', body: chat({ model: 'gpt-9' }), status: 404, code: 'model_not_found', param: 'model' },
    { name: 'wrong model name on completions', path: C, body: compl({ model: `${MODEL}-nope` }), status: 404, code: 'model_not_found', param: 'model' },
    { name: 'wrong model on /v1/models/:id', path: '/v1/models/nope', method: 'GET', status: 404, code: 'model_not_found' },
    { name: 'wrong model on /tokenize', path: '/tokenize', body: { model: 'nope', prompt: 'x' }, status: 404, code: 'model_not_found' },
    { name: 'no API key', body: chat({}), noAuth: true, status: 401, code: 'missing_api_key' },
    { name: 'wrong API key', body: chat({}), headers: { authorization: 'Bearer sk-wrong' }, status: 401, code: 'invalid_api_key' },
    { name: 'API key of another length', path: C, body: compl({}), headers: { authorization: `Bearer ${API_KEY}x` }, status: 401, code: 'invalid_api_key' },
    { name: 'unknown path', path: '/v1/embeddings', body: {}, status: 404, code: 'not_found' },
    { name: 'path traversal', path: '/v1/../../etc/passwd', method: 'GET', status: 404, code: 'not_found' },
    { name: 'unknown GET path', path: '/admin', method: 'GET', status: 404, code: 'not_found' },
    { name: 'GET on chat completions', method: 'GET', status: 405, code: 'method_not_allowed' },
    { name: 'DELETE on models', path: '/v1/models', method: 'DELETE', status: 405, code: 'method_not_allowed' },
    { name: 'PUT on completions', path: C, method: 'PUT', body: compl({}), status: 405, code: 'method_not_allowed' },
    { name: 'tokenize without prompt or messages', path: '/tokenize', body: {}, status: 400, code: 'invalid_parameter' },
  ];
}
