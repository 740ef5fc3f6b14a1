#!/usr/bin/env bash
# The engine and the server on the GPU machine, from the compiled dist/: builds both addons, then
#   1. scripts/gpu/engine-check.mjs on the tiny model (f32 weights: the exact fp32 path) and on its bf16
#      twin (bf16 tensor-core GEMMs): CUDA engine vs CPU engine, same tokens;
#   2. `longctx serve --device cuda`: one chat completion and one streamed completion over HTTP, then
#      SIGTERM: exit code 0.
# Prepare here: bash ../shared/tools/gpu-pack.sh; node scripts/gpu/pack-modules.mjs --engine --no-tsx; npm run build;
#   npx esbuild scripts/golden/write-model.ts --bundle --platform=node --format=esm --outfile=.gpu/write-model.mjs \
#     "--banner:js=import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
#   mkdir -p .gpu/tok && cp <an init-model dir>/tokenizer*.json .gpu/tok/ (tokenizer.json may be xz-compressed)
# then device run with carry [".gpu", "dist"]: bash scripts/gpu/engine-check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/longctx-gpu-out}
mkdir -p "$out"
mkdir -p .gpu/bin && xz -dc .gpu/node.xz > .gpu/bin/node && chmod +x .gpu/bin/node && export PATH=$PWD/.gpu/bin:$PATH
[ -e node_modules ] || ln -s .gpu/node_modules node_modules
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
node scripts/build-native.mjs > "$out/build.log" 2>&1; grep '^longctx:' "$out/build.log"
[ -f build/Release/longctx_cuda.node ] || { echo "engine-check: the CUDA addon was not built"; tail -30 "$out/build.log"; exit 3; }
[ -f .gpu/tok/tokenizer.json.xz ] && xz -dc .gpu/tok/tokenizer.json.xz > .gpu/tok/tokenizer.json
rc=0
for dtype in f32 bf16; do
  m=/tmp/longctx-tiny-$dtype
  node .gpu/write-model.mjs $m tiny 1 $dtype > /dev/null && cp .gpu/tok/tokenizer.json .gpu/tok/tokenizer_config.json $m/
  node scripts/gpu/engine-check.mjs $m $([ $dtype = bf16 ] && echo --bf16) || rc=1
done
port=8741
node bin/longctx.js serve --model /tmp/longctx-tiny-bf16 --device cuda --port $port --log-level warn > "$out/serve.log" 2>&1 &
pid=$!
for i in $(seq 1 60); do grep -q 'serving' "$out/serve.log" && break; sleep 0.5; done
cat "$out/serve.log"
curl -s localhost:$port/v1/chat/completions -H 'content-type: application/json' \
  -d '{"model":"longctx-tiny-bf16","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"temperature":0}' | head -c 600; echo
curl -sN localhost:$port/v1/completions -H 'content-type: application/json' \
  -d '{"model":"longctx-tiny-bf16","prompt":"Hello","max_tokens":4,"temperature":0,"stream":true}' | tail -c 300; echo
kill -TERM $pid; wait $pid; src=$?
echo "serve --device cuda: exit code $src after SIGTERM"
[ $src -eq 0 ] || rc=1
exit $rc
