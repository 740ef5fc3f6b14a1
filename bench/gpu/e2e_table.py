#!/usr/bin/env python3
"""Prints the end-to-end table from the JSON lines of bench/gpu/e2e.ts (ours) and e2e_transformers.py
(the peer), in one file or several. Speedups are against transformers at the same prompt length:
TTFT speedup = their TTFT / ours, decode speedup = our tokens/s / theirs (> 1: we are faster).
Usage: python3 e2e_table.py e2e.jsonl [more.jsonl ...]"""
import json
import sys

recs = []
for path in sys.argv[1:]:
    with open(path) as f:
        recs += [json.loads(line) for line in f if line.startswith("{")]

e2e = [r for r in recs if r.get("kind") == "e2e"]
peer = {r["promptTokens"]: r for r in e2e if r["engine"].startswith("transformers")}
print("\n== end to end, Qwen2.5-7B-Instruct-1M shape, random bf16 weights, batch 1 ==")
for r in recs:
    if r.get("kind") in ("load", "error"):
        print("  " + json.dumps(r))
print(f"{'prompt':>7} {'engine':24} {'TTFT s':>8} {'prefill tok/s':>13} {'TTFT speedup':>12} | "
      f"{'decode tok/s':>12} {'decode speedup':>14} | {'peak GiB':>8} {'device used GiB':>15}")
for P in sorted({r["promptTokens"] for r in e2e}):
    for r in sorted((r for r in e2e if r["promptTokens"] == P), key=lambda r: r["engine"]):
        p = peer.get(P)
        mine = not r["engine"].startswith("transformers")
        ttft_x = f"{p['ttftSeconds'] / r['ttftSeconds']:11.2f}x" if p and mine else f"{'':>12}"
        dec_x = f"{r['decodeTokensPerSecond'] / p['decodeTokensPerSecond']:13.2f}x" if p and mine else f"{'':>14}"
        used = f"{r['deviceUsedGiB']:15.2f}" if "deviceUsedGiB" in r else f"{'':>15}"
        print(f"{P:7d} {r['engine']:24} {r['ttftSeconds']:8.3f} {r['prefillTokensPerSecond']:13d} {ttft_x} | "
              f"{r['decodeTokensPerSecond']:12.2f} {dec_x} | {r['peakGiB']:8.2f} {used}")
