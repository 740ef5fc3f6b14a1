#!/usr/bin/env python3
"""One table from `longctx bench --json` (ours: JSON lines of kind "length") and bench/gpu/e2e_transformers.py
(the peer: kind "e2e"/"error"), at the same prompt lengths, with ratios: TTFT ratio = ours / theirs (< 1: we
are faster), decode speedup = our tokens/s / theirs. Peak memory: ours is the allocator high-water mark
(the whole planned pool: weights, activations, scratch, KV for max_model_len), theirs torch's
max_memory_allocated. Usage: python3 scripts/gpu/bench-table.py ours.jsonl theirs.jsonl"""
import json
import sys

recs = []
for path in sys.argv[1:]:
    with open(path) as f:
        recs += [json.loads(line) for line in f if line.startswith("{")]
ours = {r["prompt_tokens"]: r for r in recs if r.get("kind") == "length"}
peer = {r["promptTokens"]: r for r in recs if r.get("kind") == "e2e"}
errs = {r["promptTokens"]: r for r in recs if r.get("kind") == "error"}
gib = 2 ** 30
print("\n== longctx bench vs transformers + SDPA, Qwen2.5-7B-Instruct-1M shape, random bf16 weights, batch 1 ==")
print(f"{'prompt':>8} | {'TTFT ours':>9} {'TTFT hf':>8} {'ratio':>6} | {'decode ours':>11} {'decode hf':>9} {'speedup':>7} | {'peak ours GiB':>13} {'peak hf GiB':>11}")
for P in sorted(set(ours) | set(peer) | set(errs)):
    o, p = ours.get(P), peer.get(P)
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    ratio = o["ttft_s"] / p["ttftSeconds"] if o and p else None
    speed = o["decode_tok_s"] / p["decodeTokensPerSecond"] if o and p and o.get("decode_tok_s") else None
    hf_note = "" if p or P not in errs else f"  (transformers: {errs[P]['message'][:80]})"
    print(f"{P:>8} | {f(o and o['ttft_s'])} s {f(p and p['ttftSeconds'])} s {f(ratio)} | "
          f"{f(o and o['decode_tok_s'], 1):>11} {f(p and p['decodeTokensPerSecond'], 1):>9} {f(speed, 1):>7} | "
          f"{f(o and o['peak_bytes'] and o['peak_bytes'] / gib):>13} {f(p and p['peakGiB']):>11}{hf_note}")
