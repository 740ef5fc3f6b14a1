#!/usr/bin/env python3
"""Golden logits for the Qwen2 forward pass, from Hugging Face transformers on CPU in float32.

Independent reference for test/native/golden.test.ts: loads a model directory (written by
`longctx init-model`) with transformers, runs the prompt, then 8 greedy steps with its KV cache, and
stores per step the greedy token, the log-sum-exp of the logits, the top-20 logits and the logits at
fixed probe ids, plus probe logits for every prompt position (checks causal masking). Kilobytes, not MB.

Regenerate (needs torch, transformers, safetensors, numpy):
  node bin/longctx.js init-model /tmp/golden-tiny --preset tiny --seed 1 --dtype f32 --force
  python3 scripts/golden/make-golden.py /tmp/golden-tiny test/fixtures/golden-tiny.json --preset tiny --seed 1 --dtype f32
"""
import argparse, hashlib, json, os, sys

import torch
import transformers
from transformers import AutoModelForCausalLM

FORMAT = "longctx-golden"
VERSION = 1
PROMPT_IDS = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198,
              3838, 374, 279, 6722, 315, 9625, 30, 151645, 198, 151644, 77091, 198]
NUM_STEPS = 8
TOP_K = 20


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--dtype", required=True)
    args = ap.parse_args()

    torch.manual_seed(0)
    try:  # transformers >= 5 names it dtype; older releases torch_dtype
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, torch_dtype=torch.float32,
                                                     attn_implementation="eager")
    model.eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(1234)
    probe_ids = sorted(set(torch.randint(0, vocab, (32,), generator=g).tolist()) | {0, vocab - 1, 151645})

    def describe(logits_row, greedy):
        lse = torch.logsumexp(logits_row.double(), dim=-1).item()
        top = torch.topk(logits_row, TOP_K)
        return {
            "token_id": int(greedy),
            "logsumexp": lse,
            "top": [[int(i), float(v)] for v, i in zip(top.values.tolist(), top.indices.tolist())],
            "probe": [float(logits_row[i]) for i in probe_ids],
        }

    steps = []
    with torch.no_grad():
        ids = torch.tensor([PROMPT_IDS])
        out = model(input_ids=ids, use_cache=True)
        prompt_logits = out.logits[0]  # [T, vocab]
        prompt_probe = [[float(prompt_logits[t, i]) for i in probe_ids] for t in range(len(PROMPT_IDS))]
        past = out.past_key_values
        row = prompt_logits[-1]
        for step in range(NUM_STEPS + 1):
            greedy = int(torch.argmax(row))
            steps.append(describe(row, greedy))
            if step == NUM_STEPS:
                break
            out = model(input_ids=torch.tensor([[greedy]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            row = out.logits[0, -1]

    weights = os.path.join(args.model_dir, "model.safetensors")
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "regenerate": "see the header of scripts/golden/make-golden.py",
        "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, float32, eager attention, CPU",
        "model": {"preset": args.preset, "seed": args.seed, "dtype": args.dtype,
                  "model_safetensors_sha256": sha256(weights) if os.path.exists(weights) else None},
        "prompt_token_ids": PROMPT_IDS,
        "probe_ids": probe_ids,
        "prompt_probe_logits": prompt_probe,
        "steps": steps,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(steps)} steps, greedy {[s['token_id'] for s in steps]}", file=sys.stderr)


if __name__ == "__main__":
    main()
