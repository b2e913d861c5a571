"""Side-by-side benchmark of embedding initialisation methods on real data.

For each language: SmolLM2-135M-Instruct (English) → a new byte-level BPE tokenizer trained on the
target side of the Bible (books outside dev and test), aligned on the same books. Reports, on the
held-out books (default Jude + Revelation):
  * fertility (tokens per word) of the source and the new tokenizer;
  * bits per byte of the source model (own tokenizer) and of every initialisation, untrained;
  * the same after an embeddings-only training budget (same budget, seed and data for every method,
    and for the source model with its own tokenizer), with the curve over training tokens;
  * wall time and peak memory of each pipeline step.
Writes results.json, results.md and curve.png to --out.

    python benchmarks/init_methods.py --langs es ru --out benchmarks/results/init_methods
    python benchmarks/init_methods.py --langs es --budget 307200 --methods trans-tokenization fvt
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

from transtok.assets import parallel_bible, smollm2_checkpoint, write_split  # noqa: E402
from transtok.align import align  # noqa: E402
from transtok.evaluate import eval_seq_len, evaluate_perplexity, fertility  # noqa: E402
from transtok.mapping import INIT_METHODS, MappingConfig  # noqa: E402
from transtok.segment import SEGMENTERS  # noqa: E402
from transtok.finetune import JOINS  # noqa: E402
from transtok.pipeline import load_model, mapping_from_alignment, save_checkpoint  # noqa: E402
from transtok.surgery import transplant  # noqa: E402
from transtok.tokenizer import train_tokenizer  # noqa: E402

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


def train_budget(model_dir: Path, train_file: Path, eval_file: Path, out: Path, args) -> dict:
    """Embeddings + LM head only, the same budget, data and seed for every method."""
    from transtok.finetune import FinetuneConfig, finetune

    result = finetune(FinetuneConfig(
        model=str(model_dir), train=[str(train_file)], eval=[str(eval_file)], output=str(out), stage="embeddings",
        max_tokens=args.budget, seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        schedule="linear", seed=args.seed, eval_every=args.eval_every, join=args.join, save_every=0, overwrite=True))
    return {"curve": result.eval_curve, "final": result.eval_curve[-1][1] if result.eval_curve else None,
            "stages": result.stages}


def bible_split(lang: str, work: Path):
    """The Bible split of ``lang`` (train books 1-64, test Jude + Revelation: the setup of
    shared/research/anchor_es.md), written to ``work/data``. Nothing is tuned here, so no dev books."""
    split = parallel_bible("en", lang, dev_books=())
    write_split(split, work / "data", overwrite=True)
    return split


def run_language(lang: str, args, source_dir: Path, split) -> dict:
    """All methods for one language. ``split`` has ``.train``/``.test`` ParallelCorpus and its texts are in
    ``args.work/lang/data/{train,test}.txt``."""
    work = Path(args.work) / lang
    record: dict = {"lang": lang, "steps": {}, "methods": {},
                    "split": {"train_pairs": len(split.train), "test_verses": len(split.test)}}
    steps = record["steps"]
    test = split.test.target
    with measured(steps, "load_source"):
        source_model, source_tokenizer = load_model(str(source_dir))
    with measured(steps, "train_tokenizer"):
        target_tokenizer = train_tokenizer(split.train.target, source_tokenizer, args.vocab_size)
    record["fertility"] = {"source": fertility(source_tokenizer, test), "target": fertility(target_tokenizer, test)}
    with measured(steps, "align"):
        counts = align(split.train, source_tokenizer, target_tokenizer, aligner=args.aligner,
                       segmenter=args.segmenter)
    record["alignment"] = counts.stats
    pairs = max(counts.stats["pairs_aligned"], 1)
    record["units_per_verse"] = {"source": counts.stats["source_units"] / pairs,
                                 "target": counts.stats["target_units"] / pairs}

    with measured(steps, "evaluate_source"):
        source_eval = evaluate_perplexity(source_model, source_tokenizer, test, seq_len=eval_seq_len(source_model))
    record["methods"]["source (own tokenizer)"] = {"init": source_eval.bits_per_byte, "tokens": source_eval.tokens}
    if args.budget and "source" in args.train_methods:
        with measured(steps, "train_source"):
            record["methods"]["source (own tokenizer)"].update(train_budget(
                source_dir, work / "data" / "train.txt", work / "data" / "test.txt", work / "trained-source", args))

    for method in args.methods:
        entry: dict = {}
        with measured(steps, f"map_{method}"):
            # FOCUS trains its fastText model on the target side of the same training pairs.
            mapping, report = mapping_from_alignment(source_tokenizer, target_tokenizer,
                                                     counts if method == "trans-tokenization" else None,
                                                     MappingConfig(init=method, seed=args.seed),
                                                     target_texts=split.train.target)
        entry["provenance"] = report.provenance
        with measured(steps, f"transplant_{method}"):
            model, _ = load_model(str(source_dir))
            transplant(model, mapping, target_tokenizer, source_tokenizer=source_tokenizer)
            model_dir = work / f"init-{method}"
            model_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(model_dir, model, target_tokenizer)
        with measured(steps, f"evaluate_{method}"):
            result = evaluate_perplexity(model, target_tokenizer, test, seq_len=eval_seq_len(model))
        entry.update({"init": result.bits_per_byte, "tokens": result.tokens})
        logger.info("%s %s: %.4f bits per byte at init", lang, method, result.bits_per_byte)
        del model
        if args.budget and method in args.train_methods:
            with measured(steps, f"train_{method}"):
                entry.update(train_budget(model_dir, work / "data" / "train.txt", work / "data" / "test.txt",
                                          work / f"trained-{method}", args))
        record["methods"][method] = entry
    return record


# shared/research/anchor_es.md: the official trans-tokenization code on the same Spanish setup.
ANCHOR = {"es": (307_200, {"official trans-tokenization": (2.822, 1.544), "fvt": (2.408, 1.656),
                          "source (own tokenizer)": (1.917, 1.532)})}


def markdown(results: list[dict], args) -> str:
    lines = ["# Initialisation methods (SmolLM2-135M-Instruct, held-out Jude + Revelation)", "",
             f"Budget: {args.budget:,} training tokens, embeddings + LM head only, seq {args.seq_len}, batch "
             f"{args.batch_size}, lr {args.lr}, seed {args.seed}. Bits per byte: lower is better.", ""]
    for record in results:
        f = record["fertility"]
        lines += [f"## {record['lang']}: tokens per word {f['source']:.2f} (source) → {f['target']:.2f} (new)", "",
                  "| method | held-out tokens | BPB at init | BPB after budget |", "|---|---|---|---|"]
        if "units_per_verse" in record:
            units, stats = record["units_per_verse"], record["alignment"]
            lines[-2:-2] = [f"Word units per training verse (segmenter {stats.get('segmenter', 'none')}): "
                            f"{units['source']:.1f} source, {units['target']:.1f} target.", ""]
        for name, entry in record["methods"].items():
            after = entry.get("final")
            lines.append(f"| {name} | {entry['tokens']:,} | {entry['init']:.3f} | "
                         f"{'-' if after is None else f'{after:.3f}'} |")
        budget, anchor = ANCHOR.get(record["lang"], (None, {}))
        if budget == args.budget:
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

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, record in zip(axes[0], results):
        for name, entry in record["methods"].items():
            curve = [(0, entry["init"])] + [tuple(p) for p in entry.get("curve", []) if p[0] > 0]
            ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", label=name)
        ax.set_title(f"en → {record['lang']}")
        ax.set_xlabel("training tokens (embeddings + LM head)")
        ax.set_ylabel("held-out bits per byte")
        ax.set_ylim(top=min(6, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", nargs="+", default=["es", "ru"])
    parser.add_argument("--methods", nargs="+", default=list(INIT_METHODS), choices=INIT_METHODS,
                        help="initialisation methods to compare (default: all)")
    parser.add_argument("--train-methods", nargs="+", default=["source", *INIT_METHODS],
                        choices=["source", *INIT_METHODS],
                        help="which of them (and 'source', the source model with its own tokenizer) get the "
                             "training budget (default: all)")
    parser.add_argument("--vocab-size", type=int, default=16_000)
    parser.add_argument("--aligner", default="eflomal")
    parser.add_argument("--segmenter", default="auto", choices=SEGMENTERS,
                        help="word boundaries in text written without spaces (default: %(default)s)")
    parser.add_argument("--budget", type=int, default=102_400,
                        help="training tokens per method (0: init only); 307200 = the anchor's budget")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=float, default=20)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--join", default="newline", choices=JOINS,
                        help="how training verses are joined (newline: as the held-out verses are for bits per byte)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/init_methods", help="scratch directory for models")
    parser.add_argument("--out", default="benchmarks/results/init_methods")
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
        split = bible_split(lang, Path(args.work) / lang)
        record = run_language(lang, args, source_dir, split)
        record["steps"]["total"] = {"seconds": round(time.perf_counter() - started, 2)}
        results.append(record)
    print(write_outputs(results, args))
    print(f"wrote results.json, results.md and curve.png to {args.out}")


if __name__ == "__main__":
    main()
