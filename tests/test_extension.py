"""Vocabulary extension: the source tokenizer whole plus new tokens, source rows kept bit for bit,
only the new rows trained."""
from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

import factories
from transtok.align import align
from transtok.cli import main
from transtok.corpus import ParallelCorpus
from transtok.errors import ConfigError
from transtok.extension import extend_tokenizer, extends
from transtok.mapping import (EXTEND_HEAD_SPELLING_WEIGHT, EXTEND_SPELLING_WEIGHT, PROVENANCE, MappingConfig,
                              TokenMapping)
from transtok.pipeline import mapping_from_alignment, run_transplant, save_mapping_dir
from transtok.surgery import is_tied, transplant

N_NEW = 40


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs():
    return factories.cipher_corpus(400)


@pytest.fixture(scope="module", params=["byte-level", "sentencepiece"])
def family(request, pairs):
    """(source tokenizer on English, extended tokenizer, report) for both BPE families."""
    english = [s for s, _ in pairs]
    target = [t for _, t in pairs]
    # vocabularies large enough to hold the English words whole, as a real source does
    if request.param == "byte-level":
        source = factories.byte_level_tokenizer(english, vocab_size=600)
    else:
        source = factories.sentencepiece_tokenizer(english, vocab_size=400)
        # characters the English-only source spells in bytes
        target = [t.replace("a", "ä").replace("o", "ж") if i % 3 == 0 else t for i, t in enumerate(target)]
    extended, report = extend_tokenizer(target, source, N_NEW)
    return source, extended, report, target


def _merge_tree(extended, first_id: int) -> dict[int, tuple[int, int]]:
    """New id -> the pair of ids it was merged from (from the merge list's tail)."""
    spec = json.loads(extended.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    merges = [m.split(" ") if isinstance(m, str) else m for m in spec["model"]["merges"]]
    tree = {}
    for a, b in merges:
        merged = vocab.get(a + b)
        if merged is not None and merged >= first_id:
            tree[merged] = (vocab[a], vocab[b])
    return tree


def _expand(ids, tree, chars):
    """Source ids of an extended encoding: new merges split into their pairs, new characters into the
    byte pieces the source spells them with."""
    out = []
    for i in ids:
        out.extend(_expand(tree[i], tree, chars) if i in tree else chars.get(i, [i]))
    return out


def test_extended_tokenizer_keeps_every_source_token_id_and_setting(family):
    source, extended, report, _ = family
    n = len(source)
    assert extends(source, extended) and not extends(extended, source)
    assert len(extended) == n + report.new_tokens and report.new_tokens == N_NEW
    assert extended.convert_ids_to_tokens(list(range(n))) == source.convert_ids_to_tokens(list(range(n)))
    assert extended.chat_template == source.chat_template
    for role in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(extended, role) == getattr(source, role)
        assert getattr(extended, role + "_id") == getattr(source, role + "_id")
    new = extended.convert_ids_to_tokens(list(range(n, len(extended))))
    assert len(set(new)) == len(new) and not set(new) & set(source.get_vocab())


def test_extended_tokenizer_keeps_the_reserved_specials_of_a_gemma_like_source(pairs):
    """Extension keeps the source whole: Gemma's <unusedN> and named image tokens keep their ids, those
    after the model vocabulary too (tokenizers would renumber them behind the new tokens)."""
    source = factories.gemma_like_tokenizer([s for s, _ in pairs], vocab_size=300, unused=300)
    extended, _ = extend_tokenizer([t for _, t in pairs], source, N_NEW)
    n = len(source)
    assert extends(source, extended) and extended.convert_ids_to_tokens(list(range(n))) == \
        source.convert_ids_to_tokens(list(range(n)))
    assert extended.convert_tokens_to_ids("<unused299>") == source.convert_tokens_to_ids("<unused299>")
    assert (extended.image_token, extended.image_token_id) == (source.image_token, source.image_token_id)
    assert list(extended.extra_special_tokens) == list(source.extra_special_tokens)
    table = source.convert_tokens_to_ids("<table>")
    assert table == n - 1 and extended.encode("<table>", add_special_tokens=False) == [table]


def test_every_new_token_is_produced_on_the_target_text(family):
    source, extended, report, target = family
    assert report.reachable == report.new_tokens and report.unreachable == []
    produced = {i for text in target for i in extended.encode(text, add_special_tokens=False)}
    model = extended.backend_tokenizer.model
    pieces = {i for i in range(len(source), len(extended))  # intermediate tokens, as word pieces
              if [t.id for t in model.tokenize(extended.convert_ids_to_tokens(i))] == [i]}
    assert set(range(len(source), len(extended))) <= produced | pieces
    assert len(produced & set(range(len(source), len(extended)))) >= 0.8 * N_NEW
    # and the extension pays: the target text needs fewer tokens
    assert sum(len(extended.encode(t)) for t in target) < 0.9 * sum(len(source.encode(t)) for t in target)


def test_source_language_text_encodes_as_before_where_no_new_merge_applies(family, pairs):
    source, extended, _, target = family
    tree = _merge_tree(extended, len(source))
    chars = {i: source.convert_tokens_to_ids([f"<0x{b:02X}>" for b in token.encode()])
             for i, token in enumerate(extended.convert_ids_to_tokens(list(range(len(extended)))))
             if i >= len(source) and i not in tree}
    assert all(len(extended.convert_ids_to_tokens(i)) == 1 for i in chars)
    english = factories.english_sentences(200, seed=5)
    unchanged = 0
    for text in english + target[:100]:
        before = source.encode(text, add_special_tokens=False)
        after = extended.encode(text, add_special_tokens=False)
        if all(i < len(source) for i in after):
            assert after == before
            unchanged += 1
        # splitting every new token into the pair it was merged from gives the source's encoding
        assert _expand(after, tree, chars) == before
    assert unchanged >= 150  # English keeps its encoding
    assert extended.decode(extended.encode(target[0], add_special_tokens=False)) == target[0]


def test_byte_fallback_source_gets_the_missing_characters_and_never_merges_bytes(pairs):
    english = [s for s, _ in pairs]
    source = factories.sentencepiece_tokenizer(english, vocab_size=120)
    target = [t.replace("o", "ж") for _, t in pairs]
    assert "ж" not in source.get_vocab()
    extended, report = extend_tokenizer(target, source, N_NEW)
    assert report.new_characters >= 1 and "ж" in extended.get_vocab()
    assert extended.get_vocab()["ж"] >= len(source)
    new = extended.convert_ids_to_tokens(list(range(len(source), len(extended))))
    assert not any("<0x" in token for token in new)
    text = "kaжa boжx"
    assert extended.decode(extended.encode(text, add_special_tokens=False)) == text


def test_a_pair_that_spells_a_source_token_is_skipped_not_duplicated():
    # merges (b, c) before (a, b) leave "abc" as [a, bc], though "abc" is a token (via ab + c)
    vocab = {"<unk>": 0, "a": 1, "b": 2, "c": 3, "d": 4, "bc": 5, "ab": 6, "abc": 7}
    backend = Tokenizer(models.BPE(vocab, [("b", "c"), ("a", "b"), ("ab", "c")], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    source = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    assert source.convert_ids_to_tokens(source.encode("abc")) == ["a", "bc"]
    extended, report = extend_tokenizer(["abc abc abc abcd abcd dd dd dd"] * 3, source, 5)
    assert report.duplicates_skipped >= 1
    tokens = list(extended.get_vocab())
    assert len(tokens) == len(set(tokens)) and tokens.count("abc") == 1
    assert extended.convert_ids_to_tokens(extended.encode("abc")) == ["a", "bc"]  # unchanged
    assert "dd" in extended.get_vocab() and extended.get_vocab()["dd"] >= len(source)


def test_extension_refuses_non_bpe_sources_and_bad_sizes(pairs):
    wordpiece = factories.wordpiece_tokenizer([s for s, _ in pairs], vocab_size=200)
    with pytest.raises(ConfigError, match="BPE"):
        extend_tokenizer(["a b c"], wordpiece, 10)
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=300)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="positive integer"):
            extend_tokenizer(["a b c"], source, bad)


# --- mapping and transplant --------------------------------------------------------------------

@pytest.fixture(scope="module")
def extended_setup(pairs):
    english = [s for s, _ in pairs]
    source = factories.byte_level_tokenizer(english, vocab_size=300)
    extended, _ = extend_tokenizer([t for _, t in pairs], source, N_NEW)
    counts = align(ParallelCorpus.from_pairs(pairs), source, extended, aligner="fast_align")
    return source, extended, counts


@pytest.mark.parametrize("init", ["trans-tokenization", "fvt", "mean", "random",
                                  pytest.param("focus", marks=pytest.mark.slow)])
def test_extension_mapping_keeps_source_rows_and_maps_new_ones(extended_setup, pairs, init):
    if init == "focus":
        pytest.importorskip("deepfocus")
        pytest.importorskip("fasttext")
    source, extended, counts = extended_setup
    mapping, report = mapping_from_alignment(source, extended, counts, MappingConfig(init=init, preserve_norm=True),
                                             target_texts=[t for _, t in pairs])
    n = len(source)
    assert mapping.head is not None  # the extension default: separate LM-head rows
    for rows in (mapping, mapping.head):
        assert rows.keeps_source_rows and rows.shape == (len(extended), n)
        head = rows.matrix[:n].tocoo()
        assert (head.row == head.col).all() and (head.data == 1).all() and head.nnz == n
        assert (rows.residual[:n] == 0).all() and (rows.provenance[:n] == PROVENANCE.index("kept")).all()
    assert report.provenance["kept"] == n and sum(report.provenance.values()) == len(extended)
    if init == "trans-tokenization":
        assert report.provenance["aligned"] > N_NEW // 2
        # the extension defaults: no spelling in the input rows, half in the head rows
        assert (mapping.config["spelling_weight"], mapping.head.config["spelling_weight"]) == \
            (0.0, EXTEND_HEAD_SPELLING_WEIGHT)
        assert (mapping.matrix[n:] != mapping.head.matrix[n:]).nnz > 0
    weight = torch.randn(n, 16, dtype=torch.bfloat16)
    for rows in (mapping, mapping.head):
        mapped = rows.apply(weight)
        assert torch.equal(mapped[:n], weight) and torch.isfinite(mapped.float()).all()
        assert not torch.equal(mapped[n:], torch.zeros_like(mapped[n:]))


def test_spelling_share_defaults_by_recipe_and_an_explicit_value_wins(extended_setup, source_tokenizer,
                                                                      target_tokenizer):
    source, extended, counts = extended_setup
    extend, _ = mapping_from_alignment(source, extended, counts)
    tied, _ = mapping_from_alignment(source, extended, counts, MappingConfig(tied_head=True))
    own, _ = mapping_from_alignment(source, extended, counts, MappingConfig(spelling_weight=0.3,
                                                                            head_spelling_weight=0.8))
    replace, _ = mapping_from_alignment(source_tokenizer, target_tokenizer, None, MappingConfig(init="fvt"))
    assert (extend.config["spelling_weight"], extend.head.config["spelling_weight"]) == \
        (0.0, EXTEND_HEAD_SPELLING_WEIGHT)
    assert (tied.config["spelling_weight"], tied.head) == (EXTEND_SPELLING_WEIGHT, None)
    assert (own.config["spelling_weight"], own.head.config["spelling_weight"]) == (0.3, 0.8)
    assert (replace.config["spelling_weight"], replace.head) == (0.0, None)
    n = len(source)
    assert (extend.matrix[n:] != tied.matrix[n:]).nnz > 0 and (extend.matrix[:n] != tied.matrix[:n]).nnz == 0
    # the head rows are the rows a tied mapping of the same share would give, the input rows likewise
    half, _ = mapping_from_alignment(source, extended, counts,
                                     MappingConfig(tied_head=True, spelling_weight=EXTEND_HEAD_SPELLING_WEIGHT))
    assert (extend.head.matrix != half.matrix).nnz == 0
    assert (own.matrix != mapping_from_alignment(source, extended, counts, MappingConfig(
        tied_head=True, spelling_weight=0.3))[0].matrix).nnz == 0
    with pytest.raises(ConfigError, match="`head_spelling_weight`"):  # a replaced vocabulary has no new head rows
        mapping_from_alignment(source_tokenizer, target_tokenizer, None, MappingConfig(init="fvt",
                                                                                        head_spelling_weight=0.5))


@pytest.mark.parametrize("arch,tie,tied_head", [("llama", True, False), ("llama", True, True), ("llama", False, False),
                                               ("gpt2", True, False), ("gpt2", True, True), ("qwen2", False, True)])
def test_transplant_keeps_old_rows_bit_for_bit(extended_setup, arch, tie, tied_head):
    source, extended, counts = extended_setup
    model = factories.tiny_causal_lm(arch, len(source), tie, source)
    if not tie:
        torch.nn.init.normal_(model.get_output_embeddings().weight)
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    mapping, _ = mapping_from_alignment(source, extended, counts, MappingConfig(tied_head=tied_head))
    transplant(model, mapping, extended, source_tokenizer=source)
    n = len(source)
    inputs, outputs = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert inputs.shape[0] == len(extended) and is_tied(model) == (tie and tied_head)
    assert model.config.tie_word_embeddings == (tie and tied_head)
    assert torch.equal(inputs[:n], before_in) and torch.equal(outputs[:n], before_out)
    # new rows: the input table from the mapping, the head from the head rows (of the source head)
    assert torch.equal(inputs[n:], mapping.apply(before_in)[n:])
    assert torch.equal(outputs[n:], mapping.output.apply(before_out)[n:])
    if not tied_head:
        assert not torch.equal(outputs[n:], inputs[n:] if tie else mapping.apply(before_out)[n:])
    # English logits are untouched on the source ids (the new rows only add columns)
    ids = torch.tensor([source.encode("the king went to the city.")])
    with torch.no_grad():
        logits = model(ids).logits
    reference = factories.tiny_causal_lm(arch, n, tie, source)
    if not tie:
        torch.nn.init.normal_(reference.get_output_embeddings().weight)
    with torch.no_grad():
        expected = reference(ids).logits
    assert torch.equal(logits[..., :n], expected)


def test_streaming_transplant_equals_in_memory(extended_setup, tmp_path):
    from safetensors.torch import load_file

    source, extended, counts = extended_setup
    model = factories.tiny_causal_lm("llama", len(source), False, source)
    torch.nn.init.normal_(model.get_output_embeddings().weight)
    model.save_pretrained(tmp_path / "source")
    source.save_pretrained(tmp_path / "source")
    mapping, report = mapping_from_alignment(source, extended, counts)
    save_mapping_dir(tmp_path / "mapping", mapping, report, source, extended)
    assert TokenMapping.load(tmp_path / "mapping").keeps_source_rows
    run_transplant(str(tmp_path / "source"), str(tmp_path / "mapping"), str(tmp_path / "streamed"))
    run_transplant(str(tmp_path / "source"), str(tmp_path / "mapping"), str(tmp_path / "memory"), in_memory=True)
    streamed = load_file(tmp_path / "streamed" / "model.safetensors")
    memory = load_file(tmp_path / "memory" / "model.safetensors")
    original = load_file(tmp_path / "source" / "model.safetensors")
    assert streamed.keys() == memory.keys()
    for name in streamed:
        assert torch.equal(streamed[name], memory[name]), name
        if streamed[name].shape[0] == len(extended):
            assert torch.equal(streamed[name][:len(source)], original[name]), name
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "streamed")
    assert loaded.config.vocab_size == len(extended)


# --- the command line, training, evaluation and the Hydra ---------------------------------------

@pytest.fixture(scope="module")
def transferred(pairs, tmp_path_factory):
    """A tiny source checkpoint and its ``transfer --mode extend`` output (untied head)."""
    root = tmp_path_factory.mktemp("extend")
    english = [s for s, _ in pairs]
    source = factories.byte_level_tokenizer(english, vocab_size=300)
    model = factories.tiny_causal_lm("llama", len(source), False, source)
    torch.nn.init.normal_(model.get_output_embeddings().weight, std=0.1)
    model.save_pretrained(root / "source")
    source.save_pretrained(root / "source")
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (root / "train.txt").write_text("\n".join(t for _, t in pairs[:350]) + "\n", encoding="utf-8")
    (root / "eval.txt").write_text("\n".join(t for _, t in pairs[350:]) + "\n", encoding="utf-8")
    (root / "english.txt").write_text("\n".join(english[350:]) + "\n", encoding="utf-8")
    code = main(["transfer", "--mode", "extend", "--new-tokens", str(N_NEW), "--model", str(root / "source"),
                 "--parallel", str(root / "pairs.tsv"), "--aligner", "fast_align", "--output", str(root / "ext")])
    assert code == 0
    return root


def test_cli_transfer_extend_writes_a_plain_checkpoint(transferred, capsys):
    root = transferred
    extension = json.loads((root / "ext" / "transtok" / "extension.json").read_text())
    assert extension["reachable"] == extension["new_tokens"] == N_NEW
    model = AutoModelForCausalLM.from_pretrained(root / "ext")
    original = AutoModelForCausalLM.from_pretrained(root / "source")
    n = original.config.vocab_size
    assert model.config.vocab_size == n + N_NEW
    assert torch.equal(model.get_input_embeddings().weight[:n], original.get_input_embeddings().weight)
    assert torch.equal(model.get_output_embeddings().weight[:n], original.get_output_embeddings().weight)
    # evaluate reads it like any checkpoint; English bits per byte is the source model's
    assert main(["evaluate", "perplexity", "--model", str(root / "ext"), "--text", str(root / "english.txt"),
                 "--json", "--seq-len", "64"]) == 0
    extended_bpb = json.loads(capsys.readouterr().out)["bits_per_byte"]
    assert main(["evaluate", "perplexity", "--model", str(root / "source"), "--text", str(root / "english.txt"),
                 "--json", "--seq-len", "64"]) == 0
    source_bpb = json.loads(capsys.readouterr().out)["bits_per_byte"]
    assert extended_bpb == pytest.approx(source_bpb, rel=0.05)


def test_cli_train_tokenizer_extend(transferred, tmp_path, capsys):
    root = transferred
    assert main(["train-tokenizer", "--extend", "12", "--text", str(root / "train.txt"), "--model",
                 str(root / "source"), "--output", str(tmp_path / "tok"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vocab_size"] == report["source_vocab_size"] + 12
    assert report["extension"]["reachable"] == 12 and report["fertility"] < report["source_fertility"]
    with pytest.raises(SystemExit) as exit_info:  # one recipe at a time
        main(["train-tokenizer", "--extend", "12", "--vocab-size", "400", "--text", str(root / "train.txt"),
              "--model", str(root / "source"), "--output", str(tmp_path / "tok2")])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_new_rows_stage_leaves_old_rows_bit_identical(transferred, weight_decay, tmp_path):
    from transtok.finetune import FinetuneConfig, finetune

    root = transferred
    before = AutoModelForCausalLM.from_pretrained(root / "ext")
    n = before.config.vocab_size - N_NEW
    result = finetune(FinetuneConfig(
        model=str(root / "ext"), train=[str(root / "train.txt")], eval=[str(root / "eval.txt")],
        output=str(tmp_path / "ft"), stage="new-rows", max_tokens=32 * 4 * 6, seq_len=32, batch_size=4, lr=1e-2,
        warmup=1, weight_decay=weight_decay, precision="fp32", save_every=0))
    assert result.stages[0]["new_rows_from"] == n
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "ft")
    for get in ("get_input_embeddings", "get_output_embeddings"):
        old, new = getattr(before, get)().weight, getattr(after, get)().weight
        assert torch.equal(new[:n], old[:n]), get
        assert not torch.equal(new[n:], old[n:]), get
    body_before = {k: v for k, v in before.state_dict().items() if "embed" not in k and "lm_head" not in k}
    body_after = after.state_dict()
    assert all(torch.equal(v, body_after[k]) for k, v in body_before.items())


def test_new_rows_stage_tied_model_and_missing_extension_info(transferred, tmp_path):
    from transtok.finetune import FinetuneConfig, finetune

    root = transferred
    tied = AutoModelForCausalLM.from_pretrained(root / "ext")
    tied.config.tie_word_embeddings = True
    tied = AutoModelForCausalLM.from_config(tied.config)
    tied.load_state_dict(AutoModelForCausalLM.from_pretrained(root / "ext").state_dict(), strict=False)
    tied.tie_weights()
    assert is_tied(tied)
    tied.save_pretrained(tmp_path / "tied")
    PreTrainedTokenizerFast.from_pretrained(root / "ext").save_pretrained(tmp_path / "tied")
    n = tied.config.vocab_size - N_NEW
    base = dict(model=str(tmp_path / "tied"), train=[str(root / "train.txt")], stage="new-rows",
                max_tokens=32 * 4 * 4, seq_len=32, batch_size=4, lr=1e-2, warmup=1, weight_decay=0.1,
                precision="fp32", save_every=0)
    with pytest.raises(ConfigError, match="`new_rows_from`"):
        finetune(FinetuneConfig(output=str(tmp_path / "no"), **base))
    finetune(FinetuneConfig(output=str(tmp_path / "ft"), new_rows_from=n, **base))
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "ft")
    assert is_tied(after)
    assert torch.equal(after.get_input_embeddings().weight[:n], tied.get_input_embeddings().weight[:n])
    assert not torch.equal(after.get_input_embeddings().weight[n:], tied.get_input_embeddings().weight[n:])


def test_hydra_combines_the_source_and_the_extended_model(transferred, tmp_path):
    from transtok.hydra import Hydra

    root = transferred
    hydra = Hydra.from_checkpoints({"en": root / "source", "xx": root / "ext"}, output="xx")
    assert set(hydra.names) == {"en", "xx"}
    hydra.save_pretrained(tmp_path / "hydra")
    assert (tmp_path / "hydra" / "hydra.json").is_file()


@pytest.mark.parametrize("tie", [True, False])
def test_padded_table_keeps_source_rows_and_pads_the_extended_table(extended_setup, tie, tmp_path):
    """Padded source tables (Qwen2-style): new ids follow the tokenizer, over the old padding rows, and the
    extended table is padded to the same multiple; streaming == in memory."""
    from safetensors.torch import load_file

    if not hasattr(factories, "padded_causal_lm"):
        pytest.skip("padded embedding tables are not on this branch yet")
    from transtok.surgery import padded_vocab_size

    source, extended, counts = extended_setup
    model = factories.padded_causal_lm("qwen2", source, tie)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows > len(source)
    before_in = model.get_input_embeddings().weight.detach()[:len(source)].clone()
    before_out = model.get_output_embeddings().weight.detach()[:len(source)].clone()
    model.save_pretrained(tmp_path / "source")
    source.save_pretrained(tmp_path / "source")
    mapping, report = mapping_from_alignment(source, extended, counts)
    save_mapping_dir(tmp_path / "mapping", mapping, report, source, extended)
    run_transplant(str(tmp_path / "source"), str(tmp_path / "mapping"), str(tmp_path / "streamed"))
    run_transplant(str(tmp_path / "source"), str(tmp_path / "mapping"), str(tmp_path / "memory"), in_memory=True)
    streamed = load_file(tmp_path / "streamed" / "model.safetensors")
    memory = load_file(tmp_path / "memory" / "model.safetensors")
    assert all(torch.equal(streamed[k], memory[k]) for k in streamed)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "streamed")
    new_rows = padded_vocab_size(rows, len(source), len(extended))
    assert loaded.get_input_embeddings().weight.shape[0] == new_rows >= len(extended)
    assert torch.equal(loaded.get_input_embeddings().weight[:len(source)], before_in)
    assert torch.equal(loaded.get_output_embeddings().weight[:len(source)], before_out)


def test_cli_map_and_transplant_take_an_extended_tokenizer(transferred, tmp_path):
    root = transferred
    source = PreTrainedTokenizerFast.from_pretrained(root / "source")
    extended_dir = root / "ext"  # its tokenizer extends the source
    assert main(["map", "--model", str(root / "source"), "--target-tokenizer", str(extended_dir), "--init",
                 "fvt", "--output", str(tmp_path / "mapping")]) == 0
    mapping = TokenMapping.load(tmp_path / "mapping")
    assert mapping.keeps_source_rows and mapping.shape[1] == len(source)
    assert main(["transplant", "--model", str(root / "source"), "--mapping", str(tmp_path / "mapping"),
                 "--output", str(tmp_path / "model")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    original = AutoModelForCausalLM.from_pretrained(root / "source")
    assert torch.equal(model.get_input_embeddings().weight[:len(source)], original.get_input_embeddings().weight)


# --- separate LM-head rows: saving, the tied source, the command line ------------------------------

def test_mapping_with_head_rows_saves_loads_and_combines(extended_setup, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from transtok.errors import CorruptFileError

    source, extended, counts = extended_setup
    mapping, report = mapping_from_alignment(source, extended, counts)
    mapping.save(tmp_path / "m")
    loaded = TokenMapping.load(tmp_path / "m")
    assert loaded.head is not None and loaded.head.keeps_source_rows
    assert (loaded.head.matrix != mapping.head.matrix).nnz == 0 and (loaded.matrix != mapping.matrix).nnz == 0
    assert (loaded.head.provenance == loaded.provenance).all()
    # a mapping directory without head rows (as every one written before them) loads with head None
    tied, _ = mapping_from_alignment(source, extended, counts, MappingConfig(tied_head=True))
    tied.save(tmp_path / "tied")
    assert TokenMapping.load(tmp_path / "tied").head is None
    assert not any(k.startswith("head.") for k in load_file(str(tmp_path / "tied" / "mapping.safetensors")))
    # mapping.json announces head rows that the tensors file lacks: a one-line corrupt-file error
    shutil.copytree(tmp_path / "m", tmp_path / "broken")
    arrays = {k: v for k, v in load_file(str(tmp_path / "m" / "mapping.safetensors")).items() if k != "head.data"}
    save_file(arrays, str(tmp_path / "broken" / "mapping.safetensors"))
    with pytest.raises(CorruptFileError, match="head rows"):
        TokenMapping.load(tmp_path / "broken")
    # combined mappings combine their head rows (a mapping without head rows contributes its input rows)
    both = TokenMapping.combine([mapping, tied], [0.5, 0.5])
    n = len(source)
    expected = (0.5 * mapping.head.matrix + 0.5 * tied.matrix)[n:]
    assert both.head is not None and abs(both.head.matrix[n:] - expected).max() < 1e-6
    assert abs(both.head.matrix[:n] - mapping.head.matrix[:n]).max() == 0


@pytest.fixture(scope="module")
def transferred_tied(pairs, tmp_path_factory):
    """A tiny TIED source checkpoint and its default ``transfer --mode extend`` output (untied head,
    language offset) and its ``--tied-head`` output."""
    root = tmp_path_factory.mktemp("extend-tied")
    english = [s for s, _ in pairs]
    source = factories.byte_level_tokenizer(english, vocab_size=300)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(root / "source")
    source.save_pretrained(root / "source")
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (root / "english.txt").write_text("\n".join(english[350:]) + "\n", encoding="utf-8")
    base = ["transfer", "--mode", "extend", "--new-tokens", str(N_NEW), "--model", str(root / "source"),
            "--parallel", str(root / "pairs.tsv"), "--aligner", "fast_align"]
    assert main([*base, "--offset-pairs", "100", "--output", str(root / "ext")]) == 0
    assert main([*base, "--tied-head", "--output", str(root / "tied")]) == 0
    return root


def test_cli_transfer_extend_unties_a_tied_head_and_applies_the_offset(transferred_tied, capsys):
    from safetensors.torch import load_file

    root = transferred_tied
    original = AutoModelForCausalLM.from_pretrained(root / "source")
    n = original.config.vocab_size
    model = AutoModelForCausalLM.from_pretrained(root / "ext")
    assert not is_tied(model) and model.config.tie_word_embeddings is False
    assert "lm_head.weight" in load_file(root / "ext" / "model.safetensors")
    table = original.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight[:n], table)
    assert torch.equal(model.get_output_embeddings().weight[:n], table)
    mapping = TokenMapping.load(root / "ext" / "transtok" / "mapping")
    assert mapping.head is not None and mapping.keeps_source_rows
    offset = json.loads((root / "ext" / "transtok" / "offset.json").read_text())
    assert offset["delta"] == 1.0 and offset["pairs"] == 100
    assert offset["source_shift_mean"] == pytest.approx(-1.0) and offset["target_shift_mean"] == pytest.approx(0.0)
    config = json.loads((root / "ext" / "transtok" / "config.json").read_text())
    assert config["new_token_offset"] == 1.0 and config["mapping"]["head_spelling_weight"] == 0.5
    # the new head rows: head mapping of the tied table, plus one vector
    shift = model.get_output_embeddings().weight[n:] - mapping.head.apply(table)[n:]
    assert torch.allclose(shift, shift[:1].expand_as(shift), atol=1e-5) and shift.abs().sum() > 0
    assert "language offset" in (root / "ext" / "README.md").read_text()


def test_cli_transfer_tied_head_keeps_the_head_tied(transferred_tied):
    root = transferred_tied
    model = AutoModelForCausalLM.from_pretrained(root / "tied")
    assert is_tied(model) and model.config.tie_word_embeddings is True
    assert not (root / "tied" / "transtok" / "offset.json").exists()
    mapping = TokenMapping.load(root / "tied" / "transtok" / "mapping")
    assert mapping.head is None and mapping.config["spelling_weight"] == EXTEND_SPELLING_WEIGHT


def test_untied_extended_checkpoint_evaluates_and_builds_a_hydra(transferred_tied, tmp_path, capsys):
    from transtok.hydra import Hydra

    root = transferred_tied
    scores = {}
    for name in ("source", "ext", "tied"):
        assert main(["evaluate", "perplexity", "--model", str(root / name), "--text", str(root / "english.txt"),
                     "--json", "--seq-len", "64"]) == 0
        scores[name] = json.loads(capsys.readouterr().out)["bits_per_byte"]
    assert scores["ext"] == pytest.approx(scores["source"], rel=0.05)
    assert main(["hydra", "build", "--vocab", f"en={root / 'source'}", "--vocab", f"xx={root / 'ext'}",
                 "--output", str(tmp_path / "hydra")]) == 0
    assert "untied head" in capsys.readouterr().out
    hydra = Hydra.from_pretrained(tmp_path / "hydra")
    assert set(hydra.names) == {"en", "xx"} and not hydra.tied


@pytest.mark.parametrize("argv,message", [
    (["--mode", "extend", "--vocab-size", "500"], "--new-tokens"),
    (["--mode", "extend", "--new-tokens", "5", "--vocab-size", "500"], "--vocab-size is for --mode replace"),
    (["--new-tokens", "5", "--text", "x.txt", "--vocab-size", "9"], "--new-tokens is for --mode extend"),
    (["--mode", "extend", "--new-tokens", "5", "--head-spelling-weight", "1.5"], "--head-spelling-weight must be"),
    (["--mode", "extend", "--new-tokens", "5", "--tied-head", "--head-spelling-weight", "0.5"], "--tied-head"),
    (["--mode", "extend", "--new-tokens", "5", "--tied-head", "--new-token-offset", "1"], "--tied-head"),
    (["--mode", "extend", "--new-tokens", "5", "--new-token-offset", "-1"], "--new-token-offset must be"),
    (["--mode", "extend", "--new-tokens", "5", "--new-token-offset", "nan"], "--new-token-offset must be"),
    (["--mode", "extend", "--new-tokens", "5", "--offset-pairs", "0"], "--offset-pairs must be"),
    (["--text", "x.txt", "--vocab-size", "9", "--tied-head"], "--tied-head is for --mode extend"),
    (["--text", "x.txt", "--vocab-size", "9", "--head-spelling-weight", "0.5"], "is for --mode extend"),
    (["--text", "x.txt", "--vocab-size", "9", "--new-token-offset", "1"], "is for --mode extend"),
    (["--mode", "extend", "--new-tokens", "5", "--keep-reserved-tokens"], "--keep-reserved-tokens applies to"),
])
def test_cli_transfer_mode_errors_are_one_line(transferred, argv, message, capsys):
    root = transferred
    code = main(["transfer", "--model", str(root / "source"), "--parallel", str(root / "pairs.tsv"),
                 "--output", str(root / "never"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (root / "never").exists()


def test_cli_map_and_transplant_head_rows_and_offset(transferred, tmp_path, capsys):
    root = transferred
    source_dir = str(root / "source")
    tokenizer = str(root / "ext")
    assert main(["map", "--model", source_dir, "--target-tokenizer", tokenizer, "--init", "fvt",
                 "--head-spelling-weight", "0.7", "--output", str(tmp_path / "mapping")]) == 0
    mapping = TokenMapping.load(tmp_path / "mapping")
    assert mapping.head is not None and mapping.head.config["spelling_weight"] == 0.7
    assert main(["map", "--model", source_dir, "--target-tokenizer", tokenizer, "--init", "fvt",
                 "--tied-head", "--output", str(tmp_path / "tied-mapping")]) == 0
    assert TokenMapping.load(tmp_path / "tied-mapping").head is None
    capsys.readouterr()
    # an offset needs texts, and head rows
    for mapping_dir, extra, message in (
            ("mapping", [], "--parallel"),
            ("tied-mapping", ["--parallel", str(root / "pairs.tsv")], "separate head rows"),
            ("mapping", ["--parallel", str(root / "pairs.tsv"), "--offset-pairs", "-2"],
             "--offset-pairs must be an integer >= 1")):
        code = main(["transplant", "--model", source_dir, "--mapping", str(tmp_path / mapping_dir),
                     "--new-token-offset", "1", *extra, "--output", str(tmp_path / "never")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, err
        assert not (tmp_path / "never").exists()
    # a replaced vocabulary has no head rows to give a share to
    assert main(["map", "--model", source_dir, "--target-tokenizer", source_dir, "--init", "fvt",
                 "--head-spelling-weight", "0.5", "--output", str(tmp_path / "never")]) == 2
    assert "--head-spelling-weight" in capsys.readouterr().err
    # --parallel alone applies the default offset; without it there is none
    assert main(["transplant", "--model", source_dir, "--mapping", str(tmp_path / "mapping"),
                 "--parallel", str(root / "pairs.tsv"), "--output", str(tmp_path / "with")]) == 0
    assert json.loads((tmp_path / "with" / "transtok" / "offset.json").read_text())["delta"] == 1.0
    assert main(["transplant", "--model", source_dir, "--mapping", str(tmp_path / "mapping"),
                 "--output", str(tmp_path / "without")]) == 0
    assert not (tmp_path / "without" / "transtok" / "offset.json").exists()
    n = len(PreTrainedTokenizerFast.from_pretrained(source_dir))
    with_head = AutoModelForCausalLM.from_pretrained(tmp_path / "with").get_output_embeddings().weight
    without_head = AutoModelForCausalLM.from_pretrained(tmp_path / "without").get_output_embeddings().weight
    assert torch.equal(with_head[:n], without_head[:n]) and not torch.equal(with_head[n:], without_head[n:])


def test_replace_mode_has_no_head_rows_and_keeps_a_tied_head(source_tokenizer, target_tokenizer, cipher_pairs):
    counts = align(ParallelCorpus.from_pairs(cipher_pairs[:300]), source_tokenizer, target_tokenizer,
                   aligner="fast_align")
    default, _ = mapping_from_alignment(source_tokenizer, target_tokenizer, counts)
    tied, _ = mapping_from_alignment(source_tokenizer, target_tokenizer, counts, MappingConfig(tied_head=True))
    assert default.head is None and tied.head is None and (default.matrix != tied.matrix).nnz == 0
    assert default.config["spelling_weight"] == 0.0
    model = factories.tiny_causal_lm("llama", len(source_tokenizer), True, source_tokenizer)
    transplant(model, default, target_tokenizer, source_tokenizer=source_tokenizer)
    assert is_tied(model) and model.config.tie_word_embeddings is True
