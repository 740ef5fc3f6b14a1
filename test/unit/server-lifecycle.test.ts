// The real CLI as a child process (`longctx serve --fake-engine --port 0`): the startup line, SIGTERM
// draining (in-flight stream completes, new connections refused, exit code 0) and a second signal
// exiting at once. Each test spawns one process; the suite stays under a few seconds.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

interface Served {
  child: ChildProcess;
  url: string;
  port: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>;
  stderr: () => string;
}

async function serve(args: string[]): Promise<Served> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '--fake-engine', '--port', '0', '--log-level', 'warn', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, atMs: Date.now() })),
  );
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /longctx: serving \S+ on (http:\/\/\S+)\n/.exec(out);
      if (m) resolve(m[1]!);
    });
    void exited.then(() => reject(new Error(`serve exited early: ${err}`)));
  });
  return { child, url: line, port: Number(new URL(line).port), exited, stderr: () => err };
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}

async function startStream(url: string, maxTokens: number) {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: maxTokens, ignore_eos: true, stream: true }),
  });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  await reader.read(); // the role chunk: the request is in flight
  const rest = (async () => {
    let text = '';
    const dec = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (done) return text;
      text += dec.decode(value, { stream: true });
    }
  })();
  return rest;
}

describe('serve as a process', () => {
  it('drains on SIGTERM: the stream completes, new connections are refused, exit code 0', async () => {
    const s = await serve(['--fake-engine-options', '{"tokenDelayMs": 20}', '--shutdown-timeout', '20']);
    try {
      const health = await fetch(`${s.url}/health`);
      assert.equal(health.status, 200);
      const rest = await startStream(s.url, 30); // ~600 ms of decoding
      s.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(await connectRefused(s.port), true, 'new connections are refused while draining');
      const text = await rest;
      assert.ok(text.includes('"finish_reason":"length"'), 'the in-flight request ran to its end');
      assert.ok(text.endsWith('data: [DONE]\n\n'));
      const { code } = await s.exited;
      assert.equal(code, 0, s.stderr());
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  it('exits at once on a second signal', async () => {
    const s = await serve(['--fake-engine-options', '{"tokenDelayMs": 20}', '--shutdown-timeout', '60']);
    try {
      const rest = startStream(s.url, 3000); // would take 60 s
      await new Promise((r) => setTimeout(r, 100));
      s.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 150));
      const sentAt = Date.now();
      s.child.kill('SIGTERM');
      const { code, atMs } = await s.exited;
      assert.notEqual(code, 0);
      assert.ok(atMs - sentAt < 1000, `exited ${atMs - sentAt} ms after the second signal`);
      await rest; // the stream just ends when the process dies
    } finally {
      s.child.kill('SIGKILL');
    }
  });
});
