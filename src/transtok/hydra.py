"""Hydra models: one transformer body, several named vocabularies.

Layout (the paper's, made architecture-agnostic): the model's input embedding table is the
concatenation of every vocabulary's table, each at an id *offset*, so one prompt can mix
vocabularies and ``model.generate`` with its KV cache works unchanged. The LM head is the
concatenation of the vocabularies' heads (for tied vocabularies it *is* the input table), and
the *output vocabulary* is selected by suppressing every id outside its span
(``generation_config.suppress_tokens``). Generated ids are therefore global ids that feed back
through the output vocabulary's own input rows.

A saved Hydra directory is a plain Hugging Face checkpoint (the output vocabulary first, at offset
0, with its tokenizer at the root) plus ``hydra.json`` (names, offsets, sizes, stop ids) and
``tokenizers/<name>/``. Vanilla ``AutoModelForCausalLM`` / ``AutoTokenizer`` therefore load it and
generate in the output vocabulary; :class:`Hydra` adds the other vocabularies.

Body weights are validated by hashing every non-embedding tensor of the checkpoints a Hydra is
built from; a mismatch names the differing tensors.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transtok.artifacts import atomic_output_dir, check_output_dir, read_json, write_json
from transtok.checks import check_number
from transtok.errors import ArchitectureError, ConfigError, DataError, MismatchError
from transtok.options import option
from transtok.progress import bar as progress_bar

if TYPE_CHECKING:  # torch loads lazily: the CLI reads this module's defaults at parse time
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "Hydra", "Vocabulary", "VocabularySpan", "body_fingerprint", "compare_bodies", "translation_prompt",
    "HYDRA_FILE", "TOKENIZERS_DIR",
]

HYDRA_FILE = "hydra.json"
TOKENIZERS_DIR = "tokenizers"
FORMAT = "transtok-hydra"
FORMAT_VERSION = 1

# Only to phrase the default translation instruction; any other code is used as given.
LANGUAGE_NAMES = {
    "ar": "Arabic", "bn": "Bengali", "de": "German", "en": "English", "es": "Spanish", "fa": "Persian",
    "fr": "French", "hi": "Hindi", "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "nl": "Dutch", "ny": "Chichewa", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian",
    "sw": "Swahili", "tl": "Tagalog", "tr": "Turkish", "tt": "Tatar", "uk": "Ukrainian", "vi": "Vietnamese",
    "zh": "Chinese",
}
DEFAULT_INSTRUCTION = "Translate the following {source_language} text into {target_language}.\n\n{text}"
# Defaults of translate() and 'transtok translate' (with the stop at the line break), chosen on 24 dev verses by
# mean chrF of SmolLM2 and its untrained Hydra en->es: benchmarks/results/translation/defaults_dev.md (no-repeat
# 3 or 4 with the same penalty came within 0.1 chrF). Without a guard a small model loops until the token limit.
TRANSLATE_NO_REPEAT_NGRAM = 0
TRANSLATE_REPETITION_PENALTY = 1.2


# --- vocabularies ---------------------------------------------------------------------------------


def _stop_ids(model, tokenizer) -> tuple[int, ...]:
    """Local ids that end a generation: the tokenizer's eos and the generation config's eos ids."""
    ids: list[int] = []
    generation = getattr(model, "generation_config", None)
    eos = getattr(generation, "eos_token_id", None) if generation is not None else None
    for value in ([eos] if isinstance(eos, int) else list(eos or [])) + [tokenizer.eos_token_id]:
        if value is not None and value not in ids:
            ids.append(int(value))
    return tuple(ids)


@dataclass
class Vocabulary:
    """One vocabulary: a tokenizer with its input rows and LM head rows.

    Attributes:
        input_embeddings: (V, d) input rows.
        output_embeddings: (V, d) LM-head rows, or None when the head is tied to the input rows.
        output_bias: (V,) LM-head bias, or None.
        stop_ids: local ids that end a generation in this vocabulary.
    """

    name: str
    tokenizer: Any
    input_embeddings: torch.Tensor
    output_embeddings: torch.Tensor | None = None
    output_bias: torch.Tensor | None = None
    stop_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"vocabulary name {self.name!r} is not usable as a folder name; use e.g. 'en' or 'es'")
        rows, hidden = self.input_embeddings.shape
        if self.output_embeddings is not None and tuple(self.output_embeddings.shape) != (rows, hidden):
            raise ArchitectureError(f"vocabulary {self.name!r}: LM head {tuple(self.output_embeddings.shape)} and "
                                    f"input table {(rows, hidden)} differ in shape; expected (V, d) for both")
        if len(self.tokenizer) > rows:
            raise MismatchError(f"vocabulary {self.name!r}: its tokenizer has {len(self.tokenizer)} tokens but the "
                                f"embedding table only {rows} rows; give the tokenizer saved with this checkpoint")

    @property
    def size(self) -> int:
        return int(self.input_embeddings.shape[0])

    @property
    def tied(self) -> bool:
        return self.output_embeddings is None

    @classmethod
    def from_model(cls, name: str, model, tokenizer) -> Vocabulary:
        """Take (clones of) ``model``'s embedding rows and head as a vocabulary named ``name``."""
        from transtok.surgery import embedding_pair, is_tied

        inputs, outputs = embedding_pair(model)
        bias = getattr(outputs, "bias", None)
        return cls(name, tokenizer, inputs.weight.detach().clone(),
                   None if is_tied(model) else outputs.weight.detach().clone(),
                   None if bias is None else bias.detach().clone(), _stop_ids(model, tokenizer))


@dataclass(frozen=True)
class VocabularySpan:
    """Where a vocabulary lives in the Hydra's tables: global id = local id + ``offset``."""

    name: str
    offset: int
    size: int
    stop_ids: tuple[int, ...] = ()
    tokenizer: Any = field(default=None, compare=False, repr=False)

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_dict(self) -> dict:
        return {"name": self.name, "offset": self.offset, "size": self.size, "stop_ids": list(self.stop_ids),
                "tokenizer": f"{TOKENIZERS_DIR}/{self.name}"}


# --- body validation ------------------------------------------------------------------------------


def _embedding_keys(model) -> set[str]:
    """State-dict keys of the input table, LM head weight and bias (found by tensor identity)."""
    from transtok.surgery import embedding_pair

    inputs, outputs = embedding_pair(model)
    pointers = {inputs.weight.data_ptr(), outputs.weight.data_ptr()}
    bias = getattr(outputs, "bias", None)
    if bias is not None:
        pointers.add(bias.data_ptr())
    return {k for k, v in model.state_dict().items() if v.data_ptr() in pointers}


def body_fingerprint(model) -> dict[str, str]:
    """sha256 (16 hex chars) of every non-embedding state-dict tensor, with its dtype and shape."""
    import torch

    skip = _embedding_keys(model)
    out = {}
    for key, tensor in model.state_dict().items():
        if key in skip:
            continue
        digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        out[key] = digest.hexdigest()[:16]
    return out


def compare_bodies(reference: Mapping[str, str], other: Mapping[str, str], *, reference_name: str,
                   other_name: str, show: int = 8) -> None:
    """Raise :class:`MismatchError` naming the tensors whose presence or hash differs."""
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    differing = sorted(k for k in set(reference) & set(other) if reference[k] != other[k])
    if not (missing or extra or differing):
        return
    parts = []
    for label, keys in (("differ", differing), (f"only in {reference_name!r}", missing),
                        (f"only in {other_name!r}", extra)):
        if keys:
            more = f" and {len(keys) - show} more" if len(keys) > show else ""
            parts.append(f"{len(keys)} tensors {label}: {', '.join(keys[:show])}{more}")
    raise MismatchError(
        f"vocabularies {reference_name!r} and {other_name!r} do not share one body: " + "; ".join(parts) +
        ". A Hydra needs checkpoints whose non-embedding weights are identical (same source model, same dtype; "
        "train new vocabularies with the body frozen), or pass `check_body=False` to accept it")


# --- the Hydra ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _patched(obj, **values) -> Iterator[None]:
    """Set attributes for the duration of the block, then restore them (absent ones are deleted)."""
    missing = object()
    saved = {k: getattr(obj, k, missing) for k in values}
    for k, v in values.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is missing:
                with contextlib.suppress(AttributeError):
                    delattr(obj, k)
            else:
                setattr(obj, k, v)


class Hydra:
    """One causal-LM body (``model``) with several named vocabularies at id offsets.

    Build one with :meth:`build` (from a body and :class:`Vocabulary` objects), :meth:`from_checkpoints`
    (from transferred checkpoints sharing a body) or :meth:`from_pretrained` (a saved Hydra). The
    underlying model is a normal ``PreTrainedModel`` held in :attr:`model`; ids passed to it are
    *global* ids (see :meth:`encode`).
    """

    def __init__(self, model, spans: Sequence[VocabularySpan], output: str) -> None:
        from transtok.surgery import embedding_pair

        self.model = model
        self._spans = {s.name: s for s in spans}
        if len(self._spans) != len(spans):
            raise ConfigError(f"vocabulary names must be unique, got {[s.name for s in spans]}")
        inputs, _ = embedding_pair(model)
        total = sum(s.size for s in spans)
        if inputs.weight.shape[0] != total or [s.offset for s in spans] != [sum(t.size for t in spans[:i])
                                                                           for i in range(len(spans))]:
            raise MismatchError(f"the model has {inputs.weight.shape[0]} embedding rows but the vocabularies "
                                f"{[(s.name, s.offset, s.size) for s in spans]} need {total} contiguous rows")
        self._output = ""
        self.set_output(output)
        self.sources: tuple[str, ...] = ()
        """Directories this Hydra was loaded from: :meth:`save_pretrained` and :meth:`export` refuse
        an output that is, contains or lies inside one."""

    # construction

    @classmethod
    def build(cls, body, vocabularies: Sequence[Vocabulary], *, output: str | None = None) -> Hydra:
        """Give ``body`` (a causal LM, modified in place) the concatenated tables of ``vocabularies``.

        The Hydra is tied when every vocabulary is tied; otherwise its head is untied and tied
        vocabularies contribute a copy of their input rows. ``output`` defaults to the last vocabulary.
        """
        import torch

        from transtok.surgery import embedding_pair, is_tied, untie_config

        if not vocabularies:
            raise ConfigError("a Hydra needs at least one vocabulary")
        inputs, outputs = embedding_pair(body)
        hidden = inputs.weight.shape[1]
        for v in vocabularies:
            if v.input_embeddings.shape[1] != hidden:
                raise MismatchError(f"vocabulary {v.name!r} has hidden size {v.input_embeddings.shape[1]}, the body "
                                    f"{type(body).__name__} has {hidden}; all vocabularies must come from this body")
        has_bias = getattr(outputs, "bias", None) is not None
        if any((v.output_bias is not None) != has_bias for v in vocabularies):
            raise ArchitectureError(f"the LM head of {type(body).__name__} {'has' if has_bias else 'has no'} bias but "
                                    f"vocabularies {[v.name for v in vocabularies if (v.output_bias is not None) != has_bias]} "
                                    "do not match; build every vocabulary from the same architecture")
        tied = all(v.tied for v in vocabularies)
        was_tied = is_tied(body)
        if tied and not was_tied:
            raise ArchitectureError(f"all vocabularies are tied but the body {type(body).__name__} is untied; "
                                    "take the body from one of the vocabularies' checkpoints")
        spans, offset = [], 0
        for v in vocabularies:
            spans.append(VocabularySpan(v.name, offset, v.size, v.stop_ids, v.tokenizer))
            offset += v.size
        dtype = inputs.weight.dtype
        with torch.no_grad():
            table = torch.cat([v.input_embeddings.to(dtype) for v in vocabularies])
            head = None if tied else torch.cat([(v.input_embeddings if v.tied else v.output_embeddings).to(dtype)
                                                for v in vocabularies])
            bias = torch.cat([v.output_bias.to(dtype) for v in vocabularies]) if has_bias else None
            body.resize_token_embeddings(offset, mean_resizing=False)
            inputs, outputs = embedding_pair(body)
            inputs.weight.copy_(table)
            if not tied:
                if was_tied:  # untie: the head gets its own parameter
                    outputs.weight = torch.nn.Parameter(head)
                    untie_config(body.config)
                else:
                    outputs.weight.copy_(head)
            if bias is not None:
                outputs.bias.data = bias
        body.config.vocab_size = offset
        hydra = cls(body, spans, output or vocabularies[-1].name)
        logger.info("built a Hydra of %s with vocabularies %s (%s head)", type(body).__name__,
                    ", ".join(f"{s.name}:{s.size}@{s.offset}" for s in spans), "tied" if tied else "untied")
        return hydra

    @classmethod
    def from_checkpoints(cls, checkpoints: Mapping[str, str | os.PathLike], *, output: str | None = None,
                         dtype: str | torch.dtype = "auto", check_body: bool = True) -> Hydra:
        """Build a Hydra from checkpoints (name → directory) that share one body.

        The first checkpoint provides the body; every other one contributes only its vocabulary,
        after its non-embedding weights are checked to be identical to the first one's.
        """
        from transtok.loading import check_causal_checkpoint, load_model, torch_dtype

        if not checkpoints:
            raise ConfigError("give at least one vocabulary checkpoint, e.g. {'en': 'smollm2/', 'es': 'smollm2-es/'}")
        for path in checkpoints.values():  # refuse a bad one before loading any
            check_causal_checkpoint(str(path))
        dtype = torch_dtype(dtype)
        names = list(checkpoints)
        body, vocabularies, reference = None, [], {}
        for name in progress_bar(names, desc="loading vocabularies"):
            path = str(checkpoints[name])
            model, tokenizer = load_model(path, dtype=dtype)
            vocabularies.append(Vocabulary.from_model(name, model, tokenizer))
            if body is None:
                body = model
                reference = body_fingerprint(model) if check_body else {}
                continue
            if body.get_input_embeddings().weight.shape[1] != model.get_input_embeddings().weight.shape[1]:
                raise MismatchError(
                    f"vocabulary {name!r} ({path}) has hidden size {model.get_input_embeddings().weight.shape[1]}, "
                    f"{names[0]!r} has {body.get_input_embeddings().weight.shape[1]}; they cannot share a body")
            if check_body:
                compare_bodies(reference, body_fingerprint(model), reference_name=names[0], other_name=name)
            del model
        hydra = cls.build(body, vocabularies, output=output)
        hydra.sources = tuple(str(path) for path in checkpoints.values())
        return hydra

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, dtype: str | torch.dtype = "auto") -> Hydra:
        """Load a directory written by :meth:`save_pretrained`."""
        from transtok.loading import load_causal_lm, load_tokenizer, torch_dtype

        directory = Path(directory)
        if not (directory / HYDRA_FILE).is_file():
            raise ConfigError(f"{str(directory)!r} has no {HYDRA_FILE}; give a directory written by "
                              "'transtok hydra build' or Hydra.save_pretrained")
        spec, tokenizers = read_spec(directory)  # before the model: a bad file fails at once
        model = load_causal_lm(directory, dtype=torch_dtype(dtype)).eval()
        spans = [VocabularySpan(v["name"], v["offset"], v["size"], tuple(v["stop_ids"]), load_tokenizer(path))
                 for v, path in zip(spec["vocabularies"], tokenizers)]
        hydra = cls(model, spans, spec["output"])
        hydra.sources = (str(directory),)
        return hydra

    # vocabularies

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._spans)

    @property
    def output(self) -> str:
        """The vocabulary that generation and :meth:`logits` produce."""
        return self._output

    def span(self, name: str) -> VocabularySpan:
        if name not in self._spans:
            raise ConfigError(f"unknown vocabulary {name!r}; this Hydra has {', '.join(self.names)}")
        return self._spans[name]

    def tokenizer(self, name: str):
        return self.span(name).tokenizer

    @property
    def tied(self) -> bool:
        from transtok.surgery import is_tied

        return is_tied(self.model)

    def set_output(self, name: str) -> None:
        """Make ``name`` the output vocabulary: every other id is suppressed and its stop/special ids are used."""
        span = self.span(name)
        settings = _output_settings(span, self.size)
        suppress = settings.pop("suppress_tokens")
        for cfg in (self.model.config, self.model.generation_config):
            for key, value in settings.items():
                setattr(cfg, key, value)
        self.model.generation_config.suppress_tokens = suppress
        self._output = name

    # encoding

    def encode(self, text: str, vocabulary: str, *, add_special_tokens: bool = False) -> list[int]:
        """Tokenize ``text`` with ``vocabulary``'s tokenizer and return global ids."""
        span = self.span(vocabulary)
        return [i + span.offset for i in span.tokenizer.encode(text, add_special_tokens=add_special_tokens)]

    def encode_chat(self, messages: Sequence[Mapping[str, str]], vocabulary: str, *,
                    add_generation_prompt: bool = True) -> list[int]:
        """Render ``messages`` with ``vocabulary``'s chat template and return global ids."""
        tokenizer = self.tokenizer(vocabulary)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"vocabulary {vocabulary!r} has no chat template; prompt it with plain text "
                              "(`chat=False`) or give a tokenizer with a chat_template")
        text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
        return self.encode(text, vocabulary)

    def vocabulary_of(self, global_id: int) -> str:
        for span in self._spans.values():
            if span.offset <= global_id < span.end:
                return span.name
        raise DataError(f"id {global_id} is outside every vocabulary (0..{self.size - 1})")

    @property
    def size(self) -> int:
        return sum(s.size for s in self._spans.values())

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Decode global ids; each run of ids from one vocabulary goes through that vocabulary's tokenizer."""
        out, run, current = [], [], None
        for i in [int(i) for i in ids] + [-1]:
            name = self.vocabulary_of(i) if i >= 0 else None
            if name != current and run:
                span = self.span(current)
                out.append(span.tokenizer.decode([j - span.offset for j in run],
                                                 skip_special_tokens=skip_special_tokens))
                run = []
            current = name
            run.append(i)
        return "".join(out)

    # inference

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits over the output vocabulary: (B, T) global ids → (B, T, V_output)."""
        import torch

        span = self.span(self.output)
        with torch.no_grad():
            full = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return full[..., span.offset:span.end]

    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 64, batch_size: int = 8,
                 stop_ids: Sequence[int] = (), **generate_kwargs) -> list[list[int]]:
        """Continue each prompt (global ids) in the output vocabulary; return the new global ids, stop excluded.

        Prompts are left-padded into batches; ``generate_kwargs`` go to ``model.generate`` (greedy by
        default). Only ids of the output vocabulary can be produced. Generation ends at the output
        vocabulary's stop ids and at ``stop_ids`` (extra local ids of the output vocabulary, e.g. newlines).
        """
        import torch

        check_generation(max_new_tokens=max_new_tokens, batch_size=batch_size, **generate_kwargs)
        if any(len(p) == 0 for p in prompts):
            raise DataError("every prompt needs at least one token; got an empty prompt")
        generation = self.model.generation_config
        span = self.span(self.output)
        bad = [i for i in stop_ids if not 0 <= i < span.size]
        if bad:
            raise ConfigError(f"stop ids {bad[:5]} are outside the output vocabulary {span.name!r} "
                              f"(0..{span.size - 1}); give local ids of that vocabulary")
        stops = [i + span.offset for i in (*span.stop_ids, *stop_ids)]
        if stop_ids:
            generate_kwargs.setdefault("eos_token_id", list(dict.fromkeys(stops)))
        stops = set(stops)
        pad = generation.pad_token_id if generation.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        generate_kwargs.setdefault("do_sample", False)
        results: list[list[int]] = []
        batches = range(0, len(prompts), batch_size)
        for start in progress_bar(batches, desc=f"generating ({self.output})"):
            batch = [list(p) for p in prompts[start:start + batch_size]]
            width = max(map(len, batch))
            input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
            with torch.no_grad():
                out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          **generate_kwargs)
            for row in out[:, width:].tolist():
                new = []
                for i in row:
                    if i in stops:
                        break
                    new.append(i)
                results.append(new)
        return results

    def translate(self, texts: Sequence[str], *, source: str, target: str, instruction: str = DEFAULT_INSTRUCTION,
                  chat: bool | None = None, source_language: str | None = None,
                  target_language: str | None = None, max_new_tokens: int = 128, batch_size: int = 8,
                  stop_at_newline: bool = True, no_repeat_ngram_size: int = TRANSLATE_NO_REPEAT_NGRAM,
                  repetition_penalty: float = TRANSLATE_REPETITION_PENALTY, stop_ids: Sequence[int] = (),
                  **generate_kwargs) -> list[str]:
        """Translate ``texts``: the prompt is read through ``source``, the answer written in ``target``.

        ``chat`` (default: whether ``source`` has a chat template) wraps the instruction as a user turn.
        A translation is one line: with ``stop_at_newline`` the answer cannot start with a line break
        and ends at its first one. ``no_repeat_ngram_size`` (0: off) and ``repetition_penalty`` (1: off)
        keep a small model from looping; the defaults were chosen on dev verses by chrF
        (``benchmarks/results/translation/``). The output vocabulary is restored afterwards.
        """
        check_instruction(instruction)
        check_generation(max_new_tokens=max_new_tokens, batch_size=batch_size, repetition_penalty=repetition_penalty,
                         no_repeat_ngram_size=no_repeat_ngram_size, **generate_kwargs)
        for name in (source, target):
            self.span(name)  # fail early on an unknown name
        prompts = [translation_prompt(self, text, source=source, target=target, instruction=instruction, chat=chat,
                                      source_language=source_language, target_language=target_language)
                   for text in texts]
        if stop_at_newline:
            lines = newline_ids(self.tokenizer(target))
            stop_ids = (*stop_ids, *lines)
            offset = self.span(target).offset
            generate_kwargs.setdefault("begin_suppress_tokens", [i + offset for i in lines] or None)
        if no_repeat_ngram_size:
            generate_kwargs.setdefault("no_repeat_ngram_size", no_repeat_ngram_size)
        if repetition_penalty != 1.0:
            generate_kwargs.setdefault("repetition_penalty", repetition_penalty)
        logger.info("translating %s lines %s -> %s in batches of %d (at most %d new tokens each%s)",
                    f"{len(texts):,}", source, target, batch_size, max_new_tokens,
                    ", one line" if stop_at_newline else "")
        previous = self.output
        self.set_output(target)
        try:
            outputs = self.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, stop_ids=stop_ids,
                                    **generate_kwargs)
        finally:
            self.set_output(previous)
        return [self.decode(ids).strip() for ids in outputs]

    # views, export, save

    @contextlib.contextmanager
    def view(self, name: str, *, share: bool = True) -> Iterator[Any]:
        """Temporarily turn :attr:`model` into the plain single-vocabulary model of ``name``.

        Inside the block the model has only ``name``'s rows (local ids, its special ids, no suppressed
        tokens). With ``share`` the rows are views of the Hydra's tables, so in-place updates (an
        optimizer step) land in the Hydra; without, they are copies.
        """
        import torch

        from transtok.surgery import embedding_pair, is_tied

        span = self.span(name)
        model = self.model
        inputs, outputs = embedding_pair(model)
        tied = is_tied(model)
        saved_in, saved_out = inputs.weight, outputs.weight
        saved_bias = getattr(outputs, "bias", None)

        def rows(t: torch.Tensor) -> torch.nn.Parameter:
            part = t.detach()[span.offset:span.end]
            return torch.nn.Parameter(part if share else part.clone(), requires_grad=t.requires_grad)

        ids = _output_settings(VocabularySpan(name, 0, span.size, span.stop_ids, span.tokenizer), span.size)
        suppress = ids.pop("suppress_tokens")  # a single vocabulary suppresses only its padding rows
        new_in = rows(saved_in)
        new_out = new_in if tied else rows(saved_out)
        try:
            inputs.weight = new_in
            outputs.weight = new_out
            if saved_bias is not None:
                outputs.bias = rows(saved_bias)
            with contextlib.ExitStack() as stack:
                stack.enter_context(_patched(model.config, vocab_size=span.size, **ids))
                stack.enter_context(_patched(model.generation_config, suppress_tokens=suppress, **ids))
                for module, attr in ((inputs, "num_embeddings"), (outputs, "out_features")):
                    if hasattr(module, attr):
                        stack.enter_context(_patched(module, **{attr: span.size}))
                yield model
        finally:
            inputs.weight = saved_in
            outputs.weight = saved_out
            if saved_bias is not None:
                outputs.bias = saved_bias

    def export(self, name: str, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write vocabulary ``name`` as a plain Hugging Face checkpoint (model + tokenizer)."""
        check_output_dir(directory, overwrite=overwrite, inputs=self.sources)
        with atomic_output_dir(directory, overwrite=overwrite, inputs=self.sources) as tmp, \
                self.view(name, share=False) as model:
            model.save_pretrained(tmp)
            self.tokenizer(name).save_pretrained(tmp)
            write_json(tmp / "transtok_hydra_export.json", {"vocabulary": name, "hydra_vocabularies": list(self.names)})
        logger.info("exported vocabulary %s to %s", name, directory)
        return Path(directory)

    def save_pretrained(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the Hydra: a plain checkpoint with the output vocabulary first, ``hydra.json`` and tokenizers.

        The in-memory Hydra is unchanged (its ids keep their offsets); only the saved copy is reordered.
        """
        check_output_dir(directory, overwrite=overwrite, inputs=self.sources)
        order = [self.output] + [n for n in self.names if n != self.output]
        spans, offset = [], 0
        for name in order:
            s = self._spans[name]
            spans.append(VocabularySpan(name, offset, s.size, s.stop_ids, s.tokenizer))
            offset += s.size
        state = self.model.state_dict()
        if order != list(self.names):
            state.update(self._reordered_tables(order))
        settings = _output_settings(spans[0], self.size)
        suppress = settings.pop("suppress_tokens")
        with atomic_output_dir(directory, overwrite=overwrite, inputs=self.sources) as tmp, \
                _patched(self.model.config, **settings), \
                _patched(self.model.generation_config, suppress_tokens=suppress, **settings):
            self.model.save_pretrained(tmp, state_dict=state)
            self.tokenizer(self.output).save_pretrained(tmp)
            for span in spans:
                span.tokenizer.save_pretrained(tmp / TOKENIZERS_DIR / span.name)
            write_json(tmp / HYDRA_FILE, {"format": FORMAT, "version": FORMAT_VERSION, "output": self.output,
                                          "vocabularies": [span.to_dict() for span in spans]})
        logger.info("saved Hydra (%s) to %s", ", ".join(order), directory)
        return Path(directory)

    def _reordered_tables(self, order: Sequence[str]) -> dict[str, torch.Tensor]:
        """State-dict entries of the embedding tensors with their row blocks in ``order`` (tied stay shared)."""
        import torch

        by_pointer: dict[int, torch.Tensor] = {}
        out = {}
        keys = _embedding_keys(self.model)
        for key, tensor in self.model.state_dict().items():
            if key in keys:
                if tensor.data_ptr() not in by_pointer:
                    by_pointer[tensor.data_ptr()] = torch.cat(
                        [tensor[self._spans[n].offset:self._spans[n].end] for n in order])
                out[key] = by_pointer[tensor.data_ptr()]
        return out


INSTRUCTION_FIELDS = ("text", "source_language", "target_language")
"""The fields a translation instruction may use."""


@dataclass
class Translation:
    """How a line is put to a model for translation (:func:`translation_prompt`): the settings of translate
    and evaluate translation."""

    source: str | None = option(None, flag="--from", metavar="NAME",
                                help="vocabulary (of a Hydra) or language of the source text")
    target: str | None = option(None, flag="--to", metavar="NAME",
                                help="vocabulary (of a Hydra) or language of the translation")
    instruction: str | None = option(None, metavar="TEMPLATE", group="advanced",
                                     help="prompt template with {text}, {source_language}, {target_language} "
                                          "(default: 'Translate the following {source_language} text into "
                                          "{target_language}.')")
    chat: bool | None = option(None, negate="--no-chat", group="advanced",
                               help="wrap the prompt as a user turn of the --from vocabulary's chat template "
                                    "(default: when it has one)")
    stop_at_newline: bool = option(True, flag="--stop-at-newline", negate="--no-stop-at-newline", group="advanced",
                                   help="a translation is one line: end each answer at its first line break "
                                        "(default: on; the defaults were chosen on dev verses by chrF)")


@dataclass
class Generation:
    """How :meth:`Hydra.generate` continues prompts (:func:`check_generation`): the settings of hydra generate
    and translate (translate has its own defaults, chosen on dev)."""

    max_new_tokens: int = option(128, metavar="N", help="tokens generated at most per prompt (default: %(default)s)")
    num_beams: int = option(1, metavar="N", help="beam search width; 1 = greedy (default: %(default)s)")
    batch_size: int = option(8, metavar="N", group="advanced",
                             help="prompts per left-padded batch (default: %(default)s)")
    repetition_penalty: float = option(1.0, metavar="P", group="advanced",
                                       help="divide the logits of tokens already in the text; 1 = off "
                                            "(default: %(default)s)")
    no_repeat_ngram_size: int = option(0, flag="--no-repeat-ngram", metavar="N", group="advanced",
                                       help="forbid repeating any N-gram; 0 = off, small models loop without it "
                                            "(default: %(default)s)")


def check_instruction(instruction: str) -> str:
    """``instruction`` unchanged when it formats with :data:`INSTRUCTION_FIELDS` (each a plain ``{name}``,
    a literal brace doubled); else a :class:`ConfigError` naming the bad part, before any model work."""
    import string

    known = ", ".join(f"{{{name}}}" for name in INSTRUCTION_FIELDS)
    if not isinstance(instruction, str):
        raise ConfigError(f"`instruction` must be a text template with {known}, got {instruction!r}")
    try:
        fields = [(name, conversion, spec) for _, name, spec, conversion in string.Formatter().parse(instruction)
                  if name is not None]
    except ValueError as exc:  # a lone '{' or '}'
        raise ConfigError(f"`instruction` {instruction!r} has a stray brace ({exc}); write a literal brace as {{{{ "
                          f"or }}}}, and fields as {known}") from None
    for name, conversion, spec in fields:
        if name not in INSTRUCTION_FIELDS or conversion or spec:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ConfigError(f"`instruction` {instruction!r} has the field {shown}; the fields are {known} "
                              f"(write a literal brace as {{{{ or }}}})")
    return instruction


def check_generation(*, max_new_tokens: int = 1, batch_size: int = 1, num_beams: int = 1,
                     repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0, temperature: float | None = None,
                     top_p: float | None = None, **_) -> None:
    """Refuse (:class:`ConfigError`) generation settings ``model.generate`` would fail on or silently misuse."""
    check_number("`max_new_tokens`", max_new_tokens, low=1, integer=True)
    check_number("`batch_size`", batch_size, low=1, integer=True, hint="prompts per batch")
    check_number("`num_beams`", num_beams, low=1, integer=True, hint="1 = greedy")
    check_number("`repetition_penalty`", repetition_penalty, low=0, low_open=True,
                 hint="1 = off, above 1 discourages repeats")
    check_number("`no_repeat_ngram_size`", no_repeat_ngram_size, low=0, integer=True, hint="0 = off")
    if temperature is not None:
        check_number("temperature", temperature, low=0, low_open=True, hint="sampling only; 1 = the model's own")
    if top_p is not None:
        check_number("top_p", top_p, low=0, high=1, low_open=True, hint="sampling only; 1 = off")


def read_spec(directory: str | os.PathLike) -> tuple[dict, list[Path]]:
    """The checked ``hydra.json`` of a Hydra directory and the path of each vocabulary's tokenizer.

    Refuses, in one line naming the file, what :meth:`Hydra.save_pretrained` never writes: a file
    that is not a JSON object, another format or a newer version, a missing or mistyped field,
    duplicate or unusable names, offsets that do not tile the table, stop ids outside their
    vocabulary, and tokenizer paths that leave the directory.
    """
    from transtok.loading import checkpoint_fix, path_inside
    from transtok.errors import CorruptFileError

    directory = Path(directory)
    path = directory / HYDRA_FILE
    fix = checkpoint_fix(directory)

    def bad(detail: str) -> CorruptFileError:
        return CorruptFileError(path, fix, detail)

    try:
        spec = read_json(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise bad(f"not JSON: {exc}") from exc
    if not isinstance(spec, dict):
        raise bad(f"it holds a JSON {type(spec).__name__}, not an object with format, version, output and "
                  "vocabularies")
    if spec.get("format") != FORMAT:
        raise ConfigError(f"{path} has format {_short(spec.get('format'))}, not {FORMAT!r}: it does not describe a "
                          "Hydra; give a directory written by 'transtok hydra build'")
    version = spec.get("version")
    if isinstance(version, str) and version.strip().isdigit():  # a hand-edited "1"
        version = int(version)
    if not _whole(version):
        raise bad(f"version {_short(spec.get('version'))} is not a whole number")
    if version > FORMAT_VERSION:
        raise ConfigError(f"{path} has format {FORMAT!r} version {version}; this transtok reads up to version "
                          f"{FORMAT_VERSION} (upgrade transtok)")
    vocabularies = spec.get("vocabularies")
    if not isinstance(vocabularies, list) or not vocabularies:
        got = "no 'vocabularies'" if vocabularies is None else f"'vocabularies' {_short(vocabularies)}"
        raise bad(f"{got}; expected a non-empty list of {{name, offset, size, stop_ids, tokenizer}} objects")
    tokenizers, names, offset = [], [], 0
    for i, v in enumerate(vocabularies):
        where = f"vocabularies[{i}]"
        if not isinstance(v, dict):
            raise bad(f"{where} is {_short(v)}, not an object")
        name = v.get("name")
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
            raise bad(f"{where}.name {_short(name)} is not a vocabulary name (e.g. 'en')")
        if name in names:
            raise bad(f"vocabulary {name!r} is listed twice")
        for key in ("offset", "size"):
            if not _whole(v.get(key)):
                raise bad(f"{where}.{key} {_short(v.get(key))} is not a whole number")
        if v["offset"] != offset or v["size"] < 1:
            raise bad(f"vocabulary {name!r} has offset {v['offset']} and size {v['size']}; the vocabularies "
                      f"must tile the table in order (this one should start at {offset} and have rows)")
        stops = v.get("stop_ids")
        if not isinstance(stops, list) or not all(_whole(stop) and stop < v["size"] for stop in stops):
            raise bad(f"{where}.stop_ids {_short(stops)} is not a list of ids of that vocabulary (0..{v['size'] - 1})")
        tokenizer = v.get("tokenizer")
        if not isinstance(tokenizer, str):
            raise bad(f"{where}.tokenizer {_short(tokenizer)} is not a folder path")
        tokenizers.append(path_inside(directory, tokenizer, named_by=path))
        names.append(name)
        offset += v["size"]
    if spec.get("output") not in names:
        raise bad(f"output {_short(spec.get('output'))} is not one of its vocabularies ({', '.join(names)})")
    return spec, tokenizers


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def newline_ids(tokenizer) -> list[int]:
    """Local ids whose text holds a line break (special tokens excluded): where a one-line answer ends."""
    from transtok.vocabulary import token_bytes

    return [i for i, piece in enumerate(token_bytes(tokenizer)) if piece is not None and b"\n" in piece]


def translation_prompt(hydra: Hydra, text: str, *, source: str, target: str,
                       instruction: str = DEFAULT_INSTRUCTION, chat: bool | None = None,
                       source_language: str | None = None, target_language: str | None = None) -> list[int]:
    """Global ids of a translation prompt for ``text``, encoded in vocabulary ``source``.

    ``instruction`` may use {text}, {source_language} and {target_language}; with ``chat`` (default:
    when ``source`` has a chat template) it becomes a user turn followed by the assistant prefix.
    """
    content = check_instruction(instruction).format(
        text=text, source_language=source_language or LANGUAGE_NAMES.get(source, source),
        target_language=target_language or LANGUAGE_NAMES.get(target, target))
    if chat is None:
        chat = bool(getattr(hydra.tokenizer(source), "chat_template", None))
    if chat:
        return hydra.encode_chat([{"role": "user", "content": content}], source)
    return hydra.encode(content, source, add_special_tokens=True)


def _output_settings(span: VocabularySpan, total: int) -> dict:
    """Config values that make ``span`` the output vocabulary of a Hydra with ``total`` rows (global ids)."""
    tokenizer = span.tokenizer
    eos = [i + span.offset for i in span.stop_ids]
    bos, pad = (None if v is None else v + span.offset for v in (tokenizer.bos_token_id, tokenizer.pad_token_id))
    return {"bos_token_id": bos, "pad_token_id": pad if pad is not None else (eos[0] if eos else None),
            "eos_token_id": (eos[0] if len(eos) == 1 else eos) if eos else None,
            "suppress_tokens": (list(range(0, span.offset)) + _padding(span) + list(range(span.end, total))) or None}


def _padding(span: VocabularySpan) -> list[int]:
    """Global ids of ``span``'s padding rows (a padded table has more rows than its tokenizer tokens)."""
    tokens = len(span.tokenizer) if span.tokenizer is not None else span.size
    return list(range(span.offset + min(tokens, span.size), span.end))
