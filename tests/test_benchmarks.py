"""The init-methods benchmark's code path on a tiny model with a budget of a few steps."""
import importlib.util
import json
from pathlib import Path

import pytest

import factories
from transtok.corpus import ParallelCorpus

pytest.importorskip("matplotlib")


def load_benchmark():
    path = Path(__file__).parents[1] / "benchmarks" / "init_methods.py"
    spec = importlib.util.spec_from_file_location("init_methods", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Split:
    def __init__(self, pairs):
        self.train = ParallelCorpus([s for s, _ in pairs[:500]], [t for _, t in pairs[:500]])
        self.test = ParallelCorpus([s for s, _ in pairs[500:]], [t for _, t in pairs[500:]])


def test_init_methods_benchmark_runs_on_a_tiny_model(tmp_path):
    bench = load_benchmark()
    pairs = factories.cipher_corpus(560)
    split = Split(pairs)
    source = factories.byte_level_tokenizer(split.train.source, vocab_size=350)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(tmp_path / "source")
    source.save_pretrained(tmp_path / "source")
    data = tmp_path / "work" / "xx" / "data"
    data.mkdir(parents=True)
    (data / "train.txt").write_text("\n".join(split.train.target) + "\n")
    (data / "test.txt").write_text("\n".join(split.test.target) + "\n")
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


def test_segmentation_benchmark_runs_on_a_tiny_model(tmp_path):
    path = Path(__file__).parents[1] / "benchmarks" / "segmentation.py"
    import sys
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location("segmentation", path)
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(path.parent))
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
