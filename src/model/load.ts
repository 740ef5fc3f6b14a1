// Loads a Hugging Face model directory (config.json, generation_config.json, sparse_attention_config.json,
// model.safetensors or model.safetensors.index.json + shards) into host ModelWeights.
// Invariant: every needed tensor is checked (present, loadable dtype, exact shape, one dtype for all
// matrices) before any data is read; every file descriptor is closed on success and on failure.
// Must not: keep unneeded tensors (e.g. rotary inv_freq), or return a partly loaded model.
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.js';
import { makeTensor, numel, toF32, type Tensor } from '../runtime/tensor.js';
import { byteProgress } from './byte-progress.js';
import { checkpointTensors, type CheckpointTensor } from './checkpoint-layout.js';
import { readModelConfig } from './config.js';
import type { ModelConfig } from './config-types.js';
import { readGenerationConfig, type GenerationDefaults } from './generation-config.js';
import { INDEX_FILE, LOADABLE_DTYPES, readSafetensorsIndex, SafetensorsFile, SINGLE_FILE, type TensorInfo } from './safetensors.js';
import { withSparseAttention } from './sparse-config.js';
import type { LayerWeights, ModelWeights } from './weights-types.js';

export interface LoadedModel {
  dir: string; // absolute path of the model directory
  config: ModelConfig;
  weights: ModelWeights;
  generationConfig: GenerationDefaults;
  tokenizerDir: string; // where tokenizer.json / tokenizer_config.json live (the model directory)
}

export interface LoadOptions {
  progress?: boolean; // byte progress bar on stderr when the weights exceed PROGRESS_MIN_BYTES
}

const PROGRESS_MIN_BYTES = 64 * 1024 * 1024;

/** The checkpoint's files and where each tensor lives. */
interface Checkpoint {
  files: SafetensorsFile[];
  describe: string; // "model.safetensors" or "model.safetensors.index.json", for messages
  locate(name: string): SafetensorsFile | undefined;
}

function openCheckpoint(dir: string): Checkpoint {
  const indexPath = path.join(dir, INDEX_FILE);
  const singlePath = path.join(dir, SINGLE_FILE);
  if (fs.existsSync(indexPath)) {
    const index = readSafetensorsIndex(indexPath);
    const byShard = new Map<string, SafetensorsFile>();
    try {
      for (const shard of new Set(index.weightMap.values())) {
        const shardPath = path.join(dir, shard);
        if (!fs.existsSync(shardPath)) throw new UserError(`${shardPath} not found (listed in ${indexPath}): the download is incomplete`);
        byShard.set(shard, SafetensorsFile.open(shardPath));
      }
    } catch (e) {
      for (const f of byShard.values()) f.close();
      throw e;
    }
    return {
      files: [...byShard.values()],
      describe: indexPath,
      locate: (name) => {
        const shard = index.weightMap.get(name);
        return shard === undefined ? undefined : byShard.get(shard);
      },
    };
  }
  if (fs.existsSync(singlePath)) {
    const file = SafetensorsFile.open(singlePath);
    return { files: [file], describe: singlePath, locate: (name) => (file.get(name) ? file : undefined) };
  }
  const other = ['pytorch_model.bin', 'pytorch_model.bin.index.json', 'model.gguf'].find((f) => fs.existsSync(path.join(dir, f)));
  const hint = other ? `found ${other}, but longctx reads safetensors only: convert the checkpoint to safetensors` : 'download the model\'s *.safetensors files';
  throw new UserError(`${dir} has neither ${SINGLE_FILE} nor ${INDEX_FILE}: ${hint}`);
}

interface PlannedTensor extends CheckpointTensor {
  file: SafetensorsFile;
  info: TensorInfo;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Checks presence, dtype and shape of every needed tensor; returns where to read each one. */
function planLoad(config: ModelConfig, ckpt: Checkpoint, configFile: string): Map<string, PlannedTensor> {
  const plan = new Map<string, PlannedTensor>();
  let matrixDtype: { dtype: string; name: string } | null = null;
  for (const t of checkpointTensors(config)) {
    const file = ckpt.locate(t.name);
    if (!file) {
      const why = t.name === 'lm_head.weight' ? ' (config.json sets tie_word_embeddings false, so lm_head.weight is required)' : '';
      throw new UserError(`${ckpt.describe}: tensor ${t.name} is missing, needed by ${configFile}${why}`);
    }
    const info = file.get(t.name);
    if (!info) throw new UserError(`${file.path}: tensor ${t.name} is missing, but ${ckpt.describe} says it is in this file`);
    if (!LOADABLE_DTYPES[info.dtype]) {
      throw new UserError(`${file.path}: tensor ${t.name} has dtype ${info.dtype}, which longctx cannot load (supported: BF16, F16, F32)`);
    }
    if (info.shape.length !== t.shape.length || info.shape.some((d, i) => d !== t.shape[i])) {
      throw new UserError(`${file.path}: tensor ${t.name} has shape ${fmtShape(info.shape)}, expected ${fmtShape(t.shape)} for this config.json`);
    }
    if (t.role === 'matrix') {
      if (!matrixDtype) matrixDtype = { dtype: info.dtype, name: t.name };
      else if (info.dtype !== matrixDtype.dtype) {
        throw new UserError(
          `${file.path}: tensor ${t.name} is ${info.dtype} while ${matrixDtype.name} is ${matrixDtype.dtype}: longctx needs one dtype for all weight matrices`,
        );
      }
    }
    plan.set(t.name, { ...t, file, info });
  }
  return plan;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Loads config (with sparse_attention_config.json's budgets, if any), generation defaults and weights of a model directory. */
export async function loadModelDir(dir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const config = withSparseAttention(dir, readModelConfig(dir));
  const generationConfig = readGenerationConfig(dir);
  const ckpt = openCheckpoint(dir);
  try {
    const plan = planLoad(config, ckpt, path.join(dir, 'config.json'));
    let totalBytes = 0;
    for (const p of plan.values()) totalBytes += p.info.byteLength;
    const bar = byteProgress('loading weights', totalBytes, opts.progress === true && totalBytes > PROGRESS_MIN_BYTES);
    try {
      const get = (name: string): PlannedTensor => plan.get(name)!;
      const readMatrix = async (name: string): Promise<Tensor> => {
        const p = get(name);
        const t = p.file.readTensor(name);
        bar.add(p.info.byteLength);
        await yieldToEventLoop();
        return t;
      };
      const readVector = async (name: string): Promise<Tensor> => {
        const t = await readMatrix(name);
        return t.dtype === 'f32' ? t : makeTensor('f32', t.shape, toF32(t));
      };
      const readGateUp = async (prefix: string): Promise<Tensor> => {
        const gate = get(`${prefix}gate_proj.weight`);
        const up = get(`${prefix}up_proj.weight`);
        const dtype = LOADABLE_DTYPES[gate.info.dtype];
        const shape = [2 * config.intermediateSize, config.hiddenSize];
        const data = dtype === 'f32' ? new Float32Array(numel(shape)) : new Uint16Array(numel(shape));
        const bytes = new Uint8Array(data.buffer);
        gate.file.readInto(gate.name, bytes.subarray(0, gate.info.byteLength)); // gate rows first
        up.file.readInto(up.name, bytes.subarray(gate.info.byteLength));
        bar.add(gate.info.byteLength + up.info.byteLength);
        await yieldToEventLoop();
        return makeTensor(dtype, shape, data);
      };
      const bias = async (name: string) => (config.attentionBias ? readVector(name) : null);

      const embed = await readMatrix('model.embed_tokens.weight');
      const layers: LayerWeights[] = [];
      for (let i = 0; i < config.numLayers; i++) {
        const p = `model.layers.${i}.`;
        layers.push({
          inputNorm: await readVector(`${p}input_layernorm.weight`),
          q: await readMatrix(`${p}self_attn.q_proj.weight`),
          k: await readMatrix(`${p}self_attn.k_proj.weight`),
          v: await readMatrix(`${p}self_attn.v_proj.weight`),
          qBias: await bias(`${p}self_attn.q_proj.bias`),
          kBias: await bias(`${p}self_attn.k_proj.bias`),
          vBias: await bias(`${p}self_attn.v_proj.bias`),
          o: await readMatrix(`${p}self_attn.o_proj.weight`),
          postNorm: await readVector(`${p}post_attention_layernorm.weight`),
          gateUp: await readGateUp(`${p}mlp.`),
          down: await readMatrix(`${p}mlp.down_proj.weight`),
        });
      }
      const norm = await readVector('model.norm.weight');
      const lmHead = config.tieWordEmbeddings ? embed : await readMatrix('lm_head.weight');
      return {
        dir: path.resolve(dir),
        config,
        weights: { embed, layers, norm, lmHead },
        generationConfig,
        tokenizerDir: path.resolve(dir),
      };
    } finally {
      bar.stop();
    }
  } finally {
    for (const f of ckpt.files) f.close();
  }
}
