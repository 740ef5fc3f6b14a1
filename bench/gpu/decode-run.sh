#!/usr/bin/env bash
# One device call for the decode work (prepare here with scripts/gpu/pack.sh; carry [".gpu"]):
#   bash bench/gpu/decode-run.sh [--no-tests] [--no-bench] [--no-profile] [--no-micro] [--versions] [--tests-first] [--e2e]
# --no-micro: no attn-bench build or run. --e2e: the bench step is one `longctx bench` at 128K through
# scripts/gpu/bench-entry.ts (7B-1M, chunk 16,384, 32 decode tokens, JSON in $out/bench-e2e.jsonl) instead of plan-check.sh.
# --versions: the micro-benchmark times each stream decode row on the v4 kernel, v3 (-v3) and v4 at 2 CTAs per SM
# (-v5), bf16/f32 caches at 32K and 128K only, and the profile runs twice: the defaults, then the previous
# decode kernel, GEMV launch and small ops (LONGCTX_DECODE_KERNEL=3 LONGCTX_GEMV=2 LONGCTX_SMALL_OPS=v3), stream
# decode only, at $PROFILE_LENGTHS (default 32768,131072). --tests-first runs the CUDA tests right after the micro-benchmarks.
# Environment: MICRO_ARGS (attn-bench arguments instead of the defaults), TEST_FILES, TESTS_TIMEOUT (s, default 300),
# TESTS_SYNC (LONGCTX_CUDA_SYNC for the tests, default 1), PROFILE_LENGTHS, PROFILE_VARIANTS (default stream,tiled;
# stream-fp32 is the stream kernel without tensor-core decode), PROFILE_STEPS (default 24), PROFILE_TIMEOUT (s, default 200),
# BENCH_TIMEOUT (s, default 200).
# Steps, each with a time limit, logs under $OUT: build both addons; decode micro-benchmarks (attn-bench
# --decode-only --gemv: stream vs tiled decode attention at 32K/128K/256K, f32 and bf16 caches, plain and DCA;
# the T = 1 GEMV shapes); the decode-step profile (bench/gpu/decode-profile.ts: per-op CUDA-event times of a
# 7B-1M decode step on the planned backend, stream vs tiled); the CUDA tests (as scripts/gpu/check.sh); then
# `longctx bench` through scripts/gpu/plan-check.sh (LENGTHS, default 32768,131072). A short summary last.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/longctx-decode-out}
mkdir -p "$out"
tests=1
bench=1
profile=1
versions=0
tests_first=0
micro=1
e2e=0
for arg in "$@"; do
  case "$arg" in
    --no-tests) tests=0 ;;
    --no-bench) bench=0 ;;
    --no-profile) profile=0 ;;
    --versions) versions=1 ;;
    --tests-first) tests_first=1 ;;
    --no-micro) micro=0 ;;
    --e2e) e2e=1 ;;
    *) echo "decode-run: unknown option $arg"; exit 2 ;;
  esac
done
t0=$(date +%s)
stamp() { echo "[decode-run +$(( $(date +%s) - t0 ))s] $*"; }
mkdir -p .gpu/bin && xz -dc .gpu/node.xz > .gpu/bin/node && chmod +x .gpu/bin/node || { echo "decode-run: cannot unpack .gpu/node.xz"; exit 2; }
export PATH=$PWD/.gpu/bin:$PATH
[ -e node_modules ] || ln -s .gpu/node_modules node_modules
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
stamp "building"
node scripts/build-native.mjs > "$out/build.log" 2>&1
grep '^longctx:' "$out/build.log"
[ -f build/Release/longctx_cuda.node ] || { echo "decode-run: CUDA addon not built"; tail -40 "$out/build.log"; exit 3; }
export TMPDIR=/tmp/longctx-tmp && mkdir -p "$TMPDIR"

if [ $micro -eq 1 ]; then
  stamp "micro-benchmarks"
  cuda=${CUDA_HOME:-/usr/local/cuda}
  "$cuda/bin/nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Inative/cuda bench/gpu/attn-bench.cu \
    build/cuda/liblongctx_cuda_ops.a -L"$cuda/lib64" -lcublas -Xlinker -rpath -Xlinker "$cuda/lib64" -o /tmp/attn-bench \
    && if [ -n "${MICRO_ARGS:-}" ]; then
      timeout 150 /tmp/attn-bench $MICRO_ARGS
    elif [ $versions -eq 1 ]; then
      timeout 150 /tmp/attn-bench --decode-only --gemv --versions --only=fp32-kvbf16,dca-fp32-kvbf16,fp32,dca-fp32 32768 131072
    else
      timeout 120 /tmp/attn-bench --decode-only --gemv 32768 131072 262144
    fi > "$out/micro.jsonl" 2>&1 \
    || { echo "decode-run: micro-benchmark failed"; tail -5 "$out/micro.jsonl"; }
fi

tests_rc=0
run_tests() {
  stamp "CUDA tests"
  node --import tsx scripts/gpu/make-tiny-model.mts
  LONGCTX_CUDA_SYNC=${TESTS_SYNC:-1} timeout ${TESTS_TIMEOUT:-300} node --import tsx --test --test-concurrency=1 --test-reporter=spec \
    ${TEST_FILES:-test/native/cuda-conformance.test.ts test/native/cuda-matmul-bf16.test.ts test/native/cuda-attention-tc.test.ts \
    test/native/cuda-golden.test.ts test/native/cuda-memory.test.ts} > "$out/tests.log" 2>&1
  tests_rc=$?
  grep -E '^ℹ (tests|pass|fail|skipped)' "$out/tests.log" | tr '\n' ' '; echo
  [ $tests_rc -ne 0 ] && { echo "decode-run: CUDA tests FAILED (rc $tests_rc):"; grep -E '✖|not ok|Error|error:' "$out/tests.log" | head -40; }
}
[ $tests -eq 1 ] && [ $tests_first -eq 1 ] && run_tests

if [ $profile -eq 1 ]; then
  stamp "decode-step profile"
  if [ $versions -eq 1 ]; then
    plens=${PROFILE_LENGTHS:-32768,131072}
    timeout 100 node --import tsx bench/gpu/decode-profile.ts --lengths "$plens" --steps 16 --variants stream > "$out/profile.jsonl" 2> "$out/profile-err.txt" \
      || { echo "decode-run: profile failed"; tail -20 "$out/profile-err.txt"; }
    stamp "decode-step profile, previous kernels"
    LONGCTX_DECODE_KERNEL=3 LONGCTX_GEMV=2 LONGCTX_SMALL_OPS=v3 timeout 100 node --import tsx bench/gpu/decode-profile.ts --lengths "$plens" --steps 16 --variants stream \
      > "$out/profile-previous.jsonl" 2>> "$out/profile-err.txt" || { echo "decode-run: previous-kernel profile failed"; tail -20 "$out/profile-err.txt"; }
  else
    timeout ${PROFILE_TIMEOUT:-200} node --import tsx bench/gpu/decode-profile.ts --lengths "${PROFILE_LENGTHS:-32768,131072,262144}" --steps ${PROFILE_STEPS:-24} \
      --variants "${PROFILE_VARIANTS:-stream,tiled}" > "$out/profile.jsonl" 2> "$out/profile-err.txt" \
      || { echo "decode-run: profile failed"; tail -20 "$out/profile-err.txt"; }
  fi
fi

[ $tests -eq 1 ] && [ $tests_first -eq 0 ] && run_tests

if [ $bench -eq 1 ] && [ $e2e -eq 1 ]; then
  stamp "longctx bench 128K (bench-entry)"
  timeout ${BENCH_TIMEOUT:-200} node --import tsx scripts/gpu/bench-entry.ts bench --preset qwen2.5-7b-1m --device cuda --lengths 131072 \
    --max-num-batched-tokens 16384 --decode-tokens 32 --json > "$out/bench-e2e.jsonl" 2> "$out/bench-e2e-err.txt" || echo "decode-run: e2e bench failed"
  grep '"kind":"length"' "$out/bench-e2e.jsonl" | cut -c1-400
elif [ $bench -eq 1 ]; then
  stamp "longctx bench (plan-check)"
  OUT=$out timeout 200 bash scripts/gpu/plan-check.sh bench > "$out/plan-check.txt" 2>&1 || echo "decode-run: plan-check bench failed"
  grep '"kind":"length"' "$out/bench-7b.jsonl" 2>/dev/null | cut -c1-200
fi
stamp "done"
[ $micro -eq 1 ] && { echo "== micro"; grep -v '"kind":"device"' "$out/micro.jsonl" | cut -c1-220; }
echo "== profile"; cat "$out/profile.jsonl" 2>/dev/null | cut -c1-${PROFILE_CUT:-1500}
[ -f "$out/profile-previous.jsonl" ] && { echo "== profile, previous kernels"; cut -c1-1500 "$out/profile-previous.jsonl"; }
exit $tests_rc
