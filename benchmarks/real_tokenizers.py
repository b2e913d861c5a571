"""The whole pipeline with the real tokenizers of Mistral's models (v1, v3, Tekken), through the CLI.

For each real tokenizer (from the mistral-common wheel, ``transtok assets fetch --tokenizers``) a
small randomly initialised Mistral-shaped model carries it (the real vocabulary, a tiny body: the
tokenizer side is what is measured here, not language modelling). For each target language:
``train-tokenizer`` on the Bible's training books, ``align`` (eflomal) en→target, ``map``,
``transplant`` streaming and ``--in-memory`` (checked identical), ``evaluate perplexity``. Reports
per tokenizer and language: vocabulary sizes, fertility (tokens per word) of the source and the new
tokenizer on the held-out books (Jude, Revelation), the share of target tokens by provenance
(special / copied / aligned / decomposed / fallback), and checks that matter with real vocabularies:
byte tokens mapped by byte, exact overlap across the ``▁`` / ``Ġ`` spellings, word units on real
text. Wall time of each step. Writes results.json and results.md to --out (runs merge into them).

    python benchmarks/real_tokenizers.py --tokenizers mistral-v1 --langs es ru
    python benchmarks/real_tokenizers.py --rewrite          # the table from results.json alone
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

from transtok.assets import REAL_TOKENIZERS, parallel_bible, real_tokenizer, write_split  # noqa: E402
from transtok.cli import main as transtok  # noqa: E402

logger = logging.getLogger("real_tokenizers")
HERE = Path(__file__).parent
LANGUAGES = {"es": "Spanish", "ru": "Russian"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizers", nargs="+", default=list(REAL_TOKENIZERS), choices=list(REAL_TOKENIZERS))
    p.add_argument("--langs", nargs="+", default=list(LANGUAGES))
    p.add_argument("--vocab-size", type=int, default=16_000)
    p.add_argument("--aligner", default="eflomal")
    p.add_argument("--hidden", type=int, default=64, help="hidden size of the random Mistral-shaped model")
    p.add_argument("--work", default="/tmp/transtok-real-tokenizers")
    p.add_argument("--out", default=str(HERE / "results" / "real_tokenizers"))
    p.add_argument("--rewrite", action="store_true", help="only rebuild results.md from results.json")
    return p.parse_args(argv)


def mistral_shaped(tokenizer_dir: Path, output: Path, hidden: int) -> Path:
    """A randomly initialised MistralForCausalLM with the real tokenizer's vocabulary (untied, as Mistral)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from transtok.loading import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    config = AutoConfig.for_model(
        "mistral", vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def timed(steps: dict, name: str, *argv) -> None:
    start = time.perf_counter()
    code = transtok([str(a) for a in argv])
    steps[name] = round(time.perf_counter() - start, 2)
    if code != 0:
        raise SystemExit(f"transtok {argv[0]} failed with exit code {code}")


def checks(source_dir: Path, target_dir: Path, mapping_dir: Path, test: list[str]) -> dict:
    """What matters with real vocabularies: bytes by byte, overlap across spellings, word units."""
    from transtok.align import word_units
    from transtok.mapping import PROVENANCE, TokenMapping
    from transtok.loading import load_tokenizer
    from transtok.vocabulary import byte_fallback_ids, exact_matches, special_ids, token_bytes, tokenizer_family

    source, target = load_tokenizer(source_dir), load_tokenizer(target_dir)
    mapping = TokenMapping.load(mapping_dir)
    matrix = mapping.matrix.tocsr()
    target_bytes, source_bytes = token_bytes(target), token_bytes(source)
    # Byte tokens: <0xNN> pieces (SentencePiece) or the 256 single-byte tokens (byte-level BPE).
    byte_tokens = sorted(byte_fallback_ids(target)) or [i for i, b in enumerate(target_bytes)
                                                        if b is not None and len(b) == 1]
    exact = exact_matches(target_bytes, source_bytes, target_byte_pieces=byte_fallback_ids(target),
                          source_byte_pieces=byte_fallback_ids(source))
    # Matched by byte: the exact match has the same byte. Row by byte: the final mapping row is that
    # source token alone (byte-level single bytes such as "," are also aligned like any other token).
    matched, row_only = 0, 0
    for t in byte_tokens:
        matched += exact[t] >= 0 and source_bytes[exact[t]] == target_bytes[t]
        partners = matrix[t].indices.tolist()
        row_only += len(partners) == 1 and partners[0] == exact[t]
    target_vocab = target.get_vocab()
    pieces = target.convert_ids_to_tokens(list(range(len(target))))
    source_vocab = source.get_vocab()  # a fresh dict per call: once
    specials = special_ids(target)
    same_string = sum(1 for i, p in enumerate(pieces) if p in source_vocab and i not in specials)
    # Word units of the source and the new tokenizer on the held-out text: the same words?
    source_units, target_units = word_units(source, test), word_units(target, test)

    def words(tokenizer, units):
        return [tokenizer.decode(list(u)).strip() for u in units]

    same_units = sum(words(source, s) == words(target, t) for s, t in zip(source_units, target_units))
    return {
        "family": {"source": tokenizer_family(source), "target": tokenizer_family(target)},
        "byte_tokens": len(byte_tokens), "byte_tokens_matched_by_byte": int(matched),
        "byte_tokens_row_is_that_byte": int(row_only),
        "exact_overlap": int((exact >= 0).sum()), "same_token_string": same_string,
        "example_copies": {p: source.convert_ids_to_tokens(int(exact[target_vocab[p]]))
                           for p in ("<0x41>", "▁de", "Ġde", "▁и", "Ġи", "e", "A") if p in target_vocab
                           and exact[target_vocab[p]] >= 0},
        "word_units": {"verses": len(test), "same_words": same_units,
                       "source_units": sum(map(len, source_units)), "target_units": sum(map(len, target_units))},
        "provenance_codes": list(PROVENANCE),
    }


def cross_spelling(work: Path, names: list[str], langs: list[str]) -> dict:
    """Exact overlap of every trained target with every *other* family's source vocabulary: a
    SentencePiece target (``▁de``) against Tekken (``Ġde``), and back."""
    from transtok.loading import load_tokenizer
    from transtok.vocabulary import byte_fallback_ids, exact_matches, token_bytes, tokenizer_family

    out = {}
    sources = {n: load_tokenizer(real_tokenizer(n)) for n in REAL_TOKENIZERS}
    for name in names:
        for lang in langs:
            target_dir = work / name / lang / "tokenizer"
            if not target_dir.is_dir():
                continue
            target = load_tokenizer(target_dir)
            for other, source in sources.items():
                if tokenizer_family(source) == tokenizer_family(target):
                    continue
                exact = exact_matches(token_bytes(target), token_bytes(source),
                                      target_byte_pieces=byte_fallback_ids(target),
                                      source_byte_pieces=byte_fallback_ids(source))
                raw = len(target.get_vocab().keys() & source.get_vocab().keys())
                out[f"{name}/{lang} vs {other}"] = {"by_bytes": int((exact >= 0).sum()), "by_string": raw}
    return out


def run(name: str, lang: str, args, results: dict) -> dict:
    work = Path(args.work) / name / lang
    data = work / "data"
    if not (data / "split.json").is_file():
        write_split(parallel_bible("en", lang), data, overwrite=True)
    test = (data / "test.txt").read_text(encoding="utf-8").splitlines()
    tokenizer_dir = real_tokenizer(name)
    source_dir = Path(args.work) / name / "source"
    if not (source_dir / "config.json").is_file():
        mistral_shaped(tokenizer_dir, source_dir, args.hidden)
    steps: dict = {}
    record: dict = {"tokenizer": name, "lang": lang, "steps": steps, "source_vocab": REAL_TOKENIZERS[name].size}
    timed(steps, "train_tokenizer", "train-tokenizer", "--text", data / "train.txt", "--model", source_dir,
          "--vocab-size", args.vocab_size, "--output", work / "tokenizer", "--overwrite")
    timed(steps, "align", "align", "--model", source_dir, "--target-tokenizer", work / "tokenizer",
          "--parallel", data / "train.tsv", "--aligner", args.aligner, "--output", work / "alignment", "--overwrite")
    timed(steps, "map", "map", "--alignment", work / "alignment", "--output", work / "mapping", "--overwrite")
    timed(steps, "transplant_streaming", "transplant", "--model", source_dir, "--mapping", work / "mapping",
          "--output", work / "model", "--overwrite")
    timed(steps, "transplant_in_memory", "transplant", "--model", source_dir, "--mapping", work / "mapping",
          "--output", work / "model-in-memory", "--in-memory", "--overwrite")
    record["streaming_equals_in_memory"] = same_tensors(work / "model", work / "model-in-memory")
    for label, model in (("source", source_dir), ("target", work / "model")):
        start = time.perf_counter()
        record.setdefault("bits_per_byte_random_model", {})[label] = evaluate(model, data / "test.txt")
        steps[f"evaluate_{label}"] = round(time.perf_counter() - start, 2)

    from transtok.evaluate import fertility
    from transtok.loading import load_tokenizer

    source, target = load_tokenizer(source_dir), load_tokenizer(work / "tokenizer")
    record["target_vocab"] = len(target)
    record["fertility"] = {"source": round(fertility(source, test), 3), "target": round(fertility(target, test), 3)}
    report = json.loads((work / "mapping" / "mapping_report.json").read_text())
    record["provenance"] = report["provenance"]
    record["checks"] = checks(source_dir, work / "tokenizer", work / "mapping", test)
    results[f"{name}/{lang}"] = record
    logger.info("%s %s: %s", name, lang, json.dumps(record))
    return record


def evaluate(model_dir: Path, text: Path) -> float:
    """``transtok evaluate perplexity --json``'s bits per byte (captured from stdout)."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = transtok(["evaluate", "perplexity", "--model", str(model_dir), "--text", str(text), "--json"])
    if code != 0:
        raise SystemExit(f"transtok evaluate failed with exit code {code}")
    return round(json.loads(buffer.getvalue())["bits_per_byte"], 4)


def same_tensors(a: Path, b: Path) -> bool:
    import torch
    from safetensors import safe_open

    def load(directory):
        out = {}
        for path in sorted(directory.glob("*.safetensors")):
            with safe_open(path, framework="pt") as handle:
                out.update({k: handle.get_tensor(k) for k in handle.keys()})
        return out

    left, right = load(a), load(b)
    return sorted(left) == sorted(right) and all(torch.equal(left[k], right[k]) for k in left)


def table(results: dict, cross: dict) -> str:
    lines = ["| tokenizer | lang | vocab source → new | fertility source → new | special | copied | aligned | "
             "decomposed | fallback | train-tokenizer s | align s | map s | transplant s (stream / memory) | "
             "evaluate s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(results):
        r = results[key]
        n = r["target_vocab"]
        share = {k: f"{100 * r['provenance'].get(k, 0) / n:.1f}%" for k in
                 ("special", "copied", "aligned", "decomposed", "fallback")}
        s = r["steps"]
        lines.append(
            f"| {r['tokenizer']} | {r['lang']} | {r['source_vocab']:,} → {n:,} | {r['fertility']['source']:.2f} → "
            f"{r['fertility']['target']:.2f} | {share['special']} | {share['copied']} | {share['aligned']} | "
            f"{share['decomposed']} | {share['fallback']} | {s['train_tokenizer']:.1f} | {s['align']:.1f} | "
            f"{s['map']:.1f} | {s['transplant_streaming']:.1f} / {s['transplant_in_memory']:.1f} | "
            f"{s['evaluate_target']:.1f} |")
    lines += ["", "Checks:", "",
              "| tokenizer | lang | families | byte tokens matched by byte (row = that byte alone) | exact overlap "
              "| same token string (non-special) | held-out verses with the same word units | streaming == in memory |",
              "|---|---|---|---|---|---|---|---|"]
    for key in sorted(results):
        r = results[key]
        c = r["checks"]
        w = c["word_units"]
        lines.append(
            f"| {r['tokenizer']} | {r['lang']} | {c['family']['source']} → {c['family']['target']} | "
            f"{c['byte_tokens_matched_by_byte']}/{c['byte_tokens']} ({c['byte_tokens_row_is_that_byte']}) | "
            f"{c['exact_overlap']:,} | "
            f"{c['same_token_string']:,} | {w['same_words']}/{w['verses']} | {r['streaming_equals_in_memory']} |")
    if cross:
        lines += ["", "Exact overlap across spellings (a new tokenizer against a source vocabulary of the other "
                  "family: `▁de` = `Ġde` by bytes, never by string):", "",
                  "| new tokenizer vs source | by bytes | by token string |", "|---|---|---|"]
        lines += [f"| {k} | {v['by_bytes']:,} | {v['by_string']:,} |" for k, v in sorted(cross.items())]
    return "\n".join(lines)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    results, cross = saved.get("results", {}), saved.get("cross_spelling", {})
    if not args.rewrite:
        for name in args.tokenizers:
            for lang in args.langs:
                run(name, lang, args, results)
                (out / "results.json").write_text(json.dumps({"results": results, "cross_spelling": cross},
                                                             indent=2, ensure_ascii=False) + "\n")
        cross.update(cross_spelling(Path(args.work), list(REAL_TOKENIZERS), args.langs))
        (out / "results.json").write_text(json.dumps({"results": results, "cross_spelling": cross}, indent=2,
                                                     ensure_ascii=False) + "\n")
    text = table(results, cross)
    (out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
