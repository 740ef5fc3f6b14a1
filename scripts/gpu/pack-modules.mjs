// Copies the node_modules packages that scripts/gpu/check.sh needs on the GPU machine (which has no npm)
// into .gpu/node_modules: cmake-js + node-addon-api + node-api-headers (the addon builds), tsx + esbuild
// (running the TypeScript tests), cli-progress (imported by the model writer) and everything they depend
// on, resolved like node does (nested node_modules first, then hoisted). Not `tokenizers` or the server
// stack. Prints the total size; the device's carry limit is 64 MiB for everything.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// --engine adds what the engine and the server import (scripts/gpu/engine-check.sh runs them from the
// compiled dist/), with only the linux-x64-gnu binary of `tokenizers` (the package ships every
// platform's, 64 MB in all); --no-tsx leaves out tsx and esbuild (11 MB) when no TypeScript runs there.
const engine = process.argv.includes('--engine');
const roots = ['cmake-js', 'node-addon-api', 'node-api-headers', 'cli-progress'];
if (!process.argv.includes('--no-tsx')) roots.push('tsx');
if (engine) roots.push('tokenizers', '@huggingface/jinja', 'commander', 'pino', 'prom-client', 'hono', '@hono/node-server', 'zod');
const otherPlatformBinary = (src) => /tokenizers\.[a-z0-9-]+\.node$/.test(src) && !src.endsWith('tokenizers.linux-x64-gnu.node');
const dest = path.join(root, '.gpu', 'node_modules');

/** The directory of package `name` as seen from package directory `from` (node's lookup order). */
function resolvePkg(name, from) {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', name);
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (dir === root || path.dirname(dir) === dir) return null;
  }
}

const seen = new Set();
const queue = roots.map((name) => [name, root, false]);
while (queue.length > 0) {
  const [name, from, optional] = queue.shift();
  const dir = resolvePkg(name, from);
  if (dir === null) {
    if (!optional) throw new Error(`pack-modules: ${name} (needed from ${from}) is not installed: run npm install`);
    continue;
  }
  if (seen.has(dir)) continue;
  seen.add(dir);
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  for (const dep of Object.keys(pkg.dependencies ?? {})) queue.push([dep, dir, false]);
  for (const dep of Object.keys(pkg.optionalDependencies ?? {})) queue.push([dep, dir, true]); // e.g. @esbuild/linux-x64
  for (const dep of Object.keys(pkg.peerDependencies ?? {})) if (!pkg.peerDependenciesMeta?.[dep]?.optional) queue.push([dep, dir, true]);
}

fs.rmSync(dest, { recursive: true, force: true });
let bytes = 0;
for (const dir of [...seen].sort()) {
  const rel = path.relative(path.join(root, 'node_modules'), dir);
  fs.cpSync(dir, path.join(dest, rel), { recursive: true, dereference: true, filter: (src) => !src.slice(dir.length).includes(`${path.sep}node_modules${path.sep}`) && !otherPlatformBinary(src) });
  const walk = (p) => (fs.statSync(p).isDirectory() ? fs.readdirSync(p).reduce((n, f) => n + walk(path.join(p, f)), 0) : fs.statSync(p).size);
  bytes += walk(path.join(dest, rel));
}
// esbuild's own bin/esbuild is a second copy of the native binary (for its CLI); the JS API tsx uses runs
// @esbuild/<platform>/bin/esbuild, so leave the 11 MB copy behind.
const esbuildCli = path.join(dest, 'esbuild', 'bin', 'esbuild');
if (fs.existsSync(esbuildCli)) {
  bytes -= fs.statSync(esbuildCli).size;
  fs.rmSync(esbuildCli);
}
console.log(`pack-modules: ${seen.size} packages, ${(bytes / 2 ** 20).toFixed(1)} MiB in .gpu/node_modules`);
