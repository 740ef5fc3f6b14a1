#!/usr/bin/env bash
# A short GPU call for a merged tree, in priority order so a cut-off run still returns the first results:
# build both addons; the CUDA memory, sampling, sparse and golden tests; the engine on CUDA (LLM.create, tiny
# f32 and bf16, through plan-check.sh's engine step: GPU sampling end to end); then `longctx bench` of the
# 7B-1M shape with sparse prefill at $LENGTHS (default 131072,524288), chunk 16384. Carry [".gpu"] (see
# plan-check.sh for what it holds). Logs and JSON lines under $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh quick
node --import tsx --test --test-concurrency=1 --test-reporter=spec test/native/cuda-memory.test.ts test/native/cuda-sampling.test.ts \
  test/native/cuda-sparse.test.ts test/native/cuda-golden.test.ts > "$out/tests.log" 2>&1
echo "tests rc $?: $(grep -E '^ℹ (tests|pass|fail|skipped)' "$out/tests.log" | tr '\n' ' ')"
grep -E '✖' "$out/tests.log" | head -20
stamp tested
bash scripts/gpu/plan-check.sh engine > "$out/engine.log" 2>&1; echo "engine rc $?"; grep -iE 'agree|identical|tokens|error|fail' "$out/engine.log" | head -12
stamp engine
node --import tsx scripts/gpu/bench-entry.ts bench --preset qwen2.5-7b-1m --device cuda --lengths "${LENGTHS:-131072,524288}" \
  --max-num-batched-tokens 16384 --decode-tokens 16 ${BENCH_ARGS:-} --json | tee "$out/bench-sparse.jsonl"
stamp done
