// Builds the native addon (native/ -> build/Release/longctx_cpu.node) with cmake-js's JS API; run by
// `npm install` and `npm run build:native`. Invariant: fully offline (Node-API headers come from the
// node-api-headers and node-addon-api packages; downloading node's headers is made impossible).
// On failure it prints ONE line naming the missing tool or the failed step and exits non-zero.
// Set LONGCTX_SKIP_NATIVE=1 to skip the build (e.g. an install that only needs the TypeScript parts).
// Then, only where nvcc and cuBLAS (cublas_v2.h + libcublas) are found, the CUDA addon (native/cuda ->
// build/Release/longctx_cuda.node, its own CMake project built in build/cuda). It is optional: no CUDA,
// LONGCTX_SKIP_CUDA=1, or a failed CUDA build prints one line and still exits 0.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const addonPath = path.join(root, 'build', 'Release', 'longctx_cpu.node');

function fail(message) {
  console.error(`longctx: native build failed: ${message}`);
  process.exit(1);
}

function toolVersion(command) {
  const r = spawnSync(command, ['--version'], { encoding: 'utf8' });
  return r.error || r.status !== 0 ? null : r.stdout.split('\n')[0];
}

if (process.env.LONGCTX_SKIP_NATIVE === '1') {
  console.log('longctx: LONGCTX_SKIP_NATIVE=1, skipping the native addon build');
  process.exit(0);
}

const cmakeVersion = toolVersion('cmake');
if (!cmakeVersion) {
  fail('cmake not found on PATH: install CMake >= 3.15 (e.g. `sudo apt-get install cmake`, `brew install cmake` or `pip install cmake`)');
}
const [major, minor] = (cmakeVersion.match(/(\d+)\.(\d+)/) ?? ['', '0', '0']).slice(1).map(Number);
if (major < 3 || (major === 3 && minor < 15)) fail(`${cmakeVersion} is too old: install CMake >= 3.15`);

const cxx = [process.env.CXX, 'c++', 'g++', 'clang++'].find((c) => c && toolVersion(c));
if (!cxx) {
  fail('no C++ compiler found (tried $CXX, c++, g++, clang++): install one, e.g. `sudo apt-get install g++` or Xcode command line tools');
}

const require = createRequire(path.join(root, 'package.json'));
let BuildSystem;
try {
  ({ BuildSystem } = require('cmake-js'));
  require.resolve('node-api-headers');
  require.resolve('node-addon-api');
} catch {
  fail('cmake-js, node-api-headers or node-addon-api is missing from node_modules: run `npm install` first');
}

/** A cmake-js build of one CMake project, with the offline guard. */
function offlineBuildSystem(directory, out, cMakeOptions = {}) {
  const buildSystem = new BuildSystem({
    directory,
    out,
    config: 'Release',
    parallel: Math.max(1, os.availableParallelism?.() ?? os.cpus().length),
    noLog: true, // cmake-js's own INFO lines; cmake and the compiler still print
    cMakeOptions,
  });
  // cmake-js decides "Node-API addon, no node headers needed" from `binary.napi_versions` in the package.json
  // of the CMake directory; ours lives at the repo root, so state it here. The guard below turns any
  // attempt to fetch node's headers into an error instead of a download.
  buildSystem.options.isNodeApi = true;
  buildSystem.dist.ensureDownloaded = async () => {
    throw new Error('cmake-js tried to download node headers (it must use node-api-headers)');
  };
  return buildSystem;
}

const buildSystem = offlineBuildSystem(path.join(root, 'native'), path.join(root, 'build'));

try {
  await buildSystem.build();
} catch (e) {
  fail(`${e instanceof Error ? e.message : String(e)} (see the cmake/compiler output above)`);
}

try {
  const addon = require(addonPath);
  console.log(`longctx: built ${path.relative(root, addonPath)} (cpu, ${addon.simdLevel})`);
} catch (e) {
  fail(`built ${addonPath} but it does not load: ${e instanceof Error ? e.message : String(e)}`);
}

// ---------- the optional CUDA addon ----------

/** Candidate CUDA toolkit roots, most specific first. */
function cudaRoots() {
  const roots = [process.env.CUDA_HOME, process.env.CUDA_PATH, process.env.CUDAToolkit_ROOT];
  const onPath = spawnSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' });
  if (onPath.status === 0 && onPath.stdout.trim()) {
    try {
      roots.push(path.dirname(path.dirname(fs.realpathSync(onPath.stdout.trim()))));
    } catch {
      // a dangling link: ignore
    }
  }
  roots.push('/usr/local/cuda');
  return [...new Set(roots.filter((r) => r && fs.existsSync(r)))];
}

/** { root, nvcc, version } of the first toolkit with nvcc, cublas_v2.h and libcublas, or { reason }. */
function findCuda() {
  const roots = cudaRoots();
  if (roots.length === 0 && !toolVersion('nvcc')) return { reason: 'nvcc not found (no CUDA toolkit on PATH, $CUDA_HOME or /usr/local/cuda)' };
  const incDirs = (r) => [path.join(r, 'include'), path.join(r, 'targets', `${os.arch() === 'arm64' ? 'sbsa' : 'x86_64'}-linux`, 'include')];
  const libDirs = (r) => [path.join(r, 'lib64'), path.join(r, 'lib'), path.join(r, 'targets', `${os.arch() === 'arm64' ? 'sbsa' : 'x86_64'}-linux`, 'lib')];
  const missing = [];
  for (const r of roots) {
    const nvcc = path.join(r, 'bin', 'nvcc');
    const version = fs.existsSync(nvcc) ? toolVersion(nvcc) : null;
    if (!version) {
      missing.push(`${r}: no working bin/nvcc`);
      continue;
    }
    const header = incDirs(r).some((d) => fs.existsSync(path.join(d, 'cublas_v2.h')));
    const lib = libDirs(r).some((d) => fs.existsSync(d) && fs.readdirSync(d).some((f) => /^libcublas\.so(\.|$)/.test(f)));
    if (header && lib) {
      const release = spawnSync(nvcc, ['--version'], { encoding: 'utf8' }).stdout.match(/release [\d.]+/)?.[0] ?? 'unknown release';
      return { root: r, nvcc, version: release };
    }
    missing.push(`${r}: ${header ? '' : 'no cublas_v2.h'}${!header && !lib ? ', ' : ''}${lib ? '' : 'no libcublas.so'}`);
  }
  return { reason: `nvcc and cuBLAS not found together (${missing.join('; ') || 'no toolkit root'})` };
}

async function buildCuda() {
  if (process.env.LONGCTX_SKIP_CUDA === '1') {
    console.log('longctx: LONGCTX_SKIP_CUDA=1, skipping the CUDA addon build');
    return;
  }
  const cuda = findCuda();
  if (!cuda.root) {
    console.log(`longctx: CUDA build skipped: ${cuda.reason}`);
    return;
  }
  const cudaAddon = path.join(root, 'build', 'Release', 'longctx_cuda.node');
  const cudaBuild = offlineBuildSystem(path.join(root, 'native', 'cuda'), path.join(root, 'build', 'cuda'), {
    CMAKE_LIBRARY_OUTPUT_DIRECTORY: path.dirname(cudaAddon), // next to longctx_cpu.node, not build/cuda/Release
    CMAKE_CUDA_COMPILER: cuda.nvcc,
    CUDAToolkit_ROOT: cuda.root,
    LONGCTX_CUDA_SM90A_ONLY: process.env.LONGCTX_CUDA_SM90A_ONLY === '1' ? 'ON' : 'OFF',
  });
  try {
    await cudaBuild.build();
  } catch (e) {
    console.log(`longctx: CUDA build failed (the CPU addon is built and usable): ${e instanceof Error ? e.message : String(e)} (see the cmake/nvcc output above)`);
    return;
  }
  try {
    const addon = require(cudaAddon);
    console.log(`longctx: built ${path.relative(root, cudaAddon)} (cuda ${cuda.version}, ${addon.deviceCount()} GPU(s) visible)`);
  } catch (e) {
    console.log(`longctx: built ${path.relative(root, cudaAddon)} but it does not load here: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
}

await buildCuda();
