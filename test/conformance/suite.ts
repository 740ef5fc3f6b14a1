// The backend conformance suite: every Backend op on one backend, checked against the float64 references
// of test/ref/f64.ts over a grid of shapes, dtypes, GQA layouts, RoPE positions and paged-cache layouts.
// Invariant: the same cases run on every backend (reference, cpu, cuda); a backend that cannot run a case
// must skip it with a written reason, never loosen a tolerance. Must not: depend on a specific backend.
import { describe } from 'node:test';
import type { Backend } from '../../src/runtime/backend.js';
import { registerDenseOpTests, registerMemoryTests } from './dense-ops.js';
import { useBackend } from './harness.js';
import { registerPagedAttentionTests } from './paged-attention.js';
import { registerRopeTests } from './rope.js';

/** Registers the whole suite as `describe('conformance: <name>')`; makeBackend runs once, before its tests. */
export function runConformance(name: string, makeBackend: () => Backend): void {
  describe(`conformance: ${name}`, () => {
    const backend = useBackend(makeBackend);
    registerMemoryTests(backend);
    registerDenseOpTests(backend);
    registerRopeTests(backend);
    registerPagedAttentionTests(backend);
    registerPagedAttentionTests(backend, { kvDtype: 'bf16' }); // skips where kvCacheDtypes lacks bf16
  });
}
