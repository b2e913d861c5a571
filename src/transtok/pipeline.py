"""The path-taking layer: each verb reads its inputs, runs the object-level steps of :mod:`transtok.steps`
and writes one output directory atomically. ``transfer`` runs the same steps as ``align``, ``map`` and
``transplant`` and writes the same provenance (:func:`write_provenance`). The CLI calls these; so can scripts."""
from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from transtok import __version__
from transtok.align import AlignmentCounts
from transtok.artifacts import (PROVENANCE_DIR, SOURCE_TOKENIZER_DIR, TARGET_TOKENIZER_DIR, atomic_output_dir,
                                check_output_dir, scratch_dir, write_json)
from transtok.calibration import (DEFAULT_PAIRS, DEFAULT_PRIOR, DEFAULT_PRIOR_TEXTS, passes_in_bf16,
                                  resolve_offset, resolve_prior)
from transtok.checks import check_number, pick_bf16, pick_device
from transtok.diskspace import check_free_space
from transtok.errors import ConfigError, MismatchError
from transtok.focus import FocusConfig
from transtok.loading import load_model
from transtok.progress import duration, timings
from transtok.mapping import (PROVENANCE, MappingConfig, MappingReport, TokenMapping, provenance_counts,
                              resolve_config)
from transtok.options import option
from transtok.steps import (align_corpus, corpus_stream, give_vocabulary, mapping_from_alignment, offset_report,
                            offset_sample, read_corpus)
from transtok.surgery import check_vocabularies
from transtok.vocabulary import vocab_hash

logger = logging.getLogger(__name__)

MODES = ("replace", "extend")


def write_mapping_table(path: Path, mapping: TokenMapping, source_tokenizer, target_tokenizer, top: int = 5) -> None:
    """A human-readable TSV: target token, provenance, its top source partners with weights."""
    matrix = mapping.matrix.tocsr()
    target_tokens = target_tokenizer.convert_ids_to_tokens(list(range(mapping.shape[0])))
    source_tokens = source_tokenizer.convert_ids_to_tokens(list(range(mapping.shape[1])))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("target_id\ttarget_token\tprovenance\tfallback_weight\tpartners\n")
        for t in range(mapping.shape[0]):
            start, end = matrix.indptr[t], matrix.indptr[t + 1]
            order = np.argsort(-matrix.data[start:end], kind="stable")[:top]
            partners = " ".join(f"{source_tokens[matrix.indices[start + k]]}:{matrix.data[start + k]:.3f}" for k in order)
            handle.write(f"{t}\t{target_tokens[t]}\t{PROVENANCE[mapping.provenance[t]]}\t"
                         f"{mapping.residual[t]:.3f}\t{partners}\n")


def save_mapping_dir(directory: Path, mapping: TokenMapping, report: MappingReport | dict | None, source_tokenizer,
                     target_tokenizer) -> None:
    """A mapping directory as ``transtok map`` writes it: the mapping, its report (when known), a readable
    ``mapping.tsv`` and both tokenizers."""
    mapping.save(directory)
    if report is not None:
        write_json(directory / "mapping_report.json", report.to_dict() if isinstance(report, MappingReport) else report)
    write_mapping_table(directory / "mapping.tsv", mapping, source_tokenizer, target_tokenizer)
    source_tokenizer.save_pretrained(directory / SOURCE_TOKENIZER_DIR)
    target_tokenizer.save_pretrained(directory / TARGET_TOKENIZER_DIR)


# --- provenance: one schema for every verb that writes a model -----------------------------------------------------
def provenance_record(verb: str, settings: dict, *, source_tokenizer, target_tokenizer, offset: float,
                      prior: float, device, precision: str | bool | None) -> dict:
    """``transtok/config.json``: ``verb``, its resolved ``settings``, the language offset δ and the prior's
    strength it applied (0: none), where and how their passes ran, the versions and both vocabularies' hashes."""
    return {**settings, "verb": verb, "new_token_offset": offset, "unigram_prior": prior, "device": str(device),
            "precision": "bf16" if passes_in_bf16(precision, device) else "fp32", "transtok_version": __version__,
            "python": platform.python_version(), "source_vocab_hash": vocab_hash(source_tokenizer),
            "target_vocab_hash": vocab_hash(target_tokenizer)}


def write_provenance(directory: Path, record: dict, mapping: TokenMapping, source_tokenizer, target_tokenizer, *,
                     report: MappingReport | dict | None = None, counts: AlignmentCounts | None = None,
                     extension: dict | None = None, offset: dict | None = None, prior: dict | None = None,
                     card: str | None = None) -> Path:
    """The provenance folder ``directory/transtok/`` of a model that ``transfer`` or ``transplant`` wrote, in
    one schema (what a verb did not make is left out):

    * ``config.json``: ``record`` (:func:`provenance_record`);
    * ``mapping/``: the mapping as ``transtok map`` writes it (:func:`save_mapping_dir`);
    * ``mapping_report.json``: what each target row was built from;
    * ``alignment/``: the alignment counts (``counts``);
    * ``extension.json``: the extended tokenizer's report;
    * ``offset.json`` / ``unigram_prior.json``: the language offset and the unigram prior, when applied;

    and ``card`` as the model card ``directory/README.md``. Returns the folder."""
    provenance = directory / PROVENANCE_DIR
    provenance.mkdir()
    report = report.to_dict() if isinstance(report, MappingReport) else report
    save_mapping_dir(provenance / "mapping", mapping, report, source_tokenizer, target_tokenizer)
    if report is not None:
        write_json(provenance / "mapping_report.json", report)
    if counts is not None:
        counts.save(provenance / "alignment")
    for name, content in (("extension.json", extension), ("offset.json", offset), ("unigram_prior.json", prior)):
        if content is not None:
            write_json(provenance / name, content)
    write_json(provenance / "config.json", record)
    if card is not None:
        (directory / "README.md").write_text(card, encoding="utf-8")
    return provenance


# --- the verbs ------------------------------------------------------------------------------------------------------
def run_align(source_model: str, target_tokenizer_path: str, parallel: list[str], output: str, *,
              aligner: str = "eflomal", segmenter: str = "auto", overwrite: bool = False,
              chunk_size: int = 200_000,
              clean: bool = True, max_pairs: int | None = None, dedupe: bool = True,
              max_length_ratio: float | None = 3.0, shard: str | None = None) -> AlignmentCounts:
    """``transtok align``: tokenizers + parallel corpus → alignment directory (counts + both tokenizers).

    The corpus is streamed in chunks of ``chunk_size`` pairs, cleaned chunk by chunk, and with
    ``shard="K/N"`` only its K-th of N contiguous blocks is aligned (merge the outputs with
    ``transtok merge-alignments``). ``clean=False`` turns deduplication and the ratio test off.
    """
    from transtok.loading import load_tokenizer

    inputs = [source_model, target_tokenizer_path, *parallel]
    check_output_dir(output, overwrite=overwrite, inputs=inputs)
    source_tokenizer = load_tokenizer(source_model)
    target_tokenizer = load_tokenizer(target_tokenizer_path)
    stream = corpus_stream(parallel, clean=clean, dedupe=dedupe, max_length_ratio=max_length_ratio,
                           max_pairs=max_pairs, chunk_size=chunk_size, shard=shard)
    with scratch_dir(output) as scratch:
        counts = align_corpus(stream, source_tokenizer, target_tokenizer, aligner=aligner, segmenter=segmenter,
                              chunk_size=chunk_size, work_dir=scratch)
    with atomic_output_dir(output, overwrite=overwrite, inputs=inputs) as tmp:
        counts.save(tmp)
        source_tokenizer.save_pretrained(tmp / SOURCE_TOKENIZER_DIR)
        target_tokenizer.save_pretrained(tmp / TARGET_TOKENIZER_DIR)
    return counts


def run_map(alignment: str | Sequence[str] | None, output: str, *, config: MappingConfig, overwrite: bool = False,
            source_model: str | None = None, target_tokenizer_path: str | None = None,
            alignment_weights: Sequence[float] | None = None, target_text: Sequence[str] | None = None,
            focus: FocusConfig | None = None) -> MappingReport:
    """``transtok map``: alignment directory → mapping directory (mapping, report, table, tokenizers).

    ``--init focus`` trains its fastText model on ``target_text`` files (one segment per line).

    Several alignment directories (e.g. en→tt and ru→tt, both tokenized with the same source model's
    tokenizer) give one mapping each, averaged with ``alignment_weights`` (multi-source initialisation).
    """
    from transtok.corpus import read_texts
    from transtok.loading import load_tokenizer

    alignments = [alignment] if isinstance(alignment, (str, os.PathLike)) else list(alignment or [])
    inputs = [*alignments, source_model, target_tokenizer_path, *(target_text or ()),
              focus.fasttext_model if focus else None]
    check_output_dir(output, overwrite=overwrite, inputs=inputs)
    if alignment_weights is not None and len(alignment_weights) != len(alignments):
        raise ConfigError(f"`alignment_weights` has {len(alignment_weights)} values for {len(alignments)} "
                          "alignment directories; give one weight per directory")
    for weight in alignment_weights or ():
        check_number("`alignment_weights`", weight, low=0, hint="relative weights; equal by default")
    if alignment_weights is not None and not sum(alignment_weights) > 0:
        raise ConfigError(f"`alignment_weights` {' '.join(map(str, alignment_weights))} are all 0; give at least one "
                          "positive weight")
    for directory in alignments:
        if not (Path(directory) / "alignment.json").is_file():
            raise ConfigError(f"`alignment` {str(directory)!r} is not an alignment directory (it has no alignment.json); "
                              "give a directory written by 'transtok align'")
    if alignments:
        source_tokenizer = load_tokenizer(str(Path(alignments[0]) / SOURCE_TOKENIZER_DIR))
        target_tokenizer = load_tokenizer(str(Path(alignments[0]) / TARGET_TOKENIZER_DIR))
    elif source_model and target_tokenizer_path:
        source_tokenizer, target_tokenizer = load_tokenizer(source_model), load_tokenizer(target_tokenizer_path)
    else:
        raise ConfigError("give `alignment` DIR (from 'transtok align'), or `source_model` and `target_tokenizer_path` "
                          "for methods that need no alignment (`init` fvt, mean, random, focus)")
    if not alignments and config.init == "trans-tokenization":
        raise ConfigError("`init` trans-tokenization needs `alignment` DIR from 'transtok align'")
    if config.init != "trans-tokenization":
        alignments = alignments[:1]
    if config.init == "focus" and not target_text and not (focus and focus.fasttext_model):
        raise ConfigError("`init` focus needs target-language text to train its fastText model: give "
                          "`target_text` FILE (e.g. the target side of the parallel corpus), or `focus.fasttext_model` BIN")
    texts = read_texts(target_text) if config.init == "focus" and target_text else None
    built = [mapping_from_alignment(source_tokenizer, target_tokenizer,
                                    AlignmentCounts.load(a) if config.init == "trans-tokenization" else None, config,
                                    target_texts=texts, focus=focus)
             for a in (alignments or [None])]
    mapping, report = built[0]
    if len(built) > 1:
        mapping = TokenMapping.combine([m for m, _ in built], alignment_weights)
        report = dataclasses.replace(report, provenance=provenance_counts(mapping.provenance),
            config={**report.config, "alignments": [str(a) for a in alignments],
                    "alignment_weights": mapping.config["weights"]})
    with atomic_output_dir(output, overwrite=overwrite, inputs=inputs) as tmp:
        save_mapping_dir(tmp, mapping, report, source_tokenizer, target_tokenizer)
    return report


def run_transplant(source_model: str, mapping_dir: str, output: str, *, overwrite: bool = False,
                   dtype: str = "auto", in_memory: bool = False, hardlink: bool = False,
                   new_token_offset: float | None = None, parallel: Sequence[str] | None = None,
                   offset_pairs: int | None = None, unigram_prior: float | None = None, device: str | None = None,
                   precision: str = "auto") -> Path:
    """``transtok transplant``: source model + mapping directory → HF checkpoint with the target vocabulary.

    Safetensors checkpoints are edited without loading the model (:mod:`transtok.checkpoint`);
    other formats, or ``in_memory=True``, load the model and run :func:`transtok.steps.give_vocabulary`,
    the step ``transfer`` runs.

    A mapping with separate LM-head rows (an extended vocabulary) can also get the language offset
    of :mod:`transtok.calibration`, computed on a sample of the ``parallel`` corpus:
    ``new_token_offset`` δ (None: :data:`~transtok.calibration.DEFAULT_OFFSET` when ``parallel`` is
    given, else none). The streaming path writes the checkpoint, loads it once to compute the
    offset (the forward pass needs the model) and rewrites only the shard that holds the head.

    A replaced vocabulary gets the head's unigram prior of ``transfer`` from the target side of
    ``parallel`` (``unigram_prior``; None: :data:`~transtok.calibration.DEFAULT_PRIOR` when ``parallel``
    is given, else none); it unties a tied head, so that path loads the model in memory.
    ``parallel`` is cleaned as ``transfer`` and ``align`` clean it by default (:func:`transtok.steps.read_corpus`).
    ``device`` / ``precision``: where and how the offset's and the prior's forward passes run
    (default: CUDA when available, bf16 where the device computes it natively).
    """
    from transtok.calibration import language_offset, log_offset
    from transtok.checkpoint import (UnsupportedCheckpoint, inspect_checkpoint, offset_head_rows,
                                     transplant_checkpoint, transplant_size)
    from transtok.extension import extends
    from transtok.loading import load_causal_lm, load_tokenizer

    if offset_pairs is not None:
        check_number("`offset_pairs`", offset_pairs, low=1, integer=True, hint="pairs")
    device = pick_device(device)
    passes_in_bf16(precision, device)  # a bad precision fails before the work
    inputs = [source_model, mapping_dir, *(parallel or ())]
    check_output_dir(output, overwrite=overwrite, inputs=inputs)
    mapping = TokenMapping.load(mapping_dir)
    delta = resolve_offset(new_token_offset, head_rows=mapping.head is not None, texts=bool(parallel))
    if mapping.head is not None and not delta and new_token_offset is None:
        logger.info("no `parallel` text: the new LM-head rows get no language offset (give `parallel` FILE for "
                    "the default of the extension recipe)")
    target_tokenizer = load_tokenizer(str(Path(mapping_dir) / TARGET_TOKENIZER_DIR))
    # The mapping's copy of the source tokenizer ('transtok map' writes one), else the source model's.
    source_copy = Path(mapping_dir) / SOURCE_TOKENIZER_DIR
    replaced = not extends(load_tokenizer(str(source_copy if source_copy.is_dir() else source_model)),
                           target_tokenizer)
    strength = resolve_prior(unigram_prior, replaced=replaced, texts=bool(parallel))
    if replaced and not strength and unigram_prior is None:
        logger.info("no `parallel` text: the LM head gets no unigram prior (give `parallel` FILE, the training "
                    "corpus, for the default of 'transfer')")
    corpus = read_corpus(parallel).pairs if delta or strength else None  # read before loading: a bad file fails fast
    sample = offset_sample(corpus, offset_pairs) if delta else None
    if strength and not in_memory:
        logger.info("the unigram prior needs a forward pass and unties a tied head: loading the whole model")
        in_memory = True
    layout = None
    if not in_memory:
        try:
            layout = inspect_checkpoint(source_model, dtype=dtype)
        except UnsupportedCheckpoint as exc:
            logger.warning("loading the whole model instead of editing the checkpoint: %s", exc)
    offset = prior = None
    if layout is None:
        model, source_tokenizer = load_model(source_model, dtype=dtype)
        made = give_vocabulary(model, mapping, target_tokenizer, source_tokenizer=source_tokenizer, offset=delta,
                               offset_corpus=corpus, offset_pairs=offset_pairs, prior=strength,
                               prior_texts=corpus.target if strength else None, device=device, precision=precision)
        offset, prior = made.offset_report(), made.prior_report()
    else:
        source_tokenizer = load_tokenizer(str(layout.directory))
        check_vocabularies(mapping, target_tokenizer, source_tokenizer)  # a wrong mapping before a size from it
    check_free_space(Path(output).parent, model_bytes(model) if layout is None else
                     transplant_size(layout, mapping, Path(output).parent, hardlink=hardlink),
                     what="the transplanted checkpoint", overwrite=overwrite)
    settings = {"source_model": source_model, "mapping_dir": str(mapping_dir), "mapping": mapping.config,
                "parallel": [str(p) for p in parallel] if parallel else None,
                "offset_pairs": DEFAULT_PAIRS if offset_pairs is None else offset_pairs,
                "dtype": dtype, "hardlink": hardlink, "path": "in-memory" if layout is None else "streaming"}
    with atomic_output_dir(output, overwrite=overwrite, inputs=inputs) as tmp:
        if layout is None:
            save_checkpoint(tmp, model, target_tokenizer)
        else:
            transplant_checkpoint(layout, mapping, target_tokenizer, tmp, source_tokenizer=source_tokenizer,
                                  hardlink=hardlink)
            if sample is not None:  # the offset's forward passes need the written model
                written = load_causal_lm(tmp, dtype="auto").eval()
                vector = language_offset(written, target_tokenizer, *sample, delta, device=device, bf16=precision)
                del written
                offset_head_rows(tmp, vector.vector, mapping.shape[1], mapping.shape[0])
                log_offset(vector, mapping.shape[0] - mapping.shape[1])
                offset = offset_report(vector, len(sample[0]))
        write_provenance(tmp, provenance_record("transplant", settings, source_tokenizer=source_tokenizer,
                                                target_tokenizer=target_tokenizer, offset=delta, prior=strength,
                                                device=device, precision=precision),
                         mapping, source_tokenizer, target_tokenizer, report=_saved_report(mapping_dir),
                         offset=offset, prior=prior)
    return Path(output)


def _saved_report(mapping_dir: str | os.PathLike) -> dict | None:
    """The report ``transtok map`` wrote beside the mapping, for the provenance; None when there is none
    or it is not JSON (the mapping itself was read and checked)."""
    from transtok.artifacts import read_json

    path = Path(mapping_dir) / "mapping_report.json"
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except ValueError as exc:
        logger.warning("%s is not JSON (%s): the provenance leaves the mapping's report out", path, exc)
        return None


def model_bytes(model) -> int:
    """Bytes of the parameters ``save_pretrained`` writes (a tied table once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def save_checkpoint(directory: Path, model, tokenizer) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


ENOUGH_PAIRS = 5_000
"""Parallel pairs from which an untrained transfer read the dev books better than the source model in
benchmarks/data_size.py (SmolLM2-135M, Bible verses, Spanish and Russian: below it the transfer read them
worse, e.g. 1,000 pairs: 2.13 against 1.88 bits per byte in Spanish); ``transfer`` warns below it."""


@dataclass
class TransferConfig:
    """Everything ``transtok transfer`` needs; saved resolved into the output's provenance folder."""

    source_model: str = option(flag="--model", aliases=("--source-model",), metavar="M", group="input",
                               help="source model: directory or hub id")
    parallel: list[str] = option(metavar="FILE", group="input", help="TSV (source<TAB>target), JSONL (source/target "
                                                                     "keys), or two line-aligned text files")
    output: str
    target_tokenizer: str | None = option(None, metavar="T", group="input", exclusive="target",
                                          help="an existing target tokenizer (replace), or one made by "
                                               "'train-tokenizer --extend' (extend)")
    target_corpus: list[str] | None = option(None, flag="--text", aliases=("--target-corpus",), metavar="FILE",
                                             group="input", exclusive="target",
                                             help="target-language text to train one on (extend: default the "
                                                  "parallel corpus's target side)")
    vocab_size: int | None = option(None, metavar="N", help="trained vocabulary size (default: the source model's, "
                                                            "or fewer where the text supports fewer merges)")
    """--mode replace with ``target_corpus``: target vocabulary size; None: the source model's (fewer when
    the text supports fewer merges)."""
    keep_reserved_tokens: bool = False
    """--mode replace with ``target_corpus``: keep the source's reserved special tokens (Gemma's ``<unusedN>``,
    :func:`transtok.tokenizer.unused_special_tokens`) in the trained tokenizer; by default they are left out."""
    mode: str = option("replace", choices=MODES, metavar="MODE",
                       help="replace (a new target vocabulary: the model reads the target language only) or extend "
                            "(the source vocabulary plus --new-tokens target tokens) (default: %(default)s)")
    """replace: a new vocabulary of --vocab-size tokens; extend: the source's plus --new-tokens."""
    new_tokens: int | None = option(None, metavar="N", help="tokens to add to the source vocabulary (--mode extend)")
    aligner: str = "eflomal"
    segmenter: str = "auto"
    """Word boundaries for text written without spaces (transtok.segment.SEGMENTERS)."""
    mapping: MappingConfig = field(default_factory=MappingConfig)
    new_token_offset: float | None = None
    """--mode extend with separate head rows: the language offset δ of the new head rows
    (:mod:`transtok.calibration`); None: :data:`~transtok.calibration.DEFAULT_OFFSET`, 0: none."""
    offset_pairs: int = DEFAULT_PAIRS
    """Pairs of the (cleaned) parallel corpus sampled for the offset."""
    unigram_prior: float | None = None
    """--mode replace: strength of the head's unigram prior from the parallel corpus's target side
    (:func:`transtok.calibration.apply_unigram_prior`; unties a tied head); None:
    :data:`~transtok.calibration.DEFAULT_PRIOR` for a replaced vocabulary, none for an extended one; 0: none."""
    focus: FocusConfig | None = None
    """Options of ``--init focus`` (its fastText model trains on the ``target_corpus`` text, else on
    the parallel corpus's target side)."""
    dtype: str = "auto"
    device: str | None = None
    """Where the offset's and the prior's forward passes run: None / 'auto' = CUDA when available, else the CPU."""
    precision: str = "auto"
    """Those passes in bf16 autocast or fp32; auto = bf16 on a GPU that computes it natively, fp32 on the CPU."""
    max_pairs: int | None = None
    dedupe: bool = True
    max_length_ratio: float | None = 3.0
    overwrite: bool = False

    def __post_init__(self) -> None:
        from transtok.segment import SEGMENTERS
        if self.segmenter not in SEGMENTERS:
            raise ConfigError(f"unknown segmenter {self.segmenter!r}; choose one of {', '.join(SEGMENTERS)}")
        if self.mode not in MODES:
            raise ConfigError(f"`mode` {self.mode!r} is not a mode; choose one of {', '.join(MODES)}")
        check_number("`offset_pairs`", self.offset_pairs, low=1, integer=True, hint="pairs")
        for flag, count in (("`vocab_size`", self.vocab_size), ("`new_tokens`", self.new_tokens)):
            if count is not None:  # the range, which depends on --mode, is checked below
                check_number(flag, count, integer=True)
        if self.max_pairs is not None:
            check_number("`max_pairs`", self.max_pairs, low=1, integer=True, hint="or omitted for all pairs")
        if self.max_length_ratio is not None:
            check_number("`max_length_ratio`", self.max_length_ratio, low=1,
                         hint="or 0 at the command line, None in Python, to disable")
        from transtok.calibration import check_offset, check_prior
        if self.unigram_prior is not None:
            check_prior(self.unigram_prior)
        if self.new_token_offset is not None:
            check_offset(self.new_token_offset)
        if self.keep_reserved_tokens and (self.mode == "extend" or self.target_tokenizer is not None):
            raise ConfigError("`keep_reserved_tokens` applies to a tokenizer trained on `target_corpus` with `mode` "
                              "replace (an extended tokenizer keeps every source token, a `target_tokenizer` has its "
                              "own); drop it")
        if self.mode == "extend":
            if self.unigram_prior:
                raise ConfigError("`unigram_prior` is for `mode` replace (it moves every head row; an extended model "
                                  "keeps its source rows and has `new_token_offset`); drop it, or use `mode` replace")
            resolve_offset(self.new_token_offset, head_rows=not self.mapping.tied_head)
            if self.target_tokenizer is None and (self.new_tokens is None or self.new_tokens <= 0):
                raise ConfigError(f"`mode` extend needs a positive `new_tokens` N (tokens added to the source "
                                  f"vocabulary), got {self.new_tokens}; or give an extended `target_tokenizer`")
            if self.vocab_size is not None:
                raise ConfigError("`vocab_size` is for `mode` replace; with `mode` extend give `new_tokens` N")
            return
        if self.new_tokens is not None:
            raise ConfigError("`new_tokens` is for `mode` extend; with `mode` replace give `vocab_size` N "
                              "(or add `mode` extend)")
        for flag, given in (("`tied_head`", self.mapping.tied_head),
                            ("`head_spelling_weight`", self.mapping.head_spelling_weight is not None),
                            ("`new_token_offset`", bool(self.new_token_offset))):
            if given:
                raise ConfigError(f"{flag} is for `mode` extend (the new LM-head rows); drop it, or add `mode` extend")
        if (self.target_tokenizer is None) == (self.target_corpus is None):
            raise ConfigError("give exactly one of `target_tokenizer` DIR or `target_corpus` FILE")
        if self.target_corpus is not None and self.vocab_size is not None and self.vocab_size <= 0:
            raise ConfigError(f"`vocab_size` must be a positive number of tokens, got {self.vocab_size}; or leave it "
                              "out for the source model's size")
        if self.target_tokenizer is not None and self.vocab_size is not None:
            raise ConfigError(f"`vocab_size` {self.vocab_size} applies only to a tokenizer trained on `target_corpus`; "
                              f"`target_tokenizer` {self.target_tokenizer} already has its vocabulary: drop `vocab_size`")


# --- the command line's declarations of the path-level functions' own parameters -------------------
# (the settings they share with transfer are declared once: TransferConfig, WordAlignment, Cleaning, ...)

@dataclass
class AlignOptions:
    """:func:`run_align`'s parameters that ``transtok align`` alone has (the model and the corpus are
    :class:`TransferConfig`'s)."""

    target_tokenizer_path: str = option(flag="--target-tokenizer", metavar="T", group="input",
                                        help="target tokenizer directory")
    shard: str | None = option(None, metavar="K/N", group="advanced",
                               help="align only the K-th of N contiguous blocks of the corpus (1 <= K <= N), e.g. one "
                                    "task of an array job; sum the outputs with 'transtok merge-alignments'")
    chunk_size: int = option(200_000, metavar="PAIRS", group="advanced",
                             help="pairs read, cleaned and aligned at a time; bounds memory (default: %(default)s)")


@dataclass
class MapOptions:
    """:func:`run_map`'s parameters, as ``transtok map`` declares them (the method is :class:`MappingConfig`)."""

    alignment: list[str] | None = option(None, metavar="DIR", group="input",
                                         help="alignment directory from 'transtok align'; several (e.g. en->tt and "
                                              "ru->tt made with the same tokenizers) are averaged: multi-source "
                                              "initialisation")
    alignment_weights: list[float] | None = option(None, metavar="W", group="advanced",
                                                   help="one weight per --alignment directory (default: equal)")
    source_model: str | None = option(None, flag="--model", aliases=("--source-model",), metavar="M", group="input",
                                      help="source tokenizer, for methods without alignment")
    target_tokenizer_path: str | None = option(None, flag="--target-tokenizer", metavar="T", group="input",
                                               help="target tokenizer, for methods without alignment")
    target_text: list[str] | None = option(None, flag="--text", aliases=("--target-text",), metavar="FILE",
                                           group="input", help="target-language text, one segment per line, for "
                                                               "--init focus")


@dataclass
class TransplantOptions:
    """:func:`run_transplant`'s own parameters, as ``transtok transplant`` declares them."""

    mapping_dir: str = option(flag="--mapping", metavar="DIR", group="input", help="mapping directory from "
                                                                                   "'transtok map'")
    parallel: list[str] | None = option(None, metavar="FILE", group="input",
                                        help="the training parallel corpus (TSV, JSONL or two text files), read for "
                                             "the language offset of an extended vocabulary or the unigram prior of a "
                                             "replaced one")
    in_memory: bool = option(False, group="advanced",
                             help="load the whole model instead of editing its safetensors shards (the default reads "
                                  "and writes only the embedding and LM-head tensors; other formats are loaded anyway)")
    hardlink: bool = option(False, group="advanced",
                            help="hard-link the shards that need no change instead of copying them (fast, no extra "
                                 "disk; the output then shares those files with the source: never write into them in "
                                 "place)")


@dataclass
class CalibrateOptions:
    """:func:`calibrate`'s parameters, as ``transtok calibrate`` declares them."""

    model_dir: str = option(flag="--model", metavar="M", group="input",
                            help="model directory or hub id (with its tokenizer)")
    texts_files: list[str] = option(flag="--text", metavar="FILE", group="input",
                                    help="text in the model's (target) language, one segment per line: training "
                                         "text, never the dev or test text you score on")
    strength: float = option(DEFAULT_PRIOR, metavar="S",
                             help="1 = one full step towards the text's frequencies (default: %(default)s)")
    sample: int = option(DEFAULT_PRIOR_TEXTS, flag="--prior-samples", metavar="N", group="advanced",
                         help="texts sampled (seed 0) for the model's mean prediction; the frequencies count all "
                              "(default: %(default)s)")
    rows: str = option("auto", flag="--all-rows", const="all",
                       help="extended model: move the source tokens' rows too (default: only the new tokens' rows)")


@dataclass
class TransferResult:
    output: Path
    report: MappingReport
    alignment_stats: dict
    seconds: dict
    extension: dict | None = None
    """The :class:`~transtok.extension.ExtensionReport` (as a dict) of ``--mode extend``."""
    offset: dict | None = None
    """The language offset's report (:meth:`transtok.calibration.LanguageOffset.report`), if applied."""


def transfer(config: TransferConfig) -> TransferResult:
    """Train (or load) the target tokenizer, then the steps of ``align``, ``map`` and ``transplant``
    (:mod:`transtok.steps`) on the model in memory; write checkpoint + provenance (:func:`write_provenance`)."""
    from transtok.corpus import read_texts
    from transtok.extension import extends

    device = pick_device(config.device)
    pick_bf16(config.precision, device)  # a bad precision fails before the work
    inputs = [config.source_model, *config.parallel, config.target_tokenizer, *(config.target_corpus or ()),
              config.focus.fasttext_model if config.focus else None]
    check_output_dir(config.output, overwrite=config.overwrite, inputs=inputs)
    logger.info("transfer on %s: %s -> %s", device, config.source_model, config.output)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    corpus = read_corpus(config.parallel, dedupe=config.dedupe, max_length_ratio=config.max_length_ratio,
                         max_pairs=config.max_pairs)
    if len(corpus) < ENOUGH_PAIRS and config.mode == "replace" and config.mapping.init == "trans-tokenization":
        logger.warning("the parallel corpus has %s pairs after cleaning; with fewer than %s, an untrained transfer "
                       "read held-out text worse than the source model in benchmarks/data_size.py (Bible verses, "
                       "Spanish and Russian; 1,000 pairs: 2.03 against 1.78 bits per byte in Spanish): give more "
                       "pairs, or plan to fine-tune (benchmarks/RESULTS.md, 'How much parallel data is enough')",
                       f"{len(corpus):,}", f"{ENOUGH_PAIRS:,}")
    logger.info("loading the source model %s", config.source_model)
    model, source_tokenizer = load_model(config.source_model, dtype=config.dtype)
    seconds["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    # Target-language text: the --target-corpus when given, else the corpus's target side.
    target_texts = read_texts(config.target_corpus) if config.target_corpus else corpus.pairs.target
    target_tokenizer, extension = _target_tokenizer(config, source_tokenizer, target_texts)
    seconds["tokenizer"] = time.perf_counter() - clock
    extended = config.mode == "extend" or extends(source_tokenizer, target_tokenizer)
    # Resolved before aligning: an explicit prior with a --target-tokenizer that extends the source fails here.
    strength = resolve_prior(config.unigram_prior, replaced=not extended)

    clock = time.perf_counter()
    counts = None
    if config.mapping.init == "trans-tokenization":
        with scratch_dir(config.output) as scratch:
            counts = align_corpus(corpus, source_tokenizer, target_tokenizer, aligner=config.aligner,
                                  segmenter=config.segmenter, work_dir=scratch)
    seconds["align"] = time.perf_counter() - clock

    clock = time.perf_counter()
    logger.info("building the %s mapping of %s target tokens", config.mapping.init, f"{len(target_tokenizer):,}")
    mapping, report = mapping_from_alignment(source_tokenizer, target_tokenizer, counts, config.mapping,
                                             target_texts=target_texts, focus=config.focus)
    seconds["map"] = time.perf_counter() - clock

    delta = resolve_offset(config.new_token_offset, head_rows=mapping.head is not None) if extended else 0.0
    made = give_vocabulary(model, mapping, target_tokenizer, source_tokenizer=source_tokenizer, offset=delta,
                           offset_corpus=corpus.pairs, offset_pairs=config.offset_pairs, prior=strength,
                           prior_texts=corpus.pairs.target, device=device, precision=config.precision)
    seconds.update(made.seconds)
    offset, prior = made.offset_report(), made.prior_report()

    clock = time.perf_counter()
    logger.info("writing the model (%s parameters) and its provenance to %s",
                f"{sum(p.numel() for p in model.parameters()):,}", config.output)
    check_free_space(Path(config.output).parent, model_bytes(model), what="the transferred model",
                     overwrite=config.overwrite)
    settings = asdict(config)
    settings["mapping"] = asdict(resolve_config(config.mapping, extended))
    if config.mode == "replace" and config.target_tokenizer is None:
        settings["vocab_size"] = len(target_tokenizer)  # what the default or the text made of the request
        settings["vocab_size_asked"] = config.vocab_size
    record = provenance_record("transfer", settings, source_tokenizer=source_tokenizer,
                               target_tokenizer=target_tokenizer, offset=delta, prior=strength, device=device,
                               precision=config.precision)
    with atomic_output_dir(config.output, overwrite=config.overwrite, inputs=inputs) as tmp:
        save_checkpoint(tmp, model, target_tokenizer)
        write_provenance(tmp, record, mapping, source_tokenizer, target_tokenizer, report=report, counts=counts,
                         extension=extension, offset=offset, prior=prior,
                         card=model_card(config, report, counts, head=mapping.head is not None, offset=offset,
                                         prior=prior))
    seconds["save"] = time.perf_counter() - clock
    logger.info("transfer done in %s (%s)", duration(sum(seconds.values())), timings(seconds))
    return TransferResult(Path(config.output), report, counts.stats if counts else {}, seconds, extension, offset)


def _target_tokenizer(config: TransferConfig, source_tokenizer, target_texts: Sequence[str]):
    """(the target tokenizer, the extension's report as a dict or None): ``--target-tokenizer`` loaded, or one
    trained on ``target_texts`` (``--mode extend``: the source's plus ``--new-tokens``)."""
    from transtok.extension import extend_tokenizer, extends
    from transtok.loading import load_tokenizer
    from transtok.tokenizer import train_tokenizer

    if config.target_tokenizer is not None:
        target_tokenizer = load_tokenizer(config.target_tokenizer)
        if config.mode == "extend" and not extends(source_tokenizer, target_tokenizer):
            raise MismatchError(f"`mode` extend: the tokenizer {config.target_tokenizer!r} does not extend the source "
                                f"model's ({len(target_tokenizer)} tokens, source {len(source_tokenizer)}); make it "
                                "with 'transtok train-tokenizer --extend N', or drop `target_tokenizer`")
        return target_tokenizer, None
    if config.mode == "extend":
        target_tokenizer, report = extend_tokenizer(target_texts, source_tokenizer, config.new_tokens)
        return target_tokenizer, report.to_dict()
    # The source model's size unless told otherwise (chosen on the dev books); a small text supports
    # fewer merges and the trainer stops there.
    asked = config.vocab_size or len(source_tokenizer)
    target_tokenizer = train_tokenizer(target_texts, source_tokenizer, asked, at_most=not config.vocab_size,
                                       keep_reserved=config.keep_reserved_tokens)
    logger.info("target vocabulary: %s tokens (%s%s)", f"{len(target_tokenizer):,}",
                f"`vocab_size` {asked:,}" if config.vocab_size else f"the source model's size, {asked:,}",
                "" if len(target_tokenizer) >= asked else "; the text supports no more merges")
    return target_tokenizer, None


def model_card(config: TransferConfig, report: MappingReport, counts: AlignmentCounts | None, *,
               head: bool = False, offset: dict | None = None, prior: dict | None = None) -> str:
    stats = counts.stats if counts else {}
    head_rows = []
    if head:
        head_rows.append("| LM head | untied: the new head rows have their own mapping (spelling share "
                         f"{resolve_config(config.mapping, True).head_spelling_weight}) |")
    if offset is not None:
        head_rows.append(f"| language offset of the new head rows | {offset['delta']:g} nats (new-token logits "
                         f"{offset['source_shift_mean']:+.3f} in source-language contexts, "
                         f"{offset['target_shift_mean']:+.3f} in target-language ones) |")
    if prior is not None:
        head_rows.append(f"| unigram prior of the LM head | strength {prior['strength']:g}: logits moved by "
                         f"{prior['bias_mean_abs']:.3f} nats on average towards the target text's token "
                         "frequencies (the head is untied) |")
    lines = [
        "---", "library_name: transformers", "tags: [transtok, trans-tokenization]", "---", "",
        f"# {Path(config.output).name}", "",
        (f"`{config.source_model}` with its vocabulary extended by {report.target_tokens - report.source_tokens:,} "
         f"target-language tokens (every source token and row kept), the new rows initialised by "
         if config.mode == "extend" else
         f"`{config.source_model}` with a new vocabulary of {report.target_tokens:,} tokens, initialised by ")
        + f"`{config.mapping.init}` with [transtok](https://github.com/) {__version__}.", "",
        "| | |", "|---|---|",
        f"| source model | `{config.source_model}` ({report.source_tokens:,} tokens) |",
        f"| parallel corpus | {', '.join(f'`{p}`' for p in config.parallel)}: {stats.get('pairs_aligned', 0):,} pairs |",
        f"| aligner | {config.aligner if counts else 'none'} |",
        f"| word segmenter (text without spaces) | {stats.get('segmenter', 'none') if counts else 'none'} |",
        f"| target tokens by provenance | {', '.join(f'{k} {v:,}' for k, v in report.provenance.items())} |",
        f"| aligned coverage | {100 * report.aligned_coverage:.1f}% |", *head_rows, "",
        "Load it with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`. The "
        f"`{PROVENANCE_DIR}/` folder holds the resolved configuration, the mapping (with a readable "
        "`mapping.tsv`) and the alignment counts.", "",
        "The embeddings were initialised, not trained: fine-tune on target-language text "
        "(`transtok finetune`) before serious use.", "",
        "Method: Remy, Delobelle et al., *Trans-Tokenization and Cross-lingual Vocabulary Transfers*, COLM 2024.",
    ]
    return "\n".join(lines) + "\n"


# --- calibrate: the unigram prior of any causal LM ----------------------------------------------------------------
CALIBRATE_ROWS = ("auto", "new", "all")


def first_new_row(model_dir: str | os.PathLike, tokenizer, *,
                  fix: str = "pass `rows=all` to calibrate every row") -> int | None:
    """The first new token id of an extended model (its tokenizer extends a source's), from the provenance
    that ``transfer`` / ``transplant`` write (and ``finetune`` / ``calibrate`` copy); None for a model without
    that provenance. Raises :class:`ConfigError` (ending in the caller's ``fix``) when the provenance says
    "extended" but not where the new ids start, or gives a start outside the tokenizer."""
    from transtok.artifacts import read_json

    provenance = Path(model_dir) / PROVENANCE_DIR
    if not provenance.is_dir():
        return None
    mapping = provenance / "mapping" / "mapping.json"
    config, extension = provenance / "config.json", provenance / "extension.json"
    try:
        meta = read_json(mapping) if mapping.is_file() else {}
        mode = read_json(config).get("mode") if config.is_file() else None
        report = read_json(extension) if extension.is_file() else {}
        if meta.get("keeps_source_rows"):
            first = int(meta["shape"][1])
        elif report.get("source_tokens") is not None:
            first = int(report["source_tokens"])
        elif mode == "extend" or extension.is_file():
            first = None
        else:
            return None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ConfigError(f"cannot read which rows of {str(model_dir)!r} are new from its {PROVENANCE_DIR}/ folder "
                          f"({exc!r}); {fix}") from exc
    if first is None:
        raise ConfigError(f"{str(model_dir)!r} is an extended model ({PROVENANCE_DIR}/ says so) but records no source "
                          f"vocabulary size ({PROVENANCE_DIR}/mapping/mapping.json or extension.json); {fix}")
    if not 0 < first < len(tokenizer):
        raise ConfigError(f"{str(model_dir)!r}: its {PROVENANCE_DIR}/ folder says the new ids start at {first:,}, its "
                          f"tokenizer has {len(tokenizer):,} tokens; {fix}")
    return first


def calibrate(model_dir: str, texts_files: Sequence[str], output: str, *, strength: float | None = None,
              sample: int | None = None, rows: str = "auto", overwrite: bool = False, device: str | None = None,
              precision: str = "auto", dtype: str = "auto") -> Path:
    """``transtok calibrate``: any causal LM + text in its language → the same checkpoint with the LM head's
    unigram prior (:func:`transtok.calibration.apply_unigram_prior`) fitted on that text.

    ``strength`` (None: :data:`~transtok.calibration.DEFAULT_PRIOR`) and ``sample`` (texts for the model's
    mean prediction; None: :data:`~transtok.calibration.DEFAULT_PRIOR_TEXTS`) as in ``transfer``. ``rows``:
    "new" moves only the head rows of an extended model's new tokens (:func:`first_new_row`; the source rows
    stay bit-identical), "all" every row, "auto" new for an extended model and all otherwise. A tied head
    is untied (the input embeddings never move). The output is saved in the dtype the model was loaded in
    (``dtype``; auto: the checkpoint's own), with the input's ``transtok/`` folder and model card copied and
    ``transtok/calibrate.json`` added.
    """
    import shutil

    from transtok.artifacts import read_json
    from transtok.calibration import DEFAULT_PRIOR, DEFAULT_PRIOR_TEXTS, apply_unigram_prior, check_prior
    from transtok.corpus import read_texts
    from transtok.surgery import is_tied

    strength = check_prior(DEFAULT_PRIOR if strength is None else strength, flag="`strength`")
    if not strength:
        raise ConfigError("`strength` 0 would leave the model as it is; give a positive strength (1 = one full step "
                          "towards the text's token frequencies)")
    sample = check_number("`sample`", DEFAULT_PRIOR_TEXTS if sample is None else sample, low=1, integer=True,
                          hint="texts scored for the model's mean prediction")
    if rows not in CALIBRATE_ROWS:
        raise ConfigError(f"`rows` {rows!r} is not one of {', '.join(CALIBRATE_ROWS)}")
    device = pick_device(device)
    bf16 = passes_in_bf16(precision, device)  # a bad precision fails before the work
    inputs = [model_dir, *texts_files]
    check_output_dir(output, overwrite=overwrite, inputs=inputs)
    texts = read_texts(list(texts_files))  # before loading: a bad file fails fast
    from transtok.loading import load_tokenizer

    # which rows move, from the provenance, before the load; rows='all' needs none (recorded when readable)
    try:
        first = first_new_row(model_dir, load_tokenizer(str(model_dir)))
    except ConfigError:
        if rows != "all":
            raise
        first = None
    model, tokenizer = load_model(model_dir, dtype=dtype)
    tied = is_tied(model)
    head = model.get_output_embeddings().weight
    check_free_space(Path(output).parent, model_bytes(model) + (head.numel() * head.element_size() if tied else 0),
                     what="the calibrated model", overwrite=overwrite)
    if rows == "new" and first is None:
        raise ConfigError(f"rows='new': {str(model_dir)!r} is not an extended model (no {PROVENANCE_DIR}/ folder "
                          "records a source vocabulary), so there are no new rows; give rows='all' or 'auto'")
    start = first if first is not None and rows != "all" else 0
    if first is not None:
        logger.info("%s extends a source vocabulary of %s tokens: %s", model_dir, f"{first:,}",
                    f"only the {len(tokenizer) - first:,} new head rows move (`rows=all` moves every row)"
                    if start else "every head row moves (`rows=all`)")
    if tied:
        logger.info("the LM head is tied to the input embeddings: calibrate unties it (the output saves both), so "
                    "that the input embeddings stay as they are")
    prior = apply_unigram_prior(model, tokenizer, texts, strength=strength, sample=sample, device=device, bf16=bf16,
                                rows=slice(start, None))
    record = {"verb": "calibrate", "model": str(model_dir), "text": [str(f) for f in texts_files],
              "strength": strength, "sample": sample, "texts_sampled": prior.texts, "positions": prior.positions,
              "rows": "new" if start else "all", "row_range": [start, len(tokenizer)],
              "source_vocab_size": first, "untied": tied, "dtype": str(model.dtype).removeprefix("torch."),
              "device": str(device), "precision": "bf16" if bf16 else "fp32", "transtok_version": __version__,
              **{k: v for k, v in prior.report(start).items() if k.startswith("bias_")}}
    with atomic_output_dir(output, overwrite=overwrite, inputs=inputs) as tmp:
        save_checkpoint(tmp, model, tokenizer)
        provenance, old = tmp / PROVENANCE_DIR, Path(model_dir) / PROVENANCE_DIR
        if old.is_dir():
            shutil.copytree(old, provenance)
        provenance.mkdir(exist_ok=True)
        if (provenance / "calibrate.json").is_file():  # a model calibrated before keeps that record too
            record["previous"] = read_json(provenance / "calibrate.json")
        write_json(provenance / "calibrate.json", record)
        card = Path(model_dir) / "README.md"
        if card.is_file():
            text = card.read_text(encoding="utf-8").rstrip("\n")
            (tmp / "README.md").write_text(f"{text}\n\n{calibrate_line(record)}", encoding="utf-8")
    return Path(output)


def calibrate_line(record: dict) -> str:
    """The model card's line for a ``calibrate.json`` record."""
    rows = (f"the {record['row_range'][1] - record['row_range'][0]:,} new tokens' LM-head rows (the source rows "
            "unchanged)" if record["rows"] == "new" else f"all {record['row_range'][1]:,} LM-head rows")
    return (f"Calibrated with `transtok calibrate` {__version__}: the unigram prior (strength {record['strength']:g}) "
            f"moved {rows} by {record['bias_mean_abs']:.3f} nats on average towards the token frequencies of "
            f"{', '.join(f'`{t}`' for t in record['text'])}{'; the LM head was untied' if record['untied'] else ''}.\n")
