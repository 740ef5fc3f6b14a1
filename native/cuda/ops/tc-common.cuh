// Device helpers shared by the tensor-core prefill kernels (attention-tc.cu: mma.sync; attention-wgmma.cu:
// wgmma): asynchronous 16-byte copies, bf16 packing, mma.sync, ldmatrix, the paged K/V offsets of a key tile, exp2.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "attention-common.cuh"

namespace lcuda::attn::tc {

__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, int srcBytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(srcBytes));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cpAsyncWaitAll() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
template <int N>  // all but this thread's N most recent groups done
__device__ __forceinline__ void cpAsyncWait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ uint32_t packBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low 16 bits) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

// d[0..3] += A (16x16 bf16, row) x B (16x8 bf16, col), fp32.
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], const void* smem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

// Element offsets (row `kvh` of each key's cache slot, plus `col`) of keys k0 + j0 + it·kStep that are below
// kStop, and the bytes to copy (16, or 0 past kStop: cp.async zero-fills). The block-table lookups are all
// issued first (independent loads, one latency). A power-of-two block size (the usual case) is a shift and
// a mask; any other size takes one division per key.
template <int D, int kIters, int kStep>
__device__ __forceinline__ void tileOffsets(const Params& p, const int32_t* table, int kvh, int k0, int j0, int col,
                                            int kStop, int64_t (&off)[kIters], int (&bytes)[kIters]) {
  const int bs = p.blockSize;
  const bool pow2 = (bs & (bs - 1)) == 0;
  const int sh = __ffs(bs) - 1;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int key = k0 + j0 + it * kStep;
    off[it] = 0;
    bytes[it] = 0;
    if (key < kStop) {
      int blk, in;
      if (pow2) {
        blk = key >> sh;
        in = key & (bs - 1);
      } else {
        blk = key / bs;
        in = key - blk * bs;
      }
      const int64_t slot = static_cast<int64_t>(table[blk]) * bs + in;
      off[it] = (slot * p.numKvHeads + kvh) * D + col;
      bytes[it] = 16;
    }
  }
}

// 2^x on the SFU alone (ex2.approx.ftz: a result below 2^-126 flushes to 0, which the tests' bound allows;
// exp2f adds a range check and two multiplies around the same instruction to keep subnormal results).
__device__ __forceinline__ float exp2Ftz(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace lcuda::attn::tc
