"""Word units, count projection, and alignment recovering a known cipher."""
from dataclasses import dataclass

import numpy as np
import pytest

import factories
from transtok.align import AlignmentCounts, _projection, align, get_aligner, project_word_counts, word_units
from transtok.errors import ConfigError, MismatchError
from transtok.mapping import MappingConfig
from transtok.pipeline import mapping_from_alignment


@dataclass
class Corpus:
    source: list
    target: list


@pytest.fixture(scope="module")
def setup():
    pairs = factories.cipher_corpus(1500)
    corpus = Corpus([s for s, _ in pairs], [t for _, t in pairs])
    # Vocabularies big enough that most words are single tokens on both sides.
    source = factories.byte_level_tokenizer(corpus.source, vocab_size=700)
    target = factories.byte_level_tokenizer(corpus.target, vocab_size=700)
    return corpus, source, target


def test_word_units_cover_every_token_once_and_respect_words(setup):
    _, source, _ = setup
    text = "the king's house, -- 12 ok"
    units = word_units(source, [text])[0]
    assert [i for unit in units for i in unit] == source(text, add_special_tokens=False)["input_ids"]
    decoded = [source.decode(list(unit)) for unit in units]
    assert decoded[:2] == ["the", " king"] and " house" in decoded and "," in decoded


def test_word_units_of_a_batch_are_those_of_each_text_alone(setup):
    """The batch is vectorised end to end: no unit may cross from one text into the next, and texts
    with no word character (or no token at all) come back whole (or empty)."""
    _, source, _ = setup
    texts = ["the king's house,", "", "   ", "-- !!", "ok", "12 the\tking 's", "é中文 x"]
    batched = word_units(source, texts)
    assert batched == [word_units(source, [text])[0] for text in texts]
    for text, units in zip(texts, batched):
        assert [i for unit in units for i in unit] == source(text, add_special_tokens=False)["input_ids"]
    decoded = [[source.decode(list(u)) for u in units] for units in batched]
    assert decoded[1] == [] and decoded[2] == ["   "]
    assert decoded[3] == ["-", "-", " !", "!"]  # every punctuation mark is a word of its own
    assert decoded[5] == ["12", " the", "\tking", " '", "s"]


@pytest.mark.parametrize("m,n", [(1, 1), (1, 3), (3, 2), (2, 5), (4, 4)])
def test_projection_gives_each_target_token_the_full_count(m, n):
    weights = _projection(m, n)
    assert weights.shape == (n, m)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert (weights >= 0).all()
    if m == n:  # in order: the diagonal gets the in-order half on top of the all-to-all half
        np.testing.assert_allclose(np.diag(weights), 0.5 / m + 0.5)


def test_projection_of_word_counts_is_exact_for_a_split_word():
    matrix = project_word_counts({((10,), (1, 2)): 4.0, ((10, 11), (3,)): 2.0}, target_size=5, source_size=12)
    assert matrix[1, 10] == matrix[2, 10] == 4.0
    assert matrix[3, 10] == matrix[3, 11] == 1.0


@pytest.mark.parametrize("aligner", ["eflomal", "fast_align"])
def test_alignment_recovers_the_cipher(setup, aligner):
    corpus, source, target = setup
    counts = align(corpus, source, target, aligner=aligner)
    assert counts.counts.shape == (len(target), len(source))
    mapping, _ = mapping_from_alignment(source, target, counts, MappingConfig())
    source_vocab, target_vocab = source.get_vocab(), target.get_vocab()
    frequency = {}
    for sentence in corpus.source:
        for word in sentence[:-1].split():
            frequency[word] = frequency.get(word, 0) + 1
    checked = correct = 0
    for word, cipher in factories.CIPHER.items():
        s, t = source_vocab.get("Ġ" + word), target_vocab.get("Ġ" + cipher)
        if s is None or t is None or frequency.get(word, 0) < 20:
            continue
        checked += 1
        row = mapping.matrix[t]
        correct += row.indices[np.argmax(row.data)] == s
    assert checked >= 30
    assert correct / checked >= 0.95


def test_counts_are_additive_over_shards(setup, tmp_path):
    corpus, source, target = setup
    aligner = get_aligner("fast_align")
    half = len(corpus.source) // 2
    whole = align(corpus, source, target, aligner=aligner, chunk_size=half)
    parts = [align(Corpus(corpus.source[a:b], corpus.target[a:b]), source, target, aligner=aligner)
             for a, b in ((0, half), (half, len(corpus.source)))]
    for k, part in enumerate(parts):
        part.save(tmp_path / str(k))
    merged = AlignmentCounts.merge([AlignmentCounts.load(tmp_path / str(k)) for k in range(2)])
    np.testing.assert_allclose(merged.counts.toarray(), whole.counts.toarray())
    assert merged.stats["pairs"] == len(corpus.source) and merged.stats["shards"] == 2


def test_fast_align_is_deterministic(setup):
    corpus, source, target = setup
    small = Corpus(corpus.source[:300], corpus.target[:300])
    a = align(small, source, target, aligner="fast_align").counts
    b = align(small, source, target, aligner="fast_align").counts
    assert (a != b).nnz == 0


def test_bad_aligner_and_mismatched_merge_are_explained(setup):
    corpus, source, target = setup
    with pytest.raises(ConfigError, match="unknown aligner 'giza'; choose one of eflomal, fast_align"):
        align(corpus, source, target, aligner="giza")
    a = align(Corpus(corpus.source[:50], corpus.target[:50]), source, target, aligner="fast_align")
    b = AlignmentCounts(a.counts, a.source_vocab_hash, "elsewhere", {})
    with pytest.raises(MismatchError, match="different tokenizers"):
        AlignmentCounts.merge([a, b])
