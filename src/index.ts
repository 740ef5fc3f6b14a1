// The package's public API: the offline LLM class, the in-process and worker-thread engines behind the
// EngineClient interface, the OpenAI-compatible server, and the pieces users compose (sampling params,
// model directory loading, random-weight model directories). Must not: run anything on import.
export { LLM, type LLMOptions, type Prompt, type RequestOutput, type CompletionOutput, type ChatOptions, type StreamHandle } from './engine/llm.js';
export { Engine } from './engine/engine.js';
export { ThreadedEngine } from './engine/threaded-engine.js';
export type { EngineOptions, BackendKind } from './engine/engine-options.js';
export * from './engine/engine-client.js';
export { resolveSamplingParams, type SamplingParams, type SamplingRequest } from './sampling/sampling-params.js';
export { loadModelDir, type LoadedModel } from './model/load.js';
export { initModel, type InitModelOptions } from './model/init-model.js';
export { UserError, isUserError } from './errors.js';
export * from './server/index.js';
