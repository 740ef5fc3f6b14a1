#!/usr/bin/env node
// Whether a change to the CUDA kernels leaves their PTX as it was: compiles every native/cuda/ops/*.cu of a git
// revision (default HEAD) and of the working tree to PTX for compute_90a and compute_80, and compares the two
// after renaming what does not change the code (the anonymous-namespace hash, which depends on the file's path,
// and the virtual register numbers, renumbered per function in order of first use; .reg declarations dropped).
// Equal PTX means equal machine code, so a refactor it passes needs no GPU run. Needs nvcc (no GPU, no cuBLAS
// library: files that include cublas_v2.h are compiled only when the header is found).
// Usage: node scripts/ptx-compare.mjs [REV] [--nvcc PATH]. Exit status 0: all equal; 1: some differ (listed).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const args = process.argv.slice(2);
const nvccAt = args.indexOf('--nvcc');
const nvcc = nvccAt >= 0 ? args[nvccAt + 1] : process.env.CUDA_HOME ? path.join(process.env.CUDA_HOME, 'bin', 'nvcc') : 'nvcc';
const rev = args.find((a, i) => !a.startsWith('--') && (nvccAt < 0 || i !== nvccAt + 1)) ?? 'HEAD';
const repo = execFileSync('git', ['rev-parse', '--show-toplevel'], { encoding: 'utf8' }).trim();
if (spawnSync(nvcc, ['--version']).status !== 0) {
  console.error(`ptx-compare: ${nvcc} does not run; pass --nvcc PATH or set CUDA_HOME`);
  process.exit(2);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ptx-compare-'));
const base = path.join(tmp, 'base');
execFileSync('git', ['-C', repo, 'worktree', 'add', '--detach', '-q', base, rev]);

/** The PTX of file (relative to root) for arch, or null when it does not compile there. */
function ptx(root, file, arch) {
  const out = path.join(tmp, `${path.basename(root)}-${path.basename(file)}-${arch}.ptx`);
  const r = spawnSync(nvcc, ['-std=c++17', '-O3', `-gencode=arch=compute_${arch},code=compute_${arch}`, '-Inative/cuda', '-ptx', file, '-o', out],
    { cwd: root, encoding: 'utf8' });
  return r.status === 0 ? fs.readFileSync(out, 'utf8') : null;
}

/** PTX with the anonymous-namespace hash and register numbers made path- and numbering-independent. */
function normalise(text) {
  const lines = [];
  let names = new Map();
  let counts = new Map();
  for (let line of text.split('\n')) {
    line = line.replace(/_GLOBAL__N__[0-9a-f]{8}_/g, '_GLOBAL__N__X_');
    if (line.trimStart().startsWith('.reg')) continue;
    if (/^(\.visible )?\.entry|^\.func|^\.visible \.func/.test(line)) {
      names = new Map();
      counts = new Map();
    }
    line = line.replace(/%(rd|rs|r|fd|f|p|hh|h)(\d+)\b/g, (m, cls) => {
      let n = names.get(m);
      if (n === undefined) {
        const c = (counts.get(cls) ?? 0) + 1;
        counts.set(cls, c);
        n = `%${cls}#${c}`;
        names.set(m, n);
      }
      return n;
    });
    lines.push(line);
  }
  return lines.join('\n');
}

let differ = 0;
try {
  const files = fs.readdirSync(path.join(repo, 'native/cuda/ops')).filter((f) => f.endsWith('.cu')).sort();
  for (const f of files) {
    const rel = path.join('native/cuda/ops', f);
    for (const arch of ['90a', '80']) {
      const now = ptx(repo, rel, arch);
      const before = fs.existsSync(path.join(base, rel)) ? ptx(base, rel, arch) : null;
      if (now === null && before === null) {
        console.log(`${rel} (${arch}): does not compile on either side (skipped)`);
        continue;
      }
      if (now === null || before === null || normalise(now) !== normalise(before)) {
        differ++;
        console.log(`${rel} (${arch}): ${before === null ? 'new or not compiling at ' + rev : now === null ? 'does not compile now' : 'DIFFERS'}`);
      }
    }
  }
} finally {
  execFileSync('git', ['-C', repo, 'worktree', 'remove', '--force', base]);
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log(differ === 0 ? `ptx-compare: the PTX of every kernel file equals ${rev}'s` : `ptx-compare: ${differ} differ from ${rev}`);
process.exit(differ === 0 ? 0 : 1);
