// Test helper: random-weight model directories made with the real `longctx init-model` command, cached
// per (preset, seed, dtype) under the OS temp dir for the duration of a test run. Never mutates a cached dir.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function cliArgs(...args: string[]): string[] {
  return ['--import', 'tsx', join(repoRoot, 'src', 'cli', 'main.ts'), ...args];
}

/** Runs the CLI from source; returns stdout (throws with stderr on a non-zero exit). */
export function runCli(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): string {
  return execFileSync(process.execPath, cliArgs(...args), {
    encoding: 'utf8',
    input: opts.input,
    env: opts.env ?? process.env,
    stdio: ['pipe', 'pipe', 'pipe'],
    maxBuffer: 64 << 20,
  });
}

export function modelDir(preset: string, seed = 1, dtype: 'f32' | 'bf16' = 'f32'): string {
  const root = join(tmpdir(), `longctx-test-models-${process.getuid?.() ?? 0}`);
  const dir = join(root, `${preset}-s${seed}-${dtype}`);
  if (!existsSync(join(dir, 'config.json'))) {
    mkdirSync(root, { recursive: true });
    const tmp = `${dir}.tmp-${process.pid}`;
    runCli(['init-model', tmp, '--preset', preset, '--seed', String(seed), '--dtype', dtype, '--force']);
    try {
      // atomic publish so concurrent test files never see a half-written directory
      execFileSync('mv', ['-T', tmp, dir]);
    } catch {
      execFileSync('rm', ['-rf', tmp]);
    }
  }
  return dir;
}
