"""The init-methods benchmark's code path on a tiny model with a budget of a few steps."""
import json

import pytest

import factories
from transtok.corpus import ParallelCorpus

pytest.importorskip("matplotlib")


def load_benchmark():
    return factories.benchmark("init_methods")


class Split:
    def __init__(self, pairs):
        self.train = ParallelCorpus([s for s, _ in pairs[:500]], [t for _, t in pairs[:500]])
        self.test = ParallelCorpus([s for s, _ in pairs[500:]], [t for _, t in pairs[500:]])


@pytest.mark.slow
def test_init_methods_benchmark_runs_on_a_tiny_model(tmp_path):
    bench = load_benchmark()
    split = tiny_setup(tmp_path, bench)
    args = bench.parse_args(["--langs", "xx", "--vocab-size", "300", "--aligner", "fast_align", "--budget", "1024",
                             "--seq-len", "32", "--batch-size", "4", "--eval-every", "4", "--warmup", "1",
                             "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                             "--methods", "trans-tokenization", "fvt", "mean", "random"])
    record = bench.run_language("xx", args, tmp_path / "source", split)
    record["steps"]["total"] = {"seconds": 0.1}  # as main() adds it: time only
    table = bench.write_outputs([record], args)
    methods = record["methods"]
    assert set(methods) == {"source (own tokenizer)", "trans-tokenization", "fvt", "mean", "random"}
    for entry in methods.values():
        assert entry["init"] > 0 and entry["final"] > 0 and len(entry["curve"]) >= 2
    assert {"align", "train_tokenizer", "map_fvt", "transplant_random"} <= set(record["steps"])
    assert "| trans-tokenization |" in table
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["results"][0]["lang"] == "xx"
    assert (tmp_path / "out" / "curve.png").stat().st_size > 1000
    # --rewrite rebuilds the table and the plot from results.json alone.
    (tmp_path / "out" / "results.md").unlink()
    (tmp_path / "out" / "curve.png").unlink()
    import sys
    argv, sys.argv = sys.argv, ["init_methods.py", "--rewrite", "--out", str(tmp_path / "out")]
    try:
        bench.main()
    finally:
        sys.argv = argv
    assert (tmp_path / "out" / "results.md").read_text() == table + "\n"
    assert (tmp_path / "out" / "curve.png").stat().st_size > 1000


def tiny_setup(tmp_path, bench):
    pairs = factories.cipher_corpus(560)
    split = Split(pairs)
    split.dev = ParallelCorpus([s for s, _ in pairs[500:530]], [t for _, t in pairs[500:530]])
    source = factories.byte_level_tokenizer(split.train.source, vocab_size=350)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(tmp_path / "source")
    source.save_pretrained(tmp_path / "source")
    data = tmp_path / "work" / "xx" / "data"
    data.mkdir(parents=True)
    (data / "train.txt").write_text("\n".join(split.train.target) + "\n")
    (data / "test.txt").write_text("\n".join(split.test.target) + "\n")
    (data / "dev.txt").write_text("\n".join(split.dev.target) + "\n")
    return split


@pytest.mark.slow
def test_equal_data_trains_the_source_on_the_bytes_of_the_new_tokenizers_budget(tmp_path):
    bench = load_benchmark()
    split = tiny_setup(tmp_path, bench)
    common = ["--langs", "xx", "--vocab-size", "300", "--aligner", "fast_align", "--seq-len", "16",
              "--batch-size", "2", "--eval-every", "1000", "--warmup", "1", "--eval-seq-len", "40", "--stride", "10",
              "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--methods", "trans-tokenization"]
    args = bench.parse_args(common + ["--budget", "96", "--equal-data", "--extra-strides", "40", "20"])
    record = bench.run_language("xx", args, tmp_path / "source", split)
    methods = record["methods"]
    rates = record["train_bytes_per_token"]
    assert rates["source"] < rates["target"], "the new tokenizer packs more bytes into a token"
    tt, source, source_bytes = (methods["trans-tokenization"], methods["source (own tokenizer)"],
                                methods["source (own tokenizer), equal bytes"])
    assert tt["tokens_trained"] == source["tokens_trained"] == 96  # equal compute
    per_step = 16 * 2 * rates["source"]
    assert abs(source_bytes["bytes_trained"] - tt["bytes_trained"]) <= per_step / 2 + 1  # equal data, whole steps
    assert source_bytes["tokens_trained"] > 96 and source_bytes["init"] == source["init"]
    for entry in (tt, source):
        assert [p[0] for p in entry["curve"]] == [0, entry["tokens_trained"]]  # init and end only
        assert set(entry["init_by_stride"]) == {"10", "20", "40"}
        assert entry["init_by_stride"]["10"] == entry["init"] and "stride:10" in entry["signature"]
    bench.write_outputs([record], args)
    first = json.loads((tmp_path / "out" / "results.json").read_text())
    # --budget-bytes gives every method the same bytes: whole steps of each tokenizer; --init-from reuses
    # the init figures of the same models.
    args = bench.parse_args(common + ["--budget", "0", "--budget-bytes", str(tt["bytes_trained"]), "--init-from",
                                      str(tmp_path / "out" / "results.json")])
    record = bench.run_language("xx", args, tmp_path / "source", split)
    by_bytes = record["methods"]
    assert by_bytes["trans-tokenization"]["tokens_trained"] == 96
    assert by_bytes["source (own tokenizer)"]["tokens_trained"] == source_bytes["tokens_trained"]
    assert "align" not in record["steps"], "the second run reuses the cached tokenizer and alignment"
    assert by_bytes["trans-tokenization"]["init"] == tt["init"]

    table = bench.write_outputs([record], args)
    assert "equal data" in table and "| trans-tokenization |" in table

    # benchmarks/tables.py regenerates the README's tables from results directories like these.
    tables = factories.benchmark("tables")
    for name in ("init_xx", "after_xx_seed0", "after_xx_seed1"):
        (tmp_path / "results" / name).mkdir(parents=True)
        (tmp_path / "results" / name / "results.json").write_text(json.dumps(first))
    tables.RESULTS = tmp_path / "results"
    init = tables.init_table(tables.load("init_??/results.json"))
    assert init[-1].startswith("| xx (xx) | 300 |") and f"{tt['init']:.3f}" in init[-1]
    protocol = tables.protocol_table(tables.load("init_??/results.json"))
    assert any("gap (source − trans-tokenization)" in line for line in protocol) and "block (512)" not in protocol[0]
    after = tables.after_table(tables.load("after_*_seed*/results.json"))
    assert after[-1].startswith("| xx | 300 | 0, 0 |") and " ± 0.000" in after[-1]
    with_prior = json.loads(json.dumps(first))
    with_prior["args"]["unigram_prior"] = 1.0
    with_prior["results"][0]["methods"]["trans-tokenization"]["init"] = 0.123
    (tmp_path / "results" / "init_prior_xx").mkdir()
    (tmp_path / "results" / "init_prior_xx" / "results.json").write_text(json.dumps(with_prior))
    blocks = tables.sections()
    source = first['results'][0]['methods']['source (own tokenizer)']['init']
    assert blocks["prior"][-2] == f"| xx | {source:.3f} | - | {tt['init']:.3f} | 0.123 | - | - |"
    assert "strength 1 " in blocks["prior"][0]
    # The README's headline: the source model, trans-tokenization and the prior, the best in bold.
    assert blocks["headline"][-2] == f"| xx | {source:.3f} | {tt['init']:.3f} | **0.123** |"
    # The source model given the same prior (refit_prior.py --split test) is a column of both once it exists.
    (tmp_path / "results" / "source_prior_xx").mkdir()
    (tmp_path / "results" / "source_prior_xx" / "refit.json").write_text(json.dumps({"rows": [
        {"model": "source model, own tokenizer, untrained", "split": "test", "bpb": source, "bpb_refit": 0.1}]}))
    blocks = tables.sections()
    assert blocks["prior"][-2] == f"| xx | {source:.3f} | 0.100 | {tt['init']:.3f} | 0.123 | - | - |"
    assert blocks["headline"][-2] == f"| xx | {source:.3f} | **0.100** | {tt['init']:.3f} | 0.123 |"
    # An after-budget run with the prior (prior_after_<lang>_seed<k>) is a column of the after table, with its
    # seeds named where they differ from the row's; without one the column is absent.
    assert "unigram prior" not in "".join(line for line in blocks["tables"] if line.startswith("| language"))
    with_prior["results"][0]["methods"]["trans-tokenization"]["final"] = 0.456
    (tmp_path / "results" / "prior_after_xx_seed1").mkdir()
    (tmp_path / "results" / "prior_after_xx_seed1" / "results.json").write_text(json.dumps(with_prior))
    after = [line for line in tables.sections()["tables"] if line.startswith("| xx |")][-1].split(" | ")
    header = next(line for line in tables.sections()["tables"] if "source model, equal tokens" in line).split(" | ")
    assert after[header.index("trans-tokenization + unigram prior")] == "0.456 (seed 0)"
    assert after[header.index("**trans-tokenization**")] == mean_std_of(first, "trans-tokenization")


def mean_std_of(saved: dict, method: str) -> str:
    """The after table's cell of several copies of one run: its final figure ± 0."""
    return f"{saved['results'][0]['methods'][method]['final']:.3f} ± 0.000"


@pytest.mark.slow
def test_reuse_trained_reads_back_finished_trainings_with_the_same_settings(tmp_path, monkeypatch):
    import transtok.finetune

    bench = load_benchmark()
    split = tiny_setup(tmp_path, bench)
    common = ["--langs", "xx", "--vocab-size", "300", "--aligner", "fast_align", "--seq-len", "16", "--batch-size",
              "2", "--eval-every", "1000", "--warmup", "1", "--eval-seq-len", "40", "--stride", "20", "--budget", "64",
              "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--methods", "trans-tokenization"]
    first = bench.run_language("xx", bench.parse_args(common), tmp_path / "source", split)["methods"]
    calls = []
    real = transtok.finetune.finetune

    def counted(config):
        calls.append(config.output)
        return real(config)

    monkeypatch.setattr(transtok.finetune, "finetune", counted)
    again = bench.run_language("xx", bench.parse_args(common + ["--reuse-trained"]), tmp_path / "source",
                               split)["methods"]
    assert calls == []
    for name in ("source (own tokenizer)", "trans-tokenization"):
        assert again[name]["curve"] == first[name]["curve"] and again[name]["final"] == first[name]["final"]
    # Another seed is another training; without the flag nothing is read back.
    bench.run_language("xx", bench.parse_args(common + ["--reuse-trained", "--seed", "1"]), tmp_path / "source", split)
    assert len(calls) == 2
    bench.run_language("xx", bench.parse_args(common), tmp_path / "source", split)
    assert len(calls) == 4


def test_trained_from_adds_equal_bytes_without_mapping_or_training_again(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import transtok.finetune

    bench = load_benchmark()
    split = tiny_setup(tmp_path, bench)
    common = ["--langs", "xx", "--vocab-size", "300", "--aligner", "fast_align", "--seq-len", "16", "--batch-size",
              "2", "--eval-every", "1000", "--warmup", "1", "--eval-seq-len", "40", "--stride", "20", "--budget", "64",
              "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--methods", "trans-tokenization"]
    args = bench.parse_args(common)
    first = bench.run_language("xx", args, tmp_path / "source", split)
    bench.write_outputs([first], args)
    # A fresh machine: the trained models and the alignment are gone, the tokenizer is trained again.
    for path in (tmp_path / "work" / "xx").iterdir():
        if path.name != "data":
            shutil.rmtree(path)
    calls = []
    real = transtok.finetune.finetune

    def counted(config):
        calls.append(Path(config.output).name)
        return real(config)

    monkeypatch.setattr(transtok.finetune, "finetune", counted)
    saved = str(tmp_path / "out" / "results.json")
    again = bench.run_language("xx", bench.parse_args(common + ["--equal-data", "--trained-from", saved]),
                               tmp_path / "source", split)
    assert calls == ["trained-source-bytes"], "only the new comparison trains"
    assert "align" not in again["steps"] and again["alignment"] == first["alignment"]
    for name in ("source (own tokenizer)", "trans-tokenization"):
        assert again["methods"][name] == json.loads(json.dumps(first["methods"][name]))
    by_bytes = again["methods"]["source (own tokenizer), equal bytes"]
    assert by_bytes["tokens_trained"] > first["methods"]["source (own tokenizer)"]["tokens_trained"]
    # A run with other training settings is not reused: the error names the setting.
    with pytest.raises(SystemExit, match="seed=0, here 1"):
        bench.run_language("xx", bench.parse_args(common + ["--seed", "1", "--trained-from", saved]),
                           tmp_path / "source", split)


def test_eval_split_dev_scores_and_trains_against_the_dev_books(tmp_path):
    from transtok.evaluate import evaluate_perplexity
    from transtok.loading import load_model

    bench = load_benchmark()
    split = tiny_setup(tmp_path, bench)
    args = bench.parse_args(["--langs", "xx", "--vocab-size", "300", "--aligner", "fast_align", "--seq-len", "16",
                             "--batch-size", "2", "--eval-every", "1", "--warmup", "1", "--eval-seq-len", "40",
                             "--stride", "20", "--budget", "32", "--eval-split", "dev", "--join", "eos",
                             "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                             "--methods", "trans-tokenization", "--train-methods", "trans-tokenization"])
    record = bench.run_language("xx", args, tmp_path / "source", split)
    model, tokenizer = load_model(str(tmp_path / "source"))
    dev = evaluate_perplexity(model, tokenizer, split.dev.target, seq_len=40, stride=20)
    test = evaluate_perplexity(model, tokenizer, split.test.target, seq_len=40, stride=20)
    source = record["methods"]["source (own tokenizer)"]
    assert source["init"] == dev.bits_per_byte != test.bits_per_byte and record["eval_split"] == "dev"
    # The training curve is scored on the dev books too: its first trained point is a dev figure.
    trained = json.loads((tmp_path / "work" / "xx" / "trained-trans-tokenization" / "transtok" /
                          "finetune.json").read_text())
    assert trained["config"]["eval"][0].endswith("dev.txt") and trained["config"]["join"] == "eos"
    assert "dev books" in bench.write_outputs([record], args) and "joined by eos" in (tmp_path / "out" /
                                                                                         "results.md").read_text()


def test_word_losses_charge_every_token_to_a_word_and_add_up_to_the_perplexity(tmp_path):
    import math

    from transtok.evaluate import evaluate_perplexity
    from transtok.loading import load_model

    words = factories.benchmark("word_losses")
    assert words.word_index("  ab c\n de  ") == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2]
    bench = load_benchmark()
    split = tiny_setup(tmp_path, bench)
    model, tokenizer = load_model(str(tmp_path / "source"))
    text = "\n".join(split.dev.target)
    ids, offsets, nats = words.token_losses(model, tokenizer, text, seq_len=40, stride=10)
    expected = evaluate_perplexity(model, tokenizer, split.dev.target, seq_len=40, stride=10)
    assert len(ids) == expected.tokens and not any(math.isnan(n) for n in nats)
    bits = words.word_bits(text, offsets, nats)
    assert len(bits) == len(words.words_of(text)) == len(text.split())
    assert math.isclose(sum(bits), expected.nll_bits, rel_tol=1e-4)
    assert "".join(words.words_of(text)) == text


def test_unigram_prior_and_untied_head_apply_to_every_mapped_method_and_are_not_reused_across_strengths(tmp_path):
    bench = load_benchmark()
    split = tiny_setup(tmp_path, bench)
    common = ["--langs", "xx", "--vocab-size", "300", "--aligner", "fast_align", "--eval-seq-len", "40", "--stride",
              "20", "--budget", "0", "--work", str(tmp_path / "work"), "--methods", "trans-tokenization", "fvt"]
    plain_args = bench.parse_args(common + ["--out", str(tmp_path / "plain")])
    plain = bench.run_language("xx", plain_args, tmp_path / "source", split)
    bench.write_outputs([plain], plain_args)
    prior = bench.run_language("xx", bench.parse_args(common + ["--unigram-prior", "1", "--init-from",
                                                                str(tmp_path / "plain" / "results.json")]),
                               tmp_path / "source", split)["methods"]
    for method in ("trans-tokenization", "fvt"):
        assert prior[method]["unigram_prior"]["strength"] == 1.0
        assert prior[method]["init"] != plain["methods"][method]["init"], "scored again, not reused"
    assert prior["source (own tokenizer)"]["init"] == plain["methods"]["source (own tokenizer)"]["init"]
    # --untie-head: the prior's extra head parameters without the prior; the same model, so the same figure.
    from transtok.loading import load_model
    from transtok.surgery import is_tied

    untied = bench.run_language("xx", bench.parse_args(common + ["--untie-head"]), tmp_path / "source",
                                split)["methods"]
    for method in ("trans-tokenization", "fvt"):
        assert abs(untied[method]["init"] - plain["methods"][method]["init"]) < 1e-6
        assert "unigram_prior" not in untied[method]
        assert not is_tied(load_model(str(tmp_path / "work" / "xx" / f"init-{method}"))[0])
    assert is_tied(load_model(str(tmp_path / "source"))[0]), "the source model is tied: the flag is not a no-op"


@pytest.mark.slow
def test_ablation_scores_settings_on_the_dev_split(tmp_path):
    bench = load_benchmark()
    split = tiny_setup(tmp_path, bench)
    ablation = factories.benchmark("ablation")
    args = ablation.parse_args(["--langs", "xx", "--vocab-size", "300", "--aligner", "fast_align", "--groups",
                                "mapping", "aligner", "--aligners", "fast_align-intersection", "--eval-seq-len", "40",
                                "--stride", "10", "--strides", "40", "--work", str(tmp_path / "work"),
                                "--out", str(tmp_path / "out")])
    rows = ablation.run_language("xx", args, tmp_path / "source", split)
    settings = {(r["setting"], r["stride"]): r for r in rows}
    assert {("defaults", 10), ("defaults", 40), ("source model, own tokenizer", 40),
            ("aligner fast_align-intersection", 10)} <= set(settings)
    assert len({r["tokens"] for r in rows if r["group"] != "reference"}) == 1
    assert settings[("top-k 1", 10)]["dev_bpb"] != settings[("top-k all", 10)]["dev_bpb"]
    table = ablation.write_outputs(rows, args)
    assert "| top-k 1 |" in table and "stride 40" in table
    # --reuse scores only what is new (FVT here) and keeps the rows already scored.
    again = ablation.parse_args(["--langs", "xx", "--vocab-size", "300", "--aligner", "fast_align", "--groups", "fvt",
                                 "prior", "--priors", "1", "--prior-samples", "3", "1024", "--eval-seq-len", "40",
                                 "--stride", "10", "--work", str(tmp_path / "work"), "--reuse"])
    more = {(r["setting"], r["stride"]): r for r in ablation.run_language("xx", again, tmp_path / "source", split, rows)}
    assert more[("defaults", 10)] is settings[("defaults", 10)] and ("FVT", 10) in more
    # The prior's q from 3 lines is another estimate than from all of them (the cost-vs-quality setting).
    full, few = more[("unigram prior 1", 10)]["dev_bpb"], more[("unigram prior 1, q from 3 lines", 10)]["dev_bpb"]
    assert full != few and full != more[("defaults", 10)]["dev_bpb"]
    assert more[("unigram prior 1, q from 3 lines", 10)]["prior_sample"] == 3
    # Another draw of an aligner is cached beside the first, not over it.
    from transformers import AutoTokenizer

    source_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "source")
    _, first = bench.prepared("xx", split, source_tokenizer, args)
    _, second = bench.prepared("xx", split, source_tokenizer, args, draw=1)
    cache = sorted(p.name for p in (tmp_path / "work" / "xx" / "cache" / "vocab300").glob("align-*"))
    assert cache == ["align-fast_align-auto", "align-fast_align-auto-draw1", "align-fast_align-intersection-auto"]
    assert second.stats["links"] == first.stats["links"], "fast_align is deterministic: the same links again"


def test_segmentation_benchmark_runs_on_a_tiny_model(tmp_path):
    bench = factories.benchmark("segmentation")
    pairs = factories.cipher_corpus(560, cipher=factories.CHINESE, separator="")
    split = Split(pairs)
    source = factories.byte_level_tokenizer(split.train.source, vocab_size=350)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(tmp_path / "source")
    source.save_pretrained(tmp_path / "source")
    args = bench.parse_args(["--vocab-size", "400", "--aligner", "fast_align", "--segmenters", "none", "tokens",
                             "--out", str(tmp_path / "out")])
    record = bench.run_language("zz", args, tmp_path / "source", split)
    table = bench.markdown([record], args)
    units = {name: entry["units_per_verse"]["target"] for name, entry in record["segmenters"].items()}
    assert units["tokens"] > 2 * units["none"]  # one unit per clause vs one per token
    assert record["segmenters"]["none"]["units_per_verse"]["source"] == \
        record["segmenters"]["tokens"]["units_per_verse"]["source"]  # English is spaced: unchanged
    assert "| tokens |" in table and "| none |" in table and record["fvt"]["init"] > 0


def test_translation_table_names_each_system_and_marks_the_best_chrf():
    tables = factories.benchmark("tables")
    row = {"chrf_signature": "nrefs:1", "empty_hypotheses": 0, "mean_output_tokens": 10.0}
    saved = {"systems": [{**row, "system": "a_source_model", "chrf": 20.0, "bleu": 1.0},
                         {**row, "system": "b_hydra_mapped", "chrf": 25.0, "bleu": 4.0, "empty_hypotheses": 2}]}
    saved["systems"][0].update(chrf_by_beta={"1": 19.0, "0.5": 18.0}, mean_hypothesis_chars=30.0,
                               mean_reference_chars=20.0)
    saved["systems"][1].update(chrf_by_beta={"1": 18.5, "0.5": 21.0}, mean_hypothesis_chars=10.0,
                               mean_reference_chars=20.0)
    lines = tables.translation_table(saved)
    assert len(lines) == 4
    assert lines[2] == "| (a) source model, its own tokenizer | 20.0 | 1.0 | **19.0** | 18.0 | 1.50 | 0 |"
    assert lines[3].endswith("| **25.0** | **4.0** | 18.5 | **21.0** | 0.50 | 2 |")


def test_paste_fills_only_the_named_blocks_and_refuses_a_missing_one():
    tables = factories.benchmark("tables")
    readme = "intro\n<!-- tables: generated -->\nold\n<!-- /tables -->\nmiddle\n<!-- translation: x -->\n<!-- /translation -->\n"
    out = tables.paste(readme, {"tables": ["| a |", ""], "translation": ["", "| b |"]})
    assert out == "intro\n<!-- tables: generated -->\n| a |\n<!-- /tables -->\nmiddle\n<!-- translation: x -->\n| b |\n" \
                  "<!-- /translation -->\n"
    assert tables.paste(out, {"tables": ["| a |"]}) == out  # idempotent
    with pytest.raises(SystemExit, match="no '<!-- demo"):
        tables.paste(readme, {"demo": ["x"]})


def test_init_table_takes_missing_init_figures_only_from_a_run_of_the_same_models():
    tables = factories.benchmark("tables")
    args = {"vocab_size": 300, "aligner": "eflomal", "segmenter": "auto", "stride": 128, "eval_seq_len": 512,
            "focus_min_count": 3, "seed": 0}
    init = {"lang": "xx", "args": args, "methods": {"trans-tokenization": {"init": 1.0}}}
    after = {"lang": "xx", "args": args, "methods": {"trans-tokenization": {"init": 1.0, "final": 0.9},
                                                     "focus": {"init": 2.0, "final": 1.5, "provenance": {"fallback": 1}}}}
    other_seed = {"lang": "xx", "args": {**args, "seed": 1}, "methods": {"fvt": {"init": 3.0}}}
    tables.fill_inits([(None, init)], [(None, after), (None, other_seed)])
    assert init["methods"]["focus"] == {"init": 2.0, "provenance": {"fallback": 1}}
    assert init["methods"]["trans-tokenization"] == {"init": 1.0} and "fvt" not in init["methods"]


def test_refit_prior_scores_a_model_before_and_after_the_prior_on_the_dev_books(tmp_path):
    import argparse

    split = tiny_setup(tmp_path, load_benchmark())
    refit = factories.benchmark("refit_prior")
    args = argparse.Namespace(strength=1.0, eval_seq_len=40, stride=10, split="dev")
    row = refit.score("tiny", str(tmp_path / "source"), split.train.target, split.dev.target, args)
    # An untrained tiny model predicts near-uniformly: moving its marginal to the training text's lowers dev BPB.
    assert row["bpb_refit"] < row["bpb"]
    assert row["prior"]["strength"] == 1.0 and "stride:10" in row["signature"]


def test_dev_table_pivots_ablation_rows_by_language_keeping_the_first_run_and_the_runs_stride(tmp_path):
    tables = factories.benchmark("tables")
    tables.RESULTS = tmp_path

    def run(name, stride, rows):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ablation.json").write_text(json.dumps({"args": {"stride": stride}, "rows": rows}))

    def row(lang, setting, bpb, stride=128, **extra):
        return {"lang": lang, "setting": setting, "dev_bpb": bpb, "stride": stride, **extra}

    run("a", 128, [row("es", "top-k 2", 1.5, fallback=21), row("es", "defaults", 1.6, fallback=1234),
                   row("es", "defaults", 9.0, stride=512), row("es", "source model, own tokenizer", 1.7)])
    run("b", 128, [row("ru", "defaults", 1.4), row("es", "top-k 2", 9.0), row("ru", "top-k 2", 1.3)])
    lines = tables.dev_table(["a", "b"], extra={"fallback": "fallback"})
    assert lines[0] == "| setting | es dev BPB | es fallback | ru dev BPB | ru fallback |"
    assert lines[2:] == ["| source model, own tokenizer | 1.700 | - | - | - |",  # the references lead
                         "| defaults | 1.600 | 1,234 | 1.400 | - |",  # not the stride-512 row
                         "| top-k 2 | 1.500 | 21 | 1.300 | - |"]  # the first run's Spanish figure
    assert tables.dev_table(["a", "b"], ["top-k 2"], langs=("ru",))[2:] == ["| top-k 2 | 1.300 |"]


def test_results_page_and_readme_hold_what_tables_py_makes_of_the_committed_results():
    """benchmarks/RESULTS.md and the README's blocks are regenerated after every new results file: run
    `python benchmarks/tables.py` when this fails."""
    tables = factories.benchmark("tables")
    blocks = tables.sections()
    results = tables.RESULTS_MD.read_text(encoding="utf-8")
    readme = tables.README.read_text(encoding="utf-8")
    assert tables.paste(results, blocks) == results  # every generated table is there (paste refuses a missing one)
    assert tables.paste(readme, {name: blocks[name] for name in tables.README_BLOCKS}) == readme
    assert not any(f"<!-- {name}: " in readme for name in blocks if name not in tables.README_BLOCKS)
    assert len([line for line in blocks["headline"] if line]) <= 10 and "benchmarks/RESULTS.md" in readme


def test_tables_main_fills_the_results_page_and_the_readme_and_names_a_file_missing_a_block(tmp_path):
    tables = factories.benchmark("tables")
    blocks = tables.sections()
    empty = {name: [] for name in blocks}
    results, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    results.write_text(tables.paste(tables.RESULTS_MD.read_text(encoding="utf-8"), empty), encoding="utf-8")
    readme.write_text(tables.paste(tables.README.read_text(encoding="utf-8"),
                                   {name: [] for name in tables.README_BLOCKS}), encoding="utf-8")
    assert results.read_text(encoding="utf-8") != tables.RESULTS_MD.read_text(encoding="utf-8")
    tables.main(["--results", str(results), "--readme", str(readme), "--out", str(tmp_path / "tables.md")])
    assert results.read_text(encoding="utf-8") == tables.RESULTS_MD.read_text(encoding="utf-8")
    assert readme.read_text(encoding="utf-8") == tables.README.read_text(encoding="utf-8")
    assert "| Spanish (es) |" in (tmp_path / "tables.md").read_text(encoding="utf-8")
    readme.write_text("# a README without the headline\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=f"{readme}: no '<!-- headline"):
        tables.main(["--results", str(results), "--readme", str(readme)])


def test_the_results_index_lists_every_results_directory_once():
    import re

    root = factories.benchmark("tables").RESULTS
    index = (root / "INDEX.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([^`]+)/` \|", index, flags=re.M)
    holding = {str(path.parent.relative_to(root)) for path in root.rglob("*.json")}
    assert len(listed) == len(set(listed)) and sorted(listed) == sorted(holding)
    for line in index.splitlines():
        if line.startswith("| `"):
            assert line.count(" | ") == 4 and line.split(" | ")[-1].strip(" |"), f"five cells, a status: {line}"


def test_data_size_benchmark_runs_resumes_and_reads_its_threshold_on_dev(tmp_path, monkeypatch):
    bench = factories.benchmark("data_size")
    pairs = factories.cipher_corpus(500)
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=330)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(tmp_path / "source")
    source.save_pretrained(tmp_path / "source")

    class Bible:
        train = ParallelCorpus([s for s, _ in pairs[:400]], [t for _, t in pairs[:400]])
        dev = ParallelCorpus([s for s, _ in pairs[400:450]], [t for _, t in pairs[400:450]])
        test = ParallelCorpus([s for s, _ in pairs[450:]], [t for _, t in pairs[450:]])

    monkeypatch.setattr(bench, "parallel_bible", lambda *a, **k: Bible())
    monkeypatch.setattr(bench, "smollm2_checkpoint", lambda: tmp_path / "source")
    argv = ["--langs", "xx", "--pairs", "100", "0", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    bench.main(argv)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    entry = saved["languages"]["xx"]
    assert [p["pairs"] for p in entry["points"]] == [100, 400] and entry["corpus_pairs"] == 400
    assert (tmp_path / "out" / "curve.png").is_file() and "| xx | 400 |" in (tmp_path / "out" / "results.md").read_text()
    bench.main(argv)  # a rerun finds every point done
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())["languages"]["xx"]["points"]) == 2
    assert not (tmp_path / "work" / "xx" / "model100").exists()  # models are not kept unless asked

    source_bpb = {"dev": {"bits_per_byte": 2.0}, "test": {"bits_per_byte": 2.0}}
    points = [{"pairs": n, "bits_per_byte": {"dev": d, "test": d}} for n, d in ((1000, 2.1), (2000, 1.9),
                                                                                 (5000, 2.05), (10000, 1.8))]
    assert bench.threshold(points, source_bpb) == 10000  # every larger size must beat it, not only one
    assert bench.threshold(points[:1], source_bpb) is None


def test_transfers_warning_threshold_is_what_the_data_size_benchmark_measured_on_dev():
    from pathlib import Path

    from transtok.pipeline import ENOUGH_PAIRS

    saved = json.loads((Path(__file__).parents[1] / "benchmarks/results/data_size/results.json").read_text())
    thresholds = [entry["threshold_dev"] for entry in saved["languages"].values()]
    assert len(thresholds) >= 2 and ENOUGH_PAIRS == max(thresholds)
