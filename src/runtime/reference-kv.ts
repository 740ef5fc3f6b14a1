// The reference backends' reading of a paged KV cache of either dtype (Backend.kvCacheDtypes): f32 caches
// are used in place, bf16 ones widened exactly to f32. Must not: round or otherwise change a value.
import type { KvCacheLayer } from './backend.js';
import { toF32 } from './tensor.js';

/**
 * The cache's K and V as f32 values: the arrays themselves for an f32 cache (writeKv writes through them),
 * exact widened copies of a bf16 one. Throws (a caller bug) on a shape or dtype mismatch.
 */
export function referenceCacheValues(op: string, cache: KvCacheLayer): { k: Float32Array; v: Float32Array } {
  const shape = [cache.numBlocks, cache.blockSize, cache.numKvHeads, cache.headDim];
  for (const [name, t] of [['cache.k', cache.k], ['cache.v', cache.v]] as const) {
    if (t.shape.length !== 4 || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`reference ${op}: ${name} has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
  }
  const dtype = cache.k.dtype;
  if (cache.v.dtype !== dtype) throw new Error(`reference ${op}: cache.k is ${dtype} but cache.v is ${cache.v.dtype}`);
  if (dtype === 'bf16') return { k: toF32(cache.k), v: toF32(cache.v) };
  if (dtype !== 'f32') throw new Error(`reference ${op}: KV cache must be f32 or bf16, got ${dtype}`);
  return { k: cache.k.data as Float32Array, v: cache.v.data as Float32Array };
}
