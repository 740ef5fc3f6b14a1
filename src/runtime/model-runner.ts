// The model runner: owns a backend, the uploaded weights, the graph and the paged KV caches of all
// layers; turns flat step inputs into logits on the host, or (stepSampled, on a backend with sampleRows)
// into token ids sampled on the backend. One runner per loaded model. It never sees requests or sampling
// policy (those live in engine/ and sampling/: it is handed finished SamplingRows). dispose() frees everything.
import type { Backend, KvCacheLayer, SamplingRow } from './backend.js';
import type { ModelConfig } from '../model/config-types.js';
import type { LayerWeights, ModelWeights } from '../model/weights-types.js';
import { Qwen2Graph, type StepInputs } from '../model/qwen2.js';
import { validateDca } from '../model/dca.js';
import type { StepCapacity } from '../model/step-buffers.js';
import { makeTensor, numel, type DType, type Tensor } from './tensor.js';

export interface RunnerOptions {
  numBlocks: number; // KV pool size in blocks (per layer)
  blockSize: number; // tokens per block
  kvCacheDtype?: DType; // default f32; bf16 where backend.kvCacheDtypes has it
  /** Step activations allocated once at this size (a larger step throws); absent: grown on demand. */
  stepCapacity?: StepCapacity;
  /** Rows per MLP range (default MLP_CHUNK_ROWS; tests use small ones to cross range boundaries). */
  mlpChunkRows?: number;
}

/**
 * Uploads every weight tensor to the backend (host backends keep the arrays; tied lm_head stays shared). On a
 * backend whose uploads copy (a device), q, k and v go up as one matrix (fusedQkv) with views of its blocks.
 */
export function uploadWeights(backend: Backend, w: ModelWeights): ModelWeights {
  const up = backend.upload.bind(backend);
  const opt = (t: LayerWeights['qBias']) => (t ? up(t) : null);
  const embed = up(w.embed);
  return {
    embed,
    norm: up(w.norm),
    lmHead: w.lmHead === w.embed ? embed : up(w.lmHead),
    layers: w.layers.map((l) => ({
      inputNorm: up(l.inputNorm),
      ...(backend.uploadCopies === true && canFuseQkv(l) ? fusedQkv(backend, l) : {
        q: up(l.q), k: up(l.k), v: up(l.v), qBias: opt(l.qBias), kBias: opt(l.kBias), vBias: opt(l.vBias),
      }),
      o: up(l.o),
      postNorm: up(l.postNorm),
      gateUp: up(l.gateUp),
      down: up(l.down),
    })),
  };
}

/** One dtype, all biases or none, and every block 16-byte aligned in the fused matrix and bias. */
function canFuseQkv(l: LayerWeights): boolean {
  const eb = l.q.dtype === 'f32' ? 4 : 2;
  const [nq, K] = l.q.shape;
  const nk = l.k.shape[0];
  const biases = [l.qBias, l.kBias, l.vBias].filter((b) => b !== null).length;
  return l.k.dtype === l.q.dtype && l.v.dtype === l.q.dtype && (biases === 0 || biases === 3) &&
    ((nq * K * eb) % 16 === 0) && ((nk * K * eb) % 16 === 0) && nq % 4 === 0 && nk % 4 === 0;
}

/** q ++ k ++ v rows as one uploaded matrix (and bias), with q, k, v (and biases) as views of its blocks. */
function fusedQkv(backend: Backend, l: LayerWeights): Pick<LayerWeights, 'q' | 'k' | 'v' | 'qBias' | 'kBias' | 'vBias' | 'qkv' | 'qkvBias'> {
  const [nq, K] = l.q.shape;
  const nk = l.k.shape[0];
  const nv = l.v.shape[0];
  const cat = (ts: Tensor[], shape: number[]): Tensor => {
    const data = ts[0].data instanceof Float32Array ? new Float32Array(numel(shape)) : new Uint16Array(numel(shape));
    let at = 0;
    for (const t of ts) {
      data.set(t.data as never, at);
      at += t.data.length;
    }
    return backend.upload(makeTensor(ts[0].dtype, shape, data));
  };
  const qkv = cat([l.q, l.k, l.v], [nq + nk + nv, K]);
  const qkvBias = l.qBias && l.kBias && l.vBias ? cat([l.qBias, l.kBias, l.vBias], [nq + nk + nv]) : null;
  const rows = (n: number, at: number) => backend.view(qkv, [n, K], at * K);
  const bias = (n: number, at: number) => (qkvBias ? backend.view(qkvBias, [n], at) : null);
  return {
    qkv, qkvBias,
    q: rows(nq, 0), k: rows(nk, nq), v: rows(nv, nq + nk),
    qBias: bias(nq, 0), kBias: bias(nk, nq), vBias: bias(nv, nq + nk),
  };
}

export class ModelRunner {
  readonly graph: Qwen2Graph;
  readonly caches: KvCacheLayer[];
  private disposed = false;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    weights: ModelWeights,
    readonly options: RunnerOptions,
  ) {
    if (config.dca !== null) validateDca(config.dca, options.blockSize); // UserError: L % blockSize != 0
    this.graph = new Qwen2Graph(backend, config, uploadWeights(backend, weights), options.stepCapacity ?? null, options.mlpChunkRows);
    this.caches = this.graph.allocateKvCache(options.numBlocks, options.blockSize, options.kvCacheDtype ?? 'f32');
  }

  /** Runs one step; returns logits [R, vocab] row-major on the host. */
  step(inputs: StepInputs): Float32Array {
    if (this.disposed) throw new Error('ModelRunner used after dispose()');
    const logits = this.graph.forward(inputs, this.caches);
    const host = this.backend.read(logits);
    this.backend.free(logits);
    return host;
  }

  /** True when the backend samples on its own (Backend.sampleRows), so stepSampled can be used. */
  get canSampleRows(): boolean {
    return typeof this.backend.sampleRows === 'function';
  }

  /**
   * Runs one step and samples every logits row on the backend: rows[i] samples row i (one per entry of
   * inputs.sampleRows). Returns the ids and, when readLogits (a row needs logprobs), the logits [R, vocab]
   * on the host as step() returns them (sampleRows leaves them unchanged); otherwise only R int32 cross.
   */
  stepSampled(inputs: StepInputs, rows: readonly SamplingRow[], readLogits: boolean): { tokenIds: Int32Array; logits: Float32Array | null } {
    if (this.disposed) throw new Error('ModelRunner used after dispose()');
    if (!this.backend.sampleRows) throw new Error(`the ${this.backend.name} backend has no sampleRows`);
    if (rows.length !== inputs.sampleRows.length) throw new Error(`stepSampled: ${rows.length} sampling rows for ${inputs.sampleRows.length} sampled rows`);
    const logits = this.graph.forward(inputs, this.caches);
    try {
      const tokenIds = this.backend.sampleRows(logits, rows);
      return { tokenIds, logits: readLogits ? this.backend.read(logits) : null };
    } finally {
      this.backend.free(logits);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.backend.dispose();
  }
}

/**
 * Step inputs for ONE sequence whose blocks are 0, 1, 2, ... (a contiguous table): tokens
 * [start, start + ids.length) of the sequence, logits for the last token. For tests and simple drivers.
 * promptLen: the sequence's full prompt length (DCA temperature); default start + ids.length, i.e. the
 * step is (the end of) a prefill. Pass it for decodes and for early chunks of a chunked prefill.
 */
export function singleSequenceStep(ids: ArrayLike<number>, start: number, blockSize: number, maxBlocks: number, promptLen?: number): StepInputs {
  const T = ids.length;
  const contextLen = start + T;
  if (promptLen !== undefined && (!Number.isSafeInteger(promptLen) || promptLen < 1)) {
    throw new Error(`promptLen must be a positive integer, got ${promptLen}`);
  }
  const numBlocksNeeded = Math.ceil(contextLen / blockSize);
  if (numBlocksNeeded > maxBlocks) throw new Error(`sequence of ${contextLen} tokens needs ${numBlocksNeeded} blocks, pool has ${maxBlocks}`);
  const blockTables = new Int32Array(numBlocksNeeded).map((_, i) => i);
  const positions = new Int32Array(T).map((_, i) => start + i);
  return {
    tokenIds: Int32Array.from(ids),
    positions,
    slotMapping: positions.slice(), // block i holds slots [i*blockSize, (i+1)*blockSize): slot = position
    batch: {
      numSeqs: 1,
      queryStart: Int32Array.from([0, T]),
      contextLens: Int32Array.from([contextLen]),
      blockTables,
      maxBlocksPerSeq: numBlocksNeeded,
    },
    sampleRows: Int32Array.from([T - 1]),
    promptLens: Int32Array.from([promptLen ?? contextLen]),
  };
}
