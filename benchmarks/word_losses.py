"""Where trans-tokenization gains or loses against the source model: bits per byte split by word.

Same setup as benchmarks/init_methods.py (SmolLM2-135M-Instruct, the Q4_1 GGUF dequantised; the Bible split;
tokenizer and alignment counts from its cache under --work). Both models score the same text with the same
sliding windows as ``transtok.evaluate.evaluate_perplexity``; each token's loss is charged to the
whitespace-separated word its last character falls in (whitespace belongs to the next word), so a word's
bits are comparable across tokenizers and they add up to the whole text's. Words are then grouped by how
often they occur in the training books and by how many tokens the new tokenizer spends on them.

Scores the dev books by default (where the method may be changed), never the held-out books unless asked.

    python benchmarks/word_losses.py --langs ar es --work /tmp/main-runs --out benchmarks/results/word_losses
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import init_methods as bench  # noqa: E402
from transtok.assets import smollm2_checkpoint  # noqa: E402
from transtok.evaluate import _prefix_id, eval_seq_len, sliding_windows  # noqa: E402
from transtok.mapping import MappingConfig  # noqa: E402
from transtok.loading import load_model  # noqa: E402
from transtok.steps import give_vocabulary, mapping_from_alignment  # noqa: E402

logger = logging.getLogger("word_losses")

# (label, lowest count in the training books) from most to least frequent; a word falls in the first it reaches.
FREQUENCY_BUCKETS = [("seen 1,000+ times", 1000), ("seen 100-999 times", 100), ("seen 10-99 times", 10),
                     ("seen 1-9 times", 1), ("not in the training books", 0)]


def word_index(text: str) -> list[int]:
    """(len(text),) the word each character belongs to; whitespace belongs to the word after it (trailing
    whitespace to the last word)."""
    index, count = [], 0
    for i, char in enumerate(text):
        if not char.isspace() and (i == 0 or text[i - 1].isspace()):
            count += 1
        index.append(count if char.isspace() else count - 1)
    last = max(count - 1, 0)
    return [min(i, last) for i in index]


def token_losses(model, tokenizer, text: str, *, seq_len: int, stride: int, batch_size: int = 8):
    """(ids, offsets, nats): every token of ``text`` with its character span and its NLL in nats, scored
    exactly as evaluate_perplexity does (prefix token, sliding windows, fp32 log-softmax)."""
    import torch
    import torch.nn.functional as F

    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    prefix = _prefix_id(tokenizer)
    nats = [math.nan] * len(ids)
    windows = sliding_windows(len(ids), seq_len, stride)
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(windows), batch_size):
            batch = windows[b:b + batch_size]
            length = max(end - start for start, end, _ in batch) + 1
            input_ids = torch.full((len(batch), length), prefix, dtype=torch.long)
            attention = torch.zeros((len(batch), length), dtype=torch.long)
            for row, (start, end, _) in enumerate(batch):
                input_ids[row, 1:end - start + 1] = torch.tensor(ids[start:end])
                attention[row, :end - start + 1] = 1
            logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1]
            for row, (start, end, scored) in enumerate(batch):
                targets = input_ids[row, 1:end - start + 1]
                losses = F.cross_entropy(logits[row, :end - start].float(), targets, reduction="none")
                nats[end - scored:end] = losses[end - start - scored:].tolist()
        logger.info("scored %s tokens in %s windows", f"{len(ids):,}", f"{len(windows):,}")
    return ids, offsets, nats


def word_bits(text: str, offsets, nats) -> list[float]:
    """(words,) bits charged to each word of ``text`` (see the module docstring)."""
    index = word_index(text)
    bits = [0.0] * (max(index) + 1 if index else 0)
    for (start, end), loss in zip(offsets, nats):
        char = max(min(end, len(text)) - 1, start, 0)
        bits[index[char]] += loss / math.log(2)
    return bits


def words_of(text: str) -> list[str]:
    """The words of ``text`` in word_index order, each with the whitespace before it."""
    index = word_index(text)
    words = [""] * (max(index) + 1 if index else 0)
    for char, i in zip(text, index):
        words[i] += char
    return words


def analyse(lang: str, args, source_dir: Path) -> dict:
    split = bench.bible_split(lang, Path(args.work) / lang)
    texts = getattr(split, args.split).target
    text = "\n".join(texts)
    source_model, source_tokenizer = load_model(str(source_dir))
    target_tokenizer, counts = bench.prepared(lang, split, source_tokenizer, args)
    window = eval_seq_len(source_model, args.eval_seq_len)
    _, offsets, nats = token_losses(source_model, source_tokenizer, text, seq_len=window, stride=args.stride)
    source_bits = word_bits(text, offsets, nats)
    mapping, _ = mapping_from_alignment(source_tokenizer, target_tokenizer, counts, MappingConfig())
    give_vocabulary(source_model, mapping, target_tokenizer, source_tokenizer=source_tokenizer)
    target_ids, offsets, nats = token_losses(source_model, target_tokenizer, text, seq_len=window, stride=args.stride)
    target_bits = word_bits(text, offsets, nats)
    words = words_of(text)
    target_index = word_index(text)
    tokens_per_word = collections.Counter(target_index[max(min(e, len(text)) - 1, s, 0)] for s, e in offsets)

    train_counts = collections.Counter(w for line in split.train.target for w in line.split())
    rows: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0, 0])
    losses_by_word: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for i, word in enumerate(words):
        seen = train_counts.get(word.strip(), 0)
        bucket = next(label for label, low in FREQUENCY_BUCKETS if seen >= low)
        n = tokens_per_word[i]
        pieces = "1 new token" if n <= 1 else ("2 new tokens" if n == 2 else "3+ new tokens")
        for key in ((bucket, "all"), ("all", pieces), ("all", "all")):
            row = rows[key]
            row[0] += len(word.encode("utf-8"))
            row[1] += source_bits[i]
            row[2] += target_bits[i]
            row[3] += 1
        entry = losses_by_word[word.strip()]
        entry[0] += 1
        entry[1] += source_bits[i]
        entry[2] += target_bits[i]
    table = [{"frequency": f, "new tokens": p, "words": r[3], "bytes": r[0], "source_bpb": r[1] / r[0],
              "trans_tokenization_bpb": r[2] / r[0], "gap_bits": r[1] - r[2]} for (f, p), r in rows.items()]
    worst = sorted(((t - s, w, n) for w, (n, s, t) in losses_by_word.items()), reverse=True)[:args.top]
    best = sorted(((t - s, w, n) for w, (n, s, t) in losses_by_word.items()))[:args.top]
    return {"lang": lang, "split": args.split, "bytes": len(text.encode("utf-8")), "rows": table,
            "loses_most": [{"word": w, "count": n, "extra_bits": d} for d, w, n in worst],
            "gains_most": [{"word": w, "count": n, "extra_bits": d} for d, w, n in best],
            "target_tokens": len(target_ids)}


def markdown(results: list[dict], args) -> str:
    lines = ["# Where trans-tokenization gains or loses against the source model, word by word", "",
             f"Bits per byte at init on the {args.split} books (sliding windows of {args.eval_seq_len} moved by "
             f"{args.stride}); each token's loss is charged to the word its last character falls in. 'gap' = the "
             "source model's bits minus trans-tokenization's on those words, in thousands of bits (positive: "
             "trans-tokenization is better), so the rows of one grouping add up to the whole text's gap.", ""]
    order = [label for label, _ in FREQUENCY_BUCKETS] + ["1 new token", "2 new tokens", "3+ new tokens"]
    for record in results:
        lines += [f"## {record['lang']}", "", "| words | count | share of bytes | source BPB | trans-tokenization BPB"
                  " | gap (kbit) |", "|---|---|---|---|---|---|"]
        rows = {(r["frequency"], r["new tokens"]): r for r in record["rows"]}
        keys = [("all", "all")] + [(f, "all") for f in order if (f, "all") in rows] + \
               [("all", p) for p in order if ("all", p) in rows]
        for key in keys:
            r = rows[key]
            name = "all words" if key == ("all", "all") else (key[0] if key[1] == "all" else f"split into {key[1]}")
            lines.append(f"| {name} | {r['words']:,} | {r['bytes'] / record['bytes']:.1%} | {r['source_bpb']:.3f} | "
                         f"{r['trans_tokenization_bpb']:.3f} | {r['gap_bits'] / 1000:+.1f} |")
        for title, key in (("loses most", "loses_most"), ("gains most", "gains_most")):
            lines += ["", f"Words where trans-tokenization {title} (extra bits over all occurrences): " + ", ".join(
                f"`{w['word']}` ×{w['count']} {w['extra_bits']:+.0f}" for w in record[key])]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--langs", nargs="+", default=["ar", "es"])
    parser.add_argument("--split", default="dev", choices=["dev", "test"])
    parser.add_argument("--vocab-size", type=int, default=49_152)
    parser.add_argument("--aligner", default="eflomal")
    parser.add_argument("--segmenter", default="auto")
    parser.add_argument("--eval-seq-len", type=int, default=512)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--top", type=int, default=12, help="words listed as the largest losses and gains")
    parser.add_argument("--work", default="runs/init_methods", help="scratch directory (shared with init_methods)")
    parser.add_argument("--out", default="benchmarks/results/word_losses")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    source_dir = smollm2_checkpoint()
    results = [analyse(lang, args, source_dir) for lang in args.langs]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "word_losses.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2,
                                                     ensure_ascii=False) + "\n")
    table = markdown(results, args)
    (out / "word_losses.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
