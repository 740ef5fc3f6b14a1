#!/usr/bin/env bash
# Builds and runs the GPU micro-benchmarks side by side (run by scripts/gpu/check.sh on the GPU machine,
# after the CUDA addon build left build/cuda/liblongctx_cuda_ops.a): our attention kernel and GEMM paths
# (attn-bench.cu) vs PyTorch SDPA (sdpa_bench.py), then one table (compare.py). Logs go to $OUT.
# Usage: bench/gpu/run.sh [--tc-only | --kv-compare | --tc-compare] [contextLen ...]   (default 4096 16384 65536)
#   --tc-only: only the tensor-core prefill attention rows (no GEMM, no SDPA; the table then lacks the peer)
#   --kv-compare: f32 vs bf16 KV cache: fp32-kernel decode and tensor-core prefill rows (no GEMM, no SDPA)
#   --tc-compare: tensor-core prefill over a bf16 cache, v4 vs v3 (plain) and DCA, beside SDPA bf16 prefill
#     (sdpa_bench.py --prefill-bf16), all in this one call (default lengths 4096 16384 65536 131072)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/longctx-bench}
mkdir -p "$out"
cuda=${CUDA_HOME:-/usr/local/cuda}
"$cuda/bin/nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Inative/cuda bench/gpu/attn-bench.cu \
  build/cuda/liblongctx_cuda_ops.a -L"$cuda/lib64" -lcublas -Xlinker -rpath -Xlinker "$cuda/lib64" -o /tmp/attn-bench
tconly=0
kvcmp=0
[ "${1:-}" = "--tc-only" ] && { tconly=1; shift; }
[ "${1:-}" = "--kv-compare" ] && { kvcmp=1; shift; }
tccmp=0
[ "${1:-}" = "--tc-compare" ] && { tccmp=1; shift; }
if [ $tccmp -eq 1 ]; then
  lens=("$@")
  [ ${#lens[@]} -eq 0 ] && lens=(4096 16384 65536 131072)
  timeout 240 /tmp/attn-bench --tc-only --tc-versions --only=tc-bf16-kvbf16,dca-tc-bf16-kvbf16 "${lens[@]}" \
    | tee "$out/bench-ours.jsonl" || echo "run.sh: attn-bench failed or timed out (partial results kept)"
  PYTHONUNBUFFERED=1 timeout 150 python3 bench/gpu/sdpa_bench.py --prefill-bf16 "${lens[@]}" | tee "$out/bench-sdpa.jsonl" \
    || echo "run.sh: sdpa_bench failed or timed out (partial results kept)"
elif [ $tconly -eq 1 ]; then
  timeout 240 /tmp/attn-bench --tc-only "$@" | tee "$out/bench-ours.jsonl" || echo "run.sh: attn-bench failed or timed out (partial results kept)"
  : > "$out/bench-sdpa.jsonl"
elif [ $kvcmp -eq 1 ]; then
  { timeout 120 /tmp/attn-bench --decode-only --only=fp32,fp32-kvbf16 "$@" \
    && timeout 120 /tmp/attn-bench --tc-only --only=tc-bf16,tc-bf16-kvbf16 "$@"; } | grep -v '"kind":"device"' \
    | tee "$out/bench-ours.jsonl" || echo "run.sh: attn-bench failed or timed out (partial results kept)"
  : > "$out/bench-sdpa.jsonl"
else
  timeout 240 /tmp/attn-bench "$@" | tee "$out/bench-ours.jsonl" || echo "run.sh: attn-bench failed or timed out (partial results kept)"
  PYTHONUNBUFFERED=1 timeout 150 python3 bench/gpu/sdpa_bench.py "$@" | tee "$out/bench-sdpa.jsonl" || echo "run.sh: sdpa_bench failed or timed out (partial results kept)"
fi
python3 bench/gpu/compare.py "$out/bench-ours.jsonl" "$out/bench-sdpa.jsonl" | tee "$out/bench-table.txt"
