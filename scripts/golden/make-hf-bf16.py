#!/usr/bin/env python3
"""Models written by transformers' save_pretrained (bf16, tied and untied embeddings) and their reference
greedy tokens and log-probabilities, for scripts/golden/check-hf-bf16.ts.

Each model is a small random Qwen2ForCausalLM (vocab 151,936 so the Qwen2.5 tokenizer fits; hidden 32,
2 layers, 2 query heads / 1 kv head of 16) with weight scales large enough that the next-token distribution
is peaked. It is cast to bf16 and saved with save_pretrained (the untied one sharded, with
model.safetensors.index.json). The reference then reloads the saved directory and runs the prompt plus 8
greedy steps twice: with the bf16 weights upcast to float32 ("f32", the exact math of the stored weights)
and in bf16 ("bf16", what transformers computes natively). Per step: the greedy token (from the f32 run,
teacher-forced in the bf16 run), its log-prob, and the top-5 log-probs (log-softmax of the raw logits).

Run on a machine with torch + transformers (see scripts/golden/device-golden.sh):
  python3 scripts/golden/make-hf-bf16.py OUT_DIR
writes OUT_DIR/hf-tied/, OUT_DIR/hf-untied/ and OUT_DIR/hf-bf16-reference.json.
"""
import json, os, sys

import torch
import transformers
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

# "The quick brown fox jumps over the lazy dog. Long contexts need" under the Qwen2.5 tokenizer
PROMPT_IDS = [785, 3974, 13876, 38835, 34208, 916, 279, 15678, 5562, 13, 5724, 37597, 1184]
NUM_STEPS = 8
TOP_K = 5


def make_model(tied, seed):
    cfg = Qwen2Config(vocab_size=151936, hidden_size=32, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                      rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=tied,
                      bos_token_id=151643, eos_token_id=151645)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    return model


def run(model_dir, dtype, forced=None):
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager")
    except TypeError:
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype, attn_implementation="eager")
    model.eval()
    steps = []
    with torch.no_grad():
        out = model(input_ids=torch.tensor([PROMPT_IDS]), use_cache=True)
        past = out.past_key_values
        row = out.logits[0, -1]
        for s in range(NUM_STEPS):
            lp = torch.log_softmax(row.double(), dim=-1)
            tok = int(torch.argmax(lp)) if forced is None else forced[s]
            top = torch.topk(lp, TOP_K)
            steps.append({"token_id": tok, "logprob": float(lp[tok]),
                          "top_logprobs": [[int(i), float(v)] for v, i in zip(top.values.tolist(), top.indices.tolist())]})
            out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            row = out.logits[0, -1]
    return steps


def main():
    out_dir = sys.argv[1]
    doc = {"format": "longctx-hf-bf16-reference", "version": 1,
           "reference": f"transformers {transformers.__version__}, torch {torch.__version__}, eager attention, CPU",
           "prompt_token_ids": PROMPT_IDS, "models": {}}
    for name, tied, seed in (("hf-tied", True, 11), ("hf-untied", False, 12)):
        d = os.path.join(out_dir, name)
        make_model(tied, seed).to(torch.bfloat16).save_pretrained(d, max_shard_size="8MB" if not tied else "1GB")
        f32 = run(d, torch.float32)
        bf16 = run(d, torch.bfloat16, forced=[s["token_id"] for s in f32])
        doc["models"][name] = {"tied": tied, "files": sorted(os.listdir(d)), "f32": f32, "bf16": bf16}
        print(name, sorted(os.listdir(d)), "greedy", [s["token_id"] for s in f32],
              "max |lp f32 - lp bf16|", max(abs(a["logprob"] - b["logprob"]) for a, b in zip(f32, bf16)), file=sys.stderr)
    with open(os.path.join(out_dir, "hf-bf16-reference.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
