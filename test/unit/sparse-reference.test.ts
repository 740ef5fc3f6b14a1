// Unit tier: the attentionDcaSparse conformance suite on the pure-TypeScript reference backend.
import { createReferenceBackend } from '../../src/runtime/reference-backend.js';
import { runSparseConformance } from '../conformance/sparse-suite.js';

runSparseConformance('reference', createReferenceBackend, 'f64');
