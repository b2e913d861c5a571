"""What each token of a tokenizer *is*, independent of its family's spelling conventions.

A byte-level BPE token ``Ġcasa``, a SentencePiece piece ``▁casa`` and a WordPiece word-initial
``casa`` all have the canonical surface ``b" casa"``; ``##sa``, ``sa`` (no marker) → ``b"sa"``;
byte-fallback ``<0xC3>`` → ``b"\\xc3"``. Canonical bytes make exact overlap between two
vocabularies a dictionary join, and let a target token be re-tokenized by the source
tokenizer's *model* alone (no normalizer or pre-tokenizer in the way).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from functools import lru_cache
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

Family = Literal["byte_level", "metaspace", "wordpiece", "plain"]
ROLES = ("bos", "eos", "pad", "unk", "cls", "sep", "mask")
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> tuple[dict[int, str], dict[str, int]]:
    """GPT-2's reversible byte → printable-character table (and its inverse)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    to_char = {b: chr(c) for b, c in zip(printable, chars)}
    return to_char, {c: b for b, c in to_char.items()}


def _backend_json(tokenizer) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def _mentions(component: dict | None, kind: str) -> bool:
    """Whether a (possibly nested Sequence) tokenizers component contains a part of type ``kind``."""
    if not component:
        return False
    if component.get("type") == kind:
        return True
    parts = component.get("pretokenizers") or component.get("decoders") or component.get("normalizers") or []
    return any(_mentions(p, kind) for p in parts)


def tokenizer_family(tokenizer) -> Family:
    """How the tokenizer spells word boundaries and bytes (see module docstring)."""
    spec = _backend_json(tokenizer)
    if spec["model"]["type"] == "WordPiece":
        return "wordpiece"
    if _mentions(spec.get("pre_tokenizer"), "ByteLevel") or _mentions(spec.get("decoder"), "ByteLevel"):
        return "byte_level"
    if (_mentions(spec.get("pre_tokenizer"), "Metaspace") or _mentions(spec.get("decoder"), "Metaspace")
            or _mentions(spec.get("normalizer"), "Prepend") or "▁" in json.dumps(spec.get("decoder"))):
        return "metaspace"
    return "plain"


def vocab_hash(tokenizer) -> str:
    """A short fingerprint of the vocabulary (tokens and ids, added tokens included)."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()[:16]


def special_ids(tokenizer) -> set[int]:
    """Ids of special tokens: role tokens and added tokens flagged special."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    return ids


def _piece_bytes(piece: str, family: Family, wordpiece_prefix: str) -> bytes:
    if family == "byte_level":
        _, to_byte = _byte_level_alphabet()
        try:
            return bytes(to_byte[c] for c in piece)
        except KeyError:  # an added, non-byte-mapped token: its text is literal
            return piece.encode()
    if family == "metaspace":
        match = _BYTE_PIECE.match(piece)
        if match:
            return bytes([int(match.group(1), 16)])
        return piece.replace("▁", " ").encode()
    if family == "wordpiece":
        if piece.startswith(wordpiece_prefix):
            return piece[len(wordpiece_prefix):].encode()
        return b" " + piece.encode()
    return piece.encode()


def token_bytes(tokenizer) -> list[bytes | None]:
    """Canonical surface bytes of every id ``0..len(tokenizer)-1``; ``None`` for special tokens."""
    family = tokenizer_family(tokenizer)
    prefix = _backend_json(tokenizer)["model"].get("continuing_subword_prefix") or "##"
    specials = special_ids(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    added = {i for i, tok in tokenizer.added_tokens_decoder.items()}
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if family == "metaspace" and piece is not None and _BYTE_PIECE.match(piece):
            out.append(_piece_bytes(piece, family, prefix))  # byte-fallback pieces are bytes even if added
        elif i in specials or piece is None:
            out.append(None)
        elif i in added:
            out.append(piece.encode())
        else:
            out.append(_piece_bytes(piece, family, prefix))
    return out


def _to_model_alphabet(data: bytes, family: Family, wordpiece_prefix: str) -> list[str]:
    """Spell canonical bytes in a tokenizer model's alphabet (a list of strings tokenized separately)."""
    if family == "byte_level":
        to_char, _ = _byte_level_alphabet()
        return ["".join(to_char[b] for b in data)]
    if family == "metaspace":
        text = data.decode("utf-8", errors="replace").replace("\ufffd", "")
        return [text.replace(" ", "▁")] if text else []
    if family == "wordpiece":
        text = data.decode("utf-8", errors="replace").replace("\ufffd", "")
        if text.startswith(" "):
            return [w if i == 0 else wordpiece_prefix + w for i, w in enumerate(text[1:].split(" ")) if w]
        return [wordpiece_prefix + text] if text else []
    return [data.decode("utf-8", errors="replace")]


def decompose(target_surfaces: list[bytes | None], source_tokenizer) -> list[list[int]]:
    """Re-tokenize each target token's surface with the source tokenizer's model (FVT).

    Returns, per target id, the source ids spelling it in order (empty for special tokens and
    surfaces the source cannot spell). The model is called directly, so normalizers and
    pre-tokenizers cannot add or drop word-boundary markers.
    """
    family = tokenizer_family(source_tokenizer)
    prefix = _backend_json(source_tokenizer)["model"].get("continuing_subword_prefix") or "##"
    model = source_tokenizer.backend_tokenizer.model
    vocab = source_tokenizer.get_vocab()
    byte_ids = {b: vocab.get(f"<0x{b:02X}>") for b in range(256)} if family == "metaspace" else {}
    unknown = {source_tokenizer.unk_token_id}  # an [UNK] piece says nothing about the token
    out: list[list[int]] = []
    for data in target_surfaces:
        ids: list[int] = []
        if data:
            try:
                data.decode("utf-8")
                valid = True
            except UnicodeDecodeError:
                valid = False
            if family == "metaspace" and not valid:
                ids = [byte_ids[b] for b in data if byte_ids.get(b) is not None]
            else:
                for part in _to_model_alphabet(data, family, prefix):
                    ids.extend(token.id for token in model.tokenize(part))
        out.append([i for i in ids if i not in unknown])
    return out


def byte_fallback_ids(tokenizer) -> set[int]:
    """Ids of the byte-fallback pieces (``<0x41>``) of a SentencePiece-style tokenizer; empty otherwise."""
    if tokenizer_family(tokenizer) != "metaspace":
        return set()
    return {i for piece, i in tokenizer.get_vocab().items() if _BYTE_PIECE.match(piece)}


def exact_matches(target_surfaces: list[bytes | None], source_surfaces: list[bytes | None], *,
                  target_byte_pieces: set[int] = frozenset(), source_byte_pieces: set[int] = frozenset()) -> np.ndarray:
    """For each target id, the source id with identical canonical bytes, or -1.

    A surface can belong to two source tokens: a piece ``a`` and the byte-fallback piece ``<0x61>``
    (SentencePiece vocabularies have both for every ASCII character). A target piece is matched with
    a source piece (a well-trained row) and a target byte piece with a source byte piece, each
    falling back to the other kind when its own is missing (``<0x61>`` → byte-level ``a``).
    """
    pieces: dict[bytes, int] = {}
    byte_pieces: dict[bytes, int] = {}
    for s, data in enumerate(source_surfaces):
        if data is not None:
            (byte_pieces if s in source_byte_pieces else pieces).setdefault(data, s)
    out = np.full(len(target_surfaces), -1, dtype=np.int64)
    for t, data in enumerate(target_surfaces):
        if data is None:
            continue
        first, second = (byte_pieces, pieces) if t in target_byte_pieces else (pieces, byte_pieces)
        out[t] = first.get(data, second.get(data, -1))
    return out


def role_ids(tokenizer) -> dict[str, int]:
    """Special-token role → id, e.g. ``{"bos": 1, "eos": 2}`` (roles the tokenizer defines)."""
    out = {}
    for role in ROLES:
        token_id = getattr(tokenizer, f"{role}_token_id", None)
        if token_id is not None:
            out[role] = int(token_id)
    return out


def special_pairs(target_tokenizer, source_tokenizer) -> list[tuple[int, int]]:
    """(target id, source id) pairs for special tokens, matched by role, then by identical string.

    A target role the source lacks falls back to a related one (bos↔cls, eos↔sep, pad→eos, …).
    """
    fallbacks = {"bos": ("bos", "cls", "eos"), "eos": ("eos", "sep"), "pad": ("pad", "eos", "unk"),
                 "unk": ("unk", "pad", "eos"), "cls": ("cls", "bos"), "sep": ("sep", "eos"),
                 "mask": ("mask", "pad", "unk")}
    source_roles = role_ids(source_tokenizer)
    source_vocab = source_tokenizer.get_vocab()
    pairs: dict[int, int] = {}
    for role, target_id in role_ids(target_tokenizer).items():
        for candidate in fallbacks[role]:
            if candidate in source_roles:
                pairs.setdefault(target_id, source_roles[candidate])
                break
    for target_id in sorted(special_ids(target_tokenizer)):
        token = target_tokenizer.convert_ids_to_tokens(target_id)
        if target_id not in pairs and token in source_vocab:
            pairs[target_id] = source_vocab[token]
    return sorted(pairs.items())
