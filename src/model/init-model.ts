// Writes a random-weight Qwen2 model directory (config.json, generation_config.json, sparse_attention_config.json
// for sparse presets, safetensors weights, Qwen2.5 tokenizer files) for a named preset, streaming tensor by
// tensor, sharding above maxShardBytes.
// Invariant: same (preset, seed, dtype) ⇒ byte-identical files (no time, host or path in any file).
// Must not: overwrite a non-empty directory without `force`, or hold more than two chunks of weights.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { numel } from '../runtime/tensor.js';
import { byteProgress } from './byte-progress.js';
import { checkpointTensors, type CheckpointTensor } from './checkpoint-layout.js';
import { parseModelConfig } from './config.js';
import type { ModelConfig } from './config-types.js';
import { generationConfigJson, PRESET_NAMES, PRESETS, presetConfigJson, presetSparseConfigJson, weightDistribution } from './init-presets.js';
import { writeQwen25TokenizerFiles } from './init-tokenizer-files.js';
import { randomTensorChunks } from './random-weights.js';
import { INDEX_FILE, shardFileName, SINGLE_FILE, writeSafetensors, writeSafetensorsIndex, type TensorToWrite } from './safetensors.js';
import { SPARSE_CONFIG_FILE } from './sparse-config.js';

export const DEFAULT_MAX_SHARD_BYTES = 2 * 1024 ** 3;

export interface InitModelOptions {
  preset?: string; // default "tiny"
  seed?: number; // default 0
  dtype?: 'bf16' | 'f32'; // default "bf16"
  force?: boolean; // allow a non-empty directory (replaces our files, removes stale weight shards)
  progress?: boolean; // byte progress bar on stderr for large presets
  maxShardBytes?: number; // shard above this many bytes of tensor data per file (default 2 GiB)
  tokenizer?: boolean; // write the Qwen2.5 tokenizer files (default true; false: weights and configs only)
}

export interface InitModelResult {
  dir: string;
  preset: string;
  config: ModelConfig;
  numParams: number;
  weightBytes: number; // tensor data bytes over all weight files
  files: string[]; // file names written, in order
}

function prepareDir(dir: string, force: boolean): void {
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      fs.mkdirSync(dir, { recursive: true });
      return;
    }
    if (code === 'ENOTDIR') throw new UserError(`${dir} exists and is not a directory`);
    throw new UserError(`${dir}: cannot read (${code ?? String(e)})`);
  }
  if (entries.length === 0) return;
  if (!force) throw new UserError(`${dir} is not empty: pass --force to overwrite the model files in it`);
  for (const f of entries) {
    if (f === SINGLE_FILE || f === INDEX_FILE || f === SPARSE_CONFIG_FILE || /^model-\d+-of-\d+\.safetensors$/.test(f)) fs.rmSync(path.join(dir, f), { force: true });
  }
}

/** Groups tensors into shards of at most maxShardBytes (a larger tensor gets a shard of its own). */
function shardTensors(tensors: CheckpointTensor[], bytesPerElem: number, maxShardBytes: number): CheckpointTensor[][] {
  const shards: CheckpointTensor[][] = [[]];
  let size = 0;
  for (const t of tensors) {
    const bytes = numel(t.shape) * bytesPerElem;
    if (size > 0 && size + bytes > maxShardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1].push(t);
    size += bytes;
  }
  return shards;
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

export async function initModel(dir: string, opts: InitModelOptions = {}): Promise<InitModelResult> {
  const presetName = opts.preset ?? 'tiny';
  const preset = PRESETS[presetName];
  if (!preset) throw new UserError(`unknown preset "${presetName}" (presets: ${PRESET_NAMES.join(', ')})`);
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new UserError(`--seed must be a non-negative integer, got ${seed}`);
  const dtype = opts.dtype ?? 'bf16';
  if (dtype !== 'bf16' && dtype !== 'f32') throw new UserError(`--dtype must be bf16 or f32, got ${String(dtype)}`);
  const maxShardBytes = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;

  const configJson = presetConfigJson(preset, dtype);
  const config = parseModelConfig(configJson, `preset ${presetName}`);
  const tensors = checkpointTensors(config);
  const bytesPerElem = dtype === 'bf16' ? 2 : 4;
  const stDtype = dtype === 'bf16' ? 'BF16' : 'F32';
  let numParams = 0;
  for (const t of tensors) numParams += numel(t.shape);
  const weightBytes = numParams * bytesPerElem;

  prepareDir(dir, opts.force === true);
  const files: string[] = [];
  writeJson(path.join(dir, 'config.json'), configJson);
  writeJson(path.join(dir, 'generation_config.json'), generationConfigJson());
  files.push('config.json', 'generation_config.json');
  const sparseJson = presetSparseConfigJson(preset);
  if (sparseJson !== null) {
    writeJson(path.join(dir, SPARSE_CONFIG_FILE), sparseJson);
    files.push(SPARSE_CONFIG_FILE);
  }

  const toWrite = (t: CheckpointTensor): TensorToWrite => ({
    name: t.name,
    dtype: stDtype,
    shape: t.shape,
    data: () => randomTensorChunks(seed, t.name, weightDistribution(t, config), dtype, numel(t.shape)),
  });
  const metadata = { format: 'pt', longctx_preset: presetName, longctx_seed: String(seed) };
  const bar = byteProgress(`writing ${presetName}`, weightBytes, opts.progress === true && weightBytes > 256 * 1024 * 1024);
  try {
    const shards = shardTensors(tensors, bytesPerElem, maxShardBytes);
    if (shards.length === 1) {
      await writeSafetensors(path.join(dir, SINGLE_FILE), tensors.map(toWrite), metadata, { onProgress: (n) => bar.add(n) });
      files.push(SINGLE_FILE);
    } else {
      const weightMap = new Map<string, string>();
      for (let i = 0; i < shards.length; i++) {
        const name = shardFileName(i, shards.length);
        await writeSafetensors(path.join(dir, name), shards[i].map(toWrite), metadata, { onProgress: (n) => bar.add(n) });
        for (const t of shards[i]) weightMap.set(t.name, name);
        files.push(name);
      }
      writeSafetensorsIndex(path.join(dir, INDEX_FILE), weightBytes, weightMap);
      files.push(INDEX_FILE);
    }
  } finally {
    bar.stop();
  }
  if (opts.tokenizer !== false) {
    writeQwen25TokenizerFiles(dir, preset.maxPositionEmbeddings);
    files.push('tokenizer.json', 'tokenizer_config.json');
  }
  return { dir, preset: presetName, config, numParams, weightBytes, files };
}
