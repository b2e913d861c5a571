"""Language-adaptation training after the transplant, on the transformers Trainer.

The paper (Remy et al. 2024, Appendix L) trains the new embeddings and LM head first (41M tokens),
then also decoder layers 0, 1, -2 and -1 (66M tokens), everything else frozen; a mid-resource
language gets a full fine-tune. This module freezes parameters by identity (HF accessors for the
embeddings, the largest ``nn.ModuleList`` for the decoder blocks), packs text into fixed-length
blocks and lets ``transformers.Trainer`` (accelerate underneath) run the loop, so the same call
works on one CPU and under ``accelerate launch`` / ``torchrun`` (DDP, FSDP).

Layout of a run::

    OUTPUT.checkpoints/          # resumable state, removed after success unless keep_checkpoints (only
                                 # emptied if it was there before the run; never if transtok did not write it)
        run.json                 # fingerprint of model, vocabulary and settings; checked on resume
        log.jsonl                # one JSON record per logged step / evaluation
        stage-1-embeddings/checkpoint-N/   # Trainer checkpoints (model, optimizer, scheduler, RNG)
            transtok-complete.json           # written last: the checkpoint's files and sizes
    OUTPUT/                      # written atomically at the end: plain HF checkpoint + tokenizer
        transtok/finetune.json   # settings, history, eval curve, throughput, peak memory
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from transtok.artifacts import (PROVENANCE_DIR, atomic_output_dir, check_output_dir, path_relation, read_json,
                                write_json)
from transtok.corpus import read_texts
from transtok.checks import SEED_MAX, check_number
from transtok.diskspace import disk_full_error, is_disk_full, previous_output
from transtok.errors import ConfigError, DataError, MismatchError, require
from transtok.options import option, token_count

if TYPE_CHECKING:  # torch loads lazily: the CLI imports this module at parse time
    import torch

logger = logging.getLogger(__name__)

STAGES = ("embeddings", "2x2", "full", "lora", "new-rows")
SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")
PRECISIONS = ("auto", "bf16", "fp32")
JOINS = ("newline", "eos")


@dataclass(frozen=True)
class RecipeStage:
    stage: str
    share: float
    """Fraction of the token budget."""
    schedule: str


# Paper, Appendix L: 41M tokens embeddings-only (constant LR after warm-up), then 66M tokens with
# the 2x2 layers unfrozen (linear decay) -> 38% : 62% of the budget.
RECIPES: dict[str, tuple[RecipeStage, ...]] = {
    "paper": (RecipeStage("embeddings", 41 / 107, "constant_with_warmup"),
              RecipeStage("2x2", 66 / 107, "linear")),
}

FALLBACK_WARN_RATE = 0.05
"""Warn when more than this fraction of tokens are unknown or raw non-ASCII byte pieces."""


@dataclass
class FinetuneConfig:
    """Everything ``transtok finetune`` needs; saved into ``transtok/finetune.json`` of the output."""

    model: str = option(metavar="DIR", group="input", help="transferred model directory (HF checkpoint + tokenizer)")
    """Transferred model directory (plain HF checkpoint + tokenizer)."""
    train: list[str] = option(flag="--text", aliases=("--train",), metavar="FILE", group="input",
                              help="target-language text, one document per line")
    """Target-language text files, one passage per non-empty line."""
    output: str
    eval: list[str] = option(default_factory=list, metavar="FILE", group="input",
                             help="held-out text for bits per byte")
    """Held-out text files for bits per byte; none disables evaluation."""
    stage: str = option("embeddings", choices=STAGES, exclusive="what", help="what to train (default: %(default)s)")
    """embeddings | 2x2 | full | lora | new-rows (ignored when ``recipe`` is set). new-rows trains only
    the embedding and LM-head rows of tokens added by vocabulary extension; the source rows stay
    bit-identical."""
    new_rows_from: int | None = option(None, metavar="ID", group="advanced",
                                       help="--stage new-rows: first new token id (default: read from the model's "
                                            "transtok/mapping)")
    """First new token id for the new-rows stage; None = read from the model's transtok/mapping
    (written by transfer/transplant of an extended vocabulary)."""
    recipe: str | None = option(None, choices=tuple(sorted(RECIPES)), exclusive="what",
                                help="a multi-stage recipe instead of one --stage")
    """A multi-stage recipe from RECIPES, e.g. 'paper' (embeddings, then 2x2)."""
    max_tokens: int = option(1_000_000, metavar="N", parse=token_count,
                             help="training tokens over all stages, e.g. 2M (default: %(default)s)")
    """Training token budget over all stages (steps = budget // tokens per optimizer step)."""
    seq_len: int = option(512, group="advanced", help="tokens per packed block (default: %(default)s)")
    batch_size: int = option(8, group="advanced", help="blocks per device per micro-batch (default: %(default)s)")
    """Sequences per device per micro-batch."""
    grad_accum: int = option(1, group="advanced", help="micro-batches per step (default: %(default)s)")
    lr: float = option(1e-4, help="peak learning rate (default: %(default)s)")
    warmup: float = option(0.03, group="advanced",
                           help="warm-up steps (>= 1) or fraction of each stage's steps (default: %(default)s)")
    """Warm-up steps (>= 1) or fraction of each stage's steps (< 1)."""
    schedule: str | None = option(None, choices=SCHEDULES, group="advanced",
                                  help="LR schedule (default: linear; a recipe uses its own per stage unless this is "
                                       "given)")
    """LR schedule; None = 'linear' for a single stage, the recipe's own schedules for a recipe."""
    join: str = option("newline", choices=JOINS, group="advanced",
                       help="newline: the lines are one running text (as the held-out text is joined for bits per "
                            "byte); eos: every line is its own document (default: %(default)s)")
    """How the lines are joined before packing: 'newline' (lines of one running text, as the held-out
    text is joined for bits per byte) or 'eos' (every line an independent document)."""
    weight_decay: float = option(0.0, group="advanced", help="(default: %(default)s)")
    max_grad_norm: float = option(1.0, group="advanced",
                                  help="gradient clipping norm; 0 = no clipping (default: %(default)s)")
    """Gradient clipping norm (the Trainer's default); 0 turns clipping off."""
    seed: int = option(0, group="advanced", help="seed of the training run (default: %(default)s)")
    eval_every: int | None = option(None, metavar="STEPS", group="advanced",
                                    help="(default: about 5 times per stage, and at the end)")
    """Evaluate every N optimizer steps; None = about 5 times per stage (and always at the end)."""
    eval_batch_size: int = option(4, group="advanced", help="(default: %(default)s)")
    eval_seq_len: int = option(512, metavar="TOKENS", group="advanced",
                               help="held-out window, capped by the model's context; as 'evaluate perplexity' "
                                    "(default: %(default)s)")
    """Held-out window in tokens (capped by the model's context), independent of ``seq_len`` so that
    curves of runs with other training lengths, and ``transtok evaluate perplexity``, compare."""
    eval_stride: int = option(128, metavar="TOKENS", group="advanced",
                              help="tokens the held-out window moves by, capped by the window; equal to "
                                   "--eval-seq-len: the block protocol (default: %(default)s)")
    """Tokens the held-out window moves by (capped by the window; = eval_seq_len: the block protocol).
    The same default as ``transtok evaluate perplexity`` (evaluate.DEFAULT_STRIDE)."""
    eval_at_start: bool = True
    """Score the model before training too (the curve's first point); False when the caller has it."""
    log_every: int = option(10, metavar="STEPS", group="advanced", help="(default: %(default)s)")
    save_every: int | None = option(None, metavar="STEPS", group="advanced",
                                    help="checkpoint interval; 0 = no checkpoints, no resume (default: at each "
                                         "evaluation)")
    """Checkpoint every N steps; None = at each evaluation and at the end of each stage; 0 = never
    (no resume; for benchmarks and throwaway runs)."""
    precision: str = "auto"
    """auto (bf16 autocast where the hardware supports it) | bf16 | fp32."""
    device: str = "auto"
    """auto (CUDA when available) | cpu | cuda. Which GPUs: CUDA_VISIBLE_DEVICES, or one per process under
    torchrun / accelerate launch."""
    gradient_checkpointing: bool = option(False, group="advanced", help="trade compute for activation memory")
    lora_rank: int = option(16, group="advanced", help="LoRA rank (--stage lora; default: %(default)s)")
    lora_alpha: float = option(32.0, group="advanced", help="LoRA alpha (default: %(default)s)")
    lora_dropout: float = option(0.05, group="advanced", help="LoRA dropout (default: %(default)s)")
    merge: bool = option(True, negate="--no-merge", group="advanced",
                         help="save the LoRA adapter instead of merged weights")
    """Merge LoRA into the weights before saving (False: save the adapter only)."""
    checkpoint_dir: str | None = option(None, metavar="DIR", group="output",
                                        help="resumable state (default: OUTPUT.checkpoints)")
    """Default: OUTPUT.checkpoints next to the output."""
    resume: bool = option(False, group="output", help="continue from the last checkpoint in --checkpoint-dir")
    keep_checkpoints: bool = option(False, group="advanced", help="keep the checkpoint directory after success")
    overwrite: bool = False
    refit_prior: float = option(0.0, metavar="S", group="advanced",
                                help="after training, refit the LM head's unigram prior on the --text text with "
                                     "strength S, as 'transtok calibrate' does (an extended model's new rows only; "
                                     "unties a tied head; 0 = off, the default until one is chosen on dev; default: "
                                     "%(default)s)")
    def __post_init__(self) -> None:
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ConfigError(f"unknown `recipe` {self.recipe!r}; choose one of {sorted(RECIPES)} "
                              f"or pass `stage` ({', '.join(STAGES)}) instead")
        if self.stage not in STAGES:
            raise ConfigError(f"unknown `stage` {self.stage!r}; choose one of {', '.join(STAGES)}")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown `schedule` {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.join not in JOINS:
            raise ConfigError(f"unknown `join` {self.join!r}; choose one of {', '.join(JOINS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown `precision` {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.device != "auto":  # auto needs no check (and no torch import at parse time)
            _training_device(self.device)  # a GPU this machine lacks fails here, before any work
        for name in ("max_tokens", "seq_len", "batch_size", "grad_accum", "eval_batch_size", "eval_seq_len", "eval_stride",
                     "log_every", "lora_rank"):
            check_number(f"`{name}`", getattr(self, name), low=1, integer=True)
        if self.seq_len < 2:
            raise ConfigError(f"`seq_len` must be at least 2 tokens, got {self.seq_len}")
        check_number("`lr`", self.lr, low=0, low_open=True, hint="the peak learning rate, e.g. 1e-4")
        check_number("`warmup`", self.warmup, low=0, hint="whole steps, or a fraction < 1 of each stage's steps")
        if self.warmup >= 1 and self.warmup != int(self.warmup):
            raise ConfigError(f"`warmup` {self.warmup} is neither whole steps nor a fraction < 1 of each stage's "
                              f"steps; give e.g. {int(self.warmup)} steps or 0.03")
        check_number("`weight_decay`", self.weight_decay, low=0, hint="AdamW's decoupled decay; 0 = off")
        check_number("`max_grad_norm`", self.max_grad_norm, low=0, hint="0 = no clipping")
        check_number("`lora_alpha`", self.lora_alpha, low=0, low_open=True, hint="LoRA's scale is alpha / rank")
        check_number("`lora_dropout`", self.lora_dropout, low=0, high=1, high_open=True, hint="a probability")
        check_number("`seed`", self.seed, low=0, high=SEED_MAX, integer=True)
        if self.eval_every is not None:
            check_number("`eval_every`", self.eval_every, low=1, integer=True, hint="steps, or None for about 5 per stage")
        if self.save_every is not None:
            check_number("`save_every`", self.save_every, low=0, integer=True, hint="steps; 0 = no checkpoints")
        if self.new_rows_from is not None:
            check_number("`new_rows_from`", self.new_rows_from, low=0, integer=True, hint="a token id")
        if not self.train:
            raise ConfigError("no training text given; pass one or more `train` FILE")
        from transtok.calibration import check_prior

        check_prior(self.refit_prior, flag="`refit_prior`")
        if self.refit_prior and not self.merge and any(s.stage == "lora" for s in self.stages):
            raise ConfigError("`refit_prior` moves the LM head of the merged model; with `merge=False` the output is a "
                              "LoRA adapter: drop `merge=False`, or `refit_prior` and run 'transtok calibrate' on the "
                              "merged model")

    @property
    def stages(self) -> tuple[RecipeStage, ...]:
        if self.recipe is not None:
            plan = RECIPES[self.recipe]
            if self.schedule is not None:
                plan = tuple(RecipeStage(s.stage, s.share, self.schedule) for s in plan)
            return plan
        return (RecipeStage(self.stage, 1.0, self.schedule or "linear"),)

    @property
    def checkpoint_path(self) -> Path:
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        out = Path(self.output)
        return out.with_name(out.name + ".checkpoints")


@dataclass
class FinetuneResult:
    output: Path
    history: list[dict]
    """Every logged record: stage, step, tokens, loss / eval_bits_per_byte, lr."""
    stages: list[dict]
    """Per stage: name, steps, trainable parameters, tokens/s, peak memory, seconds."""

    @property
    def eval_curve(self) -> list[tuple[int, float]]:
        """(training tokens seen, held-out bits per byte), in order."""
        return [(r["tokens"], r["eval_bits_per_byte"]) for r in self.history if "eval_bits_per_byte" in r]


# --- precision -------------------------------------------------------------------------------

def _training_device(device: str) -> str:
    """'cuda' or 'cpu' for ``--device`` (checked: a missing GPU is a one-line error); the GPU itself is
    chosen by CUDA_VISIBLE_DEVICES or the launcher, so 'cuda:N' is refused with that advice."""
    from transtok.checks import pick_device

    picked = pick_device(device)
    if picked.type == "cuda" and picked.index is not None:
        raise ConfigError(f"`device` {device}: finetune trains on the GPUs the launcher gives each process; pick them "
                          f"with CUDA_VISIBLE_DEVICES={picked.index} and `device` cuda")
    if picked.type not in ("cpu", "cuda"):
        raise ConfigError(f"`device` {device}: finetune trains on cpu or cuda")
    return picked.type


def _use_bf16(precision: str, device: str = "auto") -> bool:
    """bf16 autocast for 'auto' only where the hardware has native bf16 (emulated bf16 is slower)."""
    from transtok.checks import bf16_supported

    device = _training_device(device)
    if precision == "fp32":
        return False
    supported = bf16_supported(device)
    if precision == "bf16" and not supported:
        logger.warning("bf16 was requested but this %s has no native bf16 support; it will run slower than fp32",
                       device)
        return True
    return supported or precision == "bf16"


# --- freezing --------------------------------------------------------------------------------

def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's stack of decoder blocks: the ``nn.ModuleList`` holding the most parameters.

    Found structurally (``model.layers``, ``transformer.h``, ``gpt_neox.layers`` ...), never by name.
    """
    import torch

    best, best_size = None, 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = module, size
    if best is None:
        from transtok.errors import ArchitectureError

        raise ArchitectureError(f"{type(model).__name__} has no nn.ModuleList of decoder blocks; the '2x2' stage "
                                "needs one. Use `stage` embeddings or full")
    return best


def _embedding_parameters(model) -> list[torch.nn.Parameter]:
    from transtok.surgery import embedding_pair

    inputs, outputs = embedding_pair(model)
    params = [inputs.weight]
    if outputs.weight is not inputs.weight:
        params.append(outputs.weight)
    if getattr(outputs, "bias", None) is not None:
        params.append(outputs.bias)
    return params


def freeze_for_stage(model, stage: str) -> dict:
    """Set ``requires_grad`` so that only the parameters of ``stage`` train; return a summary.

    embeddings: input embeddings + LM head (+ its bias); 2x2: those + decoder blocks 0, 1, -2, -1;
    full: everything. Tied embeddings are one parameter, so they stay tied. ('lora' is
    handled by :func:`apply_lora`, which freezes the base itself.)
    """
    if stage not in ("embeddings", "2x2", "full"):
        raise ConfigError(f"freeze_for_stage: stage {stage!r} is not one of embeddings, 2x2, full")
    if stage == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        chosen_layers: list[int] = []
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in _embedding_parameters(model):
            p.requires_grad_(True)
        chosen_layers = []
        if stage == "2x2":
            layers = decoder_layers(model)
            n = len(layers)
            chosen_layers = sorted({i % n for i in (0, 1, -2, -1)})
            if len(chosen_layers) == n:
                logger.warning("the model has only %d decoder blocks; stage '2x2' trains all of them", n)
            for i in chosen_layers:
                for p in layers[i].parameters():
                    p.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info("stage %s: %s of %s parameters trainable (%.1f%%)%s", stage, f"{trainable:,}", f"{total:,}",
                100 * trainable / max(total, 1), f", decoder blocks {chosen_layers}" if chosen_layers else "")
    return {"trainable_parameters": trainable, "total_parameters": total, "decoder_blocks": chosen_layers}


class FrozenRows:
    """Keep rows ``< first_new`` of the embedding table, LM head (and bias) exactly as they are.

    A gradient hook zeroes those rows' gradients (so clipping and Adam's moments see only the new
    rows), and :meth:`restore` copies the saved rows back after each optimizer step: decoupled
    weight decay (AdamW) moves parameters even where the gradient is zero. A tied head is one
    parameter, so it shares the mask.
    """

    def __init__(self, parameters: Sequence[torch.nn.Parameter], first_new: int) -> None:
        self.parameters, self.first_new = list(parameters), first_new
        self.saved = [p.detach()[:first_new].clone() for p in self.parameters]
        self.handles = [p.register_hook(self._mask) for p in self.parameters]

    def _mask(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:self.first_new] = 0
        return grad

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for parameter, saved in zip(self.parameters, self.saved):
                parameter[:self.first_new].copy_(saved)

    def remove(self) -> None:
        self.restore()
        for handle in self.handles:
            handle.remove()
        self.handles = []


def new_rows_start(model_dir: str | Path, tokenizer) -> int:
    """The first new token id of an extended model, from its ``transtok/mapping/mapping.json``."""
    meta_path = Path(model_dir) / PROVENANCE_DIR / "mapping" / "mapping.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if not meta.get("keeps_source_rows"):
        raise ConfigError(
            f"`stage` new-rows: {str(model_dir)!r} does not say which rows are new (no extension mapping in "
            "transtok/mapping/); make the model with 'transtok transfer --mode extend' or pass `new_rows_from` ID "
            "(the source vocabulary size)")
    first = int(meta["shape"][1])
    if first >= len(tokenizer):
        raise ConfigError(f"`stage` new-rows: the mapping says new rows start at {first}, the tokenizer has "
                          f"{len(tokenizer)} tokens; there are no new rows to train")
    return first


def freeze_new_rows(model, first_new: int) -> tuple[FrozenRows, dict]:
    """Stage new-rows: only the embedding/LM-head rows from ``first_new`` on train. Returns the
    :class:`FrozenRows` guard (restore after each step, remove after the stage) and a summary."""
    summary = freeze_for_stage(model, "embeddings")
    params = _embedding_parameters(model)
    rows = params[0].shape[0]
    if not 0 < first_new < rows:
        raise ConfigError(f"`new_rows_from` {first_new} is outside the embedding table's {rows} rows; give the "
                          "source vocabulary size (the first added token id)")
    guard = FrozenRows(params, first_new)
    trainable = sum(p[first_new:].numel() for p in params)
    logger.info("stage new-rows: rows %d..%d of the embeddings%s train (%s parameters); the first %d rows are "
                "frozen", first_new, rows - 1, "" if len(params) == 1 else " and LM head", f"{trainable:,}", first_new)
    return guard, {**summary, "trainable_parameters": trainable, "new_rows_from": first_new}


def _module_name(model, module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ConfigError(f"module {type(module).__name__} not found in {type(model).__name__}")


def apply_lora(model, *, rank: int, alpha: float, dropout: float):
    """Wrap ``model`` in peft LoRA on every linear layer of the body; the embeddings and LM head
    train fully (``modules_to_save``) since every row is new, and tied ones stay tied."""
    peft = require("peft", package="peft", extra="train", purpose="`stage` lora")
    from transtok.surgery import embedding_pair, is_tied

    inputs, outputs = embedding_pair(model)
    tied = is_tied(model)
    names = [_module_name(model, inputs), _module_name(model, outputs)]
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear",
                             modules_to_save=names, ensure_weight_tying=tied, task_type="CAUSAL_LM")
    wrapped = peft.get_peft_model(model, config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    logger.info("stage lora: %s of %s parameters trainable (rank %d)", f"{trainable:,}", f"{total:,}", rank)
    return wrapped, {"trainable_parameters": trainable, "total_parameters": total, "lora_rank": rank}


# --- data ------------------------------------------------------------------------------------

def _tokenize(tokenizer, texts: Sequence[str], desc: str) -> list[list[int]]:
    from transtok.progress import bar as progress_bar

    out: list[list[int]] = []
    chunk = 2048
    for start in progress_bar(range(0, len(texts), chunk), desc=desc, unit="chunk"):
        out.extend(tokenizer(list(texts[start:start + chunk]), add_special_tokens=False)["input_ids"])
    return out


def _separator(tokenizer, join: str) -> list[int]:
    """Token ids put after every line. 'newline' keeps the lines one text, as ``evaluate_perplexity``
    joins held-out lines: an eos between lines would teach the model a token the held-out text never
    has, and push down the newline it does have."""
    if join == "newline":
        return tokenizer("\n", add_special_tokens=False)["input_ids"]
    for role in ("eos_token_id", "sep_token_id"):
        value = getattr(tokenizer, role, None)
        if value is not None:
            return [value]
    return []


def pack(token_ids: Sequence[Sequence[int]], seq_len: int, separator: Sequence[int]) -> np.ndarray:
    """Concatenate documents (each followed by ``separator``) and cut into (n, seq_len) blocks;
    the incomplete tail is dropped."""
    stream = np.fromiter((t for doc in token_ids for t in (*doc, *separator)), dtype=np.int64)
    n = len(stream) // seq_len
    return stream[: n * seq_len].reshape(n, seq_len)


def fallback_rate(tokenizer, token_ids: Sequence[Sequence[int]]) -> float:
    """Fraction of tokens that are the unknown token or a raw non-ASCII byte piece (byte fallback,
    or a byte-level BPE spelling a script it never saw byte by byte)."""
    from transtok.vocabulary import token_bytes

    surfaces = token_bytes(tokenizer)
    size = max(len(surfaces), max((max(d) for d in token_ids if d), default=-1) + 1)
    is_fallback = np.zeros(size, dtype=bool)
    single = np.array([s is not None and len(s) == 1 and s[0] >= 0x80 for s in surfaces], dtype=bool)
    is_fallback[: len(single)] = single
    if tokenizer.unk_token_id is not None:
        is_fallback[tokenizer.unk_token_id] = True
    flat = np.fromiter((t for d in token_ids for t in d), dtype=np.int64)
    return float(is_fallback[flat].mean()) if len(flat) else 0.0


class _Blocks:
    """Packed (n, seq_len) blocks as causal-LM examples (labels = inputs; the model shifts).

    A map-style dataset by protocol (``__len__`` + ``__getitem__``), so that this module imports without torch.
    """

    def __init__(self, ids: np.ndarray) -> None:
        import torch

        self.ids = torch.from_numpy(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


# --- fingerprints ----------------------------------------------------------------------------

_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "dtype", "torch_dtype", "_commit_hash",
                         "use_cache", "architectures"}


def model_fingerprint(model) -> str:
    """Hash of the config (minus volatile keys) and the first rows of the input embeddings."""
    import torch

    config = {k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    rows = model.get_input_embeddings().weight.detach()[:64].to(torch.float32).cpu().numpy()
    digest.update(rows.tobytes())
    return digest.hexdigest()[:16]


def _files_fingerprint(paths: Sequence[str]) -> list[dict]:
    return [{"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size} for p in paths]


# --- trainer pieces --------------------------------------------------------------------------

def _peak_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _make_trainer_classes():
    """Define the Trainer subclass and callbacks lazily (importing transformers costs seconds)."""
    from transtok.progress import bar as progress_bar
    from transformers import Trainer, TrainerCallback

    class BitsPerByteTrainer(Trainer):
        """A Trainer whose evaluation is held-out bits per byte by :func:`transtok.evaluate.evaluate_perplexity`
        (the project's one protocol, so the numbers compare with ``transtok evaluate``). Under DDP each
        rank scores the whole text (same number everywhere; eval sets are small next to training)."""

        def __init__(self, *args, eval_tokenizer=None, eval_seq_len: int = 512, eval_stride: int | None = None,
                     **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.eval_tokenizer, self.eval_seq_len = eval_tokenizer, eval_seq_len
            self.eval_stride = eval_seq_len if eval_stride is None else min(eval_stride, eval_seq_len)
            self.eval_signature = None

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
            from transtok.evaluate import evaluate_perplexity

            texts = eval_dataset if eval_dataset is not None else self.eval_dataset
            start = time.perf_counter()
            result = evaluate_perplexity(self.accelerator.unwrap_model(self.model), self.eval_tokenizer, texts,
                                         seq_len=self.eval_seq_len, stride=self.eval_stride,
                                         batch_size=self.args.per_device_eval_batch_size,
                                         bf16=self.args.bf16)
            self.eval_signature = result.signature
            metrics = {f"{metric_key_prefix}_bits_per_byte": result.bits_per_byte,
                       f"{metric_key_prefix}_token_perplexity": result.token_perplexity,
                       f"{metric_key_prefix}_tokens": result.tokens,
                       f"{metric_key_prefix}_seconds": time.perf_counter() - start}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics=metrics)
            return metrics

    class RunLog(TrainerCallback):
        """Appends each log record (with stage and cumulative training tokens) to log.jsonl and
        measures training throughput (evaluation time excluded)."""

        def __init__(self, path: Path, stage_index: int, stage: str, tokens_before: int, tokens_per_step: int,
                     history: list[dict], writer: bool) -> None:
            self.path, self.stage_index, self.stage = path, stage_index, stage
            self.tokens_before, self.tokens_per_step = tokens_before, tokens_per_step
            self.history, self.writer = history, writer
            self.train_seconds, self.steps_done, self._t0 = 0.0, 0, None
            self.first_step_seconds = 0.0
            self.bar = None

        def _tokens(self, step: int) -> int:
            return self.tokens_before + step * self.tokens_per_step

        def on_train_begin(self, args, state, control, **kwargs):
            if self.writer:
                self.bar = progress_bar(total=state.max_steps, initial=state.global_step, unit="step",
                                        desc=f"stage {self.stage_index + 1} {self.stage}", dynamic_ncols=True)
            self._t0 = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            if self._t0 is None:
                self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t0 is not None:
                elapsed = time.perf_counter() - self._t0
                self.train_seconds += elapsed
                if self.steps_done == 0:
                    self.first_step_seconds = elapsed
                self._t0 = None
            self.steps_done += 1
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
                self.bar.set_postfix(tok_s=f"{self.tokens_per_second:,.0f}")

        @property
        def tokens_per_second(self) -> float:
            """Training throughput, evaluation excluded; the first (warm-up) step too once there are more."""
            steps, seconds = self.steps_done, self.train_seconds
            if steps > 1:
                steps, seconds = steps - 1, seconds - self.first_step_seconds
            return steps * self.tokens_per_step / seconds if seconds > 0 else 0.0

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            record = {"stage": self.stage, "stage_index": self.stage_index, "step": state.global_step,
                      "tokens": self._tokens(state.global_step)}
            for key, value in logs.items():
                if key in ("loss", "learning_rate", "grad_norm") or key.startswith("eval_"):
                    # a diverged step logs inf/nan: JSON has no such number, and the trained model must still save
                    record[key] = float(value) if math.isfinite(float(value)) else None
            if "loss" in record:
                record["tokens_per_second"] = self.tokens_per_second
            if len(record) <= 4:
                return
            self.history.append(record)
            if self.writer:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
                if self.bar is not None and "eval_bits_per_byte" in record:
                    self.bar.write(f"step {state.global_step}: held-out {record['eval_bits_per_byte']:.4f} bits/byte")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    class AfterStep(TrainerCallback):
        """Calls ``action`` after every optimizer step (before logging, evaluation and saving)."""

        def __init__(self, action) -> None:
            self.action = action

        def on_step_end(self, args, state, control, **kwargs):
            self.action()

    class MarkComplete(TrainerCallback):
        """Marks each checkpoint complete once every rank has written its part, then removes the older
        ones (the Trainer's own rotation would remove them before the new one is marked)."""

        def __init__(self, writer: bool) -> None:
            self.writer = writer

        def on_save(self, args, state, control, **kwargs):
            _barrier()
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if self.writer and checkpoint.is_dir():
                mark_complete(checkpoint)
                for older in _checkpoints(Path(args.output_dir)):
                    if older != checkpoint:
                        shutil.rmtree(older, ignore_errors=True)
            _barrier()

    return BitsPerByteTrainer, RunLog, AfterStep, MarkComplete


# --- the run ---------------------------------------------------------------------------------

def _load(model_dir: str):
    """(fp32 model, tokenizer, the checkpoint's own dtype)."""
    import torch
    from transformers import AutoConfig

    from transtok.loading import load_causal_lm, load_tokenizer

    try:
        saved_dtype = getattr(AutoConfig.from_pretrained(model_dir), "dtype", None)  # parsed to a torch.dtype
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a causal LM and tokenizer from {model_dir!r}: {exc}. Give the directory "
                          "written by 'transtok transfer' (or any HF causal LM checkpoint)") from exc
    tokenizer = load_tokenizer(model_dir)
    # fp32 master weights: AdamW on bf16 weights loses small updates; bf16 is applied by autocast
    model = load_causal_lm(model_dir, dtype=torch.float32)
    return model, tokenizer, saved_dtype if isinstance(saved_dtype, torch.dtype) else None


_RUN_DIRS: dict[Path, bool] = {}
"""Checkpoint directories this process prepared (:func:`_check_run_dir`): True when it made the
directory (or replaced a transtok one), False when it wrote into an empty directory that was there.
Only these are ever removed, and an existing one only down to its former emptiness."""


def _forget_run_dir(root: Path) -> None:
    """Remove what this run put in the checkpoint directory ``root`` (nothing if it prepared none)."""
    made = _RUN_DIRS.pop(Path(os.path.abspath(root)), None)
    if made is None or not root.is_dir():
        return
    if made:
        shutil.rmtree(root, ignore_errors=True)
        return
    for child in root.iterdir():  # the directory was empty before this run: all of it is ours
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _remove_run_dir(root: Path) -> None:
    """After a successful run: remove the checkpoint directory this run prepared, or the transtok one
    it resumed from (as far as the run that prepared that one made it)."""
    key = Path(os.path.abspath(root))
    if key not in _RUN_DIRS and (root / "run.json").is_file():
        _RUN_DIRS[key] = bool(read_json(root / "run.json").get("made_dir", True))
    _forget_run_dir(root)


def after_interrupt(config: FinetuneConfig) -> str:
    """Tidy up after an interrupted run and say what it leaves: its resumable checkpoints (kept, with
    the --resume hint) or nothing (what this run put in the checkpoint directory is removed; a
    directory it did not make is never removed)."""
    root = config.checkpoint_path
    if int(os.environ.get("RANK", "0")) != 0 or not root.is_dir():
        return "no partial output was kept"
    if _resumable(root):
        return (f"no partial output was kept; resumable checkpoints stay in {root}: run the same command with "
                "`resume=True` to continue")
    _forget_run_dir(root)
    return "no partial output was kept"


def _barrier() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _check_run_dir(config: FinetuneConfig, fingerprint: dict, is_main: bool) -> bool:
    """Prepare the checkpoint directory; return True when resuming from it. Every rank looks
    before rank 0 changes anything, so all ranks take the same decision."""
    root = config.checkpoint_path
    run_file = root / "run.json"
    exists = root.is_dir() and any(root.iterdir())
    if exists and config.resume:
        if not run_file.is_file():
            raise MismatchError(f"`resume`: {str(root)!r} has no run.json, so it is not a transtok finetune "
                                "checkpoint directory; point `checkpoint_dir` at one, or drop `resume`")
        saved = read_json(run_file)
        for key, label in (("model", "model (config + embeddings)"), ("vocab", "tokenizer vocabulary"),
                           ("settings", "training settings")):
            if saved.get(key) != fingerprint[key]:
                detail = (f"{saved.get(key)} vs {fingerprint[key]}" if key != "settings" else
                          ", ".join(f"{k}: {saved[key].get(k)!r} -> {v!r}" for k, v in fingerprint[key].items()
                                    if saved[key].get(k) != v))
                raise MismatchError(
                    f"`resume`: checkpoint directory {str(root)!r} was written for a different {label} "
                    f"({detail}); resume with the same `model` and settings, or start over with `overwrite=True` "
                    "or another `checkpoint_dir`")
        logger.info("resuming from %s", root)
        return True
    _refuse_foreign_run_dir(config)
    # whether the directory itself is this tool's to remove after success: a replaced one keeps its record
    made = bool(read_json(run_file).get("made_dir", True)) if exists else not root.is_dir()
    _barrier()
    if is_main:
        if exists:  # a transtok checkpoint directory (it holds run.json), replaced under --overwrite
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        # made_dir: read by a resumed run, which removes the directory; complete_markers: see _uses_markers
        write_json(run_file, {**fingerprint, "made_dir": made, "complete_markers": True})
    _RUN_DIRS[Path(os.path.abspath(root))] = made
    _barrier()
    return False


def _refuse_foreign_run_dir(config: FinetuneConfig) -> None:
    """Refuse a checkpoint directory that overlaps the output or an input, or one that this run would
    have to replace (not empty, no --resume) without --overwrite or that transtok did not write."""
    root = config.checkpoint_path
    for what, other in (("the output", config.output), *(("the input", p) for p in (config.model, *config.train,
                                                                                          *config.eval))):
        if what == "the input" and not os.path.lexists(other):  # a hub id
            continue
        relation = path_relation(root, other)
        if relation is not None:
            raise ConfigError(f"checkpoint directory {str(root)!r} {relation} {what} {str(other)!r}; choose a "
                              "`checkpoint_dir` outside the output and the run's inputs")
    if config.resume or not root.is_dir() or not any(root.iterdir()):
        return
    if not config.overwrite:
        raise ConfigError(f"checkpoint directory {str(root)!r} exists and is not empty; pass `resume=True` to continue "
                          "that run, or `overwrite=True` to start over")
    if not (root / "run.json").is_file():
        raise ConfigError(f"checkpoint directory {str(root)!r} holds no run.json, so transtok did not write it and "
                          "`overwrite` will not replace it; remove it yourself or choose another `checkpoint_dir`")



COMPLETE_MARKER = "transtok-complete.json"
"""Written into a Trainer checkpoint once all of it is on disk: its files and their sizes."""


def mark_complete(checkpoint: Path) -> None:
    """Flush ``checkpoint``'s files to disk, then write its :data:`COMPLETE_MARKER` (atomically)."""
    files = {}
    for folder, _, names in os.walk(checkpoint):
        for name in names:
            path = Path(folder) / name
            if name != COMPLETE_MARKER and not name.startswith(f".{COMPLETE_MARKER}"):
                with open(path, "rb") as handle:  # a marker must never outlive the data it vouches for
                    os.fsync(handle.fileno())
                files[str(path.relative_to(checkpoint))] = path.stat().st_size
    scratch = checkpoint / f".{COMPLETE_MARKER}.tmp"
    write_json(scratch, {"files": files})
    os.replace(scratch, checkpoint / COMPLETE_MARKER)


def checkpoint_complete(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` has its :data:`COMPLETE_MARKER` and every file it lists, at its size."""
    try:
        files = read_json(checkpoint / COMPLETE_MARKER)["files"]
        return bool(files) and all((checkpoint / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _checkpoints(stage_dir: Path) -> list[Path]:
    """The Trainer checkpoints in ``stage_dir``, newest (highest step) first."""
    found = [p for p in stage_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)


def _uses_markers(root: Path) -> bool:
    """Whether the checkpoint directory ``root`` was started by a transtok that marks complete checkpoints
    (its run.json says so); an older one's checkpoints have no marker and are never taken for cut ones."""
    try:
        return bool(read_json(root / "run.json").get("complete_markers"))
    except (OSError, ValueError, AttributeError):
        return False


def _drop_incomplete(stage_dir: Path, remove: bool = True, level: int = logging.WARNING) -> list[Path]:
    """The complete checkpoints of ``stage_dir``, newest first; the incomplete ones (a run stopped while
    writing them, e.g. on a full disk) are logged at ``level`` and, when ``remove``, deleted. In a directory
    of an older transtok (no markers) a checkpoint with its trainer_state.json counts as complete and
    nothing is removed."""
    markers = _uses_markers(stage_dir.parent)
    remove = remove and markers
    complete = []
    for checkpoint in _checkpoints(stage_dir):
        if checkpoint_complete(checkpoint) or (not markers and (checkpoint / "trainer_state.json").is_file()):
            complete.append(checkpoint)
            continue
        logger.log(level, "skipping %s: it was not completely written (the run writing it stopped)%s", checkpoint,
                   "; removed it" if remove else "")
        if remove:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return complete


def _resumable(root: Path) -> bool:
    """Whether ``root`` holds a complete checkpoint. The cut ones are removed only from a directory this
    process prepared (its own, cut short); elsewhere --resume skips them."""
    mine = Path(os.path.abspath(root)) in _RUN_DIRS
    return any([_drop_incomplete(stage, remove=mine, level=logging.DEBUG) for stage in sorted(root.glob("stage-*"))
                if stage.is_dir()])


def _completed_steps(stage_dir: Path, is_main: bool = True) -> tuple[str | None, int]:
    """The newest complete checkpoint of ``stage_dir`` and its step ((None, 0) when there is none)."""
    if not stage_dir.is_dir():
        return None, 0
    complete = _drop_incomplete(stage_dir, remove=is_main)
    if not complete:
        return None, 0
    return str(complete[0]), int(complete[0].name.split("-", 1)[1])


@contextlib.contextmanager
def _disk_full_says_what_stays(config: FinetuneConfig, where: Path):
    """A write in the block that runs out of space (a checkpoint, the log, the output) becomes one
    :class:`DiskFullError` that says which checkpoints stay for --resume."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc, where):  # torch.save's error on a full disk names no cause: ask the disk
            raise
        left = after_interrupt(config) + previous_output(config.output)
        raise disk_full_error(getattr(exc, "path", None) or where, left,
                              fix="free space there first, or choose another `output` / `checkpoint_dir`") from exc


def _training_arguments(config: FinetuneConfig, stage: RecipeStage, stage_dir: Path, n_steps: int, *, bf16: bool,
                        evaluate: bool):
    from transformers import TrainingArguments

    eval_every = config.eval_every or max(1, n_steps // 5)
    return TrainingArguments(
        output_dir=str(stage_dir), max_steps=n_steps, per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr, lr_scheduler_type=stage.schedule, warmup_steps=config.warmup,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm, seed=config.seed, data_seed=config.seed, bf16=bf16,
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        logging_steps=config.log_every, eval_strategy="steps" if evaluate else "no",
        eval_steps=eval_every if evaluate else None,
        save_strategy="no" if config.save_every == 0 else "steps",
        save_steps=config.save_every or eval_every,  # older checkpoints go once the new one is complete
        # the library logs and draws its own progress bar; frozen parameters are simply absent from DDP's graph
        report_to="none", disable_tqdm=True, dataloader_drop_last=True, remove_unused_columns=False,
        use_cpu=_training_device(config.device) == "cpu", ddp_find_unused_parameters=False,
    )


def _save_final(trainer, tokenizer, directory: Path, *, merge: bool, dtype, state_dict, refit=None) -> bool:
    """Save the trained model (LoRA merged when ``merge``, then ``refit(model)`` when given) in ``dtype``
    when that is a half type; return whether LoRA was merged."""
    import torch

    final = trainer.accelerator.unwrap_model(trainer.model)
    merged = False
    if hasattr(final, "merge_and_unload") and merge:
        final, state_dict, merged = final.merge_and_unload(), None, True
    if refit is not None:  # on the fp32 weights, before the cast to the checkpoint's own dtype
        refit(final)
        state_dict = None
    if dtype in (torch.bfloat16, torch.float16):
        # trained with fp32 master weights; hand back the checkpoint's own precision
        final, state_dict = final.to(dtype), None
    final.config.use_cache = True
    final.save_pretrained(directory, state_dict=state_dict)
    tokenizer.save_pretrained(directory)
    return merged


def finetune(config: FinetuneConfig) -> FinetuneResult:
    """Train a transferred model on target-language text and write a plain HF checkpoint.

    Runs each stage of ``config.stages`` with the transformers Trainer on the token budget's share;
    works unchanged under ``accelerate launch`` / ``torchrun``. Raises :class:`DataError` when the
    text cannot fill one optimizer step, :class:`MismatchError` when resuming from another run.
    """
    import torch

    accelerate = require("accelerate", package="accelerate", extra="train", purpose="transtok finetune")
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    _refuse_foreign_run_dir(config)  # before any work; checked again when the directory is prepared
    if config.refit_prior and os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        raise ConfigError("`refit_prior` runs forward passes on rank 0 alone, which an FSDP-sharded model cannot; "
                          "drop it and run 'transtok calibrate --model OUTPUT --text TRAIN' after training")
    inputs = [config.model, *config.train, *config.eval]
    check_output_dir(config.output, overwrite=config.overwrite, inputs=inputs)
    # Joins the process group under torchrun / accelerate launch (a no-op in a single process);
    # the Trainer reuses it.
    on_cpu = _training_device(config.device) == "cpu"
    logger.info("finetune on %s", "cpu" if on_cpu else "cuda")
    process = accelerate.PartialState(cpu=on_cpu)
    world, is_main = process.num_processes, process.is_main_process
    BitsPerByteTrainer, RunLog, AfterStep, MarkComplete = _make_trainer_classes()
    use_bf16 = _use_bf16(config.precision, config.device)

    model, tokenizer, saved_dtype = _load(config.model)
    from transtok.vocabulary import vocab_hash

    refit_from = 0
    if config.refit_prior:  # an extended model's source rows stay as they are, as 'transtok calibrate' keeps them
        from transtok.pipeline import first_new_row

        from transtok.calibration import prior_rows

        refit_from = config.new_rows_from if config.new_rows_from is not None else \
            first_new_row(config.model, tokenizer, fix="pass `new_rows_from` ID (the source vocabulary size)") or 0
        prior_rows(slice(refit_from, None), len(tokenizer))  # a bad range fails now, not after training

    # --- data -----------------------------------------------------------------------------
    train_texts = read_texts(config.train)
    train_ids = _tokenize(tokenizer, train_texts, "tokenize train")
    separator = _separator(tokenizer, config.join)
    blocks = pack(train_ids, config.seq_len, separator)
    n_tokens = sum(len(d) for d in train_ids) + len(separator) * len(train_ids)
    per_step = config.batch_size * config.grad_accum * world
    tokens_per_step = per_step * config.seq_len
    if len(blocks) < per_step:
        raise DataError(
            f"training text {', '.join(map(str, config.train))} has {n_tokens:,} tokens ({len(train_texts):,} "
            f"non-empty lines); one optimizer step needs {tokens_per_step:,} (batch size {config.batch_size} x "
            f"seq len {config.seq_len} x {config.grad_accum} accumulation x {world} processes). Give more text or "
            "lower `batch_size` / `seq_len`")
    rate = fallback_rate(tokenizer, train_ids[:5000])
    if rate > FALLBACK_WARN_RATE:
        logger.warning("%.1f%% of the training tokens are unknown or raw byte pieces: is the training text in the "
                       "tokenizer's language?", 100 * rate)
    total_steps = config.max_tokens // tokens_per_step
    if total_steps < len(config.stages):
        raise ConfigError(f"`max_tokens` {config.max_tokens:,} gives {total_steps} optimizer steps of "
                          f"{tokens_per_step:,} tokens; {len(config.stages)} stage(s) need at least one each. "
                          "Raise `max_tokens` or lower `batch_size` / `seq_len`")
    epochs = total_steps * per_step / len(blocks)
    if epochs > 1:
        logger.info("the budget covers the training text %.1f times", epochs)

    eval_texts, eval_rate, eval_seq_len = None, None, 0
    if config.eval:
        eval_texts = read_texts(config.eval)
        eval_ids = _tokenize(tokenizer, eval_texts, "tokenize eval")
        eval_rate = fallback_rate(tokenizer, eval_ids)
        if eval_rate > FALLBACK_WARN_RATE:
            logger.warning(
                "%.1f%% of the eval tokens are unknown or raw byte pieces: is %s in the tokenizer's language? "
                "Bits per byte on it says little about the target language", 100 * eval_rate,
                ", ".join(map(str, config.eval)))
        from transtok.evaluate import eval_seq_len as window

        eval_seq_len = window(model, config.eval_seq_len)

    # --- plan and resume ------------------------------------------------------------------
    plan = config.stages
    steps = [max(1, round(total_steps * s.share)) for s in plan]
    steps[-1] = max(1, total_steps - sum(steps[:-1]))
    settings = {"stages": [asdict(s) for s in plan], "steps": steps, "seq_len": config.seq_len,
                "tokens_per_step": tokens_per_step, "lr": config.lr, "seed": config.seed,
                "new_rows_from": config.new_rows_from,
                "train": _files_fingerprint(config.train)}
    fingerprint = {"model": model_fingerprint(model), "vocab": vocab_hash(tokenizer), "settings": settings}
    root = config.checkpoint_path
    resuming = _check_run_dir(config, fingerprint, is_main)
    log_path = root / "log.jsonl"
    history: list[dict] = []
    if resuming and log_path.is_file():
        history = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]

    # --- stages ---------------------------------------------------------------------------
    stage_reports: list[dict] = []
    trainer = None
    tokens_before = 0
    for index, (stage, n_steps) in enumerate(zip(plan, steps)):
        stage_dir = root / f"stage-{index + 1}-{stage.stage}"
        last_checkpoint, done_steps = _completed_steps(stage_dir, is_main) if resuming else (None, 0)
        if resuming:  # drop records a crash left after the checkpoint we resume from
            history = [r for r in history if r["stage_index"] < index or
                       (r["stage_index"] == index and r["step"] <= done_steps)]
        guard = None
        if stage.stage == "lora":
            model, summary = apply_lora(model, rank=config.lora_rank, alpha=config.lora_alpha,
                                        dropout=config.lora_dropout)
        elif stage.stage == "new-rows":
            first_new = config.new_rows_from if config.new_rows_from is not None else \
                new_rows_start(config.model, tokenizer)
            guard, summary = freeze_new_rows(model, first_new)
        else:
            summary = freeze_for_stage(model, stage.stage)
        args = _training_arguments(config, stage, stage_dir, n_steps, bf16=use_bf16,
                                   evaluate=eval_texts is not None)
        trainer = BitsPerByteTrainer(model=model, args=args, train_dataset=_Blocks(blocks), eval_dataset=eval_texts,
                                     eval_tokenizer=tokenizer, eval_seq_len=eval_seq_len,
                                     eval_stride=config.eval_stride)
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        run_log = RunLog(log_path, index, stage.stage, tokens_before, tokens_per_step, history,
                         writer=trainer.is_world_process_zero())
        trainer.add_callback(run_log)
        trainer.add_callback(MarkComplete(writer=trainer.is_world_process_zero()))
        if guard is not None:
            trainer.add_callback(AfterStep(guard.restore))
        if (eval_texts is not None and config.eval_at_start and index == 0
                and not any(r.get("stage_index") == 0 for r in history)):
            trainer.evaluate()  # the curve's starting point: the transplanted model before training
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with _disk_full_says_what_stays(config, stage_dir):
            trainer.train(resume_from_checkpoint=last_checkpoint)
        model = trainer.model
        if guard is not None:
            guard.remove()
        stage_reports.append({"stage": stage.stage, "schedule": stage.schedule, "steps": n_steps,
                              "tokens": n_steps * tokens_per_step, "steps_run_now": run_log.steps_done,
                              "tokens_per_second": run_log.tokens_per_second,
                              "peak_memory_bytes": _peak_memory_bytes(),
                              "seconds": time.perf_counter() - started, **summary})
        tokens_before += n_steps * tokens_per_step

    # --- output ---------------------------------------------------------------------------
    # FSDP shards must be gathered on every rank; otherwise rank 0 holds the whole model
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped) if trainer.is_fsdp_enabled else None
    output = Path(config.output)
    refit: dict = {}
    if trainer.is_world_process_zero():
        def refit_prior(final) -> None:  # the prior fitted on the text the model was trained on
            from transtok.calibration import apply_unigram_prior
            from transtok.surgery import is_tied

            refit.update(untied=is_tied(final), rows_from=refit_from)
            refit.update(apply_unigram_prior(final, tokenizer, train_texts, strength=config.refit_prior,
                                             bf16=use_bf16, rows=slice(refit_from, None)).report(refit_from))

        with _disk_full_says_what_stays(config, output), \
                atomic_output_dir(output, overwrite=config.overwrite, inputs=inputs) as tmp:
            merged_lora = _save_final(trainer, tokenizer, tmp, merge=config.merge, dtype=saved_dtype,
                                      state_dict=state_dict, refit=refit_prior if config.refit_prior else None)
            provenance = tmp / PROVENANCE_DIR
            if (Path(config.model) / PROVENANCE_DIR).is_dir():
                shutil.copytree(Path(config.model) / PROVENANCE_DIR, provenance)
            provenance.mkdir(exist_ok=True)
            from transtok import __version__

            write_json(provenance / "finetune.json", {
                "config": asdict(config), "stages": stage_reports, "history": history,
                "eval": {"files": config.eval, "fallback_rate": eval_rate, "signature": trainer.eval_signature},
                "train": {"files": config.train, "tokens": n_tokens, "blocks": len(blocks),
                          "epochs": epochs, "fallback_rate": rate},
                "precision": "bf16 autocast" if use_bf16 else "fp32", "lora_merged": merged_lora,
                "world_size": world, "transtok_version": __version__, "torch": torch.__version__,
                "python": platform.python_version(), "refit_prior": refit or None,
            })
        if not config.keep_checkpoints:
            _remove_run_dir(root)
    trainer.accelerator.wait_for_everyone()
    return FinetuneResult(output=output, history=history, stages=stage_reports)
