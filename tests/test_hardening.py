"""Bad inputs, kills and races: each gives one line and an exit code, and leaves nothing behind.

Kills and races run the real CLI in a subprocess paused at a named point (``TRANSTOK_TEST_PAUSE``,
see :func:`transtok.artifacts.pause_point`), so the test decides when the signal arrives.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from transformers import BertConfig, BertForMaskedLM

import factories
from commandline import HANG, finish, leftovers, one_line, reached, run, start
from transtok import artifacts
from transtok.errors import ConfigError

SRC = Path(artifacts.__file__).parents[1]





@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    pairs = factories.cipher_corpus(200)
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (root / "target.txt").write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    # 20 pairs of ~800 words: eflomal's HMM pass costs the square of a sentence's length, so this keeps it busy
    # for minutes on an idle machine, and a test that kills it finds it running however loaded the machine is.
    many = factories.cipher_corpus(2000, seed=1)
    (root / "long.tsv").write_text("".join(" ".join(s for s, _ in many[k:k + 100]) + "\t" +
                                           " ".join(t for _, t in many[k:k + 100]) + "\n"
                                           for k in range(0, len(many), 100)), encoding="utf-8")
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=350)
    target = factories.byte_level_tokenizer([t for _, t in pairs], vocab_size=330)
    model = factories.tiny_causal_lm("llama", len(source), False, source)  # 128 positions
    model.save_pretrained(root / "model")
    source.save_pretrained(root / "model")
    target.save_pretrained(root / "target")
    bert = BertForMaskedLM(BertConfig(vocab_size=len(source), hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=4, intermediate_size=64))
    bert.save_pretrained(root / "bert")
    source.save_pretrained(root / "bert")
    assert run("map", "--init", "fvt", "--model", root / "model", "--target-tokenizer", root / "target",
               "--output", root / "mapping") == 0
    assert run("align", "--model", root / "model", "--target-tokenizer", root / "target", "--parallel",
               root / "pairs.tsv", "--aligner", "fast_align", "--output", root / "alignment") == 0
    return root


def truncated(source: Path, destination: Path, name: str, size: int | None = None) -> Path:
    """A copy of directory ``source`` whose file ``name`` is cut to ``size`` bytes (default: half)."""
    shutil.copytree(source, destination)
    path = destination / name
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if size is None else data[:size])
    return destination


# --- 2. a model that is not a causal LM -----------------------------------------------------------

@pytest.mark.parametrize("verb", ["transfer", "transplant", "transplant-in-memory", "evaluate", "finetune", "hydra"])
def test_a_non_causal_model_is_refused_naming_its_class(ws, tmp_path, capsys, verb):
    out = tmp_path / "out"
    argv = {
        "transfer": ["transfer", "--model", ws / "bert", "--parallel", ws / "pairs.tsv", "--target-tokenizer",
                     ws / "target", "--aligner", "fast_align", "--output", out],
        "transplant": ["transplant", "--model", ws / "bert", "--mapping", ws / "mapping", "--output", out],
        "transplant-in-memory": ["transplant", "--in-memory", "--model", ws / "bert", "--mapping",
                                 ws / "mapping", "--output", out],
        "evaluate": ["evaluate", "perplexity", "--model", ws / "bert", "--text", ws / "target.txt"],
        "finetune": ["finetune", "--model", ws / "bert", "--text", ws / "target.txt", "--output", out],
        "hydra": ["hydra", "build", "--vocab", f"en={ws / 'model'}", "--vocab", f"xx={ws / 'bert'}", "--output", out],
    }[verb]
    assert run(*argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "is a BertForMaskedLM checkpoint, not a causal language model" in line and "ForCausalLM" in line
    assert leftovers(tmp_path, "out") == []
    assert leftovers(tmp_path, "out.checkpoints") == []


# --- 4. truncated or corrupt files ----------------------------------------------------------------

@pytest.mark.parametrize("verb", ["transfer", "transplant", "transplant-in-memory", "evaluate", "finetune", "hydra"])
@pytest.mark.parametrize("size", [None, 20])
def test_a_truncated_model_file_is_named_with_the_fix(ws, tmp_path, capsys, verb, size):
    model = truncated(ws / "model", tmp_path / "model", "model.safetensors", size)
    out = tmp_path / "out"
    argv = {
        "transfer": ["transfer", "--model", model, "--parallel", ws / "pairs.tsv", "--target-tokenizer",
                     ws / "target", "--aligner", "fast_align", "--output", out],
        "transplant": ["transplant", "--model", model, "--mapping", ws / "mapping", "--output", out],
        "transplant-in-memory": ["transplant", "--in-memory", "--model", model, "--mapping", ws / "mapping",
                                 "--output", out],
        "evaluate": ["evaluate", "perplexity", "--model", model, "--text", ws / "target.txt"],
        "finetune": ["finetune", "--model", model, "--text", ws / "target.txt", "--output", out],
        "hydra": ["hydra", "build", "--vocab", f"en={ws / 'model'}", "--vocab", f"xx={model}", "--output", out],
    }[verb]
    assert run(*argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{model / 'model.safetensors'} is truncated or corrupt" in line
    assert "download the checkpoint again" in line
    assert leftovers(tmp_path, "out") == []


def test_a_truncated_checkpoint_written_by_transtok_names_the_verb_that_rebuilds_it(ws, tmp_path, capsys):
    assert run("transplant", "--model", ws / "model", "--mapping", ws / "mapping", "--output",
               tmp_path / "made") == 0
    model = truncated(tmp_path / "made", tmp_path / "cut", "model.safetensors")
    assert run("evaluate", "perplexity", "--model", model, "--text", ws / "target.txt") == 2
    assert "is truncated or corrupt" in capsys.readouterr().err.split("rebuild it with 'transtok transplant'")[0]


@pytest.mark.parametrize("size", [None, 20])
def test_truncated_mapping_and_counts_are_named_with_the_verb_that_rebuilds_them(ws, tmp_path, capsys, size):
    mapping = truncated(ws / "mapping", tmp_path / "mapping", "mapping.safetensors", size)
    assert run("transplant", "--model", ws / "model", "--mapping", mapping, "--output", tmp_path / "out") == 2
    line = one_line(capsys.readouterr().err)
    assert f"{mapping / 'mapping.safetensors'} is truncated or corrupt" in line
    assert "rebuild it with 'transtok map'" in line

    alignment = truncated(ws / "alignment", tmp_path / "alignment", "counts.safetensors", size)
    assert run("map", "--alignment", alignment, "--output", tmp_path / "out") == 2
    line = one_line(capsys.readouterr().err)
    assert f"{alignment / 'counts.safetensors'} is truncated or corrupt" in line
    assert "rebuild it with 'transtok align'" in line
    assert leftovers(tmp_path, "out") == []


# --- 5. vocabulary sizes ------------------------------------------------------------------------

@pytest.mark.parametrize("size, message", [
    ("1000000000", "--vocab-size 1,000,000,000 is more than 4,194,304"),
    ("99999999999999999999", "--vocab-size 99,999,999,999,999,999,999 is more than 4,194,304"),
    ("100000", "--vocab-size 100,000 cannot be reached: the training text has"),
])
def test_an_impossible_vocab_size_is_refused(ws, tmp_path, capsys, size, message):
    assert run("train-tokenizer", "--text", ws / "target.txt", "--model", ws / "model", "--vocab-size", size,
               "--output", tmp_path / "out") == 2
    assert message in one_line(capsys.readouterr().err)
    assert leftovers(tmp_path, "out") == []


def test_a_vocabulary_far_smaller_than_requested_is_warned(ws, tmp_path, capsys, caplog):
    assert run("-q", "train-tokenizer", "--text", ws / "target.txt", "--model", ws / "model",
               "--vocab-size", 3000, "--output", tmp_path / "out") == 0
    trained = int(capsys.readouterr().out.split("trained ")[1].split(" tokens")[0].replace(",", ""))
    assert trained < 1500
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"trained only {trained:,} of the 3,000 tokens requested" in warnings[0]


def test_vocab_size_with_a_given_target_tokenizer_is_refused(ws, tmp_path, capsys):
    assert run("transfer", "--model", ws / "model", "--parallel", ws / "pairs.tsv", "--target-tokenizer",
               ws / "target", "--vocab-size", 8000, "--output", tmp_path / "out") == 2
    line = one_line(capsys.readouterr().err)
    assert "--vocab-size 8000 applies only to a tokenizer trained on --text" in line
    assert "drop --vocab-size" in line


# --- 8. -q and evaluation windows ----------------------------------------------------------------

def test_quiet_silences_progress_bars(ws, tmp_path, capsys, monkeypatch):
    from transformers.utils import logging as hf_logging

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    argv = ["transplant", "--in-memory", "--model", ws / "model", "--mapping", ws / "mapping", "--output"]
    try:
        hf_logging.enable_progress_bar()
        assert run("-v", *argv, tmp_path / "loud") == 0
        assert "it/s]" in capsys.readouterr().err  # transformers' "Writing model shards" bar, shown with -v
        hf_logging.enable_progress_bar()
        assert run(*argv, tmp_path / "default") == 0
        assert "Writing model shards" not in capsys.readouterr().err  # hidden by default: ours are enough
        assert run("-q", *argv, tmp_path / "quiet") == 0
        captured = capsys.readouterr()
        assert "it/s" not in captured.err and "%|" not in captured.err and captured.err.strip() == ""
        assert os.environ["TQDM_DISABLE"] == "1"
    finally:
        hf_logging.enable_progress_bar()


def test_evaluate_caps_the_window_to_the_models_context(ws, capsys, caplog):
    assert run("evaluate", "perplexity", "--model", ws / "model", "--text", ws / "target.txt", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["seq_len"] == 127 and "|seq:127|" in result["signature"]
    assert "--seq-len 512 capped to 127: the model has 128 positions" in caplog.text


# --- 3, 6, 7. races, signals and leftovers (real subprocesses) ---------------------------------

def eflomal_children(marker: str) -> list[int]:
    """Live eflomal processes whose command line mentions ``marker`` (a test's own directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
                state = (entry / "stat").read_text().split(") ")[-1][:1]
            except OSError:
                continue
            if "eflomal" in cmdline and marker in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def align_argv(ws: Path, out: Path, *extra, parallel: str = "pairs.tsv") -> list:
    return ["-q", "align", "--model", ws / "model", "--target-tokenizer", ws / "target", "--parallel",
            ws / parallel, "--output", out, *extra]


needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG")


@pytest.fixture
def no_aligner_left(tmp_path):
    """Kills the eflomal processes this test started that outlive it (only when the test failed)."""
    yield
    for pid in eflomal_children(str(tmp_path)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@needs_linux
def test_sigterm_during_alignment_cleans_up_and_kills_the_aligner(ws, tmp_path, no_aligner_left):
    pytest.importorskip("eflomal")
    out = tmp_path / "out"
    process = start(align_argv(ws, out, parallel="long.tsv"), tmp_path, pause="aligning")
    flag = reached(process, tmp_path, "aligning")
    assert eflomal_children(str(tmp_path)), "eflomal should be running, with its files next to the output"
    assert [p.name for p in tmp_path.glob(".out.partial-*-scratch")]  # not in the system temp directory
    assert not list((tmp_path / "systmp").iterdir())
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    flag.unlink(missing_ok=True)
    assert code == 143
    assert one_line(err) == "transtok align: terminated; no partial output was kept"
    assert leftovers(tmp_path, "out") == []
    assert not list((tmp_path / "systmp").iterdir())
    assert eflomal_children(str(tmp_path)) == []


@pytest.mark.slow
@needs_linux
def test_sigkill_during_alignment_kills_the_aligner_and_the_next_run_sweeps(ws, tmp_path, caplog, no_aligner_left):
    pytest.importorskip("eflomal")
    out = tmp_path / "out"
    process = start(align_argv(ws, out, parallel="long.tsv"), tmp_path, pause="aligning")
    flag = reached(process, tmp_path, "aligning")
    assert eflomal_children(str(tmp_path))
    process.kill()
    process.communicate()
    flag.unlink()
    deadline = time.monotonic() + HANG  # Linux kills it at once; the wait only bounds a hang
    while eflomal_children(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert eflomal_children(str(tmp_path)) == [], "the aligner outlived its parent"
    left = leftovers(tmp_path, "out")
    assert ".out.lock" in left and any(name.endswith("-scratch") for name in left)

    caplog.clear()
    assert run(*align_argv(ws, out, "--aligner", "fast_align")) == 0  # the next run, in this process
    assert f"left next to out by an interrupted run (pid {process.pid})" in caplog.text
    assert leftovers(tmp_path, "out") == ["out"]
    assert not list((tmp_path / "systmp").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("stage, overwrite", [("commit", False), ("replaced", True)])
def test_sigkill_while_writing_leaves_only_what_the_next_run_sweeps(ws, tmp_path, caplog, stage, overwrite):
    out = tmp_path / "out"
    if overwrite:
        shutil.copytree(ws / "alignment", out)
        (out / "old-marker").write_text("old")
    extra = ["--aligner", "fast_align"] + (["--overwrite"] if overwrite else [])
    process = start(align_argv(ws, out, *extra), tmp_path, pause=stage)
    flag = reached(process, tmp_path, stage)
    process.kill()
    process.communicate()
    flag.unlink()
    left = leftovers(tmp_path, "out")
    assert any(".partial-" in n or ".old-" in n for n in left), left  # what a kill cannot clean up

    caplog.clear()
    assert run(*align_argv(ws, out, "--aligner", "fast_align", "--overwrite")) == 0
    assert f"left next to out by an interrupted run (pid {process.pid})" in caplog.text
    assert leftovers(tmp_path, "out") == ["out"]
    assert not (out / "old-marker").exists()


@pytest.mark.slow
def test_a_second_run_to_the_same_output_is_refused_at_once(ws, tmp_path, capsys):
    out = tmp_path / "out"
    first = start(align_argv(ws, out, "--aligner", "fast_align"), tmp_path, pause="claimed")
    flag = reached(first, tmp_path, "claimed")
    assert run(*align_argv(ws, out, "--aligner", "fast_align")) == 2  # the second run, in this process
    assert one_line(capsys.readouterr().err) == (
        f"transtok align: error: another run (pid {first.pid}) is writing {str(out)!r}; wait for it to finish or "
        "choose another --output")
    assert leftovers(tmp_path, "out") == [".out.lock"]  # the first run's
    flag.unlink()
    code, err = finish(first)
    assert code == 0, err
    assert leftovers(tmp_path, "out") == ["out"]


def test_ctrl_c_before_the_verb_runs_is_one_line(tmp_path):
    process = start(["--help"], tmp_path, pause="parse")
    flag = reached(process, tmp_path, "parse")
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    flag.unlink(missing_ok=True)
    assert code == 130
    assert one_line(err) == "transtok: interrupted; no partial output was kept"


# --- the pieces, in process ----------------------------------------------------------------------

def test_a_killed_overwrite_between_the_two_renames_gets_the_old_output_back(tmp_path, caplog):
    out = tmp_path / "out"
    (tmp_path / ".out.old-x1" / "old").mkdir(parents=True)
    (tmp_path / ".out.old-x1" / "old" / "keep.txt").write_text("old")
    (tmp_path / ".out.old-x1" / "old" / artifacts.MARKER).write_text(artifacts.MARKER_TEXT)
    (tmp_path / ".out.partial-y2").mkdir()
    (tmp_path / ".out.lock").write_text("999999999 host\n")
    artifacts.check_output_dir(out, overwrite=True)
    assert (out / "keep.txt").read_text() == "old"
    assert "restored" in caplog.text and "(pid 999999999)" in caplog.text
    artifacts.release_output(out)
    assert leftovers(tmp_path, "out") == ["out"]


def test_claims_are_reentrant_and_released(tmp_path):
    out = tmp_path / "deep" / "out"
    artifacts.check_output_dir(out)
    artifacts.check_output_dir(out)  # the same process may take its own output again
    assert (tmp_path / "deep" / ".out.lock").read_text().split()[0] == str(os.getpid())
    artifacts.release_all()
    assert not (tmp_path / "deep").exists()  # the parent it created for the lock is gone again
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        artifacts.check_output_dir(tmp_path / "full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_an_interrupted_finetune_keeps_only_resumable_checkpoints(tmp_path):
    from transtok.finetune import FinetuneConfig, _check_run_dir, after_interrupt, mark_complete

    config = FinetuneConfig(model="m", train=["t.txt"], output=str(tmp_path / "out"))
    root = config.checkpoint_path
    _check_run_dir(config, {}, True)  # this run makes it
    (root / "stage-1-embeddings").mkdir(parents=True)
    assert after_interrupt(config) == "no partial output was kept"
    assert not root.exists()  # nothing to resume from: removed
    (root / "stage-1-embeddings" / "checkpoint-5").mkdir(parents=True)
    (root / "stage-1-embeddings" / "checkpoint-5" / "model.safetensors").write_bytes(b"weights")
    mark_complete(root / "stage-1-embeddings" / "checkpoint-5")
    message = after_interrupt(config)
    assert f"resumable checkpoints stay in {root}: run the same command with `resume=True`" in message
    assert (root / "stage-1-embeddings" / "checkpoint-5").is_dir()


def test_coverage_of_a_capped_stream_and_overlaps_of_in_memory_alignments(ws):
    import scipy.sparse as sp

    from transtok.align import AlignmentCounts
    from transtok.shards import CorpusStream, stream_coverage

    stream = CorpusStream([ws / "pairs.tsv"], chunk_size=64, max_pairs=100, dedupe=False, max_length_ratio=None)
    assert sum(len(c) for c in stream) == 100
    (corpus, entry), = stream_coverage(stream).items()
    assert entry == {"ranges": [[0, 100]], "pairs": None, "files": ["pairs.tsv"],  # only the pairs looked at
                     "fingerprint": "pairs"}

    def part(start, end):
        return AlignmentCounts(sp.csr_matrix((3, 2)), "s", "t", {"pairs": end - start},
                               {corpus: {"ranges": [[start, end]], "pairs": 200, "files": ["pairs.tsv"]}})

    merged = AlignmentCounts.merge([part(100, 200), part(0, 100)])
    assert merged.coverage[corpus]["ranges"] == [[0, 200]] and merged.stats["corpus_pairs"] == 200
    with pytest.raises(ConfigError, match=r"^alignment 1 and alignment 2 both count pairs 50\.\.100 of corpus "):
        AlignmentCounts.merge([part(0, 100), part(50, 200)])
