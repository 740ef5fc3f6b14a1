#!/usr/bin/env bash
# The issue-6 table in one GPU call, in priority order so a cut-off run still returns the first results:
#   1. build both addons (sm_90a only unless FULL_BUILD=1);
#   2. the CUDA tests named in $TESTS (default: every test/native/cuda-*.test.ts, $TEST_JOBS files at a time; none: skipped);
#   3. transformers + SDPA at $PEER_LENGTHS (default 32768,131072) and `longctx bench` of the 7B-1M shape, sparse prefill,
#      at $LENGTHS (default 32768,131072,262144,524288) with $CHUNK-token steps (default 131072, Qwen's recommended
#      max_num_batched_tokens for the 1M models), $DECODE decode tokens (default 64) on both sides;
#   4. unless EXTRAS=0: 128K again with 16,384-token steps, and its per-op GPU times (--op-times);
#   5. unless EXTRAS=0: the memory a 524,288-token context needs (KV pool of exactly that many tokens) at
#      $MEM_CHUNK-token steps;
#   6. $LONGEST (default 1,000,000) tokens, then one table with ratios.
# Carry [".gpu"] (see plan-check.sh for what it holds). Six files under $OUT (the device returns at most 8): build.log,
# tests.log, peer.jsonl, bench.jsonl, extra.jsonl (the 16K-step, op-time and 512K-memory rows, tagged "variant"), table.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh final
tests=${TESTS:-$(ls test/native/cuda-*.test.ts | tr '\n' ' ')}
if [ "$tests" != none ]; then
# files in parallel (their float64 references are host-bound; the GPU has room for several contexts)
timeout "${TEST_LIMIT:-200}" node --import tsx --test --test-concurrency="${TEST_JOBS:-6}" --test-timeout=150000 --test-reporter=spec $tests > "$out/tests.log" 2>&1
echo "tests rc $?: $(grep -E '^ℹ (tests|pass|fail|skipped)' "$out/tests.log" | tr '\n' ' ')"
grep -E '✖' "$out/tests.log" | head -20
stamp tested
fi
bench() { node --import tsx scripts/gpu/bench-entry.ts bench --preset qwen2.5-7b-1m --device cuda "$@"; }
python3 bench/gpu/e2e_transformers.py --lengths "${PEER_LENGTHS:-32768,131072}" --decode "${DECODE:-64}" > "$out/peer.jsonl" 2>&1
grep -E '"e2e"|"error"' "$out/peer.jsonl"
stamp peer
bench --lengths "${LENGTHS:-32768,131072,262144,524288}" --max-num-batched-tokens "${CHUNK:-131072}" --decode-tokens "${DECODE:-64}" --json | tee "$out/bench.jsonl"
stamp bench
if [ "${EXTRAS:-1}" != 0 ]; then
bench --lengths 131072 --max-num-batched-tokens 16384 --decode-tokens 16 --json | grep '"length"' | sed 's/^{/{"variant":"chunk16k",/' | tee -a "$out/extra.jsonl"
bench --lengths 131072 --max-num-batched-tokens "${CHUNK:-131072}" --decode-tokens 4 --op-times --json | grep '"op_times"\|"length"' | sed 's/^{/{"variant":"op-times",/' >> "$out/extra.jsonl"
stamp ops
bench --max-model-len 524320 --kv-cache-memory-bytes $((524320 * 57344)) --max-num-batched-tokens "${MEM_CHUNK:-16384}" \
  --lengths 32768 --decode-tokens 8 --json | grep '"plan"\|"length"' | sed 's/^{/{"variant":"mem512",/' | tee -a "$out/extra.jsonl"
stamp mem512
fi
# the longest last, so a cut-off call still has everything above
bench --lengths "${LONGEST:-1000000}" --max-num-batched-tokens "${CHUNK:-131072}" --decode-tokens "${DECODE:-64}" --json | grep '"length"\|"error"' | tee -a "$out/bench.jsonl"
python3 scripts/gpu/bench-table.py "$out/bench.jsonl" "$out/peer.jsonl" | tee "$out/table.txt"
stamp done
