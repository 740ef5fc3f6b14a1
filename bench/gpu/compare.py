# Prints the side-by-side table of bench/gpu/run.sh from the JSON lines of attn-bench (ours) and
# sdpa_bench.py (PyTorch). Usage: python3 compare.py ours.jsonl sdpa.jsonl
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


ours, peer = load(sys.argv[1]), load(sys.argv[2])
print("\n== attention, 28 q / 4 kv heads, d=128, one sequence (ours: paged cache, block 16, fp32 or bf16 (-kvbf16)) ==")
print(f"{'phase':8} {'L':>6} {'ours':22} | {'ours ms':>10} {'rate':>12} | {'sdpa bf16 ms':>12} {'rate':>12} | {'sdpa fp32 ms':>12} {'rate':>12} | {'ours/bf16':>9} {'rate/bf16':>9}")
for o in (r for r in ours if r["kind"] == "attention"):
    def find(dt):
        return next((p for p in peer if p.get("kind") == "sdpa" and p["phase"] == o["phase"] and p["L"] == o["L"] and p.get("dtype") == dt), {})
    unit = "tflops" if o["phase"] == "prefill" else "gbps"
    suffix = " TF/s" if unit == "tflops" else " GB/s"
    cells = []
    for rec, width in ((o, 10), (find("bfloat16"), 12), (find("float32"), 12)):
        if "ms" in rec:
            cells.append(f"{rec['ms']:{width}.3f} {str(rec[unit]) + suffix:>12}")
        else:
            cells.append(f"{'n/a':>{width}} {rec.get('error', '')[:12]:>12}")
    bf = find("bfloat16")
    ratio = f"{o['ms'] / bf['ms']:9.1f}x" if "ms" in bf else f"{'n/a':>9}"
    share = f"{100 * bf['ms'] / o['ms']:8.1f}%" if "ms" in bf else f"{'n/a':>9}"  # our rate as a share of SDPA's
    print(f"{o['phase']:8} {o['L']:6d} {o.get('variant', 'fp32'):22} | {cells[0]} | {cells[1]} | {cells[2]} | {ratio} {share}")

print("\n== GEMM at Qwen2.5-7B shapes (out[T,N] = x[T,K] w[N,K]^T, fp32 accumulation) ==")
print(f"{'shape':8} {'T':>5} {'N':>6} {'K':>6} {'path':30} {'ms':>9} {'TFLOP/s':>8} {'weight GB/s':>11}")
for g in (r for r in ours if r["kind"] == "gemm"):
    print(f"{g['shape']:8} {g['T']:5d} {g['N']:6d} {g['K']:6d} {g['path']:30} {g['ms']:9.3f} {g['tflops']:8.2f} {g['weight_gbps']:11.1f}")
