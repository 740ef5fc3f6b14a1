#!/usr/bin/env bash
# Every CUDA test file on the GPU machine, in groups whose results are printed as each group ends (a cut-off
# call keeps the groups before it): 1. cuda-attention-tc.test.ts on the default kernels (wgmma on Hopper for a bf16
# cache); 2. the same file's bf16-cache cases with LONGCTX_PREFILL_TC=3, =4, then =5; 3. the decode, sparse, sampling, graph and
# fused-op files; 4. conformance, golden, memory and bf16-GEMM files (the longest, last). Each group runs its files $JOBS at a time (default 4)
# under $GROUP_LIMIT seconds (default 240). Carry [".gpu"]. Two files come back: build.log and tests.log (the
# device returns at most 8).
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh verify
group() { # name, env assignment or -, then test arguments
  local name=$1 envs=$2; shift 2
  echo "=== $name" >> "$out/tests.log"
  local g0=$(date +%s)
  if [ "$envs" = - ]; then envs=; fi
  env $envs timeout "${GROUP_LIMIT:-240}" node --import tsx --test --test-concurrency="${JOBS:-4}" --test-reporter=spec "$@" >> "$out/tests.log" 2>&1
  local rc=$?
  echo "[verify +$(( $(date +%s) - t0 ))s] $name: rc $rc in $(( $(date +%s) - g0 )) s; $(tail -9 "$out/tests.log" | grep -E '^ℹ (tests|pass|fail|cancelled)' | tr '\n' ' ')"
  tail -400 "$out/tests.log" | grep -E '✖' | head -8
}
group "tc prefill (default kernels)" - test/native/cuda-attention-tc.test.ts
group "tc prefill, v3" LONGCTX_PREFILL_TC=3 --test-name-pattern "bf16 cache" test/native/cuda-attention-tc.test.ts
group "tc prefill, v4" LONGCTX_PREFILL_TC=4 --test-name-pattern "bf16 cache" test/native/cuda-attention-tc.test.ts
group "tc prefill, v5" LONGCTX_PREFILL_TC=5 --test-name-pattern "bf16 cache" test/native/cuda-attention-tc.test.ts
group "decode, sparse, sampling, graphs, fused ops" - test/native/cuda-decode-tc.test.ts test/native/cuda-sparse.test.ts test/native/cuda-sampling.test.ts test/native/cuda-graphs.test.ts test/native/cuda-fused-ops.test.ts
group "conformance, golden, memory, GEMM" - test/native/cuda-conformance.test.ts test/native/cuda-golden.test.ts test/native/cuda-memory.test.ts test/native/cuda-matmul-bf16.test.ts
