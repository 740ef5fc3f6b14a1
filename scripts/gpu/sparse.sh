#!/usr/bin/env bash
# The sparse-prefill run on the GPU machine (prepare .gpu/ with scripts/gpu/pack.sh, as for check.sh):
#   device run, carry [".gpu"], command: bash scripts/gpu/sparse.sh [--no-bench] [--bench-only] [tests...]
# Unpacks node, builds both addons, runs the CUDA tests the sparse path touches (default: cuda-sparse,
# cuda-memory, cuda-conformance, cuda-attention-tc; LONGCTX_CUDA_SYNC=1), then bench/gpu/sparse-bench.ts.
# Logs go to $OUT: build.log, sparse-tests.log, sparse-bench.jsonl; a summary is printed.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/longctx-gpu-out}
mkdir -p "$out"
bench=1
tests=1
files=()
for arg in "$@"; do
  case "$arg" in
    --no-bench) bench=0 ;;
    --bench-only) tests=0 ;;
    test/*) files+=("$arg") ;;
    *) echo "sparse: unknown option $arg"; exit 2 ;;
  esac
done
[ ${#files[@]} -eq 0 ] && files=(test/native/cuda-sparse.test.ts test/native/cuda-memory.test.ts test/native/cuda-conformance.test.ts test/native/cuda-attention-tc.test.ts)
t0=$(date +%s)
stamp() { echo "[sparse +$(( $(date +%s) - t0 ))s] $*"; }
mkdir -p .gpu/bin && xz -dc .gpu/node.xz > .gpu/bin/node && chmod +x .gpu/bin/node || { echo "sparse: cannot unpack .gpu/node.xz"; exit 2; }
export PATH=$PWD/.gpu/bin:$PATH
[ -e node_modules ] || ln -s .gpu/node_modules node_modules
stamp "building the addons"
node scripts/build-native.mjs > "$out/build.log" 2>&1
grep '^longctx:' "$out/build.log"
if [ ! -f build/Release/longctx_cuda.node ]; then
  echo "sparse: the CUDA addon was not built; the end of build.log:"; grep -E 'error' "$out/build.log" | head -30; tail -30 "$out/build.log"; exit 3
fi
export TMPDIR=/tmp/longctx-tmp && mkdir -p "$TMPDIR"
rc=0
if [ $tests -eq 1 ]; then
  stamp "tests: ${files[*]}"
  LONGCTX_CUDA_SYNC=1 node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}" > "$out/sparse-tests.log" 2>&1
  rc=$?
  grep -E '^ℹ (tests|pass|fail|skipped)' "$out/sparse-tests.log" | tr '\n' ' '; echo
  if [ $rc -ne 0 ]; then
    echo "sparse: tests FAILED (rc $rc):"
    grep -E '✖|not ok|Error|error:|allowed|expected|actual' "$out/sparse-tests.log" | head -80
  fi
fi
if [ $bench -eq 1 ]; then
  stamp "benchmark"
  timeout 240 node --import tsx bench/gpu/sparse-bench.ts > "$out/sparse-bench.jsonl" 2> "$out/sparse-bench.err"
  echo "bench rc $?"; cat "$out/sparse-bench.jsonl"; tail -5 "$out/sparse-bench.err"
fi
stamp "done"
exit $rc
