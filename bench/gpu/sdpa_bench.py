# PyTorch SDPA peer baseline for bench/gpu/attn-bench.cu on the GPU machine: causal GQA attention at the same
# shapes (28 q / 4 kv heads, headDim 128), full prefill and one decode query, in bf16 (flash attention,
# what a production engine would run) and fp32 (memory-efficient kernel, K/V expanded per head; the same
# arithmetic precision as our fp32 kernel). CUDA-event medians after a warm-up, random inputs.
# Prints one JSON object per line. Usage: python3 sdpa_bench.py [--prefill-bf16] [contextLen ...]
# (--prefill-bf16: the bf16 prefill rows alone)
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(fn, budget_ms=1500.0):
    fn()
    torch.cuda.synchronize()
    times = []
    while len(times) < 3 or (sum(times) < budget_ms and len(times) < 50):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def run(L, dtype, phase):
    nH, nKv, D = 28, 4, 128
    nq = L if phase == "prefill" else 1
    g = torch.Generator(device="cuda").manual_seed(L)
    q = torch.rand(1, nH, nq, D, device="cuda", dtype=dtype, generator=g) * 2 - 1
    k = torch.rand(1, nKv, L, D, device="cuda", dtype=dtype, generator=g) * 2 - 1
    v = torch.rand(1, nKv, L, D, device="cuda", dtype=dtype, generator=g) * 2 - 1
    if dtype == torch.float32:  # the fp32 kernels take no GQA: expand (not counted in the time)
        k, v = k.repeat_interleave(nH // nKv, dim=1), v.repeat_interleave(nH // nKv, dim=1)
        backends, gqa = [SDPBackend.EFFICIENT_ATTENTION], False
    else:
        backends, gqa = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION], True
    # decode: one query at the last position sees every key, i.e. no mask at all
    causal = phase == "prefill"
    with sdpa_kernel(backends):
        ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa))
    rec = {"kind": "sdpa", "phase": phase, "L": L, "dtype": str(dtype).replace("torch.", ""), "ms": round(ms, 4)}
    if phase == "prefill":
        rec["tflops"] = round(4.0 * D * nH * (L * (L + 1) / 2) / ms / 1e9, 3)
    else:
        rec["gbps"] = round(2.0 * L * nKv * D * q.element_size() / ms / 1e6, 1)
    return rec


def main():
    args = sys.argv[1:]
    prefill_bf16 = "--prefill-bf16" in args
    lens = [int(a) for a in args if not a.startswith("--")] or [4096, 16384, 65536]
    print(json.dumps({"kind": "torch", "version": torch.__version__, "device": torch.cuda.get_device_name()}))
    for L in lens:
        for dtype in (torch.bfloat16,) if prefill_bf16 else (torch.bfloat16, torch.float32):
            for phase in ("prefill",) if prefill_bf16 else ("prefill", "decode"):
                try:
                    print(json.dumps(run(L, dtype, phase)), flush=True)
                except Exception as e:  # an unsupported kernel/size is reported, not fatal
                    print(json.dumps({"kind": "sdpa", "phase": phase, "L": L, "dtype": str(dtype).replace("torch.", ""), "error": str(e)[:200]}), flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
