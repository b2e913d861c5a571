"""Corpora in shards: contiguous blocks, streamed cleaning, and shard counts that add up to the whole."""
import contextlib
import io
import json
import shutil

import numpy as np
import pytest

import factories
from commandline import run
from transtok.align import AlignmentCounts
from transtok.corpus import read_parallel
from transtok.errors import ConfigError, DataError, MismatchError
from transtok.shards import CorpusStream, Shard, count_pairs, merge_alignments



@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    pairs = factories.cipher_corpus(600, seed=3)
    assert len(set(pairs)) == len(pairs)  # the equality test below relies on no duplicates across shards
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=350).save_pretrained(root / "source")
    factories.byte_level_tokenizer([t for _, t in pairs], vocab_size=330).save_pretrained(root / "target")
    return root


@pytest.fixture(scope="module")
def aligned(workspace):
    """The corpus aligned whole (``whole``) and in three shards (``shard1``..``shard3``), in chunks of 100
    pairs: what ``align`` printed for each shard, by shard number."""
    common = ["--model", workspace / "source", "--target-tokenizer", workspace / "target",
              "--parallel", workspace / "pairs.tsv", "--aligner", "fast_align", "--chunk-size", 100]
    assert run("align", *common, "--output", workspace / "whole") == 0
    said = {}
    for k in (1, 2, 3):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert run("align", *common, "--shard", f"{k}/3", "--output", workspace / f"shard{k}") == 0
        said[k] = out.getvalue()
    return said


@pytest.fixture(scope="module")
def merged(workspace, aligned):
    """``merge-alignments`` of the three shards, given out of order (``merged``)."""
    shards = [workspace / f"shard{k}" for k in (3, 1, 2)]  # order does not matter
    assert run("merge-alignments", "--alignment", *shards, "--output", workspace / "merged") == 0
    return workspace / "merged"


@pytest.fixture(scope="module")
def overlapping_inputs(workspace, merged):
    """Besides the shards and their merge: ``whole2``, a copy of ``whole``, and ``partial``, shards 1 and 3
    merged."""
    shutil.copytree(workspace / "whole", workspace / "whole2")
    merge_alignments([workspace / "shard1", workspace / "shard3"], workspace / "partial")
    return workspace


def test_shards_partition_the_corpus():
    for total in (0, 1, 7, 600, 1001):
        for count in (1, 2, 3, 8):
            bounds = [Shard(k, count).bounds(total) for k in range(1, count + 1)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [end - start for start, end in bounds]
            assert max(sizes) - min(sizes) <= 1
    assert Shard.parse("3/8") == Shard(3, 8) and Shard.parse(None) == Shard(1, 1) and str(Shard(2, 5)) == "2/5"


@pytest.mark.parametrize("text,message", [
    ("0/3", r"`shard` 0/3 is not a shard: give K/N with 1 <= K <= N"),
    ("4/3", r"`shard` 4/3 is not a shard"),
    ("2of3", r"`shard` '2of3' is not of the form K/N; give e.g. 3/8"),
    ("-1/3", r"`shard` '-1/3' is not of the form K/N"),
])
def test_bad_shard_is_named(text, message):
    with pytest.raises(ConfigError, match=message):
        Shard.parse(text)


def test_stream_without_cleaning_is_the_corpus_in_chunks(workspace):
    corpus = read_parallel([workspace / "pairs.tsv"])
    stream = CorpusStream([workspace / "pairs.tsv"], chunk_size=70, dedupe=False, max_length_ratio=None)
    chunks = list(stream)
    assert [len(c) for c in chunks] == [70] * 8 + [40]
    assert sum((c.source for c in chunks), []) == corpus.source
    assert sum((c.target for c in chunks), []) == corpus.target
    assert stream.stats["input"] == stream.stats["kept"] == len(corpus) == count_pairs([workspace / "pairs.tsv"])
    shards = [list(CorpusStream([workspace / "pairs.tsv"], chunk_size=70, shard=f"{k}/4", dedupe=False,
                                max_length_ratio=None)) for k in (1, 2, 3, 4)]
    assert [len(s[0]) for s in shards] == [70] * 4  # chunks restart at each shard's first pair
    assert sum((c.source for shard in shards for c in shard), []) == corpus.source


def test_stream_cleaning_counts_every_pair_and_caps(tmp_path):
    pairs = factories.cipher_corpus(200, seed=5)
    rows = pairs + pairs[:30] + [("a b c", "x " * 200), ("", "empty source")]  # repeats, a bad ratio, an empty side
    (tmp_path / "c.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in rows), encoding="utf-8")
    stream = CorpusStream([tmp_path / "c.tsv"], chunk_size=64)
    kept = sum(len(c) for c in stream)
    s = stream.stats
    assert s["duplicate"] == 30 and s["length_ratio"] == 1 and s["too_short"] == 1  # repeats span chunks
    assert kept == s["kept"] == 200 and s["input"] == len(rows)
    capped = CorpusStream([tmp_path / "c.tsv"], chunk_size=64, max_pairs=100)
    chunks = list(capped)
    assert sum(len(c) for c in chunks) == capped.stats["kept"] == 100
    assert [p for c in chunks for p in c] == pairs[:100]
    no_dedupe = CorpusStream([tmp_path / "c.tsv"], chunk_size=64, dedupe=False)
    assert sum(len(c) for c in no_dedupe) == 230


def test_empty_shard_is_refused(tmp_path):
    (tmp_path / "two.tsv").write_text("a\tb\nc\td\n", encoding="utf-8")
    with pytest.raises(DataError, match="shard 1/3 of a corpus of 2 pairs is empty; use at most 2 shards"):
        list(CorpusStream([tmp_path / "two.tsv"], shard="1/3"))


def test_merged_shards_equal_the_whole_corpus_aligned_in_the_same_chunks(workspace, aligned, merged, tmp_path,
                                                                         caplog):
    assert "(shard 3/3: pairs 400..600)" in aligned[3] and "(shard 1/3: pairs 0..200)" in aligned[1]
    whole, merged = AlignmentCounts.load(workspace / "whole"), AlignmentCounts.load(merged)
    assert whole.counts.nnz > 1000
    assert (whole.counts != 0).sum() == (merged.counts != 0).sum() == ((whole.counts != 0).multiply(merged.counts != 0)).sum()
    np.testing.assert_allclose(merged.counts.toarray(), whole.counts.toarray(), rtol=1e-12, atol=1e-12)
    for key in ("pairs", "pairs_aligned", "links", "source_tokens", "target_tokens"):
        assert merged.stats[key] == whole.stats[key], key
    assert merged.stats["cleaning"] == whole.stats["cleaning"]
    assert merged.stats["target_tokens_with_counts"] == whole.stats["target_tokens_with_counts"]
    assert merged.stats["merged_shards"] == ["1/3", "2/3", "3/3"] and merged.stats["aligner"] == "fast_align"
    for name in ("source_tokenizer", "target_tokenizer"):
        assert (workspace / "merged" / name / "tokenizer.json").read_bytes() == \
            (workspace / "whole" / name / "tokenizer.json").read_bytes()
    assert run("map", "--alignment", workspace / "merged", "--output", workspace / "map") == 0

    with pytest.raises(ConfigError, match=r"shard1 is given twice; its pairs would be counted twice"):
        merge_alignments([workspace / "shard1", workspace / "shard2", workspace / "shard1"], tmp_path / "twice")
    caplog.clear()
    merge_alignments([workspace / "shard1", workspace / "shard3"], tmp_path / "partial")
    assert "covered 400 of 600 pairs of corpus pairs.tsv" in caplog.text
    assert "missing: pairs 200..400 (shards 2/3)" in caplog.text
    assert json.loads((tmp_path / "partial" / "alignment.json").read_text())["stats"]["corpus_pairs"] == 600
    assert AlignmentCounts.load(workspace / "merged").stats["corpus_pairs"] == 600  # the corpus's, not a sum
    assert not (tmp_path / "twice").exists()


@pytest.mark.parametrize("parts, overlap", [
    (["whole", "whole2"], "0..600"),              # the same corpus aligned twice, unsharded
    (["whole", "shard1"], "0..200"),              # a whole-corpus alignment and one of its shards
    (["merged", "shard3"], "400..600"),           # a merged directory and one of its parts
    (["shard2", "partial", "merged"], "0..200"),  # overlaps found whatever the order
])
def test_merging_never_counts_a_pair_twice(overlapping_inputs, capsys, parts, overlap):
    """Every overlap of what two inputs count is refused with one line naming both; nothing is written."""
    workspace = overlapping_inputs
    assert run("merge-alignments", "--alignment", *[workspace / p for p in parts], "--output", workspace / "bad") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("transtok merge-alignments: error: ")
    assert f"both count pairs {overlap} of corpus pairs.tsv" in err and "would count those pairs twice" in err
    assert sum(str(workspace / p) in err for p in parts) == 2
    assert not (workspace / "bad").exists() and not list(workspace.glob(".bad*"))


def test_old_alignments_without_coverage_are_refused(workspace, aligned, capsys):
    old = workspace / "old-format"
    shutil.copytree(workspace / "shard2", old)
    meta = json.loads((old / "alignment.json").read_text())
    del meta["coverage"]
    (old / "alignment.json").write_text(json.dumps(meta))
    assert AlignmentCounts.load(old).coverage is None  # still readable by map
    assert run("merge-alignments", "--alignment", workspace / "shard1", old, "--output", workspace / "bad") == 2
    err = capsys.readouterr().err
    assert "does not record which pairs of which corpus it counts" in err and "rebuild it with 'transtok align'" in err


def test_alignments_of_other_tokenizers_are_not_merged(workspace, aligned):
    other = workspace / "other"
    assert run("align", "--model", workspace / "target", "--target-tokenizer", workspace / "target",
               "--parallel", workspace / "pairs.tsv", "--aligner", "fast_align", "--max-pairs", 50,
               "--output", other) == 0
    assert json.loads((other / "alignment.json").read_text())["stats"]["cleaning"]["kept"] == 50
    with pytest.raises(MismatchError, match="alignments to merge were made with different tokenizers"):
        merge_alignments([workspace / "shard1", other], workspace / "mixed")
    assert run("merge-alignments", "--alignment", workspace / "shard1", other, "--output", workspace / "mixed") == 2
    assert not (workspace / "mixed").exists()


def test_cli_refuses_a_bad_shard_before_reading(workspace, capsys):
    assert run("align", "--model", workspace / "source", "--target-tokenizer", workspace / "target",
               "--parallel", workspace / "pairs.tsv", "--shard", "4/3", "--output", workspace / "bad") == 2
    assert "--shard 4/3 is not a shard: give K/N with 1 <= K <= N" in capsys.readouterr().err
    assert not (workspace / "bad").exists()


def test_top_k_keeps_the_largest_per_row_with_ties_to_the_lower_column():
    import scipy.sparse as sp

    from transtok.mapping import _keep_top_k

    matrix = sp.random(400, 300, density=0.1, random_state=2, format="csr")
    matrix.data = np.ceil(matrix.data * 4)  # many ties
    kept = _keep_top_k(matrix, 3)
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        ranked = sorted(zip(-matrix.data[start:end], matrix.indices[start:end]))[:3]  # by value, then column
        assert sorted(kept[row].indices.tolist()) == sorted(int(c) for _, c in ranked)
        assert sorted(kept[row].data.tolist()) == sorted(-v for v, _ in ranked)
