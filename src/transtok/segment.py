"""Word spans of a text, including text written without spaces between words.

Spaced text is split by the regex ``[\\w\\p{M}]+|[^\\w\\p{M}\\s]`` (a run of letters, digits and
combining marks, or one punctuation mark): marks belong to their word, or Devanagari, Bengali or
vocalised Arabic words would fall apart at every vowel sign, virama or haraka (Python's ``\\w`` has
no marks). Chinese, Japanese, Thai, Lao, Khmer and Burmese are written without spaces, so a whole
clause is one match; runs of those scripts (found by Unicode script extension, so that marks, the
prolonged-sound mark and CJK punctuation stay in the run) are instead split at the word boundaries of
a segmenter. The default is ICU's word break iterator (dictionary-based for every one of these
scripts) through the optional package ``icu4py``; without it each character is its own segment, so
that after the caller snaps segments to whole tokens every token of the run is a unit of its own
(one warning says how to get the better one).
"""
from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import regex

from transtok.errors import ConfigError, MissingDependencyError, require

logger = logging.getLogger(__name__)

WORD = regex.compile(r"[\w\p{M}]+|[^\w\p{M}\s]")
NO_SPACE_SCRIPTS = ("Han", "Hiragana", "Katakana", "Thai", "Lao", "Khmer", "Myanmar")
"""Scripts written without spaces between words (Unicode script names)."""
_RUN = regex.compile("[" + "".join(f"\\p{{scx={s}}}" for s in NO_SPACE_SCRIPTS) + "]+")
_SCRIPT = {s: regex.compile(f"\\p{{scx={s}}}") for s in NO_SPACE_SCRIPTS}

SEGMENTERS = ("auto", "icu", "tokens", "none")
"""``auto``: ICU when icu4py is installed, else ``tokens`` with a warning; ``icu``: ICU or an error;
``tokens``: every token of an unspaced run is a unit; ``none``: the regex alone (one unit per clause)."""
SEGMENTER_BY_SCRIPT = {script: "icu" for script in NO_SPACE_SCRIPTS}
"""What ``auto`` uses per script. ICU's dictionaries cover all of them; a per-language segmenter
(jieba, MeCab, PyThaiNLP) would only be worth a dependency if it measurably improved the mapping."""
INSTALL_HINT = "pip install 'transtok[segment]'"


class Segmenter(Protocol):
    """Word boundaries of a text: sorted character offsets where a word may begin or end."""

    name: str

    def boundaries(self, text: str) -> np.ndarray: ...


class IcuSegmenter:
    """ICU's word break iterator (root locale: the break engine is chosen by script, not locale)."""

    name = "icu"

    def __init__(self) -> None:
        self._breakers = require("icu4py.breakers", package="icu4py", extra="segment",
                                 purpose="Word segmentation of text written without spaces")

    def boundaries(self, text: str) -> np.ndarray:
        if not text:
            return np.zeros(1, dtype=np.int64)
        ends = np.fromiter((end for _, end in self._breakers.WordBreaker(text, "und").segments()), dtype=np.int64)
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        if points.max() > 0xFFFF:  # ICU counts UTF-16 code units: map them back to characters
            utf16 = np.r_[0, np.cumsum(1 + (points > 0xFFFF))]
            ends = np.searchsorted(utf16, ends)
        return np.r_[0, ends]


class TokenSegmenter:
    """Every character is a segment: once snapped to whole tokens, every token is a unit."""

    name = "tokens"

    def boundaries(self, text: str) -> np.ndarray:
        return np.arange(len(text) + 1, dtype=np.int64)


class AutoSegmenter:
    """ICU when installed, else :class:`TokenSegmenter` and one warning with the install command."""

    name = "auto"
    _warned = False

    def __init__(self) -> None:
        self._inner: Segmenter | None = None

    def boundaries(self, text: str) -> np.ndarray:
        if self._inner is None:
            try:
                self._inner = IcuSegmenter()
            except MissingDependencyError:
                self._inner = TokenSegmenter()
                if not AutoSegmenter._warned:
                    AutoSegmenter._warned = True
                    logger.warning("text in a script written without spaces (%s) is split into words by ICU, "
                                   "which needs the optional package 'icu4py' (not installed): %s. Until then "
                                   "every token of such text is aligned as a word of its own.",
                                   ", ".join(scripts_of(text)) or "?", INSTALL_HINT)
        return self._inner.boundaries(text)

    @property
    def used(self) -> str:
        """The segmenter actually used (``icu`` or ``tokens``), or ``auto`` before any unspaced text."""
        return self._inner.name if self._inner is not None else self.name


def get_segmenter(name: str | Segmenter | None) -> Segmenter | None:
    """A segmenter by name (``auto``, ``icu``, ``tokens``), ``None`` for ``none``, or the object itself."""
    if name is None or not isinstance(name, str):
        return name
    if name == "none":
        return None
    if name == "auto":
        return AutoSegmenter()
    if name == "icu":
        return IcuSegmenter()
    if name == "tokens":
        return TokenSegmenter()
    raise ConfigError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")


def segmenter_name(segmenter: Segmenter | None) -> str:
    if segmenter is None:
        return "none"
    return getattr(segmenter, "used", segmenter.name)


def scripts_of(text: str) -> list[str]:
    """The scripts written without spaces that occur in ``text``, in :data:`NO_SPACE_SCRIPTS` order."""
    return [s for s, pattern in _SCRIPT.items() if pattern.search(text)]


def _split(starts: np.ndarray, ends: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split sorted disjoint spans at the cut positions that fall strictly inside them."""
    if not len(starts) or not len(cuts):
        return starts, ends
    i = np.maximum(np.searchsorted(starts, cuts, side="right") - 1, 0)
    cuts = np.unique(cuts[(cuts > starts[i]) & (cuts < ends[i])])
    return np.sort(np.r_[starts, cuts]), np.sort(np.r_[ends, cuts])


def _spans(pattern, text: str) -> tuple[np.ndarray, np.ndarray]:
    spans = np.fromiter((c for m in pattern.finditer(text) for c in m.span()), dtype=np.int64)
    return spans[0::2], spans[1::2]


def inner_boundaries(text: str, segmenter: Segmenter) -> np.ndarray:
    """Word boundaries that no whitespace marks, around and inside runs of unspaced scripts (sorted
    character offsets): the segmenter's boundaries inside a run, and a run's edges where it touches
    other text (``王？``, ``神X``) rather than whitespace or the start or end of ``text``."""
    run_starts, run_ends = _spans(_RUN, text)
    if not len(run_starts):
        return np.zeros(0, dtype=np.int64)
    cuts = segmenter.boundaries(text)
    run = np.searchsorted(run_starts, cuts, side="right") - 1
    inside = (run >= 0) & (cuts > run_starts[np.maximum(run, 0)]) & (cuts < run_ends[np.maximum(run, 0)])
    edges = np.r_[run_starts, run_ends]
    edges = edges[(edges > 0) & (edges < len(text))]
    edges = edges[[not (text[e - 1].isspace() or text[e].isspace()) for e in edges.tolist()]]
    return np.unique(np.r_[cuts[inside], edges]).astype(np.int64)


def training_segmenter(name: str | Segmenter | None) -> Segmenter | None:
    """The segmenter whose words bound a target tokenizer's merges, or None (merges as the source's
    pre-tokenizer allows).

    ``auto``: ICU when icu4py is installed, else None with one warning (``tokens`` would make every
    character of an unspaced run a word, i.e. no merges there at all); ``tokens`` and ``none``: None.
    """
    if name is None or not isinstance(name, str):
        return name
    if name in ("none", "tokens"):
        return None
    if name == "auto":
        try:
            return IcuSegmenter()
        except MissingDependencyError:
            logger.warning("text written without spaces is not split into words for tokenizer training: that needs "
                           "the optional package 'icu4py' (not installed): %s. Until then merges may span words there.",
                           INSTALL_HINT)
            return None
    return get_segmenter(name)


def word_spans(text: str, segmenter: Segmenter | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the words of ``text``, sorted; whitespace belongs to no word.

    Outside runs of unspaced scripts a word is a regex word (``\\w+`` or one punctuation mark); inside
    them, a segment between two of the segmenter's boundaries. Text without such runs (or with
    ``segmenter=None``) gives exactly the regex words."""
    starts, ends = _spans(WORD, text)
    if segmenter is None:
        return starts, ends
    run_starts, run_ends = _spans(_RUN, text)
    if not len(run_starts):
        return starts, ends
    # Regex words cut where a run begins or ends; the pieces inside runs give way to the segments.
    starts, ends = _split(starts, ends, np.r_[run_starts, run_ends])
    run = np.maximum(np.searchsorted(run_starts, starts, side="right") - 1, 0)
    outside = (starts < run_starts[run]) | (starts >= run_ends[run])
    seg_starts, seg_ends = _split(run_starts, run_ends, segmenter.boundaries(text))
    order = np.argsort(np.r_[starts[outside], seg_starts], kind="stable")
    return np.r_[starts[outside], seg_starts][order], np.r_[ends[outside], seg_ends][order]
