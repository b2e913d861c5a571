"""Refit the unigram prior on a model after training: does it win back what training moved off?

The benchmark's trained models with the prior end about where they started (Spanish dev 1.641 at init →
1.648 after 102,400 tokens, passing 1.728 on the way: `benchmarks/results/prior_dev_after_es/prior1_curve/`).
This scores a saved model on the dev books (James .. 3 John) as it is, then with the prior computed again on
it (transtok.calibration, from the training books' target side), and the source model likewise, so that a
gain is not one the baseline could have had for free. Settings are chosen on the dev books; ``--split test``
(the held-out Jude + Revelation) is for final figures only, such as the source model with the prior at init:
the competitor given the same step as every mapped method.

    python benchmarks/refit_prior.py --lang es --model /tmp/main-runs/es/trained-trans-tokenization \
        --out benchmarks/results/refit_prior_es_dev
    python benchmarks/refit_prior.py --lang ar --split test --out benchmarks/results/source_prior_ar
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import init_methods as bench  # noqa: E402
from transtok.assets import smollm2_checkpoint  # noqa: E402
from transtok.calibration import apply_unigram_prior  # noqa: E402
from transtok.evaluate import evaluate_perplexity  # noqa: E402
from transtok.loading import load_model  # noqa: E402


def score(name: str, model_dir: str, train: list[str], dev: list[str], args) -> dict:
    """BPB on ``dev`` (the scored books) of the model in ``model_dir`` as saved, and after the prior is
    (re)fitted on it from the ``train`` texts."""
    model, tokenizer = load_model(model_dir, dtype="float32")
    model.eval()
    before = evaluate_perplexity(model, tokenizer, dev, seq_len=args.eval_seq_len, stride=args.stride)
    start = time.perf_counter()
    prior = apply_unigram_prior(model, tokenizer, train, strength=args.strength)
    seconds = time.perf_counter() - start
    after = evaluate_perplexity(model, tokenizer, dev, seq_len=args.eval_seq_len, stride=args.stride)
    return {"model": name, "path": model_dir, "split": args.split, "bpb": before.bits_per_byte,
            "bpb_refit": after.bits_per_byte, "refit_seconds": round(seconds, 1),
            "signature": after.signature, "prior": prior.report()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", default="es")
    parser.add_argument("--model", help="a trained model directory (with its tokenizer); none: the source model only")
    parser.add_argument("--label", default="trans-tokenization + prior 1, after 102,400 tokens at lr 0.001")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--no-source", action="store_true", help="skip the source model's row")
    parser.add_argument("--split", choices=["dev", "test"], default="dev",
                        help="books scored: dev (James .. 3 John, where settings are chosen) or test (held-out)")
    parser.add_argument("--eval-seq-len", type=int, default=512)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--work", default="/tmp/transtok-bench")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.model is None and args.no_source:
        parser.error("nothing to score: give --model, or drop --no-source")
    split = bench.bible_split(args.lang, Path(args.work) / args.lang)
    train, scored = split.train.target, getattr(split, args.split).target
    rows = [score(args.label, args.model, train, scored, args)] if args.model else []
    if not args.no_source:
        rows.append(score("source model, own tokenizer, untrained", str(smollm2_checkpoint()), train, scored, args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "refit.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    books = "dev books James .. 3 John" if args.split == "dev" else "held-out Jude + Revelation"
    lines = [f"# The unigram prior (re)fitted on a model ({args.lang}, {books}; bits per byte, windows of "
             f"{args.eval_seq_len} moved by {args.stride})", "",
             f"| model | {args.split} BPB | with the prior (re)fitted | refit seconds | mean abs logit change |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['bpb']:.3f} | {r['bpb_refit']:.3f} | {r['refit_seconds']} | "
              f"{r['prior']['bias_mean_abs']:.2f} |" for r in rows]
    (out / "refit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
