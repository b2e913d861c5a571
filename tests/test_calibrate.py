"""`transtok calibrate`: the unigram prior on any causal LM (its known marginal recovered, tied and untied
heads, an extended model's source rows untouched unless asked), the CLI round trip and its refusals, and
finetune's --refit-prior."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import factories
from transtok import finetune as ft
from transtok.calibration import PRIOR_SMOOTHING, apply_unigram_prior, mean_prediction, prior_rows
from transtok.cli import main
from transtok.errors import ConfigError
from transtok.extension import extend_tokenizer
from transtok.mapping import MappingConfig
from transtok.pipeline import calibrate, first_new_row, mapping_from_alignment, run_transplant, save_mapping_dir
from transtok.surgery import is_tied

pytestmark = pytest.mark.usefixtures("one_thread")
N_NEW = 30


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Cipher-language text (train.txt), its tokenizer, and tiny saved models speaking it: tied and untied
    llama (fp32), an untied qwen2 in bfloat16; each with a transtok/ folder and a model card."""
    root = tmp_path_factory.mktemp("calibrate")
    texts = [t for _, t in factories.cipher_corpus(400, seed=7)]
    tokenizer = factories.byte_level_tokenizer(texts, vocab_size=280)
    (root / "train.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    for name, arch, tie, dtype in (("tied", "llama", True, torch.float32), ("untied", "llama", False, torch.float32),
                                   ("bf16", "qwen2", False, torch.bfloat16)):
        model = factories.tiny_causal_lm(arch, len(tokenizer), tie, tokenizer)
        if not tie:
            torch.nn.init.normal_(model.get_output_embeddings().weight, std=0.05)
        model.to(dtype).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        (root / name / "transtok").mkdir()
        (root / name / "transtok" / "config.json").write_text('{"verb": "transfer", "mode": "replace"}')
        (root / name / "README.md").write_text("# a transferred model\n", encoding="utf-8")
    return root, tokenizer, texts


def _load(path) -> tuple[dict[str, torch.Tensor], object]:
    model = AutoModelForCausalLM.from_pretrained(path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, model


def _marginals(model, tokenizer, texts) -> tuple[torch.Tensor, torch.Tensor]:
    """The text's smoothed token frequencies f and the model's mean prediction q over it (float64)."""
    ids = tokenizer("\n".join(texts), add_special_tokens=False)["input_ids"]
    counts = torch.bincount(torch.tensor(ids), minlength=len(tokenizer))[:len(tokenizer)].double()
    f = (counts + PRIOR_SMOOTHING) / (counts.sum() + PRIOR_SMOOTHING * len(tokenizer))
    q, _, _ = mean_prediction(model.float(), tokenizer, texts, bf16=False)
    return f, q


def _kl(f: torch.Tensor, q: torch.Tensor) -> float:
    return float((f * (f.log() - q.log())).sum())


@pytest.mark.parametrize("name", ["tied", "untied"])
def test_calibrate_recovers_the_texts_marginal_and_moves_only_head_rows(world, tmp_path, name):
    root, tokenizer, texts = world
    out = calibrate(str(root / name), [str(root / "train.txt")], str(tmp_path / "out"), sample=len(texts))
    before, model_before = _load(root / name)
    after, model_after = _load(out)
    assert is_tied(model_before) == (name == "tied")
    assert not is_tied(model_after) and not model_after.config.tie_word_embeddings
    # Every tensor but the head is bit-identical (the input embeddings included); the head rows moved.
    head = "lm_head.weight"
    assert set(after) == set(before) | {head}
    assert all(torch.equal(before[k], after[k]) for k in before if k != head)
    old_head = before[head] if head in before else before["model.embed_tokens.weight"]
    assert not torch.equal(after[head], old_head)
    # The known marginal (the text's token frequencies) is recovered: KL(f || q) drops a lot, q moves to f.
    f, q_before = _marginals(model_before, tokenizer, texts)
    _, q_after = _marginals(model_after, tokenizer, texts)
    assert _kl(f, q_after) < 0.1 * _kl(f, q_before), (_kl(f, q_before), _kl(f, q_after))
    assert float((f - q_after).abs().sum()) < 0.25 * float((f - q_before).abs().sum())
    record = json.loads((out / "transtok" / "calibrate.json").read_text())
    assert record["untied"] == (name == "tied") and record["rows"] == "all"
    assert record["row_range"] == [0, len(tokenizer)] and record["strength"] == 1.0
    assert record["text"] == [str(root / "train.txt")] and record["texts_sampled"] == len(texts)
    assert record["source_vocab_size"] is None and record["bias_mean_abs"] > 0
    assert json.loads((out / "transtok" / "config.json").read_text())["verb"] == "transfer"  # input's kept
    card = (out / "README.md").read_text()
    assert card.startswith("# a transferred model") and "transtok calibrate" in card


def test_calibrate_saves_in_the_models_own_dtype(world, tmp_path):
    root, tokenizer, texts = world
    out = calibrate(str(root / "bf16"), [str(root / "train.txt")], str(tmp_path / "out"), sample=50)
    before, _ = _load(root / "bf16")
    after, model = _load(out)
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert json.loads((out / "transtok" / "calibrate.json").read_text())["dtype"] == "bfloat16"
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])


def test_rows_move_only_the_rows_asked_and_the_default_is_the_old_formula(world):
    """rows=slice(k, None) moves rows k.. exactly as the full application does and keeps rows ..k
    bit-identical; without rows the head is head + b vᵀ as before rows existed."""
    root, tokenizer, texts = world
    runs = {}
    for rows in (None, slice(100, None)):
        model = AutoModelForCausalLM.from_pretrained(root / "untied")
        head = model.get_output_embeddings().weight.detach().clone()
        prior = apply_unigram_prior(model, tokenizer, texts, sample=40, rows=rows)
        runs[rows is None] = (head, model.get_output_embeddings().weight.detach(), prior)
    head, full, prior = runs[True]
    expected = (head.double() + prior.bias[:, None] * prior.vector[None, :]).to(head.dtype)
    assert torch.equal(full, expected)
    _, part, _ = runs[False]
    assert torch.equal(part[:100], head[:100]) and torch.equal(part[100:], full[100:])
    with pytest.raises(ConfigError, match="contiguous"):
        prior_rows(slice(300, None), len(tokenizer))
    with pytest.raises(ConfigError, match="contiguous"):
        prior_rows(slice(0, None, 2), len(tokenizer))


# --- an extended model -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """A tiny tied llama over a source tokenizer, transplanted (streaming, as transfer writes it) to that
    tokenizer extended by N_NEW target tokens: untied head, transtok/mapping/ records the source size."""
    root = tmp_path_factory.mktemp("extended")
    pairs = factories.cipher_corpus(300, seed=11)
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=300)
    target, _ = extend_tokenizer([t for _, t in pairs], source, N_NEW)
    mapping, report = mapping_from_alignment(source, target, None, MappingConfig(init="fvt"))
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(root / "source")
    source.save_pretrained(root / "source")
    save_mapping_dir(root / "mapping", mapping, report, source, target)
    run_transplant(str(root / "source"), str(root / "mapping"), str(root / "model"))
    (root / "train.txt").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")
    return root, len(source), len(target)


@pytest.mark.parametrize("all_rows", [False, True])
def test_extended_model_keeps_its_source_rows_unless_asked(extended, tmp_path, all_rows):
    root, n, vocab = extended
    out = calibrate(str(root / "model"), [str(root / "train.txt")], str(tmp_path / "out"), sample=100,
                    rows="all" if all_rows else "auto")
    before, _ = _load(root / "model")
    after, _ = _load(out)
    assert all(torch.equal(before[k], after[k]) for k in before if k != "lm_head.weight")
    head, old = after["lm_head.weight"], before["lm_head.weight"]
    assert torch.equal(head[:n], old[:n]) != all_rows
    assert not torch.equal(head[n:vocab], old[n:vocab])
    record = json.loads((out / "transtok" / "calibrate.json").read_text())
    assert record["source_vocab_size"] == n and record["untied"] is False
    assert (record["rows"], record["row_range"]) == (("all", [0, vocab]) if all_rows else ("new", [n, vocab]))
    assert (out / "transtok" / "mapping" / "mapping.json").is_file()  # the transplant's provenance is kept


def test_first_new_row_reads_the_provenance(tmp_path, world):
    _, tokenizer, _ = world
    assert first_new_row(tmp_path, tokenizer) is None  # no transtok/: a plain model
    provenance = tmp_path / "transtok"
    provenance.mkdir()
    (provenance / "config.json").write_text('{"mode": "replace"}')
    assert first_new_row(tmp_path, tokenizer) is None
    (provenance / "config.json").write_text('{"mode": "extend"}')
    with pytest.raises(ConfigError, match="records no source vocabulary size.*`rows=all`"):
        first_new_row(tmp_path, tokenizer)
    (provenance / "extension.json").write_text('{"source_tokens": 250}')
    assert first_new_row(tmp_path, tokenizer) == 250
    (provenance / "extension.json").write_text(json.dumps({"source_tokens": len(tokenizer)}))
    with pytest.raises(ConfigError, match=f"start at {len(tokenizer)}.*`rows=all`"):
        first_new_row(tmp_path, tokenizer)
    (provenance / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read which rows"):
        first_new_row(tmp_path, tokenizer)


def test_new_rows_of_a_plain_model_are_refused(world, tmp_path):
    root, _, _ = world
    with pytest.raises(ConfigError, match="not an extended model"):
        calibrate(str(root / "untied"), [str(root / "train.txt")], str(tmp_path / "out"), rows="new")
    assert not (tmp_path / "out").exists()


# --- the command line --------------------------------------------------------------------------------------------
def test_cli_round_trip(world, tmp_path, capsys):
    root, tokenizer, texts = world
    code = main(["calibrate", "--model", str(root / "tied"), "--text", str(root / "train.txt"), "--strength", "0.5",
                 "--prior-samples", "60", "--output", str(tmp_path / "out"), "--device", "cpu", "--precision", "fp32"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 1, out
    assert out[0].startswith(f"unigram prior (strength 0.5) on {len(tokenizer):,} head rows: logits moved by ")
    assert out[0].endswith(f"; the tied head is now untied -> {tmp_path / 'out'}")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert not is_tied(model)
    record = json.loads((tmp_path / "out" / "transtok" / "calibrate.json").read_text())
    assert (record["strength"], record["sample"], record["texts_sampled"]) == (0.5, 60, 60)
    assert (record["device"], record["precision"]) == ("cpu", "fp32")
    # calibrating the calibrated model again keeps the first record
    assert main(["calibrate", "--model", str(tmp_path / "out"), "--text", str(root / "train.txt"),
                 "--prior-samples", "20", "--output", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "transtok" / "calibrate.json").read_text())
    assert again["previous"] == record and again["untied"] is False


@pytest.mark.parametrize("extra, words", [
    (["--strength", "nan"], ["--strength must be a finite number >= 0", "nan"]),
    (["--strength", "-1"], ["--strength must be a finite number >= 0", "-1"]),
    (["--strength", "0"], ["--strength 0 would leave the model as it is"]),
    (["--prior-samples", "0"], ["--prior-samples must be an integer >= 1", "got 0"]),
    (["--precision", "fp32", "--device", "tpu"], ["--device"]),
])
def test_cli_bad_values_are_one_line_and_leave_nothing(world, tmp_path, capsys, extra, words):
    root, _, _ = world
    code = main(["calibrate", "--model", str(root / "untied"), "--text", str(root / "train.txt"),
                 "--output", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("transtok calibrate: error: "), err
    assert all(w in err[0] for w in words), err
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_cli_a_dtype_that_is_not_one_is_a_malformed_command_line(world, tmp_path, capsys):
    root, _, _ = world
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--model", str(root / "untied"), "--text", str(root / "train.txt"),
              "--output", str(tmp_path / "out"), "--dtype", "float33"])
    err = capsys.readouterr().err.splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "argument --dtype: invalid choice: 'float33'" in err[0], err
    assert not list(tmp_path.iterdir())


def test_cli_missing_text_and_output_in_the_model_are_refused(world, tmp_path, capsys):
    root, _, _ = world
    model = str(root / "untied")
    cases = [(["--text", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "out")], "missing.txt"),
             (["--text", str(root / "train.txt"), "--output", model], "is the input"),
             (["--text", str(root / "train.txt"), "--output", str(root / "untied" / "calibrated")], "lies inside")]
    files = sorted(p.relative_to(root) for p in root.rglob("*"))
    for extra, word in cases:
        assert main(["calibrate", "--model", model, *extra]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("transtok calibrate: error: ") and word in err[0], err
    assert not (tmp_path / "out").exists()
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == files  # the model directory untouched


# --- finetune --refit-prior --------------------------------------------------------------------------------------
SEQ, BATCH = 32, 4


def _finetune(root: Path, model: str, out: str, **overrides) -> ft.FinetuneConfig:
    base = dict(model=str(root / model), train=[str(root / "train.txt")], output=str(root / out),
                max_tokens=SEQ * BATCH * 3, seq_len=SEQ, batch_size=BATCH, lr=1e-2, warmup=1, log_every=1,
                precision="fp32", save_every=0)
    base.update(overrides)
    return ft.FinetuneConfig(**base)


def test_finetune_refit_prior_changes_only_the_head_and_is_recorded(world):
    root, tokenizer, _ = world
    plain = ft.finetune(_finetune(root, "tied", "ft-plain"))
    refit = ft.finetune(_finetune(root, "tied", "ft-refit", refit_prior=1.0))
    a, tied_model = _load(plain.output)
    b, untied_model = _load(refit.output)
    assert is_tied(tied_model) and not is_tied(untied_model)
    assert [r.get("loss") for r in plain.history] == [r.get("loss") for r in refit.history]  # the same training
    assert set(b) == set(a) | {"lm_head.weight"}
    assert all(torch.equal(a[k], b[k]) for k in a if k != "lm_head.weight")
    assert not torch.equal(b["lm_head.weight"], a["model.embed_tokens.weight"])
    record = json.loads((Path(refit.output) / "transtok" / "finetune.json").read_text())
    assert record["config"]["refit_prior"] == 1.0
    r = record["refit_prior"]
    assert r["strength"] == 1.0 and r["untied"] is True and r["rows_from"] == 0 and r["bias_mean_abs"] > 0
    assert json.loads((Path(plain.output) / "transtok" / "finetune.json").read_text())["refit_prior"] is None


def test_finetune_refit_prior_of_an_extended_model_keeps_the_source_rows(extended):
    root, n, vocab = extended
    result = ft.finetune(_finetune(root, "model", "ft-new-rows", stage="new-rows", refit_prior=1.0))
    before, _ = _load(root / "model")
    after, _ = _load(result.output)
    for name in ("lm_head.weight", "model.embed_tokens.weight"):
        assert torch.equal(after[name][:n], before[name][:n]), name
    assert not torch.equal(after["lm_head.weight"][n:vocab], before["lm_head.weight"][n:vocab])
    record = json.loads((Path(result.output) / "transtok" / "finetune.json").read_text())["refit_prior"]
    assert record["rows_from"] == n and record["untied"] is False


def test_finetune_refit_prior_bad_values(world, tmp_path, capsys):
    root, _, _ = world
    for bad in (float("nan"), -0.5):
        with pytest.raises(ConfigError, match="`refit_prior` must be a finite number >= 0"):
            _finetune(root, "tied", "never", refit_prior=bad)
    with pytest.raises(ConfigError, match="`merge=False`"):
        _finetune(root, "tied", "never", refit_prior=1.0, stage="lora", merge=False)
    code = main(["finetune", "--model", str(root / "tied"), "--text", str(root / "train.txt"),
                 "--output", str(tmp_path / "o"), "--refit-prior", "inf"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "--refit-prior must be a finite number >= 0" in err[0], err


def test_all_rows_needs_no_readable_provenance(extended, tmp_path):
    import shutil

    root, n, vocab = extended
    broken = tmp_path / "broken"
    shutil.copytree(root / "model", broken)
    (broken / "transtok" / "mapping" / "mapping.json").write_text('{"keeps_source_rows": true, "shape": "?"}')
    with pytest.raises(ConfigError, match="cannot read which rows .* pass `rows=all`"):
        calibrate(str(broken), [str(root / "train.txt")], str(tmp_path / "auto"), sample=100)
    assert not (tmp_path / "auto").exists()
    out = calibrate(str(broken), [str(root / "train.txt")], str(tmp_path / "all"), sample=100, rows="all")
    record = json.loads((out / "transtok" / "calibrate.json").read_text())
    assert record["rows"] == "all" and record["source_vocab_size"] is None
