#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored through .git/info/exclude) for scripts/gpu/check.sh on the GPU machine:
# the node binary and N-API headers (../shared/tools/gpu-pack.sh) plus the node_modules packages the
# build and the TypeScript tests need (scripts/gpu/pack-modules.mjs). Then carry ".gpu" in the device run.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ../shared/tools/gpu-pack.sh
node scripts/gpu/pack-modules.mjs
du -sh .gpu | sed 's/^/pack: total /'
