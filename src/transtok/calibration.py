"""Calibration of a transferred LM head: the language offset of an extended model's new rows, and the
unigram prior of a replaced vocabulary's rows (:func:`apply_unigram_prior`, the default of ``transfer``).

A new target-language token is initialised next to the source tokens it translates (`` Dios``
from `` God``), so in source-language text it takes part of their probability. A model without an
LM-head bias has no per-token prior to lower; but the mean final hidden state (the LM head's input)
of source-language text, mu_s, differs from that of target-language text, mu_t. With
M = [mu_s; mu_t] (2, d), the least-norm vector

    v = Mᵀ (M Mᵀ)⁻¹ [−δ, 0]

has mu_s·v = −δ and mu_t·v = 0. Added to every new head row, it lowers new tokens' logits by δ nats
on average in source-language contexts and leaves them on average in target-language ones. The
means come from a sample of the *training* parallel corpus (never dev or test text), read with the
extended tokenizer as evaluation reads text: joined with newlines, windows of up to 512 tokens each
after the bos (else eos) token; every position that predicts a text token counts.

The hidden states are the input of the LM head itself (a forward pre-hook on
``get_output_embeddings()``), so ``logit = h·row`` holds exactly, whatever the architecture.

The unigram prior uses the same pass: a replaced row averages source rows of other frequencies, so the
model's mean prediction q over target text misses the text's token frequencies f; adding
b_t·mu_t/|mu_t|² to head row t, b_t = clip(log f_t − log q_t, ±5), moves token t's logit by b_t on average.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transtok.errors import ArchitectureError, ConfigError, DataError
from transtok.options import option

if TYPE_CHECKING:  # torch loads lazily: the pipeline imports this module's defaults at import time
    import torch

logger = logging.getLogger(__name__)

DEFAULT_OFFSET = 1.0
"""δ of an extended model with an untied head, in nats: on the Spanish dev books (SmolLM2-135M +
16,000 tokens, head spelling share 0.5) δ 0 / 0.5 / 1.0 / 1.5 gave English +1.19 / +1.04 / +0.95 / +0.90 %
bits per byte over the source model, Spanish 2.179 / 2.182 / 2.185 / 2.190 (benchmarks/results/extension)."""
DEFAULT_PAIRS = 256
"""Parallel pairs sampled (seed :data:`DEFAULT_SEED`) from the training corpus for the two means."""
DEFAULT_SEED = 0


@dataclass
class LanguageOffset:
    """The offset vector and the statistics it was computed from (float64)."""

    delta: float
    vector: torch.Tensor
    """(d,) v: source_mean·v = −delta, target_mean·v = 0."""
    source_mean: torch.Tensor
    target_mean: torch.Tensor
    source_positions: int
    target_positions: int
    source_second_moment: torch.Tensor
    """(d, d) mean of h hᵀ over the source positions (for the spread of the shift)."""
    target_second_moment: torch.Tensor

    def shift(self, side: str) -> tuple[float, float]:
        """Mean and standard deviation of h·v (the change of every new token's logit) over the
        positions of ``side`` ("source" or "target")."""
        mean_h = self.source_mean if side == "source" else self.target_mean
        second = self.source_second_moment if side == "source" else self.target_second_moment
        mean = float(mean_h @ self.vector)
        variance = float(self.vector @ second @ self.vector) - mean * mean
        return mean, math.sqrt(max(variance, 0.0))

    def report(self) -> dict:
        source_mean, source_std = self.shift("source")
        target_mean, target_std = self.shift("target")
        return {"delta": self.delta, "vector_norm": float(self.vector.norm()),
                "source_positions": self.source_positions, "target_positions": self.target_positions,
                "source_shift_mean": source_mean, "source_shift_std": source_std,
                "target_shift_mean": target_mean, "target_shift_std": target_std}


def check_offset(delta: float) -> float:
    """``delta`` as a float, or a :class:`ConfigError` when it is not a finite number >= 0."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta) or delta < 0:
        raise ConfigError(f"`new_token_offset` must be a finite number of nats >= 0 (0 turns it off), got {delta!r}")
    return float(delta)


def sample_pairs(source: Sequence[str], target: Sequence[str], n: int = DEFAULT_PAIRS,
                 seed: int = DEFAULT_SEED) -> tuple[list[str], list[str]]:
    """``n`` aligned pairs drawn without replacement (all when there are fewer), in corpus order."""
    if len(source) != len(target):
        raise DataError(f"the two sides of the parallel sample differ in length ({len(source)} vs {len(target)})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"the offset sample needs a positive number of pairs, got {n!r}")
    keep = sorted(random.Random(seed).sample(range(len(source)), min(n, len(source))))
    return [source[i] for i in keep], [target[i] for i in keep]


def passes_in_bf16(bf16: bool | str | None, device) -> bool:
    """Whether the calibration passes autocast to bfloat16 on ``device``: as asked ('bf16'/True,
    'fp32'/False), else (None / 'auto') on a GPU that computes it natively and never on the CPU, where the
    figures of benchmarks/ were measured in fp32 and an extended model's offset stays exact."""
    import torch

    from transtok.checks import pick_bf16

    if bf16 in (None, "auto") and torch.device(device).type == "cpu":
        return False
    return pick_bf16(bf16, device)


@contextlib.contextmanager
def _placed(model, device):
    """Run the block with ``model`` on ``device`` (None: where it is), and put it back after."""
    import torch

    home = next(model.parameters()).device
    device = home if device is None else torch.device(device)
    if device == home:
        yield device
        return
    model.to(device)
    try:
        yield device
    finally:
        model.to(home)


def _head_passes(model, tokenizer, texts: Sequence[str], *, seq_len: int | None, batch_size: int, empty: str,
                 desc: str = "forward passes", device=None, bf16: bool | str | None = None):
    """Yield ``(logits, head_inputs)`` of each batch of ``texts`` read as
    :func:`transtok.evaluate.evaluate_perplexity` reads them (joined with newlines, no special tokens, windows of
    ``seq_len`` after a bos/eos prefix), cut to the positions that predict a text token (the last position of
    a window predicts the token after it); eval mode, no gradients, the training mode restored after.
    ``empty``: the DataError message when the texts are blank; ``desc``: the progress bar's label.
    ``device``: where the passes run (the model is moved there and back; None: where it is); ``bf16``:
    autocast to bfloat16 (:func:`passes_in_bf16`)."""
    import torch

    from transtok.evaluate import _prefix_id, eval_seq_len
    from transtok.progress import bar as progress_bar

    text = "\n".join(texts)
    if not text.strip():
        raise DataError(empty)
    seq_len = seq_len or eval_seq_len(model)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = _prefix_id(tokenizer)
    windows = [[prefix, *ids[start:start + seq_len]] for start in range(0, len(ids), seq_len)]
    captured: list[torch.Tensor] = []
    hook = model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: captured.append(args[0].detach()))
    training = model.training
    model.eval()  # no dropout in the means
    try:
        batches = []  # windows of one length per batch (the last window may be shorter)
        for length in sorted({len(w) for w in windows}, reverse=True):
            same = [w for w in windows if len(w) == length]
            batches += [same[start:start + batch_size] for start in range(0, len(same), batch_size)]
        with _placed(model, device) as where:
            use_bf16 = passes_in_bf16(bf16, where)
            logger.info("%s: %s windows of up to %d tokens, %s on %s", desc, f"{len(windows):,}", seq_len + 1,
                        "bf16" if use_bf16 else "fp32", where)
            with torch.no_grad(), torch.autocast(where.type, dtype=torch.bfloat16, enabled=use_bf16):
                for batch in progress_bar(batches, desc=desc, unit="batch"):
                    captured.clear()
                    logits = model(input_ids=torch.tensor(batch, device=where), use_cache=False).logits
                    yield logits[:, :-1].float(), captured[-1][:, :-1].float()
    finally:
        hook.remove()
        model.train(training)


def head_inputs_moments(model, tokenizer, texts: Sequence[str], *, seq_len: int | None = None,
                        batch_size: int = 2, device=None,
                        bf16: bool | str | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean (d,) and second moment (d, d), float64, of the LM head's input over ``texts``, and the
    number of positions. Texts are read as :func:`transtok.evaluate.evaluate_perplexity` reads them
    (joined with newlines, no special tokens, windows of ``seq_len`` after a bos/eos prefix); the
    positions are those that predict a text token."""
    total = second = None
    count = 0
    for _, inputs in _head_passes(model, tokenizer, texts, seq_len=seq_len, batch_size=batch_size,
                                  empty="the offset sample is empty; give parallel text with non-blank lines on "
                                        "both sides", desc="language offset", device=device, bf16=bf16):
        states = inputs.reshape(-1, inputs.shape[-1]).double().cpu()
        total = states.sum(0) if total is None else total + states.sum(0)
        second = states.T @ states if second is None else second + states.T @ states
        count += states.shape[0]
    return total / count, second / count, count


def language_offset(model, tokenizer, source_texts: Sequence[str], target_texts: Sequence[str], delta: float, *,
                    seq_len: int | None = None, device=None, bf16: bool | str | None = None) -> LanguageOffset:
    """The least-norm v with mean(h_source)·v = −delta and mean(h_target)·v = 0 (module docstring)."""
    import torch

    delta = check_offset(delta)
    logger.info("language offset: mean LM-head inputs over %d source-language and %d target-language texts "
                "(one forward pass each)", len(source_texts), len(target_texts))
    where = {"seq_len": seq_len, "device": device, "bf16": bf16}
    source_mean, source_second, source_n = head_inputs_moments(model, tokenizer, source_texts, **where)
    target_mean, target_second, target_n = head_inputs_moments(model, tokenizer, target_texts, **where)
    means = torch.stack([source_mean, target_mean])  # (2, d)
    gram = means @ means.T
    cosine = float(gram[0, 1] / math.sqrt(float(gram[0, 0] * gram[1, 1]) or 1.0))
    if abs(cosine) > 1 - 1e-9:
        raise DataError(f"the mean hidden states of the source and target samples are parallel (cosine {cosine:.9f}); "
                        "no offset separates the two languages: give a larger or more varied parallel sample, or "
                        "`new_token_offset` 0")
    vector = means.T @ torch.linalg.solve(gram, torch.tensor([-delta, 0.0], dtype=torch.float64))
    return LanguageOffset(delta, vector, source_mean, target_mean, source_n, target_n, source_second, target_second)


def offset_rows(rows: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``rows`` (n, d) + ``vector`` (d,), added in float32 and returned in ``rows``' dtype (the one
    rule both the in-memory and the streaming path use, so that they agree bit for bit)."""
    import torch

    return (rows.float() + vector.to(device=rows.device, dtype=torch.float32)).to(rows.dtype)


def apply_language_offset(model, tokenizer, source_texts: Sequence[str], target_texts: Sequence[str], *,
                          delta: float = DEFAULT_OFFSET, new_from: int, device=None,
                          bf16: bool | str | None = None) -> LanguageOffset:
    """Compute the offset on ``model`` (in place) and add it to the LM-head rows of the new tokens,
    ids ``new_from .. len(tokenizer) - 1`` (padding rows untouched). The head must be untied.
    ``device`` / ``bf16``: where and how the forward passes run (:func:`_head_passes`)."""
    import torch

    from transtok.surgery import is_tied

    if is_tied(model):
        raise ArchitectureError(f"{type(model).__name__} ties its LM head to the input embeddings; the language "
                                "offset changes only the new head rows, so it needs an untied head (drop `tied_head`, "
                                "or `new_token_offset` 0)")
    offset = language_offset(model, tokenizer, source_texts, target_texts, delta, device=device, bf16=bf16)
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        head[new_from:len(tokenizer)] = offset_rows(head[new_from:len(tokenizer)], offset.vector)
    log_offset(offset, len(tokenizer) - new_from)
    return offset


def log_offset(offset: LanguageOffset, rows: int) -> None:
    r = offset.report()
    logger.info("language offset of %s new head rows (delta %.2f, |v| %.4f): new-token logits move by %.4f ± %.4f "
                "in source-language contexts (%s positions), %.4f ± %.4f in target-language ones (%s positions)",
                f"{rows:,}", offset.delta, r["vector_norm"], r["source_shift_mean"], r["source_shift_std"],
                f"{r['source_positions']:,}", r["target_shift_mean"], r["target_shift_std"],
                f"{r['target_positions']:,}")


# --- Unigram prior of a transferred model's LM head -------------------------------------------------------------
DEFAULT_PRIOR = 1.0
"""Strength of the unigram prior that a replaced vocabulary gets by default (0 = off). Chosen on the dev
books: at init among 0.5, 1 and 2 in Arabic and Spanish (benchmarks/results/ablation_prior/), and against
no prior after the training budget in Spanish (benchmarks/results/prior_dev_after_es/)."""
DEFAULT_PRIOR_TEXTS = 64
"""Target-language training texts sampled (seed :data:`DEFAULT_SEED`) for the model's mean prediction (the
token frequencies count every text). Chosen on the dev books of two languages (benchmarks/results/prior_lines/):
64, 128 and 256 lines score the same on the mean of Spanish and Russian (1.4313, 1.4309, 1.4315 bits per byte;
Spanish alone +0.005 from 256 to 64, Russian −0.005), and 64 is the one whose pass stays under a quarter of the
alignment's time in both (0.11 and 0.15 on 2 CPU cores; 128: 0.21 and 0.26). 1,024 lines scored as 256 did
(benchmarks/results/ablation_prior_texts/)."""
PRIOR_SMOOTHING = 0.5
"""Add-k smoothing of the target token counts (tokens unseen in the text still get a finite prior)."""
PRIOR_CLIP = 5.0
"""The largest logit change in nats, either way (a token seen once should not jump by 10 nats)."""
PRIOR_CHUNK_LINES = 2048
"""Texts per piece that the prior's token counts are encoded in (:func:`token_counts`)."""


@dataclass
class UnigramPrior:
    """The per-token logit changes and the direction they are added along (float64)."""

    strength: float
    bias: torch.Tensor
    """(V,) b: nats added, on average over target-language contexts, to each token's logit."""
    vector: torch.Tensor
    """(d,) v with mean(h)·v = 1, so that adding b_t·v to head row t adds b_t to its logit on average."""
    positions: int
    texts: int

    def report(self, start: int = 0) -> dict:
        """Strength, sample and the logit changes of the rows from ``start`` on (those that moved)."""
        moved = self.bias[start:]
        return {"strength": self.strength, "positions": self.positions, "texts": self.texts,
                "bias_mean_abs": float(moved.abs().mean()), "bias_min": float(moved.min()),
                "bias_max": float(moved.max())}


@dataclass
class HeadCalibration:
    """The LM head's calibration after a transplant: the settings of transfer and transplant."""

    new_token_offset: float | None = option(
        None, metavar="NATS", group="advanced",
        help="extended vocabulary with separate LM-head rows: one vector added to every new head row lowers new "
             "tokens' logits by NATS on average in source-language contexts, not in target-language ones (means "
             "over a sample of the parallel corpus); 0 turns it off (default: 1.0 with a parallel corpus, else 0)")
    offset_pairs: int = option(DEFAULT_PAIRS, metavar="N", group="advanced",
                               help="parallel pairs sampled (seed 0) for the offset's two means (default: %(default)s)")
    unigram_prior: float | None = option(
        None, metavar="S", group="advanced",
        help="replaced vocabulary: move each LM-head row's logit towards the token frequencies of the parallel "
             "corpus's target side, strength S (1 = one full step; unties a tied head, +V x d parameters; 0 turns it "
             "off; default: 1 with a parallel corpus, else 0)")


def check_prior(strength: float, flag: str = "`unigram_prior`") -> float:
    """``strength`` as a float, or a :class:`ConfigError` naming ``flag`` when it is not a finite number >= 0."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength) \
            or strength < 0:
        raise ConfigError(f"{flag} must be a finite number >= 0 (0 turns it off), got {strength!r}")
    return float(strength)


def _resolved(value: float | None, check, default: float, needs: Sequence[tuple[bool, str]]) -> float:
    """``value`` checked by ``check``, or ``default`` when None (callers pass 0 where a need is unmet);
    a non-zero value whose needs are not all met is a :class:`ConfigError` with that need's message."""
    if value is None:
        return default
    value = check(value)
    for met, message in needs:
        if value and not met:
            raise ConfigError(message.format(value=value))
    return value


def resolve_offset(delta: float | None, *, head_rows: bool, texts: bool = True) -> float:
    """The language offset δ to apply: ``delta`` checked, or by default :data:`DEFAULT_OFFSET` when the
    model gets separate head rows and there is parallel text, else 0. Raises :class:`ConfigError` for an
    offset that cannot be applied."""
    return _resolved(delta, check_offset, DEFAULT_OFFSET if head_rows and texts else 0.0, [
        (head_rows, "`new_token_offset` {value:g} moves the new LM-head rows only, so it needs separate head rows: "
                    "an extended vocabulary mapped without `tied_head` (or give `new_token_offset` 0)"),
        (texts, "`new_token_offset` {value:g} is computed on parallel text: give `parallel` FILE (the training "
                "corpus; a sample of its pairs is read), or `new_token_offset` 0")])


def resolve_prior(strength: float | None, *, replaced: bool, texts: bool = True) -> float:
    """The unigram prior's strength to apply: ``strength`` checked, or by default :data:`DEFAULT_PRIOR`
    for a replaced vocabulary with target text to count, else 0. Raises :class:`ConfigError` for a
    prior that cannot be applied."""
    return _resolved(strength, check_prior, DEFAULT_PRIOR if replaced and texts else 0.0, [
        (replaced, "`unigram_prior` {value:g} is for a replaced vocabulary (it moves every head row; an extended "
                   "model keeps its source rows and has `new_token_offset`); drop it"),
        (texts, "`unigram_prior` {value:g} counts target-language tokens: give `parallel` FILE (the training "
                "corpus; its target side is read), or `unigram_prior` 0")])


def mean_prediction(model, tokenizer, texts: Sequence[str], *, seq_len: int | None = None,
                    batch_size: int = 2, device=None,
                    bf16: bool | str | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The model's mean next-token distribution (V,) over the first ``len(tokenizer)`` ids, the mean LM-head
    input (d,), both float64, and the number of positions, over ``texts`` read as evaluation reads them
    (joined with newlines, windows of ``seq_len`` after a bos/eos prefix; positions that predict a text token)."""
    import torch

    probs = states = None
    count = 0
    for logits, inputs in _head_passes(model, tokenizer, texts, seq_len=seq_len, batch_size=batch_size,
                                       empty="the unigram prior needs target-language text; the sample is empty",
                                       desc="unigram prior", device=device, bf16=bf16):
        p = torch.softmax(logits[..., :len(tokenizer)].float(), dim=-1).double().sum((0, 1)).cpu()
        h = inputs.double().sum((0, 1)).cpu()
        probs = p if probs is None else probs + p
        states = h if states is None else states + h
        count += logits.shape[0] * logits.shape[1]
    return probs / count, states / count, count


def token_counts(tokenizer, texts: Sequence[str], *, chunk: int = PRIOR_CHUNK_LINES) -> torch.Tensor:
    """(V,) float64 counts of each token of ``tokenizer`` in ``texts`` joined with newlines, as evaluation
    reads them. The joined text is cut after a newline every ``chunk`` texts and the pieces encoded in one
    batch, which a fast tokenizer spreads over the cores (half the time on two); the counts are the whole
    text's (a byte-level BPE's exactly; where a tokenizer marks the start of a text, SentencePiece's ``▁``, the
    first word of each piece may split otherwise: a few tokens in a million for the default pieces)."""
    import torch

    pieces = ["\n".join(texts[start:start + chunk]) + ("\n" if start + chunk < len(texts) else "")
              for start in range(0, len(texts), chunk)]
    ids = [i for piece in tokenizer(pieces, add_special_tokens=False)["input_ids"] for i in piece]
    vocab = len(tokenizer)
    return torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=vocab)[:vocab].double()


def unigram_prior(model, tokenizer, texts: Sequence[str], *, strength: float = DEFAULT_PRIOR,
                  sample: int = DEFAULT_PRIOR_TEXTS, seed: int = DEFAULT_SEED,
                  seq_len: int | None = None, device=None, bf16: bool | str | None = None) -> UnigramPrior:
    """Per-token logit changes that move the model's mean prediction towards the target text's unigram
    distribution: b = strength · clip(log f − log q, ±PRIOR_CLIP), f = smoothed token frequencies of all
    ``texts``, q = the model's mean next-token distribution on ``sample`` of them. A transferred row
    averages source rows of other frequencies (Arabic من from *from*, *of*, *the*; a word piece from its
    spelling), so the new vocabulary's marginal is off; this is one step of fitting it."""
    import torch

    strength = check_prior(strength)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError("the unigram prior needs target-language text; every line is blank")
    vocab = len(tokenizer)
    counts = token_counts(tokenizer, texts)
    frequency = (counts + PRIOR_SMOOTHING) / (counts.sum() + PRIOR_SMOOTHING * vocab)
    picked = sorted(random.Random(seed).sample(range(len(texts)), min(sample, len(texts))))
    logger.info("unigram prior: token frequencies of %s texts (%s tokens), the model's mean prediction on %s of them",
                f"{len(texts):,}", f"{int(counts.sum()):,}", f"{len(picked):,}")
    mean_p, mean_h, positions = mean_prediction(model, tokenizer, [texts[i] for i in picked], seq_len=seq_len,
                                                device=device, bf16=bf16)
    bias = strength * (frequency.log() - mean_p.clamp_min(1e-30).log()).clamp(-PRIOR_CLIP, PRIOR_CLIP)
    return UnigramPrior(strength, bias, mean_h / (mean_h @ mean_h), positions, len(picked))


def prior_rows(rows: slice | None, vocab: int) -> tuple[int, int]:
    """The head rows ``start, stop`` that ``rows`` picks among the ``vocab`` token ids (None: all);
    a :class:`ConfigError` for a step or an empty range."""
    if rows is None:
        return 0, vocab
    start, stop, step = rows.indices(vocab)
    if step != 1 or start >= stop:
        raise ConfigError(f"the unigram prior's rows {rows} pick no contiguous ids among the {vocab:,} tokens; give "
                          f"a slice(start, stop) with 0 <= start < stop <= {vocab}")
    return start, stop


def apply_unigram_prior(model, tokenizer, texts: Sequence[str], *, strength: float = DEFAULT_PRIOR,
                        sample: int = DEFAULT_PRIOR_TEXTS, device=None,
                        bf16: bool | str | None = None, rows: slice | None = None) -> UnigramPrior:
    """Compute the prior on ``model`` and add b_t·v to LM-head row t for every token of ``tokenizer``
    (in place; padding rows untouched). A tied head is untied first (its rows are also the input
    embeddings, which the prior must not move): +V·d parameters. ``device`` / ``bf16``: where and how
    the forward passes run (default: where the model is; :func:`passes_in_bf16`).
    ``rows``: only these token ids' head rows move (e.g. ``slice(n_source, None)``, an extended model's
    new rows; the others stay bit-identical); None: every token's."""
    import torch

    from transtok.surgery import untie_head

    start, stop = prior_rows(rows, len(tokenizer))  # a bad range fails before the forward passes
    untie_head(model)
    prior = unigram_prior(model, tokenizer, texts, strength=strength, sample=sample, device=device, bf16=bf16)
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        change = prior.bias[start:stop, None] * prior.vector[None, :]  # (rows, d) float64
        head[start:stop] = (head[start:stop].double() + change.to(head.device)).to(head.dtype)
    r = prior.report(start)
    logger.info("unigram prior (strength %.2f) on %s head rows%s: logits move by %.3f nats on average (|b|), "
                "from %.2f to %.2f", strength, f"{stop - start:,}",
                "" if (start, stop) == (0, len(tokenizer)) else f" (ids {start:,}..{stop - 1:,})",
                r["bias_mean_abs"], r["bias_min"], r["bias_max"])
    return prior
