// The public surface of the HTTP server: createApp (routes, in-process testable) and startServer
// (listener, drain, signals). Everything else in src/server/ is internal. Must not: grow logic.
export { createApp, type CreateAppOptions, type LongctxApp } from './app.js';
export { ERROR_CATALOGUE, ApiError, type ErrorCode } from './errors.js';
export { startServer, type RunningServer, type StartServerOptions } from './lifecycle.js';
export { ServerRuntime, type ServerOptions } from './runtime.js';
