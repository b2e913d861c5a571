"""The README's benchmark tables, regenerated from the results files (never typed by hand).

Reads benchmarks/results/init_<lang>/results.json (initialisation, no training), and
benchmarks/results/after_<lang>_seed<k>/results.json (the training budget, one run per seed), and writes
benchmarks/results/tables.md:

  * every language at init (held-out bits per byte, sliding windows);
  * block vs sliding-window protocol, where a run recorded both;
  * after the budget: equal training tokens (compute) and equal training bytes (data), mean ± std over seeds;
  * the unigram prior of the head at init (benchmarks/results/init_prior_<lang>/), with and without;
  * zero-shot translation (benchmarks/results/translation/translation.json), chrF and BLEU per system.

    python benchmarks/tables.py --readme README.md      # also fills the README's generated blocks
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
METHODS = ("source (own tokenizer)", "trans-tokenization", "fvt", "focus", "mean", "random")
NAMES = {"source (own tokenizer)": "source model", "trans-tokenization": "**trans-tokenization**", "fvt": "FVT",
         "focus": "FOCUS", "mean": "mean", "random": "random"}
LANGS = {"es": "Spanish", "ru": "Russian", "ar": "Arabic", "fa": "Persian", "hi": "Hindi", "bn": "Bengali",
         "ja": "Japanese", "de": "German", "fr": "French", "id": "Indonesian", "sw": "Swahili", "pt": "Portuguese"}


def load(pattern: str) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(RESULTS.glob(pattern)):
        saved = json.loads(path.read_text())
        for record in saved["results"]:
            out.append((path, {**record, "args": saved["args"]}))
    return out


UNSPACED = {"ja", "zh", "th", "km", "lo", "my"}
"""Languages written without spaces: tokens per whitespace "word" (a clause) means nothing there."""


def vocabulary(record: dict) -> int:
    """The target tokenizer's size: its tokens by provenance (all of them), else the size asked for (a
    tokenizer trained on a small text can stop short of it)."""
    for entry in record["methods"].values():
        if entry.get("provenance"):
            return sum(entry["provenance"].values())
    return record["args"]["vocab_size"]


def init_table(records) -> list[str]:
    present = [m for m in METHODS if any(m in r["methods"] for _, r in records)]
    lines = ["| language | new vocabulary | tokens per word (source → new) | "
             + " | ".join(NAMES[m] for m in present) + " | FOCUS rows on the mean fallback |",
             "|---|---|---|" + "---|" * len(present) + "---|"]
    for _, r in records:
        f = r["fertility"]
        best = min(e["init"] for e in r["methods"].values())
        cells = []
        for m in present:
            e = r["methods"].get(m)
            cells.append("-" if e is None else (f"**{e['init']:.3f}**" if e["init"] == best else f"{e['init']:.3f}"))
        focus = r["methods"].get("focus", {}).get("provenance", {})
        fallback = f"{focus['fallback']:,} of {sum(focus.values()):,}" if focus else "-"
        ratio = "n/a (no spaces)" if r["lang"] in UNSPACED else f"{f['source']:.2f} → {f['target']:.2f}"
        lines.append(f"| {LANGS.get(r['lang'], r['lang'])} ({r['lang']}) | {vocabulary(r):,} | {ratio} | "
                     + " | ".join(cells) + f" | {fallback} |")
    return lines


def protocol_table(records) -> list[str]:
    rows = [(r["lang"], name, e["init_by_stride"]) for _, r in records for name, e in r["methods"].items()
            if "init_by_stride" in e]
    if not rows:
        return []
    strides = sorted({int(k) for _, _, v in rows for k in v}, reverse=True)
    lines = ["| language | model | " + " | ".join("block (512)" if s == 512 else f"stride {s}" for s in strides)
             + " |", "|---|---|" + "---|" * len(strides)]
    for lang, name, by in rows:
        lines.append(f"| {lang} | {NAMES.get(name, name)} | " +
                     " | ".join(f"{by[str(s)]:.3f}" if str(s) in by else "-" for s in strides) + " |")
    gaps = {}
    for lang, name, by in rows:
        gaps.setdefault(lang, {})[name] = by
    for lang, models in gaps.items():
        src, tt = models.get("source (own tokenizer)"), models.get("trans-tokenization")
        if src and tt:
            lines.append(f"| {lang} | gap (source − trans-tokenization) | " + " | ".join(
                f"{src[str(s)] - tt[str(s)]:.3f}" if str(s) in src and str(s) in tt else "-" for s in strides) + " |")
    return lines


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def after_table(records, priors=()) -> list[str]:
    """One row per language of after_<lang>_seed<k> runs; with ``priors`` (prior_after_<lang>_seed<k> runs:
    the same settings plus the unigram prior) a column of trans-tokenization with the prior."""
    by_lang: dict[str, list[dict]] = {}
    for path, r in records:
        by_lang.setdefault(r["lang"], []).append(r)
    prior_runs: dict[str, list[dict]] = {}
    for path, r in priors:
        prior_runs.setdefault(r["lang"], []).append(r)
    names = ["source model, equal tokens", "source model, equal bytes", "**trans-tokenization**"]
    names += ["trans-tokenization + unigram prior"] if priors else []
    lines = ["| language | new vocabulary | seeds | budget | " + " | ".join(names + ["FVT", "FOCUS"]) + " |",
             "|---|---|---|---|" + "---|" * (len(names) + 2)]
    for lang, runs in by_lang.items():
        def cell(name, runs=runs):
            have = [r for r in runs if r["methods"].get(name, {}).get("final")]
            if not have:
                return "-"
            seeds = [r["args"]["seed"] for r in have]
            n = "" if seeds == [r["args"]["seed"] for r in by_lang[lang]] else \
                f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
            return mean_std([r["methods"][name]["final"] for r in have]) + n

        first = runs[0]
        tt = first["methods"].get("trans-tokenization", {})
        budget = f"{tt.get('tokens_trained', first['args']['budget']):,} tokens = {tt.get('bytes_trained', 0):,} bytes"
        src_bytes = first["methods"].get("source (own tokenizer), equal bytes", {})
        src_b = (f" ({src_bytes['tokens_trained']:,} tokens)" if src_bytes else "")
        lines.append(f"| {LANGS.get(lang, lang)} | {vocabulary(first):,} | "
                     f"{', '.join(str(r['args']['seed']) for r in runs)} | {budget} | "
                     f"{cell('source (own tokenizer)')} | {cell('source (own tokenizer), equal bytes')}{src_b} | "
                     f"{cell('trans-tokenization')} | "
                     + (f"{cell('trans-tokenization', prior_runs.get(lang, []))} | " if priors else "")
                     + f"{cell('fvt')} | {cell('focus')} |")
    return lines


def prior_table(inits, priors) -> list[str]:
    """Held-out bits per byte at init with and without the unigram prior of the head, per language: the
    plain figures from init_<lang>, the prior's from init_prior_<lang> (same split, tokenizer cache, protocol)."""
    plain = {r["lang"]: r for _, r in inits}
    lines = ["| language | source model | trans-tokenization | **+ unigram prior** | FVT | FVT + unigram prior |",
             "|---|---|---|---|---|---|"]
    for _, r in priors:
        base = plain.get(r["lang"], {}).get("methods", {})

        def cell(methods, name):
            value = methods.get(name, {}).get("init")
            return "-" if value is None else f"{value:.3f}"

        lines.append(f"| {LANGS.get(r['lang'], r['lang'])} | {cell(r['methods'], 'source (own tokenizer)')} | "
                     f"{cell(base, 'trans-tokenization')} | {cell(r['methods'], 'trans-tokenization')} | "
                     f"{cell(base, 'fvt')} | {cell(r['methods'], 'fvt')} |")
    return lines


SYSTEMS = {"a_source_model": "(a) source model, its own tokenizer",
           "b_hydra_mapped": "(b) Hydra, target vocabulary from the mapping (untrained)",
           "c_hydra_trained": "(c) Hydra, target vocabulary trained"}


def translation_table(saved: dict) -> list[str]:
    """benchmarks/translation.py's held-out run: chrF and BLEU per system, with what each system is."""
    lines = ["| system | chrF | BLEU | chrF β=1 | chrF β=0.5 | answer length / reference length | empty answers |",
             "|---|---|---|---|---|---|---|"]

    def cell(r, value, column):
        best = max(column(other) for other in saved["systems"])
        return f"**{value:.1f}**" if value == best else f"{value:.1f}"

    for r in saved["systems"]:
        by_beta = r.get("chrf_by_beta", {})
        betas = [cell(r, by_beta[b], lambda o, b=b: o["chrf_by_beta"][b]) if b in by_beta else "-" for b in ("1", "0.5")]
        ratio = (f"{r['mean_hypothesis_chars'] / r['mean_reference_chars']:.2f}" if "mean_reference_chars" in r
                 else "-")
        lines.append(f"| {SYSTEMS.get(r['system'], r['system'])} | {cell(r, r['chrf'], lambda o: o['chrf'])} | "
                     f"{cell(r, r['bleu'], lambda o: o['bleu'])} | {betas[0]} | {betas[1]} | {ratio} | "
                     f"{r['empty_hypotheses']} |")
    return lines


SAME_MODELS = ("vocab_size", "aligner", "segmenter", "stride", "eval_seq_len", "focus_min_count", "seed")


def fill_inits(inits, afters) -> None:
    """Init figures that a language's init run lacks (e.g. FOCUS, scored in its after-budget run) are taken
    from an after-budget run of the same models and protocol: its init figures are the same measurement."""
    for _, record in inits:
        for _, other in afters:
            if other["lang"] != record["lang"] or any(
                    other["args"].get(k) != record["args"].get(k) for k in SAME_MODELS):
                continue
            for name, entry in other["methods"].items():
                if name not in record["methods"] and name in METHODS and "init" in entry:
                    record["methods"][name] = {k: entry[k] for k in ("init", "tokens", "provenance") if k in entry}


def sections() -> dict[str, list[str]]:
    """The README's generated blocks by name: 'tables' (every language at init, the protocols, after the
    budget) and 'translation'."""
    inits = load("init_??/results.json")  # init_<lang>; the older init_methods_* runs used the block protocol
    order = list(LANGS)
    inits.sort(key=lambda pr: order.index(pr[1]["lang"]) if pr[1]["lang"] in order else 99)
    afters = load("after_*_seed*/results.json")
    fill_inits(inits, afters)

    def by_lang_seed(pr):
        return (order.index(pr[1]["lang"]) if pr[1]["lang"] in order else 99,
                int(re.search(r"seed(\d+)", str(pr[0])).group(1)))

    afters.sort(key=by_lang_seed)
    prior_afters = sorted(load("prior_after_*_seed*/results.json"), key=by_lang_seed)
    text = ["Held-out bits per byte (Jude + Revelation; lower is better) of SmolLM2-135M-Instruct (the Q4_1 GGUF, "
            "dequantised) transferred to each language, before any training; windows of 512 tokens moved by 128; "
            "'new vocabulary' = the size of the target tokenizer.",
            "", *init_table(inits), ""]
    protocol = protocol_table(inits)
    if protocol:
        text += ["Held-out bits per byte at init by evaluation protocol (windows of 512 tokens; block = "
                 "non-overlapping windows, each restarting cold):", "", *protocol, ""]
    if afters:
        text += ["After the training budget (embeddings + LM head; mean ± std over seeds where there are several). "
                 "Equal tokens: every model trains on the same number of tokens (equal compute; the new tokenizer "
                 "then reads more text). Equal bytes: the source model trains on as many bytes of text as the new "
                 "tokenizer's budget covers (equal data)."
                 + (" With the unigram prior: trans-tokenization with the prior of strength "
                    f"{', '.join(sorted({format(pr[1]['args']['unigram_prior'], 'g') for pr in prior_afters}))} "
                    "on its head "
                    "(benchmarks/results/prior_after_<lang>_seed<k>/; the same settings otherwise)."
                    if prior_afters else ""), "", *after_table(afters, prior_afters), ""]
    out = {"tables": text}
    priors = load("init_prior_??/results.json")
    if priors:
        priors.sort(key=lambda pr: order.index(pr[1]["lang"]) if pr[1]["lang"] in order else 99)
        strength = {pr[1]["args"]["unigram_prior"] for pr in priors}
        out["prior"] = [
            f"Held-out bits per byte at init with the unigram prior of strength {', '.join(f'{s:g}' for s in strength)} "
            "on the head of every mapped method (from the training books' target side; the same split, tokenizers "
            "and windows as the six-language table):", "", *prior_table(inits, priors), ""]
    translation = RESULTS / "translation" / "translation.json"
    if translation.is_file():
        saved = json.loads(translation.read_text())
        settings = saved["settings"]
        out["translation"] = [
            f"Zero-shot {settings['source_lang']}→{settings['target_lang']} translation of {settings['limit']} "
            f"held-out verses (benchmarks/translation.py; repetition penalty {settings['repetition_penalty']}, "
            f"no-repeat n-gram {settings['no_repeat_ngram'] or 'off'}, stop at the first line break: "
            f"{settings['stop_at_newline']}; sacrebleu {saved['systems'][0]['chrf_signature']}):",
            "", *translation_table(saved), ""]
    return out


def paste(readme: str, blocks: dict[str, list[str]]) -> str:
    """``readme`` with the lines between ``<!-- NAME: ... -->`` and ``<!-- /NAME -->`` replaced by each block."""
    for name, lines in blocks.items():
        opening = re.search(rf"^<!-- {name}: .*-->\n", readme, flags=re.M)
        closing = readme.find(f"<!-- /{name} -->")
        if opening is None or closing < opening.end():
            raise SystemExit(f"the README has no '<!-- {name}: ... -->' ... '<!-- /{name} -->' block to fill")
        readme = readme[:opening.end()] + "\n".join(lines).strip("\n") + "\n" + readme[closing:]
    return readme


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(RESULTS / "tables.md"))
    parser.add_argument("--readme", help="also fill this README's generated blocks (e.g. README.md)")
    args = parser.parse_args()
    blocks = sections()
    text = ["# Benchmark tables (generated by benchmarks/tables.py from benchmarks/results/)", ""]
    for lines in blocks.values():
        text += lines
    Path(args.out).write_text("\n".join(text))
    print("\n".join(text))
    if args.readme:
        Path(args.readme).write_text(paste(Path(args.readme).read_text(), blocks))


if __name__ == "__main__":
    main()
