"""Likelihood of reference translations: the figure equals a naive one-line-at-a-time computation over
the target vocabulary, the prompt is translate's, a model that reads its source (a Hydra whose target
vocabulary is a ROT13 cipher of the source) finds each reference cheaper after its own source than after
another line's, a plain model and a Hydra with the same vocabulary agree, and batching changes nothing."""
from __future__ import annotations

import codecs
import copy
import json
import math

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

import factories
from test_hydra import save_checkpoint, two_models
from transtok.errors import ConfigError, DataError
from transtok.evaluate import derangement, translation_likelihood
from transtok.hydra import Hydra, Vocabulary, newline_ids, translation_prompt

PAIRS = factories.cipher_corpus(7, seed=11)
SOURCES = [s for s, _ in PAIRS]
REFERENCES = [t for _, t in PAIRS]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run faster on one thread


@pytest.fixture(scope="module")
def tokenizers():
    pairs = factories.cipher_corpus(300)
    return (factories.byte_level_tokenizer([s for s, _ in pairs], 300),
            factories.sentencepiece_tokenizer([t for _, t in pairs], 200))


@pytest.fixture(scope="module", params=[("llama", True), ("gpt2", False)], ids=["llama-tied", "gpt2-untied"])
def hydra(request, tokenizers):
    """English vocabulary ``a`` (byte-level) and cipher vocabulary ``b`` (SentencePiece) on one body."""
    a, b = two_models(*request.param, tokenizers)
    return Hydra.build(copy.deepcopy(a), [Vocabulary.from_model("a", a, tokenizers[0]),
                                          Vocabulary.from_model("b", b, tokenizers[1])], output="a")


def naive_bits(hydra, source_text: str, reference: str, *, end: bool) -> float:
    """One pair, unbatched and unpadded: softmax over the target vocabulary's tokens at each answer position,
    line breaks barred from the first one, the end = any stop or line-break token after the last."""
    span, tokenizer = hydra.span("b"), hydra.tokenizer("b")
    prompt = translation_prompt(hydra, source_text, source="a", target="b")
    answer = tokenizer.encode(reference, add_special_tokens=False)
    with torch.no_grad():
        logits = hydra.model(torch.tensor([prompt + [i + span.offset for i in answer]])).logits[0].double()
    logits = logits[:, span.offset:span.offset + len(tokenizer)]
    newlines = newline_ids(tokenizer)
    stops = sorted(set(span.stop_ids) | set(newlines))
    nats = 0.0
    for k, token in enumerate(answer):
        row = logits[len(prompt) - 1 + k].clone()
        if k == 0:
            row[newlines] = -math.inf
        nats -= torch.log_softmax(row, -1)[token].item()
    if end:
        nats -= torch.logsumexp(torch.log_softmax(logits[len(prompt) - 1 + len(answer)], -1)[stops], -1).item()
    return nats / math.log(2)


@pytest.mark.parametrize("end", [True, False])
def test_bits_per_byte_equals_a_naive_one_line_at_a_time_computation(hydra, end):
    result = translation_likelihood(hydra, SOURCES, REFERENCES, source="a", target="b", batch_size=3, end=end,
                                    bf16=False)
    order = derangement(len(SOURCES))
    assert [line["shuffled_source"] for line in result.per_line] == order
    for i, line in enumerate(result.per_line):
        assert line["bits"] == pytest.approx(naive_bits(hydra, SOURCES[i], REFERENCES[i], end=end), rel=1e-5)
        assert line["bits_shuffled"] == pytest.approx(naive_bits(hydra, SOURCES[order[i]], REFERENCES[i], end=end),
                                                      rel=1e-5)
    n_bytes = sum(len(r.encode("utf-8")) for r in REFERENCES)
    tokens = sum(len(hydra.tokenizer("b").encode(r, add_special_tokens=False)) for r in REFERENCES)
    assert (result.bytes, result.tokens, result.lines, result.end) == (n_bytes, tokens + end * len(REFERENCES), 7, end)
    assert result.bits_per_byte == pytest.approx(sum(line["bits"] for line in result.per_line) / n_bytes, rel=1e-9)
    assert result.bits_per_byte_shuffled == pytest.approx(result.bits_shuffled / n_bytes, rel=1e-9)
    assert f"|end:{'yes' if end else 'no'}|shuffle:0|lines:7|bytes:{n_bytes}|prec:fp32|" in result.signature
    assert hydra.output == "a" and not hydra.model.training


@pytest.mark.parametrize("options", [{}, {"instruction": "{source_language} to {target_language}: {text}",
                                          "chat": False}], ids=["chat", "plain"])
def test_the_prompt_is_the_one_translate_feeds_the_model(hydra, options, monkeypatch):
    fed, translated = [], []
    hook = hydra.model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.extend(zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist())),
        with_kwargs=True)
    try:
        translation_likelihood(hydra, SOURCES[:3], REFERENCES[:3], source="a", target="b", bf16=False, **options)
    finally:
        hook.remove()
    monkeypatch.setattr(hydra, "generate", lambda prompts, **kwargs: translated.extend(prompts) or [[]] * len(prompts))
    hydra.translate(SOURCES[:3], source="a", target="b", **options)
    offset = hydra.span("b").offset
    answers = [[i + offset for i in hydra.tokenizer("b").encode(r, add_special_tokens=False)] for r in REFERENCES[:3]]
    sequences = [ids[:sum(mask)] for ids, mask in fed]
    own = {tuple(p + a) for p, a in zip(translated, answers)}
    shuffled = {tuple(translated[j] + answers[i]) for i, j in enumerate(derangement(3))}
    assert {tuple(s) for s in sequences} == own | shuffled and len(sequences) == 6


def test_batch_size_does_not_change_the_result(hydra):
    results = [translation_likelihood(hydra, SOURCES, REFERENCES, source="a", target="b", batch_size=size,
                                      bf16=False) for size in (1, 4, 14)]
    for other in results[1:]:
        assert other.signature == results[0].signature
        for key in ("bits_per_byte", "bits_per_byte_shuffled"):
            assert getattr(other, key) == pytest.approx(getattr(results[0], key), rel=1e-6)


def test_padding_rows_of_the_target_table_take_no_probability(tokenizers):
    """Generation suppresses the rows past the tokenizer (a padded table, as Qwen2's); so does the score."""
    a, b = two_models("llama", True, tokenizers)
    va, vb = Vocabulary.from_model("a", a, tokenizers[0]), Vocabulary.from_model("b", b, tokenizers[1])
    padded = copy.copy(vb)
    padded.input_embeddings = torch.cat([vb.input_embeddings, 50 * torch.randn(56, vb.input_embeddings.shape[1])])
    figures = [translation_likelihood(Hydra.build(copy.deepcopy(a), [va, v]), SOURCES, REFERENCES, source="a",
                                      target="b", bf16=False) for v in (vb, padded)]
    assert figures[1].bits_per_byte == pytest.approx(figures[0].bits_per_byte, rel=1e-6)
    assert figures[1].bits_per_byte_shuffled == pytest.approx(figures[0].bits_per_byte_shuffled, rel=1e-6)


def rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


def rot13_tokenizer(tokenizer):
    """``tokenizer`` with every token's letters ROT13-ciphered: it cuts rot13(text) into the ids that
    ``tokenizer`` cuts ``text`` into (byte-level BPE maps letters to themselves; specials are kept)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["model"]["vocab"] = {(k if k in factories.SPECIALS else rot13(k)): v
                              for k, v in spec["model"]["vocab"].items()}
    spec["model"]["merges"] = [[rot13(p) for p in m] if isinstance(m, list) else " ".join(map(rot13, m.split(" ")))
                               for m in spec["model"]["merges"]]
    return factories.wrap(Tokenizer.from_str(json.dumps(spec)), bos_token="<|im_start|>", eos_token="<|im_end|>",
                          pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                          additional_special_tokens=factories.SPECIALS[1:])


def reading_model(tokenizer, hidden: int = 128):
    """A one-layer llama that predicts the tokens it has read: uniform attention (zero queries and keys)
    adds the mean of every previous embedding to the residual, and the tied head scores each token by its
    row's dot product with that; no MLP."""
    config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4,
                                  num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1,
                                  max_position_embeddings=256, tie_word_embeddings=True,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    layer = model.model.layers[0]
    with torch.no_grad():
        layer.self_attn.q_proj.weight.zero_()
        layer.self_attn.k_proj.weight.zero_()
        layer.self_attn.v_proj.weight.copy_(torch.eye(hidden))
        layer.self_attn.o_proj.weight.copy_(torch.eye(hidden))
        layer.mlp.down_proj.weight.zero_()
        torch.nn.init.normal_(model.get_input_embeddings().weight)
    return model


def test_a_model_that_reads_its_source_finds_the_reference_cheaper_than_after_another_lines_source():
    english = factories.english_sentences(300)
    en = factories.byte_level_tokenizer(english, 300)
    xx = rot13_tokenizer(en)
    sources = factories.english_sentences(12, seed=5)
    references = [rot13(s) for s in sources]
    assert [xx.encode(r) for r in references] == [en.encode(s) for s in sources], "xx must be a cipher of en"
    model = reading_model(en)
    # the cipher vocabulary has the rows of the words it ciphers: the model reads English and writes ROT13
    cipher = Hydra.build(copy.deepcopy(model), [Vocabulary.from_model("en", model, en),
                                                Vocabulary.from_model("xx", model, xx)])
    result = translation_likelihood(cipher, sources, references, source="en", target="xx", bf16=False)
    assert all(line["bits"] < line["bits_shuffled"] for line in result.per_line)
    assert result.gap > 0.5

    # rows shuffled: the same body cannot read this cipher, and the control costs about as much
    scrambled = Vocabulary.from_model("xx", model, xx)
    scrambled.input_embeddings = scrambled.input_embeddings[torch.randperm(len(xx), generator=torch.Generator()
                                                                           .manual_seed(0))]
    unreadable = Hydra.build(copy.deepcopy(model), [Vocabulary.from_model("en", model, en), scrambled])
    control = translation_likelihood(unreadable, sources, references, source="en", target="xx", bf16=False)
    assert abs(control.gap) < result.gap / 5


def test_a_plain_model_and_a_hydra_with_the_same_vocabulary_give_identical_figures(tokenizers, tmp_path):
    a, _ = two_models("llama", False, tokenizers)
    plain = Hydra.from_checkpoints({"model": save_checkpoint(tmp_path / "a", a, tokenizers[0])})
    same = Hydra.from_checkpoints({"en": tmp_path / "a", "es": tmp_path / "a"}, output="en")
    sources = ["the king went to the city", "the day of gold", "and the people saw the light"]
    references = ["the city of the king", "a day of silver", "the people saw"]
    kwargs = dict(bf16=False, batch_size=2)
    one = translation_likelihood(plain, sources, references, source="model", target="model",
                                 source_language="English", target_language="Spanish", **kwargs)
    two = translation_likelihood(same, sources, references, source="en", target="es", **kwargs)
    assert one.signature == two.signature
    for key in ("bits_per_byte", "bits_per_byte_shuffled"):
        assert getattr(one, key) == pytest.approx(getattr(two, key), rel=1e-6)
    assert (one.tokens, one.bytes) == (two.tokens, two.bytes)


def test_derangement_moves_every_line_and_is_fixed_by_its_seed():
    for n in (2, 3, 10, 100):
        order = derangement(n, seed=4)
        assert sorted(order) == list(range(n)) and all(i != j for i, j in enumerate(order))
        assert derangement(n, seed=4) == order
    assert derangement(100, seed=1) != derangement(100, seed=2)
    assert derangement(2) == [1, 0]


def test_bad_inputs_are_refused_before_any_model_work(hydra):
    def score(sources=SOURCES, references=REFERENCES, **kwargs):
        return translation_likelihood(hydra, sources, references, **{"source": "a", "target": "b", **kwargs})

    with pytest.raises(DataError, match=r"7 sources but 6 references; give one source line per reference line"):
        score(references=REFERENCES[:6])
    with pytest.raises(DataError, match=r"1 line to score; the shuffled control .* give at least two lines"):
        score(SOURCES[:1], REFERENCES[:1])
    with pytest.raises(DataError, match=r"reference line 2 is blank"):
        score(SOURCES[:3], [REFERENCES[0], " ", REFERENCES[2]])
    with pytest.raises(DataError, match=r"reference line 1 holds a line break; a translation is one line"):
        score(SOURCES[:2], ["a\nb", "c"])
    with pytest.raises(ConfigError, match=r"unknown vocabulary 'c'; this Hydra has a, b"):
        score(target="c")
    with pytest.raises(ConfigError, match=r"batch_size must be an integer >= 1 \(prompts per forward pass\), got 0"):
        score(batch_size=0)
    with pytest.raises(ConfigError, match=r"has the field \{lang\}"):
        score(instruction="{lang}: {text}")
    with pytest.raises(ConfigError, match=r"sources and references must be sequences of strings"):
        score("one", "two")


def _files(tmp_path, sources, references):
    (tmp_path / "src.txt").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    (tmp_path / "ref.txt").write_text("".join(r + "\n" for r in references), encoding="utf-8")
    return str(tmp_path / "src.txt"), str(tmp_path / "ref.txt")


def test_cli_scores_a_hydra_and_a_plain_model(tokenizers, tmp_path, capsys):
    from transtok.cli import main

    a, b = two_models("llama", True, tokenizers)
    paths = {"a": save_checkpoint(tmp_path / "a", a, tokenizers[0]), "b": save_checkpoint(tmp_path / "b", b,
                                                                                           tokenizers[1])}
    Hydra.from_checkpoints(paths, output="b").save_pretrained(tmp_path / "hydra")
    sources, references = _files(tmp_path, SOURCES, REFERENCES)
    common = ["--sources", sources, "--references", references, "--device", "cpu", "--precision", "fp32"]
    assert main(["evaluate", "translation", "--model", str(tmp_path / "hydra"), "--from", "a", "--to", "b",
                 "--batch-size", "5", "--json", *common]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"bits_per_byte", "bits_per_byte_shuffled", "tokens", "bytes", "lines", "per_line", "signature"} <= set(
        printed)
    expected = translation_likelihood(Hydra.from_pretrained(tmp_path / "hydra"), SOURCES, REFERENCES, source="a",
                                      target="b", bf16=False)
    assert printed["signature"] == expected.signature and printed["lines"] == 7 == len(printed["per_line"])
    assert printed["bits_per_byte"] == pytest.approx(expected.bits_per_byte, rel=1e-6)
    assert printed["bits_per_byte_shuffled"] == pytest.approx(expected.bits_per_byte_shuffled, rel=1e-6)

    # a plain checkpoint reads and writes with its one vocabulary; --from/--to name the languages
    english = factories.english_sentences(7, seed=12)
    (tmp_path / "ref.txt").write_text("".join(r + "\n" for r in english), encoding="utf-8")
    assert main(["evaluate", "translation", "--model", str(tmp_path / "a"), "--from", "en", "--to", "es",
                 "--no-chat", *common]) == 0
    out = capsys.readouterr().out
    plain = translation_likelihood(Hydra.from_checkpoints({"model": tmp_path / "a"}), SOURCES, english,
                                   source="model", target="model", source_language="English",
                                   target_language="Spanish", chat=False, bf16=False)
    assert out.startswith(f"BPB {plain.bits_per_byte:.4f} given its own source, {plain.bits_per_byte_shuffled:.4f} "
                          "given another line's (shuffled)") and plain.signature in out


def test_cli_bad_input_is_one_line_and_exit_2_before_the_model_loads(tmp_path, capsys):
    from transtok.cli import main

    sources, references = _files(tmp_path, SOURCES, REFERENCES[:5])
    missing_model = str(tmp_path / "no-model")  # never reached: every refusal below comes first

    def refused(*argv) -> str:
        assert main(["evaluate", "translation", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("transtok evaluate translation: error: ")
        return err

    assert "7 sources but 5 references" in refused("--model", missing_model, "--from", "a", "--to", "b",
                                                   "--sources", sources, "--references", references)
    assert "does not exist" in refused("--model", missing_model, "--from", "a", "--to", "b", "--sources",
                                       str(tmp_path / "nope.txt"), "--references", references)
    assert "scoring a --model needs --sources, --to" in refused("--model", missing_model, "--from", "a",
                                                                "--references", references)
    assert "--batch-size must be an integer >= 1" in refused("--model", missing_model, "--from", "a", "--to", "b",
                                                             "--sources", sources, "--references", references,
                                                             "--batch-size", "0")
    # a Hydra's vocabulary names are read from hydra.json alone (here there is no model to load)
    (tmp_path / "hydra").mkdir()
    (tmp_path / "hydra" / "hydra.json").write_text(json.dumps({
        "format": "transtok-hydra", "version": 1, "output": "b", "vocabularies": [
            {"name": name, "offset": offset, "size": 10, "stop_ids": [], "tokenizer": f"tokenizers/{name}"}
            for name, offset in (("a", 0), ("b", 10))]}), encoding="utf-8")
    assert "unknown vocabulary 'en'; this Hydra has a, b: give those names to --from and --to" in refused(
        "--model", str(tmp_path / "hydra"), "--from", "en", "--to", "b", "--sources", sources, "--references",
        _files(tmp_path, SOURCES, REFERENCES)[1])
    assert "--sources, --from only apply when scoring a --model" in refused(
        "--hypotheses", sources, "--references", references, "--sources", sources, "--from", "a")
    for argv in (["--model", missing_model, "--hypotheses", sources, "--references", references],
                 ["--references", references]):
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "translation", *argv])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and "--model" in err and "--hypotheses" in err
