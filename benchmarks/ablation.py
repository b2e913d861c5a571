"""Choose the method's settings on the dev books: bits per byte at init for each setting around the defaults.

Same setup as benchmarks/init_methods.py (SmolLM2-135M-Instruct, the Q4_1 GGUF dequantised; Bible, train
= all books but dev and test), scored on the dev books (James .. 3 John), never on the held-out Jude +
Revelation. One setting is changed at a time from the defaults of MappingConfig:

  * mapping-only settings (top-k, sharpen, confidence, copy prior) reuse the alignment counts;
  * the aligner and its symmetrization, and the vocabulary size, re-align (tokenizers and counts are
    cached under --work, shared with init_methods.py);
  * the unigram prior of the LM head (transtok.calibration, from the training books' target side);
  * FOCUS's fastText min_count (its rows seen less often fall back to the mean row) and FVT as references;
  * --strides also scores the source model and the default mapping with other evaluation strides;
  * --tokenizer-segmenter trains the new tokenizers with merges bounded by a segmenter's words in text written
    without spaces (settings tagged [tokenizer words NAME]); --reuse keeps rows already in --out.

Writes ablation.json and ablation.md to --out.

    python benchmarks/ablation.py --langs es ru --out benchmarks/results/ablation
    python benchmarks/ablation.py --langs ja --groups vocab fvt --vocab-sizes 8000 32000 --reuse --out ...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
sys.path.insert(0, str(Path(__file__).parent))

import init_methods as bench  # noqa: E402
from transtok.align import EflomalAligner, FastAlignAligner  # noqa: E402
from transtok.calibration import DEFAULT_PRIOR_TEXTS  # noqa: E402
from transtok.assets import smollm2_checkpoint  # noqa: E402
from transtok.evaluate import eval_seq_len, evaluate_perplexity  # noqa: E402
from transtok.focus import FocusConfig  # noqa: E402
from transtok.mapping import MappingConfig  # noqa: E402
from transtok.loading import load_model  # noqa: E402
from transtok.steps import give_vocabulary, mapping_from_alignment  # noqa: E402

logger = logging.getLogger("ablation")

DEFAULTS = MappingConfig()
# One change at a time from the defaults (name, MappingConfig overrides).
MAPPING_SETTINGS = [
    ("top-k 1", {"top_k": 1}), ("top-k 2", {"top_k": 2}), ("top-k 8", {"top_k": 8}), ("top-k all", {"top_k": None}),
    ("sharpen 1", {"sharpen": 1.0}), ("sharpen 4", {"sharpen": 4.0}),
    ("confidence 1", {"confidence": 1.0}), ("confidence 20", {"confidence": 20.0}),
    ("confidence 100", {"confidence": 100.0}), ("preserve norm", {"preserve_norm": True}),
    ("copy prior 0", {"copy_prior": 0.0}), ("copy prior 10", {"copy_prior": 10.0}),
    ("copy prior 100", {"copy_prior": 100.0}),
    ("source discount 0.25", {"source_discount": 0.25}), ("source discount 0.5", {"source_discount": 0.5}),
    ("source discount 1", {"source_discount": 1.0}),
    ("spelling share 0.1", {"spelling_weight": 0.1}), ("spelling share 0.25", {"spelling_weight": 0.25}),
]


def aligners(names):
    """(name, aligner, draw) for each name; 'eflomal, 2nd draw' is the default aligner sampled again (eflomal
    has no seed), which says how much of a difference between aligners is one draw's luck."""
    table = {"fast_align": (FastAlignAligner(), 0),
             "eflomal-intersection": (EflomalAligner(symmetrization="intersection"), 0),
             "fast_align-intersection": (FastAlignAligner(symmetrization="intersection"), 0),
             "eflomal, 2nd draw": (EflomalAligner(), 1), "eflomal-intersection, 2nd draw":
             (EflomalAligner(symmetrization="intersection"), 1)}
    return [(name, *table[name]) for name in names]


def run_language(lang: str, args, source_dir: Path, split, previous: list[dict] = ()) -> list[dict]:
    """Rows {setting, group, dev_bpb, fallback, seconds} for ``lang``; ``split`` has ``.train`` and ``.dev``.
    With --reuse, rows of ``previous`` with the same language, setting and stride are kept, not re-scored."""
    dev = split.dev.target
    rows: list[dict] = []
    source_model, source_tokenizer = load_model(str(source_dir))
    window = eval_seq_len(source_model, args.eval_seq_len)
    done = {(r["lang"], r["setting"], r["stride"]): r for r in previous} if args.reuse else {}

    words = getattr(args, "tokenizer_segmenter", "none")
    tag = "" if words == "none" else f" [tokenizer words {words}]"

    def score(model, tokenizer, setting: str, group: str, stride: int | None = None, **extra) -> float:
        if setting != "source model, own tokenizer":
            setting += tag
        old = done.get((lang, setting, min(stride or args.stride, window)))
        if old is not None:
            rows.append(old)
            logger.info("%s %-28s stride %d: dev %.4f (reused)", lang, setting, old["stride"], old["dev_bpb"])
            return old["dev_bpb"]
        started = time.perf_counter()
        result = evaluate_perplexity(model, tokenizer, dev, seq_len=window, stride=min(stride or args.stride, window))
        rows.append({"lang": lang, "group": group, "setting": setting, "stride": result.stride,
                     "dev_bpb": result.bits_per_byte, "tokens": result.tokens,
                     "seconds": round(time.perf_counter() - started, 1), **extra})
        logger.info("%s %-28s stride %d: dev %.4f", lang, setting, result.stride, result.bits_per_byte)
        return result.bits_per_byte

    for stride in [args.stride, *args.strides]:
        score(source_model, source_tokenizer, "source model, own tokenizer", "reference", stride)

    def mapped(target_tokenizer, counts, config: MappingConfig, setting: str, group: str,
               focus: FocusConfig | None = None, strides=(), prior: float = 0.0,
               prior_sample: int = DEFAULT_PRIOR_TEXTS) -> None:
        mapping, report = mapping_from_alignment(source_tokenizer, target_tokenizer, counts, config,
                                                 target_texts=split.train.target, focus=focus)
        model, _ = load_model(str(source_dir))
        made = give_vocabulary(model, mapping, target_tokenizer, source_tokenizer=source_tokenizer, prior=prior,
                               prior_texts=split.train.target, prior_sample=prior_sample)  # training books only
        extra = {"prior_seconds": round(made.seconds["prior"], 1), "prior_sample": prior_sample} if prior else {}
        for stride in [args.stride, *strides]:
            score(model, target_tokenizer, setting, group, stride, fallback=report.provenance.get("fallback", 0),
                  provenance=report.provenance, **extra)
        del model

    target_tokenizer, counts = bench.prepared(lang, split, source_tokenizer, args)
    mapped(target_tokenizer, counts, DEFAULTS, "defaults", "defaults", strides=args.strides)
    if "mapping" in args.groups:
        for setting, overrides in MAPPING_SETTINGS:
            if args.settings and not any(setting.startswith(prefix) for prefix in args.settings):
                continue
            mapped(target_tokenizer, counts, dataclasses.replace(DEFAULTS, **overrides), setting, "mapping")
    if "focus" in args.groups:
        for min_count in args.focus_min_counts:
            mapped(target_tokenizer, None, MappingConfig(init="focus"), f"FOCUS min_count {min_count}", "focus",
                   focus=FocusConfig(min_count=min_count))
        mapped(target_tokenizer, None, MappingConfig(init="fvt"), "FVT", "reference")
    elif "fvt" in args.groups:
        mapped(target_tokenizer, None, MappingConfig(init="fvt"), "FVT", "reference")
    if "prior" in args.groups:
        for strength in args.priors:
            mapped(target_tokenizer, counts, DEFAULTS, f"unigram prior {strength:g}", "prior", prior=strength)
            for sample in (n for n in args.prior_samples if n != DEFAULT_PRIOR_TEXTS):
                mapped(target_tokenizer, counts, DEFAULTS, f"unigram prior {strength:g}, q from {sample:,} lines",
                       "prior", prior=strength, prior_sample=sample)
        if "fvt" in args.groups:
            for strength in args.priors:
                mapped(target_tokenizer, None, MappingConfig(init="fvt"), f"FVT, unigram prior {strength:g}",
                       "reference", prior=strength)
    if "aligner" in args.groups:
        for name, aligner, draw in aligners(args.aligners):
            tokenizer, other_counts = bench.prepared(lang, split, source_tokenizer, args, aligner=aligner, draw=draw)
            mapped(tokenizer, other_counts, DEFAULTS, f"aligner {name}", "aligner")
    if "vocab" in args.groups:
        for size in args.vocab_sizes:
            tokenizer, other_counts = bench.prepared(lang, split, source_tokenizer, args, vocab_size=size)
            mapped(tokenizer, other_counts, DEFAULTS, f"vocabulary {size:,}", "vocab")
            if "fvt" in args.groups:
                mapped(tokenizer, None, MappingConfig(init="fvt"), f"vocabulary {size:,}, FVT", "reference")
    return rows


def markdown(rows: list[dict], args) -> str:
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    strides = sorted({r["stride"] for r in rows}, reverse=True)
    lines = ["# Dev-split ablation (bits per byte at init on James .. 3 John; lower is better)", "",
             f"SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised); windows of {args.eval_seq_len} tokens moved by "
             f"{args.stride} unless a stride column says otherwise. Defaults: top-k {DEFAULTS.top_k}, sharpen "
             f"{DEFAULTS.sharpen}, confidence {DEFAULTS.confidence}, copy prior {DEFAULTS.copy_prior}, eflomal "
             f"union, vocabulary {args.vocab_size:,}. 'fallback' = target rows on the mean source row.", ""]
    main = {(r["lang"], r["setting"]): r for r in rows if r["stride"] == args.stride}
    settings = list(dict.fromkeys(r["setting"] for r in rows if r["stride"] == args.stride))
    # The references first, whatever order runs added rows in (--reuse keeps older rows ahead of new ones).
    settings.sort(key=lambda name: {"source model, own tokenizer": 0, "defaults": 1}.get(name, 2))
    header = "| setting | " + " | ".join(f"{lang} dev BPB | {lang} Δ vs defaults | {lang} fallback"
                                          for lang in langs) + " |"
    lines += [header, "|---|" + "---|---|---|" * len(langs)]
    for setting in settings:
        cells = []
        for lang in langs:
            tag = setting[setting.index(" [tokenizer"):] if " [tokenizer" in setting else ""
            row, base = main.get((lang, setting)), main.get((lang, "defaults" + tag))
            if row is None:
                cells += ["-", "-", "-"]
                continue
            delta = "" if base is None or base is row else f"{row['dev_bpb'] - base['dev_bpb']:+.3f}"
            cells += [f"{row['dev_bpb']:.3f}", delta, str(row.get("fallback", "-"))]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    if len(strides) > 1:
        lines += ["", "Evaluation stride (dev, windows of 512; stride 512 = block protocol):", "",
                  "| lang | model | " + " | ".join(f"stride {s}" for s in strides) + " |",
                  "|---|---|" + "---|" * len(strides)]
        for lang in langs:
            for setting in ("source model, own tokenizer", "defaults"):
                by = {r["stride"]: r["dev_bpb"] for r in rows if r["lang"] == lang and r["setting"] == setting}
                if len(by) > 1:
                    lines.append(f"| {lang} | {setting} | " + " | ".join(
                        f"{by[s]:.4f}" if s in by else "-" for s in strides) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", nargs="+", default=["es", "ru"])
    parser.add_argument("--groups", nargs="*", default=["mapping", "focus", "aligner", "vocab"],
                        choices=["mapping", "focus", "aligner", "vocab", "fvt", "prior"],
                        help="fvt: FVT as a reference (also part of focus; with prior, FVT with each prior too); "
                             "prior: the unigram prior of the head (transtok.calibration) at --priors")
    parser.add_argument("--priors", type=float, nargs="*", default=[0.25, 0.5, 1.0],
                        help="unigram prior strengths of the prior group")
    parser.add_argument("--prior-samples", type=int, nargs="*", default=[DEFAULT_PRIOR_TEXTS],
                        help="lines the prior's mean prediction q is taken over (its cost), each strength with each")
    parser.add_argument("--settings", nargs="*", default=[],
                        help="only the mapping settings whose names start with these (default: all)")
    parser.add_argument("--vocab-size", type=int, default=16_000)
    parser.add_argument("--vocab-sizes", type=int, nargs="*", default=[8_000, 32_000])
    parser.add_argument("--aligner", default="eflomal")
    parser.add_argument("--segmenter", default="auto", help="word segmenter of the alignment, as init_methods.py")
    parser.add_argument("--tokenizer-segmenter", default="none", choices=["auto", "icu", "tokens", "none"],
                        help="new tokenizers' merges bounded by this segmenter's words, as init_methods.py (settings "
                             "are then tagged [tokenizer words NAME])")
    parser.add_argument("--aligners", nargs="*", default=["fast_align", "eflomal-intersection"],
                        choices=["fast_align", "eflomal-intersection", "fast_align-intersection", "eflomal, 2nd draw",
                                 "eflomal-intersection, 2nd draw"])
    parser.add_argument("--focus-min-counts", type=int, nargs="*", default=[10, 3, 1])
    parser.add_argument("--eval-seq-len", type=int, default=512)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--strides", type=int, nargs="*", default=[],
                        help="also score the source model and the defaults with these strides")
    parser.add_argument("--work", default="runs/init_methods", help="scratch directory (shared with init_methods)")
    parser.add_argument("--out", default="benchmarks/results/ablation")
    parser.add_argument("--rewrite", action="store_true", help="only rewrite ablation.md from ablation.json")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the rows of --out already scored (same language, setting, stride) instead of "
                             "scoring them again (the source model's score, settings added later)")
    return parser.parse_args(argv)


def write_outputs(rows: list[dict], args) -> str:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2, default=str) + "\n")
    table = markdown(rows, args)
    (out / "ablation.md").write_text(table + "\n")
    return table


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    if args.rewrite:
        saved = json.loads((out / "ablation.json").read_text())
        print(write_outputs(saved["rows"], argparse.Namespace(**{**saved["args"], "out": args.out})))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    source_dir = smollm2_checkpoint()
    # Languages run one at a time (and may run in separate invocations): rows of other languages in
    # --out are kept.
    previous = json.loads((out / "ablation.json").read_text())["rows"] if (out / "ablation.json").is_file() else []
    rows = [r for r in previous if r["lang"] not in args.langs]
    for lang in args.langs:
        split = bench.bible_split(lang, Path(args.work) / lang)
        mine = [r for r in previous if r["lang"] == lang]
        new = run_language(lang, args, source_dir, split, mine)
        if args.reuse:  # settings not run this time stay
            scored = {(r["setting"], r["stride"]) for r in new}
            new = [r for r in mine if (r["setting"], r["stride"]) not in scored] + new
        rows += new
        print(write_outputs(rows, args))
    print(f"wrote ablation.json and ablation.md to {args.out}")


if __name__ == "__main__":
    main()
