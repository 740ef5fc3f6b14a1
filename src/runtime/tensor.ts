// Host tensors: a dtype, a row-major shape and a typed array that owns the bytes. Shared by the reference
// backend and the native CPU backend (which reads the same memory through N-API without copying).
// Invariant: data.length === product(shape); bf16/f16 hold raw 16-bit patterns in a Uint16Array.
export type DType = 'f32' | 'bf16' | 'f16';

export type HostData = Float32Array | Uint16Array;

export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: HostData;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function makeTensor(dtype: DType, shape: readonly number[], data?: HostData): Tensor {
  const n = numel(shape);
  const d = data ?? (dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n));
  if (d.length !== n) throw new Error(`tensor data has ${d.length} elements, shape [${shape.join(', ')}] needs ${n}`);
  if (dtype === 'f32' && !(d instanceof Float32Array)) throw new Error('f32 tensor needs a Float32Array');
  if (dtype !== 'f32' && !(d instanceof Uint16Array)) throw new Error(`${dtype} tensor needs a Uint16Array`);
  return { dtype, shape: [...shape], data: d };
}

/** A host tensor aliasing the first numel(shape) elements of t (Backend.view for host backends). */
export function hostView(t: Tensor, shape: readonly number[], offset = 0): Tensor {
  const n = numel(shape);
  if (!Number.isSafeInteger(offset) || offset < 0) throw new Error(`view: bad offset ${offset}`);
  if (!Number.isSafeInteger(n) || shape.some((d) => !Number.isSafeInteger(d) || d < 0) || offset + n > t.data.length) {
    throw new Error(`view: shape [${shape.join(', ')}] at element ${offset} does not fit in a tensor of ${t.data.length} elements`);
  }
  return { dtype: t.dtype, shape: [...shape], data: t.data.subarray(offset, offset + n) };
}

// --- 16-bit float conversions (round-to-nearest-even for bf16, IEEE half for f16) ---
const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

export function bf16ToF32(bits: number): number {
  u32buf[0] = bits << 16;
  return f32buf[0];
}

export function f32ToBf16(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) return 0x7fc0; // NaN
  const rounding = 0x7fff + ((u >>> 16) & 1);
  return ((u + rounding) >>> 16) & 0xffff;
}

export function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

export function f32ToF16(x: number): number {
  f32buf[0] = x;
  const u = u32buf[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/** Any tensor's values as a fresh Float32Array (copies). */
export function toF32(t: Tensor): Float32Array {
  if (t.dtype === 'f32') return Float32Array.from(t.data as Float32Array);
  const src = t.data as Uint16Array;
  const out = new Float32Array(src.length);
  const conv = t.dtype === 'bf16' ? bf16ToF32 : f16ToF32;
  for (let i = 0; i < src.length; i++) out[i] = conv(src[i]);
  return out;
}

/** Encode float values into a tensor of the given dtype (rounding to nearest even for 16-bit types). */
export function fromF32(dtype: DType, shape: readonly number[], values: ArrayLike<number>): Tensor {
  if (dtype === 'f32') return makeTensor('f32', shape, Float32Array.from(values));
  const out = new Uint16Array(values.length);
  const conv = dtype === 'bf16' ? f32ToBf16 : f32ToF16;
  for (let i = 0; i < values.length; i++) out[i] = conv(values[i]);
  return makeTensor(dtype, shape, out);
}

/** The same storage seen with another shape (numel must match). No copy. */
export function reshape(t: Tensor, shape: readonly number[]): Tensor {
  if (numel(shape) !== numel(t.shape)) {
    throw new Error(`cannot reshape [${t.shape.join(', ')}] to [${shape.join(', ')}]`);
  }
  return { dtype: t.dtype, shape: [...shape], data: t.data };
}
