#!/usr/bin/env bash
# Issue-7 checks on the GPU machine: the engine's memory plan against what it allocates. Prepare here with
# scripts/gpu/pack.sh and `node scripts/gpu/pack-modules.mjs --engine` (then remove the server stack from
# .gpu/node_modules to stay under the carry limit: hono, @hono, zod, pino*, prom-client and their deps), plus
# .gpu/write-model.mjs and .gpu/tok/ as for engine-check.sh; device run with carry [".gpu"]:
#   bash scripts/gpu/plan-check.sh [STEP...]
# Steps (default: engine bench):
#   engine  LLM.create on CUDA vs CPU for the tiny model, f32 (exact: same tokens) and bf16 (bf16 KV, tensor
#           cores: agreement reported), through scripts/gpu/engine-check.mjs on the TypeScript sources; the
#           plan summary the engine prints before loading weights is shown.
#   bench   longctx bench, Qwen2.5-7B-1M shape, utilization 0.90: TTFT, decode, peak vs plan at $LENGTHS
#           (default 32768,131072).
#   peer    transformers + SDPA on the same shape and $LENGTHS (bench/gpu/e2e_transformers.py), then one table
#           with the bench step's numbers (scripts/gpu/bench-table.py); run after bench in the same call.
#   mem512  the memory a 524,288-token context needs: the 7B shape planned with max_model_len 524,320 and a KV pool of
#           exactly that many tokens (--kv-cache-memory-bytes), one 32K prompt (everything is allocated up front,
#           so the peak does not depend on the prompt: the bench step shows it equal from 32K to 256K).
#   full    longctx bench at utilization 0.98 with --max-model-len auto and the longest admitted prompt, on
#           scripts/gpu/shapes/qwen2.5-7b-1m-mha (MHA: the KV pool, not max_position_embeddings, limits it).
#   sparse  longctx bench with sparse prefill (the preset's published-statistics budgets, local synthetic attention)
#           at $SPARSE_LENGTHS (default 131072,524288,1000000), chunk $SPARSE_CHUNK (default 16384) tokens, then
#           131072 with --attention-pattern random (scattered picks) and with --dense, for the same-call comparison;
#           with peer: one table for the sparse rows too; and the per-op GPU times of the 128K prefill (--op-times).
# The raw JSON lines go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/longctx-gpu-out}
mkdir -p "$out"
steps=${*:-engine bench}
mkdir -p .gpu/bin && xz -dc .gpu/node.xz > .gpu/bin/node && chmod +x .gpu/bin/node && export PATH=$PWD/.gpu/bin:$PATH
[ -e node_modules ] || ln -s .gpu/node_modules node_modules
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ ! -f build/Release/longctx_cuda.node ] || [ -n "$(find native src/runtime -newer build/Release/longctx_cuda.node -name '*.c*' -o -newer build/Release/longctx_cuda.node -name '*.h' | head -1)" ]; then
  node scripts/build-native.mjs > "$out/build.log" 2>&1; grep '^longctx:' "$out/build.log"
fi
[ -f build/Release/longctx_cuda.node ] || { echo "plan-check: the CUDA addon was not built"; tail -30 "$out/build.log"; exit 3; }
export TMPDIR=/tmp/longctx-tmp && mkdir -p "$TMPDIR"
bench() { node --import tsx scripts/gpu/bench-entry.ts bench "$@"; }
[ -f .gpu/tok/tokenizer.json.xz ] && xz -dc .gpu/tok/tokenizer.json.xz > .gpu/tok/tokenizer.json
rc=0
for step in $steps; do
  case $step in
    engine)
      for dtype in f32 bf16; do
        m=/tmp/longctx-tiny-$dtype
        node .gpu/write-model.mjs $m tiny 1 $dtype > /dev/null && cp .gpu/tok/tokenizer.json .gpu/tok/tokenizer_config.json $m/ || { echo "write-model failed"; rc=1; continue; }
        LONGCTX_ENTRY=../../src/engine/llm.ts node --import tsx scripts/gpu/engine-check.mjs "$m" $([ $dtype = bf16 ] && echo --bf16) || rc=1
      done ;;
    bench)
      bench --preset qwen2.5-7b-1m --device cuda --lengths "${LENGTHS:-32768,131072}" --decode-tokens 32 --json | tee "$out/bench-7b.jsonl" || rc=1 ;;
    peer)
      python3 bench/gpu/e2e_transformers.py --lengths "${LENGTHS:-32768,131072}" --decode 32 | tee "$out/peer.jsonl" || rc=1
      [ -f "$out/bench-7b.jsonl" ] && python3 scripts/gpu/bench-table.py "$out/bench-7b.jsonl" "$out/peer.jsonl" | tee "$out/table.txt" ;;
    sparse)
      bench --preset qwen2.5-7b-1m --device cuda --lengths "${SPARSE_LENGTHS:-131072,524288,1000000}" --max-num-batched-tokens "${SPARSE_CHUNK:-16384}" \
        --decode-tokens 16 --json | tee "$out/bench-sparse.jsonl" || rc=1
      # the per-op split of a sparse prefill (estimation, selection, index, attention, GEMMs), timing on
      bench --preset qwen2.5-7b-1m --device cuda --lengths 131072 --max-num-batched-tokens "${SPARSE_CHUNK:-16384}" --decode-tokens 4 --op-times --json \
        | tee "$out/bench-sparse-ops.jsonl" || rc=1
      for variant in "--attention-pattern random" "--dense"; do
        bench --preset qwen2.5-7b-1m --device cuda --lengths 131072 --max-num-batched-tokens "${SPARSE_CHUNK:-16384}" --decode-tokens 16 $variant --json \
          | tee -a "$out/bench-sparse-variants.jsonl" || rc=1
      done
      [ -f "$out/peer.jsonl" ] && python3 scripts/gpu/bench-table.py "$out/bench-sparse.jsonl" "$out/peer.jsonl" | tee "$out/table-sparse.txt" ;;
    mem512)
      bench --preset qwen2.5-7b-1m --device cuda --max-model-len 524320 --kv-cache-memory-bytes $((524320 * 57344)) \
        --lengths 32768 --decode-tokens 8 --json | tee "$out/bench-mem512.jsonl" || rc=1 ;;
    full)
      bench --model scripts/gpu/shapes/qwen2.5-7b-1m-mha --device cuda --gpu-memory-utilization 0.98 --max-model-len auto \
        --lengths max --decode-tokens 8 --json | tee "$out/bench-full.jsonl" || rc=1 ;;
    *) echo "plan-check: unknown step $step"; rc=2 ;;
  esac
done
exit $rc
