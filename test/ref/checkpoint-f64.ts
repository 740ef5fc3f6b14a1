// What the whole-model float64 forwards (qwen2-dca-f64.ts, sparse-qwen2-f64.ts) share: reading a
// model.safetensors file into float64 arrays themselves (independently of src/model), and the linear and
// RMSNorm layers over those arrays. Must not: use the engine's loader, graph or backends.
import { readFileSync } from 'node:fs';
import { decodeBf16, decodeF16, matmulF64, rmsnormF64 } from './f64.js';

/** A model.safetensors file as float64 arrays by tensor name (F32, BF16 or F16). */
export function readSafetensorsF64(file: string): Map<string, Float64Array> {
  const bytes = readFileSync(file);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const base = 8 + headerLen;
  const out = new Map<string, Float64Array>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [begin, end] = info.data_offsets;
    const raw = bytes.subarray(base + begin, base + end);
    const values = new Float64Array(raw.length / (info.dtype === 'F32' ? 4 : 2));
    for (let i = 0; i < values.length; i++) {
      if (info.dtype === 'F32') values[i] = raw.readFloatLE(4 * i);
      else if (info.dtype === 'BF16') values[i] = decodeBf16(raw.readUInt16LE(2 * i));
      else if (info.dtype === 'F16') values[i] = decodeF16(raw.readUInt16LE(2 * i));
      else throw new Error(`${file}: ${name} has dtype ${info.dtype}`);
    }
    out.set(name, values);
  }
  return out;
}

/** y [T, N] = x [T, K] · w[N, K]ᵀ (+ bias), bias as an optional map lookup gives it. */
export function linearF64(x: Float64Array, w: Float64Array, bias: Float64Array | undefined, T: number, K: number, N: number): Float64Array {
  return matmulF64(x, w, bias ?? null, T, K, N);
}

/** rmsnormF64 over every row of x [*, H]. */
export function rmsnormRowsF64(x: Float64Array, weight: Float64Array, eps: number, H: number): Float64Array {
  return rmsnormF64(x, weight, eps, x.length / H, H);
}

