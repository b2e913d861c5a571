"""Word units of text written without spaces: segmenter per script, snapping to whole tokens, the
fallback without icu4py, and a cipher whose target side has no spaces.

The ICU tests skip where icu4py is not installed; the fallback tests run either way (they hide icu4py
from the import that :class:`transtok.segment.IcuSegmenter` makes)."""
import importlib
import logging
import sys
import unicodedata
from dataclasses import dataclass

import numpy as np
import pytest

import factories
from transtok.align import align, word_units
from transtok.errors import ConfigError, MissingDependencyError
from transtok.mapping import MappingConfig
from transtok.pipeline import mapping_from_alignment
from transtok.segment import (NO_SPACE_SCRIPTS, SEGMENTER_BY_SCRIPT, AutoSegmenter, get_segmenter, scripts_of,
                              segmenter_name, word_spans)



def _have_icu() -> bool:
    try:
        importlib.import_module("icu4py.breakers")  # what IcuSegmenter imports
    except ImportError:
        return False
    return True


needs_icu = pytest.mark.skipif(not _have_icu(), reason="the ICU segmenter needs icu4py, which is not installed: "
                                                       "pip install 'transtok[segment]'")

# Genesis 1:1 (Burmese: John 1:1), one clause each.
UNSPACED = {
    "Han": "太初有道，道與神同在，道就是神。",
    "Hiragana": "初めに、神は天と地を創造された。",
    "Katakana": "イエス・キリストのデータ",
    "Thai": "ในปฐมกาลพระเจ้าทรงสร้างฟ้าและแผ่นดิน",
    "Lao": "ໃນປະຖົມມະການພຣະເຈົ້າໄດ້ສ້າງຟ້າສະຫວັນແລະແຜ່ນດິນໂລກ",
    "Khmer": "កាលដើមដំបូងព្រះបានបង្កើតផ្ទៃមេឃនិងផែនដី",
    "Myanmar": "အစအဦး၌နှုတ်ကပတ်တော်ရှိ၏",
}
SPACED = ["In the beginning God created the heaven and the earth.", "В начале сотворил Бог небо и землю.",
          "태초에 하나님이 천지를 창조하시니라", "आदि में परमेश्‍वर ने आकाश और पृथ्वी की सृष्टि की।",
          "في البدء خلق الله السموات والارض", "Au commencement, Dieu créa les cieux et la terre."]


@dataclass
class Corpus:
    source: list
    target: list


def _words(text, segmenter):
    starts, ends = word_spans(text, segmenter)
    return [text[a:b] for a, b in zip(starts.tolist(), ends.tolist())]


@needs_icu
@pytest.mark.parametrize("script", NO_SPACE_SCRIPTS)
def test_each_unspaced_script_is_found_and_split_into_words_by_icu(script):
    text = UNSPACED[script]
    assert script in scripts_of(text) and SEGMENTER_BY_SCRIPT[script] == "icu"
    auto = get_segmenter("auto")
    words = _words(text, auto)
    assert segmenter_name(auto) == "icu"
    assert "".join(words) == text.replace(" ", "")
    letters = [w for w in words if any(c.isalpha() for c in w)]
    assert len(letters) >= 3 and max(map(len, letters)) > 1  # words: neither the clause nor its characters
    # ICU never cuts a character from its combining marks (Thai, Lao, Khmer, Burmese vowel signs).
    assert not any(unicodedata.category(w[0]).startswith("M") for w in words)


@pytest.mark.parametrize("text, words", [
    ("आदि में परमेश्वर ने", ["आदि", "में", "परमेश्वर", "ने"]),            # Devanagari vowel signs, virama
    ("আমি বাংলায় গান গাই।", ["আমি", "বাংলায়", "গান", "গাই", "।"]),      # Bengali, nukta
    ("بِسْمِ اللَّهِ", ["بِسْمِ", "اللَّهِ"]),                            # vocalised Arabic (harakat)
    ("cafe\u0301, ¿qué?", ["cafe\u0301", ",", "¿", "qué", "?"]),        # decomposed accent
])
def test_combining_marks_stay_in_their_word(text, words):
    starts, ends = word_spans(text, None)
    assert [text[s:e] for s, e in zip(starts, ends)] == words


@pytest.mark.parametrize("name", ["auto", pytest.param("icu", marks=needs_icu), "tokens"])
@pytest.mark.parametrize("text", SPACED)
def test_spaced_scripts_keep_the_regex_words(text, name):
    assert scripts_of(text) == []
    got, expected = word_spans(text, get_segmenter(name)), word_spans(text, None)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@needs_icu
def test_mixed_text_is_segmented_only_inside_unspaced_runs():
    text = "Jesus (イエス) said 12章: 神は愛です ok"
    words = _words(text, get_segmenter("icu"))
    assert words[:4] == ["Jesus", "(", "イエス", ")"] and "12" in words and "章" in words
    assert words[-1] == "ok" and "神" in words and "said" in words


@needs_icu
def test_characters_outside_the_basic_plane_are_counted_as_characters():
    """ICU reports UTF-16 offsets; a supplementary-plane ideograph must not shift later words."""
    text = "𠀋𠀋の木 abc 神は"
    words = _words(text, get_segmenter("icu"))
    assert "".join(words) == text.replace(" ", "") and "abc" in words and words[-1] in ("は", "神は")


@needs_icu
def test_units_are_whole_tokens_and_never_cut_a_segment():
    pairs = factories.cipher_corpus(300, cipher=factories.CHINESE, separator="")
    targets = [t for _, t in pairs]
    english = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=300)  # splits ideographs into bytes
    chinese = factories.byte_level_tokenizer(targets, vocab_size=500)               # merges across words
    icu = get_segmenter("icu")
    for tokenizer in (english, chinese):
        texts = targets[:50] + ["王 在 神 abc", "𠀋神"]
        encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        for text, ids, offsets, units in zip(texts, encoded["input_ids"], encoded["offset_mapping"],
                                             word_units(tokenizer, texts, segmenter=icu)):
            assert [i for unit in units for i in unit] == ids  # every token once, in order
            starts, ends = word_spans(text, icu)
            boundaries = set(starts.tolist()) | set(ends.tolist())
            position = 0
            for unit in units[:-1]:  # a unit ends where a word ends (a token inside a word joins its words)
                position += len(unit)
                end = offsets[position - 1][1]
                assert end in boundaries or text[end:offsets[position][0]].isspace() or end == offsets[position][0]
                inside = [(a, b) for a, b in zip(starts, ends) if a < end < b]
                assert not inside, (text, tokenizer.decode(list(unit)))
    # A token spanning two segments joins them: the Chinese tokenizer has merges across words.
    many = word_units(chinese, targets, segmenter=icu)
    words = sum(len(word_spans(t, icu)[0]) for t in targets)
    assert sum(len(u) for u in many) < words


def test_segmenter_names_are_checked():
    with pytest.raises(ConfigError, match="unknown segmenter 'mecab'; choose one of auto, icu, tokens, none"):
        get_segmenter("mecab")
    assert get_segmenter("none") is None and segmenter_name(None) == "none"


@pytest.fixture
def without_icu(monkeypatch):
    """Simulate icu4py not being installed (an import of it fails) and a fresh process (no warning yet)."""
    monkeypatch.setitem(sys.modules, "icu4py", None)
    monkeypatch.setitem(sys.modules, "icu4py.breakers", None)
    monkeypatch.setattr(AutoSegmenter, "_warned", False)


def test_without_icu_auto_falls_back_to_single_tokens_with_one_warning(without_icu, caplog):
    pairs = factories.cipher_corpus(100, cipher=factories.CHINESE, separator="")
    tokenizer = factories.byte_level_tokenizer([t for _, t in pairs], vocab_size=500)
    texts = [t for _, t in pairs[:20]]
    with caplog.at_level(logging.WARNING, logger="transtok.segment"):
        assert word_units(tokenizer, ["In the beginning"], segmenter="auto")  # spaced: no warning
        assert not caplog.records
        first = word_units(tokenizer, texts, segmenter="auto")
        second = word_units(tokenizer, texts, segmenter="auto")
    assert first == second
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "icu4py" in warnings[0].getMessage() and "pip install 'transtok[segment]'" in warnings[0].getMessage()
    assert "Han" in warnings[0].getMessage()
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    for units, offsets in zip(first, encoded["offset_mapping"]):
        # Every token of the unspaced text is its own unit, unless tokens share a character (byte pieces).
        position = 0
        for unit in units:
            spans = offsets[position:position + len(unit)]
            position += len(unit)
            assert all(a[1] > b[0] for a, b in zip(spans, spans[1:])), (unit, spans)
    assert sum(map(len, first)) > 0.9 * sum(map(len, encoded["input_ids"]))
    assert first == word_units(tokenizer, texts, segmenter="tokens")
    auto = get_segmenter("auto")
    assert _words(texts[0], auto) == _words(texts[0], get_segmenter("tokens")) and segmenter_name(auto) == "tokens"


def test_without_icu_an_explicit_icu_segmenter_is_an_error(without_icu):
    with pytest.raises(MissingDependencyError, match=r"icu4py.*pip install 'transtok\[segment\]'"):
        get_segmenter("icu")


def _precision(corpus, source, target, cipher, segmenter) -> tuple[float, int]:
    """Share of frequent cipher words whose target token maps mostly to the right English token."""
    counts = align(corpus, source, target, aligner="eflomal", segmenter=segmenter)
    mapping, _ = mapping_from_alignment(source, target, counts, MappingConfig())
    frequency: dict[str, int] = {}
    for sentence in corpus.source:
        for word in sentence[:-1].split():
            frequency[word] = frequency.get(word, 0) + 1
    checked = correct = 0
    for word, translation in cipher.items():
        s = source(" " + word, add_special_tokens=False)["input_ids"]
        t = target(translation, add_special_tokens=False)["input_ids"]
        if len(s) != 1 or len(t) != 1 or frequency.get(word, 0) < 20:
            continue
        checked += 1
        row = mapping.matrix[t[0]]
        correct += row.indices[np.argmax(row.data)] == s[0]
    return correct / max(checked, 1), checked


@pytest.fixture(scope="module")
def chinese_cipher():
    runs = {}
    for name, separator in (("spaced", " "), ("unspaced", "")):
        pairs = factories.cipher_corpus(1500, cipher=factories.CHINESE, separator=separator,
                                        punctuation=factories.CHINESE_PUNCTUATION)
        corpus = Corpus([s for s, _ in pairs], [t for _, t in pairs])
        source = factories.byte_level_tokenizer(corpus.source, vocab_size=700)
        target = factories.byte_level_tokenizer(corpus.target, vocab_size=700)
        runs[name] = (corpus, source, target)
    return runs


@pytest.mark.slow
@needs_icu
def test_the_cipher_is_recovered_without_spaces_as_well_as_with_them(chinese_cipher):
    spaced, checked_spaced = _precision(*chinese_cipher["spaced"], factories.CHINESE, "auto")
    unspaced, checked = _precision(*chinese_cipher["unspaced"], factories.CHINESE, "auto")
    assert checked >= 25 and checked_spaced >= 25
    assert spaced >= 0.9
    assert unspaced >= spaced - 0.05, (unspaced, spaced)


@pytest.mark.slow
@needs_icu
def test_without_segmentation_the_unspaced_cipher_is_lost(chinese_cipher):
    """The failure the segmenter fixes: with one unit per clause the counts spread over whole clauses."""
    segmented, _ = _precision(*chinese_cipher["unspaced"], factories.CHINESE, "icu")
    clause, _ = _precision(*chinese_cipher["unspaced"], factories.CHINESE, "none")
    assert clause < segmented - 0.3, (clause, segmented)


def test_transfer_config_names_a_bad_segmenter():
    from transtok.pipeline import TransferConfig

    with pytest.raises(ConfigError, match="unknown segmenter 'jieba'; choose one of auto, icu, tokens, none"):
        TransferConfig(source_model="m", parallel=["p.tsv"], output="o", target_tokenizer="t", segmenter="jieba")
