"""Word-align a parallel corpus and project word-pair counts onto token pairs.

Word units come from the tokenizers' character offsets: a unit is a run of regex words
(letters/digits, or single punctuation marks) joined by any token that spans them, so the two
sides are segmented by the same rule whatever the tokenizer family (no joiner characters that can
collide with real tokens). Each unit is written to the aligner as the ``_``-joined ids of its
tokens, which keeps alignment at word level while the projection back to tokens stays exact.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from safetensors.numpy import save_file

from transtok.artifacts import pause_point, read_sparse
from transtok.errors import ConfigError, DataError, MismatchError, require
from transtok.progress import bar as progress_bar, duration
from transtok.options import option
from transtok.segment import SEGMENTERS, Segmenter, get_segmenter, segmenter_name, word_spans
from transtok.vocabulary import vocab_hash

if TYPE_CHECKING:  # scipy loads lazily: the CLI imports this module at parse time
    import scipy.sparse as sp

logger = logging.getLogger(__name__)

Links = list[tuple[int, int]]
"""(source unit index, target unit index) pairs of one sentence pair."""


def word_units(tokenizer, texts: Sequence[str], *, batch_size: int = 2000,
               segmenter: str | Segmenter | None = "auto") -> list[list[tuple[int, ...]]]:
    """Split each text into word units, each a tuple of token ids (tokens without special tokens).

    ``segmenter`` splits text written without spaces into words (see :mod:`transtok.segment`;
    ``"none"``: one unit per unspaced clause)."""
    segmenter = get_segmenter(segmenter)
    out: list[list[tuple[int, ...]]] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start:start + batch_size])
        encoded = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=True)
        out.extend(_units_of(batch, encoded["input_ids"], encoded["offset_mapping"], segmenter))
    return out


def _units_of(texts: Sequence[str], ids: Sequence[Sequence[int]],
              offsets: Sequence[Sequence[tuple[int, int]]],
              segmenter: Segmenter | None = None) -> list[list[tuple[int, ...]]]:
    """Word units of a batch of texts, from each token's (begin, end) character offsets.

    Vectorised over the whole batch: texts are laid end to end (a newline between them, which no
    word crosses), so a token's words are found by binary search among the word spans. Words that
    one token touches are joined into one unit, so a segment boundary inside a token is dropped."""
    lengths = np.fromiter((len(t) for t in ids), dtype=np.int64, count=len(ids))
    n_tokens = int(lengths.sum())
    if n_tokens == 0:
        return [[] for _ in ids]
    text_start = np.zeros(len(texts), dtype=np.int64)
    np.cumsum([len(t) + 1 for t in texts[:-1]], out=text_start[1:])
    word_start, word_end = word_spans("\n".join(texts), segmenter)
    text_of_token = np.repeat(np.arange(len(ids)), lengths)
    flat_offsets = np.fromiter((c for doc in offsets for span in doc for c in span), dtype=np.int64,
                               count=2 * n_tokens).reshape(-1, 2)
    begin = flat_offsets[:, 0] + text_start[text_of_token]
    end = flat_offsets[:, 1] + text_start[text_of_token]
    # The words a token touches: from the first word ending after its begin to the last starting before its end.
    first = np.searchsorted(word_end, begin, side="right")
    last = np.searchsorted(word_start, end, side="left") - 1
    touches = (first <= last) & (first < len(word_start))
    # joined[w]: word w belongs to the unit of word w - 1 (one token spans both).
    depth = np.zeros(len(word_start) + 1, dtype=np.int64)
    np.add.at(depth, first[touches] + 1, 1)
    np.add.at(depth, last[touches] + 1, -1)
    joined = np.cumsum(depth)[:-1] > 0
    unit_of_word = np.cumsum(~joined) - 1
    # Tokens with no word character (a lone space marker) belong to the next token's word in the same
    # text, else the previous one's; a text without any word character is one unit.
    position = np.arange(n_tokens)
    following = np.minimum.accumulate(np.where(touches, position, n_tokens)[::-1])[::-1]
    preceding = np.maximum.accumulate(np.where(touches, position, -1))
    following_ok = (following < n_tokens) & (text_of_token[np.minimum(following, n_tokens - 1)] == text_of_token)
    preceding_ok = (preceding >= 0) & (text_of_token[np.maximum(preceding, 0)] == text_of_token)
    source = np.where(following_ok, following, np.where(preceding_ok, preceding, -1))
    unit = np.where(source >= 0, unit_of_word[first[np.maximum(source, 0)]] if len(word_start) else 0,
                    -1 - text_of_token)
    new_unit = np.ones(n_tokens, dtype=bool)
    new_unit[1:] = (unit[1:] != unit[:-1]) | (text_of_token[1:] != text_of_token[:-1])
    starts = np.flatnonzero(new_unit)
    ends = np.r_[starts[1:], n_tokens]
    flat_ids = [t for doc in ids for t in doc]
    units = [tuple(flat_ids[a:b]) for a, b in zip(starts.tolist(), ends.tolist())]
    units_per_text = np.bincount(text_of_token[starts], minlength=len(ids))
    bounds = np.r_[0, np.cumsum(units_per_text)].tolist()
    return [units[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def symmetrize(forward: Sequence[Links], reverse: Sequence[Links], mode: str) -> list[Links]:
    """Combine the links of both directions; each returned link is worth half an occurrence.

    ``union``: every link of either direction (a link found by both counts one full occurrence);
    ``intersection``: only links found by both directions, each worth one full occurrence.
    """
    if mode == "union":
        return [list(f) + list(r) for f, r in zip(forward, reverse)]
    if mode == "intersection":
        out = []
        for f, r in zip(forward, reverse):
            both = sorted(set(f) & set(r))
            out.append(both + both)
        return out
    raise ConfigError(f"unknown symmetrization {mode!r}; choose union or intersection")


class Aligner(Protocol):
    """Word aligner: sentences of word symbols in, links out (one list per sentence pair)."""

    name: str

    def align(self, source: Sequence[Sequence[str]], target: Sequence[Sequence[str]]) -> list[Links]: ...


@dataclass
class EflomalAligner:
    """eflomal (Östling & Tiedemann 2016): Bayesian IBM/HMM/fertility model by Gibbs sampling.

    Links of both directions are returned; a link found in both counts twice. eflomal seeds its
    sampler from system entropy, so repeated runs differ slightly (see FastAlignAligner for a
    deterministic aligner). The eflomal binary runs as a child process that dies with this one
    (Linux), and its files go to ``work_dir`` (default: the system's temporary directory).
    """

    name: str = "eflomal"
    model: int = 3
    n_samplers: int = 2
    symmetrization: str = "union"
    work_dir: str | Path | None = None

    def align(self, source, target):
        eflomal = require("eflomal", package="eflomal", extra="align", purpose="The eflomal aligner")
        aligner = eflomal.Aligner(model=self.model, n_samplers=self.n_samplers)
        with tempfile.TemporaryDirectory(prefix="transtok-eflomal-", dir=self.work_dir) as tmp:
            tmp = Path(tmp)
            with open(tmp / "source", "wb") as src, open(tmp / "target", "wb") as trg:
                aligner.prepare_files([" ".join(s) for s in source], src, [" ".join(t) for t in target], trg,
                                      None, None)
            forward, reverse = tmp / "fwd", tmp / "rev"
            # eflomal.Aligner.align runs the same binary with these arguments, but from files in the
            # system temporary directory and as a child that outlives a killed parent.
            args = [str(Path(eflomal.__file__).parent / "bin" / "eflomal"), "-m", str(self.model),
                    "-s", str(tmp / "source"), "-t", str(tmp / "target"), "-n", str(self.n_samplers),
                    "-N", str(aligner.null_prior), "-f", str(forward), "-r", str(reverse), "-q"]
            for flag, iterations in zip(("-1", "-2", "-3"), _eflomal_iterations(len(source), self.model)):
                args += [flag, str(iterations)]
            _run_child(args, "eflomal", tmp)
            fwd = _read_pharaoh(forward, len(source))
            rev = _read_pharaoh(reverse, len(source))
        return symmetrize(fwd, rev, self.symmetrization)


def _eflomal_iterations(n_sentences: int, model: int) -> tuple[int, ...]:
    """eflomal's default iterations per model (IBM1, HMM, fertility), as in ``eflomal.cython.align``."""
    iters = max(2, int(round(5000 / math.sqrt(max(n_sentences, 1)))))
    quarter = max(1, iters // 4)
    return {1: (iters,), 2: (max(2, quarter), iters)}.get(model, (max(2, quarter), quarter, iters))


_PR_SET_PDEATHSIG = 1


def _die_with_parent(prctl, parent: int) -> None:
    """Runs in the child between fork and exec: ask Linux to SIGKILL it when its parent dies.
    ``prctl`` is looked up in the parent, so the child only makes the call (no dlopen after fork)."""
    import os

    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _run_child(args: list[str], name: str, work_dir: str | Path | None = None) -> None:
    """Run an aligner binary as a child that Linux kills when this process dies (even by SIGKILL);
    an exception here (Ctrl-C, SIGTERM under the CLI) kills it too. Its stderr becomes part of the
    error (one line); a failure while ``work_dir``'s file system is (nearly) full is an ENOSPC OSError."""
    import ctypes
    import errno
    import functools
    import os
    import subprocess

    from transtok.diskspace import LOW_SPACE, free_space

    preexec = None
    if sys.platform.startswith("linux"):
        preexec = functools.partial(_die_with_parent, ctypes.CDLL(None, use_errno=True).prctl, os.getpid())
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec) as child:
        try:
            pause_point("aligning")
            _, said = child.communicate()
            code = child.returncode
        except BaseException:
            child.kill()
            raise
    said = " ".join(said.decode("utf-8", "replace").split())[-300:]
    if code == 0:
        if said:
            logger.debug("%s: %s", name, said)
        return
    free = free_space(work_dir) if work_dir is not None else None
    if free is not None and free < LOW_SPACE:  # eflomal's input files were cut short: it says only that
        raise OSError(errno.ENOSPC, f"{name} failed ({said or f'exit code {code}'}) with the disk full",
                      str(work_dir))
    raise DataError(f"{name} exited with code {code}{f': {said}' if said else ''} ({' '.join(args)})")


@dataclass
class FastAlignAligner:
    """FastAlign (Dyer et al. 2013) through SIL's thot: deterministic EM, both directions."""

    name: str = "fast_align"
    iterations: int = 5
    symmetrization: str = "union"

    def align(self, source, target):
        alignment = require("thot.alignment", package="sil-thot", extra="thot", purpose="The fast_align aligner")
        directed: dict[str, list[Links]] = {}
        for direction in ("forward", "reverse"):
            model = alignment.FastAlignModel()
            pairs = list(zip(source, target)) if direction == "forward" else list(zip(target, source))
            for src, trg in pairs:
                model.add_sentence_pair(list(src), list(trg))
            model.start_training()
            for _ in range(self.iterations):
                model.train()
            model.end_training()
            best = model.get_best_alignments([list(p[0]) for p in pairs], [list(p[1]) for p in pairs])
            directed[direction] = []
            for _, matrix in best:
                i, j = np.nonzero(matrix.to_numpy())
                pairs_ij = zip(i.tolist(), j.tolist()) if direction == "forward" else zip(j.tolist(), i.tolist())
                directed[direction].append(list(pairs_ij))
        return symmetrize(directed["forward"], directed["reverse"], self.symmetrization)


ALIGNERS: dict[str, Callable[[], Aligner]] = {"eflomal": EflomalAligner, "fast_align": FastAlignAligner}


@dataclass
class WordAlignment:
    """How :func:`align` finds word pairs: the settings of every verb that aligns (align, transfer, demo)."""

    aligner: str = option("eflomal", choices=tuple(ALIGNERS), metavar="NAME",
                          help="word aligner: %(choices)s (default: %(default)s)")
    segmenter: str = option(
        "auto", choices=SEGMENTERS, group="advanced",
        help="word boundaries in text written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Burmese): auto = "
             "ICU's word break iterator if icu4py is installed (pip install 'transtok[segment]'), else every token "
             "of such text is a word; none = one word per unspaced clause (default: %(default)s)")


def get_aligner(name: str | Aligner) -> Aligner:
    if not isinstance(name, str):
        return name
    if name not in ALIGNERS:
        raise ConfigError(f"unknown aligner {name!r}; choose one of {', '.join(sorted(ALIGNERS))}")
    return ALIGNERS[name]()


def _read_pharaoh(path: Path, n: int) -> list[Links]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != n:
        raise DataError(f"the aligner wrote {len(lines)} alignment lines for {n} sentence pairs")
    out = []
    for line in lines:
        pairs = [p.split("-") for p in line.split()]
        out.append([(int(a), int(b)) for a, b in pairs])
    return out


# --- coverage: which pairs of which corpus an alignment counted (see transtok.shards) -------------

FINGERPRINT = "pairs"
"""What a coverage entry's fingerprint hashes (its ``fingerprint`` key); entries without one hash
the files' bytes (older transtok)."""


def merge_coverage(parts: Sequence[tuple[str, dict]]) -> dict:
    """Union of the coverages of named alignments; raises :class:`ConfigError` naming both inputs
    when two of them count the same pairs of a corpus. Warns when byte-fingerprinted (older) and
    pair-fingerprinted coverages meet: an overlap between those cannot be seen."""
    old = [name for name, coverage in parts if any(e.get("fingerprint") != FINGERPRINT for e in coverage.values())]
    if old and len(old) < len(parts):
        logger.warning("%s recorded %s corpus by its files' bytes (an older transtok), the other alignments by "
                       "its pairs: if they count pairs of the same corpus, that double count cannot be detected; "
                       "rebuild %s with 'transtok align' to check", ", ".join(old), "its" if len(old) == 1 else
                       "their", "it" if len(old) == 1 else "them")
    merged: dict = {}
    for corpus in dict.fromkeys(c for _, coverage in parts for c in coverage):
        spans = sorted((start, end, name) for name, coverage in parts
                       for start, end in coverage.get(corpus, {}).get("ranges", []) if end > start)
        totals = {coverage[corpus]["pairs"] for _, coverage in parts if coverage.get(corpus, {}).get("pairs") is not None}
        if len(totals) > 1:
            raise MismatchError(f"the alignments disagree on the number of pairs of corpus {corpus} ({sorted(totals)}); "
                                "rebuild them with 'transtok align'")
        ranges: list[list[int]] = []
        owner = ""
        for start, end, name in spans:
            if ranges and start < ranges[-1][1]:
                raise ConfigError(f"{owner} and {name} both count pairs {start:,}..{min(end, ranges[-1][1]):,} of "
                                  f"{_corpus_name(parts, corpus)}: merging them would count those pairs twice. Give "
                                  "each shard once (a merged directory already holds its shards; a whole-corpus "
                                  "alignment holds every shard; a copy of a corpus in another encoding, line "
                                  "ending, compression or format is the same corpus)")
            if ranges and start == ranges[-1][1]:
                ranges[-1][1] = end
            else:
                ranges.append([start, end])
            owner = name
        files = next(c[corpus]["files"] for _, c in parts if corpus in c)
        merged[corpus] = {"ranges": ranges, "pairs": totals.pop() if totals else None, "files": files}
        if any(c[corpus].get("fingerprint") == FINGERPRINT for _, c in parts if corpus in c):
            merged[corpus]["fingerprint"] = FINGERPRINT
    return merged


def _corpus_name(parts: Sequence[tuple[str, dict]], corpus: str) -> str:
    names = list(dict.fromkeys(", ".join(c[corpus].get("files") or []) for _, c in parts if corpus in c))
    also = f" (also read as {'; '.join(names[1:])})" if len(names) > 1 else ""
    return f"corpus {names[0]}{also} ({corpus})"


@dataclass
class AlignmentCounts:
    """Expected aligned token-pair counts, (V_t, V_s), additive across corpus shards."""

    counts: sp.csr_matrix
    source_vocab_hash: str
    target_vocab_hash: str
    stats: dict = field(default_factory=dict)
    coverage: dict | None = None
    """Which pairs of which corpus the counts hold (see :mod:`transtok.shards`); None when aligned
    from an in-memory corpus."""

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        counts = self.counts.tocsr()
        counts.sort_indices()
        save_file({"indptr": counts.indptr.astype(np.int64), "indices": counts.indices.astype(np.int64),
                   "data": counts.data.astype(np.float64)}, str(directory / "counts.safetensors"))
        import json
        meta = {"format": "transtok-alignment/1", "shape": list(counts.shape),
                "source_vocab_hash": self.source_vocab_hash, "target_vocab_hash": self.target_vocab_hash,
                "stats": self.stats}
        if self.coverage is not None:
            meta["coverage"] = self.coverage
        (directory / "alignment.json").write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> AlignmentCounts:
        meta, _, counts = read_sparse(
            directory, "alignment.json", "counts.safetensors", what="alignment", verb="align",
            fix="rebuild it with 'transtok align' (or 'transtok merge-alignments' for a merged one)")
        return cls(counts, meta["source_vocab_hash"], meta["target_vocab_hash"], meta.get("stats", {}),
                   meta.get("coverage"))

    @classmethod
    def merge(cls, parts: Sequence[AlignmentCounts], *, names: Sequence[str] | None = None,
              check_coverage: bool = True) -> AlignmentCounts:
        """Sum the counts of corpus shards aligned with the same tokenizers.

        Parts that record their coverage must not count the same pairs twice (:class:`ConfigError`
        naming both, after ``names``); the result covers their union (None when a part records none).
        """
        if not parts:
            raise ConfigError("nothing to merge: give at least one alignment directory")
        first = parts[0]
        for part in parts[1:]:
            if (part.source_vocab_hash, part.target_vocab_hash, part.counts.shape) != (
                    first.source_vocab_hash, first.target_vocab_hash, first.counts.shape):
                raise MismatchError("alignments to merge were made with different tokenizers: "
                                    f"{first.source_vocab_hash}/{first.target_vocab_hash} vs "
                                    f"{part.source_vocab_hash}/{part.target_vocab_hash}")
        coverage = None
        if check_coverage and all(p.coverage is not None for p in parts):
            names = list(names) if names is not None else [f"alignment {i + 1}" for i in range(len(parts))]
            coverage = merge_coverage(list(zip(names, (p.coverage for p in parts))))
        counts = sum((p.counts for p in parts[1:]), first.counts.copy()).tocsr()
        stats: dict = {}
        for part in parts:
            for key, value in part.stats.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    stats[key] = stats.get(key, 0) + value
        stats["shards"] = sum(int(p.stats.get("shards", 1)) for p in parts)
        if coverage is not None:
            totals = [entry["pairs"] for entry in coverage.values()]
            stats["corpus_pairs"] = sum(totals) if None not in totals else None
        else:
            stats.pop("corpus_pairs", None)  # a sum of shards' totals is not a total
        return cls(counts, first.source_vocab_hash, first.target_vocab_hash, stats, coverage)


def _projection(m: int, n: int) -> np.ndarray:
    """(n, m) weights spreading one word-pair count over its token pairs.

    Half all-to-all (each target token's share spread evenly over the m source tokens), half in
    order (target token j overlaps source tokens by relative position). Each row sums to 1.
    """
    edges_t = np.arange(n + 1) / n
    edges_s = np.arange(m + 1) / m
    overlap = np.clip(np.minimum(edges_t[1:, None], edges_s[None, 1:]) - np.maximum(edges_t[:-1, None], edges_s[None, :-1]),
                      0, None) * n
    return 0.5 / m + 0.5 * overlap


def project_word_counts(pair_counts: dict[tuple[tuple[int, ...], tuple[int, ...]], float],
                        target_size: int, source_size: int) -> sp.csr_matrix:
    """Spread word-pair counts {(source unit, target unit): c} onto a (V_t, V_s) token-pair matrix."""
    import scipy.sparse as sp

    groups: dict[tuple[int, int], list] = {}
    for (source_unit, target_unit), count in pair_counts.items():
        groups.setdefault((len(source_unit), len(target_unit)), []).append((source_unit, target_unit, count))
    rows, cols, vals = [], [], []
    for (m, n), items in sorted(groups.items()):
        source_ids = np.array([s for s, _, _ in items], dtype=np.int64)  # (k, m)
        target_ids = np.array([t for _, t, _ in items], dtype=np.int64)  # (k, n)
        count = np.array([c for _, _, c in items], dtype=np.float64)     # (k,)
        weights = _projection(m, n)                                       # (n, m)
        rows.append(np.repeat(target_ids, m, axis=1).ravel())             # (k, n*m): t_j repeated per i
        cols.append(np.tile(source_ids, (1, n)).ravel())
        vals.append((count[:, None] * weights.ravel()[None, :]).ravel())
    if not rows:
        return sp.csr_matrix((target_size, source_size))
    matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(target_size, source_size))
    matrix.sum_duplicates()
    return matrix


def count_word_pairs(source_units, target_units, links: Sequence[Links], weight: float = 0.5) -> Counter:
    """Accumulate ``weight`` per link into {(source unit, target unit): count}."""
    counter: Counter = Counter()
    for src, trg, sentence_links in zip(source_units, target_units, links):
        for i, j in sentence_links:
            if i < len(src) and j < len(trg):
                counter[(src[i], trg[j])] += weight
    return counter


def _symbols(units: list[list[tuple[int, ...]]]) -> list[list[str]]:
    return [["_".join(map(str, unit)) for unit in sentence] for sentence in units]


# Sentence pairs per second of the whole align() (words, aligner, counting) on 2 CPU cores: 30,079 en-es Bible
# verses in 45 s (benchmarks/results/init_methods_es_307k, step "align"). Only for the expected time in the log
# line; a run's own figures land in its stats. fast_align has not been timed on real data: no estimate.
PAIRS_PER_SECOND = {"eflomal": 650.0}


def expected_time(aligner: str, pairs: int) -> str:
    """'about 40 s on 2 cores' for a known aligner, else 'no estimate for this aligner'."""
    rate = PAIRS_PER_SECOND.get(aligner)
    if rate is None:
        return "no estimate for this aligner"
    return f"about {duration(pairs / rate)} on 2 idle CPU cores; the aligner reports no progress of its own"


def align(
    corpus: Iterable[tuple[Sequence[str], Sequence[str]]] | object,
    source_tokenizer,
    target_tokenizer,
    *,
    aligner: str | Aligner = "eflomal",
    chunk_size: int = 200_000,
    segmenter: str | Segmenter | None = "auto",
    work_dir: str | Path | None = None,
) -> AlignmentCounts:
    """Tokenize, word-align and count token pairs.

    Args:
        corpus: a ParallelCorpus (``.source``/``.target`` lists), or an iterable of such chunks
            (streaming: each chunk is aligned on its own and the counts are summed).
        chunk_size: split an in-memory corpus into chunks of at most this many pairs.
        segmenter: word boundaries for text written without spaces, on both sides: ``auto`` (ICU
            if installed, else every token of such text is a unit), ``icu``, ``tokens`` or ``none``.
        work_dir: where the aligner writes its temporary files (default: the system's temporary
            directory); the path-level functions give a sibling of their output.

    Returns: :class:`AlignmentCounts` of shape (len(target_tokenizer), len(source_tokenizer)).
    """
    import scipy.sparse as sp

    aligner = get_aligner(aligner)
    if work_dir is not None and getattr(aligner, "work_dir", False) is None:
        aligner = dataclasses.replace(aligner, work_dir=work_dir)
    segmenter = get_segmenter(segmenter)
    if hasattr(corpus, "source") and hasattr(corpus, "target"):
        n = len(corpus.source)
        chunks = [(corpus.source[i:i + chunk_size], corpus.target[i:i + chunk_size]) for i in range(0, n, chunk_size)]
        logger.info("aligning %s sentence pairs with %s (%s)", f"{n:,}", aligner.name, expected_time(aligner.name, n))
    else:
        chunks = ((c.source, c.target) if hasattr(c, "source") else c for c in corpus)
        logger.info("aligning a streamed corpus with %s, chunk by chunk (%s)", aligner.name,
                    expected_time(aligner.name, 30_000))
    target_size, source_size = len(target_tokenizer), len(source_tokenizer)
    total = sp.csr_matrix((target_size, source_size))
    stats = Counter()
    for source_texts, target_texts in progress_bar(chunks, desc="aligning chunks", unit="chunk"):
        if len(source_texts) != len(target_texts):
            raise DataError(f"a corpus chunk has {len(source_texts)} source and {len(target_texts)} target lines")
        started = time.perf_counter()
        source_units = word_units(source_tokenizer, source_texts, segmenter=segmenter)
        target_units = word_units(target_tokenizer, target_texts, segmenter=segmenter)
        keep = [k for k, (s, t) in enumerate(zip(source_units, target_units)) if s and t]
        source_units = [source_units[k] for k in keep]
        target_units = [target_units[k] for k in keep]
        tokenized = time.perf_counter()
        # The aligner reports no progress of its own: say what is running and for how long it ran.
        logger.info("split %s pairs into words in %s; word-aligning them with %s", f"{len(keep):,}",
                    duration(tokenized - started), aligner.name)
        links = aligner.align(_symbols(source_units), _symbols(target_units)) if keep else []
        aligned = time.perf_counter()
        logger.info("%s aligned %s pairs in %s; counting token pairs", aligner.name, f"{len(keep):,}",
                    duration(aligned - tokenized))
        pairs = count_word_pairs(source_units, target_units, links)
        total = total + project_word_counts(pairs, target_size, source_size)
        stats.update({
            "pairs": len(source_texts), "pairs_aligned": len(keep),
            "source_tokens": sum(len(u) for s in source_units for u in s),
            "target_tokens": sum(len(u) for s in target_units for u in s),
            "source_units": sum(len(s) for s in source_units), "target_units": sum(len(s) for s in target_units),
            "links": sum(len(x) for x in links), "word_pairs": len(pairs),
            "seconds_tokenize": tokenized - started, "seconds_align": aligned - tokenized,
            "seconds_count": time.perf_counter() - aligned,
        })
    if not stats.get("pairs_aligned"):
        raise DataError("no sentence pair had text on both sides; check the corpus (is it empty?)")
    total = total.tocsr()
    total.sum_duplicates()
    covered = int((np.diff(total.indptr) > 0).sum())
    result = dict(stats)
    result.update({"aligner": aligner.name, "segmenter": segmenter_name(segmenter),
                   "target_tokens_with_counts": covered, "shards": 1})
    logger.info("aligned %s pairs: %s links, %s of %s target tokens have counts", f"{result['pairs_aligned']:,}",
                f"{result['links']:,}", f"{covered:,}", f"{target_size:,}")
    return AlignmentCounts(total, vocab_hash(source_tokenizer), vocab_hash(target_tokenizer), result)
