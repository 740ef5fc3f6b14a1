// The CUDA backend's runGraph policy (src/runtime/cuda-step-graphs.ts) over a fake addon context that records
// the calls: first step of a key eager, the second captured, then replayed; a declined replay captured again; a
// context that cannot capture (graphBegin false) eager and asked again next time; a capture that throws abandoned
// (graphAbort), the step run eagerly at once and the key eager for good; graphs off: always eager; a disposed
// backend refused. Needs no GPU.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NativeCudaContext } from '../../src/runtime/cuda-addon.js';
import { cudaRunGraph } from '../../src/runtime/cuda-step-graphs.js';

interface Fake {
  ctx: NativeCudaContext;
  calls: string[];
  graphs: Set<string>;
  decline: Set<string>; // keys whose next replay is declined
  canBegin: boolean;
}

function fake(): Fake {
  const f: Fake = { calls: [], graphs: new Set(), decline: new Set(), canBegin: true, ctx: null as unknown as NativeCudaContext };
  let open: string | null = null;
  f.ctx = {
    graphReplay: (key: string) => {
      f.calls.push(`replay ${key}`);
      if (f.decline.delete(key)) return false;
      return f.graphs.has(key);
    },
    graphBegin: (key: string) => {
      f.calls.push(`begin ${key}`);
      if (!f.canBegin) return false;
      open = key;
      return true;
    },
    graphEnd: () => {
      f.calls.push('end');
      f.graphs.add(open!);
      open = null;
    },
    graphAbort: () => {
      f.calls.push('abort');
      open = null;
    },
  } as unknown as NativeCudaContext;
  return f;
}

test('eager, captured, replayed; a declined replay is captured again', () => {
  const f = fake();
  const run = cudaRunGraph(f.ctx, true, () => {});
  let recorded = 0;
  const rec = () => void recorded++;
  assert.deepEqual([run('a', [], rec), run('a', [], rec), run('a', [], rec), run('a', [], rec)], ['eager', 'captured', 'replayed', 'replayed']);
  assert.equal(recorded, 2, 'record runs for the eager step and the capture only');
  f.decline.add('a');
  assert.equal(run('a', [], rec), 'captured');
  assert.equal(run('b', [], rec), 'eager'); // another key starts over
  assert.equal(run('b', [], rec), 'captured');
  assert.equal(run('a', [], rec), 'replayed');
});

test('a context that cannot capture runs eagerly and is asked again; graphs off never asks', () => {
  const f = fake();
  f.canBegin = false;
  const run = cudaRunGraph(f.ctx, true, () => {});
  const rec = () => {};
  assert.deepEqual([run('a', [], rec), run('a', [], rec), run('a', [], rec)], ['eager', 'eager', 'eager']);
  assert.equal(f.calls.filter((c) => c.startsWith('begin')).length, 2);
  f.canBegin = true;
  assert.equal(run('a', [], rec), 'captured');
  const g = fake();
  const off = cudaRunGraph(g.ctx, false, () => {});
  assert.deepEqual([off('a', [], rec), off('a', [], rec), off('a', [], rec)], ['eager', 'eager', 'eager']);
  assert.deepEqual(g.calls, []);
});

test('a capture that throws is abandoned, the step runs eagerly, the key stays eager', () => {
  const f = fake();
  const run = cudaRunGraph(f.ctx, true, () => {});
  let n = 0;
  const rec = () => {
    n++;
    if (n === 2) throw new Error('not capturable'); // the capture's record
  };
  assert.equal(run('a', [], rec), 'eager');
  assert.equal(run('a', [], rec), 'eager');
  assert.equal(n, 3, 'the failed capture, then the same step eagerly');
  assert.ok(f.calls.includes('abort') && !f.calls.includes('end'));
  assert.equal(run('a', [], rec), 'eager');
  assert.equal(f.calls.filter((c) => c === 'replay a').length, 2, 'an eager key is not offered for replay again');
});

test('a disposed backend is refused before anything runs', () => {
  const f = fake();
  const run = cudaRunGraph(f.ctx, true, () => {
    throw new Error('cuda runGraph: the backend is disposed');
  });
  let ran = false;
  assert.throws(() => run('a', [], () => void (ran = true)), /disposed/);
  assert.equal(ran, false);
  assert.deepEqual(f.calls, []);
});
