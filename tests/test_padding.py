"""Padded embedding tables (Qwen2, Phi-3, Pythia): more rows than the tokenizer has tokens.

The mapping covers the tokenizer's ids; the extra source rows are never partners; the new table is
padded to the source's multiple in both transplant paths; generation never emits a padding id.
"""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import factories
from transtok.checkpoint import inspect_checkpoint, transplant_checkpoint
from transtok.errors import MismatchError
from transtok.hydra import Hydra, Vocabulary
from transtok.mapping import TokenMapping
from transtok.surgery import is_tied, padded_vocab_size, padding_multiple, transplant
from transtok.vocabulary import vocab_hash


@pytest.fixture(scope="module")
def tokenizers():
    pairs = factories.cipher_corpus(300)
    return (factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=300),
            factories.sentencepiece_tokenizer([t for _, t in pairs], vocab_size=200))


def random_mapping(source, target, seed=0):
    """Sparse row-stochastic (V_t, V_s) mapping over the tokenizers' ids, a fifth of rows on the fallback."""
    size_t, size_s = len(target), len(source)
    rng = np.random.RandomState(seed)
    dense = rng.rand(size_t, size_s) * (rng.rand(size_t, size_s) < 0.05)
    dense[:, 1] += 1e-3
    dense /= dense.sum(1, keepdims=True)
    residual = np.where(rng.rand(size_t) < 0.2, 1.0, 0.0).astype(np.float32)
    dense[residual == 1] = 0
    return TokenMapping(sp.csr_matrix(dense.astype(np.float32)), residual, np.zeros(size_t, np.int8),
                        vocab_hash(source), vocab_hash(target))


def test_padded_size_follows_the_source_multiple():
    assert padding_multiple(151_936) == 128 and padding_multiple(32_064) == 64 and padding_multiple(50_304) == 128
    assert padding_multiple(50_432) == 128  # 256 divides it; capped
    assert padding_multiple(32_001) == 1
    assert padded_vocab_size(151_936, 151_665, 16_000) == 16_000  # already a multiple of 128
    assert padded_vocab_size(151_936, 151_665, 16_001) == 16_128
    assert padded_vocab_size(32_064, 32_011, 20_000) == 20_032
    assert padded_vocab_size(50_304, 50_277, 100) == 128
    assert padded_vocab_size(32_000, 32_000, 123) == 123  # unpadded source, unpadded result
    assert padded_vocab_size(32_001, 32_000, 123) == 123  # odd row count: multiple 1
    for rows, tokens in ((151_936, 151_665), (32_064, 32_011), (50_432, 50_277)):
        for new in (1, 999, 16_000, 16_001, 200_003):
            size = padded_vocab_size(rows, tokens, new)
            assert size % padding_multiple(rows) == 0 and new <= size < new + padding_multiple(rows)
    with pytest.raises(MismatchError, match="has 100 rows but the tokenizer 120 tokens"):
        padded_vocab_size(100, 120, 50)


@pytest.mark.parametrize("arch,tie", factories.PADDED_ARCHS)
def test_in_memory_transplant_pads_like_the_source(tokenizers, arch, tie):
    source, target = tokenizers
    model = factories.padded_causal_lm(arch, source, tie)
    source_rows = model.get_input_embeddings().weight.detach().clone()
    source_head = model.get_output_embeddings().weight.detach().clone()
    mapping = random_mapping(source, target)
    transplant(model, mapping, target, source_tokenizer=source)

    rows = padded_vocab_size(source_rows.shape[0], len(source), len(target))
    assert rows > len(target) and rows % factories.PADDED[arch] == 0
    inputs, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert inputs.shape[0] == head.shape[0] == model.config.vocab_size == rows
    assert is_tied(model) == tie
    # The tokenizer rows come from the tokenizer rows of the source only (the extras are no partners) ...
    torch.testing.assert_close(inputs[:len(target)], mapping.apply(source_rows[:len(source)]))
    if not tie:
        torch.testing.assert_close(head[:len(target)], mapping.apply(source_head[:len(source)]))
    # ... and the fallback mean is the mean of the tokenizer rows, not of the random padding rows.
    fallback = int(np.flatnonzero(mapping.residual == 1)[0])
    torch.testing.assert_close(inputs[fallback], source_rows[:len(source)].mean(0))
    # Padding rows: the mean tokenizer row (the source's padding rows are random, no convention).
    torch.testing.assert_close(inputs[len(target):], source_rows[:len(source)].mean(0).expand(rows - len(target), -1))
    assert model.generation_config.suppress_tokens == list(range(len(target), rows))


def test_zero_padding_rows_stay_zero(tokenizers):
    source, target = tokenizers
    model = factories.padded_causal_lm("qwen2", source, False, zero_padding=True)
    transplant(model, random_mapping(source, target), target, source_tokenizer=source)
    assert not model.get_input_embeddings().weight[len(target):].any()
    assert not model.get_output_embeddings().weight[len(target):].any()
    assert model.get_input_embeddings().weight[:len(target)].abs().sum(1).min() > 0


@pytest.mark.parametrize("arch,tie", factories.PADDED_ARCHS)
def test_streaming_equals_in_memory_on_padded_tables(tmp_path, tokenizers, arch, tie):
    source, target = tokenizers
    model = factories.padded_causal_lm(arch, source, tie)
    model.save_pretrained(tmp_path / "src", max_shard_size="20KB")
    source.save_pretrained(tmp_path / "src")
    mapping = random_mapping(source, target)

    memory = AutoModelForCausalLM.from_pretrained(tmp_path / "src")
    transplant(memory, mapping, target, source_tokenizer=source)
    memory.save_pretrained(tmp_path / "memory")
    (tmp_path / "stream").mkdir()
    transplant_checkpoint(inspect_checkpoint(tmp_path / "src"), mapping, target, tmp_path / "stream",
                          source_tokenizer=source)

    def tensors(directory):
        out = {}
        for path in sorted(directory.glob("*.safetensors")):
            with safe_open(path, framework="pt") as handle:
                out.update({key: handle.get_tensor(key) for key in handle.keys()})
        return out

    expected, got = tensors(tmp_path / "memory"), tensors(tmp_path / "stream")
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "stream")
    rows = padded_vocab_size(model.config.vocab_size, len(source), len(target))
    assert loaded.config.vocab_size == rows == memory.config.vocab_size
    assert loaded.generation_config.suppress_tokens == list(range(len(target), rows))


def _boost_padding(model, tokens):
    """Make the LM head's padding rows huge: unsuppressed, one of them wins every step."""
    torch.manual_seed(0)
    with torch.no_grad():
        torch.nn.init.normal_(model.get_output_embeddings().weight[tokens:], std=1e3)


@pytest.mark.parametrize("arch,tie", factories.PADDED_ARCHS)
def test_generation_never_emits_a_padding_id(tmp_path, tokenizers, arch, tie):
    source, target = tokenizers
    model = factories.padded_causal_lm(arch, source, tie)
    model.save_pretrained(tmp_path / "src")
    source.save_pretrained(tmp_path / "src")
    (tmp_path / "out").mkdir()
    transplant_checkpoint(inspect_checkpoint(tmp_path / "src"), random_mapping(source, target), target,
                          tmp_path / "out", source_tokenizer=source)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    _boost_padding(loaded, len(target))
    prompt = torch.tensor([target.encode("mupex dofisux debox")])
    settings = dict(max_new_tokens=12, do_sample=False, eos_token_id=None)
    unguarded = loaded.generate(prompt, suppress_tokens=None, **settings)[0, prompt.shape[1]:]
    assert (unguarded >= len(target)).any()  # the boosted padding rows would be emitted ...
    guarded = loaded.generate(prompt, **settings)[0, prompt.shape[1]:]
    assert len(guarded) == 12 and (guarded < len(target)).all()  # ... but the saved generation config stops it
    sampled = loaded.generate(prompt, max_new_tokens=12, do_sample=True, top_k=0, eos_token_id=None)
    assert (sampled[0, prompt.shape[1]:] < len(target)).all()


def test_hydra_never_emits_a_padding_id(tokenizers):
    source, target = tokenizers
    body = factories.padded_causal_lm("qwen2", source, False)
    new = factories.padded_causal_lm("qwen2", source, False)
    transplant(new, random_mapping(source, target), target, source_tokenizer=source)
    hydra = Hydra.build(body, [Vocabulary.from_model("en", factories.padded_causal_lm("qwen2", source, False), source),
                               Vocabulary.from_model("es", new, target)], output="es")
    span = hydra.span("es")
    assert span.size == new.config.vocab_size > len(target)
    with torch.no_grad():  # boost the padding rows of "es" and the whole "en" head
        head = hydra.model.get_output_embeddings().weight
        head[span.offset + len(target):span.end] = head[span.offset + len(target):span.end] * 1e3
    prompt = hydra.encode("mupex dofisux debox", "es")
    out = hydra.generate([prompt], max_new_tokens=10, stop_ids=())[0]
    assert out and all(span.offset <= i < span.offset + len(target) for i in out)
    with hydra.view("es") as plain:
        assert plain.generation_config.suppress_tokens == list(range(len(target), span.size))


def test_mapping_for_another_tokenizer_is_still_refused(tokenizers):
    source, target = tokenizers
    other = factories.byte_level_tokenizer([t for _, t in factories.cipher_corpus(300)], vocab_size=280)
    model = factories.padded_causal_lm("qwen2", source, True)
    with pytest.raises(MismatchError, match="build the mapping with this model's tokenizer"):
        transplant(model, random_mapping(other, target), target, source_tokenizer=source)
    # A mapping over more source tokens than the table has rows is refused even without the tokenizer.
    small = factories.tiny_causal_lm("qwen2", 200, True)
    with pytest.raises(MismatchError, match="the mapping expects 300 source rows"):
        transplant(small, random_mapping(source, target), target)


def test_cli_transplants_a_padded_checkpoint_both_ways(tmp_path, tokenizers):
    from transtok.cli import main

    source, target = tokenizers
    model = factories.padded_causal_lm("phi3", source, False)
    model.save_pretrained(tmp_path / "src")
    source.save_pretrained(tmp_path / "src")
    target.save_pretrained(tmp_path / "tgt")
    assert main(["map", "--model", str(tmp_path / "src"), "--target-tokenizer", str(tmp_path / "tgt"),
                 "--init", "fvt", "--output", str(tmp_path / "m")]) == 0
    for flag in ([], ["--in-memory"]):
        out = tmp_path / f"out{len(flag)}"
        assert main(["transplant", "--model", str(tmp_path / "src"), "--mapping", str(tmp_path / "m"),
                     "--output", str(out), *flag]) == 0
        loaded = AutoModelForCausalLM.from_pretrained(out)
        rows = padded_vocab_size(model.config.vocab_size, len(source), len(target))
        assert loaded.config.vocab_size == rows == loaded.get_input_embeddings().weight.shape[0] > len(target)
        assert loaded.generation_config.suppress_tokens == list(range(len(target), rows))
