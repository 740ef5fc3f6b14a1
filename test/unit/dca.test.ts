// Unit tests of the DCA position rules, temperature and config checks (src/model/dca.ts), the float64 DCA
// references against the dca-toy.py oracle, and the attentionDca conformance suite on the reference
// backend (src/runtime/reference-dca.ts); mutants run in a minimal Backend-shaped object. No native code.
// Mutant backends show the suite can fail: each plants one plausible bug and must be caught.
import { hostView } from '../../src/runtime/tensor.js';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../../src/runtime/backend.js';
import { makeTensor, toF32 } from '../../src/runtime/tensor.js';
import { referenceAttentionDca } from '../../src/runtime/reference-dca.js';
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { UserError } from '../../src/errors.js';
import type { DcaConfig, ModelConfig } from '../../src/model/config-types.js';
import {
  attentionTemperature, checkMaxModelLen, dcaConstants, dcaVariant, keyRotationPosition, queryRotationPositions,
  relativeDistance, rowLogitScale, stepRowLogitScales, validateDca,
} from '../../src/model/dca.js';
import { checkDcaCase, DCA_CASES, ORACLE_CASE, PLAIN_ROPE_CASES, readToyOracle, runDcaConformance, type DcaCase } from '../conformance/dca-suite.js';
import { dcaAttentionF64, plainRopeAttentionF64, tableAttentionF64 } from '../ref/dca-f64.js';
import { assertClose, makeRng, randomF32 } from '../ref/f64.js';

const dcaConfig = (chunkSize: number, localSize: number, originalMax = chunkSize): DcaConfig => ({
  chunkSize, localSize, originalMaxPositionEmbeddings: originalMax, chunkLen: chunkSize - localSize,
});
const QWEN = dcaConfig(262144, 8192);
const { L: QL, C: QC } = dcaConstants(QWEN);
const char = { intra: 'I', succ: 'S', inter: 'X' } as const;

/** A Backend with only the host-tensor plumbing and attentionDca (the other ops are not needed here). */
function dcaOnlyBackend(attentionDca: NonNullable<Backend['attentionDca']> = referenceAttentionDca): Backend {
  const missing = (op: string) => () => {
    throw new Error(`dca-only test backend: ${op} is not implemented`);
  };
  return {
    name: 'reference-dca',
    kvCacheDtypes: ['f32'],
    upload: (t) => t,
    zeros: (shape) => makeTensor('f32', shape),
    view: hostView,
    read: (t) => toF32(t),
    write: (t, values) => {
      if (!(t.data instanceof Float32Array) || t.data.length !== values.length) throw new Error('write: shape mismatch');
      t.data.set(values);
    },
    free: () => {},
    dispose: () => {},
    embedding: missing('embedding'),
    matmul: missing('matmul'),
    rmsnorm: missing('rmsnorm'),
    add: missing('add'),
    rope: missing('rope'),
    siluMul: missing('siluMul'),
    writeKv: missing('writeKv'),
    attention: missing('attention'),
    gatherRows: missing('gatherRows'),
    attentionDca,
  };
}

describe('DCA constants and position rules (§2.2-2.5)', () => {
  test('constants: Qwen2.5-1M and the toy config', () => {
    assert.deepEqual(dcaConstants(QWEN), { L: 253952, C: 262144, W: 8192 });
    assert.deepEqual(dcaConstants(dcaConfig(8, 2)), { L: 6, C: 8, W: 2 });
  });

  test('Qwen-scale relative distances of §2.5', () => {
    const cases: [number, number, string, number][] = [
      [1_000_000, 999_000, 'intra', 1_000],
      [1_000_000, 700_000, 'succ', 70_048],
      [1_000_000, 300_000, 'inter', 216_096],
      [1_000_000, 10, 'inter', 262_134],
      [258_000, 5, 'succ', 257_995],
    ];
    for (const [p, k, variant, rel] of cases) {
      assert.equal(dcaVariant(p, k, QL), variant, `variant of (${p}, ${k})`);
      assert.equal(relativeDistance(p, k, QL, QC), rel, `distance of (${p}, ${k})`);
    }
    assert.equal(keyRotationPosition(700_000, QL), 192_096);
    assert.deepEqual(queryRotationPositions(1_000_000, QL, QC), { intra: 238_144, succ: 262_144, inter: 262_144, succCrit: 492_096, interCrit: 500_288 });
  });

  test('the dca-toy.py oracle: key and query rotation positions, distance and selection tables', () => {
    const oracle = readToyOracle();
    assert.deepEqual([oracle.L, oracle.C, oracle.W], [6, 8, 2]);
    assert.equal(oracle.keyPositions.length, 20);
    assert.equal(oracle.queryPositions.length, 20);
    assert.equal(oracle.rel.length, 20);
    assert.equal(oracle.crit.length, 20);
    oracle.keyPositions.forEach((pos, k) => assert.equal(keyRotationPosition(k, oracle.L), pos, `key ${k}`));
    oracle.queryPositions.forEach((want, p) => assert.deepEqual(queryRotationPositions(p, oracle.L, oracle.C), want, `query ${p}`));
    let cells = 0;
    for (let p = 0; p < 20; p++) {
      for (let k = 0; k < 20; k++) {
        if (k > p) {
          assert.equal(oracle.rel[p][k], null);
          continue;
        }
        const variant = dcaVariant(p, k, oracle.L);
        assert.equal(oracle.rel[p][k], `${relativeDistance(p, k, oracle.L, oracle.C)}${char[variant]}`, `rel[${p}][${k}]`);
        const q = queryRotationPositions(p, oracle.L, oracle.C);
        const crit = { intra: q.intra, succ: q.succCrit, inter: q.interCrit }[variant] - keyRotationPosition(k, oracle.L);
        assert.equal(oracle.crit[p][k], `${crit}${char[variant]}`, `crit[${p}][${k}]`);
        cells++;
      }
    }
    assert.equal(cells, 210);
  });

  test('distances stay in [0, C] and equal p - k exactly for p <= L + W (and not beyond)', () => {
    for (const [chunkSize, localSize] of [[8, 2], [64, 16], [16, 4]]) {
      const { L, C, W } = dcaConstants(dcaConfig(chunkSize, localSize));
      let maxRel = 0;
      for (let p = 0; p < 5 * L; p++) {
        for (let k = 0; k <= p; k++) {
          const rel = relativeDistance(p, k, L, C);
          assert.ok(rel >= 0 && rel <= C, `rel(${p}, ${k}) = ${rel}`);
          if (p <= L + W) assert.equal(rel, p - k, `plain-RoPE distance at (${p}, ${k})`);
          maxRel = Math.max(maxRel, rel);
        }
      }
      assert.equal(maxRel, C);
      assert.equal(relativeDistance(L + W + 1, 0, L, C), C, 'first clamped row');
    }
  });

  test('caller bugs throw', () => {
    assert.throws(() => dcaVariant(5, 6, 6), /after query position/);
    assert.throws(() => keyRotationPosition(-1, 6), /integer >= 0/);
    assert.throws(() => queryRotationPositions(3, 6, 5), /chunk size C/);
    assert.throws(() => queryRotationPositions(3, 0, 5), /chunk length L/);
  });
});

describe('attention temperature (§2.6)', () => {
  test('s(N) at the spec values, and 1 within the training length', () => {
    const orig = 262144;
    const values: [number, number][] = [[300_000, 1.0135], [524_288, 1.0693], [960_000, 1.1298], [1_000_000, 1.1339], [1_010_000, 1.1349]];
    for (const [N, s] of values) assert.equal(attentionTemperature(N, orig).toFixed(4), s.toFixed(4), `s(${N})`);
    assert.equal(attentionTemperature(262_144, orig), 1);
    assert.equal(attentionTemperature(1, orig), 1);
    assert.throws(() => attentionTemperature(0, orig));
  });

  test('rowLogitScale: prompt rows s(prompt)^2 in every scheduler chunk, the token at p s(p+1)·s(prompt)', () => {
    const orig = 262144;
    const s = (n: number) => attentionTemperature(n, orig);
    const at = (promptLen: number, position: number) => rowLogitScale({ promptLen, position, originalMax: orig });
    assert.equal(at(100_000, 49_999), 1);
    const early = at(1_000_000, 131_071); // a row of the first 131,072-token chunk
    const last = at(1_000_000, 999_999);
    assert.equal(early, s(1_000_000) ** 2);
    assert.equal(last, early);
    assert.ok(early > 1.285 && early < 1.287, `s(1M)^2 = ${early}`);
    const decode = at(1_000_000, 1_008_191); // the decode that makes the sequence 1,008,192 tokens long
    assert.equal(decode, s(1_008_192) * s(1_000_000));
    assert.ok(decode > 1.286 && decode < 1.288, `decode at 1M + 8K: ${decode}`);
    assert.equal(at(1_000_000, 1_000_000), s(1_000_001) * s(1_000_000), 'the first generated token');
    // A short prompt whose generation crosses the training length: only the query side grows.
    assert.equal(at(262_000, 269_999), s(270_000));
    assert.throws(() => rowLogitScale({ promptLen: 0, position: 0, originalMax: orig }), /promptLen must be a positive integer/);
    assert.throws(() => rowLogitScale({ promptLen: 5, position: -1, originalMax: orig }), /query position must be an integer >= 0/);
  });

  test('stepRowLogitScales: per row, from each row\'s position and its sequence\'s prompt length', () => {
    const orig = 64;
    const s = (n: number) => attentionTemperature(n, orig);
    const P = 300;
    // Sequences: an early chunk [0, 3), a decode at 304, a short prompt [17, 20), and a recompute after
    // preemption feeding prompt rows 297..299 with generated rows 300..302 in ONE step.
    const positions = Int32Array.from([0, 1, 2, 304, 17, 18, 19, 297, 298, 299, 300, 301, 302]);
    const queryStart = Int32Array.from([0, 3, 4, 7, 13]);
    const contextLens = Int32Array.from([3, 305, 20, 303]);
    const got = stepRowLogitScales(positions, queryStart, contextLens, Int32Array.from([P, P, 20, P]), orig);
    const want = [s(P) ** 2, s(P) ** 2, s(P) ** 2, s(305) * s(P), 1, 1, 1, s(P) ** 2, s(P) ** 2, s(P) ** 2, s(301) * s(P), s(302) * s(P), s(303) * s(P)];
    assert.deepEqual([...got], want.map(Math.fround));
    assert.ok(got[0] > 1.33 && got[0] < 1.34, `s(300)^2 = ${got[0]}`);
    assert.ok(got[12] > got[11] && got[11] > got[10] && got[10] !== got[9], 'generated rows grow with their position');
    // Without promptLens every context counts as a prompt: fine within original_max, refused beyond it.
    const two = (lens: number[]) => [Int32Array.from([lens[0] - 1, lens[1] - 1]), Int32Array.from([0, 1, 2]), Int32Array.from(lens)] as const;
    assert.deepEqual([...stepRowLogitScales(...two([64, 1]), undefined, orig)], [1, 1]);
    assert.throws(() => stepRowLogitScales(...two([10, 65]), undefined, orig), /sequence 1 has 65 tokens > original_max_position_embeddings 64/);
    assert.throws(() => stepRowLogitScales(...two([10, 65]), Int32Array.from([10]), orig), /promptLens has 1 entries for 2 sequences/);
    assert.throws(() => stepRowLogitScales(Int32Array.from([0]), Int32Array.from([0, 2]), Int32Array.from([1]), undefined, orig), /queryStart must have 2 entries from 0 to T = 1/);
  });
});

describe('config checks', () => {
  test('validateDca accepts Qwen with block 16 and the test configs with every block size dividing L', () => {
    validateDca(QWEN, 16);
    for (const bs of [1, 2, 3, 6]) validateDca(dcaConfig(8, 2), bs);
    for (const bs of [1, 2, 16, 48]) validateDca(dcaConfig(64, 16), bs);
  });

  test('validateDca: L not a multiple of the block size names the field and block sizes that work', () => {
    const cfg = dcaConfig(262144, 8194);
    const err = (() => {
      try {
        validateDca(cfg, 16);
      } catch (e) {
        return e;
      }
      return null;
    })();
    assert.ok(err instanceof UserError);
    assert.match(err.message, /^config\.json: dual_chunk_attention_config chunk_size - local_size = 253950 is not a multiple of the KV block size 16: use a block size dividing 253950 \(e\.g\. [\d, ]+\)/);
    const suggested = /e\.g\. ([\d, ]+)\)/.exec(err.message)![1].split(', ').map(Number);
    assert.ok(suggested.length > 0 && suggested.every((b) => 253950 % b === 0), `suggestions ${suggested}`);
    assert.throws(() => validateDca(dcaConfig(64, 16), 32, '/models/tiny/config.json'), (e: unknown) => e instanceof UserError && e.message.startsWith('/models/tiny/config.json: '));
  });

  test('validateDca: sizes must be positive and consistent', () => {
    const bad: [DcaConfig, number, RegExp][] = [
      [dcaConfig(64, 64), 16, /local_size \(64\) must be smaller than chunk_size \(64\)/],
      [dcaConfig(64, 0), 16, /local_size must be a positive integer/],
      [dcaConfig(64, 16, 0), 16, /original_max_position_embeddings must be a positive integer/],
      [{ ...dcaConfig(64, 16), chunkLen: 40 }, 16, /inconsistent/],
      [{ ...dcaConfig(64, 16), sparseAttentionLastQ: 0 }, 16, /sparse_attention_last_q/],
      [dcaConfig(64, 16), 0, /block size must be a positive integer/],
      [dcaConfig(64, 16), 2.5, /block size must be a positive integer/],
    ];
    for (const [cfg, bs, message] of bad) assert.throws(() => validateDca(cfg, bs), (e: unknown) => e instanceof UserError && message.test(e.message));
  });

  test('checkMaxModelLen: plain-RoPE models stop at max_position_embeddings, DCA models go up to it', () => {
    const plain = { maxPositionEmbeddings: 32768, dca: null } as ModelConfig;
    checkMaxModelLen(plain, 32768);
    assert.throws(() => checkMaxModelLen(plain, 40000), (e: unknown) => e instanceof UserError && e.message ===
      "--max-model-len 40000 exceeds this model's max_position_embeddings 32768 and the model has no dual_chunk_attention_config: quality would collapse beyond its training length; use --max-model-len 32768 or less");
    const qwen1m = { maxPositionEmbeddings: 1_010_000, dca: QWEN } as ModelConfig;
    checkMaxModelLen(qwen1m, 1_010_000);
    checkMaxModelLen(qwen1m, 524_288);
    assert.throws(() => checkMaxModelLen(qwen1m, 1_010_001), (e: unknown) => e instanceof UserError && /use --max-model-len 1010000 or less/.test(e.message));
    assert.throws(() => checkMaxModelLen(plain, 0), UserError);
    assert.throws(() => checkMaxModelLen(plain, 1.5), UserError);
  });
});

describe('float64 DCA references', () => {
  const shape = { numHeads: 2, numKvHeads: 1, headDim: 8 };
  const toy = { chunkLen: 6, chunkSize: 8, theta: 100, rotaryDim: 8 };

  test('the three-partial LSE reference equals brute force over the dca-toy.py table', () => {
    const oracle = readToyOracle();
    const rng = makeRng(21);
    const [q, k, v] = [randomF32(rng, 20 * 16, 2), randomF32(rng, 20 * 8), randomF32(rng, 20 * 8)];
    const qPos = (p: number, j: number) => Number.parseInt(oracle.rel[p][j]!, 10) + oracle.keyPositions[j];
    const brute = tableAttentionF64(q, k, v, shape, 100, 8, 0.4, qPos, (j) => oracle.keyPositions[j]);
    assertClose(dcaAttentionF64(q, k, v, shape, toy, 0.4), brute, { atol: 1e-12, rtol: 1e-12 }, 'dca-f64 vs toy table');
    // Chunked: the last 7 rows alone give the same rows.
    assertClose(dcaAttentionF64(q.subarray(13 * 16), k, v, shape, toy, 0.4), brute.subarray(13 * 16), { atol: 1e-12, rtol: 1e-12 }, 'chunked');
  });

  test('DCA equals plain RoPE up to p = L + W and differs from p = L + W + 1 on', () => {
    const rng = makeRng(22);
    const [q, k, v] = [randomF32(rng, 12 * 16, 2), randomF32(rng, 12 * 8), randomF32(rng, 12 * 8)];
    const dca = dcaAttentionF64(q, k, v, shape, toy, 0.4);
    const plain = plainRopeAttentionF64(q, k, v, shape, 100, 8, 0.4);
    const rowLen = 16;
    assertClose(dca.subarray(0, 9 * rowLen), plain.subarray(0, 9 * rowLen), { atol: 1e-6, rtol: 0 }, 'rows 0..8');
    for (let p = 9; p < 12; p++) {
      let diff = 0;
      for (let e = 0; e < rowLen; e++) diff = Math.max(diff, Math.abs(dca[p * rowLen + e] - plain[p * rowLen + e]));
      assert.ok(diff > 1e-3, `row ${p} should see clamped distances, max diff ${diff}`);
    }
  });

  test('a per-row scale equals each row computed alone with its own scalar scale (dca, table, tolerance)', () => {
    const rng = makeRng(23);
    const [q, k, v] = [randomF32(rng, 20 * 16, 2), randomF32(rng, 20 * 8), randomF32(rng, 20 * 8)];
    const scales = Array.from({ length: 20 }, (_, i) => 0.2 + 0.05 * i);
    const rowLen = 16;
    const dca = dcaAttentionF64(q, k, v, shape, toy, scales);
    const plain = plainRopeAttentionF64(q, k, v, shape, 100, 8, scales);
    for (const p of [0, 5, 6, 13, 19]) {
      const keys = (x: Float32Array) => x.subarray(0, (p + 1) * 8);
      const row = q.subarray(p * rowLen, (p + 1) * rowLen);
      const exact = { atol: 1e-12, rtol: 1e-12 };
      assertClose(dca.subarray(p * rowLen, (p + 1) * rowLen), dcaAttentionF64(row, keys(k), keys(v), shape, toy, scales[p]), exact, `dca row ${p}`);
      assertClose(plain.subarray(p * rowLen, (p + 1) * rowLen), plainRopeAttentionF64(row, keys(k), keys(v), shape, 100, 8, scales[p]), exact, `plain row ${p}`);
    }
    assert.notDeepEqual([...dca.subarray(19 * rowLen)], [...dcaAttentionF64(q, k, v, shape, toy, 0.4).subarray(19 * rowLen)]);
    assert.throws(() => dcaAttentionF64(q, k, v, shape, toy, scales.slice(1)), /per-row scale has 19 entries for 20 query rows/);
  });
});

runDcaConformance('reference', createReferenceBackend);
runDcaConformance('reference', createReferenceBackend, { kvDtype: 'bf16' });

/**
 * A plausible native kernel, emulated in fp32 (every operation rounded with Math.fround): queries rotated
 * in fp32, fp32 dots, and an online softmax over tiles of 16 keys with fp32 statistics. The suite must
 * accept it, or its tolerance would fail correct fp32 backends.
 */
const fp32TiledDca: NonNullable<Backend['attentionDca']> = (q, cache, batch, positions, dca, scale, rowLogitScale, out) => {
  const f = Math.fround;
  const [, numHeads, headDim] = q.shape;
  const [qs, ks, vs, o] = [q.data, cache.k.data, cache.v.data, out.data] as Float32Array[];
  const { numKvHeads, blockSize } = cache;
  const half = dca.rotaryDim / 2;
  const L = dca.chunkLen;
  const invFreq = Float32Array.from({ length: half }, (_, i) => f(1 / f(Math.pow(f(dca.ropeTheta), f(f(2 * i) / f(dca.rotaryDim))))));
  for (let s = 0; s < batch.numSeqs; s++) {
    const slot = (j: number) => batch.blockTables[s * batch.maxBlocksPerSeq + Math.floor(j / blockSize)] * blockSize + (j % blockSize);
    for (let row = batch.queryStart[s]; row < batch.queryStart[s + 1]; row++) {
      const p = positions[row];
      const logitScale = f(f(scale) * rowLogitScale[row]);
      const rot = queryRotationPositions(p, L, dca.chunkSize);
      const chunkStart = Math.floor(p / L) * L;
      for (let h = 0; h < numHeads; h++) {
        const qBase = (row * numHeads + h) * headDim;
        const rotated = [rot.intra, rot.succ, rot.inter].map((pos) => {
          const r = qs.slice(qBase, qBase + headDim);
          for (let i = 0; i < half; i++) {
            const angle = f(f(pos) * invFreq[i]);
            const [c, sn] = [f(Math.cos(angle)), f(Math.sin(angle))];
            r[i] = f(f(qs[qBase + i] * c) - f(qs[qBase + half + i] * sn));
            r[half + i] = f(f(qs[qBase + half + i] * c) + f(qs[qBase + i] * sn));
          }
          return r;
        });
        const kvOffset = Math.floor(h / (numHeads / numKvHeads)) * headDim;
        let [max, denom] = [-Infinity, 0];
        const acc = new Float32Array(headDim);
        for (let t0 = 0; t0 <= p; t0 += 16) {
          const logits: number[] = [];
          for (let j = t0; j < Math.min(p + 1, t0 + 16); j++) {
            const qv = rotated[j >= chunkStart ? 0 : j >= chunkStart - L ? 1 : 2];
            let dot = 0;
            for (let d = 0; d < headDim; d++) dot = f(dot + f(qv[d] * ks[slot(j) * numKvHeads * headDim + kvOffset + d]));
            logits.push(f(dot * logitScale));
          }
          const tileMax = Math.max(max, ...logits);
          const rescale = f(Math.exp(f(max - tileMax)));
          denom = f(denom * rescale);
          for (let d = 0; d < headDim; d++) acc[d] = f(acc[d] * rescale);
          max = tileMax;
          logits.forEach((logit, e) => {
            const w = f(Math.exp(f(logit - max)));
            denom = f(denom + w);
            const vBase = slot(t0 + e) * numKvHeads * headDim + kvOffset;
            for (let d = 0; d < headDim; d++) acc[d] = f(acc[d] + f(w * vs[vBase + d]));
          });
        }
        for (let d = 0; d < headDim; d++) o[qBase + d] = f(acc[d] / denom);
      }
    }
  }
};

test('an fp32 tiled kernel (emulated) passes every conformance case', () => {
  for (const c of [...DCA_CASES, ...PLAIN_ROPE_CASES, ORACLE_CASE]) checkDcaCase(dcaOnlyBackend(fp32TiledDca), c);
});

describe('the conformance suite catches planted bugs', () => {
  const find = (prefix: string): DcaCase => DCA_CASES.find((c) => c.label.startsWith(prefix))!;
  const decodes = find('toy: decodes at every boundary');
  const qwen = find('Qwen constants');
  const perRow = find('toy: every query row its own factor');
  const recompute = find('tiny: recompute after preemption');
  const seqOfRow = (queryStart: Int32Array, t: number) => {
    let s = 0;
    while (queryStart[s + 1] <= t) s++;
    return s;
  };
  type Dca = NonNullable<Backend['attentionDca']>;
  const mutants: [string, Dca, DcaCase][] = [
    ['no clamp at C (succ/inter rotation one too far)', (q, c, b, p, dca, s, l, o) => referenceAttentionDca(q, c, b, p, { ...dca, chunkSize: dca.chunkSize + 1 }, s, l, o), decodes],
    ['plain RoPE instead of DCA', (q, c, b, p, dca, s, l, o) => referenceAttentionDca(q, c, b, p, { ...dca, chunkLen: 1 << 30, chunkSize: 1 << 30 }, s, l, o), decodes],
    ['rowLogitScale ignored', (q, c, b, p, dca, s, l, o) => referenceAttentionDca(q, c, b, p, dca, s, l.map(() => 1), o), decodes],
    ['one factor per sequence (its first row\'s), as the old per-sequence contract', (q, c, b, p, dca, s, l, o) =>
      referenceAttentionDca(q, c, b, p, dca, s, l.map((_, t) => l[b.queryStart[seqOfRow(b.queryStart, t)]]), o), perRow],
    ['one factor per sequence (its last row\'s: the current length), on a recompute step', (q, c, b, p, dca, s, l, o) =>
      referenceAttentionDca(q, c, b, p, dca, s, l.map((_, t) => l[b.queryStart[seqOfRow(b.queryStart, t) + 1] - 1]), o), recompute],
    ['q rotated in place', (q, c, b, p, dca, s, l, o) => {
      referenceAttentionDca(q, c, b, p, dca, s, l, o);
      (q.data as Float32Array)[3] += 0.5;
    }, decodes],
    ['cache written', (q, c, b, p, dca, s, l, o) => {
      referenceAttentionDca(q, c, b, p, dca, s, l, o);
      (c.v.data as Float32Array).fill(0, 0, c.headDim);
    }, decodes],
    ['last output row left unwritten', (q, c, b, p, dca, s, l, o) => {
      const keep = Float32Array.from(o.data as Float32Array);
      referenceAttentionDca(q, c, b, p, dca, s, l, o);
      (o.data as Float32Array).set(keep.subarray(keep.length - c.headDim), keep.length - c.headDim);
    }, decodes],
    ['no clamp at C, Qwen scale', (q, c, b, p, dca, s, l, o) => referenceAttentionDca(q, c, b, p, { ...dca, chunkSize: dca.chunkSize + 1 }, s, l, o), qwen],
  ];
  for (const [name, impl, c] of mutants) {
    test(`mutant: ${name}`, () => {
      assert.throws(() => checkDcaCase(dcaOnlyBackend(impl), c), assert.AssertionError);
    });
  }
});
