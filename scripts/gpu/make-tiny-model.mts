// Writes the `tiny` and `tiny-dca` models (seed 1, f32; weights and configs, no tokenizer files) where
// test/helpers/models.ts looks for them ($TMPDIR/longctx-test-models-<uid>/<preset>-s1-f32), so the golden and
// graph tests need neither the CLI nor its dependencies on the GPU machine. Same bytes as `longctx init-model`.
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init-model.js';

for (const preset of ['tiny', 'tiny-dca']) {
  const dir = join(tmpdir(), `longctx-test-models-${process.getuid?.() ?? 0}`, `${preset}-s1-f32`);
  if (!existsSync(join(dir, 'config.json'))) {
    await initModel(dir, { preset, seed: 1, dtype: 'f32', tokenizer: false, force: true });
  }
  console.log(`${preset} model: ${dir}`);
}
