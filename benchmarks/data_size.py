"""How much parallel data is enough: bits per byte at init against the number of training pairs.

For each language and each size N: a random sample (seed 0) of N verse pairs of the Bible's training
books (every book but the dev books James .. 3 John and the held-out Jude + Revelation), then
``transtok transfer`` with its defaults (a target tokenizer of the source model's size, which a small
corpus caps at the merges it supports; eflomal; the unigram prior of the head), no training. Scores the
transferred model and the source model (own tokenizer) on the dev books and on the held-out books with
the project's protocol (windows of 512 tokens moved by 128). The smallest size at which the transfer
reads the *dev* books better than the source model is the threshold below which ``transfer`` warns
(:data:`transtok.pipeline.ENOUGH_PAIRS`); the held-out figures are reported beside it, not used to choose.

Writes results.json, results.md and curve.png to --out; each finished point is saved as it ends, so a
cut run continues where it stopped (--work keeps the models).

    python benchmarks/data_size.py --langs es ru --pairs 1000 2000 5000 10000 0 --out benchmarks/results/data_size
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

from transtok.assets import parallel_bible, smollm2_checkpoint  # noqa: E402
from transtok.corpus import ParallelCorpus  # noqa: E402
from transtok.evaluate import DEFAULT_STRIDE, eval_seq_len, evaluate_perplexity  # noqa: E402
from transtok.loading import load_model, load_tokenizer  # noqa: E402
from transtok.pipeline import TransferConfig, transfer  # noqa: E402

logger = logging.getLogger("data_size")


def sample(corpus: ParallelCorpus, n: int, seed: int) -> ParallelCorpus:
    """``n`` pairs drawn without replacement (all of them for n = 0 or n >= len), in corpus order."""
    if n <= 0 or n >= len(corpus):
        return corpus
    keep = sorted(random.Random(seed).sample(range(len(corpus)), n))
    return ParallelCorpus([corpus.source[i] for i in keep], [corpus.target[i] for i in keep])


def score(model_dir: str, splits: dict[str, list[str]]) -> dict[str, dict]:
    """Bits per byte of the model in ``model_dir`` (own tokenizer) on each split, sliding windows."""
    model, tokenizer = load_model(model_dir)
    seq_len = eval_seq_len(model)
    out = {}
    for name, texts in splits.items():
        result = evaluate_perplexity(model, tokenizer, texts, seq_len=seq_len, stride=min(DEFAULT_STRIDE, seq_len))
        out[name] = {"bits_per_byte": result.bits_per_byte, "tokens": result.tokens, "signature": result.signature}
    return out


def threshold(points: list[dict], source: dict, split: str = "dev") -> int | None:
    """The smallest measured size from which every larger measured size beats the source model on ``split``."""
    ordered = sorted(points, key=lambda p: p["pairs"])
    for i, point in enumerate(ordered):
        if all(p["bits_per_byte"][split] < source[split]["bits_per_byte"] for p in ordered[i:]):
            return point["pairs"]
    return None


def markdown(results: dict) -> str:
    lines = ["| language | training pairs | target vocabulary | dev bits/byte | held-out bits/byte | transfer time |",
             "|---|---|---|---|---|---|"]
    for lang, entry in results["languages"].items():
        source = entry["source"]
        lines.append(f"| {lang} | source model | (own) | {source['dev']['bits_per_byte']:.3f} | "
                     f"{source['test']['bits_per_byte']:.3f} | |")
        for p in sorted(entry["points"], key=lambda p: p["pairs"]):
            lines.append(f"| {lang} | {p['pairs']:,} | {p['vocab_size']:,} | {p['bits_per_byte']['dev']:.3f} | "
                         f"{p['bits_per_byte']['test']:.3f} | {p['seconds']['transfer']:.0f} s |")
        lines.append(f"| {lang} | **beats the source model on dev from** | | {entry.get('threshold_dev') or 'never'} | "
                     f"{entry.get('threshold_test') or 'never'} (held-out) | |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, split, title in ((axes[0], "dev", "dev books"), (axes[1], "test", "held-out books")):
        for i, (lang, entry) in enumerate(results["languages"].items()):
            points = sorted(entry["points"], key=lambda p: p["pairs"])
            colour = f"C{i}"
            ax.plot([p["pairs"] for p in points], [p["bits_per_byte"][split] for p in points], "o-", color=colour,
                    label=f"{lang}: transfer (no training)")
            ax.axhline(entry["source"][split]["bits_per_byte"], color=colour, linestyle="--",
                       label=f"{lang}: source model")
        ax.set_xscale("log")
        ax.set_xlabel("training verse pairs")
        ax.set_ylabel("bits per byte (lower is better)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle("SmolLM2-135M-Instruct, Bible: transfer at init against parallel data size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", nargs="+", default=["es", "ru"])
    parser.add_argument("--pairs", nargs="+", type=int, default=[1000, 2000, 5000, 10000, 0],
                        help="training pairs per point; 0 = all the training books")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pair sample")
    parser.add_argument("--work", default="runs/data_size", help="scratch directory for corpora and models")
    parser.add_argument("--out", default="benchmarks/results/data_size")
    parser.add_argument("--keep-models", action="store_true", help="keep each transferred model under --work")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"languages": {}}
    results["args"] = vars(args)
    source_dir = str(smollm2_checkpoint())

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        (out / "results.md").write_text(markdown(results))

    for lang in args.langs:
        split = parallel_bible("en", lang)
        evals = {"dev": split.dev.target, "test": split.test.target}
        entry = results["languages"].setdefault(lang, {"points": []})
        entry["corpus_pairs"] = len(split.train)
        if "source" not in entry:
            logger.info("%s: scoring the source model", lang)
            entry["source"] = score(source_dir, evals)
            save()
        done = {p["pairs_asked"] for p in entry["points"]}
        for n in args.pairs:
            if n in done:
                continue
            corpus = sample(split.train, n, args.seed)
            data = work / lang / f"pairs{n}"
            data.mkdir(parents=True, exist_ok=True)
            corpus.write_tsv(data / "train.tsv")
            (data / "train.txt").write_text("".join(f"{t}\n" for t in corpus.target), encoding="utf-8")
            model_dir = work / lang / f"model{n}"
            start = time.perf_counter()
            result = transfer(TransferConfig(source_model=source_dir, parallel=[str(data / "train.tsv")],
                                             output=str(model_dir), target_corpus=[str(data / "train.txt")],
                                             overwrite=True))
            seconds = time.perf_counter() - start
            scored = score(str(model_dir), evals)
            entry["points"].append({
                "pairs_asked": n, "pairs": len(corpus), "pairs_aligned": result.alignment_stats.get("pairs_aligned"),
                "vocab_size": len(load_tokenizer(model_dir)),
                "bits_per_byte": {k: v["bits_per_byte"] for k, v in scored.items()},
                "tokens": {k: v["tokens"] for k, v in scored.items()},
                "signature": scored["dev"]["signature"],
                "seconds": {"transfer": round(seconds, 1), **{k: round(v, 1) for k, v in result.seconds.items()}}})
            entry["threshold_dev"] = threshold(entry["points"], entry["source"], "dev")
            entry["threshold_test"] = threshold(entry["points"], entry["source"], "test")
            save()
            if not args.keep_models:
                shutil.rmtree(model_dir, ignore_errors=True)
    save()
    plot(results, out / "curve.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
