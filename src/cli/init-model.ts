// `longctx init-model DIR`: writes a random-weight Qwen2 model directory from a preset (see
// src/model/init-presets.ts). Owns argument parsing and the one-line summary only; all work is in
// src/model/init-model.ts. Must not: print anything but the summary on stdout.
import { Command, InvalidArgumentError, Option } from 'commander';
import { initModel } from '../model/init-model.js';
import { PRESET_NAMES, PRESETS } from '../model/init-presets.js';

function parseSeed(v: string): number {
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new InvalidArgumentError('must be a non-negative integer');
  return Number(v);
}

export function registerInitModel(program: Command): void {
  program
    .command('init-model')
    .description('write a random-weight Qwen2 model directory (config, safetensors, Qwen2.5 tokenizer) for tests and benchmarks')
    .argument('<dir>', 'directory to create (must be empty unless --force)')
    .addOption(
      new Option('--preset <name>', `model shape: ${PRESET_NAMES.map((n) => `${n} (${PRESETS[n].description})`).join('; ')}`)
        .choices(PRESET_NAMES)
        .default('tiny'),
    )
    .addOption(new Option('--seed <n>', 'random seed: the same seed writes byte-identical files').argParser(parseSeed).default(0))
    .addOption(new Option('--dtype <dtype>', 'weight dtype').choices(['bf16', 'f32']).default('bf16'))
    .option('--force', 'overwrite the model files of a non-empty directory', false)
    .action(async (dir: string, o: { preset: string; seed: number; dtype: 'bf16' | 'f32'; force: boolean }) => {
      const started = Date.now();
      const r = await initModel(dir, { preset: o.preset, seed: o.seed, dtype: o.dtype, force: o.force, progress: true });
      const secs = (Date.now() - started) / 1000;
      const mib = r.weightBytes / 1024 ** 2;
      process.stdout.write(
        `wrote ${r.preset} (${(r.numParams / 1e6).toFixed(1)}M params, ${mib.toFixed(0)} MiB ${o.dtype}, seed ${o.seed}) to ${dir} in ${secs.toFixed(1)} s\n`,
      );
    });
}
