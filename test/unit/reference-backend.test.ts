// Unit tier: the backend conformance suite on the pure-TypeScript reference backend (no native code).
// Invariant: the reference passes every case at the suite's tolerances; it is what other backends are
// cross-checked against. Must not: relax or skip cases that other backends run.
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { runConformance } from '../conformance/suite.js';

runConformance('reference', createReferenceBackend);
