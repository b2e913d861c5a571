"""Target tokenizers: train one of the same family as the source model's (loading one:
:func:`transtok.loading.load_tokenizer`).

"Same family" means the trained tokenizer keeps everything of the source's pipeline except the
learned vocabulary: the normalizer, the pre-tokenizer (e.g. Llama-3's split regex, digit
splitting), the decoder and the post-processor are copied from the source's ``tokenizer.json``,
and only the model (BPE / WordPiece / Unigram) is trained anew. One repair: a split regex that
cuts words at combining marks keeps them in their word (:func:`keep_marks_in_words`). The
source's added/special tokens come first, in the source's order, so that their ids are small and the same in every target
tokenizer trained from that source; byte-fallback sources also get all 256 ``<0xXX>`` pieces. Reserved
special tokens that nothing uses (Gemma's ``<unusedN>``: :func:`unused_special_tokens`) are left out
unless asked for.

Training is reproducible (same texts and source → identical ``tokenizer.json``) for BPE and
WordPiece. Unigram is not quite: tokenizers' UnigramTrainer accumulates its EM statistics in
hash-map order, so the same pieces come out with scores that differ in the third decimal.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from transtok.artifacts import atomic_output_dir
from transtok.errors import ConfigError, DataError
from transtok.options import option

logger = logging.getLogger(__name__)

ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "cls_token", "sep_token", "mask_token")
BYTE_PIECES = [f"<0x{i:02X}>" for i in range(256)]
# Tokenizer attributes (besides roles) that a user of the target tokenizer expects to find unchanged.
COPIED_SETTINGS = ("model_max_length", "padding_side", "truncation_side", "clean_up_tokenization_spaces")
# Model options of the source that training must not lose (everything but the learned vocabulary).
_LEARNED = {"vocab", "merges", "type"}


def _source_spec(source_tokenizer) -> dict:
    backend = getattr(source_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(
            f"the source tokenizer {type(source_tokenizer).__name__} has no fast backend; "
            "load it with transtok.loading.load_tokenizer (fast tokenizers only)")
    return json.loads(backend.to_str())


def _mentions(component: dict | None, kind: str) -> bool:
    """Whether a (possibly nested Sequence) component of a tokenizer.json has a part of type ``kind``."""
    if not component:
        return False
    if component.get("type") == kind:
        return True
    parts = component.get("pretokenizers") or component.get("normalizers") or component.get("decoders") or []
    return any(_mentions(part, kind) for part in parts)


def _special_entries(spec: dict) -> list[dict]:
    """The source's added tokens (specials and others), in id order."""
    return sorted(spec.get("added_tokens") or [], key=lambda t: t["id"])


def _trainer(spec: dict, vocab_size: int, min_frequency: int, specials: list[str], show_progress: bool):
    from tokenizers import AddedToken, pre_tokenizers, trainers

    model = spec["model"]
    kind = model["type"]
    special_tokens = [AddedToken(s, special=True, normalized=False) for s in specials]
    byte_level = _mentions(spec.get("pre_tokenizer"), "ByteLevel")
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    if kind == "BPE":
        affixes = {key: model[key] for key in ("continuing_subword_prefix", "end_of_word_suffix") if model.get(key)}
        return trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_tokens,
            initial_alphabet=alphabet, show_progress=show_progress, **affixes)
    if kind == "Unigram":
        unk_id = model.get("unk_id")
        unk = model["vocab"][unk_id][0] if unk_id is not None else None
        return trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=special_tokens, unk_token=unk, initial_alphabet=alphabet,
            show_progress=show_progress)
    raise ConfigError(
        f"the source tokenizer's model type {kind!r} cannot be trained; transtok trains BPE, WordPiece and "
        "Unigram tokenizers (give a source model whose tokenizer is one of these, or a ready target tokenizer)")


# Characters inside a word (not at its start) are shifted into the supplementary private-use planes
# (U+F0000 and up) while training WordPiece; see _train_wordpiece.
_INNER = 0xF0000


class _InnerMarks(dict):
    """``str.translate`` table: code point → its private-use twin (astral characters stay as they are)."""

    def __missing__(self, code: int) -> int:
        self[code] = code + _INNER if code < 0x20000 else code
        return self[code]


def _unmark(token: str, prefix: str) -> str:
    plain = "".join(chr(ord(c) - _INNER) if ord(c) >= _INNER else c for c in token)
    return prefix + plain if token and ord(token[0]) >= _INNER else plain


def _train_wordpiece(backend, texts: list[str], model_spec: dict, vocab_size: int, min_frequency: int,
                     specials: list[str], show_progress: bool) -> None:
    """Train WordPiece deterministically and set it as ``backend``'s model.

    tokenizers' WordPieceTrainer numbers the ``##x`` alphabet in hash-map order, which changes merge
    tie-breaks from run to run. Marking word-inner characters instead (``abc`` → ``a`` + twins of
    ``b``, ``c``) gives a prefix-free BPE problem whose alphabet is sorted, hence a reproducible
    result; marked tokens map back to ``##`` pieces exactly as WordPiece's own training would.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    marks = _InnerMarks()
    normalize = backend.normalizer.normalize_str if backend.normalizer else (lambda text: text)
    split = backend.pre_tokenizer.pre_tokenize_str if backend.pre_tokenizer else (
        lambda text: [(word, None) for word in text.split()])

    def marked() -> Iterator[str]:
        for text in texts:
            yield " ".join(word[:1] + word[1:].translate(marks) for word, _ in split(normalize(text)))

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bpe.train_from_iterator(marked(), trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials, show_progress=show_progress),
        length=len(texts))
    prefix = model_spec.get("continuing_subword_prefix", "##")
    pieces = [_unmark(token, prefix) for token, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1])]
    vocab = {piece: index for index, piece in enumerate(dict.fromkeys(pieces))}
    backend.model = models.WordPiece(vocab, unk_token=model_spec.get("unk_token", "[UNK]"),
                                     continuing_subword_prefix=prefix,
                                     max_input_chars_per_word=model_spec.get("max_input_chars_per_word", 100))


def _split_words_for_training(backend, source_pieces: Iterable[str] = ()) -> None:
    """Make the trainer see what SentencePiece saw when the source marks spaces with ``▁`` only.

    Llama-2/Mistral ``tokenizer.json`` files (converted from a SentencePiece ``.model``) turn spaces
    into ``▁`` with a Metaspace that does not split, or in the normalizer: SentencePiece's trainer
    split the text itself. Trained as is, a whole line would be one "word" and BPE would learn pieces
    across words (``de▁los▁``). Like SentencePiece, split before each ``▁`` and, as its defaults
    ``split_by_unicode_script`` and ``split_by_number`` do, between letters, numbers and other
    characters (no ``Jesucristo,`` piece: Mistral's 32,000 pieces never mix letters with punctuation);
    digits are split one by one when the source has no piece of two digits (``split_digits``, as
    Llama-2 and Mistral). Only training sees these splits; the source's pre-tokenizer is kept.
    """
    from tokenizers import Regex, pre_tokenizers

    probe = "one two three"
    text = backend.normalizer.normalize_str(probe) if backend.normalizer else probe
    pieces = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer else [(text, None)]
    if not any("▁" in piece[1:] for piece, _ in pieces):
        return
    split_digits = not any(_TWO_DIGITS.search(piece) for piece in source_pieces if not BYTE_PIECE.match(piece))
    number = r"▁?\p{N}" if split_digits else r"▁?\p{N}+"
    classes = Regex(rf"▁?[\p{{L}}\p{{M}}]+|{number}|▁?[^\p{{L}}\p{{M}}\p{{N}}▁]+|▁")
    splits = [pre_tokenizers.Split("▁", behavior="merged_with_next"),
              pre_tokenizers.Split(classes, behavior="isolated")]
    backend.pre_tokenizer = pre_tokenizers.Sequence([backend.pre_tokenizer, *splits] if backend.pre_tokenizer
                                                    else splits)
    logger.info("the source tokenizer does not split words at '▁' before its model; splitting there and between "
                "letters, numbers and symbols (digits %s) for training, as SentencePiece does",
                "one by one" if split_digits else "in runs")


_MARK = regex.compile(r"\p{M}")  # a combining mark: vowel sign, virama, vowel point
# GPT-2's split regex, which a ByteLevel pre-tokenizer with use_regex=True applies (tokenizers'
# byte_level.rs), with combining marks (\p{M}) kept in their word: see keep_marks_in_words.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"


def _with_marks(pattern: str) -> str:
    r"""``pattern`` with every letter class ``\p{L}`` widened to letters and combining marks:
    ``[\p{L}\p{M}]`` outside brackets, ``\p{L}\p{M}`` inside them (so ``[^\s\p{L}]`` excludes marks
    too). Patterns that already name ``\p{M}`` are returned unchanged."""
    if r"\p{M}" in pattern or r"\p{L}" not in pattern:
        return pattern
    out, depth, i = [], 0, 0
    while i < len(pattern):
        if pattern.startswith(r"\p{L}", i):
            out.append(r"\p{L}\p{M}" if depth else r"[\p{L}\p{M}]")
            i += 5
            continue
        char = pattern[i]
        if char == "\\":  # an escaped character, copied as is
            out.append(pattern[i:i + 2])
            i += 2
            continue
        depth += char == "[" and not depth
        depth -= char == "]" and depth > 0 and pattern[i - 1] not in "[^"
        out.append(char)
        i += 1
    return "".join(out)


def keep_marks_in_words(pre_tokenizer: dict | None) -> dict | None:
    r"""The source's pre-tokenizer (a ``tokenizer.json`` section) with combining marks kept in their word.

    GPT-2-style split regexes (GPT-2, SmolLM2, Llama-3, Qwen2 …) match words as ``\p{L}+``, which
    stops at every combining mark (Unicode category M): a Devanagari or Bengali word is cut at each
    vowel sign and virama (``परमेश्वर`` → ``परम`` ``े`` ``श`` ``्`` ``वर``), vocalised Arabic and Hebrew at
    each vowel point. A tokenizer trained behind such a split can never learn a whole Hindi word
    (16,000 requested on the Hindi Bible: 3,073 learned). The target tokenizer is new, so its split
    may be repaired: ``\p{L}`` becomes letters-or-marks; on text without combining marks the pieces
    are exactly the source's. Returns a new section (the argument is not modified).
    """
    if not pre_tokenizer:
        return pre_tokenizer
    section = copy.deepcopy(pre_tokenizer)
    kind = section.get("type")
    if kind == "Sequence":
        section["pretokenizers"] = [keep_marks_in_words(part) for part in section.get("pretokenizers", [])]
    elif kind == "Split" and "Regex" in (section.get("pattern") or {}):
        section["pattern"] = {"Regex": _with_marks(section["pattern"]["Regex"])}
    elif kind == "ByteLevel" and section.get("use_regex", True):
        split = {"type": "Split", "pattern": {"Regex": _GPT2_SPLIT}, "behavior": "Isolated", "invert": False}
        section = {"type": "Sequence", "pretokenizers": [split, {**section, "use_regex": False}]}
    return section


_TWO_DIGITS = re.compile(r"\d\d")
BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _empty_model(model: dict) -> dict:
    """The source's model section with its learned vocabulary removed (options kept)."""
    empty = {k: v for k, v in model.items() if k not in ("vocab", "merges")}
    if model["type"] == "Unigram":
        empty.update(vocab=[], unk_id=None)
    else:
        empty["vocab"] = {}
        if model["type"] == "BPE":
            empty["merges"] = []
            empty["unk_token"] = None  # not in the empty vocabulary yet; restored after training
    return empty


def _remap_processor(component: Any, ids: dict[str, int]) -> Any:
    """Rewrite the special-token ids inside a post-processor spec to the target's ids.

    Covers TemplateProcessing (``special_tokens: {name: {ids, tokens}}``), Bert/Roberta processing
    (``sep``/``cls``: ``[token, id]``) and Sequences of them.
    """
    if isinstance(component, list):
        return [_remap_processor(c, ids) for c in component]
    if not isinstance(component, dict):
        return component
    out = {}
    for key, value in component.items():
        if key == "special_tokens" and isinstance(value, dict):
            out[key] = {name: {**entry, "ids": [ids[tok] for tok in entry["tokens"]]} for name, entry in value.items()}
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            out[key] = [value[0], ids[value[0]]]
        else:
            out[key] = _remap_processor(value, ids)
    return out


def _nonblank(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        if text and not text.isspace():
            yield text


def _reserved_tokens(spec: dict, left_out: Iterable[str] = ()) -> list[str]:
    """Tokens the target vocabulary starts with: the source's added tokens in id order (but those
    ``left_out``), then (for byte-fallback models) the 256 ``<0xXX>`` pieces, then a WordPiece unk
    missing from both."""
    left_out = set(left_out)
    reserved = list(dict.fromkeys(t["content"] for t in _special_entries(spec) if t["content"] not in left_out))
    if spec["model"].get("byte_fallback"):
        reserved += [piece for piece in BYTE_PIECES if piece not in set(reserved)]
    unk = spec["model"].get("unk_token")
    if spec["model"]["type"] == "WordPiece" and unk and unk not in reserved:
        reserved.append(unk)
    return reserved


MAX_VOCAB_SIZE = 1 << 22
"""Refused above this (4,194,304): no model has such a vocabulary, and the trainers abort on huge sizes."""
SHORT_VOCAB_WARNING = 0.5
"""Warn when the trained vocabulary is smaller than this fraction of the requested size."""


def minimum_vocab_size(source_tokenizer, *, keep_reserved: bool = False) -> int:
    """The smallest vocabulary a target tokenizer trained from this source can have, before counting
    the corpus's own characters: the special/added tokens it keeps (all of them with ``keep_reserved``,
    else all but :func:`unused_special_tokens`) and byte pieces (+ the 256-symbol byte-level alphabet)."""
    spec = _source_spec(source_tokenizer)
    left_out = () if keep_reserved else _unused_specials(spec, source_tokenizer)
    return _minimum(spec, _reserved_tokens(spec, left_out))


def _minimum(spec: dict, reserved: list[str]) -> int:
    return len(reserved) + (256 if _mentions(spec.get("pre_tokenizer"), "ByteLevel") else 0)


# Names of reserved special tokens that no text, role or template produces: Gemma's <unused0>, Llama-3's
# <|reserved_special_token_0|>, Mistral v3's [control_12], Tekken's <SPECIAL_20>, Phi-3's <|placeholder1|>,
# Qwen-1's <|extra_0|>. Not T5's <extra_id_0>: its sentinels are used in pretraining.
_UNUSED_BODY = r"(?:unused|reserved(?:_special_token)?|special|control|placeholder|extra)_?\d+"
_UNUSED_NAME = re.compile(rf"<\|?{_UNUSED_BODY}\|?>|\[{_UNUSED_BODY}\]", re.IGNORECASE)


def _processor_tokens(component: Any) -> set[str]:
    """The tokens a post-processor spec inserts (the ones :func:`_remap_processor` rewrites)."""
    if isinstance(component, list):
        return set().union(*map(_processor_tokens, component))
    if not isinstance(component, dict):
        return set()
    out = set()
    for key, value in component.items():
        if key == "special_tokens" and isinstance(value, dict):
            out.update(token for entry in value.values() for token in entry["tokens"])
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            out.add(value[0])
        else:
            out |= _processor_tokens(value)
    return out


def _chat_template_text(tokenizer) -> str:
    """The tokenizer's chat template(s) as one text (transformers allows a dict of named templates)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return "\n".join(map(str, template.values())) if isinstance(template, dict) else str(template)


def _role_tokens(tokenizer) -> dict[str, str]:
    """Named special tokens: bos/eos/unk/pad/... and model-specific ones (``image_token``, ``boi_token``)."""
    names = getattr(tokenizer, "SPECIAL_TOKENS_ATTRIBUTES", ROLES)
    values = {name: getattr(tokenizer, name, None) for name in names}
    return {name: str(value) for name, value in values.items() if value and not isinstance(value, (list, dict))}


def unused_special_tokens(source_tokenizer) -> list[str]:
    """The source's reserved special tokens that a trained target tokenizer leaves out by default, in id order.

    Conservative: only added tokens that are special, whose name says reserved/unused (``<unused12>``,
    ``<|reserved_special_token_3|>``, ``[control_9]``, ``<SPECIAL_20>``, ...), that have no role
    (bos/eos/..., ``image_token``), are not in the chat template and are not needed by the pipeline
    (post-processor, unk, padding). Gemma 3 has 6,242 such ``<unusedN>``, which would otherwise take a
    fifth of a 32,000-token target vocabulary; the model never produced them, so nothing is lost.
    """
    return _unused_specials(_source_spec(source_tokenizer), source_tokenizer)


def _unused_specials(spec: dict, source_tokenizer) -> list[str]:
    model = spec["model"]
    needed = set(_role_tokens(source_tokenizer).values()) | _processor_tokens(spec.get("post_processor"))
    needed.add(model.get("unk_token"))
    if model["type"] == "Unigram" and model.get("unk_id") is not None:
        needed.add(model["vocab"][model["unk_id"]][0])
    needed.add((spec.get("padding") or {}).get("pad_token"))
    template = _chat_template_text(source_tokenizer)
    return list(dict.fromkeys(
        entry["content"] for entry in _special_entries(spec)
        if entry.get("special") and _UNUSED_NAME.fullmatch(entry["content"]) and entry["content"] not in needed
        and entry["content"] not in template))


def _ranges(tokens: list[str], shown: int = 3) -> str:
    """``<unused0> .. <unused6241>, <SPECIAL_20>``: the first and last token of each kind (digits aside)."""
    kinds: dict[str, list[str]] = {}
    for token in tokens:
        kinds.setdefault(re.sub(r"\d+", "N", token), []).append(token)
    parts = [group[0] if len(group) == 1 else f"{group[0]} .. {group[-1]}" for group in kinds.values()]
    return ", ".join(parts[:shown] + (["..."] if len(parts) > shown else []))


# Candidates for the word-boundary mark of training (private use: stable under NFC/NFKC, never a letter).
_BOUNDARY_MARKS = tuple(chr(c) for c in range(0xE000, 0xE010))


def _mark_words(texts: list[str], segmenter) -> tuple[list[str], str | None]:
    """``texts`` with a private-use mark at every word boundary inside runs of unspaced scripts, and
    the mark (None when no text has such a boundary: the texts come back unchanged)."""
    from transtok.segment import inner_boundaries

    mark = next((m for m in _BOUNDARY_MARKS if not any(m in text for text in texts)), None)
    if mark is None:  # every candidate occurs in the text: leave merges unbounded rather than corrupt it
        logger.warning("the training text uses every private-use character U+E000..U+E00F; merges are not "
                       "bounded by words")
        return texts, None
    marked, cut = [], 0
    for text in texts:
        cuts = inner_boundaries(text, segmenter).tolist()
        if cuts:
            cut += len(cuts)
            text = mark.join(text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)]))
        marked.append(text)
    return (marked, mark) if cut else (texts, None)


def _split_at_mark(backend, mark: str) -> None:
    """Training only: split pre-tokens at ``mark`` and drop it, before the source's own pre-tokenizer."""
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.Split(mark, behavior="removed")
    backend.pre_tokenizer = pre_tokenizers.Sequence([split, backend.pre_tokenizer] if backend.pre_tokenizer
                                                    else [split])


def train_tokenizer(texts: Iterable[str], source_tokenizer, vocab_size: int, *, min_frequency: int = 2,
                    show_progress: bool | None = None, segmenter=None, at_most: bool = False,
                    keep_reserved: bool = False):
    """Train a target tokenizer of the source tokenizer's family on ``texts``.

    Returns a ``PreTrainedTokenizerFast`` with at most ``vocab_size`` tokens, the source's
    normalizer / pre-tokenizer (repaired by :func:`keep_marks_in_words` when ``texts`` have
    combining marks) / decoder / post-processor, special-token roles, extra special
    tokens, chat template and padding/length settings. Same texts and source → identical
    ``tokenizer.json``. ``show_progress=None`` shows the trainer's bar when stderr is a terminal.
    ``at_most``: ``vocab_size`` is a ceiling (a default, not the user's request): a text that supports
    fewer merges gives fewer tokens, without an error or a warning.

    ``segmenter`` (a name of :data:`transtok.segment.SEGMENTERS` or a segmenter; see
    :func:`transtok.segment.training_segmenter`) bounds merges by words in text written without
    spaces: a learned token never spans two of the segmenter's words there (the source's
    pre-tokenizer sees a whole clause as one word). Spaced text is unaffected; encoding is unchanged.

    The source's reserved special tokens (:func:`unused_special_tokens`, e.g. Gemma's ``<unusedN>``)
    are left out unless ``keep_reserved``; ``vocab_size`` counts the tokens kept, so learned tokens
    take their place.
    """
    from tokenizers import Tokenizer

    spec = _source_spec(source_tokenizer)
    kind = spec["model"]["type"]
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ConfigError(f"`vocab_size` must be a positive integer, got {vocab_size!r}")
    if vocab_size > MAX_VOCAB_SIZE:
        raise ConfigError(f"`vocab_size` {vocab_size:,} is more than {MAX_VOCAB_SIZE:,}, far beyond any model's "
                          "vocabulary (the largest have about 262k tokens); use e.g. `vocab_size` 32000")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ConfigError(f"`min_frequency` must be an integer >= 1, got {min_frequency!r}")
    source_added = _special_entries(spec)
    unused = [] if keep_reserved else _unused_specials(spec, source_tokenizer)
    dropped = set(unused)
    added = [entry for entry in source_added if entry["content"] not in dropped]
    specials = _reserved_tokens(spec, unused)
    minimum = _minimum(spec, specials)
    if vocab_size < minimum:
        raise ConfigError(
            f"`vocab_size` {vocab_size:,} is smaller than the {minimum:,} tokens every target tokenizer trained from "
            f"this source needs ({len(specials):,} special/added/byte tokens"
            f"{' + the 256-symbol byte-level alphabet' if minimum > len(specials) else ''}); use `vocab_size` "
            f"{minimum:,} or more (a few thousand at least for a useful vocabulary)")

    texts = list(_nonblank(texts))
    if not texts:
        raise DataError("the training texts are empty (no non-blank line); give target-language text, one "
                        "segment per line")
    characters = sum(map(len, texts))
    if at_most:
        vocab_size = min(vocab_size, minimum + characters)
    if vocab_size > minimum + characters:
        # Every learned token is a merge of at least one occurrence in the text.
        raise ConfigError(f"`vocab_size` {vocab_size:,} cannot be reached: the training text has {characters:,} "
                          f"characters ({len(texts):,} lines), so at most about {minimum + characters:,} tokens can "
                          "be learned; give more text or a smaller `vocab_size`")

    train_spec = copy.deepcopy(spec)
    pre_tokenizer = spec.get("pre_tokenizer")
    if any(_MARK.search(text) for text in texts):  # text without marks keeps the source's split exactly
        pre_tokenizer = keep_marks_in_words(pre_tokenizer)
        if pre_tokenizer != spec.get("pre_tokenizer"):
            logger.info("the text has combining marks (vowel signs, viramas, vowel points) that the source's split "
                        "regex cuts words at; the target tokenizer keeps them in their word")
    train_spec.update(model=_empty_model(spec["model"]), added_tokens=[], post_processor=None, truncation=None,
                      padding=None, pre_tokenizer=pre_tokenizer)
    backend = Tokenizer.from_str(json.dumps(train_spec))
    added_contents = {t["content"] for t in source_added}
    learned = spec["model"].get("vocab") or {}
    learned = learned.keys() if isinstance(learned, dict) else [piece for piece, _ in learned]
    _split_words_for_training(backend, (piece for piece in learned if piece not in added_contents))
    if segmenter is not None:
        from transtok.segment import segmenter_name, training_segmenter

        segmenter = training_segmenter(segmenter)
        if segmenter is not None:
            texts, mark = _mark_words(texts, segmenter)
            if mark is not None:
                _split_at_mark(backend, mark)
                logger.info("merges bounded by the %s segmenter's words in text written without spaces",
                            segmenter_name(segmenter))
    if unused:
        logger.info("dropped %s reserved special tokens of the source (%s) that have no role and are not in the "
                    "chat template; keep_reserved=True (`keep_reserved_tokens=True`) keeps them", f"{len(unused):,}",
                    _ranges(unused))
    if show_progress is None:  # TQDM_DISABLE: the CLI's -q
        show_progress = sys.stderr.isatty() and not os.environ.get("TQDM_DISABLE")
    logger.info("training a %s tokenizer of %s tokens on %s texts (%s characters)", kind, f"{vocab_size:,}",
                f"{len(texts):,}", f"{characters:,}")
    if kind == "WordPiece":
        _train_wordpiece(backend, texts, spec["model"], vocab_size, min_frequency, specials, show_progress)
    else:
        trainer = _trainer(spec, vocab_size, min_frequency, specials, show_progress)
        backend.train_from_iterator(texts, trainer, length=len(texts))

    trained = json.loads(backend.to_str())
    model = trained["model"]
    size = backend.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        # The trainers keep every character of the corpus even past vocab_size.
        raise ConfigError(
            f"`vocab_size` {vocab_size:,} cannot hold the special tokens and the {size - len(specials):,} symbols of "
            f"this corpus's alphabet (every distinct character is kept); use `vocab_size` {size:,} or more")
    # Restore the source's model options (unk token, byte fallback, dropout, ...) around the new vocabulary.
    for key, value in spec["model"].items():
        if key not in _LEARNED and key != "unk_id":
            model[key] = value
    if kind == "Unigram" and spec["model"].get("unk_id") is not None:
        unk = spec["model"]["vocab"][spec["model"]["unk_id"]][0]
        model["unk_id"] = next(i for i, (piece, _) in enumerate(model["vocab"]) if piece == unk)
    vocab = backend.get_vocab(with_added_tokens=True)
    trained["added_tokens"] = [{**entry, "id": vocab[entry["content"]]} for entry in added]
    trained["post_processor"] = _remap_processor(spec.get("post_processor"), vocab)
    trained["truncation"], trained["padding"] = spec.get("truncation"), spec.get("padding")
    trained["pre_tokenizer"] = pre_tokenizer  # undo _split_words_for_training and _split_at_mark
    target = wrap_like(source_tokenizer, Tokenizer.from_str(json.dumps(trained, ensure_ascii=False)),
                       left_out=unused)
    logger.info("trained a %s tokenizer of %s tokens (%d special/added)", kind, f"{len(target):,}", len(added))
    if len(target) < SHORT_VOCAB_WARNING * vocab_size and not at_most:
        logger.warning("trained only %s of the %s tokens requested: the training text (%s lines, %s characters) has "
                       "no more merges seen at least %d times; give more text for a vocabulary of that size",
                       f"{len(target):,}", f"{vocab_size:,}", f"{len(texts):,}", f"{characters:,}", min_frequency)
    return target


def wrap_like(source_tokenizer, backend, *, left_out: Iterable[str] = ()):
    """A ``PreTrainedTokenizerFast`` around ``backend`` with the source's special-token roles (model-specific
    ones such as ``image_token`` too), extra special tokens (but those ``left_out`` of ``backend``), chat
    template and padding/length settings."""
    from transformers import PreTrainedTokenizerFast

    settings = {key: getattr(source_tokenizer, key) for key in COPIED_SETTINGS if hasattr(source_tokenizer, key)}
    named = _role_tokens(source_tokenizer)
    roles = {key: value for key, value in named.items() if key in ROLES}
    model_specific = {key: value for key, value in named.items() if key not in ROLES}
    left_out = set(left_out)
    extra = [str(t) for t in (getattr(source_tokenizer, "extra_special_tokens", None) or []) if str(t) not in left_out]
    wrapped = PreTrainedTokenizerFast(tokenizer_object=backend, **roles, extra_special_tokens=extra, **settings,
                                      **({"model_specific_special_tokens": model_specific} if model_specific else {}))
    wrapped.chat_template = getattr(source_tokenizer, "chat_template", None)
    return wrapped


def save_tokenizer(tokenizer, output: str | os.PathLike, *, overwrite: bool = False,
                   inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write ``tokenizer`` to ``output`` atomically (loadable with ``AutoTokenizer.from_pretrained``);
    ``inputs``: the paths it was made from, which the output must not be, contain or lie inside."""
    with atomic_output_dir(output, overwrite=overwrite, inputs=inputs) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return Path(output)



@dataclass
class TokenizerTraining:
    """What ``transtok train-tokenizer`` trains (:func:`train_tokenizer`, :func:`transtok.extension.extend_tokenizer`)."""

    vocab_size: int | None = option(None, metavar="N", exclusive="size",
                                    help="replace recipe: a new vocabulary of N tokens, specials included")
    extend: int | None = option(None, metavar="N", exclusive="size",
                                help="extend recipe: the source tokenizer whole (same ids) plus N tokens learned on the "
                                     "corpus (BPE sources: the merge list continues)")
    min_frequency: int = option(2, group="advanced",
                                help="ignore merges seen fewer times (BPE/WordPiece; default: %(default)s)")
    keep_reserved_tokens: bool = option(
        False, group="advanced",
        help="keep the source's reserved special tokens (Gemma's <unusedN>, Llama-3's <|reserved_special_token_N|>, "
             "Mistral's [control_N]) that have no role and are not in the chat template; by default a trained "
             "vocabulary leaves them out and learns tokens instead")
