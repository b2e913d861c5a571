from __future__ import annotations

import gzip
import json

import pytest

from transtok.corpus import (
    ParallelCorpus,
    clean,
    iter_parallel,
    iter_texts,
    read_parallel,
    read_texts,
    write_texts,
)
from transtok.errors import ConfigError, DataError

PAIRS = [("In the beginning", "En el principio"), ("God created", "creó Dios"), ("the heaven", "los cielos"),
         ("and the earth.", "y la tierra."), ("Jesus wept.", "Jesús lloró.")]


def write_tsv(path, pairs, end="\n"):
    path.write_bytes("".join(f"{s}\t{t}{end}" for s, t in pairs).encode("utf-8"))
    return path


def test_tsv_reads_pairs_in_order_and_strips_line_endings(tmp_path):
    corpus = read_parallel([write_tsv(tmp_path / "c.tsv", PAIRS, end="\r\n")])
    assert list(corpus) == PAIRS
    assert len(corpus) == len(PAIRS)


def test_tsv_skips_blank_lines_and_bom_and_strips_sides(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(b"\xef\xbb\xbfa \t b\n\n   \nc\td\n\n")
    assert list(read_parallel(path)) == [("a", "b"), ("c", "d")]


def test_jsonl_and_two_files_give_the_same_corpus_as_tsv(tmp_path):
    tsv = read_parallel([write_tsv(tmp_path / "c.tsv", PAIRS)])
    (tmp_path / "c.jsonl").write_text(
        "\n".join(json.dumps({"source": s, "target": t, "id": i}) for i, (s, t) in enumerate(PAIRS)) + "\n",
        encoding="utf-8")
    (tmp_path / "c.en").write_text("\n".join(s for s, _ in PAIRS) + "\n", encoding="utf-8")
    (tmp_path / "c.es").write_text("\n".join(t for _, t in PAIRS) + "\n", encoding="utf-8")
    assert read_parallel([tmp_path / "c.jsonl"]) == tsv
    assert read_parallel([tmp_path / "c.en", tmp_path / "c.es"]) == tsv


def test_gzip_input_is_read_transparently(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"source": s, "target": t}) + "\n" for s, t in PAIRS)
    assert list(read_parallel(path)) == PAIRS


def test_two_files_align_by_newline_only_and_keep_blank_lines(tmp_path):
    # U+2028 and a lone \r inside a segment must not split it (str.splitlines would)
    (tmp_path / "a.txt").write_text("one\u2028still one\n\nthree\n", encoding="utf-8", newline="")
    (tmp_path / "b.txt").write_text("uno\rtodavía\ndos\ntres\n", encoding="utf-8", newline="")
    corpus = read_parallel([tmp_path / "a.txt", tmp_path / "b.txt"])
    assert corpus.source == ["one\u2028still one", "", "three"]
    assert corpus.target == ["uno\rtodavía", "dos", "tres"]


def test_write_tsv_round_trips_and_flattens_tabs_and_newlines(tmp_path):
    corpus = ParallelCorpus(["a\tb", "line\nbreak", "plain"], ["x", "y\r\nz", "w"])
    corpus.write_tsv(tmp_path / "out.tsv")
    back = read_parallel(tmp_path / "out.tsv")
    assert back.source == ["a b", "line break", "plain"]
    assert back.target == ["x", "y z", "w"]


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 7])
def test_streaming_chunks_concatenate_to_the_whole(tmp_path, chunk_size):
    pairs = [(f"s{i}", f"t{i}") for i in range(23)]
    path = write_tsv(tmp_path / "c.tsv", pairs)
    chunks = list(iter_parallel([path], chunk_size=chunk_size))
    assert all(0 < len(c) <= chunk_size for c in chunks)
    assert all(len(c) == chunk_size for c in chunks[:-1])
    joined = [pair for chunk in chunks for pair in chunk]
    assert joined == list(read_parallel([path])) == pairs


def test_streaming_is_lazy(tmp_path):
    # a bad line after the first chunk must not prevent reading the first chunk
    path = tmp_path / "c.tsv"
    path.write_text("a\tb\nc\td\nbroken line\n", encoding="utf-8")
    chunks = iter_parallel(path, chunk_size=2)
    assert list(next(chunks)) == [("a", "b"), ("c", "d")]
    with pytest.raises(DataError, match=r"c\.tsv:3"):
        next(chunks)


def test_read_texts_concatenates_files_and_skips_blank_lines(tmp_path):
    (tmp_path / "a.txt").write_text("first\n\n  second  \n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("third", encoding="utf-8")
    assert read_texts([tmp_path / "a.txt", tmp_path / "b.txt"]) == ["first", "second", "third"]
    assert list(iter_texts(tmp_path / "a.txt")) == ["first", "second"]


def test_write_texts_round_trips(tmp_path):
    write_texts(["a b", "multi\nline", "c"], tmp_path / "t.txt")
    assert read_texts(tmp_path / "t.txt") == ["a b", "multi line", "c"]


# --- errors -------------------------------------------------------------------------------------

def test_empty_corpus_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.tsv holds no sentence pairs; give a non-empty file"):
        read_parallel(path)
    with pytest.raises(DataError, match="holds no sentence pairs"):
        list(iter_parallel(path))


def test_empty_text_file_is_an_error(tmp_path):
    (tmp_path / "e.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"e\.txt hold no non-blank line"):
        read_texts([tmp_path / "e.txt"])


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.tsv' does not exist; check the path"):
        read_parallel(tmp_path / "nope.tsv")


def test_tsv_line_without_tab_names_file_line_and_start(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("a\tb\n" + "x" * 100 + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_parallel(path)
    message = str(info.value)
    assert f"{path}:2:" in message
    assert "expected 'source<TAB>target'" in message
    assert "found no tab" in message
    assert "x" * 40 + "…" in message and "x" * 41 not in message


def test_tsv_line_with_two_tabs_is_an_error(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("a\tb\tc\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.tsv:1: .*found 2 tabs"):
        read_parallel(path)


@pytest.mark.parametrize("source_lines,target_lines", [(3, 2), (2, 4)])
def test_two_files_of_different_length_report_both_counts(tmp_path, source_lines, target_lines):
    (tmp_path / "a.txt").write_text("".join(f"a{i}\n" for i in range(source_lines)), encoding="utf-8")
    (tmp_path / "b.txt").write_text("".join(f"b{i}\n" for i in range(target_lines)), encoding="utf-8")
    with pytest.raises(DataError, match=rf"a\.txt has {source_lines} lines and .*b\.txt has {target_lines}"):
        read_parallel([tmp_path / "a.txt", tmp_path / "b.txt"])


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "latin1.tsv"
    path.write_bytes("ok\tbien\n".encode() + "año\tyear\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.tsv:2: bytes that are not UTF-8 at column 2 .*re-encode"):
        read_parallel(path)
    (tmp_path / "t.txt").write_bytes(b"fine\n\xff\n")
    with pytest.raises(DataError, match=r"t\.txt:2: bytes that are not UTF-8"):
        read_texts(tmp_path / "t.txt")


@pytest.mark.parametrize("line,expected", [
    ("{not json", r"c\.jsonl:2: not valid JSON"),
    ('["a", "b"]', r"c\.jsonl:2: got a JSON list"),
    ('{"source": "a"}', r"c\.jsonl:2: key 'target' is missing, not a string"),
    ('{"source": 1, "target": "b"}', r"c\.jsonl:2: key 'source' is a int, not a string"),
])
def test_bad_jsonl_lines_are_errors(tmp_path, line, expected):
    path = tmp_path / "c.jsonl"
    path.write_text('{"source": "ok", "target": "bien"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=expected) as info:
        read_parallel(path)
    assert '{"source": "...", "target": "..."}' in str(info.value)


def test_wrong_number_of_paths_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"takes 1 file \(TSV or \.jsonl\) or 2 line-aligned files, got 3"):
        read_parallel([tmp_path / "a", tmp_path / "b", tmp_path / "c"])


def test_unequal_sides_cannot_make_a_corpus():
    with pytest.raises(DataError, match="got 2 source and 1 target"):
        ParallelCorpus(["a", "b"], ["x"])


# --- cleaning -----------------------------------------------------------------------------------

def test_clean_counts_every_reason_and_keeps_order():
    corpus = ParallelCorpus(
        ["one two", "", "dup", "dup", "short", "x" * 200, "keep me", "last one"],
        ["uno dos", "vacío", "dup", "dup", "corto", "y", "guárdame", "el último"])
    cleaned, stats = clean(corpus, max_pairs=3)
    assert stats == {"input": 8, "too_short": 1, "length_ratio": 1, "duplicate": 1, "over_max_pairs": 2,
                     "kept": 3}
    assert stats["input"] == stats["kept"] + sum(v for k, v in stats.items() if k not in ("input", "kept"))
    assert list(cleaned) == [("one two", "uno dos"), ("dup", "dup"), ("short", "corto")]


def test_clean_length_ratio_is_relative_to_the_corpus_density():
    # a dense script (3x fewer characters on the target side) must not be dropped wholesale
    source = [f"sentence number {i} with some words in it" for i in range(20)]
    target = [s[: len(s) // 3] for s in source]
    cleaned, stats = clean(ParallelCorpus(source, target))
    assert stats["length_ratio"] == 0 and len(cleaned) == 20
    # but an outlier against that density is
    source.append("a" * 300)
    target.append("b" * 10)
    _, stats = clean(ParallelCorpus(source, target))
    assert stats["length_ratio"] == 1


def test_clean_can_be_disabled_except_for_empty_sides():
    corpus = ParallelCorpus(["a", "a", "x" * 500, ""], ["b", "b", "y", "z"])
    cleaned, stats = clean(corpus, dedupe=False, max_length_ratio=None)
    assert list(cleaned) == [("a", "b"), ("a", "b"), ("x" * 500, "y")]
    assert stats["too_short"] == 1


def test_clean_min_length_counts_characters():
    corpus = ParallelCorpus(["abc", "abcd"], ["abcd", "abcd"])
    cleaned, _ = clean(corpus, min_length=4, max_length_ratio=None)
    assert list(cleaned) == [("abcd", "abcd")]


def test_clean_that_drops_everything_is_an_error():
    with pytest.raises(DataError, match="cleaning dropped all 2 sentence pairs .*relax min_length"):
        clean(ParallelCorpus(["", "a"], ["b", ""]))


@pytest.mark.parametrize("kwargs,expected", [
    ({"max_length_ratio": 0.5}, "`max_length_ratio` must be a finite number >= 1 .*got 0.5"),
    ({"min_length": -1}, r"`min_length` must be a finite number >= 0 \(characters\), got -1"),
    ({"min_length": float("nan")}, "`min_length` must be a finite number >= 0 .*got nan"),
    ({"max_pairs": 0}, r"`max_pairs` must be an integer >= 1 \(pairs, or None for all\), got 0"),
    ({"max_pairs": float("nan")}, "`max_pairs` must be an integer >= 1 .*got nan"),
])
def test_clean_rejects_bad_settings(kwargs, expected):
    with pytest.raises(ConfigError, match=expected):
        clean(ParallelCorpus(["a"], ["b"]), **kwargs)


def test_iter_parallel_rejects_bad_chunk_size(tmp_path):
    with pytest.raises(ConfigError, match=r"`chunk_size` must be an integer >= 1 \(pairs\), got 0"):
        next(iter_parallel(write_tsv(tmp_path / "c.tsv", PAIRS), chunk_size=0))


def test_slicing_and_from_pairs_keep_pairs_together():
    corpus = ParallelCorpus.from_pairs(PAIRS)
    assert list(corpus[1:3]) == PAIRS[1:3]
    assert isinstance(corpus[::2], ParallelCorpus) and list(corpus[::2]) == PAIRS[::2]
    with pytest.raises(TypeError, match="index a ParallelCorpus with a slice"):
        corpus[0]
