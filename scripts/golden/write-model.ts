// Writes the weights and configs of an init-model preset (no tokenizer files): the same bytes as
// `longctx init-model DIR --preset P --seed S --dtype D`. Bundled into one file with esbuild so the
// golden-fixture run can write the model on a machine that has Node.js but not this package's
// node_modules (see scripts/golden/device-golden.sh).
// Usage: node write-model.mjs DIR PRESET SEED DTYPE
import { initModel } from '../../src/model/init-model.js';

const [dir, preset, seed, dtype] = process.argv.slice(2);
if (!dir || !preset || !seed || (dtype !== 'f32' && dtype !== 'bf16')) {
  console.error('usage: write-model DIR PRESET SEED f32|bf16');
  process.exit(1);
}
// no top-level await: keeps the bundle valid as CommonJS too
void initModel(dir, { preset, seed: Number(seed), dtype, force: true, tokenizer: false }).then((r) => {
  console.log(`wrote ${r.files.join(', ')} (${r.numParams} params) to ${dir}`);
});
