#!/usr/bin/env bash
# Nsight Compute stall reasons and throughputs of the prefill attention kernels at 16K (28/4 heads, d 128),
# for the notes' "why did it miss" questions. Needs no node: builds bench/gpu/attn-bench.cu straight from
# the kernel sources. One ncu report per variant (first launch only, clocks left alone) into $OUT.
# Usage (device run): bash scripts/gpu/profile-attn.sh [variant ...]   (default: tc-bf16 dca-tc-bf16 fp32)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/longctx-profile}
mkdir -p "$out"
nvcc -std=c++17 -O3 --fmad=false -lineinfo -gencode=arch=compute_90a,code=sm_90a -Inative/cuda bench/gpu/attn-bench.cu \
  native/cuda/ops/common.cu native/cuda/ops/elementwise.cu native/cuda/ops/gemm.cu native/cuda/ops/attention.cu \
  native/cuda/ops/attention-tc.cu native/cuda/ops/attention-wgmma.cu native/cuda/ops/attention-decode.cu -lcublas -o /tmp/attn-prof || exit 1
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(tc-bf16 dca-tc-bf16 fp32)
reasons="barrier long_scoreboard short_scoreboard mio_throttle math_pipe_throttle wait not_selected selected dispatch_stall lg_throttle no_instruction branch_resolving"
metrics=sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed.sum,sm__cycles_elapsed.avg
for r in $reasons; do metrics="$metrics,smsp__average_warps_issue_stalled_${r}_per_issue_active.ratio"; done
for v in "${variants[@]}"; do
  timeout 150 ncu --clock-control none --kernel-name regex:Attention --launch-count 1 --section SpeedOfLight --section SchedulerStats \
    --section WarpStateStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy \
    --metrics "$metrics" \
    /tmp/attn-prof --only="$v" 16384 > "$out/ncu-$v.txt" 2>&1 || echo "profile: ncu failed for $v"
  echo "== $v"; grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L1/TEX Cache Throughput|L2 Cache Throughput|Issue Slots Busy|No Eligible|Achieved Occupancy|Warp Cycles Per Issued|Stall|stall|Executed Ipc|hmma|bank_conflicts|inst_executed|cycles_elapsed|==PROF==|ERR" "$out/ncu-$v.txt" | head -45
done
