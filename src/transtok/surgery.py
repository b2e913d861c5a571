"""Architecture-agnostic model surgery through Hugging Face's embedding accessors.

The only module that writes model weights in memory. Tying is detected by tensor identity, never
by per-architecture tables or private attributes.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from transtok.errors import ArchitectureError, MismatchError
from transtok.mapping import TokenMapping
from transtok.vocabulary import vocab_hash

if TYPE_CHECKING:  # torch loads lazily: the CLI imports the pipeline (and so this module) at parse time
    import torch

logger = logging.getLogger(__name__)


def is_tied(model) -> bool:
    """Whether the LM head shares its weight tensor with the input embeddings."""
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    return outputs is not None and outputs.weight.data_ptr() == inputs.weight.data_ptr()


def embedding_pair(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The input embedding module and the LM head; raise if the model has no LM head."""
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    if inputs is None or not hasattr(inputs, "weight"):
        raise ArchitectureError(f"{type(model).__name__}.get_input_embeddings() returned {type(inputs).__name__}; "
                                "expected an embedding module with a (V, d) weight")
    if outputs is None or not hasattr(outputs, "weight"):
        raise ArchitectureError(
            f"{type(model).__name__} has no output embeddings (LM head); load the model with "
            "AutoModelForCausalLM (not AutoModel) or give a checkpoint of a causal LM")
    if outputs.weight.shape != inputs.weight.shape:
        raise ArchitectureError(f"{type(model).__name__}: LM head weight {tuple(outputs.weight.shape)} and input "
                                f"embeddings {tuple(inputs.weight.shape)} differ in shape; expected (V, d) for both")
    return inputs, outputs


def set_special_token_ids(model, tokenizer) -> None:
    """Write the tokenizer's bos/eos/pad ids into ``model.config`` and ``model.generation_config``."""
    ids = {f"{role}_token_id": getattr(tokenizer, f"{role}_token_id", None) for role in ("bos", "eos", "pad")}
    configs = [model.config]
    if getattr(model, "generation_config", None) is not None:
        configs.append(model.generation_config)
    for config in configs:
        for key, value in ids.items():
            setattr(config, key, value)


# --- padded embedding tables --------------------------------------------------------------------
#
# Many checkpoints pad the embedding table beyond the tokenizer so that its row count is a round
# multiple (Qwen2: 151,936 rows = 128 x 1,187 for 151,665 tokens; Phi-3: 32,064 = 64 x 501 for
# 32,011; Pythia: 50,304 = 128 x 393 for 50,277). Rows past the tokenizer are never looked up and
# never trained to be emitted. A mapping covers the tokenizer's ids only; the new table is padded
# to the same multiple, its padding rows filled by the source's convention, and generation is kept
# off them by ``generation_config.suppress_tokens``.

PAD_MULTIPLE_MAX = 128
"""The largest multiple a padded table is rounded to (Megatron's default; 256-row multiples are
rounded to 128, which keeps the table aligned for the same kernels)."""


def padding_multiple(rows: int) -> int:
    """The multiple a padded table of ``rows`` rows was rounded to: the largest power of two that
    divides ``rows``, at most :data:`PAD_MULTIPLE_MAX` (151,936 → 128, 32,064 → 64, an odd count → 1)."""
    if rows < 1:
        raise MismatchError(f"an embedding table needs at least one row, got {rows}")
    return min(rows & -rows, PAD_MULTIPLE_MAX)


def padded_vocab_size(source_rows: int, source_tokens: int, new_tokens: int) -> int:
    """Rows of the new embedding table for ``new_tokens`` tokens, padded as the source's.

    A source whose table has exactly ``source_tokens`` rows is not padded: the new table has
    ``new_tokens`` rows. A padded source (more rows than tokens) gives ``new_tokens`` rounded up to
    :func:`padding_multiple` of ``source_rows``. Raises :class:`MismatchError` when the source
    table is smaller than its tokenizer.
    """
    if source_rows < source_tokens:
        raise MismatchError(f"the embedding table has {source_rows:,} rows but the tokenizer {source_tokens:,} "
                            "tokens; give the tokenizer saved with this model")
    if source_rows == source_tokens:
        return new_tokens
    multiple = padding_multiple(source_rows)
    return -(-new_tokens // multiple) * multiple


def pad_rows(mapped: torch.Tensor, source: torch.Tensor, source_tokens: int, rows: int) -> torch.Tensor:
    """Append padding rows to ``mapped`` (V_t, d) or (V_t,) up to ``rows``, by the source's convention.

    ``source`` is the whole source table (R, d) or bias (R,), of which the first ``source_tokens``
    rows belong to the tokenizer. Padding rows are zeros when the source's own padding rows are all
    zero, else the mean of the source's tokenizer rows (never looked up; generation suppresses them).
    """
    import torch

    extra = rows - mapped.shape[0]
    if extra <= 0:
        return mapped
    spare = source[source_tokens:]
    if spare.numel() and not spare.detach().any():
        fill = torch.zeros(mapped.shape[1:], dtype=mapped.dtype)
    else:
        fill = source[:source_tokens].detach().float().mean(dim=0).to(mapped.dtype)
    return torch.cat([mapped, fill.expand(extra, *mapped.shape[1:])])


def map_table(mapping: TokenMapping, source: torch.Tensor) -> torch.Tensor:
    """The new table (or bias) for ``source`` (R, d) or (R,): the mapped tokenizer rows, then padding.

    Only the first ``mapping.shape[1]`` source rows (the source tokenizer's) are mapped; extra
    (padding) rows are never partners. Returns (padded_vocab_size(R, V_s, V_t), d).
    """
    tokens = mapping.shape[1]
    rows = padded_vocab_size(source.shape[0], tokens, mapping.shape[0])
    return pad_rows(mapping.apply(source[:tokens]), source, tokens, rows)


def padding_ids(tokens: int, rows: int) -> list[int] | None:
    """Ids of a table's padding rows (``tokens``..``rows``-1), or None when it is not padded."""
    return list(range(tokens, rows)) or None


def set_padding_suppression(generation_config, tokens: int, rows: int) -> None:
    """Keep generation off padding rows: ``suppress_tokens`` = the padding ids (None when unpadded).

    The source's own suppressed ids, if any, were source ids and mean nothing in the new vocabulary.
    """
    if generation_config is not None:
        generation_config.suppress_tokens = padding_ids(tokens, rows)


def check_vocabularies(mapping: TokenMapping, target_tokenizer, source_tokenizer=None) -> None:
    """Refuse a mapping built for another target tokenizer or (when given) another source tokenizer."""
    if mapping.target_vocab_hash != vocab_hash(target_tokenizer) or mapping.shape[0] != len(target_tokenizer):
        raise MismatchError(
            f"the mapping was built for target vocabulary {mapping.target_vocab_hash} ({mapping.shape[0]} tokens), "
            f"the tokenizer given has {vocab_hash(target_tokenizer)} ({len(target_tokenizer)} tokens); "
            "use the tokenizer the mapping was built with")
    if source_tokenizer is not None and (mapping.source_vocab_hash != vocab_hash(source_tokenizer)
                                         or mapping.shape[1] != len(source_tokenizer)):
        raise MismatchError(
            f"the mapping was built for source vocabulary {mapping.source_vocab_hash}, the model's tokenizer is "
            f"{vocab_hash(source_tokenizer)}; build the mapping with this model's tokenizer")


def untie_config(config) -> None:
    """Mark ``config`` (and its text config, for composite models) as having an untied LM head."""
    config.tie_word_embeddings = False
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if text_config is not config and hasattr(text_config, "tie_word_embeddings"):
        text_config.tie_word_embeddings = False


def untie_head(model) -> bool:
    """Give a tied LM head its own parameter, a copy of the input rows, in place; False when it was not tied."""
    import torch

    if not is_tied(model):
        return False
    inputs, outputs = embedding_pair(model)
    untie_config(model.config)
    with torch.no_grad():
        outputs.weight = torch.nn.Parameter(inputs.weight.detach().clone(), requires_grad=inputs.weight.requires_grad)
    if is_tied(model):
        raise ArchitectureError(f"{type(model).__name__}: the LM head is still tied after untying; please report "
                                "this model class")
    logger.info("untied the LM head: +%s parameters (%s rows x %d)", f"{outputs.weight.numel():,}",
                f"{outputs.weight.shape[0]:,}", outputs.weight.shape[1])
    return True


def transplant(model, mapping: TokenMapping, target_tokenizer, *, source_tokenizer=None):
    """Give ``model`` the target vocabulary, in place, and return it.

    Input rows (and LM-head rows and bias when the head is untied) become ``mapping.apply`` of the
    source rows; a tied model stays tied. A mapping with separate head rows (``mapping.head``,
    vocabulary extension) maps the source head (the input table, when tied) with those rows instead,
    and a tied model is untied: the head gets its own parameter and ``config.tie_word_embeddings``
    becomes False. A padded source table (more rows than source tokens) gives a padded new table
    (:func:`padded_vocab_size`, :func:`pad_rows`). ``config.vocab_size`` is the new table's row
    count; the special-token ids of the config and generation config follow the target tokenizer,
    and the generation config suppresses the padding ids.
    """
    import torch

    check_vocabularies(mapping, target_tokenizer, source_tokenizer)
    inputs, outputs = embedding_pair(model)
    tied = is_tied(model)
    untie = tied and mapping.head is not None
    if inputs.weight.shape[0] < mapping.shape[1]:
        raise MismatchError(f"the mapping expects {mapping.shape[1]} source rows, {type(model).__name__} has "
                            f"{inputs.weight.shape[0]}; build the mapping with this model's tokenizer")
    rows = padded_vocab_size(inputs.weight.shape[0], mapping.shape[1], mapping.shape[0])
    with torch.no_grad():
        new_inputs = map_table(mapping, inputs.weight)
        new_outputs = map_table(mapping.output, outputs.weight) if (untie or not tied) else None
        bias = getattr(outputs, "bias", None)
        new_bias = map_table(mapping.output, bias) if bias is not None else None

        model.resize_token_embeddings(rows, mean_resizing=False)
        inputs, outputs = embedding_pair(model)
        inputs.weight.copy_(new_inputs)
        if untie:  # the head gets its own parameter (as hydra.Hydra.build does)
            untie_config(model.config)
            outputs.weight = torch.nn.Parameter(new_outputs.to(inputs.weight.dtype),
                                                requires_grad=inputs.weight.requires_grad)
        elif tied:
            model.tie_weights()
        else:
            outputs.weight.copy_(new_outputs)
        if new_bias is not None:
            outputs.bias.data = new_bias.to(outputs.bias.dtype)
    if is_tied(model) != (tied and not untie):
        raise ArchitectureError(f"{type(model).__name__}: resizing changed the tying of the LM head "
                                f"(tied before: {tied}, untied on purpose: {untie}); please report this model class")
    model.config.vocab_size = rows
    set_special_token_ids(model, target_tokenizer)
    set_padding_suppression(getattr(model, "generation_config", None), mapping.shape[0], rows)
    if untie:
        logger.info("untied the LM head for its own new rows: +%s parameters (%s rows x %d)",
                    f"{rows * outputs.weight.shape[1]:,}", f"{rows:,}", outputs.weight.shape[1])
    logger.info("transplanted %s to %d target tokens (%d rows, %s head)", type(model).__name__, mapping.shape[0],
                rows, "tied" if is_tied(model) else "untied")
    return model
