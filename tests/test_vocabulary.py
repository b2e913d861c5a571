"""Canonical token surfaces, subword spelling and special-token roles across tokenizer families."""
import pytest

import factories
from transtok.vocabulary import (decompose, exact_matches, special_pairs, token_bytes, tokenizer_family,
                                 vocab_hash)

TEXTS = [s for s, _ in factories.cipher_corpus(300)] + ["naïve café 2024, ok?"] * 5


@pytest.fixture(scope="module")
def families():
    return {"byte_level": factories.byte_level_tokenizer(TEXTS, 300),
            "metaspace": factories.sentencepiece_tokenizer(TEXTS, 300),
            "wordpiece": factories.wordpiece_tokenizer(TEXTS, 300)}


def test_family_detection(families):
    assert {name: tokenizer_family(tok) for name, tok in families.items()} == {n: n for n in families}


@pytest.mark.parametrize("name", ["byte_level", "metaspace", "wordpiece"])
def test_word_start_markers_become_a_space_and_specials_are_none(families, name):
    tok = families[name]
    surfaces = token_bytes(tok)
    assert len(surfaces) == len(tok)
    for special in tok.all_special_ids:
        assert surfaces[special] is None
    king = {"byte_level": "Ġking", "metaspace": "▁king", "wordpiece": "king"}[name]
    assert surfaces[tok.convert_tokens_to_ids(king)] == b" king"


def test_byte_fallback_pieces_are_their_byte(families):
    tok = families["metaspace"]
    assert token_bytes(tok)[tok.convert_tokens_to_ids("<0xC3>")] == b"\xc3"


@pytest.mark.parametrize("source_name", ["byte_level", "metaspace", "wordpiece"])
@pytest.mark.parametrize("target_name", ["byte_level", "metaspace", "wordpiece"])
def test_decomposition_spells_the_same_text(families, source_name, target_name):
    source, target = families[source_name], families[target_name]
    surfaces = token_bytes(target)
    pieces = decompose(surfaces, source)
    source_surfaces = token_bytes(source)
    checked = 0
    for t, data in enumerate(surfaces):
        if not data or not pieces[t]:
            continue
        spelled = b"".join(source_surfaces[i] for i in pieces[t])
        if source_name == "wordpiece" or target_name == "wordpiece":
            spelled, data = spelled.strip(), data.strip()  # WordPiece has no spaces inside words
        if b"\xef\xbf\xbd" not in spelled:
            assert spelled == data, (target.convert_ids_to_tokens(t), source.convert_ids_to_tokens(pieces[t]))
            checked += 1
    # WordPiece spells a word all-or-nothing ([UNK] otherwise), so it covers less.
    assert checked > (len(surfaces) // 5 if source_name == "wordpiece" else len(surfaces) // 2)


def test_exact_matches_join_on_surfaces(families):
    source, target = families["byte_level"], families["metaspace"]
    exact = exact_matches(token_bytes(target), token_bytes(source))
    assert exact[target.convert_tokens_to_ids("▁king")] == source.convert_tokens_to_ids("Ġking")
    assert exact[target.convert_tokens_to_ids("<unk>")] == -1


def test_special_tokens_are_paired_by_role(families):
    pairs = dict(special_pairs(families["metaspace"], families["byte_level"]))
    source = families["byte_level"]
    target = families["metaspace"]
    assert pairs[target.bos_token_id] == source.bos_token_id
    assert pairs[target.eos_token_id] == source.eos_token_id
    assert pairs[target.unk_token_id] == source.unk_token_id


def test_vocab_hash_tells_vocabularies_apart(families):
    assert len({vocab_hash(t) for t in families.values()}) == 3
    assert vocab_hash(families["byte_level"]) == vocab_hash(factories.byte_level_tokenizer(TEXTS, 300))
