#!/usr/bin/env bash
# The wgmma prefill kernel (LONGCTX_PREFILL_TC=6) on the GPU machine in one call: build; bench/gpu/run.sh
# --tc-compare at $LENGTHS (default 4096 16384 65536 131072: v4, v5, v6 and v3 on a bf16 cache, each with its
# largest difference from v4's output, DCA on v3, PyTorch SDPA bf16 beside them); the bf16-cache cases of
# cuda-attention-tc.test.ts on v6; then the files in $TESTS (default: conformance, golden, memory, bf16 GEMM) in
# what is left of $BUDGET seconds (default 560). Carry [".gpu"]. Files: build.log, bench-*.{jsonl,txt}, tc6.log,
# tests.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh wgmma
OUT=$out bash bench/gpu/run.sh --tc-compare ${LENGTHS:-4096 16384 65536 131072} > "$out/bench.log" 2>&1
grep -vE '^\{' "$out/bench.log" | head -40
stamp bench
LONGCTX_PREFILL_TC=6 timeout "${TC_LIMIT:-200}" node --import tsx --test --test-reporter=spec --test-name-pattern "bf16 cache" \
  test/native/cuda-attention-tc.test.ts > "$out/tc6.log" 2>&1
echo "tc6 rc $?: $(grep -E '^ℹ (tests|pass|fail|skipped|cancelled)' "$out/tc6.log" | tr '\n' ' ')"
grep -E '✖|max|bound' "$out/tc6.log" | head -12
stamp tc6
left=$(( ${BUDGET:-560} - ($(date +%s) - t0) ))
tests=${TESTS:-test/native/cuda-conformance.test.ts test/native/cuda-golden.test.ts test/native/cuda-memory.test.ts test/native/cuda-matmul-bf16.test.ts}
if [ $left -gt 30 ]; then
  timeout $left node --import tsx --test --test-concurrency="${JOBS:-4}" --test-reporter=spec $tests > "$out/tests.log" 2>&1
  echo "tests rc $? (limit $left s): $(grep -E '^ℹ (tests|pass|fail|skipped|cancelled)' "$out/tests.log" | tr '\n' ' ')"
  grep -E '✖' "$out/tests.log" | head -12
fi
stamp done
