#!/usr/bin/env bash
# The one script that runs on the GPU machine (no Node.js, no npm, no network there). Prepare here first
# with scripts/gpu/pack.sh (node binary, N-API headers and the needed node_modules into .gpu/), then:
#   device run, carry [".gpu"], command: bash scripts/gpu/check.sh [--no-bench]
#   options: --no-bench (no benchmarks), --no-micro (skip bench/gpu/run.sh), --no-e2e (skip bench/gpu/e2e*),
#   --no-op-table, --no-peer (skip the transformers baseline), --e2e-variants=a,b (default: default,tc-attn),
#   --micro-tc-only (attention micro-benchmark of the tensor-core prefill kernels only, no SDPA)
# Steps: unpack node; build both addons through scripts/build-native.mjs (CPU, then CUDA: fails loudly
# here if the CUDA addon was not built); write the tiny golden model; run the CUDA tests (conformance
# suite, bf16 matmul, tensor-core attention, golden, memory, sampling, sparse prefill; LONGCTX_CUDA_SYNC=1 so a
# kernel fault names its op);
# print the op table; run the micro-benchmarks (bench/gpu/run.sh, bench/gpu/sampling-bench.ts) and the end-to-end benchmark (ours,
# then transformers, bench/gpu/e2e*). Logs and tables go to $OUT (7 files, under the device's 8-file
# limit with the caller's own tee); the tables are printed last.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/longctx-gpu-out}
mkdir -p "$out"
micro=1
e2e=1
optable=1
peer=1
variants=default,tc-attn
tconly=0
for arg in "$@"; do
  case "$arg" in
    --no-bench) micro=0; e2e=0 ;;
    --no-micro) micro=0 ;;
    --no-e2e) e2e=0 ;;
    --no-op-table) optable=0 ;;
    --no-peer) peer=0 ;;
    --e2e-variants=*) variants=${arg#--e2e-variants=} ;;
    --micro-tc-only) tconly=1 ;;
    *) echo "check: unknown option $arg"; exit 2 ;;
  esac
done
t0=$(date +%s)
stamp() { echo "[check +$(( $(date +%s) - t0 ))s] $*"; }

mkdir -p .gpu/bin && xz -dc .gpu/node.xz > .gpu/bin/node && chmod +x .gpu/bin/node || { echo "check: cannot unpack .gpu/node.xz (run scripts/gpu/pack.sh and carry .gpu)"; exit 2; }
export PATH=$PWD/.gpu/bin:$PATH
[ -e node_modules ] || ln -s .gpu/node_modules node_modules
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
stamp "node $(node --version), $(nvcc --version | grep -o 'release [0-9.]*'), $(cmake --version | head -1)"

stamp "building the addons"
node scripts/build-native.mjs > "$out/build.log" 2>&1
grep '^longctx:' "$out/build.log"
if [ ! -f build/Release/longctx_cuda.node ]; then
  echo "check: build/Release/longctx_cuda.node was not built; the end of $out/build.log:"; tail -40 "$out/build.log"; exit 3
fi

export TMPDIR=/tmp/longctx-tmp && mkdir -p "$TMPDIR"
node --import tsx scripts/gpu/make-tiny-model.mts

stamp "CUDA tests"
LONGCTX_CUDA_SYNC=1 node --import tsx --test --test-concurrency=1 --test-reporter=spec \
  test/native/cuda-conformance.test.ts test/native/cuda-matmul-bf16.test.ts test/native/cuda-attention-tc.test.ts \
  test/native/cuda-golden.test.ts test/native/cuda-memory.test.ts test/native/cuda-sampling.test.ts \
  test/native/cuda-sparse.test.ts > "$out/tests.log" 2>&1
tests_rc=$?
if grep -q 'CUDA backend unavailable' "$out/tests.log"; then
  echo "check: the CUDA tests SKIPPED here: $(grep -o 'CUDA backend unavailable.*' "$out/tests.log" | head -1)"; tests_rc=4
fi
grep -E '^ℹ (tests|pass|fail|skipped)' "$out/tests.log" | tr '\n' ' '; echo
if [ $tests_rc -ne 0 ]; then
  echo "check: CUDA tests FAILED (rc $tests_rc); failing tests:"
  grep -E '✖|not ok|Error|error:' "$out/tests.log" | head -60
fi

table_rc=0
if [ $optable -eq 1 ]; then
  stamp "op table"
  node --import tsx scripts/gpu/op-table.ts > "$out/op-table.txt" 2>&1
  table_rc=$?
fi

if [ $micro -eq 1 ]; then
  stamp "micro-benchmarks"
  if [ $tconly -eq 1 ]; then
    OUT=$out bash bench/gpu/run.sh --tc-only > /tmp/longctx-bench-run.txt 2>&1 || { echo "check: benchmark failed:"; tail -20 /tmp/longctx-bench-run.txt; }
  else
    OUT=$out bash bench/gpu/run.sh > /tmp/longctx-bench-run.txt 2>&1 || { echo "check: benchmark failed:"; tail -20 /tmp/longctx-bench-run.txt; }
  fi
fi
if [ $micro -eq 1 ]; then
  stamp "sampling micro-benchmark"
  timeout 120 node --import tsx bench/gpu/sampling-bench.ts 2>&1 | grep -v '^{' >> "$out/bench-table.txt" || echo "check: sampling-bench failed"
fi
if [ $e2e -eq 1 ]; then
  stamp "end-to-end: ours"
  timeout 300 node --import tsx bench/gpu/e2e.ts --variant "$variants" > "$out/e2e.jsonl" 2> /tmp/longctx-e2e-err.txt \
    || { echo "check: e2e.ts failed or timed out:"; tail -20 /tmp/longctx-e2e-err.txt; }
  if [ $peer -eq 1 ]; then
    stamp "end-to-end: transformers"
    PYTHONUNBUFFERED=1 timeout 240 python3 bench/gpu/e2e_transformers.py >> "$out/e2e.jsonl" 2> /tmp/longctx-hf-err.txt \
      || { echo "check: e2e_transformers.py failed or timed out:"; grep -v Warning /tmp/longctx-hf-err.txt | tail -20; }
  fi
  python3 bench/gpu/e2e_table.py "$out/e2e.jsonl" >> "$out/bench-table.txt" 2>&1
fi

stamp "done"
[ -f "$out/op-table.txt" ] && { echo; echo "== op table (CUDA backend vs float64 references, suite tolerances) =="; cat "$out/op-table.txt"; }
[ -f "$out/bench-table.txt" ] && cat "$out/bench-table.txt"
echo; echo "tests rc $tests_rc, op table rc $table_rc"
[ $tests_rc -eq 0 ] && [ $table_rc -eq 0 ]
