"""Corpora larger than memory, aligned on many machines.

A corpus is cut into N contiguous shards of pairs (``K/N``); each shard is read in chunks, cleaned
chunk by chunk and aligned on its own, and because alignment counts are additive the shards'
outputs are summed by :func:`merge_alignments`. Memory per run is one chunk plus the counts.

Cleaning of a stream differs from :func:`transtok.corpus.clean` of a whole corpus in two places:
the length-ratio test uses each chunk's median density, and duplicates are found within one run
(one shard), from 8-byte digests of the pairs. Deduplicate the file beforehand (``sort -u``) when
repeats may fall into different shards.

Every alignment made from files records its *coverage*: the [start, end) ranges of pair indices
it counted, per corpus, a corpus being named by a fingerprint of its pairs as the aligner reads
them (decompressed, decoded, byte-order mark and line endings removed, sides stripped; before the
cleaning filters, which depend on options). A CRLF, BOM, gzip, JSONL or two-file copy of a corpus
is therefore the same corpus. Merging sums coverages and refuses any overlap (a shard given twice,
a whole-corpus alignment with one of its shards, a merged directory with one of its parts, a
re-encoded copy of a corpus with the original), so no pair is ever counted twice. Alignments made
before this fingerprint (transtok versions that hashed the files' bytes) stay loadable and
mergeable, but an overlap between one of them and a newer alignment of the same corpus cannot be
detected: merging them warns.

Cluster recipe (a Slurm array of N tasks; any scheduler or ``xargs -P`` works the same way)::

    transtok align --model M --target-tokenizer T --parallel corpus.tsv \
        --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT --output align/$SLURM_ARRAY_TASK_ID
    transtok merge-alignments --alignment align/* --output align-all     # after the array
    transtok map --alignment align-all --output mapping
    transtok transplant --model M --mapping mapping --output model
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from transtok.align import FINGERPRINT, AlignmentCounts, merge_coverage
from transtok.artifacts import SOURCE_TOKENIZER_DIR, TARGET_TOKENIZER_DIR, atomic_output_dir, check_output_dir
from transtok.checks import check_number
from transtok.corpus import ParallelCorpus, clean, iter_parallel
from transtok.errors import ConfigError, DataError, MismatchError

logger = logging.getLogger(__name__)

_READ_CHUNK = 50_000


@dataclass(frozen=True)
class Shard:
    """The ``index``-th (1-based) of ``count`` contiguous blocks of a corpus."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ConfigError(f"`shard` {self.index}/{self.count} is not a shard: give K/N with 1 <= K <= N "
                              "(e.g. 3/8 for the third of eight)")

    @classmethod
    def parse(cls, text: str | Shard | None) -> Shard:
        """``"K/N"`` -> Shard(K, N); None -> the whole corpus."""
        if text is None:
            return cls()
        if isinstance(text, Shard):
            return text
        parts = [p.strip() for p in str(text).split("/")]
        # ASCII only: str.isdigit() also accepts '²' or '٣', which int() then refuses or reads differently
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
            raise ConfigError(f"`shard` {text!r} is not of the form K/N; give e.g. 3/8 for the third of eight "
                              "(in a Slurm array: `shard` $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
        return cls(int(parts[0]), int(parts[1]))

    def bounds(self, total: int) -> tuple[int, int]:
        """[start, end) pair indices of this shard in a corpus of ``total`` pairs."""
        return (self.index - 1) * total // self.count, self.index * total // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class PairDigest:
    """Fingerprint of a sequence of (source, target) pairs, fed chunk by chunk: the same whatever
    the chunking, the file format or the encoding details that reading removes."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update(self, chunk: ParallelCorpus) -> None:
        # Each side as "<characters>:<text>": unambiguous whatever the text holds (tabs, newlines).
        text = "".join(f"{len(s)}:{s}{len(t)}:{t}" for s, t in zip(chunk.source, chunk.target))
        self._sha.update(text.encode("utf-8", "surrogatepass"))  # JSON may escape a lone surrogate

    def hexdigest(self) -> str:
        """16 hex digits."""
        return self._sha.hexdigest()[:16]


def scan_corpus(paths: Sequence[str | Path]) -> tuple[int, str]:
    """Number of sentence pairs of a parallel corpus and its :func:`corpus_fingerprint`, in one
    streaming pass (constant memory)."""
    digest, total = PairDigest(), 0
    for chunk in iter_parallel(paths, _READ_CHUNK):
        digest.update(chunk)
        total += len(chunk)
    return total, digest.hexdigest()


def count_pairs(paths: Sequence[str | Path]) -> int:
    """Number of sentence pairs in a parallel corpus (one streaming pass, constant memory)."""
    return scan_corpus(paths)[0]


class CorpusStream:
    """Cleaned chunks of one shard of a parallel corpus; ``stats`` fills as it is iterated.

    Chunks hold at most ``chunk_size`` pairs before cleaning and start at the shard's first pair,
    so a shard whose start is a multiple of ``chunk_size`` is chunked as in an unsharded run.
    """

    def __init__(self, paths: Sequence[str | Path], *, chunk_size: int = 200_000, shard: str | Shard | None = None,
                 dedupe: bool = True, max_length_ratio: float | None = 3.0, min_length: int = 1,
                 max_pairs: int | None = None) -> None:
        check_number("`chunk_size`", chunk_size, low=1, integer=True, hint="pairs")
        if max_pairs is not None:
            check_number("`max_pairs`", max_pairs, low=1, integer=True, hint="or omitted for all pairs")
        if max_length_ratio is not None:
            check_number("`max_length_ratio`", max_length_ratio, low=1,
                         hint="or 0 at the command line, None in Python, to disable")
        self.paths = [Path(p) for p in paths]
        self.chunk_size = chunk_size
        self.shard = Shard.parse(shard)
        self.dedupe, self.max_length_ratio, self.min_length = dedupe, max_length_ratio, min_length
        self.max_pairs = max_pairs
        self.stats: Counter = Counter()
        self.total: int | None = None
        self.range: tuple[int, int] | None = None
        self.exhausted = False
        """True once every pair of the shard was read (False when --max-pairs stopped early)."""
        self.fingerprint: str | None = None
        """:func:`corpus_fingerprint` of the whole corpus, once a pass read all of it."""

    def __iter__(self) -> Iterator[ParallelCorpus]:
        start, end = 0, None
        digest = None
        if self.shard.count > 1:
            self.total, self.fingerprint = scan_corpus(self.paths)
            start, end = self.shard.bounds(self.total)
            logger.info("shard %s: pairs %d..%d of %d", self.shard, start, end, self.total)
            if start == end:
                raise DataError(f"shard {self.shard} of a corpus of {self.total} pairs is empty; use at most "
                                f"{self.total} shards")
        else:
            digest = PairDigest()  # the one pass reads every pair: fingerprint them as they come
        self.range = (start, end)
        seen: set[bytes] = set()
        kept = 0
        for chunk in self._raw_chunks(start, end, digest):
            cleaned = self._clean(chunk, seen, kept)
            kept += len(cleaned)
            if len(cleaned):
                yield cleaned
            if self.max_pairs is not None and kept >= self.max_pairs:
                break
        else:
            self.exhausted = True
            if self.total is None:
                self.total = self.stats["input"]
            if digest is not None:
                self.fingerprint = digest.hexdigest()
        if not kept:
            raise DataError(f"no sentence pair of {', '.join(map(str, self.paths))} (shard {self.shard}) survived "
                            f"cleaning ({dict(self.stats)}); check the corpus or relax `max_length_ratio`")

    def _raw_chunks(self, start: int, end: int | None, digest: PairDigest | None = None) -> Iterator[ParallelCorpus]:
        """Pairs [start, end) regrouped into chunks of ``chunk_size`` counted from ``start``; every
        pair read goes into ``digest``."""
        position = 0
        source: list[str] = []
        target: list[str] = []
        for block in iter_parallel(self.paths, min(self.chunk_size, _READ_CHUNK)):
            if digest is not None:
                digest.update(block)
            lo, hi = max(start - position, 0), len(block) if end is None else min(end - position, len(block))
            position += len(block)
            if lo >= hi:
                if end is not None and position >= end:
                    break
                continue
            source.extend(block.source[lo:hi])
            target.extend(block.target[lo:hi])
            while len(source) >= self.chunk_size:
                yield ParallelCorpus(source[:self.chunk_size], target[:self.chunk_size])
                del source[:self.chunk_size], target[:self.chunk_size]
            if end is not None and position >= end:
                break
        if source:
            yield ParallelCorpus(source, target)

    def _clean(self, chunk: ParallelCorpus, seen: set[bytes], kept_before: int) -> ParallelCorpus:
        self.stats["input"] += len(chunk)
        try:
            chunk, stats = clean(chunk, dedupe=False, max_length_ratio=self.max_length_ratio,
                                 min_length=self.min_length)
        except DataError:  # every pair of this chunk failed a filter; later chunks may be fine
            self.stats["dropped_in_whole_chunks"] += len(chunk)
            return ParallelCorpus()
        self.stats.update({k: v for k, v in stats.items() if k not in ("input", "kept")})
        keep: list[int] = []
        room = None if self.max_pairs is None else self.max_pairs - kept_before
        for i, (s, t) in enumerate(chunk):
            if self.dedupe:
                digest = hashlib.blake2b(f"{s}\t{t}".encode("utf-8"), digest_size=8).digest()
                if digest in seen:
                    self.stats["duplicate"] += 1
                    continue
                seen.add(digest)
            if room is not None and len(keep) >= room:
                self.stats["over_max_pairs"] += len(chunk) - i
                break
            keep.append(i)
        self.stats["kept"] += len(keep)
        return ParallelCorpus([chunk.source[i] for i in keep], [chunk.target[i] for i in keep])


def corpus_fingerprint(paths: Sequence[str | Path]) -> str:
    """16 hex digits of a sha256 over the corpus's pairs as read (see :class:`PairDigest`), in order;
    file names, formats, compression, byte-order marks and line endings do not count."""
    return scan_corpus(paths)[1]


def stream_coverage(stream: CorpusStream) -> dict:
    """The coverage of an iterated stream: {fingerprint: {"ranges": [[start, end]], "pairs": total or
    None, "files": [names], "fingerprint": "pairs"}}. ``end`` is past the last pair read (cleaning
    drops pairs, not ranges). A stream that stopped early (--max-pairs) reads the corpus once more
    for its fingerprint."""
    start = stream.range[0] if stream.range else 0
    read = stream.stats["input"] - stream.stats["over_max_pairs"]  # pairs past --max-pairs were not looked at
    fingerprint = stream.fingerprint or corpus_fingerprint(stream.paths)
    return {fingerprint: {"ranges": [[start, start + read]], "pairs": stream.total,
                          "files": [p.name for p in stream.paths], "fingerprint": FINGERPRINT}}


def missing_pairs(coverage: dict) -> list[str]:
    """Human-readable gaps of a coverage, one per corpus with gaps ("pairs 200..400 of 600 of ...")."""
    out = []
    for corpus, entry in coverage.items():
        total, position, gaps = entry.get("pairs"), 0, []
        for start, end in entry["ranges"]:
            if start > position:
                gaps.append(f"{position:,}..{start:,}")
            position = end
        if total is not None and position < total:
            gaps.append(f"{position:,}..{total:,}")
        elif total is None:
            gaps.append(f"any after {position:,} (the total is unknown: `max_pairs` stopped every part early)")
        if gaps:
            covered = sum(end - start for start, end in entry["ranges"])
            of = f" of {total:,}" if total is not None else ""
            out.append(f"covered {covered:,}{of} pairs of corpus {', '.join(entry.get('files') or [])} ({corpus}); "
                       f"missing: pairs {', '.join(gaps)}")
    return out


def merge_alignments(directories: Sequence[str | Path], output: str | Path, *, overwrite: bool = False):
    """Sum the counts of alignment directories made with the same tokenizers (shards of a corpus,
    or alignments of different corpora).

    Refuses any two inputs that count the same pairs of a corpus (see :func:`merge_coverage`) and
    inputs from before coverage was recorded; warns with the pair ranges (and shards) that are
    missing. Writes counts, summed stats, the coverage and the tokenizers of the first directory.
    """
    import json

    if not directories:
        raise ConfigError("nothing to merge: give at least one alignment directory (`directories`)")
    seen: dict[Path, str] = {}
    for directory in directories:
        if Path(directory).resolve() in seen:
            other = seen[Path(directory).resolve()]
            raise ConfigError(f"{directory} is given twice{f' (also as {other})' if other != str(directory) else ''}; "
                              "its pairs would be counted twice: give each alignment once")
        seen[Path(directory).resolve()] = str(directory)
    check_output_dir(output, overwrite=overwrite, inputs=directories)
    # Check what the parts cover from their metadata before reading any counts.
    metas = []
    for directory in directories:
        meta_file = Path(directory) / "alignment.json"
        if not meta_file.is_file():
            AlignmentCounts.load(directory)  # raises the "holds no alignment" error
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{meta_file} is truncated or corrupt ({exc}); rebuild it with 'transtok align'") from exc
        first = metas[0] if metas else meta
        if (meta.get("source_vocab_hash"), meta.get("target_vocab_hash"), meta.get("shape")) != (
                first.get("source_vocab_hash"), first.get("target_vocab_hash"), first.get("shape")):
            raise MismatchError("alignments to merge were made with different tokenizers: "
                                f"{first.get('source_vocab_hash')}/{first.get('target_vocab_hash')} ({directories[0]}) "
                                f"vs {meta.get('source_vocab_hash')}/{meta.get('target_vocab_hash')} ({directory})")
        if not meta.get("coverage"):
            raise ConfigError(f"{directory} does not record which pairs of which corpus it counts (it was made by an "
                              "older transtok, or by the Python API from an in-memory corpus), so merging it could "
                              "count pairs twice: rebuild it with 'transtok align'")
        metas.append(meta)
    coverage = merge_coverage([(str(d), m["coverage"]) for d, m in zip(directories, metas)])
    shards = {m["stats"].get("shard") for m in metas}
    for line in missing_pairs(coverage):
        named = _missing_shards(coverage, shards)
        logger.warning("merging %d alignment%s: %s%s", len(directories), "s" if len(directories) != 1 else "", line, f" (shards {named})" if named else "")

    merged = None
    cleaning: Counter = Counter()
    aligners, segmenters = set(), set()
    for directory in directories:
        part = AlignmentCounts.load(directory)
        cleaning.update({k: v for k, v in part.stats.get("cleaning", {}).items() if isinstance(v, int)})
        aligners.add(part.stats.get("aligner", "?"))
        segmenters.add(part.stats.get("segmenter", "none"))
        merged = part if merged is None else AlignmentCounts.merge([merged, part], check_coverage=False)
    counts = merged.counts.tocsr()
    merged.coverage = coverage
    merged.stats.update({"aligner": aligners.pop() if len(aligners) == 1 else "mixed",
                         "segmenter": segmenters.pop() if len(segmenters) == 1 else "mixed",
                         "target_tokens_with_counts": int((counts.getnnz(axis=1) > 0).sum()),
                         "cleaning": dict(cleaning), "merged_shards": sorted(s for s in shards if s and s != "1/1"),
                         "merged_from": [str(d) for d in directories]})
    totals = [entry["pairs"] for entry in coverage.values()]
    merged.stats["corpus_pairs"] = sum(totals) if None not in totals else None
    for key in ("shard", "shard_pairs"):
        merged.stats.pop(key, None)
    first = Path(directories[0])
    with atomic_output_dir(output, overwrite=overwrite, inputs=directories) as tmp:
        merged.save(tmp)
        for name in (SOURCE_TOKENIZER_DIR, TARGET_TOKENIZER_DIR):
            if (first / name).is_dir():
                shutil.copytree(first / name, tmp / name)
    logger.info("merged %d alignments: %d pairs", len(directories), merged.stats.get("pairs_aligned", 0))
    return merged


def _missing_shards(coverage: dict, shards: set) -> str:
    """The K/N names of the missing shards when every part is a shard of one N-way split."""
    splits = {s.split("/")[1] for s in shards if s}
    if len(coverage) != 1 or len(splits) != 1 or None in shards:
        return ""
    entry = next(iter(coverage.values()))
    if entry["pairs"] is None:
        return ""
    count = int(splits.pop())
    missing = []
    for k in range(1, count + 1):
        start, end = Shard(k, count).bounds(entry["pairs"])
        if not any(a <= start and end <= b for a, b in entry["ranges"]):
            missing.append(f"{k}/{count}")
    return ", ".join(missing)
