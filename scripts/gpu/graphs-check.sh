#!/usr/bin/env bash
# CUDA graphs on the GPU machine in one call: build; test/native/cuda-graphs.test.ts and cuda-fused-ops.test.ts;
# `longctx bench` decode of the 7B-1M shape at $LENGTHS (default 32768,131072) in each of $MODES (default "graphs
# eager": with graphs, then --enforce-eager, side by side; $DECODE tokens, default 64); then the files in $TESTS
# (default: conformance, golden, memory) under $TEST_LIMIT seconds. Carry [".gpu"]. Files: build.log, graphs.log,
# bench.jsonl, tests.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh graphs
timeout 150 node --import tsx --test --test-reporter=spec test/native/cuda-graphs.test.ts test/native/cuda-fused-ops.test.ts > "$out/graphs.log" 2>&1
echo "graphs test rc $?: $(grep -E '^ℹ (tests|pass|fail|skipped)' "$out/graphs.log" | tr '\n' ' ')"
grep -E '✖|Error|error' "$out/graphs.log" | head -20
stamp graphs-test
bench() { node --import tsx scripts/gpu/bench-entry.ts bench --preset qwen2.5-7b-1m --device cuda --max-num-batched-tokens 131072 --json "$@"; }
for mode in ${MODES:-graphs eager}; do
  extra=; [ $mode = eager ] && extra=--enforce-eager
  bench --lengths "${LENGTHS:-32768,131072}" --decode-tokens "${DECODE:-64}" $extra | grep '"length"\|"error"' | sed "s/^{/{\"mode\":\"$mode\",/" | tee -a "$out/bench.jsonl"
  stamp "bench $mode"
done
tests=${TESTS:-test/native/cuda-conformance.test.ts test/native/cuda-golden.test.ts test/native/cuda-memory.test.ts}
timeout "${TEST_LIMIT:-240}" node --import tsx --test --test-concurrency=4 --test-reporter=spec $tests > "$out/tests.log" 2>&1
echo "tests rc $?: $(grep -E '^ℹ (tests|pass|fail|skipped|cancelled)' "$out/tests.log" | tr '\n' ' ')"
grep -E '✖' "$out/tests.log" | head -20
stamp done
