"""Vocabulary extension vs replacement vs the source model, on real data.

SmolLM2-135M-Instruct (English) and the verse-aligned Bible (train: books outside dev and test; dev:
James .. 3 John; held-out: Jude + Revelation). Per language, in phases that each fit one run:

  select   extended tokenizers of N new tokens for each --grid N (trans-tokenization init, no
           training): fertility and bits per byte on the DEV books; the N with the lowest dev bits
           per byte is chosen (held-out books untouched);
  source   the source model with its own tokenizer;
  replace  a new 16k tokenizer (transtok's default recipe), trans-tokenization init, then embeddings
           + LM head trained (stage embeddings);
  spelling the spelling share of the new rows with a TIED head (--tied-head --spelling-weight) for
           each --spelling-grid value, at init on the DEV books, target and English;
  head     the new LM-head rows on their own (untied head; input rows: trans-tokenization, spelling
           share 0) at init on the DEV books: the tied head with share 0.25 (--tied-head, the old
           default) against untied head rows with each --head-grid spelling share and each
           --offset-grid language offset (transtok.calibration; the offset's means come from
           --offset-pairs pairs of the TRAINING books); the extension defaults are chosen here;
  extend   the source tokenizer + the chosen N tokens, trans-tokenization init of the new rows with
           the extension defaults (untied head rows, language offset), then only the new rows
           trained (stage new-rows: every source row stays bit-identical).

Every model is scored on the held-out books in the target language and in English (the English
side of the same books), at init and after the same budget of training tokens (target-language
training text, same seed, lr and batches); evaluation only at init and at the end.
Results accumulate in --out/results.json (one entry per language and phase); results.md and
extension.png are rebuilt from it after every phase.

    python benchmarks/extension.py --lang es --phase select
    python benchmarks/extension.py --lang es --phase head
    python benchmarks/extension.py --lang es --phase source replace extend
    python benchmarks/extension.py --rewrite
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

import torch  # noqa: E402

from transtok.assets import parallel_bible, smollm2_checkpoint  # noqa: E402
from transtok.calibration import (DEFAULT_OFFSET, DEFAULT_PAIRS, language_offset, offset_rows,  # noqa: E402
                                  resolve_offset)
from transtok.evaluate import eval_seq_len, evaluate_perplexity, fertility  # noqa: E402
from transtok.extension import extend_tokenizer  # noqa: E402
from transtok.finetune import FinetuneConfig, finetune  # noqa: E402
from transtok.mapping import EXTEND_SPELLING_WEIGHT, MappingConfig, resolve_config  # noqa: E402
from transtok.loading import load_model, load_tokenizer  # noqa: E402
from transtok.pipeline import save_checkpoint  # noqa: E402
from transtok.steps import align_corpus, give_vocabulary, mapping_from_alignment, offset_sample  # noqa: E402
from transtok.tokenizer import train_tokenizer  # noqa: E402

logger = logging.getLogger("extension")
PHASES = ("select", "spelling", "head", "source", "replace", "extend", "inits")
# initialisations of the new rows compared at init (English and target held-out) by --phase inits
INIT_VARIANTS = {"fvt": {"init": "fvt"}, "fvt-first-piece": {"init": "fvt", "first_piece_weight": 1.0}}


def _write(path: Path, texts) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def _bpb(model, tokenizer, texts) -> dict:
    result = evaluate_perplexity(model, tokenizer, texts, seq_len=eval_seq_len(model))
    return {"bpb": round(result.bits_per_byte, 4), "tokens": result.tokens}


def _scores(model, tokenizer, split) -> dict:
    return {"target": _bpb(model, tokenizer, split.test.target), "english": _bpb(model, tokenizer, split.test.source)}


def _train(model_dir: Path, stage: str, work: Path, args) -> float:
    started = time.perf_counter()
    finetune(FinetuneConfig(
        model=str(model_dir), train=[str(work / "train.txt")], output=str(work / f"trained-{model_dir.name}"),
        stage=stage, max_tokens=args.budget, seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr,
        warmup=args.warmup, schedule="linear", seed=args.seed, join="newline", save_every=0, overwrite=True))
    return round(time.perf_counter() - started, 1)


def _transferred(source_dir: Path, source_tokenizer, target_tokenizer, split, args):
    """The source model with ``target_tokenizer``, initialised by the steps of ``transfer`` with its default
    mapping and offset (an extended vocabulary: untied head rows and the default language offset, its means
    from --offset-pairs pairs of the TRAINING books, never dev or test); no unigram prior."""
    counts = align_corpus(split.train, source_tokenizer, target_tokenizer, aligner=args.aligner)
    mapping, report = mapping_from_alignment(source_tokenizer, target_tokenizer, counts)
    model, _ = load_model(str(source_dir))
    made = give_vocabulary(model, mapping, target_tokenizer, source_tokenizer=source_tokenizer,
                           offset=resolve_offset(None, head_rows=mapping.head is not None), offset_corpus=split.train,
                           offset_pairs=args.offset_pairs)
    if made.offset is not None:
        report.config["offset"] = made.offset.report()
    return model, report


def phase_select(lang: str, split, source_dir: Path, args) -> dict:
    model, source_tokenizer = load_model(str(source_dir))
    grid = {"source": {"fertility": round(fertility(source_tokenizer, split.dev.target), 3),
                       "dev": _bpb(model, source_tokenizer, split.dev.target)}}
    del model
    for n in args.grid:
        started = time.perf_counter()
        extended, extension = extend_tokenizer(split.train.target, source_tokenizer, n)
        tokenizer_seconds = round(time.perf_counter() - started, 1)
        model, _ = _transferred(source_dir, source_tokenizer, extended, split, args)
        grid[str(n)] = {"fertility": round(fertility(extended, split.dev.target), 3),
                        "dev": _bpb(model, extended, split.dev.target), "new_tokens": extension.new_tokens,
                        "reachable": extension.reachable, "tokenizer_seconds": tokenizer_seconds}
        logger.info("%s N=%d: %s", lang, n, grid[str(n)])
        del model
    chosen = min(args.grid, key=lambda n: grid[str(n)]["dev"]["bpb"])
    return {"grid": grid, "chosen": chosen, "recipe": _recipe()}


def _recipe() -> str:
    """The extension defaults, in words, for the tables."""
    resolved = resolve_config(MappingConfig(), extended=True)
    return (f"input rows spelling share {resolved.spelling_weight}, untied head rows spelling share "
            f"{resolved.head_spelling_weight}, language offset {DEFAULT_OFFSET}")


def _dev_setup(split, source_dir: Path, args, n: int):
    """What the dev-book phases share: the source model's dev scores (target and English), the tokenizer
    extended by ``n`` and its alignment counts. Returns (source tokenizer, scores, extended, counts)."""
    model, source_tokenizer = load_model(str(source_dir))
    out = {"source": {"target": _bpb(model, source_tokenizer, split.dev.target),
                      "english": _bpb(model, source_tokenizer, split.dev.source)}}
    del model
    extended, _ = extend_tokenizer(split.train.target, source_tokenizer, n)
    counts = align_corpus(split.train, source_tokenizer, extended, aligner=args.aligner)
    return source_tokenizer, out, extended, counts


def phase_spelling(lang: str, split, source_dir: Path, args, n: int) -> dict:
    """The spelling share of the new rows with a tied head (MappingConfig.spelling_weight,
    tied_head), on the DEV books at init: target and English bits per byte for each --spelling-grid
    weight, the source model as reference."""
    source_tokenizer, out, extended, counts = _dev_setup(split, source_dir, args, n)
    for weight in args.spelling_grid:
        mapping, _ = mapping_from_alignment(source_tokenizer, extended, counts,
                                            MappingConfig(spelling_weight=weight, tied_head=True))
        model, _ = load_model(str(source_dir))
        give_vocabulary(model, mapping, extended, source_tokenizer=source_tokenizer)
        out[str(weight)] = {"target": _bpb(model, extended, split.dev.target),
                            "english": _bpb(model, extended, split.dev.source)}
        logger.info("%s spelling weight %s: %s", lang, weight, out[str(weight)])
        del model
    return {"new_tokens": n, "grid": out}


def phase_head(lang: str, split, source_dir: Path, args, n: int) -> dict:
    """Separate LM-head rows and the language offset, on the DEV books at init: the tied head with
    spelling share EXTEND_SPELLING_WEIGHT, then untied head rows for each --head-grid share and each
    --offset-grid offset (input rows: trans-tokenization, share 0).

    The hidden states do not depend on the head rows (only on the input rows and the body, the same
    for every untied variant), so the offset is computed once, for δ = 1, and scaled: v(δ) = δ·v(1)
    (v is linear in δ; the library computes v(δ) directly, equal up to float64 rounding)."""
    source_tokenizer, out, extended, counts = _dev_setup(split, source_dir, args, n)
    mapping, _ = mapping_from_alignment(source_tokenizer, extended, counts, MappingConfig(tied_head=True))
    model, _ = load_model(str(source_dir))
    give_vocabulary(model, mapping, extended, source_tokenizer=source_tokenizer)
    out["tied"] = {"spelling_weight": mapping.config["spelling_weight"],
                   "target": _bpb(model, extended, split.dev.target), "english": _bpb(model, extended, split.dev.source)}
    logger.info("%s tied head, share %s: %s", lang, mapping.config["spelling_weight"], out["tied"])
    del model
    sample = offset_sample(split.train, args.offset_pairs)  # the TRAINING books, never dev or test
    unit = None
    new = slice(len(source_tokenizer), len(extended))
    for share in args.head_grid:
        mapping, _ = mapping_from_alignment(source_tokenizer, extended, counts,
                                            MappingConfig(head_spelling_weight=share))
        model, _ = load_model(str(source_dir))
        give_vocabulary(model, mapping, extended, source_tokenizer=source_tokenizer)
        if unit is None:
            unit = language_offset(model, extended, *sample, 1.0)
            out["offset_unit"] = {**unit.report(), "pairs": len(sample[0])}
        head = model.get_output_embeddings().weight
        base = head[new].detach().clone()
        for delta in args.offset_grid:
            with torch.no_grad():
                head[new] = offset_rows(base, delta * unit.vector)
            key = f"head {share} offset {delta}"
            out[key] = {"head_spelling_weight": share, "offset": delta,
                        "target": _bpb(model, extended, split.dev.target),
                        "english": _bpb(model, extended, split.dev.source)}
            logger.info("%s %s: %s", lang, key, out[key])
        del model
    return {"new_tokens": n, "grid": out}


def phase_source(lang: str, split, source_dir: Path, work: Path, args) -> dict:
    model, tokenizer = load_model(str(source_dir))
    entry = {"fertility": round(fertility(tokenizer, split.test.target), 3), "init": _scores(model, tokenizer, split)}
    del model
    entry["train_seconds"] = _train(source_dir, "embeddings", work, args)
    model, _ = load_model(str(work / f"trained-{source_dir.name}"))
    entry["after"] = _scores(model, tokenizer, split)
    entry["stage"] = "embeddings"
    return entry


def phase_replace(lang: str, split, source_dir: Path, work: Path, args) -> dict:
    source_tokenizer = load_tokenizer(str(source_dir))
    target = train_tokenizer(split.train.target, source_tokenizer, args.vocab_size)
    model, report = _transferred(source_dir, source_tokenizer, target, split, args)
    model_dir = work / "replace"
    save_checkpoint(model_dir, model, target)
    entry = {"vocab_size": len(target), "fertility": round(fertility(target, split.test.target), 3),
             "provenance": report.provenance, "init": _scores(model, target, split)}
    del model
    entry["train_seconds"] = _train(model_dir, "embeddings", work, args)
    model, _ = load_model(str(work / "trained-replace"))
    entry["after"] = _scores(model, target, split)
    entry["stage"] = "embeddings"
    return entry


def phase_extend(lang: str, split, source_dir: Path, work: Path, args, n: int) -> dict:
    source_tokenizer = load_tokenizer(str(source_dir))
    extended, extension = extend_tokenizer(split.train.target, source_tokenizer, n)
    model, report = _transferred(source_dir, source_tokenizer, extended, split, args)
    model_dir = work / "extend"
    save_checkpoint(model_dir, model, extended)
    entry = {"new_tokens": extension.new_tokens, "vocab_size": len(extended),
             "fertility": round(fertility(extended, split.test.target), 3), "provenance": report.provenance,
             "reachable": extension.reachable, "reachable_in_text": extension.reachable_in_text,
             "reachable_share": extension.reachable_share, "sample": extension.sample,
             "recipe": _recipe(), "offset": report.config.get("offset"),
             "parameters": sum(p.numel() for p in model.parameters()),
             "init": _scores(model, extended, split)}
    del model
    started = time.perf_counter()
    finetune(FinetuneConfig(
        model=str(model_dir), train=[str(work / "train.txt")], output=str(work / "trained-extend"),
        stage="new-rows", new_rows_from=len(source_tokenizer), max_tokens=args.budget, seq_len=args.seq_len,
        batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, schedule="linear", seed=args.seed,
        join="newline", save_every=0, overwrite=True))
    entry["train_seconds"] = round(time.perf_counter() - started, 1)
    model, _ = load_model(str(work / "trained-extend"))
    entry["after"] = _scores(model, extended, split)
    entry["stage"] = "new-rows"
    return entry


def phase_inits(lang: str, split, source_dir: Path, args, n: int) -> dict:
    """Other initialisations of the same extended tokenizer's new rows, scored at init only."""
    source_tokenizer = load_tokenizer(str(source_dir))
    extended, _ = extend_tokenizer(split.train.target, source_tokenizer, n)
    out = {}
    for name, options in INIT_VARIANTS.items():
        mapping, _ = mapping_from_alignment(source_tokenizer, extended, None, MappingConfig(**options))
        model, _ = load_model(str(source_dir))
        give_vocabulary(model, mapping, extended, source_tokenizer=source_tokenizer)
        out[name] = {"new_tokens": n, "init": _scores(model, extended, split)}
        logger.info("%s %s: %s", lang, name, out[name])
        del model
    return out


def markdown(results: dict, args) -> str:
    lines = ["# Vocabulary extension vs replacement (SmolLM2-135M-Instruct, held-out Jude + Revelation)", "",
             f"Budget: {args.budget:,} target-language training tokens per model (seq {args.seq_len}, batch "
             f"{args.batch_size}, lr {args.lr}, linear schedule, seed {args.seed}); replace and the source model "
             "train embeddings + LM head, extend trains only the new rows (stage new-rows). Bits per byte (BPB), "
             "lower is better, block protocol (non-overlapping windows of 512 tokens); English = the English side "
             "of the same held-out books. The extended model's new rows: trans-tokenization with the extension "
             "defaults of the run (named under each table; chosen on the dev books below). Timings from a shared "
             "2-core machine.", ""]
    for lang, record in results.items():
        select = record.get("select")
        if select:
            lines += [f"## {lang}: choice of N on the dev books (James .. 3 John), at init", "",
                      "| tokenizer | tokens per word (dev) | dev BPB at init | new tokens reachable |",
                      "|---|---|---|---|"]
            for name, row in select["grid"].items():
                label = "source" if name == "source" else f"source + {int(name):,}"
                reach = "-" if name == "source" else f"{row['reachable']:,} / {row['new_tokens']:,}"
                lines.append(f"| {label} | {row['fertility']:.2f} | {row['dev']['bpb']:.3f} | {reach} |")
            if select.get("recipe"):
                lines += ["", f"Chosen: N = {select['chosen']:,} (new rows: {select['recipe']}).", ""]
            else:  # runs from before the new rows' defaults recorded none
                lines += ["", f"Chosen: N = {select['chosen']:,} (new rows: tied head, spelling share "
                              f"{select.get('spelling_weight', 0.0)}; the grid was run before the new rows' "
                              "defaults were chosen).", ""]
        rows = [(name, record[key]) for name, key in (("source model, own tokenizer", "source"),
                                                      ("replace (new 16k vocabulary)", "replace"),
                                                      ("extend (source + N)", "extend")) if key in record]
        if rows:
            lines += [f"## {lang}: held-out books", "",
                      "| model | vocabulary | tokens per word | target BPB init | target BPB after | "
                      "English BPB init | English BPB after | trained | train s |", "|---|---|---|---|---|---|---|---|---|"]
            for name, e in rows:
                vocab = e.get("vocab_size", 49152)
                if "new_tokens" in e:
                    name = f"extend (source + {e['new_tokens']:,})"
                lines.append(f"| {name} | {vocab:,} | {e['fertility']:.2f} | {e['init']['target']['bpb']:.3f} | "
                             f"{e['after']['target']['bpb']:.3f} | {e['init']['english']['bpb']:.3f} | "
                             f"{e['after']['english']['bpb']:.3f} | {e['stage']} | {e['train_seconds']:.0f} |")
            if "extend" in record:
                e = record["extend"]
                if "source" in record:
                    change = 100 * (e["init"]["english"]["bpb"] / record["source"]["init"]["english"]["bpb"] - 1)
                    lines += ["", f"English at init, extended vs source model: {change:+.2f} %."]
                lines += ["", "Extended model's new rows: " + e.get("recipe", f"tied head, spelling share "
                                                                          f"{EXTEND_SPELLING_WEIGHT}") + "."]
                lines += ["", f"New tokens reachable: {e['reachable']:,} / {e['new_tokens']:,} "
                              f"({e['reachable_in_text']:,} in the final encoding of the training text, the rest "
                              "intermediate merges produced on their own string).", "",
                          "First new tokens (most frequent merges first): " +
                          " · ".join(f"`{t}`" for t in e["sample"][:30])]
        spelling = record.get("spelling")
        if spelling:
            reference = spelling["grid"]["source"]
            lines += [f"## {lang}: spelling share of the new rows, on the dev books at init (source + "
                      f"{spelling['new_tokens']:,})", "",
                      "Each new row = s × its subword spelling (FVT) + (1 − s) × the trans-tokenization row; "
                      "s = `--spelling-weight`. English = the English side of the dev books.", "",
                      "| s | target dev BPB | English dev BPB | English vs source model |", "|---|---|---|---|",
                      f"| source model | {reference['target']['bpb']:.3f} | {reference['english']['bpb']:.3f} | - |"]
            for name, row in spelling["grid"].items():
                if name != "source":
                    change = 100 * (row["english"]["bpb"] / reference["english"]["bpb"] - 1)
                    lines.append(f"| {name} | {row['target']['bpb']:.3f} | {row['english']['bpb']:.3f} | "
                                 f"{change:+.2f} % |")
            lines.append("")
        head = record.get("head")
        if head:
            reference = head["grid"]["source"]
            tied = head["grid"]["tied"]
            lines += [f"## {lang}: separate LM-head rows and the language offset, on the dev books at init (source + "
                      f"{head['new_tokens']:,})", "",
                      "Untied: the input rows are trans-tokenization rows (spelling share 0); the head rows take "
                      "the spelling share s (`--head-spelling-weight`); the offset δ (`--new-token-offset`) adds one "
                      "vector to every new head row so that new tokens' logits drop by δ nats on average in English "
                      "contexts and stay put in target-language ones (means over "
                      f"{head['grid']['offset_unit']['pairs']} pairs of the training books). Tied: one row per new token for both (`--tied-head`).", "",
                      "| head | s | δ | target dev BPB | English dev BPB | English vs source model |",
                      "|---|---|---|---|---|---|",
                      f"| source model | - | - | {reference['target']['bpb']:.3f} | "
                      f"{reference['english']['bpb']:.3f} | - |"]

            def change(row):
                return f"{100 * (row['english']['bpb'] / reference['english']['bpb'] - 1):+.2f} %"

            lines.append(f"| tied | {tied['spelling_weight']} | - | {tied['target']['bpb']:.3f} | "
                         f"{tied['english']['bpb']:.3f} | {change(tied)} |")
            for name, row in head["grid"].items():
                if name.startswith("head "):
                    lines.append(f"| untied | {row['head_spelling_weight']} | {row['offset']} | "
                                 f"{row['target']['bpb']:.4f} | {row['english']['bpb']:.4f} | {change(row)} |")
            lines.append("")
        if record.get("inits"):
            lines += [f"## {lang}: other initialisations of the extended tokenizer's new rows, at init", "",
                      "| new rows from | target BPB init | English BPB init |", "|---|---|---|"]
            if "extend" in record:
                e = record["extend"]
                lines.append(f"| trans-tokenization (default) | {e['init']['target']['bpb']:.3f} | "
                             f"{e['init']['english']['bpb']:.3f} |")
            for name, row in record["inits"].items():
                lines.append(f"| {name} | {row['init']['target']['bpb']:.3f} | {row['init']['english']['bpb']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = [lang for lang, record in results.items() if any(k in record for k in ("source", "replace", "extend"))]
    if not langs:
        return
    fig, axes = plt.subplots(1, len(langs), figsize=(6.5 * len(langs), 4.2), squeeze=False)
    for ax, lang in zip(axes[0], langs):
        record = results[lang]
        names = [k for k in ("source", "replace", "extend") if k in record]
        bars = [("target init", "init", "target"), ("target after", "after", "target"),
                ("English init", "init", "english"), ("English after", "after", "english")]
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            values = [record[name][when][side]["bpb"] for _, when, side in bars]
            ax.bar([i + j * width for i in range(len(bars))], values, width, label=name)
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(bars))], [b[0] for b in bars])
        ax.set_ylabel("held-out bits per byte")
        ax.set_title(f"en → {lang}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", default="es")
    parser.add_argument("--phase", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--grid", nargs="+", type=int, default=[2000, 8000, 16000], help="N new tokens to try on dev")
    parser.add_argument("--new-tokens", type=int, help="N for the extend phase (default: the one chosen on dev)")
    parser.add_argument("--spelling-grid", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="spelling weights of the new rows to score on dev (phase spelling)")
    parser.add_argument("--head-grid", nargs="+", type=float, default=[0.25, 0.5, 0.75],
                        help="spelling shares of the untied head rows to score on dev (phase head)")
    parser.add_argument("--offset-grid", nargs="+", type=float, default=[0.0, 0.5, 1.0, 1.5],
                        help="language offsets of the new head rows to score on dev (phase head)")
    parser.add_argument("--offset-pairs", type=int, default=DEFAULT_PAIRS,
                        help="training pairs sampled for the language offset (phases head, select, extend)")
    parser.add_argument("--vocab-size", type=int, default=16_000, help="replace: the new vocabulary's size")
    parser.add_argument("--aligner", default="eflomal")
    parser.add_argument("--budget", type=int, default=102_400)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=float, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/extend-bench", help="scratch directory for models")
    parser.add_argument("--out", default="benchmarks/results/extension")
    parser.add_argument("--rewrite", action="store_true", help="only rebuild results.md and extension.png")
    return parser.parse_args(argv)


def write_outputs(results: dict, args) -> str:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = {k: v for k, v in vars(args).items() if k not in ("phase", "lang", "rewrite", "new_tokens")}
    (out / "results.json").write_text(json.dumps({"args": saved, "results": results}, indent=2,
                                                 ensure_ascii=False) + "\n", encoding="utf-8")
    table = markdown(results, args)
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    plot(results, out / "extension.png")
    return table


def _chosen(record: dict, args) -> int:
    """N for the phases after select: --new-tokens, else the one chosen on dev."""
    n = args.new_tokens or (record.get("select") or {}).get("chosen")
    if n is None:
        raise SystemExit("run --phase select first (or pass --new-tokens N)")
    return n


def main() -> None:
    args = parse_args()
    path = Path(args.out) / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))["results"] if path.is_file() else {}
    if args.rewrite:
        print(write_outputs(results, args))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    source_dir = smollm2_checkpoint()
    split = parallel_bible("en", args.lang)
    work = Path(args.work) / args.lang
    _write(work / "train.txt", split.train.target)
    record = results.setdefault(args.lang, {})
    for phase in args.phase:
        started = time.perf_counter()
        if phase == "select":
            record["select"] = phase_select(args.lang, split, source_dir, args)
        elif phase == "source":
            record["source"] = phase_source(args.lang, split, source_dir, work, args)
        elif phase == "replace":
            record["replace"] = phase_replace(args.lang, split, source_dir, work, args)
        elif phase == "spelling":
            record["spelling"] = phase_spelling(args.lang, split, source_dir, args, _chosen(record, args))
        elif phase == "head":
            record["head"] = phase_head(args.lang, split, source_dir, args, _chosen(record, args))
        elif phase == "inits":
            record["inits"] = phase_inits(args.lang, split, source_dir, args, _chosen(record, args))
        else:
            record["extend"] = phase_extend(args.lang, split, source_dir, work, args, _chosen(record, args))
        record.setdefault("seconds", {})[phase] = round(time.perf_counter() - started, 1)
        record["split"] = {"train_pairs": len(split.train), "dev_verses": len(split.dev),
                           "test_verses": len(split.test)}
        print(write_outputs(results, args))


if __name__ == "__main__":
    main()
