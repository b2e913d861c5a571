"""FOCUS on a real pair: SmolLM2-135M-Instruct → Spanish (RV1909), a new byte-level BPE.

Trains the target tokenizer on the Bible's training books (1-58, dev 59-64 and test 65-66 held out),
builds the FOCUS mapping (fastText on the same text), counts rows by provenance for both overlap
modes, times each step and, with --eval, compares held-out bits per byte right after transplant
(no fine-tuning) for focus / fvt / mean. Prints a table and writes JSON.

    PYTHONPATH=src python benchmarks/focus_spanish.py --output /tmp/focus_spanish.json [--eval]
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np

from transtok import assets
from transtok.focus import FocusConfig, focus_mapping, train_token_fasttext
from transtok.tokenizer import load_tokenizer, train_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--output", default="focus_spanish.json")
    parser.add_argument("--eval", action="store_true", help="also bits per byte on Jude+Revelation after transplant")
    parser.add_argument("--eval-verses", type=int, default=200)
    parser.add_argument("--eval-inits", nargs="+", default=["source", "focus", "focus-deepfocus", "fvt", "mean"],
                        help="what --eval scores (source = SmolLM2 with its own tokenizer)")
    parser.add_argument("--min-count", type=int, default=FocusConfig.min_count, help="fastText min count")
    args = parser.parse_args()

    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name] = round(now - clock, 2)
        clock = now

    checkpoint = assets.smollm2_checkpoint()
    source_tokenizer = load_tokenizer(str(checkpoint))
    split = assets.parallel_bible("en", "es")
    texts = split.train.target
    lap("load SmolLM2 tokenizer + Bible")
    target_tokenizer = train_tokenizer(texts, source_tokenizer, args.vocab_size)
    lap("train target tokenizer")
    model = train_token_fasttext(target_tokenizer, texts, FocusConfig(min_count=args.min_count))
    lap("train fastText (1 thread)")
    results = {}
    for mode in ("bytes", "deepfocus"):
        config = FocusConfig(overlap=mode, min_count=args.min_count)
        mapping, report = focus_mapping(source_tokenizer, target_tokenizer, config=config, fasttext_model=model)
        lap(f"mapping, overlap={mode}")
        results[mode] = (mapping, report)
    by_bytes, by_deepfocus = results["bytes"][0], results["deepfocus"][0]
    differ = int(((by_bytes.matrix != by_deepfocus.matrix).sum(axis=1) > 0).sum())

    pieces = target_tokenizer.convert_ids_to_tokens(list(range(len(target_tokenizer))))
    source_pieces = source_tokenizer.convert_ids_to_tokens(list(range(len(source_tokenizer))))
    vocab = target_tokenizer.get_vocab()
    examples = {}
    for word in ("Ġreino", "Ġjusticia", "Ġsacerdote", "Ġmandamientos", "Ġdijo", "Ġcorazón"):
        ids = target_tokenizer.encode(word.replace("Ġ", " "), add_special_tokens=False)
        token = pieces[ids[0]] if len(ids) == 1 else None
        if token is None or token not in vocab:
            continue
        row = by_bytes.matrix[vocab[token]]
        order = np.argsort(-row.data)[:5]
        examples[token] = [(source_pieces[row.indices[i]], round(float(row.data[i]), 3)) for i in order]

    out = {"min_count": args.min_count, "vocab_size": len(target_tokenizer), "source_vocab": len(source_tokenizer),
           "train_verses": len(texts),
           "fasttext_words": len(model.words), "times_s": times,
           "provenance": {mode: r.provenance for mode, (_, r) in results.items()},
           "mean_partners": {mode: round(r.mean_partners, 2) for mode, (_, r) in results.items()},
           "mean_top_weight": {mode: round(r.mean_top_weight, 3) for mode, (_, r) in results.items()},
           "rows_differing_bytes_vs_deepfocus_overlap": differ, "examples": examples}

    if args.eval:
        import torch

        from transtok.evaluate import evaluate_perplexity
        from transtok.mapping import MappingConfig
        from transtok.pipeline import load_model, mapping_from_alignment
        from transtok.surgery import transplant

        held_out = split.test.target[:args.eval_verses]
        source_model, _ = load_model(str(checkpoint), dtype="float32")
        bpb = {}
        if "source" in args.eval_inits:
            bpb["source"] = evaluate_perplexity(source_model, source_tokenizer, held_out).bits_per_byte
        inits = {"focus": by_bytes, "focus-deepfocus": by_deepfocus}
        for init in ("fvt", "mean"):
            if init in args.eval_inits:
                inits[init] = mapping_from_alignment(source_tokenizer, target_tokenizer, None,
                                                     MappingConfig(init=init))[0]
        inits = {name: mapping for name, mapping in inits.items() if name in args.eval_inits}
        for name, mapping in inits.items():
            model_copy = copy.deepcopy(source_model)
            transplant(model_copy, mapping, target_tokenizer, source_tokenizer=source_tokenizer)
            with torch.no_grad():
                bpb[name] = evaluate_perplexity(model_copy, target_tokenizer, held_out).bits_per_byte
            del model_copy
        lap("eval")
        out["held_out_bits_per_byte"] = {k: round(v, 4) for k, v in bpb.items()}
        out["eval_verses"] = len(held_out)

    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=2, ensure_ascii=False)
    print(f"{'overlap':<10} " + " ".join(f"{k:>9}" for k in ("special", "copied", "focus", "fallback")))
    for mode, (_, report) in results.items():
        counts = report.provenance
        print(f"{mode:<10} " + " ".join(f"{counts[k]:>9}" for k in ("special", "copied", "focus", "fallback")))
    print(f"rows differing between the overlap modes: {differ}")
    for step, seconds in times.items():
        print(f"{step:<32} {seconds:>8.1f} s")
    for token, partners in examples.items():
        print(f"{token:<16} " + ", ".join(f"{p} {w}" for p, w in partners))
    for name, value in out.get("held_out_bits_per_byte", {}).items():
        print(f"bpb {name:<28} {value:.4f}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
