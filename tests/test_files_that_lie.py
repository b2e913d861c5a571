"""Files that lie: a weight file that would run code, a broken or escaping hydra.json, a re-encoded
copy of a corpus, and a --output that can only fail after the work. Each gives one line and exit 2
and leaves nothing behind."""
from __future__ import annotations

import copy
import gzip
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

import factories
from commandline import finish, leftovers, one_line, reached, run, start
from transtok.errors import ConfigError


class _Opens:
    """Unpickling this calls ``open(path, "w")``: a pickle that would run code (it creates a file)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("lies")
    pairs = factories.cipher_corpus(200)
    (root / "pairs.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    (root / "target.txt").write_text("".join(f"{t}\n" for _, t in pairs[:20]), encoding="utf-8")
    (root / "in.txt").write_text("the king went\nof gold\n", encoding="utf-8")
    source = factories.byte_level_tokenizer([s for s, _ in pairs], vocab_size=350)
    target = factories.byte_level_tokenizer([t for _, t in pairs], vocab_size=330)
    model = factories.tiny_causal_lm("llama", len(source), True, source)
    model.save_pretrained(root / "model")
    source.save_pretrained(root / "model")
    target.save_pretrained(root / "target")
    other = copy.deepcopy(model)
    other.resize_token_embeddings(len(target), mean_resizing=False)
    other.config.vocab_size = len(target)
    for cfg in (other.config, other.generation_config):
        cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = target.bos_token_id, target.eos_token_id, \
            target.pad_token_id
    other.save_pretrained(root / "other")
    target.save_pretrained(root / "other")
    assert run("map", "--init", "fvt", "--model", root / "model", "--target-tokenizer", root / "target",
               "--output", root / "mapping") == 0
    assert run("hydra", "build", "--vocab", f"en={root / 'model'}", "--vocab", f"xx={root / 'other'}",
               "--output", root / "hydra") == 0
    return root


def weights_dir(ws: Path, destination: Path, payload) -> Path:
    """A copy of the test model whose only weights are ``pytorch_model.bin`` holding ``payload``."""
    shutil.copytree(ws / "model", destination)
    (destination / "model.safetensors").unlink()
    torch.save(payload, destination / "pytorch_model.bin")
    return destination


def model_argv(verb: str, ws: Path, model: Path, out: Path) -> list:
    return {
        "transfer": ["transfer", "--model", model, "--parallel", ws / "pairs.tsv", "--target-tokenizer",
                     ws / "target", "--aligner", "fast_align", "--output", out],
        "transplant": ["transplant", "--model", model, "--mapping", ws / "mapping", "--output", out],
        "transplant-in-memory": ["transplant", "--in-memory", "--model", model, "--mapping", ws / "mapping",
                                 "--output", out],
        "evaluate": ["evaluate", "perplexity", "--model", model, "--text", ws / "target.txt"],
        "finetune": ["finetune", "--model", model, "--text", ws / "target.txt", "--output", out],
        "hydra": ["hydra", "build", "--vocab", f"en={ws / 'model'}", "--vocab", f"xx={model}", "--output", out],
        "translate": ["translate", "--model", model, "--from", "en", "--to", "es", "--text", ws / "in.txt",
                      "--output", out],
    }[verb]


VERBS = ["transfer", "transplant", "transplant-in-memory", "evaluate", "finetune", "hydra", "translate"]


# --- a weight file that would run code ------------------------------------------------------------

@pytest.mark.parametrize("verb", VERBS)
def test_a_pickle_that_would_run_code_is_one_line_and_never_runs(ws, tmp_path, capsys, verb):
    marker = tmp_path / "ran"
    model = weights_dir(ws, tmp_path / "model", {"model.embed_tokens.weight": _Opens(marker)})
    assert run(*model_argv(verb, ws, model, tmp_path / "out")) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{model / 'pytorch_model.bin'} is not a plain tensor file: it is a pickle that would import and call " \
           "io.open when loaded, so it was not loaded and nothing in it ran" in line
    assert "torch.load(FILE, weights_only=False)" in line and "save_pretrained(DIR, safe_serialization=True)" in line
    assert not marker.exists()
    assert leftovers(tmp_path, "out") == [] and leftovers(tmp_path, "out.checkpoints") == []


def test_a_plain_tensor_pickle_still_loads_and_a_cut_one_is_named(ws, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(ws / "model").state_dict()
    plain = weights_dir(ws, tmp_path / "plain", state)
    assert run("evaluate", "perplexity", "--model", plain, "--text", ws / "target.txt", "--json") == 0
    assert json.loads(capsys.readouterr().out)["tokens"] > 0

    cut = tmp_path / "cut"
    shutil.copytree(plain, cut)
    data = (cut / "pytorch_model.bin").read_bytes()
    (cut / "pytorch_model.bin").write_bytes(data[:len(data) // 2])
    assert run("transplant", "--model", cut, "--mapping", ws / "mapping", "--output", tmp_path / "out") == 2
    line = one_line(capsys.readouterr().err)
    assert f"{cut / 'pytorch_model.bin'} is truncated or corrupt" in line and "download the checkpoint again" in line
    assert leftovers(tmp_path, "out") == []


def test_a_checkpoint_index_naming_a_shard_outside_its_directory_is_refused(ws, tmp_path, capsys):
    """The streaming transplant reads shards itself: an index entry '../elsewhere/...' must not make it
    read (and copy into the output) a file outside the model directory."""
    from safetensors import safe_open

    model = tmp_path / "model"
    shutil.copytree(ws / "model", model)
    (tmp_path / "elsewhere").mkdir()
    (model / "model.safetensors").rename(tmp_path / "elsewhere" / "model.safetensors")
    with safe_open(tmp_path / "elsewhere" / "model.safetensors", "pt") as handle:
        names = list(handle.keys())
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: "../elsewhere/model.safetensors" for n in names}}), encoding="utf-8")
    assert run("transplant", "--model", model, "--mapping", ws / "mapping", "--output", tmp_path / "out") == 2
    line = one_line(capsys.readouterr().err)
    assert f"{model / 'model.safetensors.index.json'} refers to '../elsewhere/model.safetensors', which is not a " \
           f"path inside {model}: a model directory may only refer to files inside it" in line
    assert leftovers(tmp_path, "out") == []


# --- hydra.json -----------------------------------------------------------------------------------

def hydra_copy(ws: Path, destination: Path, edit) -> Path:
    """A copy of the test Hydra whose hydra.json is cut in half (``edit`` "truncate") or is what
    ``edit(spec)`` returns (or the spec it changed in place)."""
    shutil.copytree(ws / "hydra", destination)
    path = destination / "hydra.json"
    text = path.read_text(encoding="utf-8")
    if edit == "truncate":
        path.write_text(text[:len(text) // 2], encoding="utf-8")
    else:
        spec = json.loads(text)
        changed = edit(spec)
        path.write_text(json.dumps(spec if changed is None else changed), encoding="utf-8")
    return destination


def _set(spec: dict, vocabulary: int, key: str, value) -> None:
    spec["vocabularies"][vocabulary][key] = value


@pytest.mark.parametrize("edit, message", [
    ("truncate", r"hydra.json is truncated or corrupt \(not JSON: "),
    (lambda s: s["vocabularies"], r"hydra.json is truncated or corrupt \(it holds a JSON list, not an object with "
                                  r"format, version, output and vocabularies\)"),
    (lambda s: s.pop("vocabularies") and None, r"\(no 'vocabularies'; expected a non-empty list of "),
    (lambda s: s.update(vocabularies=[]), r"\('vocabularies' \[\]; expected a non-empty list"),
    (lambda s: s.update(version="one"), r"\(version 'one' is not a whole number\)"),
    (lambda s: s.update(version=None), r"\(version None is not a whole number\)"),
    (lambda s: s.update(version=2), r"has format 'transtok-hydra' version 2; this transtok reads up to version 1 "
                                    r"\(upgrade transtok\)"),
    (lambda s: s.update(format="other"), r"has format 'other', not 'transtok-hydra': it does not describe a Hydra"),
    (lambda s: s.update(output="zz"), r"\(output 'zz' is not one of its vocabularies \(xx, en\)\)"),
    (lambda s: _set(s, 1, "offset", "0"), r"\(vocabularies\[1\]\.offset '0' is not a whole number\)"),
    (lambda s: _set(s, 1, "offset", 1), r"vocabulary 'en' has offset 1 and size \d+; the vocabularies must tile"),
    (lambda s: _set(s, 0, "stop_ids", [10**6]), r"vocabularies\[0\]\.stop_ids \[1000000\] is not a list of ids of "),
    (lambda s: _set(s, 1, "name", "xx"), r"\(vocabulary 'xx' is listed twice\)"),
    (lambda s: _set(s, 1, "name", "../en"), r"\(vocabularies\[1\]\.name '\.\./en' is not a vocabulary name"),
    (lambda s: _set(s, 1, "tokenizer", None), r"\(vocabularies\[1\]\.tokenizer None is not a folder path\)"),
])
def test_a_broken_hydra_json_is_one_line_naming_the_file(ws, tmp_path, capsys, edit, message):
    import re

    hydra = hydra_copy(ws, tmp_path / "hydra", edit)
    assert run("translate", "--model", hydra, "--from", "en", "--to", "xx", "--text", ws / "in.txt") == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"transtok translate: error: {hydra / 'hydra.json'} ")
    assert re.search(message, line), line
    if "truncated or corrupt" in line:
        assert line.endswith("; rebuild it with 'transtok hydra build'")


@pytest.mark.parametrize("where", ["../elsewhere", "tokenizers/../../elsewhere", "ABSOLUTE"])
def test_a_tokenizer_path_leaving_the_hydra_is_refused(ws, tmp_path, capsys, where):
    """The tokenizer outside is a valid one: without the check the Hydra would load it and translate."""
    hydra = tmp_path / "hydra"
    shutil.copytree(ws / "hydra" / "tokenizers" / "en", tmp_path / "elsewhere")
    path = str(tmp_path / "elsewhere") if where == "ABSOLUTE" else where
    hydra_copy(ws, hydra, lambda s: _set(s, 1, "tokenizer", path))
    assert run("hydra", "generate", "--model", hydra, "--prompt", "the king", "--prompt-vocab", "en",
               "--max-new-tokens", "2") == 2
    line = one_line(capsys.readouterr().err)
    assert f"{hydra / 'hydra.json'} refers to {path!r}, which is not a path inside {hydra}: a model directory may " \
           "only refer to files inside it. Fix that entry or rebuild it with 'transtok hydra build'" in line


# --- the same corpus twice ------------------------------------------------------------------------

def copies(ws: Path, folder: Path) -> dict[str, list[Path]]:
    """The test corpus as written (TSV) and re-encoded: CRLF + BOM, gzip with blank lines, JSONL, two files."""
    folder.mkdir(exist_ok=True)
    pairs = [tuple(line.split("\t")) for line in (ws / "pairs.tsv").read_text(encoding="utf-8").splitlines()]
    (folder / "crlf.tsv").write_bytes(b"\xef\xbb\xbf" + "".join(f"{s}\t{t}\r\n" for s, t in pairs).encode())
    with gzip.open(folder / "blank.tsv.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(f" {s}\t{t} \n\n" for s, t in pairs))
    (folder / "pairs.jsonl").write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in pairs),
                                        encoding="utf-8")
    (folder / "src.txt").write_text("".join(f"{s}\n" for s, _ in pairs), encoding="utf-8")
    (folder / "trg.txt").write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    return {"tsv": [ws / "pairs.tsv"], "crlf": [folder / "crlf.tsv"], "gzip": [folder / "blank.tsv.gz"],
            "jsonl": [folder / "pairs.jsonl"], "two-files": [folder / "src.txt", folder / "trg.txt"]}


def test_the_fingerprint_is_of_the_pairs_read_whatever_the_encoding_chunking_or_shard(ws, tmp_path, monkeypatch):
    from transtok import shards
    from transtok.shards import CorpusStream, corpus_fingerprint, stream_coverage

    corpus = copies(ws, tmp_path)
    fingerprints = {name: corpus_fingerprint(paths) for name, paths in corpus.items()}
    assert len(set(fingerprints.values())) == 1, fingerprints
    changed = tmp_path / "changed.tsv"
    changed.write_text((ws / "pairs.tsv").read_text(encoding="utf-8").replace("\t", "\t.", 1), encoding="utf-8")
    assert corpus_fingerprint([changed]) != fingerprints["tsv"]

    # Hashed as the stream reads: no second pass over the corpus for a stream read to its end.
    monkeypatch.setattr(shards, "corpus_fingerprint", lambda paths: pytest.fail("a second pass over the corpus"))
    for paths, options in [(corpus["crlf"], {"chunk_size": 7}), (corpus["gzip"], {"chunk_size": 1000}),
                           (corpus["jsonl"], {"chunk_size": 64, "shard": "2/3"})]:
        stream = CorpusStream(paths, **options)
        list(stream)
        (key, entry), = stream_coverage(stream).items()
        assert key == fingerprints["tsv"] and entry["fingerprint"] == "pairs" and entry["pairs"] == 200


@pytest.mark.parametrize("copy_name, shard", [("crlf", None), ("gzip", "2/2")])
def test_a_reencoded_copy_of_a_corpus_is_the_same_corpus_when_merging(ws, tmp_path, capsys, copy_name, shard):
    """'800 pairs of a 400-pair corpus': the original and its CRLF + BOM (or gzip) copy, aligned apart, are
    refused as a double count."""
    corpus = copies(ws, tmp_path / "copies")
    common = ["--model", ws / "model", "--target-tokenizer", ws / "target", "--aligner", "fast_align"]
    original, copied = tmp_path / "a-original", tmp_path / "b-copy"
    assert run("-q", "align", *common, "--parallel", ws / "pairs.tsv", "--output", original) == 0
    assert run("-q", "align", *common, "--parallel", *corpus[copy_name], *(["--shard", shard] if shard else []),
               "--output", copied) == 0
    capsys.readouterr()
    assert run("merge-alignments", "--alignment", original, copied, "--output", tmp_path / "merged") == 2
    line = one_line(capsys.readouterr().err)
    overlap = "0..200" if shard is None else "100..200"
    name = corpus[copy_name][0].name
    assert line.startswith(f"transtok merge-alignments: error: {original} and {copied} both "
                           f"count pairs {overlap} of corpus pairs.tsv (also read as {name}) (")
    assert "would count those pairs twice" in line and "another encoding, line ending, compression or format" in line
    assert leftovers(tmp_path, "merged") == []


def test_merging_an_alignment_with_an_old_byte_fingerprint_warns(ws, tmp_path, caplog):
    import scipy.sparse as sp

    from transtok.align import AlignmentCounts

    def part(key, entry):
        return AlignmentCounts(sp.csr_matrix((3, 2)), "s", "t", {"pairs": 1}, {key: entry})

    new = part("aaaa", {"ranges": [[0, 100]], "pairs": 200, "files": ["pairs.tsv"], "fingerprint": "pairs"})
    old = part("bbbb", {"ranges": [[100, 200]], "pairs": 200, "files": ["pairs.tsv"]})
    merged = AlignmentCounts.merge([new, old], names=["new", "old"])
    assert "old recorded its corpus by its files' bytes (an older transtok), the other alignments by its pairs: if " \
           "they count pairs of the same corpus, that double count cannot be detected; rebuild it with 'transtok " \
           "align' to check" in caplog.text
    assert merged.coverage["aaaa"]["fingerprint"] == "pairs" and "fingerprint" not in merged.coverage["bbbb"]
    caplog.clear()
    AlignmentCounts.merge([new, part("cccc", {**new.coverage["aaaa"], "ranges": [[100, 200]]})])
    assert "files' bytes" not in caplog.text


# --- translate --output, checked before the work --------------------------------------------------

def _unwritable(tmp_path: Path) -> Path | None:
    """A folder this user cannot create files in: a read-only one, or for root /sys."""
    import tempfile

    if os.geteuid() != 0:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        os.rmdir(tempfile.mkdtemp(dir="/sys"))
    except OSError:
        return Path("/sys")
    return None


@pytest.mark.parametrize("case", ["directory", "missing-folder", "folder-is-a-file", "the-input", "input-link",
                                  "unwritable"])
@pytest.mark.parametrize("verb", ["translate", "hydra-generate"])
def test_a_bad_output_file_fails_before_the_model_is_loaded(ws, tmp_path, capsys, case, verb):
    """The model does not exist: a message about --output proves the check came first."""
    source = tmp_path / "in.txt"
    shutil.copy(ws / "in.txt", source)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "link.txt").symlink_to(source)
    output, expected = {
        "directory": (tmp_path / "adir", "is a directory; give a file path, e.g. "),
        "missing-folder": (tmp_path / "nope" / "out.txt", f"{str(tmp_path / 'nope')!r}, does not exist; create the "
                                                          "folder (mkdir -p) or choose another --output"),
        "folder-is-a-file": (tmp_path / "afile" / "out.txt", "is a file, not a folder"),
        "the-input": (source, f"is the input file {str(source)!r}; writing it would replace the text being read"),
        "input-link": (tmp_path / "link.txt", "is the input file"),
        "unwritable": (None, "; choose a writable folder"),
    }[case]
    if case == "unwritable":
        folder = _unwritable(tmp_path)
        if folder is None:
            pytest.skip("no folder this user cannot write")
        output = folder / "out.txt"
    argv = (["translate", "--model", tmp_path / "no-model", "--from", "en", "--to", "xx"] if verb == "translate" else
            ["hydra", "generate", "--model", tmp_path / "no-model", "--prompt-vocab", "en"])
    assert run(*argv, "--text", source, "--output", output) == 2
    line = one_line(capsys.readouterr().err)
    assert "--output" in line and expected in line, line
    assert source.read_text(encoding="utf-8") == (ws / "in.txt").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "in.txt", "link.txt"] + (
        ["readonly"] if case == "unwritable" and os.geteuid() != 0 else [])
    assert not list((tmp_path / "adir").iterdir())


@pytest.mark.slow
def test_translate_writes_its_output_whole_or_not_at_all(ws, tmp_path):
    """A translation interrupted while its file is written leaves the old file as it was (SIGTERM: and
    nothing else; SIGKILL: a hidden leftover that the next run to that file sweeps)."""
    out = tmp_path / "out.txt"
    out.write_text("old\n", encoding="utf-8")
    argv = ["-q", "translate", "--model", ws / "hydra", "--from", "en", "--to", "xx", "--text", ws / "in.txt",
            "--output", out, "--max-new-tokens", "2"]
    process = start(argv, tmp_path, pause="commit")
    flag = reached(process, tmp_path, "commit")
    assert [p.name for p in tmp_path.glob(".out.txt.partial-*/out.txt")]  # complete, not yet in place
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    flag.unlink(missing_ok=True)
    assert code == 143, err
    assert out.read_text(encoding="utf-8") == "old\n" and leftovers(tmp_path, "out.txt") == ["out.txt"]

    process = start(argv, tmp_path, pause="commit")
    flag = reached(process, tmp_path, "commit")
    process.kill()
    process.communicate()
    flag.unlink()
    assert out.read_text(encoding="utf-8") == "old\n"
    assert any(".partial-" in n for n in leftovers(tmp_path, "out.txt"))

    os.chmod(out, 0o640)
    assert run(*argv) == 0  # the next run sweeps the leftover and replaces the file, keeping its mode
    assert leftovers(tmp_path, "out.txt") == ["out.txt"]
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2 and out.stat().st_mode & 0o777 == 0o640


def test_translate_to_dev_null_writes_through_it(ws):
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    assert run("-q", "translate", "--model", ws / "hydra", "--from", "en", "--to", "xx", "--text", ws / "in.txt",
               "--output", "/dev/null", "--max-new-tokens", "2") == 0
    assert Path("/dev/null").is_char_device()


def test_check_output_file_refuses_before_claiming(tmp_path):
    from transtok.artifacts import check_output_file, release_all

    with pytest.raises(ConfigError, match="is a directory"):
        check_output_file(tmp_path)
    assert check_output_file(tmp_path / "x.txt") == (tmp_path / "x.txt").resolve()
    assert (tmp_path / ".x.txt.lock").is_file()  # taken: a second run writing it is refused
    release_all()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
