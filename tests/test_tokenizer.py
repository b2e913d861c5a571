"""Target tokenizer training: same family and pipeline as the source, specials first, roles kept."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import factories
from transtok.errors import ConfigError, DataError, MissingDependencyError
from transtok.evaluate import fertility
from transtok.loading import load_tokenizer
from transtok.tokenizer import BYTE_PIECES, minimum_vocab_size, save_tokenizer, train_tokenizer

PIPELINE = ("normalizer", "pre_tokenizer", "decoder")


def unigram_tokenizer(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """T5 style: NFKC, Metaspace, Unigram, eos appended by the post-processor."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return factories.wrap(tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>")


def late_bos_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """Llama-3 style: byte-level BPE whose specials sit *after* the learned vocabulary and whose
    post-processor prepends bos by id."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok.add_special_tokens(specials)
    bos = tok.token_to_id(specials[0])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{specials[0]} $A", pair=f"{specials[0]} $A {specials[0]} $B:1",
                                      special_tokens=[(specials[0], bos)])])
    fast = factories.wrap(tok, bos_token=specials[0], eos_token=specials[2], extra_special_tokens=specials[1:])
    fast.padding_side = "left"
    return fast


def late_bert_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """BERT style, with [CLS]/[SEP] at the end of the vocabulary and a BertProcessing post-processor."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=250, special_tokens=["[UNK]"],
                                                             show_progress=False))
    tok.add_special_tokens(["[PAD]", "[CLS]", "[SEP]", "[MASK]"])
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    return factories.wrap(tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                          mask_token="[MASK]")


def llama2_tokenizer(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """Llama-2's tokenizer.json: spaces become ▁ in the normalizer, no pre-tokenizer, byte fallback,
    bos prepended by the post-processor."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never", split=True)  # only for training
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + 259, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>", *BYTE_PIECES])
    tok.train_from_iterator(texts, trainer)
    tok.pre_tokenizer = None
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return factories.wrap(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


FAMILIES = {
    "byte_level": (factories.byte_level_tokenizer, 400),
    "byte_fallback": (factories.sentencepiece_tokenizer, 700),
    "llama2": (llama2_tokenizer, 700),
    "wordpiece": (factories.wordpiece_tokenizer, 400),
    "unigram": (unigram_tokenizer, 200),
    "late_bos": (lambda texts, _size=None: late_bos_tokenizer(texts), 400),
    "late_bert": (lambda texts, _size=None: late_bert_tokenizer(texts), 300),
}


@pytest.fixture(scope="module")
def corpora(cipher_pairs):
    english = [s for s, _ in cipher_pairs]
    target = [t for _, t in cipher_pairs]
    return english, target[:1200], target[1200:]


@pytest.fixture(scope="module", params=list(FAMILIES))
def trained(request, corpora):
    english, target_train, _ = corpora
    build, size = FAMILIES[request.param]
    source = build(english, 300)
    return request.param, source, train_tokenizer(target_train, source, size), size


def spec(tokenizer) -> dict:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def test_keeps_the_source_pipeline_and_model_options(trained):
    _, source, target, size = trained
    s, t = spec(source), spec(target)
    for part in PIPELINE:
        assert t[part] == s[part], part
    assert t["model"]["type"] == s["model"]["type"]
    learned = {"vocab", "merges", "unk_id"}
    assert {k: v for k, v in t["model"].items() if k not in learned} == \
           {k: v for k, v in s["model"].items() if k not in learned}
    assert len(target) <= size


def test_added_tokens_come_first_in_source_order_with_their_flags(trained):
    _, source, target, _ = trained
    source_added = sorted(spec(source)["added_tokens"], key=lambda t: t["id"])
    target_added = spec(target)["added_tokens"]
    assert [t["id"] for t in target_added] == list(range(len(source_added)))
    strip = lambda entry: {k: v for k, v in entry.items() if k != "id"}  # noqa: E731
    assert [strip(t) for t in target_added] == [strip(t) for t in source_added]


def test_roles_chat_template_and_settings_are_copied(trained):
    _, source, target, _ = trained
    for role in ("bos_token", "eos_token", "unk_token", "pad_token", "cls_token", "sep_token", "mask_token"):
        assert getattr(target, role) == getattr(source, role), role
    assert list(target.extra_special_tokens) == list(source.extra_special_tokens)
    assert target.chat_template == source.chat_template == factories.CHAT_TEMPLATE
    assert (target.padding_side, target.model_max_length) == (source.padding_side, source.model_max_length)


def test_post_processor_adds_the_same_special_tokens(trained, corpora):
    """The post-processor's special ids are rewritten to the target's ids: same *tokens* get added."""
    _, source, target, _ = trained
    text = corpora[2][0]

    def added(tokenizer, ids):  # special tokens in the encoding, unk (an unknown *text* piece) aside
        return [tokenizer.convert_ids_to_tokens(i) for i in ids
                if i in tokenizer.all_special_ids and i != tokenizer.unk_token_id]

    assert added(target, target(text).input_ids) == added(source, source(text).input_ids)
    assert added(target, target(text, text).input_ids) == added(source, source(text, text).input_ids)


def test_late_specials_get_small_ids():
    texts = [t for _, t in factories.cipher_corpus(300)]
    source = late_bos_tokenizer(texts)
    assert source.bos_token_id >= 256
    target = train_tokenizer(texts, source, 400)
    assert target.bos_token_id == 0 and target.eos_token_id == 2
    assert target("hello").input_ids[0] == 0


def test_segments_target_text_into_fewer_tokens(trained, corpora):
    _, source, target, _ = trained
    held_out = corpora[2]
    target_ids = sum(target(held_out, add_special_tokens=False).input_ids, [])
    assert target.unk_token_id is None or target.unk_token_id not in target_ids
    source_ids = sum(source(held_out, add_special_tokens=False).input_ids, [])
    if source.unk_token_id is None or source.unk_token_id not in source_ids:  # an all-[UNK] source is "short" too
        assert fertility(target, held_out) < 0.8 * fertility(source, held_out)


def test_decoding_restores_held_out_text(trained, corpora):
    _, _, target, _ = trained
    for text in corpora[2][:50]:
        words = text.rstrip(".!?")  # BERT-style decoders put a space before punctuation
        assert target.decode(target(words, add_special_tokens=False).input_ids) == words


@pytest.mark.parametrize("family", ["byte_level", "byte_fallback", "llama2", "late_bos"])
def test_byte_families_round_trip_unseen_characters(family, corpora):
    english, target_train, _ = corpora
    build, size = FAMILIES[family]
    target = train_tokenizer(target_train, build(english, 300), size)
    vocab = target.get_vocab()
    if family in ("byte_fallback", "llama2"):
        assert all(piece in vocab for piece in BYTE_PIECES)
    else:
        assert all(char in vocab for char in pre_tokenizers.ByteLevel.alphabet())
    text = "mupex dofisux — 日本語 ü ✓"
    ids = target(text, add_special_tokens=False).input_ids
    assert target.unk_token_id is None or target.unk_token_id not in ids
    assert target.decode(ids) == text


def test_save_and_load_with_auto_tokenizer(trained, corpora, tmp_path):
    _, _, target, _ = trained
    save_tokenizer(target, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.is_fast
    for text in corpora[2][:20]:
        assert loaded(text).input_ids == target(text).input_ids
    assert loaded.get_vocab() == target.get_vocab()
    assert loaded.special_tokens_map == target.special_tokens_map
    assert loaded.chat_template == target.chat_template
    assert load_tokenizer(tmp_path / "tok").get_vocab() == target.get_vocab()


@pytest.mark.parametrize("family", ["byte_level", "byte_fallback", "llama2", "wordpiece", "unigram"])
def test_training_is_deterministic(family, corpora):
    english, target_train, _ = corpora
    build, size = FAMILIES[family]
    source = build(english, 300)
    first = train_tokenizer(target_train, source, size).backend_tokenizer.to_str()
    second = train_tokenizer(list(target_train), source, size).backend_tokenizer.to_str()
    if family == "unigram":
        # tokenizers' UnigramTrainer sums EM statistics in hash-map order: the pieces are stable, the
        # scores (and so their order) move in the third decimal. Known limitation, see the module docstring.
        pieces = lambda s: sorted(p for p, _ in json.loads(s)["model"]["vocab"])  # noqa: E731
        assert pieces(first) == pieces(second)
    else:
        assert first == second


def test_min_frequency_drops_rare_merges(corpora, source_tokenizer):
    _, target_train, _ = corpora
    loose = train_tokenizer(target_train[:100], source_tokenizer, 2000, min_frequency=1)
    strict = train_tokenizer(target_train[:100], source_tokenizer, 2000, min_frequency=20)
    assert len(strict) < len(loose)


def test_empty_texts_are_refused(source_tokenizer):
    with pytest.raises(DataError, match="training texts are empty"):
        train_tokenizer([], source_tokenizer, 400)
    with pytest.raises(DataError, match="no non-blank line"):
        train_tokenizer(["", "  ", "\n"], source_tokenizer, 400)


def test_vocab_size_below_the_minimum_names_the_minimum(source_tokenizer):
    minimum = minimum_vocab_size(source_tokenizer)
    assert minimum == 3 + 256  # 3 specials + the byte-level alphabet
    with pytest.raises(ConfigError, match=rf"`vocab_size` 100 is smaller .* use `vocab_size` {minimum} or more"):
        train_tokenizer(["some text"], source_tokenizer, 100)
    train_tokenizer(["some text"], source_tokenizer, minimum)  # the minimum itself is enough


def test_vocab_size_below_the_corpus_alphabet_names_the_size_needed(corpora):
    source = factories.wordpiece_tokenizer(corpora[0], 300)
    texts = ["".join(chr(0x4E00 + i) for i in range(k, k + 40)) for k in range(0, 400, 40)]
    with pytest.raises(ConfigError, match=r"cannot hold the special tokens and the \d+ symbols of this corpus's alphabet .* "
                                          r"use `vocab_size` \d+ or more"):
        train_tokenizer(texts, source, 50)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_vocab_size_type(bad, source_tokenizer):
    with pytest.raises(ConfigError, match=f"`vocab_size` must be a positive integer, got {bad!r}"):
        train_tokenizer(["text"], source_tokenizer, bad)


def test_gguf_without_the_gguf_package(tmp_path, monkeypatch):
    import sys

    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MissingDependencyError, match=r"\.gguf file needs .*pip install 'transtok\[assets\]'"):
        load_tokenizer(tmp_path / "model.gguf")


def test_load_tokenizer_errors_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match=f"no tokenizer could be loaded from '{missing}': the path does not exist"):
        load_tokenizer(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"no tokenizer could be loaded from '{empty}'.*tokenizer.json"):
        load_tokenizer(empty)


def test_cli_train_tokenizer(tmp_path, corpora, source_tokenizer, capsys):
    pytest.importorskip("transtok.corpus")
    from transtok.cli import main

    source_dir, corpus = tmp_path / "source", tmp_path / "target.txt"
    source_tokenizer.save_pretrained(source_dir)
    corpus.write_text("\n".join(corpora[1]) + "\n", encoding="utf-8")
    out = tmp_path / "tok"
    code = main(["train-tokenizer", "--text", str(corpus), "--model", str(source_dir),
                 "--vocab-size", "400", "--output", str(out), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    loaded = AutoTokenizer.from_pretrained(out)
    assert report["vocab_size"] == len(loaded) <= 400
    assert report["fertility"] < report["source_fertility"]
    assert loaded.get_vocab() == train_tokenizer(corpora[1], source_tokenizer, 400).get_vocab()
    # A second run must not silently replace the first.
    assert main(["train-tokenizer", "--text", str(corpus), "--model", str(source_dir),
                 "--vocab-size", "400", "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err



def test_normalizer_metaspace_sources_get_no_cross_word_pieces(corpora):
    english, target_train, held_out = corpora
    source = llama2_tokenizer(english, 300)
    assert json.loads(source.backend_tokenizer.to_str())["pre_tokenizer"] is None
    target = train_tokenizer(target_train, source, 700)
    assert json.loads(target.backend_tokenizer.to_str())["pre_tokenizer"] is None
    pieces = [p for p in target.get_vocab() if p not in target.all_special_tokens]
    assert not [p for p in pieces if "▁" in p[1:]], "a piece spans two words"
    assert target(held_out[0]).input_ids[0] == target.bos_token_id == 1
    assert target.decode(target(held_out[0]).input_ids, skip_special_tokens=True) == held_out[0]


class LexiconSegmenter:
    """Greedy longest match over the Chinese cipher's words: the known word boundaries of the test corpus."""

    name = "lexicon"
    words = sorted(set(factories.CHINESE.values()) | set(factories.CHINESE_PUNCTUATION.values()), key=len,
                   reverse=True)

    def boundaries(self, text: str):
        import numpy as np

        cuts, i = [0], 0
        while i < len(text):
            i += next((len(w) for w in self.words if text.startswith(w, i)), 1)
            cuts.append(i)
        return np.array(cuts)


def _tokens_across_words(tokenizer) -> list[str]:
    """Merged tokens (2 bytes or more) whose surface is no part of one word of the cipher (punctuation
    counts as a word)."""
    from transtok.vocabulary import token_bytes

    words = [w.encode() for w in LexiconSegmenter.words]
    surfaces = [surface.strip() for surface in token_bytes(tokenizer) if surface and len(surface.strip()) > 1]
    return [s.decode(errors="replace") for s in surfaces if not any(s in word for word in words)]


# Not WordPiece: BERT's normalizer already makes every Han character a word of its own.
@pytest.mark.parametrize("family", ["byte_level", "sentencepiece"])
def test_merges_bounded_by_words_never_learn_a_token_spanning_two_words(family):
    pairs = factories.cipher_corpus(600, cipher=factories.CHINESE, separator="",
                                    punctuation=factories.CHINESE_PUNCTUATION)
    texts = [t for _, t in pairs]
    source = getattr(factories, f"{family}_tokenizer")([s for s, _ in pairs], vocab_size=300)
    free = train_tokenizer(texts, source, 900, show_progress=False)
    bounded = train_tokenizer(texts, source, 900, show_progress=False, segmenter=LexiconSegmenter())
    assert _tokens_across_words(free)  # the corpus does tempt the trainer to merge across words
    assert _tokens_across_words(bounded) == []
    for word in ("土地", "看见", "黄金"):  # words are still learned whole
        assert len(bounded.tokenize(word)) == 1
    # Training only: the target's pipeline is the source's, and decoding gives the text back.
    assert json.loads(bounded.backend_tokenizer.to_str())["pre_tokenizer"] == \
        json.loads(source.backend_tokenizer.to_str())["pre_tokenizer"]
    assert bounded.decode(bounded(texts[0], add_special_tokens=False)["input_ids"]).replace(" ", "") == texts[0]


def test_merges_bounded_by_words_leave_spaced_text_unchanged():
    texts = factories.english_sentences(300)
    source = factories.byte_level_tokenizer(texts, vocab_size=300)
    free = train_tokenizer(texts, source, 500, show_progress=False)
    bounded = train_tokenizer(texts, source, 500, show_progress=False, segmenter=LexiconSegmenter())
    assert bounded.backend_tokenizer.to_str() == free.backend_tokenizer.to_str()


def test_training_segmenter_never_makes_every_character_a_word(monkeypatch, caplog):
    import logging
    import sys

    from transtok.segment import TokenSegmenter, training_segmenter

    assert training_segmenter("none") is None and training_segmenter("tokens") is None
    segmenter = TokenSegmenter()
    assert training_segmenter(segmenter) is segmenter  # an object is used as given
    monkeypatch.setitem(sys.modules, "icu4py", None)
    monkeypatch.setitem(sys.modules, "icu4py.breakers", None)
    with caplog.at_level(logging.WARNING, logger="transtok.segment"):
        assert training_segmenter("auto") is None
    assert "icu4py" in caplog.text and "pip install" in caplog.text
    with pytest.raises(MissingDependencyError, match="icu4py"):
        training_segmenter("icu")


# --- combining marks (Devanagari vowel signs and viramas, Arabic vowel points) ---------------------

# Hindi-like words: consonants with vowel signs (ि ी ु े ो ा) and viramas (्), all category Mn/Mc.
HINDI_WORDS = ["परमेश्वर", "पृथ्वी", "सृष्टि", "आकाश", "मनुष्य", "राजा", "लोगों", "कहा", "प्रभु", "यहोवा"]


def hindi_corpus(lines: int = 300) -> list[str]:
    import random

    rng = random.Random(0)
    return [" ".join(rng.choice(HINDI_WORDS) for _ in range(rng.randint(4, 9))) + "।" for _ in range(lines)]


def test_split_regex_keeps_marks_in_words_and_changes_nothing_else():
    from transtok.tokenizer import _with_marks, keep_marks_in_words

    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False)
    section = json.loads(gpt2.__getstate__())
    repaired = keep_marks_in_words(section)
    assert section == json.loads(gpt2.__getstate__()), "the argument was modified"
    fixed = Tokenizer(models.BPE())
    fixed.pre_tokenizer = pre_tokenizers.Sequence([])
    spec_ = json.loads(fixed.to_str())
    spec_["pre_tokenizer"] = repaired
    fixed = Tokenizer.from_str(json.dumps(spec_)).pre_tokenizer
    for text in ["In the beginning, God's 12 words   end.\n\nthey'll", "¿Quién dijo 'sí'? 1999 — Jesús.",
                 "В начале сотворил Бог небо и землю.", "太初に神は天と地とを創造された。"]:
        assert [p for p, _ in fixed.pre_tokenize_str(text)] == [p for p, _ in gpt2.pre_tokenize_str(text)], text
    hindi = "परमेश्वर ने आकाश और पृथ्वी की सृष्टि की।"
    words = [p for p, _ in fixed.pre_tokenize_str(hindi)]
    assert len(words) == 9 and len([p for p, _ in gpt2.pre_tokenize_str(hindi)]) > 15  # 8 words and the danda
    # Llama-3's split: \p{L} widened outside and inside brackets, nothing else touched
    llama3 = r"(?i:'s|'t)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+"
    assert _with_marks(llama3) == \
        r"(?i:'s|'t)|[^\r\n\p{L}\p{M}\p{N}]?[\p{L}\p{M}]+|\p{N}{1,3}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s+"
    assert _with_marks(r"[\p{L}\p{M}]+") == r"[\p{L}\p{M}]+"
    # a ByteLevel inside a Sequence (digit splitting first) is repaired in place, the rest kept
    sequence = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), gpt2])
    nested = keep_marks_in_words(json.loads(sequence.__getstate__()))
    assert nested["pretokenizers"][0] == {"type": "Digits", "individual_digits": True}
    assert nested["pretokenizers"][1]["type"] == "Sequence"


def test_target_tokenizer_learns_whole_words_of_a_script_with_combining_marks(corpora):
    english, target_train, _ = corpora
    source = factories.byte_level_tokenizer(english, 300)
    hindi = hindi_corpus()
    target = train_tokenizer(hindi, source, 1000)
    for word in HINDI_WORDS:  # each frequent word is one token (behind GPT-2's split it cannot be)
        assert len(target(" " + word, add_special_tokens=False).input_ids) == 1, word
    assert target.decode(target(hindi[0]).input_ids, skip_special_tokens=True) == hindi[0]
    # text without marks: the source's pre-tokenizer, exactly
    plain = train_tokenizer(target_train, source, 400)
    assert spec(plain)["pre_tokenizer"] == spec(source)["pre_tokenizer"]
    assert spec(target)["pre_tokenizer"] != spec(source)["pre_tokenizer"]


# --- reserved special tokens of the source (Gemma's <unusedN>) ----------------------------------------


@pytest.fixture(scope="module")
def gemma_like(corpora):
    return factories.gemma_like_tokenizer(corpora[0], 300, unused=300)


def _added(tokenizer) -> list[str]:
    return [entry["content"] for entry in spec(tokenizer)["added_tokens"]]


def _learned(tokenizer) -> int:
    return len(tokenizer) - len(_added(tokenizer))


def test_reserved_specials_are_left_out_and_the_vocab_size_is_learned_tokens(gemma_like, corpora, caplog):
    import logging

    from transtok.tokenizer import unused_special_tokens

    unused = [f"<unused{i}>" for i in range(300)]
    assert unused_special_tokens(gemma_like) == unused
    with caplog.at_level(logging.INFO, logger="transtok.tokenizer"):
        target = train_tokenizer(corpora[1], gemma_like, 600)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped ")]
    assert said == ["dropped 300 reserved special tokens of the source (<unused0> .. <unused299>) that have no role "
                    "and are not in the chat template; keep_reserved=True (`keep_reserved_tokens=True`) keeps them"]
    # the others stay first, in the source's order, non-special <table> and role-less [multimodal] included
    assert _added(target) == [token for token in _added(gemma_like) if token not in unused]
    assert {"[multimodal]", "<table>", "<start_of_turn>", "<image_soft_token>"} <= set(_added(target))
    assert not [token for token in target.get_vocab() if token.startswith("<unused")]
    kept = train_tokenizer(corpora[1], gemma_like, 600, keep_reserved=True)
    assert _added(kept) == _added(gemma_like)
    assert list(kept.extra_special_tokens) == list(gemma_like.extra_special_tokens)
    # 600 tokens either way: the reserved ones no longer take the place of 300 learned ones
    assert len(target) == len(kept) == 600
    assert _learned(target) == _learned(kept) + 300


def test_roles_and_chat_template_tokens_of_a_gemma_like_source_keep_working(gemma_like, corpora, tmp_path):
    target = train_tokenizer(corpora[1], gemma_like, 600)
    save_tokenizer(target, tmp_path / "tok")
    for tok in (target, AutoTokenizer.from_pretrained(tmp_path / "tok")):
        vocab = tok.get_vocab()
        for role in ("bos", "eos", "pad", "unk", "mask", "boi", "eoi", "image"):
            token = getattr(tok, f"{role}_token")
            assert token == getattr(gemma_like, f"{role}_token") and getattr(tok, f"{role}_token_id") == vocab[token]
        assert list(tok.extra_special_tokens) == ["<start_of_turn>", "<end_of_turn>"]
        assert tok(corpora[2][0]).input_ids[0] == tok.bos_token_id == 2
        ids = tok.apply_chat_template([{"role": "user", "content": corpora[2][0]}], add_generation_prompt=True,
                                      tokenize=True, return_dict=False)
        turn = [vocab["<start_of_turn>"], vocab["<end_of_turn>"]]
        assert ids[:2] == [tok.bos_token_id, turn[0]] and ids.count(turn[0]) == 2 and ids.count(turn[1]) == 1
        assert corpora[2][0] in tok.decode(ids, skip_special_tokens=True)


def test_only_role_less_unused_specials_outside_the_chat_template_are_left_out(corpora):
    """Conservative: a reserved-looking name is kept when it has a role, is in the chat template, is
    inserted by the post-processor or is not special; T5's sentinels are not reserved."""
    from tokenizers import AddedToken

    from transtok.tokenizer import unused_special_tokens

    backend = factories.byte_level_tokenizer(corpora[0][:200], 300).backend_tokenizer
    dropped = ["<|reserved_special_token_0|>", "[control_12]", "<SPECIAL_20>", "<|placeholder1|>", "<unused9>",
               "<|extra_0|>"]
    kept = ["<unused0>", "<unused1>", "<unused2>", "<unused3>", "<extra_id_0>", "<start_of_image>"]
    backend.add_special_tokens([*dropped, *kept[:3], *kept[4:]])
    backend.add_tokens([AddedToken("<unused3>", special=False)])
    backend.post_processor = processors.TemplateProcessing(
        single="<unused2> $A", special_tokens=[("<unused2>", backend.token_to_id("<unused2>"))])
    source = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<unused0>", eos_token="<|endoftext|>",
                                     extra_special_tokens=dropped)  # declared, but no role and not in the template
    source.chat_template = "{% for m in messages %}<unused1>{{ m['content'] }}{% endfor %}"
    assert unused_special_tokens(source) == dropped
    target = train_tokenizer(corpora[1], source, 400)
    assert set(kept) | {"<|endoftext|>"} <= set(target.get_vocab()) and not set(dropped) & set(target.get_vocab())
    assert target.pad_token == "<unused0>" and list(target.extra_special_tokens) == []
    assert target.convert_ids_to_tokens(target("mupex").input_ids[0]) == "<unused2>"


def test_minimum_vocab_size_counts_only_the_specials_kept(gemma_like):
    minimum = minimum_vocab_size(gemma_like)
    assert minimum_vocab_size(gemma_like, keep_reserved=True) == minimum + 300
    assert len(train_tokenizer(["some text"], gemma_like, minimum + 9)) <= minimum + 9  # + the 9 characters
    with pytest.raises(ConfigError, match=rf"smaller than the {minimum + 300:,} tokens .* use `vocab_size` "
                                          rf"{minimum + 300:,} or more"):
        train_tokenizer(["some text"], gemma_like, minimum + 9, keep_reserved=True)


def test_cli_train_tokenizer_keep_reserved_tokens(tmp_path, corpora, gemma_like, capsys):
    from transtok.cli import main

    gemma_like.save_pretrained(tmp_path / "source")
    corpus = tmp_path / "target.txt"
    corpus.write_text("\n".join(corpora[1]) + "\n", encoding="utf-8")
    common = ["train-tokenizer", "--text", str(corpus), "--model", str(tmp_path / "source")]
    assert main([*common, "--vocab-size", "600", "--output", str(tmp_path / "plain")]) == 0
    assert main([*common, "--vocab-size", "600", "--keep-reserved-tokens", "--output", str(tmp_path / "all")]) == 0
    plain, every = (AutoTokenizer.from_pretrained(tmp_path / name) for name in ("plain", "all"))
    assert "<unused7>" not in plain.get_vocab() and "<unused7>" in every.get_vocab()
    assert len(plain) == len(every) == 600
    capsys.readouterr()
    assert main([*common, "--extend", "20", "--keep-reserved-tokens", "--output", str(tmp_path / "ext")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("transtok train-tokenizer: error: --keep-reserved-tokens is for --vocab-size")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "ext").exists()
