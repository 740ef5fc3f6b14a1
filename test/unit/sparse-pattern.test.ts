// The index side of vertical-slash sparse prefill (src/model/sparse-pattern.ts) on hand-worked examples
// (§4.2 steps 4-6, §4.3), and proof that the attentionDcaSparse conformance suite can fail: backends with
// one plausible bug each (dense attention, a wrong estimation row count, budgets off by one, the 30 -> 130
// bump applied twice) must miss the float64 sparse reference.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Backend } from '../../src/runtime/backend.js';
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { fallbackOffsets, forceSparseScores, slashRanges, sparseStages, sparseSubRanges, topKIndices } from '../../src/model/sparse-pattern.js';
import { checkSparseCase } from '../conformance/sparse-suite.js';
import { SPARSE_CASES } from '../conformance/sparse-cases.js';

describe('sparse-pattern: selection and stages (§4.2)', () => {
  test('top-k breaks ties by index: sinks first for verticals, the nearest diagonal first for slashes', () => {
    const scores = Float64Array.of(0.5, 0.1, 0.5, 0.9, 0.1);
    assert.deepEqual([...topKIndices(scores, 3, false)], [3, 0, 2]);
    assert.deepEqual([...topKIndices(scores, 3, true)], [3, 2, 0]);
    assert.deepEqual([...topKIndices(scores, 9, true)], [3, 2, 0, 4, 1]);
    const vertical = new Float64Array(120).fill(0.5);
    const slash = new Float64Array(120).fill(0.5);
    forceSparseScores(vertical, slash);
    assert.deepEqual([...topKIndices(vertical, 3, false)], [0, 1, 2]);
    assert.deepEqual([...topKIndices(slash, 3, true)], [119, 118, 117]);
    assert.equal(vertical[29], Infinity);
    assert.equal(vertical[30], 0.5);
    assert.equal(slash[20], Infinity);
    assert.equal(slash[19], 0.5);
  });

  test('fallback: 5 offsets at stride kvLen / 5, or every index of a short stage', () => {
    assert.deepEqual(fallbackOffsets(48), [0, 9, 19, 28, 38]);
    assert.deepEqual(fallbackOffsets(10), [0, 2, 4, 6, 8]);
    assert.deepEqual(fallbackOffsets(3), [0, 1, 2]);
  });

  test('sub-ranges follow the DCA chunks of the sparse rows (§2.8)', () => {
    assert.deepEqual(sparseSubRanges(25, 62, 10), [
      { begin: 25, end: 30, cs: 20 }, { begin: 30, end: 40, cs: 30 }, { begin: 40, end: 50, cs: 40 }, { begin: 50, end: 60, cs: 50 }, { begin: 60, end: 62, cs: 60 },
    ]);
  });

  test('stage split with re-expressed slashes: L = 10, rows [25, 30) in the chunk at 20', () => {
    const V = [29, 0, 12, 5, 22, 18];
    const S = [29, 25, 15, 11, 3];
    const [inter, succ, intra] = sparseStages(V, S, 25, 30, 20, 10);
    const plain = (s: typeof inter) => ({ kind: s.kind, key0: s.key0, kvLen: s.kvLen, base: s.base, causal: s.causal, verticals: [...s.verticals], slashes: [...s.slashes] });
    assert.deepEqual(plain(inter), { kind: 'inter', key0: 0, kvLen: 10, base: 10, causal: false, verticals: [0, 5], slashes: [11, 3] }); // j < 15: 14 - j
    assert.deepEqual(plain(succ), { kind: 'succ', key0: 10, kvLen: 10, base: 10, causal: false, verticals: [2, 8], slashes: [13, 9] }); // 10 <= j < 25: 24 - j
    assert.deepEqual(plain(intra), { kind: 'intra', key0: 20, kvLen: 10, base: 5, causal: true, verticals: [2, 9], slashes: [4, 0] }); // j >= 20: 29 - j
    // Every stage keeps the absolute distance: row r (position 25 + r) meets diagonal j at key j - (4 - r).
    for (const st of [inter, succ, intra]) {
      for (const delta of st.slashes) {
        const j = [...S].find((jj) => st.key0 + st.base + 0 - delta === jj - 4);
        assert.notEqual(j, undefined, `${st.kind} slash ${delta} is no chosen diagonal`);
      }
    }
  });

  test('empty stage lists take the fallback: no succ / intra verticals, no inter slashes', () => {
    const [inter, succ, intra] = sparseStages([3, 1], [29, 28], 25, 30, 20, 10);
    assert.deepEqual([...inter.verticals], [1, 3]);
    assert.deepEqual([...inter.slashes], [8, 6, 4, 2, 0]); // fallback (as slash offsets)
    assert.deepEqual([...succ.verticals], [0, 2, 4, 6, 8]);
    assert.deepEqual([...succ.slashes], [8, 6, 4, 2, 0]); // 28 and 29 are >= cs + n = 25: no succ slash
    assert.deepEqual([...intra.verticals], [0, 2, 4, 6, 8]);
    assert.deepEqual([...intra.slashes], [1, 0]);
    assert.equal(sparseStages([1], [9], 5, 9, 0, 10).length, 1, 'the first chunk has only the intra stage');
  });
});

describe('sparse-pattern: slash ranges of a 64-row block (§4.3)', () => {
  test('windows are the 64 columns a diagonal crosses, clamped to start at 0, merged in 64-steps, clipped', () => {
    assert.deepEqual(slashRanges([70, 50, 10, 0], 0, 64, 200), [0, 64]); // 70 skipped (x <= 0); 50 -> x = 14 -> [0, 64)
    assert.deepEqual(slashRanges([90, 30, 20, 0], 100, 64, 180), [10, 180]); // [10, 74) grows to 138, 202; clipped
    assert.deepEqual(slashRanges([150, 20], 100, 64, 300), [0, 64, 80, 144]); // a gap: two ranges
    assert.deepEqual(slashRanges([3], 10, 64, 50), [7, 50]); // window [7, 71) clipped to the stage
    assert.deepEqual(slashRanges([], 10, 64, 50), []);
    assert.deepEqual(slashRanges([0], 300, 128, 300), []); // the window lies past the stage (non-causal base)
  });
});

describe('the attentionDcaSparse suite catches plausible bugs (reference backend)', () => {
  const reference = createReferenceBackend();
  const mutant = (name: string, wrap: NonNullable<Backend['attentionDcaSparse']>): Backend => ({ ...reference, name, attentionDcaSparse: wrap });
  const mutants: Backend[] = [
    mutant('dense DCA for every row', (q, cache, batch, positions, dca, scale, rls, _sparse, out) => reference.attentionDca!(q, cache, batch, positions, dca, scale, rls, out)),
    mutant('one estimation row more', (q, cache, batch, positions, dca, scale, rls, sparse, out) =>
      reference.attentionDcaSparse!(q, cache, batch, positions, dca, scale, rls, { ...sparse, lastQ: sparse.lastQ + 1 }, out)),
    mutant('every slash budget one larger', (q, cache, batch, positions, dca, scale, rls, sparse, out) =>
      reference.attentionDcaSparse!(q, cache, batch, positions, dca, scale, rls, { ...sparse, slashSize: sparse.slashSize.map((s) => s + 1) }, out)),
    mutant('the 30 -> 130 bump applied to 130', (q, cache, batch, positions, dca, scale, rls, sparse, out) =>
      reference.attentionDcaSparse!(q, cache, batch, positions, dca, scale, rls, { ...sparse, verticalSize: sparse.verticalSize.map((v) => (v === 130 ? 230 : v)) }, out)),
  ];
  const cases = SPARSE_CASES.filter((c) => c.label.startsWith('L=48') || c.label.startsWith('L=32'));
  for (const m of mutants) {
    test(`${m.name}: fails`, () => {
      assert.ok(cases.some((c) => {
        try {
          checkSparseCase(m, c, 'f64');
          return false;
        } catch (e) {
          return e instanceof assert.AssertionError;
        }
      }), `no case caught "${m.name}"`);
    });
  }
});
