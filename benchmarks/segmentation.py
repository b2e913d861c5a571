"""Word segmentation of text written without spaces: word units and bits per byte at initialisation.

For each language: SmolLM2-135M-Instruct (English) → a 16k byte-level BPE tokenizer trained on the
target side of the Bible (every book but the held-out ones), then, on the held-out books (default
Jude + Revelation, untrained models):
  * bits per byte of the source model reading the text with its own tokenizer, and of FVT;
  * for each ``--segmenters`` value (none = today's regex units, tokens = the fallback without
    icu4py, icu), the word units per training verse on both sides and the bits per byte of
    trans-tokenization aligned on those units.
The tokenizer, the source model's and FVT's figures do not depend on the segmenter, so they are
computed once. Writes results.json and results.md to --out.

    python benchmarks/segmentation.py --langs ja --segmenters none tokens icu \\
        --out benchmarks/results/segmentation_ja
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from init_methods import bible_split, measured  # noqa: E402
from transtok.assets import smollm2_checkpoint  # noqa: E402
from transtok.evaluate import eval_seq_len, evaluate_perplexity, fertility  # noqa: E402
from transtok.mapping import MappingConfig  # noqa: E402
from transtok.loading import load_model  # noqa: E402
from transtok.segment import SEGMENTERS  # noqa: E402
from transtok.steps import align_corpus, give_vocabulary, mapping_from_alignment  # noqa: E402
from transtok.tokenizer import train_tokenizer  # noqa: E402

logger = logging.getLogger("segmentation")


def run_language(lang: str, args, source_dir: Path, split, on_step=None) -> dict:
    """Every segmenter for one language; ``split`` has ``.train``/``.test`` ParallelCorpus.
    ``on_step(record)`` is called after each segmenter (partial results)."""
    test = split.test.target
    record: dict = {"lang": lang, "steps": {}, "split": {"train_pairs": len(split.train), "test_verses": len(test)},
                    "segmenters": {}}
    steps = record["steps"]
    with measured(steps, "load_source"):
        source_model, source_tokenizer = load_model(str(source_dir))
    with measured(steps, "train_tokenizer"):
        target_tokenizer = train_tokenizer(split.train.target, source_tokenizer, args.vocab_size)
    record["fertility"] = {"source": fertility(source_tokenizer, test), "target": fertility(target_tokenizer, test)}
    seq_len = eval_seq_len(source_model)

    def evaluate(mapping) -> dict:
        model, _ = load_model(str(source_dir))
        give_vocabulary(model, mapping, target_tokenizer, source_tokenizer=source_tokenizer)
        result = evaluate_perplexity(model, target_tokenizer, test, seq_len=seq_len)
        return {"init": result.bits_per_byte, "tokens": result.tokens}

    def baselines() -> None:
        with measured(steps, "evaluate_source"):
            result = evaluate_perplexity(source_model, source_tokenizer, test, seq_len=seq_len)
        record["source (own tokenizer)"] = {"init": result.bits_per_byte, "tokens": result.tokens}
        with measured(steps, "fvt"):
            mapping, report = mapping_from_alignment(source_tokenizer, target_tokenizer, None, MappingConfig(init="fvt"))
            record["fvt"] = {**evaluate(mapping), "provenance": report.provenance}
        logger.info("%s: source %.4f, fvt %.4f bits per byte", lang, record["source (own tokenizer)"]["init"],
                    record["fvt"]["init"])

    for k, segmenter in enumerate(args.segmenters):
        entry: dict = {}
        with measured(steps, f"align_{segmenter}"):
            counts = align_corpus(split.train, source_tokenizer, target_tokenizer, aligner=args.aligner,
                                  segmenter=segmenter)
        stats = counts.stats
        pairs = max(stats["pairs_aligned"], 1)
        entry["segmenter_used"] = stats["segmenter"]
        entry["units_per_verse"] = {"source": stats["source_units"] / pairs, "target": stats["target_units"] / pairs}
        entry["tokens_per_unit"] = {"source": stats["source_tokens"] / max(stats["source_units"], 1),
                                    "target": stats["target_tokens"] / max(stats["target_units"], 1)}
        entry["alignment"] = stats
        with measured(steps, f"trans-tokenization_{segmenter}"):
            mapping, report = mapping_from_alignment(source_tokenizer, target_tokenizer, counts,
                                                     MappingConfig(seed=args.seed))
            entry.update(evaluate(mapping))
        entry["provenance"] = report.provenance
        entry["aligned_coverage"] = report.aligned_coverage
        logger.info("%s %s: %.1f / %.1f units per verse, trans-tokenization %.4f bits per byte", lang, segmenter,
                    entry["units_per_verse"]["source"], entry["units_per_verse"]["target"], entry["init"])
        record["segmenters"][segmenter] = entry
        if k == 0:  # the first segmenter's figure lands before the baselines, which do not depend on it
            baselines()
        if on_step is not None:
            on_step(record)
    return record


def markdown(results: list[dict], args) -> str:
    lines = ["# Word segmentation of text written without spaces (SmolLM2-135M-Instruct, held-out Jude + Revelation)",
             "", f"Target tokenizer: {args.vocab_size:,}-token byte-level BPE trained on the target side of the other "
             "books; models untrained (bits per byte at initialisation, lower is better); aligner "
             f"{args.aligner}. Bits per byte: `transtok.evaluate.evaluate_perplexity` over the held-out verses joined "
             "by newlines, cut into non-overlapping windows of 512 tokens, each after a bos token (the protocol "
             "of this commit, before sliding windows).", ""]
    for record in results:
        f = record["fertility"]
        source, fvt = record["source (own tokenizer)"], record["fvt"]
        lines += [f"## en → {record['lang']} ({record['split']['train_pairs']:,} training verses, "
                  f"{record['split']['test_verses']} held-out)", "",
                  "| segmenter | word units per verse (en / target) | tokens per unit (target) | trans-tokenization "
                  "BPB | FVT BPB | source model BPB |", "|---|---|---|---|---|---|"]
        for name, entry in record["segmenters"].items():
            units, per = entry["units_per_verse"], entry["tokens_per_unit"]
            used = f" ({entry['segmenter_used']})" if entry["segmenter_used"] not in (name, "none") else ""
            lines.append(f"| {name}{used} | {units['source']:.1f} / {units['target']:.1f} | {per['target']:.2f} | "
                         f"{entry['init']:.3f} | {fvt['init']:.3f} | {source['init']:.3f} |")
        lines += ["", f"Held-out tokens: {source['tokens']:,} with the source tokenizer, {fvt['tokens']:,} with the new "
                  f"one; tokens per whitespace word {f['source']:.2f} → {f['target']:.2f}.", "",
                  "| step | seconds | peak RSS (MB) |", "|---|---|---|"]
        lines += [f"| {k} | {v['seconds']} | {v.get('peak_rss_mb', '-')} |" for k, v in record["steps"].items()]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", nargs="+", default=["ja"])
    parser.add_argument("--segmenters", nargs="+", default=["none", "tokens", "icu"],
                        choices=[s for s in SEGMENTERS if s != "auto"] + ["auto"])
    parser.add_argument("--vocab-size", type=int, default=16_000)
    parser.add_argument("--aligner", default="eflomal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/segmentation", help="scratch directory")
    parser.add_argument("--out", default="benchmarks/results/segmentation")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    source_dir = smollm2_checkpoint()
    results = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write(partial: list[dict]) -> str:
        (out / "results.json").write_text(json.dumps({"args": vars(args), "results": partial}, indent=2,
                                                     ensure_ascii=False, default=str) + "\n")
        table = markdown(partial, args)
        (out / "results.md").write_text(table + "\n")
        return table

    for lang in args.langs:
        started = time.perf_counter()
        record = run_language(lang, args, source_dir, bible_split(lang, Path(args.work) / lang),
                              on_step=lambda r: write([*results, r]))
        record["steps"]["total"] = {"seconds": round(time.perf_counter() - started, 2)}
        results.append(record)
        table = write(results)
    print(table)
    print(f"wrote results.json and results.md to {args.out}")


if __name__ == "__main__":
    main()
