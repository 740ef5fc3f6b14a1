#!/usr/bin/env bash
# The wgmma kernels on the GPU machine in one call: build; their SASS (sass.txt: the registers each HGMMA
# reads); the dense prefill micro-benchmark at $LENGTHS (default 65536 131072; bench/gpu/run.sh --tc-compare: v4, v5,
# v6 and v3, DCA on v3 and v6, each with its largest difference from v4's output, SDPA beside them) and
# cuda-attention-tc.test.ts; the sparse tests (cuda-sparse.test.ts: the wgmma sparse kernel is the default for a
# bf16 cache); bench/gpu/sparse-bench.ts at $SPARSE_CONTEXTS (default 131072,524288) with LONGCTX_SPARSE_TC=mma
# (the mma.sync kernel) and with the default; then `longctx bench` of the 7B-1M shape at $BENCH_LENGTHS (default
# 131072,524288) in what is left of $BUDGET seconds (default 540). Carry [".gpu"]. Files: build.log, sass.txt,
# bench-table.txt, bench-ours.jsonl, tc.log, sparse-tests.log, sparse-bench.jsonl, e2e.jsonl.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh wgmma
cuda=${CUDA_HOME:-/usr/local/cuda}
: > "$out/sass.txt"
for f in attention-wgmma sparse-wgmma; do
  "$cuda/bin/nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Inative/cuda -cubin native/cuda/ops/$f.cu -o /tmp/$f.cubin \
    && "$cuda/bin/cuobjdump" -sass /tmp/$f.cubin | grep -E 'Function :|HGMMA|LDSM|WARPGROUP' >> "$out/sass.txt"
done
echo "sass: $(grep -c HGMMA "$out/sass.txt") HGMMA"
OUT=$out bash bench/gpu/run.sh --tc-compare ${LENGTHS:-65536 131072} > "$out/bench.log" 2>&1
grep -E 'prefill' "$out/bench.log" | head -20
rm -f "$out/bench.log" "$out/bench-sdpa.jsonl"
stamp dense-bench
timeout 200 node --import tsx --test --test-reporter=spec test/native/cuda-attention-tc.test.ts > "$out/tc.log" 2>&1
echo "tc rc $?: $(grep -E '^ℹ (tests|pass|fail|skipped|cancelled)' "$out/tc.log" | tr '\n' ' ')"
grep -E '^  ✖|worst at' "$out/tc.log" | cut -c1-240 | head -8
stamp tc
timeout 200 node --import tsx --test --test-reporter=spec test/native/cuda-sparse.test.ts > "$out/sparse-tests.log" 2>&1
echo "sparse tests rc $?: $(grep -E '^ℹ (tests|pass|fail|skipped|cancelled)' "$out/sparse-tests.log" | tr '\n' ' ')"
grep -E '^  ✖|✖ .*tensor|AssertionError' "$out/sparse-tests.log" | cut -c1-240 | head -8
stamp sparse-tests
for v in mma default; do
  envs=; [ $v = mma ] && envs=LONGCTX_SPARSE_TC=mma
  env $envs timeout 120 node --import tsx bench/gpu/sparse-bench.ts --contexts "${SPARSE_CONTEXTS:-131072,524288}" 2>/dev/null \
    | grep -v 'fp32 est' | sed "s/^{/{\"sparse_kernel\":\"$v\",/" | tee -a "$out/sparse-bench.jsonl"
done
stamp sparse-bench
left=$(( ${BUDGET:-540} - ($(date +%s) - t0) ))
if [ $left -gt 60 ]; then
  timeout $left node --import tsx scripts/gpu/bench-entry.ts bench --preset qwen2.5-7b-1m --device cuda --lengths "${BENCH_LENGTHS:-131072,524288}" \
    --max-num-batched-tokens 131072 --decode-tokens 16 --json | grep '"length"\|"error"' | tee "$out/e2e.jsonl"
fi
stamp done
