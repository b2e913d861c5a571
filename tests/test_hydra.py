"""Hydra invariants on tiny llama / qwen2 / gpt2 / gpt_neox models, tied and untied.

Two vocabularies share one body: ``a`` (byte-level BPE, the "source" model) and ``b`` (a
SentencePiece-style tokenizer on the cipher language, random rows), built by resizing a copy.
"""
import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

import factories
from transtok.errors import ArchitectureError, ConfigError, MismatchError
from transtok.hydra import HYDRA_FILE, Hydra, Vocabulary

ENGLISH = "the king went to the city of gold"
CIPHER = factories.cipher_sentence("the king went to the city of gold.")


@pytest.fixture(scope="module")
def tokenizers():
    pairs = factories.cipher_corpus(300)
    return (factories.byte_level_tokenizer([s for s, _ in pairs], 300),
            factories.sentencepiece_tokenizer([t for _, t in pairs], 200))


def two_models(arch, tie, tokenizers):
    """Model ``a`` and a copy ``b`` with another tokenizer's (random) rows; identical bodies."""
    ta, tb = tokenizers
    a = factories.tiny_causal_lm(arch, len(ta), tie, ta)
    if not tie:  # make the head differ from the input table, so mixing them up shows
        torch.nn.init.normal_(a.get_output_embeddings().weight, std=0.5)
    b = copy.deepcopy(a)
    b.resize_token_embeddings(len(tb), mean_resizing=False)
    torch.manual_seed(1)
    torch.nn.init.normal_(b.get_input_embeddings().weight)
    if not tie:
        torch.nn.init.normal_(b.get_output_embeddings().weight, std=0.5)
    b.config.vocab_size = len(tb)
    for cfg in (b.config, b.generation_config):
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = tb.bos_token_id, tb.eos_token_id, tb.pad_token_id
    return a, b


def save_checkpoint(directory, model, tokenizer):
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_from_checkpoints(arch, tie, tokenizers, tmp_path_factory):
    a, b = two_models(arch, tie, tokenizers)
    root = tmp_path_factory.mktemp(f"{arch}-{tie}")
    paths = {"a": save_checkpoint(root / "a", a, tokenizers[0]), "b": save_checkpoint(root / "b", b, tokenizers[1])}
    hydra = Hydra.from_checkpoints(paths, output="b")
    return hydra, a, b, root


def _id(param):
    return f"{param[0]}-{'tied' if param[1] else 'untied'}"


@pytest.fixture(scope="module", params=factories.ARCHS, ids=_id)
def built(request, tokenizers, tmp_path_factory):
    """A Hydra from two saved checkpoints, plus the plain models: every architecture, tied and untied."""
    return build_from_checkpoints(*request.param, tokenizers, tmp_path_factory)


@pytest.fixture(scope="module", params=[("llama", True), ("gpt2", False)], ids=_id)
def small(request, tokenizers, tmp_path_factory):
    """The same for logic that does not depend on the architecture (keeps the file fast)."""
    return build_from_checkpoints(*request.param, tokenizers, tmp_path_factory)


def test_layout_offsets_and_tying(built, tokenizers):
    hydra, a, b, _ = built
    assert hydra.names == ("a", "b")
    assert (hydra.span("a").offset, hydra.span("b").offset) == (0, len(tokenizers[0]))
    assert hydra.model.get_input_embeddings().weight.shape[0] == len(tokenizers[0]) + len(tokenizers[1])
    assert hydra.tied == (a.get_output_embeddings().weight.data_ptr() == a.get_input_embeddings().weight.data_ptr())


def test_switching_a_b_a_restores_identical_logits(built):
    hydra, *_ = built
    ids = torch.tensor([hydra.encode(ENGLISH, "a") + hydra.encode(CIPHER, "b")])
    hydra.set_output("a")
    first = hydra.logits(ids).clone()
    hydra.set_output("b")
    other = hydra.logits(ids)
    assert other.shape[-1] == hydra.span("b").size != first.shape[-1]
    hydra.set_output("a")
    assert torch.equal(hydra.logits(ids), first)


def test_hydra_view_matches_the_original_single_vocabulary_models(built):
    hydra, a, b, _ = built
    for name, model, text in (("a", a, ENGLISH), ("b", b, CIPHER)):
        hydra.set_output(name)
        ids = torch.tensor([hydra.encode(text, name)])
        expected = model(ids - hydra.span(name).offset).logits
        torch.testing.assert_close(hydra.logits(ids), expected, atol=1e-5, rtol=1e-5)
    hydra.set_output("b")


@pytest.mark.parametrize("name", ["a", "b"])
def test_export_loads_in_vanilla_transformers_with_the_hydra_view_logits(built, name, tmp_path):
    hydra, *_ = built
    before = hydra.model.get_input_embeddings().weight.clone()
    hydra.export(name, tmp_path / name)
    assert torch.equal(hydra.model.get_input_embeddings().weight, before), "export must leave the Hydra intact"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / name).eval()
    # generic tokenizers load with the generic class: AutoTokenizer would pick e.g. Qwen2Tokenizer from
    # config.json, which adds a token (a transformers behaviour, not an export defect)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / name)
    text = ENGLISH if name == "a" else CIPHER
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    hydra.set_output(name)
    try:
        torch.testing.assert_close(model(ids).logits, hydra.logits(ids + hydra.span(name).offset),
                                   atol=1e-5, rtol=1e-5)
    finally:
        hydra.set_output("b")
    assert model.config.vocab_size == len(tokenizer) == hydra.span(name).size
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert (model.get_output_embeddings().weight.data_ptr() ==
            model.get_input_embeddings().weight.data_ptr()) == hydra.tied


def test_generation_in_b_never_emits_an_id_outside_b(built):
    hydra, *_ = built
    span = hydra.span("b")
    prompt = hydra.encode(CIPHER, "b")  # read through b only, so a's rows cannot change the hidden states
    head = hydra.model.get_output_embeddings().weight
    saved = head[:span.offset].clone()
    with torch.no_grad():  # point a's head rows along the last hidden state: unrestricted, a would win
        hidden = hydra.model(torch.tensor([prompt]), output_hidden_states=True).hidden_states[-1][0, -1]
        head[:span.offset] = 100 * hidden / hidden.norm()
        full = hydra.model(torch.tensor([prompt])).logits[0, -1]
        assert not span.offset <= int(full.argmax()) < span.end
        try:
            torch.manual_seed(0)
            sampled = hydra.generate([prompt] * 4, max_new_tokens=6, do_sample=True, top_k=0, temperature=2.0)
            greedy = hydra.generate([prompt], max_new_tokens=6)
        finally:
            head[:span.offset] = saved
    emitted = [i for row in sampled + greedy for i in row]
    assert emitted and all(span.offset <= i < span.end for i in emitted)


def test_batched_left_padded_generation_equals_one_by_one(small):
    hydra, *_ = small
    prompts = [hydra.encode(ENGLISH, "a"), hydra.encode("the", "a") + hydra.encode(CIPHER[:9], "b"),
               hydra.encode(CIPHER, "b")]
    assert len({len(p) for p in prompts}) == 3
    batched = hydra.generate(prompts, max_new_tokens=6, batch_size=3)
    single = [hydra.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single


def test_generation_stops_at_the_output_vocabularys_stop_token(small, tokenizers):
    hydra, a, b, _ = small
    prompt = hydra.encode(CIPHER, "b")
    first = hydra.generate([prompt], max_new_tokens=4)[0]
    assert len(first) == 4
    stop = first[2] - hydra.span("b").offset
    body = copy.deepcopy(a)
    stopping = Hydra.build(body, [Vocabulary.from_model("a", a, tokenizers[0]),
                                  Vocabulary(**{**vars(Vocabulary.from_model("b", b, tokenizers[1])),
                                                "stop_ids": (stop,)})], output="b")
    out = stopping.generate([prompt], max_new_tokens=4)[0]
    assert out == first[:first.index(stop + hydra.span("b").offset)]
    # the same through extra stop ids given at generation time
    assert hydra.generate([prompt], max_new_tokens=4, stop_ids=[stop])[0] == out
    with pytest.raises(ConfigError, match=r"stop ids \[100000\] are outside the output vocabulary 'b'"):
        hydra.generate([prompt], stop_ids=[100000])


def test_save_load_round_trip_and_vanilla_loading(built, tmp_path):
    hydra, *_ = built
    ids = torch.tensor([hydra.encode(ENGLISH, "a") + hydra.encode(CIPHER, "b")])
    prompts = [hydra.encode(ENGLISH, "a"), hydra.encode(CIPHER, "b")]
    expected = {name: None for name in hydra.names}
    for name in hydra.names:
        hydra.set_output(name)
        expected[name] = (hydra.logits(ids), [hydra.decode(g) for g in hydra.generate(prompts, max_new_tokens=4)])
    hydra.set_output("b")
    hydra.save_pretrained(tmp_path / "hydra")

    loaded = Hydra.from_pretrained(tmp_path / "hydra")
    assert loaded.output == "b" and set(loaded.names) == {"a", "b"}
    assert loaded.span("b").offset == 0, "the output vocabulary is saved first"
    shifted = torch.tensor([loaded.encode(ENGLISH, "a") + loaded.encode(CIPHER, "b")])
    loaded_prompts = [loaded.encode(ENGLISH, "a"), loaded.encode(CIPHER, "b")]
    for name in loaded.names:
        loaded.set_output(name)
        logits, texts = expected[name]
        torch.testing.assert_close(loaded.logits(shifted), logits, atol=1e-5, rtol=1e-5)
        assert [loaded.decode(g) for g in loaded.generate(loaded_prompts, max_new_tokens=4)] == texts

    # vanilla transformers: the root is a normal checkpoint speaking the output vocabulary
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hydra").eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "hydra")  # see the export test
    vanilla_ids = torch.tensor([tokenizer.encode(CIPHER, add_special_tokens=False)])
    out = model.generate(vanilla_ids, attention_mask=torch.ones_like(vanilla_ids), max_new_tokens=4, do_sample=False)
    assert tokenizer.decode(out[0, vanilla_ids.shape[1]:], skip_special_tokens=True) == expected["b"][1][1]
    assert (tmp_path / "hydra" / HYDRA_FILE).is_file()


def test_body_mismatch_names_the_differing_tensors(tokenizers, tmp_path):
    a, b = two_models("llama", True, tokenizers)
    with torch.no_grad():
        b.model.layers[1].mlp.down_proj.weight.add_(1e-3)
    paths = {"a": save_checkpoint(tmp_path / "a", a, tokenizers[0]),
             "b": save_checkpoint(tmp_path / "b", b, tokenizers[1])}
    with pytest.raises(MismatchError, match=r"'a' and 'b' do not share one body: 1 tensors differ: "
                                            r"model\.layers\.1\.mlp\.down_proj\.weight\."):
        Hydra.from_checkpoints(paths)
    assert Hydra.from_checkpoints(paths, check_body=False).names == ("a", "b")


def test_hidden_size_mismatch_is_refused(tokenizers, tmp_path):
    a, _ = two_models("llama", True, tokenizers)
    wide = AutoModelForCausalLM.from_config(a.config.__class__(**{**a.config.to_dict(), "hidden_size": 64}))
    with pytest.raises(MismatchError, match=r"vocabulary 'wide' has hidden size 64, the body LlamaForCausalLM has 32"):
        Hydra.build(a, [Vocabulary.from_model("a", a, tokenizers[0]),
                        Vocabulary.from_model("wide", wide, tokenizers[0])])


def test_mixed_prompt_decodes_each_run_with_its_own_tokenizer(small):
    hydra, *_ = small
    ids = hydra.encode(CIPHER, "b") + hydra.encode(" " + ENGLISH, "a")
    assert hydra.decode(ids) == CIPHER + " " + ENGLISH
    assert {hydra.vocabulary_of(i) for i in ids} == {"a", "b"}


def test_bad_inputs_have_helpful_messages(small, tmp_path):
    hydra, *_ = small
    with pytest.raises(ConfigError, match=r"unknown vocabulary 'xx'; this Hydra has a, b"):
        hydra.set_output("xx")
    with pytest.raises(ConfigError, match=r"has no hydra.json; give a directory written by 'transtok hydra build'"):
        Hydra.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"vocabulary name 'a/b' is not usable as a folder name"):
        Vocabulary("a/b", hydra.tokenizer("a"), torch.zeros(400, 32))
    with pytest.raises(MismatchError, match=r"its tokenizer has \d+ tokens but the embedding table only 10 rows"):
        Vocabulary("a", hydra.tokenizer("a"), torch.zeros(10, 32))
    with pytest.raises(ConfigError, match=r"has the field \{lang\}; the fields are \{text\}"):
        hydra.translate(["x"], source="a", target="b", instruction="{lang}: {text}")
    with pytest.raises(ConfigError, match=r"give at least one vocabulary checkpoint"):
        Hydra.from_checkpoints({})


def test_newline_ids_are_the_tokens_whose_text_breaks_the_line(tokenizers):
    from transtok.hydra import newline_ids

    for tokenizer in tokenizers:
        ids = newline_ids(tokenizer)
        assert ids and ids == [i for i in range(len(tokenizer)) if "\n" in tokenizer.decode([i])]


def _record_generated(hydra, monkeypatch) -> list:
    """Capture the ids and keyword arguments of every ``hydra.generate`` call made by ``translate``."""
    calls = []
    generate = hydra.generate

    def recording(prompts, **kwargs):
        out = generate(prompts, **kwargs)
        calls.append((out, kwargs))
        return out

    monkeypatch.setattr(hydra, "generate", recording)
    return calls


def test_translate_defaults_answer_one_line_with_a_repetition_guard(small, monkeypatch):
    """By default an answer is one line that cannot start with a line break (a model pushed to emit line
    breaks answers one token, and loops without the stop), and generation gets translate's repetition
    guard; the n-gram guard, when asked for, leaves no repeated n-gram where the model would loop."""
    from transtok.hydra import TRANSLATE_NO_REPEAT_NGRAM, TRANSLATE_REPETITION_PENALTY, newline_ids

    hydra, *_ = small
    offset = hydra.span("b").offset
    newlines = newline_ids(hydra.tokenizer("b"))
    newline = newlines[0] + offset
    texts = [ENGLISH, "the city"]
    calls = _record_generated(hydra, monkeypatch)

    lines = hydra.translate(texts, source="a", target="b", max_new_tokens=12, sequence_bias={(newline,): 50.0})
    assert all("\n" not in line for line in lines)
    assert all(len(ids) == 1 and ids[0] != newline for ids in calls[-1][0])  # the break ends it, but cannot open it
    kwargs = calls[-1][1]
    assert set(newlines) <= set(kwargs["stop_ids"])
    assert kwargs["begin_suppress_tokens"] == [i + offset for i in newlines]
    assert TRANSLATE_REPETITION_PENALTY > 1 and kwargs["repetition_penalty"] == TRANSLATE_REPETITION_PENALTY
    assert kwargs.get("no_repeat_ngram_size", 0) == TRANSLATE_NO_REPEAT_NGRAM
    looping = hydra.translate(texts, source="a", target="b", max_new_tokens=12, stop_at_newline=False,
                              repetition_penalty=1.0, sequence_bias={(newline,): 50.0})
    assert all(ids == [newline] * 12 for ids in calls[-1][0]) and looping == ["", ""]  # line breaks only
    assert "repetition_penalty" not in calls[-1][1] and "begin_suppress_tokens" not in calls[-1][1]

    word = hydra.encode("ab", "b")[0]
    hydra.translate(texts, source="a", target="b", max_new_tokens=12, no_repeat_ngram_size=4,
                    sequence_bias={(word,): 50.0})
    for ids in calls[-1][0]:
        grams = [tuple(ids[i:i + 4]) for i in range(len(ids) - 3)]
        assert len(grams) == len(set(grams)) and ids.count(word) < 12
    hydra.translate(texts, source="a", target="b", max_new_tokens=12, no_repeat_ngram_size=0, repetition_penalty=1.0,
                    sequence_bias={(word,): 50.0})
    assert all(ids == [word] * 12 for ids in calls[-1][0])
    assert hydra.output == "b"


def test_cli_build_generate_export_translate(tokenizers, tmp_path, capsys):
    from transtok.cli import main

    a, b = two_models("llama", False, tokenizers)
    save_checkpoint(tmp_path / "a", a, tokenizers[0])
    save_checkpoint(tmp_path / "b", b, tokenizers[1])
    hydra_dir = tmp_path / "hydra"
    assert main(["hydra", "build", "--vocab", f"a={tmp_path / 'a'}", "--vocab", f"b={tmp_path / 'b'}",
                 "--output", str(hydra_dir)]) == 0
    assert "vocabularies a (300), b (456), output b, untied head" in capsys.readouterr().out
    hydra = Hydra.from_pretrained(hydra_dir)
    expected = hydra.decode(hydra.generate([hydra.encode(ENGLISH, "a", add_special_tokens=True)],
                                           max_new_tokens=4)[0]).strip()

    assert main(["hydra", "generate", "--model", str(hydra_dir), "--prompt", ENGLISH, "--prompt-vocab", "a",
                 "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out == expected + "\n"

    assert main(["hydra", "export", "--model", str(hydra_dir), "--vocab", "a", "--output", str(tmp_path / "ea")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "ea")
    assert torch.equal(exported.get_input_embeddings().weight, a.get_input_embeddings().weight)
    assert torch.equal(exported.get_output_embeddings().weight, a.get_output_embeddings().weight)

    source = tmp_path / "in.txt"
    source.write_text(f"{ENGLISH}\nthe city\nof gold\n", encoding="utf-8")
    assert main(["translate", "--model", str(hydra_dir), "--from", "a", "--to", "b", "--text", str(source),
                 "--output", str(tmp_path / "out.txt"), "--max-new-tokens", "3", "--batch-size", "2"]) == 0
    translated = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
    assert len(translated) == 4 and translated[-1] == ""
    assert translated[:3] == hydra.translate([ENGLISH, "the city", "of gold"], source="a", target="b",
                                             max_new_tokens=3)
    assert main(["translate", "--model", str(hydra_dir), "--from", "a", "--to", "b", "--text", str(source),
                 "--output", str(tmp_path / "off.txt"), "--max-new-tokens", "5", "--no-stop-at-newline",
                 "--no-repeat-ngram", "0", "--repetition-penalty", "1.3"]) == 0
    assert (tmp_path / "off.txt").read_text(encoding="utf-8").splitlines() == [
        t.replace("\n", " ") for t in hydra.translate([ENGLISH, "the city", "of gold"], source="a", target="b",
                                                      max_new_tokens=5, stop_at_newline=False,
                                                      no_repeat_ngram_size=0, repetition_penalty=1.3)]

    # a plain checkpoint is a one-vocabulary model that reads and writes both languages
    assert main(["translate", "--model", str(tmp_path / "a"), "--from", "en", "--to", "es", "--text", str(source),
                 "--output", str(tmp_path / "plain.txt"), "--max-new-tokens", "3"]) == 0
    plain = Hydra.from_checkpoints({"model": tmp_path / "a"})
    assert (tmp_path / "plain.txt").read_text(encoding="utf-8").splitlines() == plain.translate(
        [ENGLISH, "the city", "of gold"], source="model", target="model", source_language="English",
        target_language="Spanish", max_new_tokens=3)

    assert main(["hydra", "build", "--vocab", "a", "--output", str(tmp_path / "x")]) == 2
    assert "--vocab 'a' is not NAME=DIR" in capsys.readouterr().err


def test_translation_benchmark_runs_on_tiny_models(tokenizers, tmp_path):
    import json

    bench = factories.benchmark("translation")

    a, b = two_models("llama", True, tokenizers)
    save_checkpoint(tmp_path / "a", a, tokenizers[0])
    save_checkpoint(tmp_path / "b", b, tokenizers[1])
    pairs = factories.cipher_corpus(40, seed=3)
    (tmp_path / "test.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs[:6]), encoding="utf-8")
    (tmp_path / "train.txt").write_text("".join(t + "\n" for _, t in pairs[6:]), encoding="utf-8")
    assert bench.main(["--source-model", str(tmp_path / "a"), "--target-model", str(tmp_path / "b"),
                       "--test", str(tmp_path / "test.tsv"), "--train-texts", str(tmp_path / "train.txt"),
                       "--limit", "4", "--max-new-tokens", "3", "--train-steps", "2", "--train-batch", "2",
                       "--train-block", "16", "--bf16", "off", "--work-dir", str(tmp_path / "work"),
                       "--output", str(tmp_path / "result.json")]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert [r["system"] for r in result["systems"]] == ["a_source_model", "b_hydra_mapped", "c_hydra_trained"]
    assert all(0 <= r["chrf"] <= 100 and r["segments"] == 4 for r in result["systems"])
    for r in result["systems"]:  # the length-sensitivity columns: chrF by beta (beta 2 is chrF itself), lengths
        assert set(r["chrf_by_beta"]) == {"2", "1", "0.5"} and r["chrf_by_beta"]["2"] == r["chrf"]
        assert r["mean_reference_chars"] > 0 and r["mean_hypothesis_chars"] >= 0
    assert result["training"]["steps"] == 2 and result["training"]["last_loss"] > 0
    for r in result["systems"]:
        assert len((tmp_path / "work" / f"{r['system']}.hyp.txt").read_text(encoding="utf-8").splitlines()) == 4
    # the trained vocabulary kept the body: its non-embedding weights equal the target checkpoint's
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "work" / "trained")
    assert not torch.equal(trained.get_input_embeddings().weight, b.get_input_embeddings().weight)
    torch.testing.assert_close(trained.model.layers[0].mlp.up_proj.weight, b.model.layers[0].mlp.up_proj.weight,
                               rtol=0, atol=0)

    # --grid: every setting on systems a and b, the chosen one among the new settings
    assert bench.main(["--source-model", str(tmp_path / "a"), "--target-model", str(tmp_path / "b"),
                       "--test", str(tmp_path / "test.tsv"), "--limit", "3", "--max-new-tokens", "4", "--grid",
                       "--grid-no-repeat", "0", "3", "--grid-penalty", "1.0", "--systems", "ab", "--bf16", "off",
                       "--work-dir", str(tmp_path / "grid"), "--output", str(tmp_path / "grid.json")]) == 0
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert len(grid["rows"]) == 2 * 3 and grid["chosen"] != grid["before"]
    assert grid["chosen_settings"]["stop_at_newline"] and not grid["before_settings"]["stop_at_newline"]
    assert "**" + grid["chosen"] in (tmp_path / "grid.md").read_text()
    # --speed: plain generate and translate on the same prompts
    assert bench.main(["--source-model", str(tmp_path / "a"), "--target-model", str(tmp_path / "b"),
                       "--test", str(tmp_path / "test.tsv"), "--limit", "3", "--max-new-tokens", "4", "--speed",
                       "--bf16", "off", "--work-dir", str(tmp_path / "speed"),
                       "--output", str(tmp_path / "speed.json")]) == 0
    speed = json.loads((tmp_path / "speed.json").read_text())["speed"]
    assert [r["lines"] for r in speed] == [3, 3, 3] and all(r["lines_per_second"] > 0 for r in speed)
    assert speed[0]["examples"] == speed[1]["examples"]  # translate of a one-vocabulary model = plain generate


def test_tied_and_untied_vocabularies_make_an_untied_hydra_that_keeps_each_view(tokenizers, tmp_path):
    ta, tb = tokenizers
    a, b = two_models("qwen2", True, tokenizers)
    untied_b = Vocabulary.from_model("b", b, tb)
    untied_b.output_embeddings = torch.randn_like(untied_b.input_embeddings)
    hydra = Hydra.build(copy.deepcopy(a), [Vocabulary.from_model("a", a, ta), untied_b], output="b")
    assert not hydra.tied
    ids = torch.tensor([hydra.encode(CIPHER, "b")])
    expected_b = torch.nn.functional.linear(b.model(ids - hydra.span("b").offset).last_hidden_state,
                                            untied_b.output_embeddings)
    torch.testing.assert_close(hydra.logits(ids), expected_b, atol=1e-5, rtol=1e-5)
    hydra.export("a", tmp_path / "a")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    english = torch.tensor([ta.encode(ENGLISH)])
    torch.testing.assert_close(exported(english).logits, a(english).logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ArchitectureError, match=r"all vocabularies are tied but the body Qwen2ForCausalLM is untied"):
        Hydra.build(factories.tiny_causal_lm("qwen2", len(ta), False, ta), [Vocabulary.from_model("a", a, ta)])
