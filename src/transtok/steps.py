"""The steps of a transfer, on objects in memory: read and clean a parallel corpus, align it, map the
vocabularies, and give a model the target vocabulary (transplant, language offset, unigram prior).

Each step is declared once. The verbs of :mod:`transtok.pipeline` (``align``, ``map``, ``transplant``,
``transfer``) are these steps plus reading their inputs and writing one output directory, so that
``transfer`` and ``align`` → ``map`` → ``transplant`` give the same files; the benchmarks call the same
steps on the corpora and models they hold.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from transtok.align import Aligner, AlignmentCounts, align
from transtok.calibration import DEFAULT_PAIRS, DEFAULT_PRIOR_TEXTS
from transtok.corpus import ParallelCorpus
from transtok.errors import ConfigError, MismatchError
from transtok.focus import FocusConfig, focus_mapping
from transtok.mapping import (MappingConfig, MappingReport, TokenMapping, build_mapping, keep_source_rows,
                              new_rows_report, resolve_config)
from transtok.segment import Segmenter
from transtok.shards import CorpusStream, stream_coverage
from transtok.vocabulary import byte_fallback_ids, decompose, exact_matches, special_pairs, token_bytes, vocab_hash

if TYPE_CHECKING:
    from transtok.calibration import LanguageOffset, UnigramPrior

logger = logging.getLogger(__name__)

CHUNK_PAIRS = 200_000
"""Pairs per chunk that the corpus is read, cleaned and aligned in (``transtok align --chunk-size``)."""


# --- the corpus -----------------------------------------------------------------------------------------------------
def corpus_stream(parallel: Sequence[str | Path], *, clean: bool = True, dedupe: bool = True,
                  max_length_ratio: float | None = 3.0, max_pairs: int | None = None,
                  chunk_size: int = CHUNK_PAIRS, shard: str | None = None) -> CorpusStream:
    """The one cleaning of a parallel corpus read from files, for ``align``, ``transplant`` and ``transfer``
    alike (:class:`transtok.shards.CorpusStream`): chunks of ``chunk_size`` pairs, each cleaned
    (:func:`transtok.corpus.clean`, its length-ratio test with the chunk's median density) and deduplicated
    against the earlier ones, at most ``max_pairs`` kept. ``clean=False`` turns deduplication and the ratio
    test off."""
    return CorpusStream(parallel, chunk_size=chunk_size, shard=shard, dedupe=dedupe and clean,
                        max_length_ratio=max_length_ratio if clean else None, max_pairs=max_pairs)


@dataclass
class CleanedCorpus:
    """A parallel corpus read whole and cleaned as ``transtok align`` streams it."""

    pairs: ParallelCorpus
    """The kept pairs, in corpus order."""
    chunks: list[ParallelCorpus]
    """The same pairs in the cleaned chunks the aligner reads, one alignment run each."""
    stream: CorpusStream
    """What was read and dropped (``stats``, coverage)."""

    def __len__(self) -> int:
        return len(self.pairs)


def read_corpus(parallel: Sequence[str | Path], *, clean: bool = True, dedupe: bool = True,
                max_length_ratio: float | None = 3.0, max_pairs: int | None = None,
                chunk_size: int = CHUNK_PAIRS) -> CleanedCorpus:
    """Read and clean a parallel corpus in memory (:func:`corpus_stream`; ``transfer``, and ``transplant``
    for its offset sample and prior texts)."""
    stream = corpus_stream(parallel, clean=clean, dedupe=dedupe, max_length_ratio=max_length_ratio,
                           max_pairs=max_pairs, chunk_size=chunk_size)
    chunks = list(stream)
    pairs = ParallelCorpus([s for c in chunks for s in c.source], [t for c in chunks for t in c.target])
    logger.info("read %s sentence pairs from %s; cleaning kept %s", f"{stream.stats['input']:,}",
                ", ".join(str(p) for p in parallel), f"{len(pairs):,}")
    return CleanedCorpus(pairs, chunks, stream)


def offset_sample(corpus: ParallelCorpus, pairs: int | None = None) -> tuple[list[str], list[str]]:
    """The language offset's sample: ``pairs`` pairs of ``corpus`` (None: :data:`DEFAULT_PAIRS`), seed 0."""
    from transtok.calibration import sample_pairs

    return sample_pairs(corpus.source, corpus.target, DEFAULT_PAIRS if pairs is None else pairs)


# --- align ----------------------------------------------------------------------------------------------------------
def align_corpus(corpus: CleanedCorpus | CorpusStream | ParallelCorpus, source_tokenizer, target_tokenizer, *,
                 aligner: str | Aligner = "eflomal", segmenter: str | Segmenter | None = "auto",
                 chunk_size: int = CHUNK_PAIRS,
                 work_dir: str | Path | None = None) -> AlignmentCounts:
    """Word-align ``corpus`` and count token pairs (:func:`transtok.align.align`). A corpus read from files
    (:func:`read_corpus`, :func:`corpus_stream`) is aligned chunk by chunk as it was cleaned, and its
    cleaning, shard and coverage go into the counts (what ``transtok merge-alignments`` checks)."""
    if isinstance(corpus, CleanedCorpus):
        corpus, stream = corpus.chunks, corpus.stream
    else:
        stream = corpus if isinstance(corpus, CorpusStream) else None
    counts = align(corpus, source_tokenizer, target_tokenizer, aligner=aligner, chunk_size=chunk_size,
                   work_dir=work_dir, segmenter=segmenter)
    if stream is not None:
        counts.coverage = stream_coverage(stream)
        counts.stats["cleaning"] = dict(stream.stats)
        counts.stats["shard"] = str(stream.shard)
        if stream.shard.count > 1:
            counts.stats["shard_pairs"] = list(stream.range)
        if stream.total is not None:
            counts.stats["corpus_pairs"] = stream.total
    return counts


# --- map ------------------------------------------------------------------------------------------------------------
def mapping_from_alignment(source_tokenizer, target_tokenizer, counts: AlignmentCounts | None,
                           config: MappingConfig = MappingConfig(), *, target_texts: Iterable[str] | None = None,
                           focus: FocusConfig | None = None) -> tuple[TokenMapping, MappingReport]:
    """Gather the evidence (alignment, exact overlap, subword spelling, special roles) and build the mapping.

    ``--init focus`` takes its evidence from target-language text instead (``target_texts``, or a
    trained fastText model named in ``focus``); its seed is ``config.seed`` unless ``focus`` is given.
    When the target tokenizer extends the source (:func:`transtok.extension.extends`), the source
    rows are kept as they are and only the new rows come from the evidence; unless
    ``config.tied_head``, the mapping also carries separate LM-head rows (:func:`resolve_config`).
    """
    from transtok.extension import extends

    extended = extends(source_tokenizer, target_tokenizer)
    config = resolve_config(config, extended)
    mapping, report = _build(source_tokenizer, target_tokenizer, counts, config, target_texts=target_texts,
                             focus=focus)
    if config.head_spelling_weight is not None and mapping.head is None:
        # Methods whose rows take no spelling share (FOCUS): the head rows are the input rows, untied.
        mapping = dataclasses.replace(mapping, head=dataclasses.replace(mapping))
    if extended:
        mapping = keep_source_rows(mapping)
        report = new_rows_report(mapping, report)
        logger.info("the target tokenizer extends the source: %d source rows kept, %d new rows mapped (%s)",
                    mapping.shape[1], mapping.shape[0] - mapping.shape[1],
                    "one set of rows for the input table and the LM head, spelling share "
                    f"{config.spelling_weight}" if mapping.head is None else
                    f"input rows with spelling share {config.spelling_weight}, separate LM-head rows with "
                    f"{config.head_spelling_weight}")
    return mapping, report


def _build(source_tokenizer, target_tokenizer, counts: AlignmentCounts | None, config: MappingConfig, *,
           target_texts: Iterable[str] | None, focus: FocusConfig | None) -> tuple[TokenMapping, MappingReport]:
    if config.init == "focus":
        focus = focus if focus is not None else FocusConfig(seed=config.seed)
        return focus_mapping(source_tokenizer, target_tokenizer, target_texts, config=focus)
    source_hash, target_hash = vocab_hash(source_tokenizer), vocab_hash(target_tokenizer)
    if counts is not None and (counts.source_vocab_hash, counts.target_vocab_hash) != (source_hash, target_hash):
        raise MismatchError(
            f"the alignment was made with tokenizers {counts.source_vocab_hash}/{counts.target_vocab_hash}, "
            f"not {source_hash}/{target_hash}; align again with these tokenizers")
    target_surfaces = token_bytes(target_tokenizer)
    return build_mapping(
        target_size=len(target_tokenizer), source_size=len(source_tokenizer),
        source_vocab_hash=source_hash, target_vocab_hash=target_hash,
        counts=None if counts is None else counts.counts,
        decomposition=decompose(target_surfaces, source_tokenizer),
        exact=exact_matches(target_surfaces, token_bytes(source_tokenizer),
                            target_byte_pieces=byte_fallback_ids(target_tokenizer),
                            source_byte_pieces=byte_fallback_ids(source_tokenizer)),
        specials=special_pairs(target_tokenizer, source_tokenizer),
        config=config,
    )


# --- the model ------------------------------------------------------------------------------------------------------
@dataclass
class NewVocabulary:
    """What :func:`give_vocabulary` did to a model besides the transplant."""

    offset: LanguageOffset | None = None
    """The language offset of the new head rows, if applied."""
    offset_pairs: int = 0
    """Parallel pairs its means came from."""
    prior: UnigramPrior | None = None
    """The head's unigram prior, if applied."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds of ``transplant``, ``offset`` and ``prior``."""

    def offset_report(self) -> dict | None:
        """``offset.json``: the offset's report and its sample size."""
        return None if self.offset is None else offset_report(self.offset, self.offset_pairs)

    def prior_report(self) -> dict | None:
        """``unigram_prior.json``."""
        return None if self.prior is None else self.prior.report()


def offset_report(offset: LanguageOffset, pairs: int) -> dict:
    """``offset.json``: the report of a language offset computed on ``pairs`` parallel pairs."""
    return {**offset.report(), "pairs": pairs}


def give_vocabulary(model, mapping: TokenMapping, target_tokenizer, *, source_tokenizer=None, untie: bool = False,
                    offset: float = 0.0, offset_corpus: ParallelCorpus | None = None, offset_pairs: int | None = None,
                    prior: float = 0.0, prior_texts: Sequence[str] | None = None,
                    prior_sample: int = DEFAULT_PRIOR_TEXTS, device=None,
                    precision: str | bool | None = "auto") -> NewVocabulary:
    """Give ``model`` (in memory, in place) the target vocabulary of ``mapping``, in this order:

    * the transplant (:func:`transtok.surgery.transplant`);
    * ``untie``: an LM head tied to the input table gets its own rows (what the prior does to it);
    * ``offset`` δ > 0: the language offset of the new head rows (ids from ``mapping.shape[1]``,
      :func:`transtok.calibration.apply_language_offset`), its means over :func:`offset_sample` of
      ``offset_corpus`` (``offset_pairs`` pairs);
    * ``prior`` > 0: the head's unigram prior of that strength from ``prior_texts``
      (:func:`transtok.calibration.apply_unigram_prior`, ``prior_sample`` texts scored).

    ``device`` / ``precision``: where and how the offset's and the prior's forward passes run (None: where
    the model is; :func:`transtok.calibration.passes_in_bf16`). The callers resolve δ and the strength
    (:func:`transtok.calibration.resolve_offset`, :func:`~transtok.calibration.resolve_prior`)."""
    from transtok.surgery import transplant, untie_head

    if offset and offset_corpus is None:
        raise ConfigError(f"a language offset of {offset:g} is computed on parallel text: give offset_corpus "
                          "(the training pairs), or offset=0")
    if prior and prior_texts is None:
        raise ConfigError(f"a unigram prior of strength {prior:g} counts target-language tokens: give prior_texts "
                          "(the training corpus's target side), or prior=0")
    done = NewVocabulary()
    clock = time.perf_counter()
    transplant(model, mapping, target_tokenizer, source_tokenizer=source_tokenizer)
    if untie:
        untie_head(model)
    done.seconds["transplant"] = time.perf_counter() - clock
    if offset:
        from transtok.calibration import apply_language_offset

        clock = time.perf_counter()
        sample = offset_sample(offset_corpus, offset_pairs)
        logger.info("language offset %.2f of the new head rows, from %d sampled pairs", offset, len(sample[0]))
        done.offset = apply_language_offset(model, target_tokenizer, *sample, delta=offset, new_from=mapping.shape[1],
                                            device=device, bf16=precision)
        done.offset_pairs = len(sample[0])
        done.seconds["offset"] = time.perf_counter() - clock
    if prior:
        from transtok.calibration import apply_unigram_prior

        clock = time.perf_counter()
        done.prior = apply_unigram_prior(model, target_tokenizer, prior_texts, strength=prior, sample=prior_sample,
                                         device=device, bf16=precision)
        done.seconds["prior"] = time.perf_counter() - clock
    return done
