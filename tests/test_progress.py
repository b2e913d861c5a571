"""Log lines carry rounded figures; progress reaches log files."""
import logging

import pytest

import factories

from transtok.progress import duration, timings


@pytest.mark.parametrize("seconds, text", [(0.0, "0 s"), (0.9374167899999293, "0.94 s"), (1.04, "1.0 s"),
                                           (9.96, "10.0 s"), (38.2, "38 s"), (59.6, "60 s"), (60.2, "1 min"),
                                           (125.4, "2 min 5 s"), (3599.6, "1 h"), (3780, "1 h 3 min"),
                                           (7200, "2 h")])
def test_duration_rounds_to_what_a_reader_needs(seconds, text):
    assert duration(seconds) == text


def test_timings_keep_the_order_and_drop_the_digits():
    text = timings({"load": 0.9374167899999293, "tokenizer": 20.123, "align": 38.51})
    assert text == "load 0.94 s, tokenizer 20 s, align 39 s"
    with pytest.raises(ValueError, match="negative"):
        duration(-1)


def test_alignment_announces_its_size_and_expected_time(caplog):
    import factories
    from transtok.align import align, expected_time
    from transtok.corpus import ParallelCorpus

    pairs = factories.cipher_corpus(60)
    tokenizer = factories.byte_level_tokenizer([s for s, _ in pairs] + [t for _, t in pairs], 300)
    corpus = ParallelCorpus([s for s, _ in pairs], [t for _, t in pairs])
    with caplog.at_level(logging.INFO, logger="transtok.align"):
        align(corpus, tokenizer, tokenizer, aligner="fast_align")
    first = caplog.messages[0]
    assert first.startswith("aligning 60 sentence pairs with fast_align (no estimate")
    assert "aligned 60 pairs: " in caplog.messages[-1]
    assert not any("0000" in m for m in caplog.messages)  # no raw floats
    assert expected_time("unknown", 10) == "no estimate for this aligner"
    assert expected_time("eflomal", 30_000).startswith("about 46 s on 2 idle CPU cores")


# --- progress that reaches a log file --------------------------------------------------------------

def _steps(n: int, seconds: float):
    import time

    from transtok.progress import bar

    for _ in bar(range(n), desc="scoring", unit="batch"):
        time.sleep(seconds)


def test_a_long_step_logs_done_total_rate_and_time_left_when_not_in_a_terminal(caplog, monkeypatch):
    monkeypatch.setenv("TRANSTOK_LOG_EVERY", "0.05")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with caplog.at_level(logging.INFO, logger="transtok.progress"):
        _steps(12, 0.02)
    lines = [r.getMessage() for r in caplog.records if r.name == "transtok.progress"]
    assert 2 <= len(lines) <= 12, lines
    assert lines[-1].startswith("scoring: 12/12 batch (100 %), ") and lines[-1].endswith(" left")
    assert "batch/s" in lines[-1]
    assert len({line.split(",")[0] for line in lines}) == len(lines)  # the close does not repeat the last line


def test_a_short_step_logs_nothing_and_quiet_logs_nothing(caplog, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with caplog.at_level(logging.INFO, logger="transtok.progress"):
        _steps(5, 0)  # shorter than the default period
    monkeypatch.setenv("TRANSTOK_LOG_EVERY", "0")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    with caplog.at_level(logging.INFO, logger="transtok.progress"):
        _steps(5, 0.01)
    assert not [r for r in caplog.records if r.name == "transtok.progress"]


@pytest.mark.slow
def test_evaluate_writes_progress_lines_to_a_log_file(tmp_path):
    import os
    import subprocess
    import sys

    source = factories.byte_level_tokenizer(["hello world, this is a test"] * 4, 300)
    model = factories.tiny_causal_lm("llama", len(source), False, source)
    model.save_pretrained(tmp_path / "model")
    source.save_pretrained(tmp_path / "model")
    (tmp_path / "text.txt").write_text("hello world, this is a test\n" * 200, encoding="utf-8")
    env = {**os.environ, "TRANSTOK_LOG_EVERY": "0"}
    env.pop("TQDM_DISABLE", None)
    with open(tmp_path / "run.log", "w") as log:  # a file, not a terminal
        done = subprocess.run([sys.executable, "-m", "transtok", "evaluate", "perplexity", "--model",
                               str(tmp_path / "model"), "--text", str(tmp_path / "text.txt"), "--seq-len", "32",
                               "--batch-size", "2"], stderr=log, stdout=subprocess.DEVNULL, env=env, timeout=300)
    text = (tmp_path / "run.log").read_text()
    assert done.returncode == 0, text
    progress = [line for line in text.splitlines() if "transtok.progress: perplexity: " in line]
    assert progress and "batch (" in progress[-1] and "batch/s" in progress[-1], text
