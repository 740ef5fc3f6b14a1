// Writes the golden test's `tiny` model (seed 1, f32; weights and configs, no tokenizer files) where
// test/helpers/models.ts looks for it ($TMPDIR/longctx-test-models-<uid>/tiny-s1-f32), so the golden
// test needs neither the CLI nor its dependencies on the GPU machine. Same bytes as `longctx init-model`.
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initModel } from '../../src/model/init-model.js';

const dir = join(tmpdir(), `longctx-test-models-${process.getuid?.() ?? 0}`, 'tiny-s1-f32');
if (!existsSync(join(dir, 'config.json'))) {
  await initModel(dir, { preset: 'tiny', seed: 1, dtype: 'f32', tokenizer: false, force: true });
}
console.log(`tiny model: ${dir}`);
