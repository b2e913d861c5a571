"""Model surgery invariants on tiny llama / qwen2 / gpt2 / gpt_neox models, tied and untied."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import factories
from transtok.errors import ArchitectureError, MismatchError
from transtok.mapping import TokenMapping
from transtok.surgery import is_tied, transplant
from transtok.vocabulary import vocab_hash


def permutation_mapping(tokenizer, perm):
    size = len(tokenizer)
    matrix = sp.csr_matrix((np.ones(size, np.float32), (np.arange(size), perm)), shape=(size, size))
    return TokenMapping(matrix, np.zeros(size, np.float32), np.zeros(size, np.int8), vocab_hash(tokenizer),
                        vocab_hash(tokenizer))


@pytest.fixture(scope="module")
def tokenizer():
    return factories.byte_level_tokenizer([s for s, _ in factories.cipher_corpus(300)], vocab_size=300)


@pytest.mark.parametrize("arch,tie", factories.ARCHS)
def test_identity_keeps_and_permutation_permutes_logits(arch, tie, tokenizer):
    size = len(tokenizer)
    ids = torch.tensor([tokenizer.encode("the king went to the city of gold")])
    for perm in (np.arange(size), np.random.RandomState(1).permutation(size)):
        model = factories.tiny_causal_lm(arch, size, tie, tokenizer)
        if not tie:  # make the head differ from the input table, so a wrong remap shows
            torch.nn.init.normal_(model.get_output_embeddings().weight)
        before = model(ids).logits
        head_before = model.get_output_embeddings().weight.detach().clone()
        transplant(model, permutation_mapping(tokenizer, perm), tokenizer)
        inverse = torch.from_numpy(np.argsort(perm))
        after = model(inverse[ids]).logits
        torch.testing.assert_close(after, before[..., perm], atol=1e-5, rtol=1e-5)
        assert is_tied(model) == tie
        torch.testing.assert_close(model.get_output_embeddings().weight, head_before[perm])


@pytest.mark.parametrize("arch,tie", [("llama", True), ("gpt2", False)])
def test_new_vocabulary_resizes_and_updates_special_ids(arch, tie, tokenizer):
    target = factories.sentencepiece_tokenizer([t for _, t in factories.cipher_corpus(300)], vocab_size=200)
    model = factories.tiny_causal_lm(arch, len(tokenizer), tie, tokenizer)
    size_t, size_s = len(target), len(tokenizer)
    rng = np.random.RandomState(0)
    dense = rng.rand(size_t, size_s) * (rng.rand(size_t, size_s) < 0.02)
    dense[:, 0] += 1e-3
    dense /= dense.sum(1, keepdims=True)
    mapping = TokenMapping(sp.csr_matrix(dense.astype(np.float32)), np.zeros(size_t, np.float32),
                           np.zeros(size_t, np.int8), vocab_hash(tokenizer), vocab_hash(target))
    source_in = model.get_input_embeddings().weight.detach().clone()
    source_out = model.get_output_embeddings().weight.detach().clone()
    transplant(model, mapping, target, source_tokenizer=tokenizer)
    assert model.get_input_embeddings().weight.shape == (size_t, source_in.shape[1])
    assert model.config.vocab_size == size_t
    expected = torch.from_numpy(dense).float() @ source_in
    torch.testing.assert_close(model.get_input_embeddings().weight, expected, atol=1e-5, rtol=1e-4)
    if not tie:
        torch.testing.assert_close(model.get_output_embeddings().weight,
                                   torch.from_numpy(dense).float() @ source_out, atol=1e-5, rtol=1e-4)
    assert is_tied(model) == tie
    for config in (model.config, model.generation_config):
        assert (config.bos_token_id, config.eos_token_id) == (target.bos_token_id, target.eos_token_id)


def test_saved_checkpoint_loads_with_vanilla_transformers(tmp_path, tokenizer):
    target = factories.byte_level_tokenizer([t for _, t in factories.cipher_corpus(300)], vocab_size=280)
    model = factories.tiny_causal_lm("qwen2", len(tokenizer), False, tokenizer)
    size_t = len(target)
    matrix = sp.csr_matrix((np.ones(size_t, np.float32), (np.arange(size_t), np.arange(size_t) % len(tokenizer))),
                           shape=(size_t, len(tokenizer)))
    transplant(model, TokenMapping(matrix, np.zeros(size_t, np.float32), np.zeros(size_t, np.int8),
                                   vocab_hash(tokenizer), vocab_hash(target)), target)
    model.save_pretrained(tmp_path)
    target.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    ids = torch.tensor([loaded_tokenizer.encode("mupex dofisux debox")])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert loaded.config.vocab_size == size_t and vocab_hash(loaded_tokenizer) == vocab_hash(target)


def test_mapping_for_another_tokenizer_is_refused(tokenizer):
    other = factories.byte_level_tokenizer([t for _, t in factories.cipher_corpus(300)], vocab_size=280)
    model = factories.tiny_causal_lm("llama", len(tokenizer), True, tokenizer)
    mapping = permutation_mapping(tokenizer, np.arange(len(tokenizer)))
    with pytest.raises(MismatchError, match="use the tokenizer the mapping was built with"):
        transplant(model, mapping, other)
    with pytest.raises(MismatchError, match="build the mapping with this model's tokenizer"):
        transplant(model, mapping, tokenizer, source_tokenizer=other)


def test_model_without_lm_head_is_refused(tokenizer):
    from transformers import AutoModel

    model = AutoModel.from_config(factories.tiny_causal_lm("llama", len(tokenizer), True).config)
    with pytest.raises(ArchitectureError, match="has no output embeddings"):
        transplant(model, permutation_mapping(tokenizer, np.arange(len(tokenizer))), tokenizer)
