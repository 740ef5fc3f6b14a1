// Helpers for driving `longctx serve` as a real child process (from source through tsx, no build needed):
// spawn it on port 0 and wait for its startup line, kill it for sure, read its RSS and child processes from
// /proc, parse /metrics, read SSE bodies byte-exactly. Shared by test/e2e/*.test.ts and bench/soak.ts.
// Not a test file itself (scripts/test.sh only runs *.test.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { cliArgs, repoRoot } from '../helpers/models.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  atMs: number;
}

export interface ServeProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** e.g. http://127.0.0.1:41234 */
  readonly url: string;
  readonly port: number;
  /** The served model name from the startup line. */
  readonly modelName: string;
  readonly exited: Promise<ExitInfo>;
  /** Everything the process wrote on stderr so far (its JSON log). */
  stderr(): string;
  alive(): boolean;
  /** SIGKILL unless it already exited; resolves once it has. Safe to call many times. */
  kill(): Promise<ExitInfo>;
}

const live = new Set<ChildProcess>();
// Last resort: never leave a server behind when the test process itself goes away.
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** Spawns `longctx serve ...args` and resolves once it prints `longctx: serving <name> on <url>`. */
export async function spawnServe(args: string[], opts: { startupTimeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ServeProcess> {
  const child = spawn(process.execPath, cliArgs('serve', ...args), {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
  });
  live.add(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 4 << 20) err = err.slice(-(2 << 20)); // keep the tail of a chatty log
  });
  const exited = new Promise<ExitInfo>((resolve) =>
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve({ code, signal, atMs: Date.now() });
    }),
  );
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return exited;
  };
  const timeoutMs = opts.startupTimeoutMs ?? 60_000;
  let out = '';
  const started = await new Promise<{ url: string; name: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve printed no startup line within ${timeoutMs} ms; stderr: ${err.slice(-2000)}`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /longctx: serving (\S+) on (http:\/\/\S+)\n/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ name: m[1]!, url: m[2]! });
      }
    });
    void exited.then((e) => {
      clearTimeout(timer);
      reject(new Error(`serve exited early (code ${e.code}, signal ${e.signal}): ${err.slice(-2000)}`));
    });
  }).catch(async (e: unknown) => {
    await kill();
    throw e;
  });
  return {
    child,
    pid: child.pid!,
    url: started.url,
    port: Number(new URL(started.url).port),
    modelName: started.name,
    exited,
    stderr: () => err,
    alive: () => child.exitCode === null && child.signalCode === null,
    kill,
  };
}

/** VmRSS of a process in KiB (Linux /proc). */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

/** Pids whose parent is `pid` (Linux /proc). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) out.push(Number(name));
  }
  return out;
}

/** True while a process with this pid exists (and is not a zombie). */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

export function connectRefused(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

/**
 * The value of one sample of a Prometheus text exposition: `name` is the full metric name
 * (e.g. 'longctx:kv_cache_blocks_used'); `labels` must all match (other labels are allowed).
 * Throws when the sample is absent, so a renamed metric fails loudly.
 */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const m = /^[^{\s]+(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const have = new Map([...(m[1] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1]!, x[2]!]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[2]);
  }
  throw new Error(`metric ${name}${JSON.stringify(labels)} not found in /metrics`);
}

export async function scrape(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return res.text();
}

/** Polls /metrics until `pred` holds (returns that exposition) or the timeout passes (returns the last one). */
export async function waitForMetrics(url: string, pred: (text: string) => boolean, timeoutMs = 5_000, everyMs = 10): Promise<{ ok: boolean; text: string; waitedMs: number }> {
  const t0 = Date.now();
  let text = '';
  for (;;) {
    text = await scrape(url);
    if (pred(text)) return { ok: true, text, waitedMs: Date.now() - t0 };
    if (Date.now() - t0 > timeoutMs) return { ok: false, text, waitedMs: Date.now() - t0 };
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The whole body as bytes, then strictly decoded UTF-8 (throws on an invalid sequence). */
export async function readBody(res: Response): Promise<string> {
  const bytes = new Uint8Array(await res.arrayBuffer());
  return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
}

/** Splits an SSE body into its `data:` payloads (comments dropped); does not validate the framing. */
export function sseData(raw: string): string[] {
  return raw
    .split('\n\n')
    .filter((e) => e.startsWith('data: '))
    .map((e) => e.slice('data: '.length));
}
