"""One loader (transtok.loading) for models, tokenizers and dtypes: every verb that reads a transfer's
output sees the vocabulary the transfer wrote, whatever model type config.json names."""
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

import factories
from transtok.errors import ConfigError
from transtok.loading import DTYPES, load_model, load_tokenizer, torch_dtype

# Qwen2Tokenizer (what AutoTokenizer builds for a model directory whose config.json says qwen2) adds
# <|endoftext|>; this generic tokenizer has no such token, so a loader that builds it shows one more.
SPECIALS = ["<s>", "</s>"]


def generic_tokenizer(texts: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def tiny_qwen2(tokenizer) -> Qwen2ForCausalLM:
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


def written_vocabulary(directory) -> dict[str, int]:
    """The vocabulary in ``directory``'s tokenizer.json, read by the tokenizers library (no class choice)."""
    return Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab(with_added_tokens=True)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory, one_thread):
    """A tiny Qwen2 model saved with a generic tokenizer, and its transfer to a cipher language."""
    from transtok.pipeline import TransferConfig, transfer

    root = tmp_path_factory.mktemp("qwen2")
    pairs = factories.cipher_corpus(400)
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (root / "target.txt").write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    tokenizer = generic_tokenizer([s for s, _ in pairs])
    tiny_qwen2(tokenizer).save_pretrained(root / "source")
    tokenizer.save_pretrained(root / "source")
    transfer(TransferConfig(source_model=str(root / "source"), parallel=[str(root / "pairs.tsv")],
                            target_corpus=[str(root / "target.txt")], vocab_size=320, aligner="fast_align",
                            unigram_prior=0, output=str(root / "out")))
    return root


def test_the_source_is_read_with_its_saved_vocabulary(qwen2):
    source = qwen2 / "source"
    tokenizer = load_tokenizer(source)
    assert tokenizer.get_vocab() == written_vocabulary(source)
    assert "<|endoftext|>" not in tokenizer.get_vocab()
    model, loaded = load_model(str(source))
    assert len(loaded) == model.get_input_embeddings().weight.shape[0] == 300


def test_transfer_finetune_evaluate_and_hydra_see_the_vocabulary_transfer_wrote(qwen2):
    from transtok.finetune import _load as finetune_load
    from transtok.hydra import Hydra

    out = qwen2 / "out"
    written = written_vocabulary(out)
    rows = Qwen2Config.from_pretrained(out).vocab_size
    assert len(written) == rows == 320
    model, evaluated = load_model(str(out))  # what 'transtok evaluate perplexity' loads
    _, finetuned, _ = finetune_load(str(out))
    hydra = Hydra.from_checkpoints({"xx": str(out)})
    seen = {"evaluate": evaluated, "finetune": finetuned, "hydra": hydra.tokenizer("xx"),
            "load_tokenizer": load_tokenizer(out)}
    for who, tokenizer in seen.items():
        assert (len(tokenizer), tokenizer.get_vocab()) == (len(written), written), who
    assert model.get_input_embeddings().weight.shape[0] == len(written)


def test_plain_autotokenizer_changes_a_generic_qwen2_vocabulary(qwen2):
    """Why load_tokenizer loads a saved generic tokenizer with the generic class: AutoTokenizer builds
    the class registered for the model type. If this starts failing, transformers stopped doing it."""
    from transformers import AutoTokenizer

    assert "<|endoftext|>" in AutoTokenizer.from_pretrained(qwen2 / "out").get_vocab()


def test_dtypes_parse_to_torch_dtypes():
    assert DTYPES == ("auto", "float32", "bfloat16", "float16")
    assert torch_dtype("auto") == "auto"
    assert [torch_dtype(name) for name in DTYPES[1:]] == [torch.float32, torch.bfloat16, torch.float16]
    assert torch_dtype(torch.bfloat16) is torch.bfloat16


@pytest.mark.parametrize("value", ["float33", "int8", "float", "", torch.int8])
def test_a_bad_dtype_names_the_value_the_choices_and_the_fix(value):
    with pytest.raises(ConfigError) as exc:
        torch_dtype(value)
    message = str(exc.value)
    assert repr(str(value).removeprefix("torch.")) in message or str(value) in message
    assert "auto, float32, bfloat16, float16" in message and "`dtype`" in message
