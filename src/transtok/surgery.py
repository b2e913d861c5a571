"""Architecture-agnostic model surgery through Hugging Face's embedding accessors.

The only module that writes model weights in memory. Tying is detected by tensor identity, never
by per-architecture tables or private attributes.
"""
from __future__ import annotations

import logging

import torch

from transtok.errors import ArchitectureError, MismatchError
from transtok.mapping import TokenMapping
from transtok.vocabulary import vocab_hash

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


def check_vocabularies(mapping: TokenMapping, target_tokenizer, source_tokenizer=None) -> None:
    """Refuse a mapping built for another target tokenizer or (when given) another source tokenizer."""
    if mapping.target_vocab_hash != vocab_hash(target_tokenizer) or mapping.shape[0] != len(target_tokenizer):
        raise MismatchError(
            f"the mapping was built for target vocabulary {mapping.target_vocab_hash} ({mapping.shape[0]} tokens), "
            f"the tokenizer given has {vocab_hash(target_tokenizer)} ({len(target_tokenizer)} tokens); "
            "use the tokenizer the mapping was built with")
    if source_tokenizer is not None and mapping.source_vocab_hash != vocab_hash(source_tokenizer):
        raise MismatchError(
            f"the mapping was built for source vocabulary {mapping.source_vocab_hash}, the model's tokenizer is "
            f"{vocab_hash(source_tokenizer)}; build the mapping with this model's tokenizer")


def transplant(model, mapping: TokenMapping, target_tokenizer, *, source_tokenizer=None):
    """Give ``model`` the target vocabulary, in place, and return it.

    Input rows (and LM-head rows and bias when the head is untied) become ``mapping.apply`` of the
    source rows; a tied model stays tied. ``config.vocab_size`` and the special-token ids of the
    config and generation config follow the target tokenizer.
    """
    check_vocabularies(mapping, target_tokenizer, source_tokenizer)
    inputs, outputs = embedding_pair(model)
    tied = is_tied(model)
    if inputs.weight.shape[0] != mapping.shape[1]:
        raise MismatchError(f"the mapping expects {mapping.shape[1]} source rows, {type(model).__name__} has "
                            f"{inputs.weight.shape[0]}; build the mapping with this model's tokenizer")
    with torch.no_grad():
        new_inputs = mapping.apply(inputs.weight)
        new_outputs = None if tied else mapping.apply(outputs.weight)
        bias = getattr(outputs, "bias", None)
        new_bias = mapping.apply(bias) if bias is not None else None

        model.resize_token_embeddings(mapping.shape[0], mean_resizing=False)
        inputs, outputs = embedding_pair(model)
        inputs.weight.copy_(new_inputs)
        if tied:
            model.tie_weights()
        else:
            outputs.weight.copy_(new_outputs)
        if new_bias is not None:
            outputs.bias.data = new_bias.to(outputs.bias.dtype)
    if is_tied(model) != tied:
        raise ArchitectureError(f"{type(model).__name__}: resizing changed the tying of the LM head "
                                f"(tied before: {tied}); please report this model class")
    model.config.vocab_size = mapping.shape[0]
    set_special_token_ids(model, target_tokenizer)
    logger.info("transplanted %s to %d target tokens (%s head)", type(model).__name__, mapping.shape[0],
                "tied" if tied else "untied")
    return model
