"""FOCUS through deepfocus: the mapping contract, the overlap, determinism, and deepfocus itself as the oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

deepfocus = pytest.importorskip("deepfocus")
fasttext = pytest.importorskip("fasttext")

import factories  # noqa: E402
from transtok.errors import ConfigError, DataError, MissingDependencyError  # noqa: E402
from transtok.focus import FocusConfig, focus_mapping, tokenized_lines, train_token_fasttext  # noqa: E402
from transtok.mapping import PROVENANCE, TokenMapping  # noqa: E402
from transtok.vocabulary import exact_matches, special_pairs, token_bytes, vocab_hash  # noqa: E402


@pytest.fixture(scope="module")
def target_texts(cipher_pairs):
    return [t for _, t in cipher_pairs]


@pytest.fixture(scope="module")
def model(target_tokenizer, target_texts):
    return train_token_fasttext(target_tokenizer, target_texts)


@pytest.fixture(scope="module")
def model_path(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("focus") / "tokens.bin"
    model.save_model(str(path))
    return str(path)


@pytest.fixture(scope="module")
def mappings(source_tokenizer, target_tokenizer, model):
    return {mode: focus_mapping(source_tokenizer, target_tokenizer, config=FocusConfig(overlap=mode),
                                fasttext_model=model)
            for mode in ("bytes", "deepfocus")}


def _code(name):
    return PROVENANCE.index(name)


def test_rows_are_stochastic_and_the_report_counts_every_row(mappings, source_tokenizer, target_tokenizer):
    for mapping, report in mappings.values():
        assert mapping.shape == (len(target_tokenizer), len(source_tokenizer))
        assert (mapping.matrix.data > 0).all()
        totals = np.asarray(mapping.matrix.sum(axis=1)).ravel() + mapping.residual
        np.testing.assert_allclose(totals, 1.0, atol=1e-5)
        assert set(np.unique(mapping.residual)) <= {0.0, 1.0}
        assert sum(report.provenance.values()) == len(target_tokenizer)
        assert report.provenance["focus"] > 0 and report.provenance["copied"] > 0
        assert report.provenance["fallback"] == int((mapping.residual == 1).sum())
        assert (mapping.source_vocab_hash, mapping.target_vocab_hash) == (vocab_hash(source_tokenizer),
                                                                           vocab_hash(target_tokenizer))
        assert mapping.config["init"] == "focus" and mapping.fallback == "mean"


def test_overlap_tokens_copy_their_byte_identical_source_row(mappings, source_tokenizer, target_tokenizer):
    mapping, _ = mappings["bytes"]
    exact = exact_matches(token_bytes(target_tokenizer), token_bytes(source_tokenizer))
    specials = {t for t, _ in special_pairs(target_tokenizer, source_tokenizer)}
    overlap = np.array([t for t in np.flatnonzero(exact >= 0) if t not in specials])
    assert len(overlap) > 256  # the byte alphabet and some shared subwords
    weight = torch.randn(len(source_tokenizer), 8)
    out = mapping.apply(weight)
    assert torch.equal(out[torch.from_numpy(overlap)], weight[torch.from_numpy(exact[overlap])])
    assert (mapping.provenance[overlap] == _code("copied")).all()
    mixed = np.flatnonzero(mapping.provenance == _code("focus"))
    assert (exact[mixed] < 0).all()
    # FOCUS mixes only overlap rows.
    partners = np.unique(mapping.matrix[mixed].indices)
    assert np.isin(partners, exact[overlap]).all()


def test_deepfocus_canonical_forms_collapse_byte_tokens_which_the_bytes_overlap_keeps_apart(
        mappings, source_tokenizer, target_tokenizer):
    vocab = target_tokenizer.get_vocab()
    partial = [vocab[c] for c in "ÃÅ¤"]  # lone UTF-8 lead/continuation bytes: decode() gives "�"
    source_vocab = source_tokenizer.get_vocab()
    by_bytes, _ = mappings["bytes"]
    by_deepfocus, _ = mappings["deepfocus"]
    assert [by_bytes.matrix[t].indices.tolist() for t in partial] == [[source_vocab[c]] for c in "ÃÅ¤"]
    copied = {tuple(by_deepfocus.matrix[t].indices.tolist()) for t in partial}
    assert len(copied) == 1  # all three copy one and the same source row


@pytest.mark.slow
def test_mapping_reproduces_deepfocus_focus(mappings, source_tokenizer, target_tokenizer, model_path):
    """deepfocus.FOCUS on the same fastText model is the oracle for every non-random row."""
    mapping, _ = mappings["deepfocus"]
    weight = torch.randn(len(source_tokenizer), 16, generator=torch.Generator().manual_seed(0))
    runs = [deepfocus.FOCUS(target_tokenizer, source_tokenizer, weight, fasttext_model_path=model_path,
                            verbosity="silent", seed=seed) for seed in (1, 2)]
    random_rows = (runs[0] != runs[1]).any(dim=1).numpy()
    assert random_rows.any()
    np.testing.assert_array_equal(random_rows, mapping.residual == 1)
    ours = mapping.apply(weight)
    torch.testing.assert_close(ours[~random_rows], runs[0][~random_rows], rtol=0, atol=1e-6)
    assert (mapping.provenance == _code("focus")).sum() > 10


def _word_vectors(model) -> np.ndarray:
    # Not get_input_matrix(): it copies all 2M hashed-subword rows (800 MB).
    return np.stack([model.get_word_vector(word) for word in model.words])


def test_fasttext_training_matches_deepfocus_and_is_deterministic(target_tokenizer, target_texts, model, tmp_path,
                                                                   monkeypatch):
    from deepfocus import fasttext_embs

    text = tmp_path / "target.txt"
    text.write_text("\n".join(target_texts) + "\n", encoding="utf-8")
    monkeypatch.setattr(fasttext_embs, "CACHE_DIR", tmp_path / "cache")
    theirs = fasttext_embs.train_fasttext(str(text), target_tokenizer, epochs=3, dim=100,
                                          min_count=FocusConfig().min_count, processes=1)
    assert theirs.words == model.words
    np.testing.assert_array_equal(_word_vectors(theirs), _word_vectors(model))
    del theirs
    again = train_token_fasttext(target_tokenizer, target_texts)
    np.testing.assert_array_equal(_word_vectors(again), _word_vectors(model))
    del again
    # fastText's minstd_rand treats seeds 0 and 1 alike, hence 2.
    other = train_token_fasttext(target_tokenizer, target_texts, FocusConfig(seed=2))
    assert not np.allclose(_word_vectors(other), _word_vectors(model), atol=1e-3)


def test_same_seed_same_mapping_from_text_or_saved_model(source_tokenizer, target_tokenizer, target_texts,
                                                         mappings, model_path):
    reference, _ = mappings["bytes"]
    from_text, _ = focus_mapping(source_tokenizer, target_tokenizer, target_texts)
    from_file, _ = focus_mapping(source_tokenizer, target_tokenizer, config=FocusConfig(fasttext_model=model_path))
    for other in (from_text, from_file):
        assert (other.matrix != reference.matrix).nnz == 0
        np.testing.assert_array_equal(other.provenance, reference.provenance)


def test_save_load_and_transplant_keep_the_contract(mappings, source_tokenizer, target_tokenizer, tmp_path):
    from transtok.surgery import transplant

    mapping, _ = mappings["bytes"]
    mapping.save(tmp_path)
    loaded = TokenMapping.load(tmp_path)
    assert (loaded.matrix != mapping.matrix).nnz == 0 and loaded.config == mapping.config
    lm = factories.tiny_causal_lm("llama", len(source_tokenizer), tie=True, tokenizer=source_tokenizer)
    source_rows = lm.get_input_embeddings().weight.detach().clone()
    transplant(lm, loaded, target_tokenizer, source_tokenizer=source_tokenizer)
    rows = lm.get_input_embeddings().weight.detach()
    assert rows.shape[0] == len(target_tokenizer)
    torch.testing.assert_close(rows, loaded.apply(source_rows))


def test_tokenized_lines_are_what_fasttext_sees(target_tokenizer):
    assert list(tokenized_lines(target_tokenizer, ["ab ba\ncd"])) == [
        " ".join(target_tokenizer.tokenize("ab ba")), " ".join(target_tokenizer.tokenize("cd"))]


def test_bad_inputs_are_refused_with_the_fix(source_tokenizer, target_tokenizer, tmp_path):
    with pytest.raises(DataError, match="needs target-language text"):
        focus_mapping(source_tokenizer, target_tokenizer, ["", "\n"])
    with pytest.raises(DataError, match="no target token occurs `focus.min_count` 3 times in the 1 lines"):
        focus_mapping(source_tokenizer, target_tokenizer, ["kax"])
    with pytest.raises(ConfigError, match="or `focus.fasttext_model` PATH"):
        focus_mapping(source_tokenizer, target_tokenizer)
    with pytest.raises(DataError, match="missing.bin' does not exist"):
        focus_mapping(source_tokenizer, target_tokenizer,
                      config=FocusConfig(fasttext_model=str(tmp_path / "missing.bin")))
    with pytest.raises(ConfigError, match="`focus.min_count` must be an integer >= 1, got 0"):
        FocusConfig(min_count=0)
    with pytest.raises(ConfigError, match="`focus.dim` must be an integer >= 1"):
        FocusConfig(dim=0)
    with pytest.raises(ConfigError, match="`focus.overlap` 'fuzzy' is not known; choose one of bytes, deepfocus"):
        FocusConfig(overlap="fuzzy")
    with pytest.raises(ConfigError, match="use them with overlap='deepfocus'"):
        FocusConfig(fuzzy_match_all=True)


def test_missing_deepfocus_names_the_extra(source_tokenizer, target_tokenizer, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "deepfocus.focus", None)
    with pytest.raises(MissingDependencyError, match=r"`init` focus needs .*'deepfocus'.*transtok\[focus\]"):
        focus_mapping(source_tokenizer, target_tokenizer, ["x"])


def test_cli_map_and_transfer_take_init_focus(source_tokenizer, target_tokenizer, target_texts, cipher_pairs,
                                             tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from transtok.cli import main

    source = tmp_path / "source"
    factories.tiny_causal_lm("llama", len(source_tokenizer), False, source_tokenizer).save_pretrained(source)
    source_tokenizer.save_pretrained(source)
    target_tokenizer.save_pretrained(tmp_path / "target")
    (tmp_path / "target.txt").write_text("".join(t + "\n" for t in target_texts), encoding="utf-8")
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in cipher_pairs), encoding="utf-8")
    base = ["map", "--init", "focus", "--model", str(source), "--target-tokenizer", str(tmp_path / "target")]

    assert main(base + ["--output", str(tmp_path / "none")]) == 2
    assert "--init focus needs target-language text" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()

    assert main(base + ["--text", str(tmp_path / "target.txt"), "--seed", "3",
                        "--output", str(tmp_path / "m")]) == 0
    expected, _ = focus_mapping(source_tokenizer, target_tokenizer, target_texts, config=FocusConfig(seed=3))
    written = TokenMapping.load(tmp_path / "m")
    assert (written.matrix != expected.matrix).nnz == 0
    assert (written.provenance == PROVENANCE.index("focus")).sum() > 0

    # transfer trains fastText on the corpus's target side: the same text, so the same mapping.
    assert main(["transfer", "--init", "focus", "--seed", "3", "--model", str(source), "--parallel",
                 str(tmp_path / "pairs.tsv"), "--target-tokenizer", str(tmp_path / "target"),
                 "--output", str(tmp_path / "model")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    source_model = AutoModelForCausalLM.from_pretrained(source)
    rows = expected.apply(source_model.get_input_embeddings().weight.detach())
    torch.testing.assert_close(model.get_input_embeddings().weight.detach(), rows)
    assert not (tmp_path / "model" / "transtok" / "alignment").exists()
