"""The language offset of an extended model's new LM-head rows: exact in the mean, only on new head
rows, the same through the streaming and the in-memory transplant."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import factories
from transtok.align import align
from transtok.calibration import (apply_language_offset, check_offset, head_inputs_moments, language_offset,
                                  sample_pairs)
from transtok.corpus import ParallelCorpus
from transtok.errors import ArchitectureError, ConfigError
from transtok.evaluate import _prefix_id, eval_seq_len
from transtok.extension import extend_tokenizer
from transtok.mapping import MappingConfig
from transtok.pipeline import mapping_from_alignment, run_transplant, save_mapping_dir
from transtok.surgery import is_tied, transplant

pytestmark = pytest.mark.usefixtures("one_thread")
N_NEW = 40


@pytest.fixture(scope="module")
def setup():
    pairs = factories.cipher_corpus(400, seed=3)
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=300)
    extended, _ = extend_tokenizer([t for _, t in pairs], source, N_NEW)
    counts = align(ParallelCorpus.from_pairs(pairs), source, extended, aligner="fast_align")
    mapping, report = mapping_from_alignment(source, extended, counts)
    return pairs, source, extended, mapping, report


def _new_token_logits(model, tokenizer, texts):
    """Logits of every position that predicts a text token, read as evaluation reads text (written
    here independently of transtok.calibration): (positions, V)."""
    ids = tokenizer("\n".join(texts), add_special_tokens=False)["input_ids"]
    seq_len, prefix = eval_seq_len(model), _prefix_id(tokenizer)
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), seq_len):
            window = torch.tensor([[prefix, *ids[start:start + seq_len]]])
            out.append(model(input_ids=window).logits[0, :-1].double())
    return torch.cat(out)


@pytest.mark.parametrize("arch,tie", [("llama", True), ("gpt2", True), ("qwen2", False)])
def test_offset_is_exact_in_the_mean_and_moves_only_new_head_rows(setup, arch, tie):
    pairs, source, extended, mapping, _ = setup
    model = factories.tiny_causal_lm(arch, len(source), tie, source)
    transplant(model, mapping, extended, source_tokenizer=source)
    assert not is_tied(model)
    before = copy.deepcopy(model)
    english, target = sample_pairs([s for s, _ in pairs], [t for _, t in pairs], 64)
    delta = 1.5
    offset = apply_language_offset(model, extended, english, target, delta=delta, new_from=len(source))
    n = len(source)
    assert torch.equal(model.get_input_embeddings().weight, before.get_input_embeddings().weight)
    head, old_head = model.get_output_embeddings().weight, before.get_output_embeddings().weight
    assert torch.equal(head[:n], old_head[:n])
    expected = (old_head[n:].double() + offset.vector).float()
    assert torch.allclose(head[n:].double(), expected.double(), atol=1e-6)
    for texts, shift in ((english, -delta), (target, 0.0)):
        change = _new_token_logits(model, extended, texts) - _new_token_logits(before, extended, texts)
        assert torch.equal(change[:, :n], torch.zeros_like(change[:, :n]))  # source tokens' logits unchanged
        per_token = change[:, n:].mean(dim=0)  # mean over positions, for each new token
        assert torch.allclose(per_token, torch.full_like(per_token, shift), atol=1e-4), (texts is english, per_token)
    report = offset.report()
    assert report["source_shift_mean"] == pytest.approx(-delta, abs=1e-9)
    assert report["target_shift_mean"] == pytest.approx(0.0, abs=1e-9)
    assert report["source_shift_std"] > 0 and report["source_positions"] > 100


def test_offset_vector_is_the_least_norm_solution(setup):
    pairs, source, extended, mapping, _ = setup
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    transplant(model, mapping, extended, source_tokenizer=source)
    english, target = [s for s, _ in pairs[:50]], [t for _, t in pairs[:50]]
    offset = language_offset(model, extended, english, target, 0.5)
    mean_s, _, _ = head_inputs_moments(model, extended, english)
    assert torch.allclose(mean_s, offset.source_mean)
    means = torch.stack([offset.source_mean, offset.target_mean])
    assert torch.allclose(means @ offset.vector, torch.tensor([-0.5, 0.0], dtype=torch.float64), atol=1e-10)
    # least norm: v lies in the span of the two means
    coefficients = torch.linalg.lstsq(means.T, offset.vector[:, None]).solution
    assert torch.allclose(means.T @ coefficients, offset.vector[:, None], atol=1e-10)
    # linear in delta; zero for delta 0
    assert torch.allclose(language_offset(model, extended, english, target, 1.0).vector, 2 * offset.vector)


def test_offset_refuses_a_tied_head_and_bad_values(setup):
    pairs, source, extended, _, _ = setup
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    tied, _ = mapping_from_alignment(source, extended, None, MappingConfig(init="fvt", tied_head=True))
    transplant(model, tied, extended, source_tokenizer=source)
    with pytest.raises(ArchitectureError, match="untied head"):
        apply_language_offset(model, extended, ["a b"], ["c d"], delta=1.0, new_from=len(source))
    for bad in (-0.5, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ConfigError, match="`new_token_offset`"):
            check_offset(bad)
    with pytest.raises(ConfigError, match="positive number of pairs"):
        sample_pairs(["a"], ["b"], 0)
    assert sample_pairs(["a", "b", "c"], ["x", "y", "z"], 10) == (["a", "b", "c"], ["x", "y", "z"])
    first = sample_pairs([str(i) for i in range(100)], [str(-i) for i in range(100)], 5)
    assert first == sample_pairs([str(i) for i in range(100)], [str(-i) for i in range(100)], 5)
    assert [int(s) for s in first[0]] == [-int(t) for t in first[1]] == sorted(int(s) for s in first[0])


@pytest.mark.parametrize("arch,tie,padded", [("llama", True, False), ("llama", False, False), ("qwen2", True, True)])
def test_streaming_transplant_with_offset_equals_in_memory(setup, tmp_path, arch, tie, padded):
    pairs, source, extended, mapping, report = setup
    if padded:
        model = factories.padded_causal_lm(arch, source, tie)
    else:
        model = factories.tiny_causal_lm(arch, len(source), tie, source)
        if not tie:
            torch.nn.init.normal_(model.get_output_embeddings().weight)
    rows = model.get_input_embeddings().weight.shape[0]
    model.save_pretrained(tmp_path / "source")
    source.save_pretrained(tmp_path / "source")
    save_mapping_dir(tmp_path / "mapping", mapping, report, source, extended)
    (tmp_path / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    common = dict(new_token_offset=1.0, parallel=[str(tmp_path / "pairs.tsv")], offset_pairs=64)
    run_transplant(str(tmp_path / "source"), str(tmp_path / "mapping"), str(tmp_path / "streamed"), **common)
    run_transplant(str(tmp_path / "source"), str(tmp_path / "mapping"), str(tmp_path / "memory"), in_memory=True,
                   **common)
    streamed = load_file(tmp_path / "streamed" / "model.safetensors")
    memory = load_file(tmp_path / "memory" / "model.safetensors")
    assert streamed.keys() == memory.keys()
    assert all(torch.equal(streamed[k], memory[k]) for k in streamed), [k for k in streamed
                                                                         if not torch.equal(streamed[k], memory[k])]
    for path in ("streamed", "memory"):
        assert json.loads((tmp_path / path / "config.json").read_text())["tie_word_embeddings"] is False
        offset = json.loads((tmp_path / path / "transtok" / "offset.json").read_text())
        assert offset["source_shift_mean"] == pytest.approx(-1.0) and offset["pairs"] == 64
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "streamed")
    head = loaded.get_output_embeddings().weight.detach()
    n = len(source)
    original = model.get_output_embeddings().weight.detach()
    assert not is_tied(loaded)
    assert torch.equal(head[:n], original[:n])
    assert torch.equal(loaded.get_input_embeddings().weight[:n], model.get_input_embeddings().weight[:n])
    # new rows: the head mapping of the source head, plus the offset; padding rows untouched
    plain = mapping.head.apply(original[:n])[n:]
    assert not torch.allclose(head[n:len(extended)], plain)
    if padded:  # the padding rows are those of the transplant without an offset
        assert head.shape[0] > len(extended) and rows > n
        run_transplant(str(tmp_path / "source"), str(tmp_path / "mapping"), str(tmp_path / "plain"))
        plain_head = AutoModelForCausalLM.from_pretrained(tmp_path / "plain").get_output_embeddings().weight
        assert torch.equal(plain_head[len(extended):], head[len(extended):])
        assert torch.equal(plain_head[n:len(extended)], plain)


def test_offset_means_ignore_dropout_and_keep_the_training_mode(setup):
    pairs, source, extended, mapping, _ = setup
    model = factories.tiny_causal_lm("gpt2", len(source), True, source)  # GPT-2 has dropout 0.1
    transplant(model, mapping, extended, source_tokenizer=source)
    english, target = [s for s, _ in pairs[:30]], [t for _, t in pairs[:30]]
    reference = language_offset(model, extended, english, target, 1.0).vector
    model.train()
    assert torch.equal(language_offset(model, extended, english, target, 1.0).vector, reference)
    assert model.training


# --- the unigram prior of a replaced vocabulary's head ---------------------------------------------------------
@pytest.fixture(scope="module")
def replaced():
    """A tiny tied llama transplanted to a cipher-language tokenizer, and the target training texts."""
    pairs = factories.cipher_corpus(400, seed=5)
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=300)
    target = factories.byte_level_tokenizer([t for _, t in pairs], vocab_size=280)
    counts = align(ParallelCorpus.from_pairs(pairs), source, target, aligner="fast_align")
    mapping, _ = mapping_from_alignment(source, target, counts)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    transplant(model, mapping, target, source_tokenizer=source)
    return model, target, [t for _, t in pairs]


def _unigram_gap(model, tokenizer, texts) -> float:
    """KL(target text's token frequencies || the model's mean prediction on the texts), nats."""
    from transtok.calibration import PRIOR_SMOOTHING, mean_prediction

    ids = tokenizer("\n".join(texts), add_special_tokens=False)["input_ids"]
    counts = torch.bincount(torch.tensor(ids), minlength=len(tokenizer))[:len(tokenizer)].double()
    f = (counts + PRIOR_SMOOTHING) / (counts.sum() + PRIOR_SMOOTHING * len(tokenizer))
    q, _, _ = mean_prediction(model, tokenizer, texts)
    return float((f * (f.log() - q.log())).sum())


def test_unigram_prior_unties_moves_only_head_rows_and_fits_the_token_frequencies(replaced):
    from transtok.calibration import apply_unigram_prior, mean_prediction

    model, tokenizer, texts = replaced
    model = copy.deepcopy(model)
    assert is_tied(model)
    inputs_before = model.get_input_embeddings().weight.detach().clone()
    head_before = model.get_output_embeddings().weight.detach().clone()
    gap_before = _unigram_gap(model, tokenizer, texts)
    q, mean_h, positions = mean_prediction(model, tokenizer, texts[:50])
    assert abs(float(q.sum()) - 1) < 1e-6 and positions > 0 and mean_h.shape == (head_before.shape[1],)

    prior = apply_unigram_prior(model, tokenizer, texts, strength=1.0, sample=len(texts))
    assert not is_tied(model) and not model.config.tie_word_embeddings
    assert torch.equal(model.get_input_embeddings().weight, inputs_before), "the inputs do not move"
    head = model.get_output_embeddings().weight.detach()
    assert not torch.equal(head[:len(tokenizer)], head_before[:len(tokenizer)])
    assert torch.equal(head[len(tokenizer):], head_before[len(tokenizer):]), "padding rows stay"
    # v has mean(h)·v = 1: b_t is each logit's change on average; the model's marginal moves to the text's.
    assert float(prior.vector @ mean_prediction(replaced[0], tokenizer, texts)[1]) == pytest.approx(1.0, rel=1e-6)
    assert prior.bias.abs().max() <= 5.0 + 1e-9
    assert _unigram_gap(model, tokenizer, texts) < 0.7 * gap_before


def test_unigram_prior_zero_changes_nothing_and_bad_strengths_are_config_errors(replaced):
    from transtok.calibration import apply_unigram_prior, check_prior

    model, tokenizer, texts = replaced
    model = copy.deepcopy(model)
    logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    apply_unigram_prior(model, tokenizer, texts, strength=0.0, sample=20)
    assert torch.allclose(model(input_ids=torch.tensor([[1, 2, 3]])).logits, logits, atol=1e-6)
    for bad in (-1, float("nan"), True, "0.5"):
        with pytest.raises(ConfigError, match="`unigram_prior`"):
            check_prior(bad)
    with pytest.raises(Exception, match="blank"):
        apply_unigram_prior(model, tokenizer, ["", " "], strength=0.5)


@pytest.mark.parametrize("kind", ["byte_level", "sentencepiece"])
def test_token_counts_in_pieces_are_the_joined_texts_counts(kind):
    """The prior counts its tokens in pieces of a few texts (encoded in parallel); the counts are those of
    the texts joined with newlines, as evaluation reads them: exactly for a byte-level tokenizer; for one that
    marks a text's start (SentencePiece's ▁) up to the first word of each piece (``▁vavex`` for ``v`` ``avex``)."""
    from transtok.calibration import token_counts

    texts = [t for _, t in factories.cipher_corpus(103)]
    tokenizer = getattr(factories, f"{kind}_tokenizer")(texts, vocab_size=320)
    ids = tokenizer("\n".join(texts), add_special_tokens=False)["input_ids"]
    joined = torch.bincount(torch.tensor(ids), minlength=len(tokenizer))[:len(tokenizer)].double()
    for chunk in (1, 7, 50, 200):
        pieces = -(-len(texts) // chunk)
        counts = token_counts(tokenizer, texts, chunk=chunk)
        assert counts.shape == joined.shape and counts.dtype == torch.float64
        off = float((counts - joined).abs().sum())
        assert off == 0 if kind == "byte_level" or pieces == 1 else off <= 12 * (pieces - 1), (chunk, off)
    assert float(token_counts(tokenizer, texts, chunk=7).sum()) > len(texts)
