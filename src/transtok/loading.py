"""From a path to a loaded object: models, tokenizers and the dtype they load in.

Every verb reads checkpoints and tokenizers through here, so that each sees the same vocabulary
and the same weights, and a cut, foreign or unsafe file fails with one line naming it before
transformers sees it (a truncated safetensors file, a pickle that would run code, a checkpoint
that is not a causal LM). A tokenizer comes from a directory, a hub id, a ``.gguf`` file, a
SentencePiece ``.model`` file or a Mistral ``tekken*.json``; a saved generic tokenizer is loaded
as saved, whatever model type the ``config.json`` beside it names (:func:`load_tokenizer`).
"""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transtok.artifacts import PROVENANCE_DIR
from transtok.errors import ArchitectureError, ConfigError, CorruptFileError, DataError, require

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")
"""The dtypes a model loads in (``--dtype``); auto keeps the checkpoint's own."""


def torch_dtype(name: str | torch.dtype) -> str | torch.dtype:
    """``"auto"``, or the torch dtype that ``name`` (one of :data:`DTYPES`, or that torch dtype) names.

    Raises :class:`ConfigError` naming the value and the choices for anything else.
    """
    import torch

    if isinstance(name, torch.dtype):
        name = str(name).removeprefix("torch.")
    if name == "auto":
        return "auto"
    if isinstance(name, str) and name in DTYPES:
        return getattr(torch, name)
    raise ConfigError(f"`dtype` {name!r} is not a dtype transtok loads models in; give one of {', '.join(DTYPES)} "
                      "(auto keeps the checkpoint's own)")


# --- checkpoints ------------------------------------------------------------------------------

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def read_header(path: str | os.PathLike, fix: str | None = None) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the byte offset where its data starts.

    Raises :class:`CorruptFileError` (naming the file and ``fix``) when the file is truncated or
    not safetensors: a short or unreadable header, or a size other than the header says.
    """
    fix = fix or checkpoint_fix(Path(path).parent)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise CorruptFileError(path, fix, f"{size} bytes, shorter than a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > min(size - 8, 100 << 20):
            raise CorruptFileError(path, fix, f"its header claims {length:,} bytes of a {size:,}-byte file")
        try:
            header = json.loads(handle.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise CorruptFileError(path, fix, f"unreadable header: {exc}") from exc
    if 8 + length + end != size:
        raise CorruptFileError(path, fix, f"{size:,} bytes where its header describes {8 + length + end:,}")
    return header, 8 + length


def checkpoint_fix(directory: str | os.PathLike) -> str:
    """How to get a good copy of a checkpoint directory: the transtok verb that wrote it, else a fresh download."""
    directory = Path(directory)
    provenance = directory / PROVENANCE_DIR
    if (directory / "hydra.json").is_file():
        return "rebuild it with 'transtok hydra build'"
    if (provenance / "finetune.json").is_file():
        return "rebuild it with 'transtok finetune'"
    if (provenance / "config.json").is_file():
        try:
            verb = json.loads((provenance / "config.json").read_text(encoding="utf-8")).get("verb", "transfer")
        except ValueError:
            verb = "transfer"
        return f"rebuild it with 'transtok {verb}'"
    return "download the checkpoint again (e.g. hf download MODEL --local-dir DIR) or copy it again"


def check_weights(directory: str | os.PathLike) -> None:
    """Check every safetensors file of a local checkpoint directory (headers and sizes only; no weights
    are read), so that a truncated download fails with the file's name, not deep inside a loader.

    A directory without safetensors weights is loaded from its ``pytorch_model*.bin`` pickles:
    those are checked by :func:`check_pickle`, so that one that would run code fails with one line."""
    directory = Path(directory)
    if directory.is_dir():
        for index in (INDEX_FILE, PICKLE_INDEX_FILE):
            if (directory / index).is_file():
                index_shards(directory, index)  # every shard it names lies inside the directory
        for path in sorted(directory.glob("*.safetensors")):
            read_header(path)
        if not ((directory / SINGLE_FILE).is_file() or (directory / INDEX_FILE).is_file()):
            for path in sorted(directory.glob(PICKLE_WEIGHTS)):
                check_pickle(path)


PICKLE_WEIGHTS = "pytorch_model*.bin"
"""The pickle weight files transformers loads when a checkpoint has no safetensors weights."""
PICKLE_INDEX_FILE = "pytorch_model.bin.index.json"


def path_inside(directory: str | os.PathLike, name: str, *, named_by: str | os.PathLike) -> Path:
    """``directory / name``, refused with a :class:`DataError` when ``name`` leads outside ``directory``
    (an absolute path or ``..``): a model directory refers only to files inside it. ``named_by`` is
    the file that names it. Judged on the path as written: links inside the directory (a hub cache
    snapshot's) are the file system's business, not the file's."""
    normal = os.path.normpath(name) if isinstance(name, str) and name else ""
    if not normal or os.path.isabs(normal) or normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise DataError(f"{named_by} refers to {name!r}, which is not a path inside {directory}: a model directory "
                        f"may only refer to files inside it. Fix that entry or {checkpoint_fix(directory)}")
    return Path(directory) / normal


def index_shards(directory: str | os.PathLike, index_name: str = INDEX_FILE) -> dict[str, str]:
    """The weight map (tensor name -> shard file) of a checkpoint's index file, each shard checked
    to lie inside ``directory``; a broken index is a :class:`CorruptFileError`."""
    directory = Path(directory)
    path = directory / index_name
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map is not an object of tensor name -> shard file name")
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise CorruptFileError(path, checkpoint_fix(directory), f"{type(exc).__name__}: {exc}") from exc
    for shard in sorted(set(weight_map.values())):
        path_inside(directory, shard, named_by=path)
    return dict(weight_map)


def check_pickle(path: str | os.PathLike) -> None:
    """Refuse a pickle weight file that torch's weights-only loader refuses: loading it would import
    and call what it names (it may run code), so nothing in it is run and the error names the file
    and the fix. The check unpickles onto the meta device, reading no weights of a zip-format file."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            torch.load(path, map_location="meta", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise unsafe_pickle(path, exc) from None
    except Exception as exc:  # torch's errors for a cut or foreign file: EOFError, RuntimeError, KeyError...
        raise CorruptFileError(path, checkpoint_fix(path.parent), f"{type(exc).__name__}: {exc}") from exc


def unsafe_pickle(path: str | os.PathLike, exc: BaseException) -> DataError:
    """The one-line error for a pickle that torch's weights-only loader refused (``exc``)."""
    import re

    text = " ".join(str(exc).split())
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        what = f"would import and call {found.group(1)} when loaded"
    else:
        found = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
        what = f"holds more than tensors ({found.group(1).strip() if found else text[:120]})"
    return DataError(
        f"{path} is not a plain tensor file: it is a pickle that {what}, so it was not loaded and nothing in it "
        "ran. Give a safetensors checkpoint; or, only if you trust where the file came from, convert it yourself: "
        "load the model's weights with torch.load(FILE, weights_only=False) and save the model with "
        "save_pretrained(DIR, safe_serialization=True), which writes model.safetensors")


def require_causal_lm(config, where: str | os.PathLike) -> None:
    """Refuse a checkpoint whose config does not describe a causal LM. Decided by the config: an
    architecture that AutoModelForCausalLM maps to (or that ends in ForCausalLM), custom code
    registered for AutoModelForCausalLM, else a model type AutoModelForCausalLM knows."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        return
    architectures = list(getattr(config, "architectures", None) or [])
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if architectures:
        if any(a in causal or a.endswith("ForCausalLM") for a in architectures):
            return
        found = f"a {' / '.join(architectures)} checkpoint"
    elif getattr(config, "model_type", None) in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return
    else:
        found = f"a {type(config).__name__} ({getattr(config, 'model_type', '?')}) checkpoint"
    raise ArchitectureError(
        f"{str(where)!r} is {found}, not a causal language model: transtok needs a decoder-only model that "
        "AutoModelForCausalLM loads (config.json architectures like LlamaForCausalLM or GPT2LMHeadModel); give "
        "the checkpoint of a causal LM")


def check_causal_checkpoint(name_or_path: str | os.PathLike):
    """The config of a causal-LM checkpoint whose safetensors files are whole; raises a one-line
    error otherwise. Reads no weights."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a causal LM from {str(name_or_path)!r}: {' '.join(str(exc).split())[:300]}. "
                          "Give a local checkpoint directory or a hub id of a causal language model") from exc
    require_causal_lm(config, name_or_path)
    check_weights(name_or_path)
    return config


def load_causal_lm(name_or_path: str | os.PathLike, **kwargs):
    """``AutoModelForCausalLM.from_pretrained`` after :func:`check_causal_checkpoint`. ``kwargs`` go
    to ``from_pretrained``."""
    import pickle

    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    config = check_causal_checkpoint(name_or_path)
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, config=config, **kwargs)
    except SafetensorError as exc:  # e.g. a hub snapshot, not checked above
        raise CorruptFileError(name_or_path, checkpoint_fix(name_or_path), exc) from exc
    except pickle.UnpicklingError as exc:  # likewise: a pickle that torch's weights-only loader refused
        raise unsafe_pickle(name_or_path, exc) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a causal LM from {str(name_or_path)!r}: {' '.join(str(exc).split())[:300]}. "
                          "Give a local checkpoint directory or a hub id of a causal language model") from exc


def load_model(name_or_path: str | os.PathLike, *, dtype: str | torch.dtype = "auto"):
    """(causal LM in eval mode, its tokenizer) from a directory or a hub id, the model in ``dtype``
    (one of :data:`DTYPES`)."""
    parsed = torch_dtype(dtype)  # a bad dtype fails before the tokenizer is read
    tokenizer = load_tokenizer(name_or_path)
    model = load_causal_lm(name_or_path, dtype=parsed)
    return model.eval(), tokenizer


# --- tokenizers -------------------------------------------------------------------------------

_SENTENCEPIECE_FILE = re.compile(r"\.model(\.v\w+)?$")  # tokenizer.model, Mistral's tokenizer.model.v3


def is_sentencepiece_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a SentencePiece model file (``*.model``, or Mistral's ``*.model.vN``)."""
    return bool(_SENTENCEPIECE_FILE.search(Path(path).name))


def is_tekken_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a Mistral Tekken vocabulary (``tekken*.json``, as mistral-common decides)."""
    name = Path(path).name
    return "tekken" in name and name.endswith(".json")


def sentencepiece_to_fast(path: str | os.PathLike):
    """A fast tokenizer from a Llama/Mistral-style SentencePiece BPE ``.model`` file (byte fallback, ``▁``).

    Converted by transformers' ``LlamaTokenizer`` (needs ``sentencepiece`` and ``protobuf``: extra
    ``sentencepiece``); adds ``<s>`` when encoding, as Mistral's and Llama-2's tokenizers do.
    """
    import shutil
    import tempfile

    require("sentencepiece", package="sentencepiece", extra="sentencepiece",
            purpose="reading a SentencePiece .model file")
    require("google.protobuf", package="protobuf", extra="sentencepiece",
            purpose="reading a SentencePiece .model file")
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory(prefix="transtok-spm-") as tmp:
        shutil.copyfile(path, Path(tmp) / "tokenizer.model")
        try:
            return LlamaTokenizer.from_pretrained(tmp, add_bos_token=True, legacy=False)
        except Exception as exc:  # a corrupt or non-SentencePiece file: protobuf/sentencepiece errors vary
            raise ConfigError(f"{str(path)!r} is not a SentencePiece model transformers can convert "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                              "give a Llama/Mistral-style tokenizer.model") from exc


def tekken_to_fast(path: str | os.PathLike):
    """A fast tokenizer from a Mistral Tekken ``tekken*.json`` (tiktoken-style byte-level BPE).

    Converted by transformers' own ``convert_tekken_tokenizer``. Files of the old format carry no
    ``special_tokens`` list; mistral-common then uses its defaults, which are filled in here (so
    mistral-common itself is not needed): :data:`TEKKEN_DEFAULT_SPECIALS`, then ``<SPECIAL_i>``
    up to ``config.default_num_special_tokens``.
    """
    import tempfile

    from transformers.integrations.mistral import convert_tekken_tokenizer

    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        spec["config"]
        spec["vocab"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{str(path)!r} is not a Tekken vocabulary (a JSON file with 'config' and 'vocab'): "
                          f"{type(exc).__name__}; give mistral-common's tekken*.json") from exc
    with tempfile.TemporaryDirectory(prefix="transtok-tekken-") as tmp:
        if spec.get("special_tokens") is None:
            spec["special_tokens"] = [{"rank": rank, "token_str": token, "is_control": True}
                                      for rank, token in enumerate(TEKKEN_DEFAULT_SPECIALS)]
        spec.pop("image", None)
        spec.pop("audio", None)
        converted = Path(tmp) / "tekken.json"
        converted.write_text(json.dumps(spec), encoding="utf-8")
        tokenizer = convert_tekken_tokenizer(str(converted), chat_template=None)
    # Mistral's tokenizers start every text with <s>, as the SentencePiece ones do.
    from tokenizers import processors

    tokenizer.backend_tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{tokenizer.bos_token} $A", pair=f"{tokenizer.bos_token} $A $B",
                                      special_tokens=[(tokenizer.bos_token, tokenizer.bos_token_id)])])
    return tokenizer


# mistral-common's Tekkenizer.DEPRECATED_SPECIAL_TOKENS (ranks 0..19), for Tekken files without a
# special_tokens list (tekken_240718.json, tekken_240911.json).
TEKKEN_DEFAULT_SPECIALS = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
    "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
)


def load_tokenizer(name_or_path: str | os.PathLike):
    """Load a fast tokenizer from a directory, a hub id, a ``.gguf`` file, a SentencePiece ``.model``
    file or a Mistral ``tekken*.json``.

    A directory whose tokenizer was saved as the generic class (``TokenizersBackend`` /
    ``PreTrainedTokenizerFast``, as transtok writes every tokenizer it trains) loads as that class:
    ``AutoTokenizer`` would build the class registered for the model type in the ``config.json``
    beside it instead, for the model types it distrusts saved classes of (transformers 5: qwen2,
    qwen3.5), and ``Qwen2Tokenizer`` adds ``<|endoftext|>``: the vocabulary would change.

    Raises :class:`ConfigError` naming the path when there is no (fast) tokenizer there.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    name = str(name_or_path)
    kwargs: dict[str, Any] = {}
    path = Path(name)
    if (path.is_absolute() or name.startswith((".", "~"))) and not path.expanduser().exists():
        raise ConfigError(f"no tokenizer could be loaded from {name!r}: the path does not exist; check it, or give "
                          "a hub id")
    if path.is_file() and is_sentencepiece_file(path):
        return sentencepiece_to_fast(path)
    if path.is_file() and is_tekken_file(path):
        return tekken_to_fast(path)
    if path.suffix == ".gguf" and path.is_file():
        # A GGUF file carries its tokenizer in the metadata; transformers rebuilds a fast one.
        require("gguf", package="gguf", extra="assets", purpose="reading a tokenizer from a .gguf file")
        name, kwargs["gguf_file"] = str(path.parent), path.name
    loader = PreTrainedTokenizerFast if path.is_dir() and _saved_generic(path) else AutoTokenizer
    try:
        tokenizer = loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"no tokenizer could be loaded from {str(name_or_path)!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
            "give a directory with tokenizer.json (as written by 'transtok train-tokenizer' or save_pretrained), "
            "a model directory, a .gguf file, or a hub id") from exc
    if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
        raise ConfigError(
            f"the tokenizer at {str(name_or_path)!r} is a slow (Python) tokenizer ({type(tokenizer).__name__}); "
            "transtok needs a fast one: save it with tokenizer.json (e.g. convert it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(DIR))")
    return tokenizer


def _saved_generic(directory: Path) -> bool:
    """Whether ``directory``'s tokenizer_config.json names the generic fast tokenizer class."""
    try:
        saved = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, or unreadable: AutoTokenizer decides (and names the problem)
        return False
    return isinstance(saved, dict) and saved.get("tokenizer_class") in ("TokenizersBackend", "PreTrainedTokenizerFast")
