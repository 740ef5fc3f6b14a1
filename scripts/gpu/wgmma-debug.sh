#!/usr/bin/env bash
# Diagnostics of the wgmma prefill kernel (LONGCTX_PREFILL_TC=6): build; the no-split bf16-cache cases of
# cuda-attention-tc.test.ts under each LONGCTX_WGMMA_DEBUG value in $DEBUGS (default "0 1 2 4"); the kernel's
# SASS (sass.txt). Carry [".gpu"].
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/prepare.sh wgmma-debug
for d in ${DEBUGS:-0 1 2 4}; do
  LONGCTX_PREFILL_TC=6 LONGCTX_WGMMA_DEBUG=$d timeout 120 node --import tsx --test --test-reporter=spec \
    --test-name-pattern "${PATTERN:-bf16 cache, no key splits}" test/native/cuda-attention-tc.test.ts > "$out/debug-$d.log" 2>&1
  echo "debug $d rc $?: $(grep -E '^ℹ (pass|fail)' "$out/debug-$d.log" | tr '\n' ' ') failing: $(grep -E '^  ✖' "$out/debug-$d.log" | cut -c1-60 | tr '\n' '|')"
  stamp "debug $d"
done
cuda=${CUDA_HOME:-/usr/local/cuda}
"$cuda/bin/nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Inative/cuda -cubin native/cuda/ops/attention-wgmma.cu -o /tmp/wg.cubin \
  && "$cuda/bin/cuobjdump" -sass /tmp/wg.cubin > "$out/sass.txt" 2>&1; echo "sass rc $? ($(wc -l < "$out/sass.txt") lines)"
stamp done
