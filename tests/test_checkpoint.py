"""Streaming transplant of safetensors checkpoints: same tensors as the in-memory path, bounded work."""
import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import factories
from transtok.checkpoint import UnsupportedCheckpoint, inspect_checkpoint, map_rows, transplant_checkpoint
from transtok.cli import main
from transtok.errors import ArchitectureError, MismatchError
from transtok.loading import INDEX_FILE
from transtok.mapping import TokenMapping
from transtok.surgery import transplant
from transtok.vocabulary import vocab_hash


@pytest.fixture(scope="module")
def tokenizers():
    pairs = factories.cipher_corpus(300)
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=300)
    target = factories.sentencepiece_tokenizer([t for _, t in pairs], vocab_size=200)
    return source, target


def random_mapping(source, target, *, fallback="mean", preserve_norm=False, seed=0):
    """Sparse row-stochastic mapping with some fallback (residual) rows, as build_mapping makes."""
    size_t, size_s = len(target), len(source)
    rng = np.random.RandomState(seed)
    dense = rng.rand(size_t, size_s) * (rng.rand(size_t, size_s) < 0.02)
    dense[:, 1] += 1e-3
    dense /= dense.sum(1, keepdims=True)
    residual = np.where(rng.rand(size_t) < 0.2, 1.0, 0.0).astype(np.float32)
    dense[residual == 1] = 0
    return TokenMapping(sp.csr_matrix(dense.astype(np.float32)), residual, np.zeros(size_t, np.int8),
                        vocab_hash(source), vocab_hash(target), fallback=fallback, preserve_norm=preserve_norm)


def save_source(directory, arch, tie, tokenizer, *, sharded, dtype=torch.float32):
    model = factories.tiny_causal_lm(arch, len(tokenizer), tie, tokenizer)
    if not tie:  # a head unlike the input table, so that mixing them up shows
        torch.nn.init.normal_(model.get_output_embeddings().weight)
    model.to(dtype).save_pretrained(directory, max_shard_size="20KB" if sharded else "5GB")
    tokenizer.save_pretrained(directory)
    return directory


def tensors(directory):
    """Every tensor of a saved checkpoint, by name."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            with safe_open(directory / name, framework="pt") as handle:
                out.update({key: handle.get_tensor(key) for key in handle.keys()})
    return out


def in_memory(source_dir, mapping, target, output, dtype="auto"):
    model = AutoModelForCausalLM.from_pretrained(source_dir, dtype=dtype)
    transplant(model, mapping, target)
    model.save_pretrained(output)
    target.save_pretrained(output)
    return model.eval()


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("arch,tie", factories.ARCHS)
def test_streaming_writes_the_tensors_of_the_in_memory_path(tmp_path, tokenizers, arch, tie, sharded):
    source, target = tokenizers
    source_dir = save_source(tmp_path / "src", arch, tie, source, sharded=sharded)
    assert (source_dir / INDEX_FILE).is_file() == sharded
    mapping = random_mapping(source, target)
    reference = in_memory(source_dir, mapping, target, tmp_path / "memory")

    layout = inspect_checkpoint(source_dir)
    assert layout.tied == tie and (layout.head_name is None) == tie
    (tmp_path / "stream").mkdir()
    transplant_checkpoint(layout, mapping, target, tmp_path / "stream", source_tokenizer=source)

    expected, got = tensors(tmp_path / "memory"), tensors(tmp_path / "stream")
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype, name
        assert torch.equal(got[name], expected[name]), name
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "stream").eval()
    # (AutoTokenizer may pick an architecture-specific class, e.g. Qwen2Tokenizer, that rebuilds the
    # vocabulary; the files written must still be the target tokenizer's, as on the in-memory path.)
    assert (tmp_path / "stream/tokenizer.json").read_bytes() == (tmp_path / "memory/tokenizer.json").read_bytes()
    assert loaded.config.vocab_size == len(target)
    ids = torch.tensor([target.encode("mupex dofisux debox zalox")])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, reference(ids).logits)
    assert (loaded.get_output_embeddings().weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()) == tie
    for config in (loaded.config, loaded.generation_config):
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
            target.bos_token_id, target.eos_token_id, target.pad_token_id)


def test_sharded_output_keeps_untouched_shards_and_a_consistent_index(tmp_path, tokenizers):
    source, target = tokenizers
    source_dir = save_source(tmp_path / "src", "llama", False, source, sharded=True)
    layout = inspect_checkpoint(source_dir)
    edited = {layout.shard_of(layout.input_name), layout.shard_of(layout.head_name)}
    shards = sorted(set(layout.shards.values()))
    assert len(shards) > len(edited)  # the test needs shards that stay as they are
    for hardlink in (False, True):
        out = tmp_path / f"out-{hardlink}"
        out.mkdir()
        stats = transplant_checkpoint(layout, random_mapping(source, target), target, out, hardlink=hardlink)
        for shard in shards:
            same_file = os.stat(out / shard).st_ino == os.stat(source_dir / shard).st_ino
            assert same_file == (hardlink and shard not in edited), shard
            if shard not in edited:
                assert (out / shard).read_bytes() == (source_dir / shard).read_bytes()
        assert (stats["bytes_linked"] > 0) == hardlink and (stats["bytes_copied"] > 0) != hardlink
        index = json.loads((out / INDEX_FILE).read_text())
        assert index["weight_map"] == json.loads((source_dir / INDEX_FILE).read_text())["weight_map"]
        data = 0
        for shard in shards:
            with safe_open(out / shard, framework="pt") as handle:
                data += sum(handle.get_tensor(k).numel() * handle.get_tensor(k).element_size() for k in handle.keys())
        assert index["metadata"]["total_size"] == data


def test_bf16_checkpoint_stays_bf16_and_matches_in_memory(tmp_path, tokenizers):
    source, target = tokenizers
    source_dir = save_source(tmp_path / "src", "qwen2", False, source, sharded=True, dtype=torch.bfloat16)
    mapping = random_mapping(source, target)
    in_memory(source_dir, mapping, target, tmp_path / "memory")
    (tmp_path / "stream").mkdir()
    transplant_checkpoint(inspect_checkpoint(source_dir), mapping, target, tmp_path / "stream")
    expected, got = tensors(tmp_path / "memory"), tensors(tmp_path / "stream")
    assert {t.dtype for t in got.values()} == {torch.bfloat16}
    assert all(torch.equal(got[n], expected[n]) for n in expected)


@pytest.mark.parametrize("fallback,preserve_norm", [("mean", False), ("random", False), ("mean", True)])
def test_map_rows_in_column_blocks_equals_apply_bit_for_bit(tokenizers, fallback, preserve_norm):
    source, target = tokenizers
    mapping = random_mapping(source, target, fallback=fallback, preserve_norm=preserve_norm)
    for dtype in (torch.float32, torch.bfloat16):
        weight = torch.randn(len(source), 40, generator=torch.Generator().manual_seed(1)).to(dtype)
        blocked = map_rows(mapping, weight, block_columns=7)
        assert blocked.dtype == dtype and torch.equal(blocked, mapping.apply(weight))


def test_tied_checkpoint_with_a_stored_head_drops_it(tmp_path, tokenizers):
    from safetensors.torch import load_file, save_file

    source, target = tokenizers
    source_dir = save_source(tmp_path / "src", "llama", True, source, sharded=False)
    state = load_file(source_dir / "model.safetensors")
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    save_file(state, source_dir / "model.safetensors", metadata={"format": "pt"})
    mapping = random_mapping(source, target)
    layout = inspect_checkpoint(source_dir)
    assert layout.stale == ("lm_head.weight",) and layout.tied
    (tmp_path / "out").mkdir()
    transplant_checkpoint(layout, mapping, target, tmp_path / "out")
    got = tensors(tmp_path / "out")
    assert "lm_head.weight" not in got
    assert torch.equal(got["model.embed_tokens.weight"], mapping.apply(state["model.embed_tokens.weight"]))


def test_untied_config_without_head_tensor_is_refused(tmp_path, tokenizers):
    source, _ = tokenizers
    source_dir = save_source(tmp_path / "src", "llama", True, source, sharded=False)
    config = json.loads((source_dir / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (source_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArchitectureError, match="says the LM head is untied .* has no lm_head.weight tensor; set "
                                                "tie_word_embeddings to true"):
        inspect_checkpoint(source_dir)


def test_mapping_for_other_rows_is_refused(tmp_path, tokenizers):
    source, target = tokenizers
    source_dir = save_source(tmp_path / "src", "gpt2", False, source, sharded=False)
    mapping = random_mapping(target, target)  # built for a 456-token source
    (tmp_path / "out").mkdir()
    with pytest.raises(MismatchError, match=r"the mapping expects \d+ source rows, transformer.wte.weight .* has "
                                            r"\d+; build the mapping with this model's tokenizer"):
        transplant_checkpoint(inspect_checkpoint(source_dir), mapping, target, tmp_path / "out")
    with pytest.raises(MismatchError, match="use the tokenizer the mapping was built with"):
        transplant_checkpoint(inspect_checkpoint(source_dir), random_mapping(source, target), source, tmp_path / "out")


def test_formats_it_cannot_edit_are_named(tmp_path, tokenizers):
    source, _ = tokenizers
    with pytest.raises(UnsupportedCheckpoint, match=r"'org/not-here' is not a local directory .* \(hf download "
                                                    r"org/not-here --local-dir DIR\) and give DIR"):
        inspect_checkpoint("org/not-here")
    bin_dir = tmp_path / "bin"
    model = factories.tiny_causal_lm("llama", len(source), False, source)
    model.config.save_pretrained(bin_dir)
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
    with pytest.raises(UnsupportedCheckpoint, match="has neither model.safetensors nor model.safetensors.index.json"):
        inspect_checkpoint(bin_dir)
    quantized = save_source(tmp_path / "q", "llama", True, source, sharded=False)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedCheckpoint, match="holds bitsandbytes weights, which this path cannot edit"):
        inspect_checkpoint(quantized)
    with pytest.raises(UnsupportedCheckpoint, match=r"`dtype` bfloat16 differs from the stored dtypes \['F32'\]"):
        inspect_checkpoint(save_source(tmp_path / "f", "llama", True, source, sharded=False), dtype="bfloat16")


def test_cli_streams_by_default_and_falls_back_to_memory(tmp_path, tokenizers, caplog):
    source, target = tokenizers
    source_dir = save_source(tmp_path / "src", "gpt_neox", False, source, sharded=True)
    mapping_dir = tmp_path / "mapping"
    random_mapping(source, target).save(mapping_dir)
    target.save_pretrained(mapping_dir / "target_tokenizer")
    bin_dir = tmp_path / "bin-source"
    model = AutoModelForCausalLM.from_pretrained(source_dir)
    model.config.save_pretrained(bin_dir)
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
    source.save_pretrained(bin_dir)
    runs = {"stream": [source_dir], "memory": [source_dir, "--in-memory"], "bin": [bin_dir]}
    for name, extra in runs.items():
        args = ["transplant", "--model", *extra, "--mapping", mapping_dir, "--output", tmp_path / name]
        assert main([str(a) for a in args]) == 0
    paths = {name: json.loads((tmp_path / name / "transtok/config.json").read_text())["path"] for name in runs}
    assert paths == {"stream": "streaming", "memory": "in-memory", "bin": "in-memory"}
    assert "loading the whole model instead of editing the checkpoint" in caplog.text
    expected, got = tensors(tmp_path / "memory"), tensors(tmp_path / "stream")
    assert sorted(got) == sorted(expected) and all(torch.equal(got[n], expected[n]) for n in expected)
    # The .bin source keeps its own key names on save; compare the loaded parameters instead.
    expected = AutoModelForCausalLM.from_pretrained(tmp_path / "memory").state_dict()
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "bin").state_dict()
    assert sorted(got) == sorted(expected) and all(torch.equal(got[n], expected[n]) for n in expected)
