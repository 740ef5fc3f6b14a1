#!/usr/bin/env bash
# Runs on the GPU machine (it has torch + transformers, no Node.js packages): regenerates
# test/fixtures/golden-tiny.json and the transformers save_pretrained bf16 models + reference.
# Prepare here first:
#   bash ../shared/tools/gpu-pack.sh     # .gpu/node.xz (the Node.js binary)
#   npx esbuild scripts/golden/write-model.ts --bundle --platform=node --format=esm \
#     --outfile=.gpu/write-model.mjs "--banner:js=import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
# then run this with .gpu carried; results land in $OUT.
set -euo pipefail
mkdir -p .gpu/bin && xz -dc .gpu/node.xz > .gpu/bin/node && chmod +x .gpu/bin/node && export PATH=$PWD/.gpu/bin:$PATH
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES=""
work=$(mktemp -d)
node .gpu/write-model.mjs "$work/golden-tiny" tiny 1 f32
python3 scripts/golden/make-golden.py "$work/golden-tiny" "$OUT/golden-tiny.json" --preset tiny --seed 1 --dtype f32
python3 scripts/golden/make-hf-bf16.py "$work"
cp "$work/hf-bf16-reference.json" "$OUT/"
(cd "$work" && tar cf - hf-tied hf-untied) | split -b 15M - "$OUT/hf-models.tar."
ls -la "$OUT"
