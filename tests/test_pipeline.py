"""End to end through the CLI on a tiny model: transfer, align → map → transplant, and bad input."""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import factories
from commandline import run
from transtok.cli import VERBS, build_parser
from transtok.mapping import TokenMapping


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    pairs = factories.cipher_corpus(600)
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (root / "target.txt").write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    source_tokenizer = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=400)
    model = factories.tiny_causal_lm("llama", len(source_tokenizer), False, source_tokenizer)
    model.save_pretrained(root / "source")
    source_tokenizer.save_pretrained(root / "source")
    return root


@pytest.fixture(scope="module")
def transferred(workspace):
    """``transfer`` with the defaults (the unigram prior at strength 1): the checkpoint directory."""
    out = workspace / "transfer"
    assert run("transfer", "--model", workspace / "source", "--parallel", workspace / "pairs.tsv",
               "--text", workspace / "target.txt", "--vocab-size", 350, "--aligner", "fast_align",
               "--output", out) == 0
    return out


@pytest.fixture(scope="module")
def transferred_without_prior(workspace, transferred):
    """The same transfer (its tokenizer given) with ``--unigram-prior 0``."""
    out = workspace / "transfer-no-prior"
    assert run("transfer", "--model", workspace / "source", "--parallel", workspace / "pairs.tsv",
               "--target-tokenizer", transferred, "--aligner", "fast_align", "--unigram-prior", 0,
               "--output", out) == 0
    return out


@pytest.fixture(scope="module")
def aligned(workspace, transferred):
    """``align`` with the transfer's tokenizer: the alignment directory."""
    out = workspace / "al"
    assert run("align", "--model", workspace / "source", "--target-tokenizer", transferred,
               "--parallel", workspace / "pairs.tsv", "--aligner", "fast_align", "--output", out) == 0
    return out


@pytest.fixture(scope="module")
def mapped(workspace, aligned):
    """``map`` of that alignment: the mapping directory."""
    out = workspace / "m1"
    assert run("map", "--alignment", aligned, "--output", out) == 0
    return out


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for verb in ("train-tokenizer", "align", "map", "transplant", "transfer", "evaluate", "assets"):
        assert f"    {verb}" in text
    assert len(VERBS) >= 6


def test_transfer_writes_a_vanilla_checkpoint_with_provenance(workspace, transferred):
    out = transferred
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == model.config.vocab_size
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    for name in ("README.md", "transtok/config.json", "transtok/mapping_report.json", "transtok/mapping/mapping.tsv",
                 "transtok/mapping/mapping.safetensors", "transtok/alignment/counts.safetensors"):
        assert (out / name).is_file(), name
    report = json.loads((out / "transtok/mapping_report.json").read_text())
    assert sum(report["provenance"].values()) == len(tokenizer)
    # A replaced vocabulary gets the unigram prior of the head by default (strength 1, chosen on dev).
    assert json.loads((out / "transtok/config.json").read_text())["unigram_prior"] == 1.0
    assert json.loads((out / "transtok/unigram_prior.json").read_text())["strength"] == 1.0
    assert "unigram prior of the LM head | strength 1" in (out / "README.md").read_text()
    assert report["provenance"]["aligned"] > 50  # most of the 256 byte tokens never occur; words do
    assert not [p for p in workspace.iterdir() if ".partial-" in p.name]


def test_transfer_without_vocab_size_takes_the_source_size_capped_by_the_text(workspace, tmp_path, caplog):
    import logging

    # 400 source tokens; 4 short lines support far fewer merges: no error, no "trained only" warning.
    (tmp_path / "few.txt").write_text("".join(f"{t}\n" for _, t in factories.cipher_corpus(4)), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="transtok"):
        assert run("-q", "transfer", "--model", workspace / "source", "--parallel", workspace / "pairs.tsv",
                   "--text", tmp_path / "few.txt", "--aligner", "fast_align", "--unigram-prior", 0,
                   "--output", tmp_path / "out") == 0
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out/transtok/config.json").read_text())
    assert saved["vocab_size"] == len(tokenizer) < 400 and saved["vocab_size_asked"] is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "trained only" in r.getMessage()]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("target vocabulary: ")]
    assert said == [f"target vocabulary: {len(tokenizer):,} tokens (the source model's size, 400; the text supports "
                    "no more merges)"]


def test_transfer_from_a_gemma_like_source_leaves_out_its_reserved_tokens(workspace, tmp_path, capsys):
    """Gemma's <unusedN> specials are left out of the trained vocabulary; roles and chat-template tokens
    keep their source rows, and the model's table is exactly the tokenizer."""
    pairs = factories.cipher_corpus(600)
    source_tokenizer = factories.gemma_like_tokenizer([s for s, _ in pairs], vocab_size=300, unused=300)
    source_model = factories.tiny_causal_lm("llama", len(source_tokenizer), False, source_tokenizer)
    source_model.save_pretrained(tmp_path / "gemma")
    source_tokenizer.save_pretrained(tmp_path / "gemma")
    common = ["transfer", "--model", tmp_path / "gemma", "--parallel", workspace / "pairs.tsv",
              "--aligner", "fast_align"]
    assert run(*common, "--text", workspace / "target.txt", "--vocab-size", 550,
               "--output", tmp_path / "out") == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == model.config.vocab_size == 550
    assert not [token for token in tokenizer.get_vocab() if token.startswith("<unused")]
    assert (model.config.bos_token_id, model.config.eos_token_id) == (tokenizer.bos_token_id, tokenizer.eos_token_id)
    source_rows, rows = source_model.get_input_embeddings().weight, model.get_input_embeddings().weight
    for token in ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<image_soft_token>", "[multimodal]"):
        assert torch.equal(rows[tokenizer.convert_tokens_to_ids(token)],
                           source_rows[source_tokenizer.convert_tokens_to_ids(token)]), token
    report = json.loads((tmp_path / "out/transtok/mapping_report.json").read_text())
    assert sum(report["provenance"].values()) == 550
    # Only a tokenizer trained here has reserved tokens to keep.
    capsys.readouterr()
    assert run(*common, "--target-tokenizer", tmp_path / "out", "--keep-reserved-tokens",
               "--output", tmp_path / "never") == 2
    assert "--keep-reserved-tokens applies to a tokenizer trained on --text" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_transfer_warns_below_the_corpus_size_that_beat_the_source_model(workspace, tmp_path, caplog):
    import logging

    from transtok.pipeline import ENOUGH_PAIRS

    with caplog.at_level(logging.WARNING, logger="transtok"):
        assert run("-q", "transfer", "--model", workspace / "source", "--parallel", workspace / "pairs.tsv",
                   "--text", workspace / "target.txt", "--vocab-size", 350, "--aligner", "fast_align",
                   "--unigram-prior", 0, "--output", tmp_path / "out") == 0
    said = [r.getMessage() for r in caplog.records if "pairs after cleaning" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("the parallel corpus has 600 pairs after cleaning; with fewer than "
                                                  f"{ENOUGH_PAIRS:,}, an untrained transfer read held-out text worse")


def test_transfer_unigram_prior_moves_only_the_head_and_records_it(workspace, transferred,
                                                                  transferred_without_prior):
    prior, plain = transferred, transferred_without_prior
    a, b = AutoModelForCausalLM.from_pretrained(plain), AutoModelForCausalLM.from_pretrained(prior)
    assert torch.equal(a.get_input_embeddings().weight, b.get_input_embeddings().weight)
    assert not torch.equal(a.get_output_embeddings().weight, b.get_output_embeddings().weight)
    record = json.loads((prior / "transtok/unigram_prior.json").read_text())
    assert record["strength"] == 1.0 and record["positions"] > 0
    assert json.loads((plain / "transtok/config.json").read_text())["unigram_prior"] == 0.0
    assert not (plain / "transtok/unigram_prior.json").exists()
    # Bad strengths and the wrong mode are one-line errors, exit 2, nothing written.
    for extra in (["--unigram-prior", -1], ["--unigram-prior", "nan"], ["--mode", "extend", "--new-tokens", 20,
                                                                        "--unigram-prior", 0.5]):
        out = workspace / "prior-bad"
        args = ["transfer", "--model", workspace / "source", "--parallel", workspace / "pairs.tsv",
                "--aligner", "fast_align", "--output", out, *extra]
        if "--mode" not in extra:
            args += ["--target-tokenizer", plain]
        assert run(*args) == 2 and not out.exists()
    # A --target-tokenizer that extends the source is caught too (replace mode would detect and keep the rows).
    from transtok.extension import extend_tokenizer

    source = AutoTokenizer.from_pretrained(workspace / "source")
    extended, _ = extend_tokenizer([line.split("\t")[1] for line in (workspace / "pairs.tsv").read_text().splitlines()],
                                   source, 20)
    extended.save_pretrained(workspace / "extended-tokenizer")
    out = workspace / "prior-extended"
    assert run("transfer", "--model", workspace / "source", "--parallel", workspace / "pairs.tsv",
               "--target-tokenizer", workspace / "extended-tokenizer", "--aligner", "fast_align",
               "--unigram-prior", 1, "--output", out) == 2 and not out.exists()


WRITTEN = ("model.safetensors", "tokenizer.json", "mapping.safetensors", "mapping.json", "mapping.tsv",
           "mapping_report.json", "counts.safetensors")


def written(directory, names=WRITTEN) -> dict[str, bytes]:
    """The bytes of the weight, tokenizer, mapping and alignment files under ``directory``, by relative path."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.name in names}


def test_step_by_step_equals_transfer_byte_for_byte_and_is_deterministic(workspace):
    """transfer and align → map → transplant run the same steps (transtok.steps) and write the same
    provenance: on one corpus and target tokenizer (fast_align is deterministic EM) they write the same
    bytes (alignment counts, mapping files, weights, tokenizer), whether transplant loads the model for
    the unigram prior (--parallel) or edits the checkpoint (no prior)."""
    own = workspace / "byte-identity"  # apart from the module fixtures' outputs
    own.mkdir()
    tokenizer = own / "target-tokenizer"
    factories.byte_level_tokenizer([t for _, t in factories.cipher_corpus(600)], vocab_size=350).save_pretrained(
        tokenizer)
    corpus = ["--model", workspace / "source", "--parallel", workspace / "pairs.tsv"]
    for name, extra in (("whole", []), ("whole-no-prior", ["--unigram-prior", 0])):
        assert run("transfer", *corpus, "--target-tokenizer", tokenizer, "--aligner", "fast_align", *extra,
                   "--output", own / name) == 0
    assert run("align", *corpus, "--target-tokenizer", tokenizer, "--aligner", "fast_align",
               "--output", own / "al") == 0
    for name in ("m1", "m2"):
        assert run("map", "--alignment", own / "al", "--output", own / name) == 0
    assert written(own / "m1") == written(own / "m2")
    # transfer's provenance: the same counts, and the mapping directory 'map' writes
    assert (own / "whole/transtok/alignment/counts.safetensors").read_bytes() == \
        (own / "al/counts.safetensors").read_bytes()
    assert written(own / "whole/transtok/mapping") == written(own / "m1")
    # With the training corpus, transplant gives the head transfer's default unigram prior (in memory);
    # without it, none (the checkpoint is edited without loading the model).
    assert run("transplant", "--model", workspace / "source", "--mapping", own / "m1",
               "--parallel", workspace / "pairs.tsv", "--output", own / "model") == 0
    assert run("transplant", "--model", workspace / "source", "--mapping", own / "m1",
               "--output", own / "model-no-prior") == 0
    for steps, whole in (("model", "whole"), ("model-no-prior", "whole-no-prior")):
        expected = {k: v for k, v in written(own / whole).items() if not k.startswith("transtok/alignment/")}
        got = written(own / steps)
        assert sorted(got) == sorted(expected) and all(got[k] == expected[k] for k in expected), steps
    # One provenance schema: the verb, and the same resolved settings where the verbs share them.
    saved = {name: json.loads((own / name / "transtok/config.json").read_text())
             for name in ("model", "whole", "model-no-prior", "whole-no-prior")}
    assert [saved[name]["verb"] for name in saved] == ["transplant", "transfer"] * 2
    shared = ("source_model", "dtype", "mapping", "new_token_offset", "offset_pairs", "unigram_prior", "device",
              "precision", "source_vocab_hash", "target_vocab_hash", "transtok_version")
    for steps, whole in (("model", "whole"), ("model-no-prior", "whole-no-prior")):
        assert {k: saved[steps][k] for k in shared} == {k: saved[whole][k] for k in shared}
    assert saved["model"]["parallel"] == saved["whole"]["parallel"] and saved["model-no-prior"]["parallel"] is None
    assert saved["model"]["unigram_prior"] == 1.0 and saved["model-no-prior"]["unigram_prior"] == 0.0
    assert (own / "model/transtok/unigram_prior.json").read_bytes() == \
        (own / "whole/transtok/unigram_prior.json").read_bytes()
    # An explicit prior without the text it counts is a one-line error.
    assert run("transplant", "--model", workspace / "source", "--mapping", own / "m1",
               "--unigram-prior", 1, "--output", own / "model-bad") == 2
    assert not (own / "model-bad").exists()


def test_give_vocabulary_refuses_an_offset_or_prior_without_its_text_before_any_work():
    from transtok.errors import ConfigError
    from transtok.steps import give_vocabulary

    # model None: the refusal comes before the transplant touches anything
    with pytest.raises(ConfigError, match="offset of 1 is computed on parallel text: give offset_corpus"):
        give_vocabulary(None, None, None, offset=1.0)
    with pytest.raises(ConfigError, match="prior of strength 0.5 counts target-language tokens: give prior_texts"):
        give_vocabulary(None, None, None, prior=0.5)


def test_existing_output_is_refused_without_overwrite(workspace, capsys):
    (workspace / "taken").mkdir()
    (workspace / "taken" / "keep.txt").write_text("x")
    code = run("map", "--model", workspace / "source", "--target-tokenizer", workspace / "source",
               "--init", "fvt", "--output", workspace / "taken")
    assert code == 2
    assert "exists and is not empty; choose another path or pass --overwrite" in capsys.readouterr().err
    assert (workspace / "taken" / "keep.txt").read_text() == "x"


def test_bad_corpus_fails_cleanly_and_leaves_nothing(workspace, capsys):
    bad = workspace / "bad.tsv"
    bad.write_text("a sentence without a tab\n", encoding="utf-8")
    code = run("align", "--model", workspace / "source", "--target-tokenizer", workspace / "source",
               "--parallel", bad, "--output", workspace / "never")
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.tsv:1: expected 'source<TAB>target'" in err
    assert not (workspace / "never").exists()


def test_mapping_for_another_model_is_refused(workspace, capsys):
    other = workspace / "other"
    tok = factories.byte_level_tokenizer([t for _, t in factories.cipher_corpus(300)], vocab_size=300)
    factories.tiny_causal_lm("gpt2", len(tok), True, tok).save_pretrained(other)
    tok.save_pretrained(other)
    assert run("map", "--model", workspace / "source", "--target-tokenizer", other, "--init", "mean",
               "--output", workspace / "m_mean") == 0
    code = run("transplant", "--model", other, "--mapping", workspace / "m_mean", "--output", workspace / "x")
    assert code == 2
    assert "build the mapping with this model's tokenizer" in capsys.readouterr().err
    assert not (workspace / "x").exists()
    assert TokenMapping.load(workspace / "m_mean").residual.max() == 1.0


def test_multi_source_mapping_is_the_weighted_average(workspace, transferred, aligned, mapped):
    tokenizer_dir = transferred
    # A second "source language": the same target side paired with reversed English sentences.
    pairs = factories.cipher_corpus(600)
    (workspace / "pairs2.tsv").write_text("".join(f"{' '.join(s.split()[::-1])}\t{t}\n" for s, t in pairs))
    assert run("align", "--model", workspace / "source", "--target-tokenizer", tokenizer_dir,
               "--parallel", workspace / "pairs2.tsv", "--aligner", "fast_align", "--output", workspace / "al2") == 0
    assert run("map", "--alignment", workspace / "al2", "--output", workspace / "m_second") == 0
    assert run("map", "--alignment", aligned, workspace / "al2", "--alignment-weights", 3, 1,
               "--output", workspace / "m_both") == 0
    first, second = TokenMapping.load(mapped), TokenMapping.load(workspace / "m_second")
    both = TokenMapping.load(workspace / "m_both")
    source = torch.randn(first.shape[1], 8)
    torch.testing.assert_close(both.apply(source), 0.75 * first.apply(source) + 0.25 * second.apply(source))
    assert run("map", "--alignment", aligned, workspace / "al2", "--alignment-weights", 1,
               "--output", workspace / "m_bad") == 2


def test_align_segments_unspaced_text_as_asked(workspace, capsys):
    pairs = factories.cipher_corpus(300, cipher=factories.CHINESE, separator="")
    (workspace / "zh.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    chinese = factories.byte_level_tokenizer([t for _, t in pairs], vocab_size=400)
    chinese.save_pretrained(workspace / "zh-tokenizer")
    units = {}
    for segmenter in ("none", "tokens"):
        out = workspace / f"al-zh-{segmenter}"
        assert run("align", "--model", workspace / "source", "--target-tokenizer", workspace / "zh-tokenizer",
                   "--parallel", workspace / "zh.tsv", "--aligner", "fast_align", "--segmenter", segmenter,
                   "--output", out) == 0
        stats = json.loads((out / "alignment.json").read_text())["stats"]
        assert stats["segmenter"] == segmenter
        units[segmenter] = stats["target_units"]
    assert units["tokens"] > 3 * units["none"]
    with pytest.raises(SystemExit) as exit_info:
        run("align", "--model", workspace / "source", "--target-tokenizer", workspace / "zh-tokenizer",
            "--parallel", workspace / "zh.tsv", "--segmenter", "mecab", "--output", workspace / "never")
    assert exit_info.value.code == 2
    assert "invalid choice: 'mecab'" in capsys.readouterr().err


def test_readme_python_example_runs_as_written(workspace, monkeypatch):
    """The README's 'Python API' block as written, with the bundled model and Bible swapped for the tiny model
    and corpus (the block itself names no hub id and no file of its own, so it runs offline)."""
    import re
    from pathlib import Path
    from types import SimpleNamespace

    import transtok.assets
    from transtok.corpus import read_parallel

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## Python API\n.*?```python\n(.*?)```", readme, flags=re.S).group(1)
    assert "smollm2_checkpoint()" in code and 'parallel_bible("en", "es")' in code and "HuggingFaceTB" not in code
    monkeypatch.setattr(transtok.assets, "smollm2_checkpoint", lambda: workspace / "source")
    monkeypatch.setattr(transtok.assets, "parallel_bible",
                        lambda source, target: SimpleNamespace(train=read_parallel(workspace / "pairs.tsv")))
    monkeypatch.chdir(workspace)
    exec(compile(code, "README.md", "exec"), {})
    model = AutoModelForCausalLM.from_pretrained(workspace / "smollm2-es")
    assert model.get_input_embeddings().weight.shape[0] == len(AutoTokenizer.from_pretrained(workspace / "smollm2-es"))


def test_map_of_a_folder_that_is_no_alignment_names_it(workspace, capsys):
    (workspace / "not-aligned").mkdir()
    for given in (workspace / "not-aligned", workspace / "missing"):
        assert run("map", "--alignment", given, "--output", workspace / "never-mapped") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"--alignment '{given}' is not an alignment directory" in err, err
    assert not (workspace / "never-mapped").exists()
