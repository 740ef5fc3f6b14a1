// Builds the native addon (native/ -> build/Release/longctx_cpu.node) with cmake-js's JS API; run by
// `npm install` and `npm run build:native`. Invariant: fully offline (Node-API headers come from the
// node-api-headers and node-addon-api packages; downloading node's headers is made impossible).
// On failure it prints ONE line naming the missing tool or the failed step and exits non-zero.
// Set LONGCTX_SKIP_NATIVE=1 to skip the build (e.g. an install that only needs the TypeScript parts).
import { spawnSync } from 'node:child_process';
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

// TODO(cuda): when nvcc AND cuBLAS (cublas_v2.h + libcublas) are both found, also configure with
// -DLONGCTX_CUDA=ON to build build/Release/longctx_cuda.node. Not attempted until native/cuda exists.

const require = createRequire(path.join(root, 'package.json'));
let BuildSystem;
try {
  ({ BuildSystem } = require('cmake-js'));
  require.resolve('node-api-headers');
  require.resolve('node-addon-api');
} catch {
  fail('cmake-js, node-api-headers or node-addon-api is missing from node_modules: run `npm install` first');
}

const buildSystem = new BuildSystem({
  directory: path.join(root, 'native'),
  out: path.join(root, 'build'),
  config: 'Release',
  parallel: Math.max(1, os.availableParallelism?.() ?? os.cpus().length),
  noLog: true, // cmake-js's own INFO lines; cmake and the compiler still print
});
// cmake-js decides "Node-API addon, no node headers needed" from `binary.napi_versions` in the package.json
// of the CMake directory; ours lives at the repo root, so state it here. The guard below turns any
// attempt to fetch node's headers into an error instead of a download.
buildSystem.options.isNodeApi = true;
buildSystem.dist.ensureDownloaded = async () => {
  throw new Error('cmake-js tried to download node headers (it must use node-api-headers)');
};

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
