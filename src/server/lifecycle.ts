// startServer(engine, options): listens with @hono/node-server, and owns shutdown: stop accepting (close
// the listener; /health says 'draining'), let in-flight requests finish up to the shutdown timeout, then
// abort the rest, close connections, shut the engine down. With signal handling on, the first
// SIGTERM/SIGINT drains and exits 0; a second one exits at once. Must not: define routes (app.ts does).
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import type { EngineClient } from '../engine/engine-client.js';
import { UserError } from '../errors.js';
import { createApp, type CreateAppOptions, type LongctxApp } from './app.js';
import { ServerRuntime } from './runtime.js';

export interface StartServerOptions extends CreateAppOptions {
  host?: string; // default 127.0.0.1
  port?: number; // default 8000; 0 picks a free port
  /** How long a drain lets in-flight requests run before aborting them. Default 30 000. */
  shutdownTimeoutMs?: number;
  /** Install SIGTERM/SIGINT handlers that drain and then call `exit`. Default false (tests). */
  handleSignals?: boolean;
  /** Called with the exit code once a signal-initiated drain is over (or at once on a second signal). Default process.exit. */
  exit?: (code: number) => void;
}

export interface RunningServer {
  readonly app: LongctxApp;
  readonly runtime: ServerRuntime;
  readonly server: Server;
  readonly host: string;
  readonly port: number;
  /** e.g. http://127.0.0.1:8000 */
  readonly url: string;
  /** Drains and stops (idempotent: later calls return the same promise). Resolves when everything is closed. */
  shutdown(reason?: string): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      const why = e.code === 'EADDRINUSE' ? 'the address is already in use' : e.code === 'EACCES' ? 'permission denied' : e.message;
      reject(new UserError(`cannot listen on ${host}:${port}: ${why}`));
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}

export async function startServer(engine: EngineClient, options: StartServerOptions = {}): Promise<RunningServer> {
  const host = options.host ?? '127.0.0.1';
  const runtime = options.runtime ?? new ServerRuntime(engine, options);
  const app = createApp(engine, { ...options, runtime });
  const log = runtime.log;
  const server = createAdaptorServer({ fetch: app.fetch, hostname: host }) as Server;
  server.on('clientError', (err, socket) => {
    // Malformed HTTP (not JSON problems: those reach the app). Answer 400 once and close.
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    log.debug({ err: err.message }, 'client error');
  });
  // Active responses per connection, so a drain can close each connection as soon as it is idle
  // (server.closeIdleConnections() misses connections that never sent a request).
  const sockets = new Map<Socket, number>();
  const closeIfIdle = (socket: Socket) => {
    if (runtime.draining && (sockets.get(socket) ?? 0) === 0) socket.destroySoon();
  };
  server.on('connection', (socket: Socket) => {
    sockets.set(socket, 0);
    socket.once('close', () => sockets.delete(socket));
    closeIfIdle(socket);
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    sockets.set(socket, (sockets.get(socket) ?? 0) + 1);
    res.once('close', () => {
      if (sockets.has(socket)) sockets.set(socket, Math.max(0, sockets.get(socket)! - 1));
      closeIfIdle(socket);
    });
  });
  await listen(server, options.port ?? 8000, host);
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 30_000;

  let shuttingDown: Promise<void> | null = null;
  const shutdown = (reason = 'shutdown requested'): Promise<void> => {
    shuttingDown ??= (async () => {
      runtime.draining = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets.keys()) closeIfIdle(socket);
      log.info({ reason, inFlight: runtime.numInflight, timeoutS: shutdownTimeoutMs / 1000 }, 'draining: no new connections');
      const drained = await Promise.race([runtime.whenIdle().then(() => true), sleep(shutdownTimeoutMs).then(() => false)]);
      if (!drained) {
        log.warn({ inFlight: runtime.numInflight }, 'shutdown timeout reached: aborting the requests still in flight');
        runtime.abortAll('server shutdown timeout');
        await Promise.race([runtime.whenIdle(), sleep(2_000)]);
      }
      // Responses are complete: connections close as their last bytes flush (bounded).
      await Promise.race([closed, sleep(2_000)]);
      server.closeAllConnections();
      await engine.shutdown();
      log.info('stopped');
    })();
    return shuttingDown;
  };

  if (options.handleSignals) {
    const exit = options.exit ?? ((code: number) => process.exit(code));
    let count = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      count += 1;
      if (count > 1) {
        log.warn({ signal }, 'second signal: exiting now');
        exit(signal === 'SIGINT' ? 130 : 143);
        return;
      }
      log.info({ signal }, 'signal received: draining (send it again to exit at once)');
      shutdown(`${signal}`).then(
        () => exit(0),
        (e: unknown) => {
          log.error({ err: e }, 'shutdown failed');
          exit(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }

  return { app, runtime, server, host, port, url, shutdown };
}
