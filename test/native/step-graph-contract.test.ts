// The graph's side of Backend.runGraph (src/model/qwen2.ts forward, decodeGraph), on the native CPU backend
// with a runGraph that records eagerly: (1) a decode step's ops read only host arrays listed in runGraph's
// inputs (the same objects: a device graph replays by rewriting exactly those), and prefill or mixed steps never
// go through runGraph; (2) the padded block table gives every logit bit for bit of the unpadded step (the
// backend without runGraph), plain RoPE and DCA, over 1-3 sequences, across table-width boundaries;
// (3) decodeGraph's keys: the same key while the step's shape holds, a new one past a GRAPH_TABLE_BLOCKS
// boundary, the width capped by StepCapacity.blocksPerSeq; (4) q, k, v weights fused into one matrix (what
// uploadWeights does on a backend whose uploads copy) give the logits of three matmuls bit for bit; (5) two
// runners on one backend get different keys, and a step with a table past GRAPH_MAX_TABLE_ENTRIES runs without
// runGraph. A planted bug (an op handed a copy of an input) shows check (1) can fail.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { loadModelDir, type LoadedModel } from '../../src/model/load.js';
import { decodeGraph, GRAPH_MAX_TABLE_ENTRIES, GRAPH_TABLE_BLOCKS } from '../../src/model/qwen2.js';
import type { Backend } from '../../src/runtime/backend.js';
import { createCpuBackend } from '../../src/runtime/cpu-backend.js';
import { assertBitsEqual } from '../ref/f64.js';
import { modelDir } from '../helpers/models.js';
import { graphRunner, lockstep, stepOf, type Seq } from './graph-steps.js';
import { randomPrompt } from './dca-model-helpers.js';

interface Recorded {
  graphCalls: { key: string; inputs: readonly (Int32Array | Float32Array)[] }[];
  strays: string[]; // ops that read a host array outside the inputs during a runGraph record
}

const HOST_ARRAY_OPS = ['embedding', 'rope', 'writeKv', 'attention', 'attentionDca', 'attentionDcaSparse', 'gatherRows'] as const;

/** The CPU backend with a runGraph that records eagerly and checks every host array an op gets while recording. */
function recordingBackend(rec: Recorded, plant = false): Backend {
  const inner = createCpuBackend({ numThreads: 2 });
  let current: readonly (Int32Array | Float32Array)[] | null = null;
  const wrapped: Backend = { ...inner };
  for (const op of HOST_ARRAY_OPS) {
    const f = (inner as unknown as Record<string, (...a: unknown[]) => void>)[op];
    if (typeof f !== 'function') continue;
    (wrapped as unknown as Record<string, unknown>)[op] = (...args: unknown[]) => {
      if (plant && current !== null && op === 'writeKv') args[3] = (args[3] as Int32Array).slice();
      if (current !== null) {
        const arrays: unknown[] = [];
        for (const a of args) {
          if (a instanceof Int32Array || a instanceof Float32Array) arrays.push(a);
          else if (a !== null && typeof a === 'object' && 'queryStart' in a) {
            const b = a as { queryStart: Int32Array; contextLens: Int32Array; blockTables: Int32Array };
            arrays.push(b.queryStart, b.contextLens, b.blockTables);
          }
        }
        for (const a of arrays) if (!current.includes(a as Int32Array)) rec.strays.push(op);
      }
      return f.apply(inner, args);
    };
  }
  wrapped.runGraph = (key, inputs, record) => {
    rec.graphCalls.push({ key, inputs });
    current = inputs;
    try {
      record();
    } finally {
      current = null;
    }
    return 'eager';
  };
  return wrapped;
}

function seqsFor(lengths: number[], vocab: number): Seq[] {
  return lengths.map((n, i) => ({ tokens: randomPrompt(100 + i, n, vocab), promptLen: n, index: i }));
}

for (const preset of ['tiny', 'tiny-dca']) {
  describe(`${preset}: decode steps through runGraph`, () => {
    let model: LoadedModel;
    before(async () => {
      model = await loadModelDir(modelDir(preset, 1, 'f32'));
    });

    test('every host array of a decode step is a runGraph input; padded tables give the unpadded logits bit for bit', () => {
      const rec: Recorded = { graphCalls: [], strays: [] };
      const vocab = model.config.vocabSize;
      const plain = graphRunner(createCpuBackend({ numThreads: 2 }), model.config, model.weights, 3);
      const graphed = graphRunner(recordingBackend(rec), model.config, model.weights, 3);
      try {
        // 3 sequences; the first crosses 64 tokens (DCA chunk boundaries at 48, 96) and 4 blocks.
        const seqs = seqsFor([40, 7, 23], vocab);
        const plan = [{ prefill: 0 }, { prefill: 1 }, { prefill: 2 }, ...Array.from({ length: 30 }, (_, k) => (k % 3 === 2 ? [0] : [0, 1, 2]))];
        lockstep(plain, graphed, seqs, plan, vocab, (got, want, label) => assertBitsEqual(got, want, `${preset} ${label}`));
      } finally {
        plain.dispose();
        graphed.dispose();
      }
      assert.deepEqual(rec.strays, [], 'ops read host arrays outside the runGraph inputs');
      assert.equal(rec.graphCalls.length, 30, 'each decode step (and no prefill) goes through runGraph');
      assert.equal(rec.strays.length, 0);
      const keys = new Set(rec.graphCalls.map((c) => c.key));
      assert.equal(keys.size, 2, `two batch sizes, one table width: ${[...keys].join(' | ')}`);
    });

    test('fused q|k|v weights (a backend whose uploads copy) give the logits of three matmuls bit for bit', () => {
      const vocab = model.config.vocabSize;
      const plain = graphRunner(createCpuBackend({ numThreads: 2 }), model.config, model.weights, 2);
      const fusedBe: Backend = { ...createCpuBackend({ numThreads: 2 }), uploadCopies: true };
      const fused = graphRunner(fusedBe, model.config, model.weights, 2);
      try {
        assert.ok(fused.graph.weights.layers.every((l) => l.qkv !== undefined), 'the weights were fused');
        const seqs = seqsFor([30, 11], vocab);
        // one-token steps take the fused matmul, the prefills and two-sequence steps the block views
        const plan = [{ prefill: 0 }, { prefill: 1 }, ...Array.from({ length: 12 }, (_, k) => (k % 2 === 0 ? [0] : [0, 1]))];
        lockstep(plain, fused, seqs, plan, vocab, (got, want, label) => assertBitsEqual(got, want, `${preset} fused ${label}`));
      } finally {
        plain.dispose();
        fused.dispose();
      }
    });

    test('a planted bug (writeKv handed a copy of the slots) is caught', () => {
      const rec: Recorded = { graphCalls: [], strays: [] };
      const runner = graphRunner(recordingBackend(rec, true), model.config, model.weights, 1);
      try {
        const seqs = seqsFor([9], model.config.vocabSize);
        lockstep(runner, runner, seqs, [{ prefill: 0 }, [0]], model.config.vocabSize, () => {});
      } finally {
        runner.dispose();
      }
      assert.ok(rec.strays.includes('writeKv'));
    });
  });
}

test('a decode step whose padded table exceeds GRAPH_MAX_TABLE_ENTRIES runs without runGraph', async () => {
  const model = await loadModelDir(modelDir('tiny', 1, 'f32'));
  const rec: Recorded = { graphCalls: [], strays: [] };
  const runner = graphRunner(recordingBackend(rec), model.config, model.weights, 1);
  try {
    const seqs = seqsFor([5], model.config.vocabSize);
    lockstep(runner, runner, seqs, [{ prefill: 0 }, [0]], model.config.vocabSize, () => {});
    assert.equal(rec.graphCalls.length, 2, 'a small decode step goes through runGraph (twice: lockstep runs it on both)');
    const big = stepOf(seqs, [1]);
    const width = GRAPH_MAX_TABLE_ENTRIES + 1; // one sequence whose row alone passes the limit
    const table = new Int32Array(width).fill(-1);
    table.set(big.batch.blockTables.subarray(0, big.batch.maxBlocksPerSeq));
    big.batch = { ...big.batch, blockTables: table, maxBlocksPerSeq: width };
    runner.step(big);
    assert.equal(rec.graphCalls.length, 2, 'the wide-table step ran eagerly');
  } finally {
    runner.dispose();
  }
});

test('two runners on one backend never share a graph key (the key names the graph and its caches)', async () => {
  const model = await loadModelDir(modelDir('tiny', 1, 'f32'));
  const rec: Recorded = { graphCalls: [], strays: [] };
  const be = recordingBackend(rec);
  const a = graphRunner(be, model.config, model.weights, 1);
  const b = graphRunner(be, model.config, model.weights, 1);
  try {
    const seqs = seqsFor([6], model.config.vocabSize);
    lockstep(a, b, seqs, [{ prefill: 0 }, [0], [0]], model.config.vocabSize, () => {});
    const keys = rec.graphCalls.map((c) => c.key);
    assert.equal(keys.length, 4);
    assert.equal(keys[0], keys[2], 'one runner keeps its key');
    assert.notEqual(keys[0], keys[1], 'the two runners (same shapes) have different keys');
  } finally {
    a.dispose(); // disposes the shared backend once
  }
});

describe('decodeGraph keys and table widths', () => {
  const seq = (n: number): Seq => ({ tokens: new Array(n).fill(1), promptLen: 1, index: 0 });
  test('the key holds within a table granule, changes past it, and the width is capped', () => {
    const bs = 16;
    const at = (n: number, cap?: number) => decodeGraph(stepOf([seq(n)], [1]), null, cap)!;
    assert.equal(at(1).batch.maxBlocksPerSeq, GRAPH_TABLE_BLOCKS);
    assert.equal(at(1).key, at(GRAPH_TABLE_BLOCKS * bs).key);
    assert.notEqual(at(GRAPH_TABLE_BLOCKS * bs).key, at(GRAPH_TABLE_BLOCKS * bs + 1).key);
    assert.equal(at(GRAPH_TABLE_BLOCKS * bs + 1).batch.maxBlocksPerSeq, 2 * GRAPH_TABLE_BLOCKS);
    assert.equal(at(100, 10).batch.maxBlocksPerSeq, 10); // capped by the planned table width
    assert.equal(at(300, 10).batch.maxBlocksPerSeq, 19); // never below the step's own width
    const g = at(40);
    const row = g.batch.blockTables;
    assert.deepEqual(Array.from(row.subarray(0, 4)), [0, 1, 2, -1]);
    assert.ok(row.subarray(3).every((v) => v === -1));
    assert.equal(g.arrays.length, 7);
  });
});
