"""Evaluation invariants: BPB equals an independent naive computation, uniform logits give log2(V)
bits per token, batching does not change the number, translation scores are sacrebleu's."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch

import factories
from transtok.errors import ConfigError, DataError, MismatchError, MissingDependencyError
from transtok.evaluate import (PerplexityResult, evaluate_perplexity, fertility, read_segments,
                               score_translation)
from transtok.vocabulary import vocab_hash

SEQ = 20


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and OpenMP spin-waits make them 100x slower on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def texts(cipher_pairs):
    # Non-ASCII on purpose: bytes, not characters, are the denominator.
    return [t for _, t in cipher_pairs[:25]] + ["añadió über ñandú"]


def naive_nll_nats(model, tokenizer, texts, seq_len, prefix):
    """The protocol spelled out one window at a time, without batching, masks or autocast."""
    ids = tokenizer("\n".join(texts), add_special_tokens=False).input_ids
    total = 0.0
    for start in range(0, len(ids), seq_len):
        window = ids[start:start + seq_len]
        inputs = torch.tensor([[prefix] + window])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=inputs).logits[0].double(), dim=-1)
        total -= sum(logp[i, token].item() for i, token in enumerate(window))
    return total, len(ids)


@pytest.mark.parametrize("arch,tie", [("llama", True), ("gpt2", False), ("gpt_neox", True)])
def test_bits_per_byte_equals_the_naive_loop(arch, tie, texts, target_tokenizer):
    model = factories.tiny_causal_lm(arch, len(target_tokenizer), tie, target_tokenizer)
    result = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, batch_size=3, bf16=False)
    nats, tokens = naive_nll_nats(model, target_tokenizer, texts, SEQ, target_tokenizer.bos_token_id)
    n_bytes = len("\n".join(texts).encode("utf-8"))
    assert (result.tokens, result.bytes, result.windows) == (tokens, n_bytes, math.ceil(tokens / SEQ))
    assert tokens % SEQ != 0, "the last window must be a short one for this test to cover padding"
    assert result.bits_per_byte == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
    assert result.token_perplexity == pytest.approx(math.exp(nats / tokens), rel=1e-5)
    assert result.nll_bits == pytest.approx(result.bits_per_byte * n_bytes, rel=1e-9)


def naive_strided_nll_nats(model, ids, seq_len, stride, prefix):
    """Sliding windows spelled out one token at a time: token i is predicted from the bos prefix and
    the tokens of its window before it: the first window (i < seq_len) starts at 0, window k >= 1
    at k * stride and scores the tokens from seq_len + (k - 1) * stride on."""
    total = 0.0
    for i, token in enumerate(ids):
        if i < seq_len:
            start = 0
        else:
            k = (i - seq_len) // stride + 1
            start = k * stride
        inputs = torch.tensor([[prefix] + ids[start:i]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=inputs).logits[0, -1].double(), dim=-1)
        total -= logp[token].item()
    return total


@pytest.mark.parametrize("stride", [1, 7, SEQ - 1])
def test_strided_bits_per_byte_equals_a_one_token_at_a_time_loop(stride, texts, target_tokenizer):
    model = factories.tiny_causal_lm("llama", len(target_tokenizer), True, target_tokenizer)
    ids = target_tokenizer("\n".join(texts), add_special_tokens=False).input_ids
    assert (len(ids) - SEQ) % stride != 0 or stride == 1, "the last window must be a short one"
    result = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, stride=stride, batch_size=3, bf16=False)
    nats = naive_strided_nll_nats(model, ids, SEQ, stride, target_tokenizer.bos_token_id)
    n_bytes = len("\n".join(texts).encode("utf-8"))
    assert result.tokens == len(ids) and result.stride == stride
    assert result.windows == 1 + math.ceil((len(ids) - SEQ) / stride)
    assert result.bits_per_byte == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-5)
    assert f"stride:{stride}" in result.signature.split("|")


def test_stride_equal_to_seq_len_is_the_block_protocol(texts, target_tokenizer):
    model = factories.tiny_causal_lm("gpt2", len(target_tokenizer), False, target_tokenizer)
    block = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, bf16=False)
    strided = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, stride=SEQ, bf16=False)
    assert strided == block and block.stride == SEQ
    overlapping = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, stride=5, bf16=False)
    assert overlapping.windows > block.windows and overlapping.tokens == block.tokens
    assert overlapping.signature != block.signature


@pytest.mark.parametrize("stride", [0, SEQ + 1, 2.5, True])
def test_bad_stride_is_refused(stride, texts, target_tokenizer):
    model = factories.tiny_causal_lm("llama", len(target_tokenizer), True, target_tokenizer)
    with pytest.raises(ConfigError, match="stride"):
        evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, stride=stride)


def test_uniform_logits_give_log2_vocab_bits_per_token(texts, target_tokenizer):
    model = factories.tiny_causal_lm("llama", len(target_tokenizer) + 7, False, target_tokenizer)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    result = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, bf16=False)
    vocab = len(target_tokenizer) + 7  # the model's rows, not the tokenizer's size, set the uniform distribution
    assert result.bits_per_byte == pytest.approx(result.tokens * math.log2(vocab) / result.bytes, rel=1e-6)
    assert result.token_perplexity == pytest.approx(vocab, rel=1e-6)


def test_batch_size_does_not_change_the_result(texts, target_tokenizer):
    model = factories.tiny_causal_lm("qwen2", len(target_tokenizer), False, target_tokenizer)
    results = [evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, batch_size=b, bf16=False)
               for b in (1, 4, 1000)]
    for other in results[1:]:
        assert other.bits_per_byte == pytest.approx(results[0].bits_per_byte, rel=1e-6)
        assert other.signature == results[0].signature


def test_scoring_and_the_calibration_passes_build_no_kv_cache(texts, target_tokenizer):
    from transtok.calibration import mean_prediction

    model = factories.tiny_causal_lm("llama", len(target_tokenizer), False, target_tokenizer)
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("use_cache")),
                                    with_kwargs=True)
    evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, bf16=False)
    mean_prediction(model, target_tokenizer, texts[:4])
    assert seen and set(seen) == {False}


def test_eos_prefixes_windows_when_there_is_no_bos(texts, cipher_pairs):
    tokenizer = factories.sentencepiece_tokenizer([t for _, t in cipher_pairs], 300)
    tokenizer.bos_token = None
    model = factories.tiny_causal_lm("llama", len(tokenizer), True, tokenizer)
    result = evaluate_perplexity(model, tokenizer, texts, seq_len=SEQ, bf16=False)
    nats, _ = naive_nll_nats(model, tokenizer, texts, SEQ, tokenizer.eos_token_id)
    assert result.nll_bits == pytest.approx(nats / math.log(2), rel=1e-5)


def test_bf16_autocast_stays_close_to_fp32(texts, target_tokenizer):
    model = factories.tiny_causal_lm("llama", len(target_tokenizer), True, target_tokenizer)
    fp32 = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, bf16=False)
    bf16 = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, bf16=True)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.bits_per_byte == pytest.approx(fp32.bits_per_byte, rel=2e-2)
    assert "prec:bf16" in bf16.signature and "prec:fp32" in fp32.signature


def test_signature_and_dict(texts, target_tokenizer):
    model = factories.tiny_causal_lm("llama", len(target_tokenizer), True, target_tokenizer)
    model.train()
    result = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, bf16=False)
    assert model.training, "the caller's train/eval mode must be restored"
    parts = result.signature.split("|")
    assert parts[0] == "bpb" and f"tok:{vocab_hash(target_tokenizer)}" in parts
    assert f"seq:{SEQ}" in parts and f"bytes:{result.bytes}" in parts and parts[-1].startswith("v:")
    as_dict = result.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert PerplexityResult(**as_dict) == result
    other_text = evaluate_perplexity(model, target_tokenizer, texts[:-1], seq_len=SEQ, bf16=False)
    assert other_text.signature != result.signature


def test_bad_inputs(texts, target_tokenizer, source_tokenizer):
    model = factories.tiny_causal_lm("llama", len(target_tokenizer), True, target_tokenizer)
    with pytest.raises(DataError, match="evaluation text is empty"):
        evaluate_perplexity(model, target_tokenizer, ["", "  "])
    with pytest.raises(ConfigError, match="not one string; pass \\[text\\]"):
        evaluate_perplexity(model, target_tokenizer, "one text", seq_len=SEQ)
    with pytest.raises(ConfigError, match="seq_len 512 needs 513 positions .* the model has 128; use seq_len 127"):
        evaluate_perplexity(model, target_tokenizer, texts)
    with pytest.raises(ConfigError, match="`seq_len` must be a positive integer, got 0"):
        evaluate_perplexity(model, target_tokenizer, texts, seq_len=0)
    with pytest.raises(ConfigError, match="`batch_size` must be a positive integer, got -1"):
        evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, batch_size=-1)
    small = factories.tiny_causal_lm("llama", 50, True)
    with pytest.raises(MismatchError, match="produced id \\d+ but the model has only 50 embedding rows"):
        evaluate_perplexity(small, target_tokenizer, texts, seq_len=SEQ)
    wordpiece = factories.wordpiece_tokenizer(texts, 200)
    with pytest.raises(DataError, match="into no tokens at all"):
        evaluate_perplexity(model, wordpiece, ["\x01\x02", "\x03"], seq_len=SEQ)
    with pytest.raises(ConfigError, match="has neither a bos nor an eos token"):
        evaluate_perplexity(factories.tiny_causal_lm("llama", len(wordpiece), True), wordpiece, texts, seq_len=SEQ)


def test_fertility_counts_tokens_per_whitespace_word(texts):
    words = sorted({w for t in texts for w in t.rstrip(".!?").split()})
    tokenizer = factories.wordpiece_tokenizer([" ".join(words)] * 5, 4 + 2 * len(words) + 200)
    plain = [t.rstrip(".!?") for t in texts]
    whole = [w for w in words if tokenizer.tokenize(w) == [w]]
    assert len(whole) > 10
    assert fertility(tokenizer, [" ".join(whole)]) == 1.0
    pieces = sum(len(tokenizer.tokenize(w)) for t in plain for w in t.split())
    assert fertility(tokenizer, plain) == pytest.approx(pieces / sum(len(t.split()) for t in plain))
    with pytest.raises(DataError, match="at least one word"):
        fertility(tokenizer, ["", " "])


HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REFS = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]


def test_translation_scores_are_sacrebleus():
    import sacrebleu

    score = score_translation(HYPS, REFS)
    assert score.bleu == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert score.chrf == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)
    assert score_translation(REFS, HYPS).chrf != score.chrf  # the order of the arguments matters
    perfect = score_translation(REFS, REFS)
    assert (perfect.bleu, perfect.chrf, perfect.segments) == (pytest.approx(100), pytest.approx(100), 3)
    assert "nrefs:1" in score.bleu_signature and "nc:6" in score.chrf_signature
    assert json.loads(json.dumps(score.to_dict()))["bleu"] == score.bleu


def test_translation_bad_inputs(monkeypatch):
    with pytest.raises(DataError, match="3 hypotheses but 2 references"):
        score_translation(HYPS, REFS[:2])
    with pytest.raises(DataError, match="no references"):
        score_translation([], [])
    monkeypatch.setitem(sys.modules, "sacrebleu.metrics", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'transtok\[eval\]'"):
        score_translation(HYPS, REFS)


def test_read_segments_keeps_blank_lines(tmp_path):
    path = tmp_path / "hyp.txt"
    path.write_bytes("a\n\nc\r\n".encode("utf-8"))
    assert read_segments(path) == ["a", "", "c"]
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\n")
    with pytest.raises(DataError, match="bad.txt:2: bytes that are not UTF-8"):
        read_segments(tmp_path / "bad.txt")
    with pytest.raises(DataError, match="does not exist"):
        read_segments(tmp_path / "missing.txt")


def test_cli_evaluate_translation(tmp_path, capsys):
    from transtok.cli import main

    (tmp_path / "h").write_text("\n".join(HYPS) + "\n", encoding="utf-8")
    (tmp_path / "r").write_text("\n".join(REFS) + "\n", encoding="utf-8")
    assert main(["evaluate", "translation", "--hypotheses", str(tmp_path / "h"), "--references",
                 str(tmp_path / "r"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == score_translation(HYPS, REFS).to_dict()
    (tmp_path / "r").write_text("only one\n", encoding="utf-8")
    assert main(["evaluate", "translation", "--hypotheses", str(tmp_path / "h"), "--references",
                 str(tmp_path / "r")]) == 2
    assert "3 hypotheses but 1 references" in capsys.readouterr().err


def test_cli_evaluate_perplexity(tmp_path, texts, target_tokenizer, capsys):
    pytest.importorskip("transtok.corpus")
    from transtok.cli import main

    model = factories.tiny_causal_lm("llama", len(target_tokenizer), True, target_tokenizer)
    model.save_pretrained(tmp_path / "model")
    target_tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "test.txt").write_text("\n".join(texts) + "\n\n", encoding="utf-8")
    assert main(["evaluate", "perplexity", "--model", str(tmp_path / "model"), "--text", str(tmp_path / "test.txt"),
                 "--seq-len", str(SEQ), "--precision", "fp32", "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, bf16=False)
    assert printed["bits_per_byte"] == pytest.approx(expected.bits_per_byte, rel=1e-6)
    assert {k: v for k, v in printed.items() if k not in ("bits_per_byte", "token_perplexity", "nll_bits")} == \
           {k: v for k, v in expected.to_dict().items() if k not in ("bits_per_byte", "token_perplexity", "nll_bits")}
    assert main(["evaluate", "perplexity", "--model", str(tmp_path / "model"), "--text", str(tmp_path / "test.txt"),
                 "--seq-len", str(SEQ), "--stride", "7", "--precision", "fp32", "--device", "cpu", "--json"]) == 0
    strided = json.loads(capsys.readouterr().out)
    expected = evaluate_perplexity(model, target_tokenizer, texts, seq_len=SEQ, stride=7, bf16=False)
    assert strided["stride"] == 7 and strided["signature"] == expected.signature
    assert strided["bits_per_byte"] == pytest.approx(expected.bits_per_byte, rel=1e-6)
