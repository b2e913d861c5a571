"""Real tokenizer formats: SentencePiece ``.model`` files (Mistral v1/v3, Llama-2) and Mistral Tekken
``tekken.json`` (tiktoken-style byte-level BPE), tiny ones built offline in the same shapes; and the
real files from mistral-common when ``transtok assets fetch --tokenizers`` has cached them."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import factories
from transtok import assets
from transtok.align import word_units
from transtok.mapping import PROVENANCE, MappingConfig
from transtok.pipeline import mapping_from_alignment
from transtok.loading import TEKKEN_DEFAULT_SPECIALS, load_tokenizer
from transtok.tokenizer import BYTE_PIECES, minimum_vocab_size, train_tokenizer, unused_special_tokens
from transtok.vocabulary import byte_fallback_ids, exact_matches, special_ids, token_bytes, tokenizer_family

SPANISH = ("Y dijo Dios: Sea la luz; y fué la luz. En el año 2024, ¿cómo estás? ¡Muy bien! "
           "Los 318 siervos de Abraham, (los nacidos en su casa), salieron.")
RUSSIAN = "И сказал Бог: да будет свет. И стал свет; в 1876 году, «Синодальный перевод»."


def corpus() -> list[str]:
    """English-like text with digits and punctuation glued to words, as real text has."""
    english = [s for s, _ in factories.cipher_corpus(600)]
    return [f"{s[:-1]}, {i * 37} {s[-1]}" if i % 3 == 0 else s for i, s in enumerate(english)] + [SPANISH] * 5


def target_corpus() -> list[str]:
    return [f"{t[:-1]}, {i * 41}{t[-1]}" for i, (_, t) in enumerate(factories.cipher_corpus(600, seed=3))]


@pytest.fixture(scope="module")
def sentencepiece(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    path = factories.sentencepiece_model_file(corpus(), tmp_path_factory.mktemp("spm") / "tokenizer.model.v1")
    return load_tokenizer(path)


@pytest.fixture(scope="module")
def tekken(tmp_path_factory):
    return load_tokenizer(factories.tekken_file(corpus(), tmp_path_factory.mktemp("tekken") / "tekken.json"))


def _mixes_letters_and_symbols(piece: str) -> bool:
    body = piece.lstrip("▁")
    return bool(re.search(r"[^\W\d_]", body)) and bool(re.search(r"[^\w\s▁]", body))


def test_sentencepiece_model_file_loads_as_a_fast_tokenizer(sentencepiece):
    tok = sentencepiece
    assert tok.is_fast and tokenizer_family(tok) == "metaspace" and len(tok) == 420
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]
    assert tok.convert_ids_to_tokens(list(range(3, 259))) == BYTE_PIECES
    ids = tok(RUSSIAN).input_ids
    assert ids[0] == tok.bos_token_id == 1  # <s> first, as Mistral's tokenizer
    assert set(ids) & byte_fallback_ids(tok)  # Cyrillic was never seen: byte fallback
    assert tok.decode(ids, skip_special_tokens=True) == RUSSIAN


def test_tekken_file_loads_with_mistral_common_default_specials(tekken):
    tok = tekken
    assert tok.is_fast and tokenizer_family(tok) == "byte_level"
    spec = json.loads(tok.backend_tokenizer.to_str())
    assert len(tok) == spec["model"]["vocab"].__len__() and len(tok) == 424 - 24 + 24
    assert tok.convert_ids_to_tokens(list(range(20))) == list(TEKKEN_DEFAULT_SPECIALS)
    assert tok.convert_ids_to_tokens([20, 23]) == ["<SPECIAL_20>", "<SPECIAL_23>"]
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == ("<s>", "</s>", "<unk>", "<pad>")
    ids = tok(SPANISH + " " + RUSSIAN).input_ids
    assert ids[0] == tok.bos_token_id == 1
    assert tok.decode(ids, skip_special_tokens=True) == SPANISH + " " + RUSSIAN


def test_training_from_a_sentencepiece_source_learns_what_sentencepiece_would(sentencepiece):
    source = sentencepiece
    # The source, like Mistral's, has no piece mixing letters and symbols and no two-digit piece.
    assert not [p for p in source.get_vocab() if _mixes_letters_and_symbols(p) and p not in BYTE_PIECES
                and p not in source.all_special_tokens]
    target = train_tokenizer(target_corpus(), source, 700)
    assert tokenizer_family(target) == "metaspace"
    model = json.loads(target.backend_tokenizer.to_str())["model"]
    source_model = json.loads(source.backend_tokenizer.to_str())["model"]
    assert model["byte_fallback"] and model["unk_token"] == source_model["unk_token"]
    assert target.convert_ids_to_tokens(list(range(259))) == source.convert_ids_to_tokens(list(range(259)))
    assert (target.bos_token, target.eos_token, target.unk_token) == (source.bos_token, source.eos_token,
                                                                      source.unk_token)
    pieces = [p for p in target.get_vocab() if p not in target.all_special_tokens and p not in BYTE_PIECES]
    assert not [p for p in pieces if _mixes_letters_and_symbols(p)], "a piece glues a word to punctuation"
    assert not [p for p in pieces if re.search(r"\d\d", p)], "digits are split one by one, as in the source"
    assert not [p for p in pieces if "▁" in p[1:]], "a piece spans two words"
    text = "mupex, dofisux 2024."
    assert target(text).input_ids[0] == 1
    assert target.decode(target(text).input_ids, skip_special_tokens=True) == text


def test_training_from_a_tekken_source_keeps_its_specials_and_bytes(tekken):
    target = train_tokenizer(target_corpus(), tekken, 700)
    assert tokenizer_family(target) == "byte_level"
    # the 20 named controls are kept, the reserved <SPECIAL_20> .. <SPECIAL_23> left out unless asked for
    assert target.convert_ids_to_tokens(list(range(20))) == list(TEKKEN_DEFAULT_SPECIALS)
    assert set(range(20)) <= special_ids(target) and not [t for t in target.get_vocab() if t.startswith("<SPECIAL_")]
    kept = train_tokenizer(target_corpus(), tekken, 700, keep_reserved=True)
    assert kept.convert_ids_to_tokens(list(range(24))) == tekken.convert_ids_to_tokens(list(range(24)))
    assert set(range(24)) <= special_ids(kept) and set(range(24)) <= special_ids(tekken)
    text = "mupex, dofisux 2024. жук"
    assert target(text).input_ids[0] == target.bos_token_id == 1
    assert target.decode(target(text).input_ids, skip_special_tokens=True) == text


def test_byte_pieces_map_by_byte_and_pieces_to_pieces(sentencepiece, tekken):
    target = train_tokenizer(target_corpus(), sentencepiece, 700)
    mapping, _ = mapping_from_alignment(sentencepiece, target, None, MappingConfig(init="fvt"))
    source_vocab, target_vocab = sentencepiece.get_vocab(), target.get_vocab()
    matrix = mapping.matrix.tocsr()
    for piece in ("<0x41>", "<0xD0>", "<0x20>"):
        row = matrix[target_vocab[piece]]
        assert row.indices.tolist() == [source_vocab[piece]] and PROVENANCE[mapping.provenance[target_vocab[piece]]] \
            == "copied"
    # "e" is both a piece and <0x65> in a SentencePiece vocabulary: the piece copies the piece's row.
    for piece in ("e", "a", "."):
        assert matrix[target_vocab[piece]].indices.tolist() == [source_vocab[piece]]
    # A byte piece of a SentencePiece target maps to the byte-level source token of that byte.
    exact = exact_matches(token_bytes(target), token_bytes(tekken), target_byte_pieces=byte_fallback_ids(target))
    assert tekken.convert_ids_to_tokens(int(exact[target_vocab["<0x41>"]])) == "A"
    assert tekken.convert_ids_to_tokens(int(exact[target_vocab["<0xD0>"]])) == "Ð"


def test_exact_overlap_across_metaspace_and_byte_level_spellings(sentencepiece, tekken):
    exact = exact_matches(token_bytes(sentencepiece), token_bytes(tekken),
                          target_byte_pieces=byte_fallback_ids(sentencepiece))
    vocab = sentencepiece.get_vocab()
    assert tekken.convert_ids_to_tokens(int(exact[vocab["▁king"]])) == "Ġking"
    shared = {p.replace("▁", " ") for p in vocab} & {tekken.convert_tokens_to_string([p]) for p in tekken.get_vocab()}
    assert (exact >= 0).sum() >= len(shared) - 3  # specials (<unk>, <s>, </s>) are not matched by surface


def test_word_units_are_the_same_words_whatever_the_family(sentencepiece, tekken):
    for text in (SPANISH, RUSSIAN):
        words = []
        for tok in (sentencepiece, tekken):
            units = word_units(tok, [text])[0]
            words.append([tok.decode(list(unit)).strip() for unit in units])
        assert words[0] == words[1]
        assert "".join(words[0]).replace(" ", "") == text.replace(" ", "")


def test_real_tokenizers_are_read_out_of_the_wheel_once(tmp_path, monkeypatch, capsys):
    """mistral-common's wheel faked with tiny files of the real formats at the real paths."""
    import dataclasses
    import hashlib

    from test_assets import make_wheel

    from transtok.cli import main
    from transtok.errors import DataError

    pytest.importorskip("sentencepiece")
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    files = {
        assets.REAL_TOKENIZERS["mistral-v1"].member:
            factories.sentencepiece_model_file(corpus(), tmp_path / "v1.model").read_bytes(),
        assets.REAL_TOKENIZERS["mistral-v3"].member:
            factories.sentencepiece_model_file(corpus(), tmp_path / "v3.model", vocab_size=430).read_bytes(),
        assets.REAL_TOKENIZERS["mistral-tekken"].member:
            factories.tekken_file(corpus(), tmp_path / "tekken.json").read_bytes(),
    }
    wheel = make_wheel(tmp_path / "mistral_common-1.13.1-py3-none-any.whl", "mistral_common-1.13.1", files)
    monkeypatch.setitem(assets.WHEELS, "mistral-common", assets.Wheel(
        "mistral-common", "1.13.1", hashlib.sha256(wheel.read_bytes()).hexdigest(), wheel.stat().st_size))
    for name, size in (("mistral-v1", 420), ("mistral-v3", 430), ("mistral-tekken", 424)):
        monkeypatch.setitem(assets.REAL_TOKENIZERS, name, dataclasses.replace(assets.REAL_TOKENIZERS[name], size=size))
    downloads = []
    monkeypatch.setattr(assets, "_pip_download", lambda name, version, dest: (downloads.append(name),
                                                                              shutil.copy(wheel, dest)))
    assert main(["assets", "fetch", "--tokenizers"]) == 0
    assert "tokenizer mistral-tekken: " in capsys.readouterr().out
    assert downloads == ["mistral-common"]
    for name in assets.REAL_TOKENIZERS:
        tok = load_tokenizer(assets.real_tokenizer(name))
        assert len(tok) == assets.REAL_TOKENIZERS[name].size
        assert assets.cached_assets()["tokenizers"][name]["ready"]
    assert downloads == ["mistral-common"]  # built once, then reused
    monkeypatch.setitem(assets.REAL_TOKENIZERS, "mistral-v1",
                        dataclasses.replace(assets.REAL_TOKENIZERS["mistral-v1"], size=32_000))
    with pytest.raises(DataError, match=r"converted to 420 tokens, expected 32,000"):
        assets.real_tokenizer("mistral-v1", refresh=True)
    assert len(load_tokenizer(assets.real_tokenizer_dir("mistral-v1"))) == 420  # the cached one is kept


REAL = {name: assets.real_tokenizer_dir(name) for name in assets.REAL_TOKENIZERS}


@pytest.mark.skipif(not all((path / assets.MANIFEST).is_file() for path in REAL.values()),
                    reason="the real Mistral tokenizers are not cached (transtok assets fetch --tokenizers)")
def test_the_real_mistral_tokenizers():
    loaded = {name: load_tokenizer(path) for name, path in REAL.items()}
    for name, tok in loaded.items():
        assert len(tok) == assets.REAL_TOKENIZERS[name].size
        assert (tok.bos_token, tok.eos_token, tok.unk_token) == ("<s>", "</s>", "<unk>")
        assert tok(SPANISH).input_ids[0] == 1
        assert tok.decode(tok(RUSSIAN).input_ids, skip_special_tokens=True) == RUSSIAN
    v1, v3, tekken = loaded["mistral-v1"], loaded["mistral-v3"], loaded["mistral-tekken"]
    assert tokenizer_family(v1) == tokenizer_family(v3) == "metaspace" and tokenizer_family(tekken) == "byte_level"
    assert v1.convert_ids_to_tokens(3 + 0x41) == "<0x41>" and v3.convert_ids_to_tokens(771 + 0x41) == "<0x41>"
    # Mistral-7B-v0.1 encodes "Hello" as <s> ▁Hello (ids from its published tokenizer.json).
    assert v1("Hello").input_ids == [1, 22557]
    exact = exact_matches(token_bytes(v1), token_bytes(tekken), target_byte_pieces=byte_fallback_ids(v1))
    assert tekken.convert_ids_to_tokens(int(exact[v1.convert_tokens_to_ids("▁Hello")])) == "ĠHello"
    identity = exact_matches(token_bytes(v1), token_bytes(v1), target_byte_pieces=byte_fallback_ids(v1),
                             source_byte_pieces=byte_fallback_ids(v1))
    known = np.flatnonzero(identity >= 0)
    assert (identity[known] == known).all()  # every piece is its own exact match, "e" is not <0x65>
    for text in (SPANISH, RUSSIAN):
        units = [[tok.decode(list(u)).strip() for u in word_units(tok, [text])[0]] for tok in loaded.values()]
        assert units[0] == units[1] == units[2]


@pytest.mark.skipif(not all((path / assets.MANIFEST).is_file() for path in REAL.values()),
                    reason="the real Mistral tokenizers are not cached (transtok assets fetch --tokenizers)")
def test_the_real_mistral_tokenizers_reserved_controls_are_left_out():
    """Mistral v3's 737 [control_N] and Tekken's 980 <SPECIAL_N> have no role and no template: a trained
    vocabulary leaves them out (kept, they would not fit in 700 tokens); named ones stay."""
    from transtok.errors import ConfigError

    v1, v3, tekken = (load_tokenizer(REAL[name]) for name in ("mistral-v1", "mistral-v3", "mistral-tekken"))
    assert unused_special_tokens(v1) == []
    assert unused_special_tokens(v3) == [f"[control_{i}]" for i in range(12, 749)]
    assert unused_special_tokens(tekken) == [f"<SPECIAL_{i}>" for i in range(20, 1000)]
    assert (minimum_vocab_size(tekken), minimum_vocab_size(tekken, keep_reserved=True)) == (20 + 256, 1000 + 256)
    for source in (v3, tekken):
        target = train_tokenizer(target_corpus(), source, 700)
        assert 500 < len(target) <= 700
        with pytest.raises(ConfigError, match="smaller than the 1,"):
            train_tokenizer(target_corpus(), source, 700, keep_reserved=True)
        vocab = target.get_vocab()
        assert {"<s>", "</s>", "<unk>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[IMG]"} <= set(vocab)
        assert not [t for t in vocab if t.startswith(("[control_", "<SPECIAL_"))]
        text = "mupex, dofisux 2024. жук"
        assert target(text).input_ids[0] == target.bos_token_id == 1
        assert target.decode(target(text).input_ids, skip_special_tokens=True) == text
    assert "[REFERENCE_DOC_0]" in train_tokenizer(target_corpus(), v3, 700).get_vocab()  # not special: kept
