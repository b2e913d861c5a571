"""Transplant a safetensors checkpoint without loading the model.

Only the input-embedding and LM-head tensors are read, mapped and written; every other tensor is
copied byte for byte (shards without an edited tensor are copied or hard-linked whole). Tensor
names come from the model class itself, instantiated on the meta device (no weights, no memory):
``get_input_embeddings()`` / ``get_output_embeddings()`` are mapped back to parameter names, so no
per-architecture table is needed. Peak memory is the embedding matrices in their stored dtype plus
a float32 block of columns.

The result holds the same tensors as :func:`transtok.surgery.transplant` followed by
``save_pretrained`` (same values, same dtypes) and loads with vanilla ``from_pretrained``.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import safe_open

from transtok.errors import ArchitectureError, MismatchError, TranstokError
from transtok.loading import (INDEX_FILE, SINGLE_FILE, check_weights, index_shards, read_header, require_causal_lm,
                              torch_dtype)
from transtok.mapping import TokenMapping
from transtok.progress import bar as progress_bar
from transtok.surgery import (check_vocabularies, pad_rows, padded_vocab_size, set_padding_suppression,
                              set_special_token_ids)

logger = logging.getLogger(__name__)

_COPY_BLOCK = 64 << 20
_TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


class UnsupportedCheckpoint(TranstokError):
    """The checkpoint cannot be edited in place; the caller falls back to loading the model."""


@dataclass(frozen=True)
class CheckpointLayout:
    """Where the embedding tensors of a safetensors checkpoint live, found without loading weights."""

    directory: Path
    shards: dict[str, str]
    """Tensor name -> shard file name (relative to ``directory``)."""
    indexed: bool
    """Whether the checkpoint has a ``model.safetensors.index.json``."""
    input_name: str
    head_name: str | None
    """The untied LM-head weight (None when the head is tied to the input embeddings)."""
    head_bias_name: str | None
    tied: bool
    stale: tuple[str, ...] = ()
    """Head tensors present in a tied checkpoint; transformers ignores them, so they are dropped."""
    config: object = None
    can_generate: bool = True
    headers: dict = field(default_factory=dict, repr=False)
    """Shard file name -> its parsed safetensors header."""

    def shard_of(self, name: str) -> str:
        return self.shards[name]

    def entry(self, name: str) -> dict:
        return self.headers[self.shards[name]][name]

    @property
    def edited(self) -> list[str]:
        return [n for n in (self.input_name, self.head_name, self.head_bias_name) if n is not None]


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local directory for ``name_or_path``: itself, or a hub snapshot (the local cache when offline)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise UnsupportedCheckpoint(f"{str(path)!r} is a file, not a checkpoint directory")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # offline, unknown id, gated repo: all mean "not here"
        raise UnsupportedCheckpoint(
            f"{str(name_or_path)!r} is not a local directory and no snapshot of it is available ({type(exc).__name__}); "
            f"download it where the hub is reachable (hf download {name_or_path} --local-dir DIR) and give DIR"
        ) from exc


def inspect_checkpoint(name_or_path: str | os.PathLike, *, dtype: str = "auto") -> CheckpointLayout:
    """Find the embedding tensors of a safetensors checkpoint from headers and a meta-device model.

    Raises :class:`UnsupportedCheckpoint` for what this path cannot edit (no safetensors, quantized
    weights, a requested ``dtype`` other than the stored one, a model class that cannot be built).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = resolve_checkpoint(name_or_path)
    if (directory / INDEX_FILE).is_file():
        shards = index_shards(directory)
        indexed = True
    elif (directory / SINGLE_FILE).is_file():
        indexed = False
        shards = None
    else:
        check_weights(directory)  # a pickle that would run code, or a cut one, is refused, not loaded in memory
        raise UnsupportedCheckpoint(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE} (other weight formats "
                                    "are loaded in memory)")
    files = sorted(set(shards.values())) if indexed else [SINGLE_FILE]
    headers = {}
    for name in files:
        if not (directory / name).is_file():
            raise UnsupportedCheckpoint(f"{INDEX_FILE} of {directory} names shard {name!r}, which is missing")
        headers[name] = read_header(directory / name)[0]
    if not indexed:
        shards = {tensor: SINGLE_FILE for tensor in headers[SINGLE_FILE] if tensor != "__metadata__"}

    try:
        config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as exc:
        raise UnsupportedCheckpoint(f"cannot read the config of {directory}: {exc}") from exc
    require_causal_lm(config, name_or_path)
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else getattr(
            quantization, "quant_method", None)
        raise UnsupportedCheckpoint(f"{directory} holds {method or 'quantized'} weights, which this path cannot edit")
    floats = {headers[shards[n]][n]["dtype"] for n in shards} & set(_TORCH_DTYPES)
    if dtype != "auto" and floats != {_dtype_code(dtype)}:
        raise UnsupportedCheckpoint(f"`dtype` {dtype} differs from the stored dtypes {sorted(floats)}; the streaming "
                                    "path keeps stored dtypes")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # custom code, unknown model type, non-causal configs
        raise UnsupportedCheckpoint(f"cannot build {getattr(config, 'model_type', '?')} on the meta device: {exc}") from exc

    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    if inputs is None or not hasattr(inputs, "weight"):
        raise ArchitectureError(f"{type(model).__name__}.get_input_embeddings() returned {type(inputs).__name__}; "
                                "expected an embedding module with a (V, d) weight")
    if outputs is None or not hasattr(outputs, "weight"):
        raise ArchitectureError(f"{type(model).__name__} has no output embeddings (LM head); give a checkpoint of a "
                                "causal LM")
    names_of = _names_by_parameter(model)
    stored = _stored_names(model, shards)
    tied = outputs.weight is inputs.weight
    input_names = names_of[id(inputs.weight)]
    found = list(dict.fromkeys(stored[n] for n in input_names if n in stored))
    if not found:
        raise UnsupportedCheckpoint(f"none of the input-embedding names {input_names} is in {directory}'s safetensors")
    input_name, head_name, stale = found[0], None, ()
    if tied:
        stale = tuple(found[1:])
        if stale:
            logger.warning("%s ties the LM head but also stores %s; transformers ignores it, so it is dropped",
                           directory, ", ".join(stale))
    else:
        head_names = names_of[id(outputs.weight)]
        head_name = next((stored[n] for n in head_names if n in stored), None)
        if head_name is None:
            raise ArchitectureError(
                f"{directory}: config.json says the LM head is untied (tie_word_embeddings false) but the "
                f"checkpoint has no {head_names[0]} tensor; set tie_word_embeddings to true if the head "
                "shares the input embeddings")
    bias = getattr(outputs, "bias", None)
    head_bias_name = None
    if isinstance(bias, torch.Tensor):
        head_bias_name = next((stored[n] for n in names_of[id(bias)] if n in stored), None)
        if head_bias_name is None:
            raise UnsupportedCheckpoint(f"the LM head of {type(model).__name__} has a bias that {directory} "
                                        "does not store")
    for name in (input_name, head_name, head_bias_name):
        if name is not None and headers[shards[name]][name]["dtype"] not in _TORCH_DTYPES:
            raise UnsupportedCheckpoint(f"{name} is stored as {headers[shards[name]][name]['dtype']}, not a float "
                                        "dtype this path can edit")
    return CheckpointLayout(directory=directory, shards=shards, indexed=indexed, input_name=input_name,
                            head_name=head_name, head_bias_name=head_bias_name, tied=tied, stale=stale,
                            config=config, can_generate=bool(model.can_generate()), headers=headers)


def _dtype_code(dtype: str) -> str:
    """The safetensors code (F32, BF16, ...) of the dtype ``dtype`` names (one of loading.DTYPES but auto)."""
    wanted = torch_dtype(dtype)
    return next(code for code, stored in _TORCH_DTYPES.items() if stored is wanted)


def _names_by_parameter(model) -> dict[int, list[str]]:
    """id(parameter) -> all its names, in registration order (tied parameters have several)."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return names


def _stored_names(model, checkpoint_keys) -> dict[str, str]:
    """Model parameter name -> checkpoint key, for keys that load one to one into a parameter.

    Uses the model's own key renamings (transformers' conversion mapping, e.g. GPT-NeoX stores
    ``lm_head`` as ``embed_out``) and base-model-prefix handling, so no table of ours is needed.
    Keys that a converter merges or splits are left out: this path cannot edit them.
    """
    try:  # transformers >= 5; older versions store parameter names as they are
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

        conversions = get_model_conversion_mapping(model)
        renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
        converters = [c for c in conversions if isinstance(c, WeightConverter)]
        meta = model.state_dict()

        def rename(key: str) -> tuple[str, object]:
            return rename_source_key(key, renamings, converters, model.base_model_prefix, meta)
    except (ImportError, AttributeError, TypeError):
        prefix = getattr(model, "base_model_prefix", "") or ""
        names = dict(model.named_parameters(remove_duplicate=False))

        def rename(key: str) -> tuple[str, object]:
            if key not in names and f"{prefix}.{key}" in names:
                return f"{prefix}.{key}", None
            return key, None
    out: dict[str, str] = {}
    for key in checkpoint_keys:
        renamed, converter = rename(key)
        if converter is None:
            out.setdefault(renamed, key)
    return out


def map_rows(mapping: TokenMapping, weight: torch.Tensor, *, block_columns: int = 1024) -> torch.Tensor:
    """``mapping.apply(weight)`` with the float32 work done a block of columns at a time.

    ``weight``: (V_s, d) or (V_s,). Returns (V_t, d) in ``weight``'s dtype, equal bit for bit to
    ``mapping.apply(weight)``: each output column depends only on the same input column when the
    fallback is the column mean and norms are not preserved; otherwise the whole matrix is mapped.
    """
    if weight.ndim == 1 or mapping.fallback != "mean" or mapping.preserve_norm or weight.shape[1] <= block_columns:
        return mapping.apply(weight)
    out = torch.empty((mapping.shape[0], weight.shape[1]), dtype=weight.dtype)
    for start in range(0, weight.shape[1], block_columns):
        out[:, start:start + block_columns] = mapping.apply(weight[:, start:start + block_columns])
    return out


def untied_head_name(config) -> str:
    """The checkpoint key under which transformers saves the LM head of ``config``'s model once untied.

    Found through transformers alone: the head parameter of the model built on the meta device with
    ``tie_word_embeddings`` False, renamed as ``save_pretrained`` renames it (e.g. GPT-NeoX's
    ``lm_head.weight`` is saved as ``embed_out.weight``).
    """
    from transformers import AutoModelForCausalLM

    from transtok.surgery import untie_config

    untied = copy.deepcopy(config)
    untie_config(untied)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(untied)
    head = model.get_output_embeddings().weight
    name = _names_by_parameter(model)[id(head)][0]
    try:  # transformers >= 5 renames some keys on save
        from transformers.core_model_loading import revert_weight_conversion

        return next(iter(revert_weight_conversion(model, {name: head})))
    except (ImportError, AttributeError, TypeError, StopIteration):
        return name


def transplant_checkpoint(layout: CheckpointLayout, mapping: TokenMapping, target_tokenizer, directory: Path, *,
                          source_tokenizer=None, hardlink: bool = False) -> dict:
    """Write the transplanted checkpoint of ``layout`` into the existing directory ``directory``.

    Writes the shards (edited ones rewritten, others copied or, with ``hardlink``, linked), the
    index, config.json, generation_config.json and the target tokenizer. Returns stats (bytes
    written, copied, linked). ``directory`` should be the temporary directory of
    :func:`transtok.artifacts.atomic_output_dir`. A mapping with separate head rows
    (``mapping.head``) maps the head with them; a tied checkpoint is then untied: the new head is
    written next to the input embeddings under :func:`untied_head_name` and the config says
    ``tie_word_embeddings: false``.

    Hard links share storage with the source: a later in-place write into a linked shard (e.g.
    ``save_pretrained`` into the output directory) would change the source checkpoint too.
    """
    from transformers import GenerationConfig

    from transtok.surgery import untie_config

    _check_vocabularies(layout, mapping, target_tokenizer, source_tokenizer)
    rows = padded_vocab_size(layout.entry(layout.input_name)["shape"][0], mapping.shape[1], mapping.shape[0])
    directory = Path(directory)
    drop = set(layout.stale)
    untie = layout.tied and mapping.head is not None
    head_name = untied_head_name(layout.config) if untie else None
    if head_name is not None and head_name in layout.shards and head_name not in drop:
        raise UnsupportedCheckpoint(f"{layout.directory} ties its head but stores a tensor named {head_name}, the "
                                    "name of the untied head")
    stats = {"bytes_written": 0, "bytes_copied": 0, "bytes_linked": 0, "shards": 0}
    touched = {layout.shard_of(n) for n in [*layout.edited, *drop]}
    weight_map: dict[str, str] = {}
    total_size = 0
    for shard in progress_bar(sorted(layout.headers), desc="writing shards", unit="shard"):
        header = layout.headers[shard]
        if shard in touched:
            # One shard's new tensors at a time: the embeddings and the head usually live in different
            # shards, so the peak holds one matrix, not both.
            new = {name: _mapped(layout, name, mapping.output if name != layout.input_name else mapping)
                   for name in layout.edited if layout.shard_of(name) == shard}
            added = {}
            if head_name is not None and shard == layout.shard_of(layout.input_name):
                # The untied head starts from the tied table, mapped with the head rows.
                added[head_name] = _mapped(layout, layout.input_name, mapping.output, into=head_name)
            size = _rewrite_shard(layout.directory / shard, directory / shard, header, new, drop, added)
            del new, added
            stats["bytes_written"] += (directory / shard).stat().st_size
            if head_name is not None and shard == layout.shard_of(layout.input_name):
                weight_map[head_name] = shard
        else:
            size = _data_size(header)
            stats["bytes_linked" if _place(layout.directory / shard, directory / shard, hardlink) else
                  "bytes_copied"] += (directory / shard).stat().st_size
        stats["shards"] += 1
        total_size += size
        weight_map.update({n: shard for n in header if n != "__metadata__" and n not in drop})
    if layout.indexed:
        index = json.loads((layout.directory / INDEX_FILE).read_text(encoding="utf-8"))
        index["weight_map"] = dict(sorted(weight_map.items()))
        index.setdefault("metadata", {})["total_size"] = total_size
        (directory / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    config = copy.deepcopy(layout.config)  # the layout stays reusable
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    text_config.vocab_size = rows
    config.vocab_size = rows
    if untie:
        untie_config(config)
        hidden = layout.entry(layout.input_name)["shape"][1]
        logger.info("untied the LM head for its own new rows (%s): +%s parameters (%s rows x %d)", head_name,
                    f"{rows * hidden:,}", f"{rows:,}", hidden)
    generation = None
    if (layout.directory / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(layout.directory)
    elif layout.can_generate:
        generation = GenerationConfig.from_model_config(config)
    set_special_token_ids(SimpleNamespace(config=config, generation_config=generation), target_tokenizer)
    set_padding_suppression(generation, mapping.shape[0], rows)
    config.save_pretrained(directory)
    if generation is not None:
        generation.save_pretrained(directory)
    target_tokenizer.save_pretrained(directory)
    stats["untied_head"] = head_name
    logger.info("streamed transplant of %s: %s", layout.directory, stats)
    return stats


def transplant_size(layout: CheckpointLayout, mapping: TokenMapping, directory: str | os.PathLike, *,
                    hardlink: bool = False) -> int:
    """Bytes that :func:`transplant_checkpoint` writes into ``directory``: the rewritten shards (with
    the target's row count), and the copied ones; shards it can hard-link there cost nothing. The
    small files (config, tokenizer) are left out: an estimate to check free space with."""
    rows = padded_vocab_size(layout.entry(layout.input_name)["shape"][0], mapping.shape[1], mapping.shape[0])
    untie = layout.tied and mapping.head is not None
    from transtok.diskspace import nearest_existing

    device = nearest_existing(directory).stat().st_dev

    def stored(name: str) -> int:  # bytes of tensor ``name`` in the source
        entry = layout.entry(name)
        return entry["data_offsets"][1] - entry["data_offsets"][0]

    def resized(name: str) -> int:  # bytes of tensor ``name`` with ``rows`` rows
        return stored(name) // max(layout.entry(name)["shape"][0], 1) * rows

    touched = {layout.shard_of(n) for n in [*layout.edited, *layout.stale]}
    total = 0
    for shard in layout.headers:
        path = layout.directory / shard
        size = path.stat().st_size
        if shard not in touched:
            total += 0 if hardlink and path.stat().st_dev == device else size
            continue
        size += sum(resized(n) - stored(n) for n in layout.edited if layout.shard_of(n) == shard)
        size -= sum(stored(n) for n in layout.stale if layout.shard_of(n) == shard)
        if untie and shard == layout.shard_of(layout.input_name):
            size += resized(layout.input_name)
        total += size
    return total


def offset_head_rows(directory: str | os.PathLike, vector: torch.Tensor, start: int, stop: int) -> str:
    """Add ``vector`` (d,) to rows ``start:stop`` of the untied LM head of the checkpoint in ``directory``,
    rewriting only the shard that holds the head (through a temporary file). Returns the head's name.

    The rows change as :func:`transtok.calibration.offset_rows` changes them in memory, so a
    streamed checkpoint equals an in-memory one.
    """
    from transtok.calibration import offset_rows

    layout = inspect_checkpoint(directory)
    if layout.tied or layout.head_name is None:
        raise ArchitectureError(f"{directory} ties its LM head to the input embeddings; a language offset of the new "
                                "head rows needs an untied head (transplant with separate head rows)")
    shard = layout.shard_of(layout.head_name)
    with safe_open(layout.directory / shard, framework="pt") as handle:
        head = handle.get_tensor(layout.head_name)
    head[start:stop] = offset_rows(head[start:stop], vector)
    path = layout.directory / shard
    scratch = path.with_name(f".{path.name}.offset")
    try:
        _rewrite_shard(path, scratch, layout.headers[shard], {layout.head_name: head}, set())
        os.replace(scratch, path)  # a new file: never writes into a hard-linked shard
    finally:
        scratch.unlink(missing_ok=True)
    return layout.head_name


def _mapped(layout: CheckpointLayout, name: str, mapping: TokenMapping, *, into: str | None = None) -> torch.Tensor:
    with safe_open(layout.directory / layout.shard_of(name), framework="pt") as handle:
        source = handle.get_tensor(name)
    # Only the source tokenizer's rows are mapped; a padded table's extra rows are never partners.
    tokens = mapping.shape[1]
    mapped = pad_rows(map_rows(mapping, source[:tokens]), source, tokens,
                      padded_vocab_size(source.shape[0], tokens, mapping.shape[0]))
    logger.info("mapped %s %s -> %s%s (%s)", name, layout.entry(name)["shape"], f"{into} " if into else "",
                list(mapped.shape), layout.entry(name)["dtype"])
    return mapped


def _check_vocabularies(layout: CheckpointLayout, mapping: TokenMapping, target_tokenizer, source_tokenizer) -> None:
    check_vocabularies(mapping, target_tokenizer, source_tokenizer)
    for name in layout.edited:
        rows = layout.entry(name)["shape"][0]
        if rows < mapping.shape[1]:  # more rows: a padded table (see surgery.padded_vocab_size)
            raise MismatchError(f"the mapping expects {mapping.shape[1]} source rows, {name} in {layout.directory} "
                                f"has {rows}; build the mapping with this model's tokenizer")


def _data_size(header: dict) -> int:
    return sum(e["data_offsets"][1] - e["data_offsets"][0] for n, e in header.items() if n != "__metadata__")


def _place(source: Path, destination: Path, hardlink: bool) -> bool:
    """Hard-link (when asked and possible) or copy; return whether it was linked."""
    if hardlink:
        try:
            os.link(source, destination)
            return True
        except OSError as exc:  # another filesystem, or links not allowed
            logger.info("cannot hard-link %s (%s); copying", source, exc)
    shutil.copyfile(source, destination)
    return False


def _rewrite_shard(source: Path, destination: Path, header: dict, replace: dict[str, torch.Tensor],
                   drop: set[str], add: dict[str, torch.Tensor] | None = None) -> int:
    """Write ``source`` with the tensors in ``replace`` swapped, those in ``drop`` left out and those
    in ``add`` appended (stored in their own dtype).

    Untouched tensors are copied as byte ranges, so memory stays at one copy block. Tensors keep
    the source's order; the header keeps its ``__metadata__``. Returns the data size in bytes.
    """
    _, data_start = read_header(source)
    entries = sorted(((n, e) for n, e in header.items() if n != "__metadata__" and n not in drop),
                     key=lambda item: item[1]["data_offsets"][0])
    out_header: dict = {}
    if "__metadata__" in header:
        out_header["__metadata__"] = header["__metadata__"]
    offset = 0
    plan = []
    codes = {dtype: code for code, dtype in _TORCH_DTYPES.items()}
    entries += [(name, {"dtype": codes[tensor.dtype], "shape": list(tensor.shape)}) for name, tensor in
                (add or {}).items()]
    replace = {**replace, **(add or {})}
    for name, entry in entries:
        if name in replace:
            tensor = replace[name].contiguous()
            if _TORCH_DTYPES[entry["dtype"]] is not tensor.dtype:
                raise ArchitectureError(f"{name}: mapped tensor is {tensor.dtype}, stored as {entry['dtype']}")
            payload = tensor.reshape(-1).view(torch.uint8).numpy()
            size, shape = payload.nbytes, list(tensor.shape)
        else:
            payload = None
            size, shape = entry["data_offsets"][1] - entry["data_offsets"][0], entry["shape"]
        out_header[name] = {"dtype": entry["dtype"], "shape": shape, "data_offsets": [offset, offset + size]}
        plan.append((entry, payload, size))
        offset += size
    encoded = json.dumps(out_header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keep the data 8-byte aligned, as safetensors does
    with open(source, "rb") as src, open(destination, "wb") as dst:
        dst.write(struct.pack("<Q", len(encoded)))
        dst.write(encoded)
        for entry, payload, size in plan:
            if payload is not None:
                dst.write(memoryview(payload))
                continue
            _copy_range(src, dst, data_start + entry["data_offsets"][0], size, source)
    return offset


def _copy_range(src, dst, start: int, size: int, source: Path) -> None:
    """Append ``size`` bytes of ``src`` from ``start`` to ``dst``: in the kernel where possible."""
    dst.flush()
    remaining = size
    if hasattr(os, "copy_file_range"):
        try:
            while remaining:
                done = os.copy_file_range(src.fileno(), dst.fileno(), min(remaining, 1 << 30),
                                          start + size - remaining)
                if done == 0:
                    raise UnsupportedCheckpoint(f"{source} is truncated")
                remaining -= done
            dst.seek(0, os.SEEK_END)
            return
        except OSError:  # not supported between these files: copy through user space
            dst.seek(0, os.SEEK_END)
    src.seek(start + size - remaining)
    while remaining:
        block = src.read(min(_COPY_BLOCK, remaining))
        if not block:
            raise UnsupportedCheckpoint(f"{source} is truncated")
        dst.write(block)
        remaining -= len(block)
