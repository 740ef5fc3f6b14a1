// Known GPUs for `longctx plan --gpu NAME`: the total device memory in bytes each one reports through
// cudaMemGetInfo (= torch.cuda.mem_get_info()[1]), which is what --gpu-memory-utilization multiplies.
// Invariant: totalBytes is the usable total the driver reports (nvidia-smi's memory.total minus its
// memory.reserved), not the marketing size. Must not: probe hardware (the plan works without a GPU).
import { UserError } from '../errors.js';

export interface KnownGpu {
  readonly name: string; // canonical name, as accepted by --gpu
  readonly aliases: readonly string[]; // other accepted spellings (matched case-insensitively)
  readonly totalBytes: number; // cudaMemGetInfo total
  readonly source: string; // where the figure comes from
}

const MiB = 1024 * 1024;

/**
 * Measured entries give the exact cudaMemGetInfo total (driver 580.159.04, CUDA 13.0, ECC on, November
 * 2026, on the lent machines). The others are PyTorch's "GPU 0 has a total capacity of X GiB" as quoted in
 * public OOM reports, converted to whole MiB and rounded down: accurate to ~10 MiB, and a driver or ECC
 * change moves them by tens of MiB. Pass --gpu-memory-gib for anything else.
 */
export const KNOWN_GPUS: readonly KnownGpu[] = [
  {
    name: 'H100-80GB',
    aliases: ['h100', 'h100-sxm', 'h100-80g', 'h100-80gb-hbm3'],
    totalBytes: 85_017_493_504, // 79.18 GiB; nvidia-smi: 81,559 MiB total, 480 MiB reserved
    source: 'measured: H100 80GB HBM3 (SXM), cudaMemGetInfo total',
  },
  {
    name: 'H200',
    aliases: ['h200-141gb', 'h200-sxm'],
    totalBytes: 150_109_880_320, // 139.80 GiB; nvidia-smi: 143,771 MiB total, 616 MiB reserved
    source: 'measured: H200 (SXM, 141 GB), cudaMemGetInfo total',
  },
  {
    name: 'A100-80GB',
    aliases: ['a100', 'a100-80g', 'a100-sxm4-80gb'],
    totalBytes: 81_049 * MiB, // 79.15 GiB
    source: 'not measured: PyTorch-reported total capacity 79.15 GiB (A100 80GB), public OOM reports',
  },
  {
    name: 'A100-40GB',
    aliases: ['a100-40g', 'a100-sxm4-40gb'],
    totalBytes: 40_335 * MiB, // 39.39 GiB
    source: 'not measured: PyTorch-reported total capacity 39.39 GiB (A100 40GB), public OOM reports',
  },
  {
    name: 'L40S',
    aliases: ['l40s-48gb'],
    totalBytes: 45_455 * MiB, // 44.39 GiB (48 GB GDDR6 with ECC on)
    source: 'not measured: PyTorch-reported total capacity 44.39 GiB (48 GB Ada cards), public OOM reports',
  },
  {
    name: 'RTX4090',
    aliases: ['rtx-4090', '4090', 'rtx4090-24gb'],
    totalBytes: 24_217 * MiB, // 23.65 GiB
    source: 'not measured: PyTorch-reported total capacity 23.65 GiB (RTX 4090), public OOM reports',
  },
];

/** The GPU named `name` (canonical name or alias, case-insensitive); UserError listing the known names. */
export function findGpu(name: string): KnownGpu {
  const key = name.trim().toLowerCase();
  const gpu = KNOWN_GPUS.find((g) => g.name.toLowerCase() === key || g.aliases.includes(key));
  if (!gpu) {
    throw new UserError(
      `unknown GPU "${name}": known GPUs are ${KNOWN_GPUS.map((g) => g.name).join(', ')}; or give --gpu-memory-gib N`,
    );
  }
  return gpu;
}
