#!/usr/bin/env bash
# The wgmma prefill kernel (the default on Hopper for a bf16 cache, plain and DCA) on the GPU machine in one call:
# build; the kernels' SASS (sass.txt: which registers each HGMMA reads); bench/gpu/run.sh --tc-compare at $LENGTHS
# (default 4096 16384 65536 131072: v4, v5, v6 and v3 on a bf16 cache, DCA on v3 and v6, each with its largest
# difference from the first version's output, PyTorch SDPA bf16 beside them); cuda-attention-tc.test.ts on the
# default kernels; then the files in $TESTS (default: golden, memory; none: skipped) and `longctx bench` of the 7B-1M shape at
# $BENCH_LENGTHS (default 32768,131072; none when empty) in what is left of $BUDGET seconds (default 560).
# Carry [".gpu"]. Files: build.log, sass.txt, bench-*.{jsonl,txt}, tc.log, tests.log, e2e.jsonl.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh wgmma
cuda=${CUDA_HOME:-/usr/local/cuda}
"$cuda/bin/nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Inative/cuda -cubin native/cuda/ops/attention-wgmma.cu -o /tmp/wg.cubin \
  && "$cuda/bin/cuobjdump" -sass /tmp/wg.cubin | grep -E 'Function :|HGMMA|LDSM|WARPGROUP' > "$out/sass.txt"; echo "sass: $(grep -c HGMMA "$out/sass.txt") HGMMA"
OUT=$out bash bench/gpu/run.sh --tc-compare ${LENGTHS:-4096 16384 65536 131072} > "$out/bench.log" 2>&1
grep -vE '^\{|GEMM|shape' "$out/bench.log" | head -40
stamp bench
timeout "${TC_LIMIT:-240}" node --import tsx --test --test-reporter=spec test/native/cuda-attention-tc.test.ts > "$out/tc.log" 2>&1
echo "tc rc $?: $(grep -E '^ℹ (tests|pass|fail|skipped|cancelled)' "$out/tc.log" | tr '\n' ' ')"
grep -E '^  ✖|worst at' "$out/tc.log" | cut -c1-240 | head -12
stamp tc
left=$(( ${BUDGET:-560} - ($(date +%s) - t0) ))
tests=${TESTS:-test/native/cuda-golden.test.ts test/native/cuda-memory.test.ts}
if [ "$tests" != none ] && [ $left -gt 30 ]; then
  timeout $left node --import tsx --test --test-concurrency="${JOBS:-2}" --test-reporter=spec $tests > "$out/tests.log" 2>&1
  echo "tests rc $? (limit $left s): $(grep -E '^ℹ (tests|pass|fail|skipped|cancelled)' "$out/tests.log" | tr '\n' ' ')"
  grep -E '^  ✖' "$out/tests.log" | head -12
fi
stamp tests
left=$(( ${BUDGET:-560} - ($(date +%s) - t0) ))
if [ -n "${BENCH_LENGTHS-32768,131072}" ] && [ $left -gt 60 ]; then
  timeout $left node --import tsx scripts/gpu/bench-entry.ts bench --preset qwen2.5-7b-1m --device cuda --lengths "${BENCH_LENGTHS:-32768,131072}" \
    --max-num-batched-tokens 131072 --decode-tokens 16 --json | grep '"length"\|"error"' | tee "$out/e2e.jsonl"
fi
stamp done
