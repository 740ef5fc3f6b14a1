#!/usr/bin/env bash
# A short GPU call for a final tree: build; the files in $TESTS (default: graphs, fused ops, golden, memory) under
# $TEST_LIMIT seconds (default 70); then `longctx bench` of the 7B-1M shape at $LENGTHS (default 262144) in what
# is left of $BUDGET seconds (default 150). Carry [".gpu"]. Files: build.log, tests.log, bench.jsonl.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh short
tests=${TESTS:-test/native/cuda-graphs.test.ts test/native/cuda-fused-ops.test.ts test/native/cuda-golden.test.ts test/native/cuda-memory.test.ts}
timeout "${TEST_LIMIT:-70}" node --import tsx --test --test-concurrency=4 --test-reporter=spec $tests > "$out/tests.log" 2>&1
echo "tests rc $?: $(grep -E '^ℹ (tests|pass|fail|skipped|cancelled)' "$out/tests.log" | tr '\n' ' ')"
grep -E '^  ✖' "$out/tests.log" | cut -c1-200 | head -8
stamp tests
left=$(( ${BUDGET:-150} - ($(date +%s) - t0) ))
[ $left -gt 25 ] && timeout $left node --import tsx scripts/gpu/bench-entry.ts bench --preset qwen2.5-7b-1m --device cuda \
  --lengths "${LENGTHS:-262144}" --max-num-batched-tokens 131072 --decode-tokens 16 --json | grep '"length"\|"error"' | tee "$out/bench.jsonl"
stamp done
