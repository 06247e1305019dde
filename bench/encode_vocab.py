#!/usr/bin/env python
"""Encode a vocabulary with our prompted encoder and with open_clip's ``encode_text``, side by side.

Both turn the same tokenised prompts, "a photo of a {name}." (ours holds "a photo of a" as its ctx, which the
tests prove exact), into normalised embeddings: ``encode_text`` pads every prompt to 77 tokens; ours sorts by
length, computes the shared start of the prompts once and packs the name tokens without padding. Tokenisation
(CLIP's BPE in Python, the same work for both, done once per vocabulary) is timed apart. Prints JSON: classes/s
of both, the speed ratio, peak memory, and the largest difference.

    python bench/encode_vocab.py --device cpu --limit 1000          # CPU preset (about a minute on 2 cores)
    python bench/encode_vocab.py --device cuda --json bench/results/encode_vocab_h200.json
"""

import argparse
import sys
import time
from pathlib import Path

import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakMemory, machine, time_call, write_result  # noqa: E402

from pomp_plugins.prompt import PromptedTextEncoder, get_vocabulary, load_clip  # noqa: E402
from pomp_plugins.prompt.text_encoder import encode_in_batches  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--vocabulary", default="imagenet21k-p")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N names")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    clip = load_clip(args.model, None, device=device, dtype=args.dtype)
    names = list(get_vocabulary(args.vocabulary).names[: args.limit])
    encoder = PromptedTextEncoder.from_clip(clip.model, init="a photo of a")
    texts = [f"a photo of a {name}." for name in names]

    started = time.perf_counter()
    prompts = encoder.tokenize(names, device="cpu")
    ours_tokenize_s = time.perf_counter() - started
    started = time.perf_counter()
    tokens = open_clip.tokenize(texts).to(device)
    reference_tokenize_s = time.perf_counter() - started

    @torch.no_grad()
    def ours():
        return encode_in_batches(encoder, prompts, args.batch_size, normalize=True, progress=False)

    @torch.no_grad()
    def reference():
        return torch.cat(
            [
                clip.model.encode_text(tokens[i : i + args.batch_size], normalize=True).float()
                for i in range(0, len(tokens), args.batch_size)
            ]
        )

    with PeakMemory(device) as ours_memory:
        ours_s = time_call(ours, device, args.repeats)
    with PeakMemory(device) as reference_memory:
        reference_s = time_call(reference, device, args.repeats)
    difference = (ours() - reference()).abs().max().item()

    result = {
        "benchmark": "encode_vocab",
        "machine": machine(device),
        "model": args.model,
        "dtype": str(clip.model.token_embedding.weight.dtype).replace("torch.", ""),
        "vocabulary": args.vocabulary,
        "classes": len(names),
        "ours": {
            "seconds": ours_s,
            "classes_per_s": len(names) / ours_s,
            "peak_gib": ours_memory.gib,
            "tokenize_seconds": ours_tokenize_s,
        },
        "encode_text_77_tokens": {
            "seconds": reference_s,
            "classes_per_s": len(names) / reference_s,
            "peak_gib": reference_memory.gib,
            "tokenize_seconds": reference_tokenize_s,
        },
        "speedup": reference_s / ours_s,
        "max_abs_difference": difference,
    }
    write_result(result, args.json)
    return result


if __name__ == "__main__":
    main()
