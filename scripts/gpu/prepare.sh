# Sourced by the one-call GPU scripts (quick-check.sh, final-check.sh, verify.sh) after they cd to the repo root:
# $out (= $OUT, or /tmp/longctx-gpu-out), t0 and stamp for elapsed-time lines, the carried node on PATH
# (.gpu/node.xz) and node_modules, both addons built (sm_90a alone unless FULL_BUILD=1; build.log under $out),
# TMPDIR, and the tiny test model. Exits 3 when the CUDA addon did not build. $1: the name stamp prints.
out=${OUT:-/tmp/longctx-gpu-out}
mkdir -p "$out"
t0=$(date +%s)
prepare_name=$1
stamp() { echo "[$prepare_name +$(( $(date +%s) - t0 ))s] $*"; }
mkdir -p .gpu/bin && xz -dc .gpu/node.xz > .gpu/bin/node && chmod +x .gpu/bin/node && export PATH=$PWD/.gpu/bin:$PATH
[ -e node_modules ] || ln -s .gpu/node_modules node_modules
[ "${FULL_BUILD:-0}" = 1 ] || export LONGCTX_CUDA_SM90A_ONLY=1
node scripts/build-native.mjs > "$out/build.log" 2>&1; grep '^longctx:' "$out/build.log"
[ -f build/Release/longctx_cuda.node ] || { echo "$prepare_name: no CUDA addon"; grep -E 'error' "$out/build.log" | head -20; exit 3; }
stamp built
export TMPDIR=/tmp/longctx-tmp && mkdir -p "$TMPDIR"
node --import tsx scripts/gpu/make-tiny-model.mts > /dev/null
