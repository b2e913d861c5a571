"""The benchmark results, regenerated from the results files (never typed by hand).

Fills the generated blocks (``<!-- NAME: ... -->`` ... ``<!-- /NAME -->``) of benchmarks/RESULTS.md with every
table, and those of README.md with the short ones (the headline and the demo's output); the hand-written text
between the blocks is kept. Reads, under benchmarks/results/:

  * init_<lang>/ (initialisation, no training): every language at init (held-out bits per byte, sliding
    windows), and block vs sliding-window protocol where a run recorded both;
  * after_<lang>_seed<k>/ (the training budget, one run per seed): equal training tokens (compute) and equal
    training bytes (data), mean ± std over seeds; prior_after_<lang>_seed<k>/ adds the unigram prior;
  * init_prior_<lang>/: the unigram prior of the head at init, with and without (and the README's headline);
  * the dev-book runs of benchmarks/ablation.py (ablation*/, segmentation_ja/dev/), of init_methods.py
    --eval-split dev (prior_dev_after_es/) and of refit_prior.py (refit_prior_es_dev/);
  * translation/translation.json: zero-shot translation, chrF and BLEU per system;
  * demo/demo_es.txt: what ``transtok demo --lang es`` printed.

    python benchmarks/tables.py                           # RESULTS.md and README.md
    python benchmarks/tables.py --readme README.md --out tables.md   # also every table in one plain file
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
RESULTS_MD = Path(__file__).parent / "RESULTS.md"
README = Path(__file__).parents[1] / "README.md"
README_BLOCKS = ("headline", "demo")
"""The generated blocks the README holds; RESULTS.md holds them all."""
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


def source_prior(lang: str) -> float | None:
    """Held-out bits per byte of the source model with the unigram prior fitted on the training books
    (benchmarks/results/source_prior_<lang>/, refit_prior.py --split test), if run."""
    path = RESULTS / f"source_prior_{lang}" / "refit.json"
    if not path.is_file():
        return None
    rows = [r for r in json.loads(path.read_text())["rows"] if r["model"].startswith("source model")]
    return rows[0]["bpb_refit"] if rows and rows[0]["split"] == "test" else None


def prior_table(inits, priors) -> list[str]:
    """Held-out bits per byte at init with and without the unigram prior of the head, per language: the
    plain figures from init_<lang>, the prior's from init_prior_<lang> (same split, tokenizer cache, protocol),
    the source model's with the same prior from source_prior_<lang>."""
    plain = {r["lang"]: r for _, r in inits}
    lines = ["| language | source model | source model + unigram prior | trans-tokenization | **+ unigram prior** | "
             "FVT | FVT + unigram prior |", "|---|---|---|---|---|---|---|"]
    for _, r in priors:
        base = plain.get(r["lang"], {}).get("methods", {})

        def cell(methods, name):
            value = methods.get(name, {}).get("init")
            return "-" if value is None else f"{value:.3f}"

        calibrated = source_prior(r["lang"])
        lines.append(f"| {LANGS.get(r['lang'], r['lang'])} | {cell(r['methods'], 'source (own tokenizer)')} | "
                     f"{'-' if calibrated is None else f'{calibrated:.3f}'} | "
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


def headline_table(inits, priors) -> list[str]:
    """The README's few lines: held-out bits per byte at init of the source model, trans-tokenization and
    trans-tokenization with the unigram prior (today's default), one row per language with a prior run."""
    plain = {r["lang"]: r["methods"] for _, r in inits}
    calibrated = any(source_prior(r["lang"]) is not None for _, r in priors)
    lines = ["| language | source model, own tokenizer | "
             + ("+ the same unigram prior | " if calibrated else "")
             + "trans-tokenization | + unigram prior (q from 1,024 lines) |", "|---|---|---|---|" + ("---|" if calibrated else "")]
    for _, r in priors:
        values = [r["methods"].get("source (own tokenizer)", {}).get("init"),
                  *([source_prior(r["lang"])] if calibrated else []),
                  plain.get(r["lang"], {}).get("trans-tokenization", {}).get("init"),
                  r["methods"].get("trans-tokenization", {}).get("init")]
        best = min(v for v in values if v is not None)
        cells = ["-" if v is None else f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in values]
        lines.append(f"| {LANGS.get(r['lang'], r['lang'])} | " + " | ".join(cells) + " |")
    return lines


REFERENCES = ["source model, own tokenizer", "defaults"]


def dev_table(paths: list[str], settings: list[str] | None = None, extra: dict[str, str] | None = None,
              langs: tuple[str, ...] | None = None) -> list[str]:
    """Dev-book bits per byte at init from benchmarks/ablation.py runs (``ablation.json`` under each of
    ``paths``): one row per setting (``settings`` in that order, else as the runs list them), one column per
    language (``langs`` only, if given), plus a column per ``extra`` row key (e.g. ``fallback``). A (language,
    setting) scored by two runs keeps the first run's figure; only rows at the run's own stride are read.
    Without ``settings`` the source model and the defaults lead."""
    extra = extra or {}
    cells: dict[tuple[str, str], dict] = {}
    order: list[str] = []
    columns: list[str] = []
    for path in paths:
        saved = json.loads((RESULTS / path / "ablation.json").read_text())
        for row in saved["rows"]:
            if (row["stride"] != saved["args"]["stride"] or (langs is not None and row["lang"] not in langs)
                    or (settings is not None and row["setting"] not in settings)):
                continue
            cells.setdefault((row["lang"], row["setting"]), row)
            order += [row["setting"]] if row["setting"] not in order else []
            columns += [row["lang"]] if row["lang"] not in columns else []
    header = [f"{lang} {label}" for lang in columns for label in ["dev BPB", *extra.values()]]
    lines = ["| setting | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    if settings is None:  # the references first, as ablation.py's own table lists them
        order.sort(key=lambda setting: REFERENCES.index(setting) if setting in REFERENCES else len(REFERENCES))
    for setting in settings if settings is not None else order:
        values = []
        for lang in columns:
            row = cells.get((lang, setting), {})
            values.append(f"{row['dev_bpb']:.3f}" if row else "-")
            values += [f"{row[key]:,}" if key in row else "-" for key in extra]
        lines.append(f"| {setting} | " + " | ".join(values) + " |")
    return lines


def dev_after_table(runs) -> list[str]:
    """init_methods.py --eval-split dev runs (one per subdirectory): their prior strength, --join and lr, the
    dev figure at init, the training curve's evaluation points in between, and the end."""
    keys = ("unigram_prior", "join", "lr")
    lines = ["| run | unigram prior | --join | lr | dev BPB at init | curve (tokens: BPB) | after the budget |",
             "|---|---|---|---|---|---|---|"]
    for path, r in runs:
        tt = r["methods"]["trans-tokenization"]
        curve = ", ".join(f"{tokens:,}: {bpb:.3f}" for tokens, bpb in tt["curve"][1:-1]) or "-"
        args = [format(r["args"][k], "g") if isinstance(r["args"][k], float) else str(r["args"][k]) for k in keys]
        lines.append(f"| `{path.parent.name}/` | " + " | ".join(args) + f" | {tt['init']:.3f} | {curve} | "
                     f"{tt['final']:.3f} ({tt['tokens_trained']:,} tokens) |")
    return lines


def refit_table(saved: dict) -> list[str]:
    """benchmarks/refit_prior.py: a model's bits per byte as it is and with the unigram prior (re)fitted."""
    lines = ["| model | split | BPB | with the prior (re)fitted | refit seconds |", "|---|---|---|---|---|"]
    for row in saved["rows"]:
        lines.append(f"| {row['model']} | {row['split']} | {row['bpb']:.3f} | {row['bpb_refit']:.3f} | "
                     f"{row['refit_seconds']:.0f} |")
    return lines


def data_size_table(saved: dict) -> list[str]:
    """benchmarks/data_size.py: bits per byte at init against the number of training pairs, per language."""
    lines = ["| language | training pairs | target vocabulary | dev BPB | held-out BPB | transfer seconds |",
             "|---|---|---|---|---|---|"]
    for lang, entry in saved["languages"].items():
        name, source = LANGS.get(lang, lang), entry["source"]
        lines.append(f"| {name} | source model, own tokenizer | | {source['dev']['bits_per_byte']:.3f} | "
                     f"{source['test']['bits_per_byte']:.3f} | |")
        for p in sorted(entry["points"], key=lambda p: p["pairs"]):
            cells = [p["bits_per_byte"][split] for split in ("dev", "test")]
            shown = [f"**{v:.3f}**" if v < source[split]["bits_per_byte"] else f"{v:.3f}"
                     for v, split in zip(cells, ("dev", "test"))]
            lines.append(f"| {name} | {p['pairs']:,} | {p['vocab_size']:,} | {shown[0]} | {shown[1]} | "
                         f"{p['seconds']['transfer']:.0f} |")
    return lines


def prior_lines_table(dev: dict, test: dict | None) -> list[str]:
    """benchmarks/prior_lines.py: the prior's pass from N lines, its seconds against the alignment's, dev (and the
    held-out books at the chosen N)."""
    held = {(r["lang"], r["sample"]): r["bits_per_byte"] for r in (test or {}).get("rows", [])}
    lines = ["| language | lines | prior's seconds | alignment's seconds | prior / alignment | dev BPB | held-out BPB |",
             "|---|---|---|---|---|---|---|"]
    for r in dev["rows"]:
        out = held.get((r["lang"], r["sample"]))
        lines.append(f"| {LANGS.get(r['lang'], r['lang'])} | {r['sample']:,} | {r['prior_seconds']:.1f} | "
                     f"{r['align_seconds']:.1f} | {r['ratio']:.2f} | {r['bits_per_byte']:.4f} | "
                     f"{'' if out is None else f'{out:.4f}'} |")
    return lines


DEV_BLOCKS = {
    "dev_vocab": (["segmentation_ja/dev"], ["source model, own tokenizer", "vocabulary 8,000", "defaults",
                                            "vocabulary 32,000", "vocabulary 49,152", "vocabulary 64,000", "FVT",
                                            "vocabulary 49,152, FVT", "defaults [tokenizer words auto]",
                                            "FVT [tokenizer words auto]"], None, None,
                  "the target vocabulary's size; 'defaults' = 16,000 target tokens, that run's default (the Spanish "
                  "Bible supports 25,621, so its 32,000 and 64,000 rows stop there); '[tokenizer words auto]' = "
                  "merges kept inside ICU words"),
    "dev_mapping_es": (["ablation"], None, {"fallback": "rows on the mean fallback"}, None,
                       "every mapping setting around the defaults, Spanish, 16,000 target tokens, an earlier run "
                       "scored with the block protocol (non-overlapping windows of 512)"),
    "dev_mapping_ja": (["segmentation_ja/dev"], ["defaults", "top-k 1", "top-k 2", "top-k 8", "top-k all",
                                                 "sharpen 1", "sharpen 4", "confidence 1", "confidence 20",
                                                 "confidence 100", "copy prior 0", "copy prior 10", "copy prior 100",
                                                 "preserve norm"], None, ("ja",),
                       "every mapping setting around the defaults, Japanese, 16,000 target tokens"),
    "dev_arabic": (["ablation_ar"], None, None, None,
                   "every mapping setting around the defaults, Arabic, source-sized vocabulary (37,167 tokens)"),
    "dev_aligner": (["ablation_sliding", "ablation_aligner_ru"], None, None, None,
                    "the aligner; eflomal samples from system entropy, so '2nd draw' is the same setting aligned "
                    "again"),
    "dev_focus": (["ablation_focus"], None, {"fallback": "rows on the mean fallback"}, None,
                  "FOCUS's fastText min_count at the source-sized vocabulary (25,621 Spanish tokens)"),
    "dev_prior": (["ablation_prior"], None, None, None, "the strength of the unigram prior of the head"),
    "dev_prior_sample": (["ablation_prior_texts"], None, {"prior_seconds": "prior's seconds"}, None,
                         "the unigram prior's q (the model's mean next-token distribution) from fewer lines; "
                         "seconds on 2 CPU cores"),
}
"""Generated dev-book tables: name -> (ablation runs, settings (None: all), extra columns, languages (None: all),
what the table varies)."""


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
    """The generated blocks by name: 'headline' and 'demo' (README and RESULTS.md); 'tables' (every language at
    init, the protocols, after the budget), 'prior', 'translation', the dev-book tables of DEV_BLOCKS,
    'dev_after' and 'refit' (RESULTS.md). A block whose results files are absent is left out."""
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
            "on the head of every mapped method, and of the source model (from the training books' target side; "
            "the same split, tokenizers and windows as the six-language table; the source model's from "
            "benchmarks/results/source_prior_<lang>/, refit_prior.py --split test, q from 256 lines):", "",
            *prior_table(inits, priors), ""]
        out["headline"] = [
            "Held-out bits per byte (Jude + Revelation, never trained on; lower is better) before any training: "
            "SmolLM2-135M-Instruct reading each language with its own tokenizer (also with the same unigram prior "
            "of its head, fitted on the same training text: a calibration any model can take), and transferred to "
            "a new target tokenizer by trans-tokenization, without and with that prior:",
            "", *headline_table(inits, priors), ""]
    demo = RESULTS / "demo" / "demo_es.txt"
    if demo.is_file():
        out["demo"] = ["```", *demo.read_text(encoding="utf-8").strip("\n").splitlines(), "```"]
    for name, (paths, settings, extra, langs, what) in DEV_BLOCKS.items():
        if all((RESULTS / path / "ablation.json").is_file() for path in paths):
            out[name] = [f"Dev books (James .. 3 John), bits per byte at init, {what} "
                         f"({', '.join(f'benchmarks/results/{path}/' for path in paths)}):",
                         "", *dev_table(paths, settings, extra, langs), ""]
    dev_after = load("prior_dev_after_es/*/results.json")
    if dev_after:
        out["dev_after"] = ["Spanish dev books after the 102,400-token budget, trans-tokenization, seed 0 "
                            "(benchmarks/results/prior_dev_after_es/<run>/, init_methods.py --eval-split dev):",
                            "", *dev_after_table(dev_after), ""]
    refit = RESULTS / "refit_prior_es_dev" / "refit.json"
    if refit.is_file():
        out["refit"] = ["The unigram prior (re)fitted on a model, Spanish dev books "
                        "(benchmarks/results/refit_prior_es_dev/, benchmarks/refit_prior.py):",
                        "", *refit_table(json.loads(refit.read_text())), ""]
    data_size = RESULTS / "data_size" / "results.json"
    if data_size.is_file():
        saved = json.loads(data_size.read_text())
        out["data_size"] = [
            "Bits per byte at init (transfer's defaults, no training) against the number of training verse pairs "
            "(a seed-0 sample of the training books), dev and held-out books, windows of 512 moved by 128; bold: "
            "below the source model (benchmarks/data_size.py, benchmarks/results/data_size/, curve.png). The "
            "smallest size from which every larger one beats the source model on dev: "
            + ", ".join(f"{LANGS.get(lang, lang)} {entry.get('threshold_dev') or 'none measured'}"
                        for lang, entry in saved["languages"].items()) + ".", "", *data_size_table(saved), ""]
    prior_lines = RESULTS / "prior_lines" / "results.json"
    if prior_lines.is_file():
        dev = json.loads(prior_lines.read_text())
        test = RESULTS / "prior_lines" / "test" / "results.json"
        out["prior_lines"] = [
            "The unigram prior's q from 64, 128 or 256 training lines (its token frequencies count every line): the "
            "pass's seconds against the alignment's in the same transfer, and bits per byte on the dev books; the "
            f"held-out books for the chosen size only ({dev['machine']['cpu']}, {dev['machine']['cores']} cores, "
            "idle, fp32; benchmarks/prior_lines.py, benchmarks/results/prior_lines/):",
            "", *prior_lines_table(dev, json.loads(test.read_text()) if test.is_file() else None), ""]
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
    """``readme`` (any Markdown file) with the lines between ``<!-- NAME: ... -->`` and ``<!-- /NAME -->``
    replaced by each block."""
    for name, lines in blocks.items():
        opening = re.search(rf"^<!-- {name}: .*-->\n", readme, flags=re.M)
        closing = readme.find(f"<!-- /{name} -->")
        if opening is None or closing < opening.end():
            raise SystemExit(f"no '<!-- {name}: ... -->' ... '<!-- /{name} -->' block to fill")
        readme = readme[:opening.end()] + "\n".join(lines).strip("\n") + "\n" + readme[closing:]
    return readme


def fill(path: str | Path, blocks: dict[str, list[str]]) -> None:
    """Write ``blocks`` into the generated blocks of the Markdown file at ``path`` (each must be there)."""
    path = Path(path)
    try:
        path.write_text(paste(path.read_text(encoding="utf-8"), blocks), encoding="utf-8")
    except SystemExit as exc:
        raise SystemExit(f"{path}: {exc}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(RESULTS_MD), help="the results page to fill with every table "
                        "(default: benchmarks/RESULTS.md)")
    parser.add_argument("--readme", default=str(README), help=f"the README whose blocks {', '.join(README_BLOCKS)} "
                        "to fill (default: README.md)")
    parser.add_argument("--out", help="also write every table to this plain Markdown file")
    args = parser.parse_args(argv)
    blocks = sections()
    fill(args.results, blocks)
    fill(args.readme, {name: blocks[name] for name in README_BLOCKS if name in blocks})
    if args.out:
        text = ["# Benchmark tables (generated by benchmarks/tables.py from benchmarks/results/)", ""]
        for lines in blocks.values():
            text += lines
        Path(args.out).write_text("\n".join(text), encoding="utf-8")
    print(f"filled {len(blocks)} blocks in {args.results} and {', '.join(n for n in README_BLOCKS if n in blocks)} "
          f"in {args.readme}")


if __name__ == "__main__":
    main()
