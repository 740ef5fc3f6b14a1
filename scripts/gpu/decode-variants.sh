#!/usr/bin/env bash
# Decode variants side by side in one GPU call: build; the fused-op and graph tests with and without
# LONGCTX_GEMV_PAIR=1; then `longctx bench` of the 7B-1M shape at $LENGTHS (default 131072, 64 decode tokens,
# 131,072-token steps) once per variant in $VARIANTS (name=ENV[,ENV...] separated by spaces; default: base,
# LONGCTX_GEMV_PAIR=0, LONGCTX_DECODE_SPLIT_SCALE=0.5 and =2, base again). Carry [".gpu"]. Files: build.log, tests.log,
# bench.jsonl.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh variants
for pair in 0 1; do
  LONGCTX_GEMV_PAIR=$pair timeout 100 node --import tsx --test --test-reporter=spec test/native/cuda-fused-ops.test.ts test/native/cuda-graphs.test.ts >> "$out/tests.log" 2>&1
  echo "tests (LONGCTX_GEMV_PAIR=$pair) rc $?: $(tail -9 "$out/tests.log" | grep -E '^ℹ (tests|pass|fail)' | tr '\n' ' ')"
done
grep -E '✖' "$out/tests.log" | head -10
stamp tested
for v in ${VARIANTS:-base=LONGCTX_NONE=1 nopair=LONGCTX_GEMV_PAIR=0 split0.5=LONGCTX_DECODE_SPLIT_SCALE=0.5 split2=LONGCTX_DECODE_SPLIT_SCALE=2 base2=LONGCTX_NONE=1}; do
  name=${v%%=*}; envs=${v#*=}
  env ${envs//,/ } node --import tsx scripts/gpu/bench-entry.ts bench --preset qwen2.5-7b-1m --device cuda --max-num-batched-tokens 131072 \
    --lengths "${LENGTHS:-131072}" --decode-tokens 64 --json | grep '"length"\|"error"' | sed "s/^{/{\"variant\":\"$name\",/" | tee -a "$out/bench.jsonl"
  stamp "$name"
done
