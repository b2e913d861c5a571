"""Parallel and monolingual text corpora: reading, streaming and cleaning.

Parallel input comes in three forms, chosen by the number of paths and the extension:

* one ``.jsonl`` file: one JSON object per line with string ``source`` and ``target`` keys;
* one file with any other extension: TSV, ``source<TAB>target`` per line, exactly one tab;
* two files: line-aligned plain text, line *i* of the first is the source of line *i* of the second.

A ``.gz`` suffix after any of these is read through gzip. Files are decoded as strict UTF-8
(a leading byte-order mark is ignored) and split on ``\\n`` only, so a stray ``\\r``, U+2028 or
form feed inside a segment cannot shift the alignment; trailing ``\\r`` is removed and each side is
stripped of surrounding whitespace.

Blank lines: in TSV and JSONL a line holding only whitespace carries no pair and is skipped (so a
trailing blank line or a blank separator line is harmless). In two-file input every line counts,
because the files align by line number; a pair with an empty side is kept by the readers and
dropped by :func:`clean` (``min_length``).
"""
from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transtok.checks import check_number
from transtok.errors import ConfigError, DataError
from transtok.options import option

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

# Characters added to both lengths before the ratio test, so that very short pairs
# ("Amen." / "Amén.") are never dropped for their ratio.
_RATIO_SMOOTHING = 10


@dataclass
class ParallelCorpus:
    """Sentence pairs: ``source[i]`` (the pretrained model's language) translates ``target[i]``."""

    source: list[str] = field(default_factory=list)
    target: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.source) != len(self.target):
            raise DataError(
                f"a parallel corpus needs as many target as source segments, got {len(self.source)} source "
                f"and {len(self.target)} target; pair them one to one"
            )

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(zip(self.source, self.target))

    def __getitem__(self, index: slice) -> ParallelCorpus:
        if not isinstance(index, slice):
            raise TypeError("index a ParallelCorpus with a slice; iterate it for single pairs")
        return ParallelCorpus(self.source[index], self.target[index])

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> ParallelCorpus:
        source, target = [], []
        for s, t in pairs:
            source.append(s)
            target.append(t)
        return cls(source, target)

    def write_tsv(self, path: PathLike) -> None:
        """Write ``source<TAB>target`` lines (UTF-8).

        Tabs and line breaks inside a segment would corrupt the format, so they become spaces.
        """
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            for s, t in self:
                handle.write(f"{_one_line(s)}\t{_one_line(t)}\n")


def _one_line(text: str) -> str:
    return text.replace("\t", " ").replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def _as_paths(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _open_binary(path: Path):
    if not path.exists():
        raise DataError(f"corpus file {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise DataError(f"corpus path {str(path)!r} is a directory; give a file")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` with the line ending removed; strict UTF-8, 1-based numbers."""
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: bytes that are not UTF-8 at column {exc.start + 1} "
                    f"({raw[exc.start:exc.start + 4]!r}); re-encode the file as UTF-8 "
                    f"(e.g. iconv -f latin1 -t utf-8)"
                ) from None
            yield number, text.rstrip("\n").rstrip("\r")


def _format_of(paths: list[Path]) -> str:
    if len(paths) == 2:
        return "two-files"
    if len(paths) != 1:
        raise ConfigError(
            f"parallel input takes 1 file (TSV or .jsonl) or 2 line-aligned files, got {len(paths)}: "
            f"{[str(p) for p in paths]}"
        )
    name = paths[0].name[:-3] if paths[0].name.endswith(".gz") else paths[0].name
    return "jsonl" if name.endswith(".jsonl") else "tsv"


def _tsv_pairs(path: Path) -> Iterator[tuple[str, str]]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        tabs = line.count("\t")
        if tabs != 1:
            start = line[:40] + ("…" if len(line) > 40 else "")
            found = "no tab" if tabs == 0 else f"{tabs} tabs"
            raise DataError(
                f"{path}:{number}: expected 'source<TAB>target' (exactly one tab) but found {found} in line "
                f"starting {start!r}; fix the line, or give two line-aligned files or a .jsonl file instead"
            )
        source, target = line.split("\t")
        yield source.strip(), target.strip()


def _jsonl_pairs(path: Path) -> Iterator[tuple[str, str]]:
    expected = 'expected one JSON object per line like {"source": "...", "target": "..."}'
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}); {expected}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: got a JSON {type(record).__name__}; {expected}")
        for key in ("source", "target"):
            if not isinstance(record.get(key), str):
                got = "missing" if key not in record else f"a {type(record[key]).__name__}"
                raise DataError(f"{path}:{number}: key {key!r} is {got}, not a string; {expected}")
        yield record["source"].strip(), record["target"].strip()


def _two_file_pairs(source_path: Path, target_path: Path) -> Iterator[tuple[str, str]]:
    source_lines, target_lines = _lines(source_path), _lines(target_path)
    count = 0
    for _, s in source_lines:
        target_line = next(target_lines, None)
        if target_line is None:
            _raise_length_mismatch(source_path, count + 1 + sum(1 for _ in source_lines), target_path, count)
        count += 1
        yield s.strip(), target_line[1].strip()
    rest = sum(1 for _ in target_lines)
    if rest:
        _raise_length_mismatch(source_path, count, target_path, count + rest)


def _raise_length_mismatch(source_path: Path, n_source: int, target_path: Path, n_target: int) -> None:
    raise DataError(
        f"line-aligned files differ in length: {source_path} has {n_source} lines and {target_path} has "
        f"{n_target}; they must have one line per segment, in the same order"
    )


def _pairs(paths: PathLike | Sequence[PathLike]) -> Iterator[tuple[str, str]]:
    path_list = _as_paths(paths)
    kind = _format_of(path_list)
    if kind == "two-files":
        return _two_file_pairs(path_list[0], path_list[1])
    return _jsonl_pairs(path_list[0]) if kind == "jsonl" else _tsv_pairs(path_list[0])


def _empty_error(paths: PathLike | Sequence[PathLike]) -> DataError:
    names = ", ".join(str(p) for p in _as_paths(paths))
    return DataError(f"parallel corpus {names} holds no sentence pairs; give a non-empty file")


def iter_parallel(paths: PathLike | Sequence[PathLike], chunk_size: int = 100_000) -> Iterator[ParallelCorpus]:
    """Yield consecutive chunks of at most ``chunk_size`` pairs, reading the files lazily.

    Memory stays proportional to ``chunk_size``; the concatenated chunks equal :func:`read_parallel`.
    Format errors surface when the generator reaches the bad line.
    """
    check_number("`chunk_size`", chunk_size, low=1, integer=True, hint="pairs")
    source: list[str] = []
    target: list[str] = []
    total = 0
    for s, t in _pairs(paths):
        source.append(s)
        target.append(t)
        if len(source) == chunk_size:
            total += chunk_size
            yield ParallelCorpus(source, target)
            source, target = [], []
    total += len(source)
    if total == 0:
        raise _empty_error(paths)
    if source:
        yield ParallelCorpus(source, target)


def read_parallel(paths: PathLike | Sequence[PathLike]) -> ParallelCorpus:
    """Read a whole parallel corpus: TSV (1 path), JSONL (1 ``.jsonl`` path) or 2 line-aligned files."""
    corpus = ParallelCorpus.from_pairs(_pairs(paths))
    if not len(corpus):
        raise _empty_error(paths)
    logger.info("read %d sentence pairs from %s", len(corpus), ", ".join(str(p) for p in _as_paths(paths)))
    return corpus


def iter_texts(paths: PathLike | Sequence[PathLike]) -> Iterator[str]:
    """Yield the stripped non-blank lines of monolingual text files, in order (lazily)."""
    for path in _as_paths(paths):
        for _, line in _lines(path):
            if line.strip():
                yield line.strip()


def read_texts(paths: PathLike | Sequence[PathLike]) -> list[str]:
    """Monolingual text: one item per non-blank line, stripped, files concatenated in order."""
    path_list = _as_paths(paths)
    if not path_list:
        raise ConfigError("read_texts needs at least one text file")
    texts = list(iter_texts(path_list))
    if not texts:
        names = ", ".join(str(p) for p in path_list)
        raise DataError(f"text file(s) {names} hold no non-blank line; give text with one segment per line")
    logger.info("read %d lines of text from %s", len(texts), ", ".join(str(p) for p in path_list))
    return texts


def write_texts(texts: Iterable[str], path: PathLike) -> None:
    """Write one segment per line (line breaks inside a segment become spaces)."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for text in texts:
            handle.write(text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ") + "\n")


@dataclass
class Cleaning:
    """How :func:`clean` filters a parallel corpus: the settings of every verb that reads one to align it."""

    max_pairs: int | None = option(None, group="advanced", metavar="N",
                                   help="use at most this many pairs (after cleaning)")
    dedupe: bool = option(True, group="advanced", negate="--no-dedupe",
                          help="keep exact repeats of a (source, target) pair")
    max_length_ratio: float | None = option(
        3.0, group="advanced", metavar="R", off=0,
        help="drop pairs whose longer side is more than R times the shorter, in characters scaled by the corpus's "
             "median ratio; 0 disables (default: %(default)s)")


def clean(corpus: ParallelCorpus, *, dedupe: bool = True, max_length_ratio: float | None = 3.0,
          min_length: int = 1, max_pairs: int | None = None) -> tuple[ParallelCorpus, dict[str, int]]:
    """Drop unusable pairs; return the kept pairs (in input order) and counts per reason.

    Filters, applied in this order, each counted under its key:

    * ``too_short``: a side with fewer than ``min_length`` characters (so ``1`` drops empty sides);
    * ``length_ratio``: the longer side is more than ``max_length_ratio`` times the shorter. Lengths
      are characters, the target's scaled by the corpus's median source/target ratio so that scripts
      of different density (Latin vs CJK) compare fairly, plus 10 characters of smoothing so very
      short pairs are kept. ``None`` disables the test;
    * ``duplicate``: an exact repeat of an earlier (source, target) pair;
    * ``over_max_pairs``: pairs beyond the first ``max_pairs`` kept ones.

    Stats keys: ``input``, the four reasons and ``kept``.
    """
    check_number("`min_length`", min_length, low=0, hint="characters")
    if max_length_ratio is not None:
        check_number("`max_length_ratio`", max_length_ratio, low=1, hint="or None to disable")
    if max_pairs is not None:
        check_number("`max_pairs`", max_pairs, low=1, integer=True, hint="pairs, or None for all")

    n = len(corpus)
    source_len = np.fromiter((len(s) for s in corpus.source), dtype=np.float64, count=n)
    target_len = np.fromiter((len(t) for t in corpus.target), dtype=np.float64, count=n)
    keep = (source_len >= min_length) & (target_len >= min_length)
    stats = {"input": n, "too_short": int(n - keep.sum()), "length_ratio": 0, "duplicate": 0, "over_max_pairs": 0}

    if max_length_ratio is not None and keep.any():
        both = keep & (source_len > 0) & (target_len > 0)
        density = float(np.median(source_len[both] / target_len[both])) if both.any() else 1.0
        a = source_len + _RATIO_SMOOTHING
        b = target_len * density + _RATIO_SMOOTHING
        ratio_ok = np.maximum(a, b) <= max_length_ratio * np.minimum(a, b)
        stats["length_ratio"] = int((keep & ~ratio_ok).sum())
        keep &= ratio_ok

    kept: list[int] = []
    seen: set[tuple[str, str]] = set()
    for i in np.flatnonzero(keep).tolist():
        if dedupe:
            pair = (corpus.source[i], corpus.target[i])
            if pair in seen:
                stats["duplicate"] += 1
                continue
            seen.add(pair)
        if max_pairs is not None and len(kept) >= max_pairs:
            stats["over_max_pairs"] += 1
            continue
        kept.append(i)
    stats["kept"] = len(kept)
    if not kept:
        raise DataError(
            f"cleaning dropped all {n} sentence pairs ({stats}); check the corpus or relax "
            f"min_length / max_length_ratio"
        )
    logger.info("cleaning kept %d of %d pairs (%s)", len(kept), n,
                ", ".join(f"{k}: {v}" for k, v in stats.items() if k not in ("input", "kept") and v))
    return ParallelCorpus([corpus.source[i] for i in kept], [corpus.target[i] for i in kept]), stats
