"""The extension benchmark's code path (every phase) on a tiny model with a budget of a few steps."""

import pytest

import factories
from transtok.corpus import ParallelCorpus

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.slow


def load_benchmark():
    return factories.benchmark("extension")


class Split:
    def __init__(self, pairs):
        def corpus(part):
            return ParallelCorpus([s for s, _ in part], [t for _, t in part])
        self.train, self.dev, self.test = corpus(pairs[:500]), corpus(pairs[500:530]), corpus(pairs[530:])


def test_extension_benchmark_runs_every_phase_on_a_tiny_model(tmp_path):
    bench = load_benchmark()
    split = Split(factories.cipher_corpus(560))
    source = factories.byte_level_tokenizer(split.train.source, vocab_size=400)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(tmp_path / "source")
    source.save_pretrained(tmp_path / "source")
    work = tmp_path / "work"
    bench._write(work / "train.txt", split.train.target)
    args = bench.parse_args(["--grid", "10", "30", "--vocab-size", "380", "--aligner", "fast_align", "--budget", "512",
                             "--seq-len", "32", "--batch-size", "4", "--warmup", "1", "--work", str(work),
                             "--out", str(tmp_path / "out"), "--spelling-grid", "0", "0.25", "--head-grid", "0.5",
                             "0.75", "--offset-grid", "0", "1", "--offset-pairs", "64"])
    record = {"select": bench.phase_select("xx", split, tmp_path / "source", args)}
    assert record["select"]["chosen"] in (10, 30)
    record["source"] = bench.phase_source("xx", split, tmp_path / "source", work, args)
    record["replace"] = bench.phase_replace("xx", split, tmp_path / "source", work, args)
    record["extend"] = bench.phase_extend("xx", split, tmp_path / "source", work, args, record["select"]["chosen"])
    extend = record["extend"]
    assert extend["reachable"] == extend["new_tokens"] and extend["stage"] == "new-rows"
    # nothing of the source changes at init: English is scored on the same rows, plus the new columns
    assert extend["init"]["english"]["tokens"] == record["source"]["init"]["english"]["tokens"]
    assert extend["offset"]["delta"] == 1.0 and extend["offset"]["source_shift_mean"] == pytest.approx(-1.0)
    assert extend["parameters"] > sum(p.numel() for p in factories.tiny_causal_lm(
        "llama", extend["vocab_size"], True).parameters())  # the untied head's rows came on top
    record["inits"] = bench.phase_inits("xx", split, tmp_path / "source", args, record["select"]["chosen"])
    assert set(record["inits"]) == set(bench.INIT_VARIANTS)
    record["spelling"] = bench.phase_spelling("xx", split, tmp_path / "source", args, record["select"]["chosen"])
    assert set(record["spelling"]["grid"]) == {"source", "0.0", "0.25"}
    record["head"] = bench.phase_head("xx", split, tmp_path / "source", args, record["select"]["chosen"])
    grid = record["head"]["grid"]
    assert {k for k in grid if k.startswith("head ")} == {f"head {s} offset {d}" for s in (0.5, 0.75)
                                                          for d in (0.0, 1.0)}
    assert grid["offset_unit"]["source_shift_mean"] == pytest.approx(-1.0)
    # the offset lowers new tokens in English contexts: English bits per byte can only be scored differently
    assert grid["head 0.5 offset 1.0"]["english"] != grid["head 0.5 offset 0.0"]["english"]
    table = bench.write_outputs({"xx": record}, args)
    assert "| extend (source + " in table and "Chosen: N = " in table
    assert "| untied | 0.75 | 1.0 |" in table and "| tied | 0.25 | - |" in table
    assert (tmp_path / "out" / "extension.png").stat().st_size > 1000
