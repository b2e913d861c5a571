"""Disks that fill: a write refused for want of space gives one line (the path, the free space, what
is left) and exit 2, leaves nothing new, keeps a previous output under --overwrite, and finetune
resumes from its last complete checkpoint.

In-process tests inject ENOSPC into the writers (or fake ``shutil.disk_usage``); the tmpfs tests run
the real CLI on a small file system that really fills (skipped where mounting is not permitted).
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import factories
from commandline import leftovers, one_line, run
from transtok import artifacts, diskspace
from transtok import finetune as ft
from transtok.errors import ConfigError, DataError, DiskFullError

SRC = Path(artifacts.__file__).parents[1]
SEQ, BATCH = 32, 4

pytestmark = pytest.mark.usefixtures("one_thread")





def digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def usage(free: int):
    """A fake ``shutil.disk_usage`` reporting ``free`` bytes free everywhere."""
    return lambda path: shutil._ntuple_diskusage(10**12, 10**12 - free, free)


def enospc(path="") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("diskfull")
    pairs = factories.cipher_corpus(200)
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    texts = [t for _, t in factories.cipher_corpus(1500)]
    (root / "train.txt").write_text("\n".join(texts[:1300]) + "\n", encoding="utf-8")
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=350)
    target = factories.byte_level_tokenizer([t for _, t in pairs], vocab_size=330)
    model = factories.tiny_causal_lm("llama", len(source), False, source)
    model.save_pretrained(root / "model")
    source.save_pretrained(root / "model")
    model.save_pretrained(root / "sharded", max_shard_size="20KB")
    source.save_pretrained(root / "sharded")
    target.save_pretrained(root / "target")
    trained = factories.tiny_causal_lm("llama", len(target), True, target)  # speaks the training text
    trained.save_pretrained(root / "ft-model")
    target.save_pretrained(root / "ft-model")
    assert run("map", "--init", "fvt", "--model", root / "model", "--target-tokenizer", root / "target",
               "--output", root / "mapping") == 0
    return root


VERBS = {
    "transplant": lambda ws, out: ["transplant", "--model", ws / "model", "--mapping", ws / "mapping",
                                   "--output", out],
    "transplant-in-memory": lambda ws, out: ["transplant", "--in-memory", "--model", ws / "model",
                                             "--mapping", ws / "mapping", "--output", out],
    "transfer": lambda ws, out: ["transfer", "--model", ws / "model", "--parallel", ws / "pairs.tsv",
                                 "--target-tokenizer", ws / "target", "--init", "fvt", "--unigram-prior", "0",
                                 "--output", out],
    "map": lambda ws, out: ["map", "--init", "fvt", "--model", ws / "model", "--target-tokenizer",
                            ws / "target", "--output", out],
}


def previous_output(ws, tmp_path, verb, overwrite: bool) -> dict[str, str] | None:
    """With ``overwrite``: write a first output to tmp_path/out and return its digest."""
    if not overwrite:
        return None
    assert run(*VERBS[verb](ws, tmp_path / "out")) == 0
    return digest(tmp_path / "out")


# --- recognising a full disk ------------------------------------------------------------------------

def test_a_full_disk_is_recognised_by_errno_text_or_cause(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    assert diskspace.is_disk_full(enospc())
    assert diskspace.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert diskspace.is_disk_full(SafetensorError("Error while serializing: I/O error: No space left on device "
                                                  "(os error 28)"))
    try:
        try:
            raise enospc()
        except OSError as exc:
            raise RuntimeError("writing failed") from exc
    except RuntimeError as exc:
        assert diskspace.is_disk_full(exc)  # a wrapper's cause
    try:
        try:
            raise enospc()
        except OSError as exc:
            raise ConfigError("a message written on purpose") from exc
    except ConfigError as exc:
        assert not diskspace.is_disk_full(exc)  # says its own cause
    opaque = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert not diskspace.is_disk_full(opaque)
    assert not diskspace.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    monkeypatch.setattr(shutil, "disk_usage", usage(10**9))
    assert not diskspace.is_disk_full(opaque, tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", usage(4096))
    assert diskspace.is_disk_full(opaque, tmp_path)  # a writer that names no cause, on a full disk
    assert not diskspace.is_disk_full(KeyboardInterrupt(), tmp_path)
    # not a write: an out-of-memory error or a bug while the disk happens to be low is not a full disk
    assert not diskspace.is_disk_full(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), tmp_path)
    assert not diskspace.is_disk_full(ValueError("a bug"), tmp_path)


def test_free_space_is_read_from_the_nearest_existing_parent(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: seen.append(Path(path)) or usage(123)(path))
    assert diskspace.free_space(tmp_path / "not" / "yet") == 123
    assert seen == [tmp_path]
    assert diskspace.size_text(1_234_567_890) == "1.2 GB" and diskspace.size_text(999) == "999 bytes"


# --- free space checked before a transplant writes --------------------------------------------------

def test_transplant_size_counts_rewritten_and_copied_shards_but_not_linked_ones(ws, tmp_path):
    from transtok.checkpoint import inspect_checkpoint, transplant_checkpoint, transplant_size
    from transtok.mapping import TokenMapping
    from transtok.loading import load_tokenizer

    layout = inspect_checkpoint(ws / "sharded")
    assert len(layout.headers) > 2
    mapping = TokenMapping.load(ws / "mapping")
    target = load_tokenizer(str(ws / "target"))
    estimate = transplant_size(layout, mapping, tmp_path)
    (tmp_path / "out").mkdir()
    transplant_checkpoint(layout, mapping, target, tmp_path / "out")
    written = sum(p.stat().st_size for p in (tmp_path / "out").glob("*.safetensors"))
    assert abs(estimate - written) <= 512 * len(layout.headers)  # headers change by a few bytes
    linked = transplant_size(layout, mapping, tmp_path, hardlink=True)
    touched = {layout.shard_of(n) for n in layout.edited}
    assert abs(linked - sum((tmp_path / "out" / s).stat().st_size for s in touched)) <= 512 * len(touched)


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("verb", ["transplant", "transplant-in-memory", "transfer"])
def test_too_little_free_space_is_refused_before_writing(ws, tmp_path, capsys, monkeypatch, verb, overwrite):
    before = previous_output(ws, tmp_path, verb, overwrite)
    capsys.readouterr()
    monkeypatch.setattr(shutil, "disk_usage", usage(20_000))  # the tiny model takes ~100 kB
    argv = VERBS[verb](ws, tmp_path / "out") + (["--overwrite"] if overwrite else [])
    assert run(*argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "needs about " in line and f"in {str(tmp_path)!r}, which has 20.0 kB free" in line
    assert "free space there or choose another --output" in line
    assert ("the previous output stays until the new one is complete" in line) == overwrite
    assert leftovers(tmp_path, "out") == (["out"] if overwrite else [])
    if overwrite:
        assert digest(tmp_path / "out") == before


def test_enough_free_space_passes_the_check(ws, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", usage(10**9))
    assert run(*VERBS["transplant"](ws, tmp_path / "out")) == 0


# --- a write that fails with ENOSPC -----------------------------------------------------------------

def _fail_writes(monkeypatch, verb):
    """Make the writer of ``verb``'s largest file write part of it, then fail as a full disk does."""
    from safetensors import SafetensorError

    if verb == "transplant":
        from transtok import checkpoint

        def copy_range(src, dst, start, size, source):
            dst.write(b"\0" * min(size, 1000))
            raise enospc(dst.name)

        monkeypatch.setattr(checkpoint, "_copy_range", copy_range)
    elif verb in ("transplant-in-memory", "transfer"):
        import transformers.modeling_utils as modeling_utils

        def save_file(tensors, filename, metadata=None):
            Path(filename).write_bytes(b"\0" * 1000)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

        monkeypatch.setattr(modeling_utils, "safe_save_file", save_file)
    else:
        from transtok import pipeline

        def table(path, *args, **kwargs):
            Path(path).write_text("target_id\n")
            raise enospc(path)

        monkeypatch.setattr(pipeline, "write_mapping_table", table)


@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("verb", ["transplant", "transplant-in-memory", "transfer", "map"])
def test_a_write_that_fills_the_disk_keeps_nothing_new(ws, tmp_path, capsys, monkeypatch, verb, overwrite):
    before = previous_output(ws, tmp_path, verb, overwrite)
    capsys.readouterr()
    _fail_writes(monkeypatch, verb)
    argv = VERBS[verb](ws, tmp_path / "out") + (["--overwrite"] if overwrite else [])
    assert run(*argv) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"transtok {VERBS[verb](ws, '')[0]}: error: ran out of disk space writing "
                           f"{str(tmp_path / 'out')!r} after writing ")
    assert "free there now); nothing new was kept" in line
    assert (f"the previous {str(tmp_path / 'out')!r} is intact" in line) == overwrite
    assert line.endswith("free space there or choose another --output")
    assert leftovers(tmp_path, "out") == (["out"] if overwrite else [])
    if overwrite:
        assert digest(tmp_path / "out") == before


def test_scratch_files_that_fill_the_disk_are_removed(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("old")
    with pytest.raises(DiskFullError, match=r"its scratch files are removed and nothing new was kept, the previous"):
        with artifacts.scratch_dir(tmp_path / "out") as scratch:
            (scratch / "source").write_bytes(b"x" * 5000)
            raise enospc(scratch / "source")
    assert leftovers(tmp_path, "out") == ["out"]
    with pytest.raises(ValueError, match="other"):  # other errors pass through unchanged
        with artifacts.scratch_dir(tmp_path / "out"):
            raise ValueError("other")


def test_an_aligner_child_that_fails_on_a_full_disk_is_a_full_disk(tmp_path, monkeypatch):
    from transtok.align import _run_child

    script = [sys.executable, "-c", "import sys; sys.stderr.write('sentence_read(): failed\\n'); sys.exit(1)"]
    with pytest.raises(DataError, match=r"^eflomal exited with code 1: sentence_read\(\): failed \("):
        _run_child(script, "eflomal", tmp_path)  # its stderr is in the one line, not printed
    monkeypatch.setattr(shutil, "disk_usage", usage(100))
    with pytest.raises(OSError) as raised:
        _run_child(script, "eflomal", tmp_path)
    assert raised.value.errno == errno.ENOSPC and "sentence_read(): failed" in str(raised.value)


def test_an_enospc_no_output_covers_is_still_one_line(tmp_path, capsys, monkeypatch):
    from transtok import pipeline

    def run_map(*args, **kwargs):
        raise enospc(tmp_path / "somewhere" / "file")

    monkeypatch.setattr(pipeline, "run_map", run_map)
    assert run("map", "--init", "fvt", "--model", "m", "--target-tokenizer", "t", "--output",
               tmp_path / "out") == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"transtok map: error: ran out of disk space writing "
                           f"{str(tmp_path / 'somewhere' / 'file')!r}")
    assert " free there now)" in line


# --- finetune checkpoints ---------------------------------------------------------------------------

def _ft_config(ws, tmp_path, **overrides) -> ft.FinetuneConfig:
    base = dict(model=str(ws / "ft-model"), train=[str(ws / "train.txt")], output=str(tmp_path / "out"),
                max_tokens=SEQ * BATCH * 8, seq_len=SEQ, batch_size=BATCH, lr=1e-2, warmup=2, log_every=1,
                save_every=4, precision="fp32")
    base.update(overrides)
    return ft.FinetuneConfig(**base)


def _ft_argv(ws, tmp_path, *extra) -> list:
    return ["finetune", "--model", ws / "ft-model", "--text", ws / "train.txt", "--output", tmp_path / "out",
            "--max-tokens", SEQ * BATCH * 8, "--seq-len", SEQ, "--batch-size", BATCH, "--lr", 0.01, "--warmup", 2,
            "--log-every", 1, "--save-every", 4, "--precision", "fp32", *extra]


def _interrupt_at(monkeypatch, step: int) -> None:
    from transformers import Trainer

    original, calls = Trainer.training_step, {"n": 0}

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crashing)


def test_resume_skips_half_written_checkpoints(ws, tmp_path, monkeypatch, caplog):
    config = _ft_config(ws, tmp_path)
    stage = config.checkpoint_path / "stage-1-embeddings"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 6)
        with pytest.raises(KeyboardInterrupt):
            ft.finetune(config)
    assert [p.name for p in stage.iterdir()] == ["checkpoint-4"]
    assert ft.checkpoint_complete(stage / "checkpoint-4")
    # a save cut short by a full disk: no marker, a truncated model file
    shutil.copytree(stage / "checkpoint-4", stage / "checkpoint-5")
    (stage / "checkpoint-5" / ft.COMPLETE_MARKER).unlink()
    model_file = stage / "checkpoint-5" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:100])
    # a marked one whose file was cut afterwards
    shutil.copytree(stage / "checkpoint-4", stage / "checkpoint-6")
    optimizer = stage / "checkpoint-6" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    assert not ft.checkpoint_complete(stage / "checkpoint-6")

    with caplog.at_level(logging.WARNING, logger="transtok"):
        resumed = ft.finetune(_ft_config(ws, tmp_path, resume=True, keep_checkpoints=True))
    for name in ("checkpoint-5", "checkpoint-6"):
        assert f"skipping {stage / name}: it was not completely written" in caplog.text
    assert resumed.stages[0]["steps_run_now"] == 4  # from step 4, not 6 and not from scratch
    assert [r["step"] for r in resumed.history if "loss" in r] == list(range(1, 9))
    assert [p.name for p in stage.iterdir()] == ["checkpoint-8"]  # older ones go once the new one is complete
    assert ft.checkpoint_complete(stage / "checkpoint-8")


def test_an_interrupt_counts_only_complete_checkpoints(ws, tmp_path):
    config = _ft_config(ws, tmp_path)
    stage = config.checkpoint_path / "stage-1-embeddings"
    ft._check_run_dir(config, {}, True)  # this run makes the checkpoint directory (and writes run.json)
    (stage / "checkpoint-4").mkdir(parents=True)
    (stage / "checkpoint-4" / "model.safetensors").write_bytes(b"half")
    assert ft.after_interrupt(config) == "no partial output was kept"
    assert not config.checkpoint_path.exists()
    (stage / "checkpoint-4").mkdir(parents=True)
    (stage / "checkpoint-4" / "model.safetensors").write_bytes(b"whole")
    ft.mark_complete(stage / "checkpoint-4")
    (stage / "checkpoint-8").mkdir()
    assert "resumable checkpoints stay in" in ft.after_interrupt(config)
    # not a directory this process prepared (no run.json now): nothing removed; --resume skips the cut one
    assert sorted(p.name for p in stage.iterdir()) == ["checkpoint-4", "checkpoint-8"]


def test_a_checkpoint_that_fills_the_disk_keeps_the_last_complete_one(ws, tmp_path, capsys, monkeypatch):
    saves = {"optimizer": 0}
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt"):
            saves["optimizer"] += 1
            if saves["optimizer"] == 2:  # torch.save on a full disk: a part of the file, an error without errno
                Path(f).write_bytes(b"PK\3\4")
                monkeypatch.setattr(shutil, "disk_usage", usage(0))
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return original(obj, f, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", save)
        assert run(*_ft_argv(ws, tmp_path)) == 2
    line = one_line(capsys.readouterr().err)
    root = tmp_path / "out.checkpoints"
    stage = root / "stage-1-embeddings"
    assert line.startswith(f"transtok finetune: error: ran out of disk space writing {str(stage)!r}")
    assert f"0 bytes free there now); no partial output was kept; resumable checkpoints stay in {root}" in line
    assert [p.name for p in stage.iterdir()] == ["checkpoint-4"]  # the half-written checkpoint-8 is gone
    assert leftovers(tmp_path, "out") == []
    assert run(*_ft_argv(ws, tmp_path, "--resume")) == 0
    assert "wrote" in capsys.readouterr().out
    assert not root.exists()


def test_a_final_output_that_fills_the_disk_says_the_checkpoints_stay(ws, tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError
    import transformers.modeling_utils as modeling_utils

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    (tmp_path / "out" / artifacts.MARKER).write_text(artifacts.MARKER_TEXT)  # an output transtok wrote

    original = modeling_utils.safe_save_file

    def save_file(tensors, filename, metadata=None):
        if ".out.partial-" not in str(filename):  # the checkpoints fit, the final output does not
            return original(tensors, filename, metadata=metadata)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(modeling_utils, "safe_save_file", save_file)
    assert run(*_ft_argv(ws, tmp_path, "--overwrite")) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"transtok finetune: error: ran out of disk space writing {str(tmp_path / 'out')!r}")
    assert f"resumable checkpoints stay in {tmp_path / 'out.checkpoints'}" in line
    assert f"the previous {str(tmp_path / 'out')!r} is intact" in line
    assert leftovers(tmp_path, "out") == ["out"] and (tmp_path / "out" / "old.txt").read_text() == "old"


# --- a real file system that fills ------------------------------------------------------------------

@pytest.fixture
def disk(tmp_path):
    """A fresh tmpfs of 4 MB at tmp_path/disk, unmounted after the test; skips where mounting is refused."""
    path = tmp_path / "disk"
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` until ``leave`` bytes are free (rounded to pages)."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free + (filler.stat().st_size if filler.exists() else 0)
    with open(filler, "wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * max(free - leave, 0))
    return filler


def cli(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "transtok", "-q", *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_a_real_full_disk_under_map_and_overwrite(ws, disk):
    argv = VERBS["map"](ws, disk / "out")
    fill(disk, 16 << 10)
    done = cli(*argv)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert f"ran out of disk space writing {str(disk / 'out')!r}" in line and "nothing new was kept" in line
    assert leftovers(disk, "out") == []
    (disk / "filler").unlink()
    assert run(*argv) == 0
    before = digest(disk / "out")
    fill(disk, 16 << 10)
    done = cli(*argv, "--overwrite")
    assert done.returncode == 2, done.stderr
    assert f"the previous {str(disk / 'out')!r} is intact" in one_line(done.stderr)
    assert leftovers(disk, "out") == ["out"] and digest(disk / "out") == before


@pytest.mark.slow
def test_a_real_full_disk_under_a_transplant_that_passed_the_check(ws, disk):
    from transtok.checkpoint import inspect_checkpoint, transplant_size
    from transtok.mapping import TokenMapping

    # room for the shards it estimates, not for the tokenizer and config files it also writes
    needed = transplant_size(inspect_checkpoint(ws / "model"), TokenMapping.load(ws / "mapping"), disk)
    fill(disk, needed + (8 << 10))
    done = cli(*VERBS["transplant"](ws, disk / "out"))
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert f"ran out of disk space writing {str(disk / 'out')!r}" in line and "nothing new was kept" in line
    assert leftovers(disk, "out") == []


@pytest.mark.slow
def test_a_real_full_disk_under_the_aligner(ws, disk):
    fill(disk, 8 << 10)  # eflomal's scratch copy of the corpus does not fit
    done = cli("align", "--model", ws / "model", "--target-tokenizer", ws / "target", "--parallel",
               ws / "pairs.tsv", "--aligner", "eflomal", "--output", disk / "out")
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert f"ran out of disk space writing {str(disk / 'out')!r}" in line and "scratch files are removed" in line
    assert leftovers(disk, "out") == []


@pytest.mark.slow
def test_a_real_full_disk_under_finetune_checkpoints_then_resume(ws, tmp_path, disk):
    argv = _ft_argv(ws, tmp_path, "--checkpoint-dir", disk / "ck")
    assert run(*argv, "--keep-checkpoints") == 0  # measure one checkpoint (in pages, as tmpfs counts)
    size = shutil.disk_usage(disk).used
    shutil.rmtree(tmp_path / "out")
    shutil.rmtree(disk / "ck")
    filler = fill(disk, size + size // 2)  # room for checkpoint-4, not for checkpoint-8 next to it
    done = cli(*argv)
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert f"ran out of disk space writing {str(disk / 'ck' / 'stage-1-embeddings')!r}" in line
    assert f"resumable checkpoints stay in {disk / 'ck'}: run the same command with --resume" in line
    assert [p.name for p in (disk / "ck" / "stage-1-embeddings").iterdir()] == ["checkpoint-4"]
    assert not (tmp_path / "out").exists()
    filler.unlink()
    done = cli(*argv, "--resume")
    assert done.returncode == 0, done.stderr
    assert not (disk / "ck").exists() and (tmp_path / "out" / "model.safetensors").is_file()


# --- what a resumed or interrupted run may remove ----------------------------------------------------

def _checkpoint(stage: Path, step: int, *, marked: bool) -> Path:
    path = stage / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"weights")
    if marked:
        ft.mark_complete(path)
    return path


def test_an_older_transtoks_checkpoints_have_no_marker_and_are_never_taken_for_cut_ones(ws, tmp_path):
    config = _ft_config(ws, tmp_path)
    root, stage = config.checkpoint_path, config.checkpoint_path / "stage-1-embeddings"
    stage.mkdir(parents=True)
    (root / "run.json").write_text(json.dumps({"made_dir": True}))  # written before checkpoints were marked
    old = _checkpoint(stage, 3, marked=False)
    assert ft._completed_steps(stage) == (str(old), 3)
    assert "resumable checkpoints stay" in ft.after_interrupt(config) and old.is_dir()


def test_an_interrupt_removes_no_checkpoint_and_resume_removes_only_cut_ones_of_a_marking_run(ws, tmp_path):
    config = _ft_config(ws, tmp_path)
    root, stage = config.checkpoint_path, config.checkpoint_path / "stage-1-embeddings"
    ft._check_run_dir(config, {}, True)
    assert json.loads((root / "run.json").read_text())["complete_markers"] is True
    whole, cut = _checkpoint(stage, 2, marked=True), _checkpoint(stage, 4, marked=False)
    ft._RUN_DIRS.clear()  # prepared by another process (e.g. a run still writing there)
    assert "resumable checkpoints stay" in ft.after_interrupt(config)
    assert whole.is_dir() and cut.is_dir()  # an interrupt removes nothing it did not write
    assert ft._completed_steps(stage) == (str(whole), 2) and not cut.exists()  # --resume skips and removes it


def test_overwrite_keeps_the_record_of_who_made_the_checkpoint_directory(ws, tmp_path):
    config = _ft_config(ws, tmp_path)
    root = config.checkpoint_path
    root.mkdir(parents=True)  # the user's (empty) directory
    ft._check_run_dir(config, {}, True)
    assert json.loads((root / "run.json").read_text())["made_dir"] is False
    ft._RUN_DIRS.clear()  # a later run, in another process, replaces it under --overwrite
    (root / "stage-1-embeddings").mkdir()
    ft._check_run_dir(_ft_config(ws, tmp_path, overwrite=True), {}, True)
    assert json.loads((root / "run.json").read_text())["made_dir"] is False


def test_a_diverged_step_logs_null_not_nan_and_the_history_stays_json(tmp_path):
    from types import SimpleNamespace

    _, RunLog, _, _ = ft._make_trainer_classes()
    history: list[dict] = []
    log = RunLog(tmp_path / "log.jsonl", 0, "embeddings", 0, 128, history, writer=True)
    log.on_log(None, SimpleNamespace(global_step=3), None, logs={"loss": float("nan"), "grad_norm": float("inf"),
                                                               "learning_rate": 1e-3})
    assert history[0]["loss"] is None and history[0]["grad_norm"] is None and history[0]["learning_rate"] == 1e-3
    line = (tmp_path / "log.jsonl").read_text()
    assert "NaN" not in line and "Infinity" not in line
    artifacts.write_json(tmp_path / "history.json", history)  # strict JSON: would raise on a NaN
