"""How many lines the unigram prior's forward pass needs: its time against the alignment's, and the dev figures.

For each language: ``transfer`` on the Bible's training books without the prior (defaults otherwise; its
step times give the alignment's seconds), then the prior fitted on that model from ``--samples`` lines
(the token frequencies always count the whole target side), each timed and scored on the dev books
(James .. 3 John; windows of 512 moved by 128), or with ``--split test`` the held-out books (Jude,
Revelation), read once for the chosen setting. Writes results.json and results.md to --out; says which CPU it
ran on (whether it was idle is for the caller to say).

    python benchmarks/prior_lines.py --langs es ru --samples 64 128 256 --out benchmarks/results/prior_lines
    python benchmarks/prior_lines.py --langs es ru --samples 128 --split test --out benchmarks/results/prior_lines/test
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from prior_precision import cpu_name, untrained_transfer  # noqa: E402

from transtok.assets import smollm2_checkpoint  # noqa: E402
from transtok.calibration import DEFAULT_PRIOR_TEXTS, apply_unigram_prior  # noqa: E402
from transtok.checks import bf16_supported  # noqa: E402
from transtok.evaluate import DEFAULT_STRIDE, eval_seq_len, evaluate_perplexity  # noqa: E402
from transtok.loading import load_model  # noqa: E402

logger = logging.getLogger("prior_lines")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", nargs="+", default=["es", "ru"])
    parser.add_argument("--samples", nargs="+", type=int, default=[64, 128, DEFAULT_PRIOR_TEXTS])
    parser.add_argument("--split", default="dev", choices=["dev", "test"],
                        help="the books scored: dev (to choose), or the held-out test books (once, at the end)")
    parser.add_argument("--work", default="runs/prior_lines")
    parser.add_argument("--out", default="benchmarks/results/prior_lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, transfers = [], {}
    source = str(smollm2_checkpoint())
    for lang in args.langs:
        split, model_dir, seconds = untrained_transfer(lang, work, source)
        if seconds is None:
            raise SystemExit(f"{model_dir} was made without its step seconds; remove it and run again")
        transfers[lang] = seconds
        align = transfers[lang]["align"]
        for sample in args.samples:
            model, tokenizer = load_model(str(model_dir))
            start = time.perf_counter()
            prior = apply_unigram_prior(model, tokenizer, split.train.target, sample=sample, device="cpu", bf16=False)
            seconds = time.perf_counter() - start
            seq_len = eval_seq_len(model)
            scored = evaluate_perplexity(model, tokenizer, getattr(split, args.split).target, seq_len=seq_len,
                                         stride=min(DEFAULT_STRIDE, seq_len))
            rows.append({"lang": lang, "sample": sample, "prior_seconds": round(seconds, 2),
                         "align_seconds": round(align, 2), "ratio": round(seconds / align, 3),
                         "positions": prior.positions, "split": args.split, "bits_per_byte": scored.bits_per_byte,
                         "signature": scored.signature})
            logger.info("%s %d lines: prior %.1f s (%.2f of the alignment's %.1f s), %s %.4f", lang, sample, seconds,
                        seconds / align, align, args.split, scored.bits_per_byte)
            del model
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "native_bf16": bf16_supported("cpu")}
    (out / "results.json").write_text(json.dumps({"args": vars(args), "machine": machine, "transfer_seconds":
                                                  transfers, "rows": rows}, indent=2) + "\n")
    lines = [f"CPU: {machine['cpu']}, {machine['cores']} cores, native bf16: {machine['native_bf16']}; the prior's "
             "pass in fp32", "",
             f"| language | lines | prior seconds | alignment seconds | prior / alignment | {args.split} bits per byte |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['lang']} | {r['sample']} | {r['prior_seconds']:.1f} | {r['align_seconds']:.1f} | "
              f"{r['ratio']:.2f} | {r['bits_per_byte']:.4f} |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
