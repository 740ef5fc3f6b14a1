// Conformance cases for rope: NeoX rotate-half at positions 0, 1, block-ish and very large (262143,
// 1000000), full and partial rotaryDim, theta 1e4 and 1e7, against ropeF64 in test/ref/f64.ts.
// Invariant: the angle is the contract's fp32 value, so at position 1e6 a one-ulp angle slip (0.06 rad)
// fails; dims past rotaryDim must come back bit-identical. Must not: compute expected values itself.
import { describe, test } from 'node:test';
import type { Backend } from '../../src/runtime/backend.js';
import { assertBitsEqual, assertClose, makeRng, randomF32, ropeF64, ropeTolerance } from '../ref/f64.js';
import { checkEach, grid, uploadF32 } from './harness.js';

const POSITIONS = [0, 1, 2, 31, 4095, 262143, 262144, 1000000, 1048575];

export function registerRopeTests(be: () => Backend): void {
  describe('rope', () => {
    for (const theta of [1e4, 1e7]) {
      for (const headDim of [8, 16, 64, 128]) {
        test(`rope: theta ${theta}, headDim ${headDim}, rotaryDim full and half, positions 0..1048575`, () => {
          const cases = grid({ rotaryDim: [headDim, headDim / 2], numHeads: [1, 3], order: ['sorted', 'shuffled'] });
          const label = (c: (typeof cases)[number]) =>
            `rope theta=${theta} heads=${c.numHeads} headDim=${headDim} rotaryDim=${c.rotaryDim} ${c.order}`;
          checkEach(cases, label, (c, label) => {
            const rng = makeRng(6000 + headDim + c.rotaryDim);
            const positions = Int32Array.from(c.order === 'sorted' ? POSITIONS : rng.shuffle([...POSITIONS]));
            const shape = [positions.length, c.numHeads, headDim];
            const x = randomF32(rng, positions.length * c.numHeads * headDim, 3);
            const t = uploadF32(be(), shape, x);
            be().rope(t, positions, theta, c.rotaryDim);
            const x64 = Float64Array.from(x);
            const ref = ropeF64(x64, positions, theta, c.rotaryDim, c.numHeads, headDim);
            assertClose(be().read(t), ref, ropeTolerance(x64, c.rotaryDim, headDim), label, shape);
          });
        });
      }
    }

    test('rope: one token at position 1000000, rotaryDim 64 of headDim 128 (Qwen-style partial)', () => {
      const x = randomF32(makeRng(6100), 2 * 128, 1);
      const positions = Int32Array.from([1000000]);
      const t = uploadF32(be(), [1, 2, 128], x);
      be().rope(t, positions, 1e7, 64);
      const x64 = Float64Array.from(x);
      const ref = ropeF64(x64, positions, 1e7, 64, 2, 128);
      assertClose(be().read(t), ref, ropeTolerance(x64, 64, 128), 'rope T=1 pos=1e6', [1, 2, 128]);
    });

    test('rope: position 0 leaves x bit-identical (cos 1, sin 0)', () => {
      const x = randomF32(makeRng(6200), 3 * 4 * 16, 5);
      const t = uploadF32(be(), [3, 4, 16], x);
      be().rope(t, new Int32Array(3), 1e4, 16);
      assertBitsEqual(be().read(t), x, 'rope at position 0', [3, 4, 16]);
    });

    test('rope: rotaryDim 2 rotates only dims 0 and 1 of each head', () => {
      const x = randomF32(makeRng(6300), 2 * 3 * 8, 1);
      const positions = Int32Array.from([5, 262143]);
      const t = uploadF32(be(), [2, 3, 8], x);
      be().rope(t, positions, 1e4, 2);
      const x64 = Float64Array.from(x);
      const ref = ropeF64(x64, positions, 1e4, 2, 3, 8);
      assertClose(be().read(t), ref, ropeTolerance(x64, 2, 8), 'rope rotaryDim=2', [2, 3, 8]);
    });
  });
}
