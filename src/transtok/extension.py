"""Vocabulary extension: the source tokenizer whole, plus N tokens learned on target-language text.

The other recipe besides replacing the vocabulary (:func:`transtok.tokenizer.train_tokenizer`):
every source token keeps its id, and N new tokens get the ids after the source's (after its added
tokens too), so the extended model still reads and writes the source language and its chat format.

For BPE the merge list is *continued*: the target text is normalized and pre-tokenized by the
source pipeline, every word is encoded by the source BPE model, and the most frequent adjacent
pair of tokens within a word becomes a new merge (and token), N times, with pair counts updated
incrementally. Because all source merges rank before the new ones and no new token is a source
token (a pair that spells an existing token is skipped, never duplicated), the extended tokenizer
applies every source merge exactly as before and only then the new ones, in the order learned:

* text on which no new merge applies encodes exactly as with the source tokenizer, and splitting
  each new token back into the pair it was merged from always gives the source encoding;
* every new token is produced on the text it was learned from (checked, see :class:`ExtensionReport`).

Byte-fallback (SentencePiece-style) models also get the target's characters that the source only
spells as ``<0xXX>`` bytes (the most frequent first, counted in N); byte pieces are never merged.
"""
from __future__ import annotations

import copy
import heapq
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from transtok.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_SAMPLE = 40


@dataclass
class ExtensionReport:
    """What the extension added and whether the extended tokenizer produces it."""

    source_tokens: int
    """len(source tokenizer): the first new id."""
    requested: int
    new_tokens: int
    new_characters: int
    """New single-character tokens (byte-fallback sources only)."""
    duplicates_skipped: int
    """Pairs whose concatenation is already a token: skipped, never added twice."""
    reachable: int
    """New tokens the extended tokenizer produces on the training text or on their own string."""
    reachable_in_text: int
    """New tokens in the final encoding of the training text; the others are intermediate tokens
    (merged further wherever they occur in this text), produced on their own string."""
    unreachable: list[str] = field(default_factory=list)
    sample: list[str] = field(default_factory=list)
    """Readable new tokens, the first learned (most frequent) first."""

    @property
    def reachable_share(self) -> float:
        return self.reachable / self.new_tokens if self.new_tokens else 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "reachable_share": self.reachable_share}


def _spec(tokenizer) -> dict:
    from transtok.tokenizer import _source_spec

    return _source_spec(tokenizer)


def _word_splitter(spec: dict):
    """A function text → pre-tokenized words, as the source pipeline splits them for its model.

    Sources that mark spaces with ``▁`` only in the normalizer (Llama-2 style) are split before
    each ``▁`` like SentencePiece does, so no merge is learned across words.
    """
    from tokenizers import Tokenizer

    from transtok.tokenizer import _split_words_for_training

    plain = copy.deepcopy(spec)
    plain.update(added_tokens=[], post_processor=None, truncation=None, padding=None)
    backend = Tokenizer.from_str(json.dumps(plain))
    _split_words_for_training(backend)
    normalize = backend.normalizer.normalize_str if backend.normalizer else (lambda text: text)
    if backend.pre_tokenizer is None:
        return lambda text: [normalize(text)]
    split = backend.pre_tokenizer.pre_tokenize_str
    return lambda text: [word for word, _ in split(normalize(text))]


def _bpe_model(spec: dict):
    """The BPE model of ``spec`` alone (no dropout, so tokenization is deterministic)."""
    from tokenizers import Tokenizer

    model_only = {"version": spec.get("version", "1.0"), "truncation": None, "padding": None, "added_tokens": [],
                  "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
                  "model": {**spec["model"], "dropout": None}}
    return Tokenizer.from_str(json.dumps(model_only, ensure_ascii=False)).model


def _with_additions(spec: dict, first_id: int, tokens: Sequence[str], merges: Sequence[tuple[str, str]]) -> dict:
    """``spec`` with ``tokens`` appended to the model vocabulary from ``first_id`` and ``merges``
    appended to the merge list (in the list's own format)."""
    out = copy.deepcopy(spec)
    vocab = out["model"]["vocab"]
    for offset, token in enumerate(tokens):
        vocab[token] = first_id + offset
    existing = out["model"].get("merges") or []
    as_strings = bool(existing) and isinstance(existing[0], str)
    out["model"]["merges"] = list(existing) + [f"{a} {b}" if as_strings else [a, b] for a, b in merges]
    return out


def _check_source(spec: dict) -> None:
    model = spec["model"]
    if model["type"] != "BPE":
        raise ConfigError(
            f"vocabulary extension continues a BPE merge list; the source tokenizer's model is {model['type']!r}. "
            "Use the replace recipe (train-tokenizer --vocab-size / transfer --mode replace) for this source")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise ConfigError("vocabulary extension does not support BPE models with a continuing_subword_prefix or "
                          "end_of_word_suffix; use the replace recipe for this source")
    merges = model.get("merges") or []
    if any(isinstance(m, str) and m.count(" ") != 1 for m in merges[:1000]):
        raise ConfigError("the source's merge list is not in 'left right' form; save the tokenizer with a recent "
                          "tokenizers version (merges as pairs) and try again")


def _learn(words: list[list[int]], freqs: list[int], strings: dict[int, str], banned: set[int], n: int,
           first_id: int, min_frequency: int) -> tuple[list[tuple[int, int]], int]:
    """Greedy BPE on ``words`` (token ids after the source merges): up to ``n`` merges.

    Pair counts are kept incrementally (only the words holding the merged pair are rewritten), in a
    max-heap with lazy deletion; ties go to the lexicographically smaller pair of strings, so the
    result is reproducible. Pairs whose concatenation is already in ``strings`` are skipped.
    Returns the merges (as id pairs; merge k creates id ``first_id + k``) and the skipped count.
    """
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)

    def pairs(symbols: list[int]):
        for a, b in zip(symbols, symbols[1:]):
            if a not in banned and b not in banned:
                yield a, b

    for index, (symbols, freq) in enumerate(zip(words, freqs)):
        for pair in pairs(symbols):
            counts[pair] += freq
            where[pair].add(index)
    heap = [(-c, strings[a], strings[b], a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)
    known = set(strings.values())
    merges: list[tuple[int, int]] = []
    skipped = 0
    while len(merges) < n and heap:
        negative, _, _, a, b = heapq.heappop(heap)
        count = counts.get((a, b), 0)
        if count != -negative:  # stale entry: re-queue with the current count
            if count > 0:
                heapq.heappush(heap, (-count, strings[a], strings[b], a, b))
            continue
        if count < min_frequency:
            break
        merged = strings[a] + strings[b]
        if merged in known:
            skipped += 1
            counts.pop((a, b), None)
            continue
        new = first_id + len(merges)
        strings[new] = merged
        known.add(merged)
        merges.append((a, b))
        changed: set[tuple[int, int]] = set()
        for index in where.pop((a, b), ()):
            symbols = words[index]
            out: list[int] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            if len(out) == len(symbols):
                continue
            freq = freqs[index]
            for pair in pairs(symbols):
                counts[pair] -= freq
            for pair in pairs(out):
                counts[pair] += freq
                where[pair].add(index)
                changed.add(pair)
            words[index] = out
        counts.pop((a, b), None)
        for pair in changed:
            if counts.get(pair, 0) > 0:
                heapq.heappush(heap, (-counts[pair], strings[pair[0]], strings[pair[1]], *pair))
    return merges, skipped


def extend_tokenizer(texts: Iterable[str], source_tokenizer, new_tokens: int, *, min_frequency: int = 2):
    """The source tokenizer plus up to ``new_tokens`` tokens learned on ``texts``; returns
    ``(tokenizer, ExtensionReport)``.

    Ids ``0 .. len(source_tokenizer) - 1`` are the source's, unchanged (model vocabulary and added
    tokens); new tokens follow in the order learned. Normalizer, pre-tokenizer, decoder,
    post-processor, special tokens, roles and chat template are the source's. Fewer tokens come
    out when the text has fewer pairs seen ``min_frequency`` times. Unreachable new tokens (none
    when the source's pipeline is deterministic) are logged as a warning and listed in the report.
    """
    from tokenizers import Tokenizer

    from transtok.tokenizer import BYTE_PIECES, wrap_like

    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens <= 0:
        raise ConfigError(f"the number of new tokens (`extend`, `new_tokens`) must be a positive integer, got {new_tokens!r}")
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ConfigError(f"`min_frequency` must be an integer >= 1, got {min_frequency!r}")
    spec = _spec(source_tokenizer)
    _check_source(spec)
    first_id = len(source_tokenizer)
    vocab: dict[str, int] = spec["model"]["vocab"]
    if vocab and max(vocab.values()) >= first_id:
        raise ConfigError(f"the source tokenizer's ids are not contiguous (model id {max(vocab.values())} >= "
                          f"{first_id} tokens); it cannot be extended safely")
    # tokenizers numbers the added tokens missing from the model vocabulary from the model's size on, so
    # those past it (Llama-3's, Qwen2's, Gemma's specials) would move behind the new tokens. Entered in the
    # model vocabulary they keep their ids (the model never sees them: they are taken out of the text first).
    used = set(vocab.values())
    for entry in spec.get("added_tokens") or []:
        if entry["content"] not in vocab and entry["id"] not in used:
            vocab[entry["content"]] = entry["id"]
    split = _word_splitter(spec)
    word_counts: Counter[str] = Counter()
    lines = 0
    for text in texts:
        if text and not text.isspace():
            word_counts.update(split(text))
            lines += 1
    if not word_counts:
        raise DataError("the target texts are empty (no non-blank line); give target-language text, one "
                        "segment per line")
    logger.info("extending a vocabulary of %d tokens by up to %d, from %d lines (%d distinct words)",
                first_id, new_tokens, lines, len(word_counts))

    # Byte-fallback sources: the target's characters the source can only spell in bytes come first.
    chars: list[str] = []
    if spec["model"].get("byte_fallback"):
        char_counts: Counter[str] = Counter()
        for word, count in word_counts.items():
            for char in word:
                if char not in vocab:
                    char_counts[char] += count
        chars = [c for c, k in sorted(char_counts.items(), key=lambda kv: (-kv[1], kv[0])) if k >= min_frequency]
        chars = chars[:new_tokens]
    base = _with_additions(spec, first_id, chars, [])
    model = _bpe_model(base)
    words = list(word_counts)
    symbols = [[token.id for token in model.tokenize(word)] for word in words]
    strings = {i: t for t, i in base["model"]["vocab"].items()}
    added_contents = {t["content"] for t in spec.get("added_tokens") or []}
    banned = {i for t, i in base["model"]["vocab"].items() if t in set(BYTE_PIECES) or t in added_contents}
    unk = spec["model"].get("unk_token")
    if unk in base["model"]["vocab"]:
        banned.add(base["model"]["vocab"][unk])
    merges, skipped = _learn(symbols, [word_counts[w] for w in words], strings, banned,
                             new_tokens - len(chars), first_id + len(chars), min_frequency)
    added = chars + [strings[first_id + len(chars) + k] for k in range(len(merges))]
    extended_spec = _with_additions(spec, first_id, added, [(strings[a], strings[b]) for a, b in merges])
    backend = Tokenizer.from_str(json.dumps(extended_spec, ensure_ascii=False))
    extended = wrap_like(source_tokenizer, backend)
    report = check_reachable(extended, first_id, list(word_counts)[:200_000], requested=new_tokens,
                             new_characters=len(chars), duplicates=skipped)
    if len(added) < new_tokens:
        logger.warning("only %d new tokens could be learned (pairs seen at least %d times); asked for %d",
                       len(added), min_frequency, new_tokens)
    return extended, report


def _readable(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def check_reachable(extended, first_id: int, words: Sequence[str], *, requested: int = 0, new_characters: int = 0,
                    duplicates: int = 0) -> ExtensionReport:
    """Which new ids (``first_id`` and up) the extended tokenizer produces: on ``words`` (pre-tokenized
    target words, in their normalized form), or on each token's own string (decoded and encoded as a
    text, or given to the BPE model as a word piece)."""
    n_new = len(extended) - first_id
    backend = extended.backend_tokenizer
    seen: set[int] = set()
    model = backend.model
    for word in words:
        seen.update(t.id for t in model.tokenize(word) if t.id >= first_id)
    in_text = len(seen)
    missing = [i for i in range(first_id, first_id + n_new) if i not in seen]
    for i, token in zip(missing, extended.convert_ids_to_tokens(missing)):
        # An intermediate token that later merges always absorb in this text: produced on its own
        # string, as a text (byte-level) or as a word piece (after a Metaspace-style prefix).
        if extended.encode(extended.decode([i]), add_special_tokens=False) == [i] or \
                [t.id for t in model.tokenize(token)] == [i]:
            seen.add(i)
    unreachable = [i for i in range(first_id, first_id + n_new) if i not in seen]
    report = ExtensionReport(source_tokens=first_id, requested=requested or n_new, new_tokens=n_new,
                             new_characters=new_characters, duplicates_skipped=duplicates, reachable=len(seen),
                             reachable_in_text=in_text,
                             unreachable=extended.convert_ids_to_tokens(unreachable),
                             sample=_readable(extended, range(first_id, first_id + min(n_new, _SAMPLE))))
    if unreachable:
        logger.warning("%d of %d new tokens are never produced by the extended tokenizer: %s", len(unreachable),
                       n_new, report.unreachable[:10])
    logger.info("extended tokenizer: %d new tokens (%d characters, %d duplicate pairs skipped), %d reachable",
                n_new, new_characters, duplicates, len(seen))
    return report


def extends(source_tokenizer, target_tokenizer) -> bool:
    """Whether ``target_tokenizer`` is ``source_tokenizer`` plus new tokens: longer, and every source
    id names the same token in both."""
    n = len(source_tokenizer)
    if len(target_tokenizer) <= n:
        return False
    ids = list(range(n))
    return source_tokenizer.convert_ids_to_tokens(ids) == target_tokenizer.convert_ids_to_tokens(ids)
