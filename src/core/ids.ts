// Branded ids of the core: a BlockId indexes the KV pool, a SeqId names a request's sequence. Both are
// plain integers at run time; the brand only stops one being passed where the other (or a slot index, a
// token id, a count) is expected. Must not: carry behaviour or validation beyond the checked casts below.

/** Index of a KV block in the pool: integer in [0, numBlocks). */
export type BlockId = number & { readonly __brand: 'BlockId' };

/** Caller-chosen id of a sequence: a non-negative safe integer, unique among live sequences. */
export type SeqId = number & { readonly __brand: 'SeqId' };

export function asBlockId(n: number): BlockId {
  if (!Number.isInteger(n) || n < 0) throw new Error(`invalid block id ${n}`);
  return n as BlockId;
}

export function asSeqId(n: number): SeqId {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`invalid sequence id ${n}`);
  return n as SeqId;
}
