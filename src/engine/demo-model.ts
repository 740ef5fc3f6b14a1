// The built-in demo model: a `tiny` random-weight model directory written with init-model on first use and
// cached under $XDG_CACHE_HOME/longctx (or ~/.cache/longctx). Invariant: a cached directory is complete
// (it is written to a temporary name and renamed), so an interrupted first run never leaves a broken model.
// Must not: download anything.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { initModel } from '../model/init-model.js';

export const DEMO_PRESET = 'tiny';
export const DEMO_SEED = 0;
export const DEMO_NOTICE = 'longctx: no --model given: using the built-in demo model (random weights, its text is gibberish by design)';

export function demoModelDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'longctx', `demo-${DEMO_PRESET}-s${DEMO_SEED}`);
}

/** The demo model's directory, created on first use. */
export async function ensureDemoModel(): Promise<string> {
  const dir = demoModelDir();
  if (fs.existsSync(path.join(dir, 'tokenizer_config.json'))) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  await initModel(tmp, { preset: DEMO_PRESET, seed: DEMO_SEED, dtype: 'bf16', force: true });
  try {
    fs.renameSync(tmp, dir);
  } catch {
    fs.rmSync(tmp, { recursive: true, force: true }); // another process won the race: use its copy
    if (!fs.existsSync(path.join(dir, 'tokenizer_config.json'))) throw new Error(`could not create the demo model at ${dir}`);
  }
  return dir;
}
