#!/usr/bin/env python3
"""Peer baseline for bench/gpu/e2e.ts: Hugging Face transformers + PyTorch SDPA on the same
Qwen2.5-7B-Instruct-1M shape (28 layers, hidden 3584, 28 q / 4 kv heads, intermediate 18944, vocab 152064),
random bf16 weights initialized directly on the GPU, random prompt ids. Per prompt length: TTFT (one
forward over the whole prompt with logits for the last position only, what `generate` does; host clock
around a synchronized region), greedy decode tokens/s over the same number of steps with the KV cache
(DynamicCache), and torch.cuda.max_memory_allocated since the start of that length (weights, cache and
activations; not the CUDA context). DCA is not part of transformers' Qwen2; at these lengths (<= L + W)
DCA equals plain RoPE attention, so both sides do the same math. Prints one JSON object per line.
Usage: python3 bench/gpu/e2e_transformers.py [--lengths 4096,16384,32768] [--decode 32]
"""
import argparse
import json
import time

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM


def emit(rec):
    print(json.dumps(rec), flush=True)


def build():
    cfg = Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                      num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=1010000,
                      rope_theta=10000000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, use_cache=True,
                      bos_token_id=151643, eos_token_id=151645)
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg)  # parameters created in bf16 on the GPU, random init there
    torch.set_default_dtype(torch.float32)
    model.eval()
    return model


@torch.inference_mode()
def generate(model, ids, n_decode):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    tok = out.logits[:, -1].argmax(-1, keepdim=True)
    tok.item()  # waits for the prefill
    t1 = time.perf_counter()
    past = out.past_key_values
    for _ in range(n_decode):
        out = model(input_ids=tok, past_key_values=past, use_cache=True)
        past = out.past_key_values
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
    tok.item()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="4096,16384,32768")
    ap.add_argument("--decode", type=int, default=32)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    t = time.perf_counter()
    model = build()
    torch.cuda.synchronize()
    emit({"kind": "load", "engine": "transformers", "transformers": transformers.__version__, "torch": torch.__version__,
          "device": torch.cuda.get_device_name(), "attn": model.config._attn_implementation,
          "buildSeconds": round(time.perf_counter() - t, 2)})
    g = torch.Generator(device="cuda").manual_seed(777)
    prompt = lambda n: torch.randint(0, 152064, (1, n), device="cuda", generator=g)
    generate(model, prompt(1024), 2)  # warm-up
    for P in lengths:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            ttft, dec = generate(model, prompt(P), args.decode)
            emit({"kind": "e2e", "engine": "transformers-sdpa", "promptTokens": P, "ttftSeconds": round(ttft, 3),
                  "prefillTokensPerSecond": round(P / ttft), "decodeTokens": args.decode,
                  "decodeTokensPerSecond": round(args.decode / dec, 2),
                  "peakGiB": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
        except Exception as e:  # e.g. out of memory: reported, the next length still runs
            emit({"kind": "error", "engine": "transformers-sdpa", "promptTokens": P, "message": str(e)[:300]})


if __name__ == "__main__":
    main()
