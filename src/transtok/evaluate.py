"""Evaluation whose numbers are comparable across tokenizers: bits per byte, fertility, chrF/BLEU, and the
likelihood of reference translations (bits per byte after their own source vs another line's).

Perplexity per *token* cannot compare a model with its source: the target tokenizer cuts the
same text into fewer tokens. Bits per UTF-8 byte can, provided every model is scored with the
same protocol (see :func:`evaluate_perplexity`); each result carries a signature, as sacrebleu's
scores do, that names everything the number depends on.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from transtok import __version__
from transtok.checks import check_device, pick_bf16
from transtok.errors import ConfigError, DataError, MismatchError, require
from transtok.hydra import DEFAULT_INSTRUCTION
from transtok.options import option

logger = logging.getLogger(__name__)

DEFAULT_STRIDE = 128
"""Window step of the sliding protocol used by ``finetune``'s held-out curve and ``evaluate perplexity``:
with 512-token windows every scored token after the first window sees at least 384 tokens."""


@dataclass(frozen=True)
class PerplexityResult:
    """Held-out language-model quality of one model + tokenizer on one text."""

    bits_per_byte: float     # total NLL in bits / UTF-8 bytes: comparable across tokenizers
    token_perplexity: float  # exp(mean NLL per token): only comparable for the same tokenizer
    nll_bits: float          # total NLL of all text tokens, in bits
    tokens: int              # text tokens scored (prefix tokens excluded)
    bytes: int               # UTF-8 bytes of the joined text
    windows: int
    seq_len: int
    stride: int              # tokens scored per window after the first (seq_len: the block protocol)
    precision: str           # "bf16" (autocast) or "fp32"
    signature: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"BPB {self.bits_per_byte:.4f} | token perplexity {self.token_perplexity:.2f} | "
                f"{self.tokens:,} tokens, {self.bytes:,} bytes, {self.windows:,} windows | {self.signature}")


def context_limit(model) -> int | None:
    """The model's maximum number of positions, from whichever config key its architecture uses."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def eval_seq_len(model, preferred: int = 512) -> int:
    """The evaluation window: ``preferred`` tokens, or fewer when the model's context is shorter
    (one position goes to the bos/eos prefix of every window)."""
    limit = context_limit(model)
    return min(preferred, limit - 1) if limit else preferred


def _prefix_id(tokenizer) -> int:
    for role in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, role, None)
        if value is not None:
            return int(value)
    raise ConfigError(
        f"the tokenizer ({type(tokenizer).__name__}, {len(tokenizer):,} tokens) has neither a bos nor an eos token, "
        "so the first token of each window cannot be predicted; set tokenizer.bos_token (or eos_token) first")


def perplexity_signature(tokenizer, *, seq_len: int, n_bytes: int, text_sha: str, precision: str,
                         stride: int | None = None) -> str:
    """``bpb|tok:<vocab hash>|seq:<seq_len>|stride:<N>|bytes:<N>|text:<sha8>|prec:<bf16|fp32>|v:<version>``
    (``stride`` = ``seq_len``: the block protocol)."""
    from transtok.vocabulary import vocab_hash

    stride = seq_len if stride is None else stride
    return (f"bpb|tok:{vocab_hash(tokenizer)}|seq:{seq_len}|stride:{stride}|bytes:{n_bytes}|text:{text_sha}"
            f"|prec:{precision}|v:{__version__}")


def sliding_windows(n_tokens: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, end, scored)`` windows over ``n_tokens`` tokens: ``ids[start:end]`` is fed, its last
    ``scored`` tokens are scored. The first window scores all its tokens; each next one starts and ends
    ``stride`` tokens later (the last one is cut at ``n_tokens``), so every token is scored exactly once
    and every scored token after the first window sees at least ``seq_len - stride`` tokens before it.
    ``stride == seq_len`` gives non-overlapping blocks."""
    windows, end = [], min(seq_len, n_tokens)
    windows.append((0, end, end))
    while end < n_tokens:
        new_end = min(end + stride, n_tokens)
        windows.append((end + stride - seq_len, new_end, new_end - end))
        end = new_end
    return windows


@dataclass
class Windows:
    """How :func:`evaluate_perplexity` cuts the text into windows, as ``evaluate perplexity`` declares it."""

    seq_len: int = option(512, metavar="N", help="text tokens per window (default: %(default)s)")
    stride: int | None = option(None, metavar="TOKENS",
                                help="tokens the window moves by; every scored token after the first window sees at "
                                     "least seq-len - stride tokens of context; --stride equal to --seq-len is the "
                                     "cheaper block protocol (default: 128, or --seq-len when smaller)")
    batch_size: int = option(8, metavar="N", group="advanced", help="windows per forward pass (default: %(default)s)")


def evaluate_perplexity(model, tokenizer, texts: Sequence[str], *, seq_len: int = 512, stride: int | None = None,
                        batch_size: int = 8, device=None, bf16: bool | str | None = None) -> PerplexityResult:
    """Score ``texts`` with a causal LM; return bits per byte and token perplexity.

    Protocol (identical for every tokenizer, so BPB is comparable): the texts are joined with
    ``"\\n"``; bytes = UTF-8 length of the join; it is tokenized without special tokens and fed in
    windows of ``seq_len`` tokens, each prefixed with the bos token (eos when there is none), so the
    model sees ``seq_len + 1`` positions; every text token is predicted exactly once. BPB = total
    NLL (bits) / bytes.

    ``stride``: windows move by this many tokens and only their last ``stride`` tokens are scored
    (the first window scores all), so every scored token after the first window has at least
    ``seq_len - stride`` tokens of context: the figure then hardly depends on how many tokens a
    tokenizer needs (a block protocol restarts cold more often for a tokenizer that needs more).
    None or ``seq_len``: non-overlapping blocks (cheapest: ``seq_len / stride`` times fewer forward
    positions).

    ``device``: where to run (the model is moved there); default: where the model is.
    ``bf16``: autocast to bfloat16 (True / 'bf16') or not (False / 'fp32'); None / 'auto': where the device
    computes it natively.
    """
    import torch
    from transtok.progress import bar as progress_bar

    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ConfigError(f"`seq_len` must be a positive integer, got {seq_len!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    stride = seq_len if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= seq_len:
        raise ConfigError(f"`stride` must be an integer from 1 to `seq_len` ({seq_len}), got {stride!r}; "
                          f"a stride equal to `seq_len` is the block protocol")
    device = check_device(device)
    if isinstance(texts, str):
        raise ConfigError("texts must be a sequence of strings, not one string; pass [text]")
    text = "\n".join(texts)
    if not text.strip():
        raise DataError("the evaluation text is empty; give held-out text in the model's target language")
    encoded = text.encode("utf-8")
    limit = context_limit(model)
    if limit is not None and seq_len + 1 > limit:
        raise ConfigError(
            f"seq_len {seq_len} needs {seq_len + 1} positions (the bos/eos prefix + {seq_len} tokens) but the model "
            f"has {limit}; use seq_len {limit - 1} or less")

    ids = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    if not ids:
        raise DataError(f"the tokenizer turns the evaluation text ({len(encoded):,} bytes) into no tokens at all; "
                        "check that the text is in a language and script the tokenizer covers")
    prefix = _prefix_id(tokenizer)
    rows = model.get_input_embeddings().weight.shape[0]
    top = max(max(ids), prefix)
    if top >= rows:
        raise MismatchError(
            f"the tokenizer produced id {top:,} but the model has only {rows:,} embedding rows; evaluate the model "
            "with the tokenizer saved next to it (the one it was transplanted or trained with)")

    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    use_bf16 = pick_bf16(bf16, device)
    precision = "bf16" if use_bf16 else "fp32"

    windows = [(ids[start:end], scored) for start, end, scored in sliding_windows(len(ids), seq_len, stride)]
    logger.info("scoring %s tokens (%s bytes) in %s windows of %d moved by %d, %d per batch, %s on %s",
                f"{len(ids):,}", f"{len(encoded):,}", f"{len(windows):,}", seq_len, stride, batch_size, precision,
                device)
    total_nats = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            batches = range(0, len(windows), batch_size)
            for start in progress_bar(batches, desc="perplexity", unit="batch"):
                total_nats += _batch_nll(model, windows[start:start + batch_size], prefix, device)
    finally:
        model.train(was_training)

    tokens, n_bytes = len(ids), len(encoded)
    nll_bits = total_nats / math.log(2)
    signature = perplexity_signature(tokenizer, seq_len=seq_len, stride=stride, n_bytes=n_bytes,
                                     text_sha=hashlib.sha256(encoded).hexdigest()[:8], precision=precision)
    result = PerplexityResult(
        bits_per_byte=nll_bits / n_bytes, token_perplexity=math.exp(total_nats / tokens), nll_bits=nll_bits,
        tokens=tokens, bytes=n_bytes, windows=len(windows), seq_len=seq_len, stride=stride, precision=precision,
        signature=signature)
    logger.info("%s", result)
    return result


def _batch_nll(model, windows: list[tuple[list[int], int]], prefix: int, device) -> float:
    """Summed NLL (nats) of the scored (last ``scored``) tokens of a batch of ``(window, scored)``
    (right-padded, masked)."""
    import torch
    import torch.nn.functional as F

    length = max(len(w) for w, _ in windows) + 1
    input_ids = torch.full((len(windows), length), prefix, dtype=torch.long)
    attention = torch.zeros((len(windows), length), dtype=torch.long)
    labels = torch.full((len(windows), length - 1), -100, dtype=torch.long)
    for row, (window, scored) in enumerate(windows):
        input_ids[row, 1:len(window) + 1] = torch.tensor(window)
        attention[row, :len(window) + 1] = 1
        labels[row, len(window) - scored:len(window)] = torch.tensor(window[len(window) - scored:])
    # use_cache=False: a KV cache is never reused here, and costs memory (seq_len x layers x hidden per window)
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                   use_cache=False).logits[:, :-1]
    labels = labels.to(device)
    # Upcast (a bf16 log-softmax over a large vocabulary loses ~2 digits of the NLL), one window at a
    # time so that the float32 copy is (seq_len, V), not (batch, seq_len, V): 4 GB for Gemma's 262k.
    total = 0.0
    for row in range(logits.shape[0]):
        total += F.cross_entropy(logits[row].float(), labels[row], ignore_index=-100, reduction="sum").item()
    return total


def fertility(tokenizer, texts: Iterable[str]) -> float:
    """Tokens per whitespace-separated word over ``texts`` (no special tokens)."""
    texts = [t for t in texts if t and not t.isspace()]
    words = sum(len(t.split()) for t in texts)
    if words == 0:
        raise DataError("fertility needs text with at least one word; the texts are empty")
    encodings = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return sum(map(len, encodings)) / words


@dataclass(frozen=True)
class TranslationScore:
    """Corpus-level chrF and BLEU of hypotheses against one reference each."""

    chrf: float
    bleu: float
    chrf_signature: str
    bleu_signature: str
    segments: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"chrF2 {self.chrf:.2f} ({self.chrf_signature})\n"
                f"BLEU {self.bleu:.2f} ({self.bleu_signature})\n"
                f"{self.segments:,} segments")


def score_translation(hypotheses: Sequence[str], references: Sequence[str]) -> TranslationScore:
    """chrF2 and BLEU (sacrebleu defaults) of detokenized ``hypotheses`` vs ``references`` (one per line)."""
    metrics = require("sacrebleu.metrics", package="sacrebleu", extra="eval", purpose="scoring translations")
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise ConfigError("hypotheses and references must be sequences of strings, not single strings")
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise DataError(
            f"{len(hypotheses):,} hypotheses but {len(references):,} references; give one hypothesis per reference "
            "line, in the same order (empty lines count)")
    if not references:
        raise DataError("there are no references to score against; give at least one segment")
    chrf, bleu = metrics.CHRF(), metrics.BLEU()
    chrf_score = chrf.corpus_score(hypotheses, [references])
    bleu_score = bleu.corpus_score(hypotheses, [references])
    return TranslationScore(chrf=chrf_score.score, bleu=bleu_score.score, chrf_signature=str(chrf.get_signature()),
                            bleu_signature=str(bleu.get_signature()), segments=len(references))


def read_segments(path: str | os.PathLike) -> list[str]:
    """One segment per line, blank lines kept (an empty hypothesis is still a hypothesis)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"segment file {str(path)!r} does not exist or is not a file; check the path")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: bytes that are not UTF-8; re-encode the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    return [line.rstrip("\r") for line in lines]


# --- likelihood of reference translations ----------------------------------------------------------


@dataclass(frozen=True)
class TranslationLikelihood:
    """How cheaply a model writes each reference translation after the prompt of its own source line,
    and after another line's source (the control: the gap is what the model takes from what it reads)."""

    bits_per_byte: float           # NLL (bits) of the references / their UTF-8 bytes: comparable across tokenizers
    bits_per_byte_shuffled: float  # the same with each reference after another line's source
    bits: float
    bits_shuffled: float
    tokens: int                    # target tokens scored per pass, each answer's end included when ``end``
    bytes: int                     # UTF-8 bytes of the references (line breaks not counted)
    lines: int
    end: bool                      # whether the end of each answer (a stop or line-break token) is scored
    precision: str                 # "bf16" (autocast) or "fp32"
    per_line: list                 # per reference: bytes, tokens, bits, bits_shuffled, shuffled_source (0-based line)
    signature: str

    @property
    def gap(self) -> float:
        """Bits per byte the right source saves over another line's (positive: the model reads the source)."""
        return self.bits_per_byte_shuffled - self.bits_per_byte

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"BPB {self.bits_per_byte:.4f} given its own source, {self.bits_per_byte_shuffled:.4f} given another "
                f"line's (shuffled): the source saves {self.gap:.4f} bits per byte\n"
                f"{self.lines:,} lines, {self.tokens:,} tokens{' (answer ends included)' if self.end else ''}, "
                f"{self.bytes:,} bytes | {self.signature}")


def check_translation_pairs(sources: Sequence[str], references: Sequence[str]) -> None:
    """Refuse (:class:`DataError`) pairs :func:`translation_likelihood` cannot score: not one source per
    reference, fewer than two lines (no shuffled control), an empty reference or one holding a line break."""
    if isinstance(sources, str) or isinstance(references, str):
        raise ConfigError("sources and references must be sequences of strings, not single strings; pass [text]")
    if len(sources) != len(references):
        raise DataError(f"{len(sources):,} sources but {len(references):,} references; give one source line per "
                        "reference line, in the same order (blank lines count)")
    if len(references) < 2:
        raise DataError(f"{len(references)} line{'' if len(references) == 1 else 's'} to score; the shuffled control "
                        "gives each reference another line's source, so give at least two lines")
    for number, reference in enumerate(references, 1):
        if not reference.strip():
            raise DataError(f"reference line {number} is blank; there is no translation to score there: remove "
                            "that line from both the sources and the references")
        if "\n" in reference or "\r" in reference:
            raise DataError(f"reference line {number} holds a line break; a translation is one line (the answer "
                            "ends at its first line break): give one reference per line")


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation of ``range(n)`` (n >= 2) that moves every index, the same for the same seed."""
    import random

    if n < 2:
        raise ConfigError(f"a derangement needs at least 2 items, got {n}")
    rng, order = random.Random(seed), list(range(n))
    while True:  # a random permutation is a derangement with probability ~1/e: ~3 tries
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            return order


def translation_likelihood(hydra, sources: Sequence[str], references: Sequence[str], *, source: str, target: str,
                           instruction: str = DEFAULT_INSTRUCTION, chat: bool | None = None,
                           source_language: str | None = None, target_language: str | None = None,
                           batch_size: int = 8, shuffle_seed: int = 0, end: bool = True, device=None,
                           bf16: bool | str | None = None) -> TranslationLikelihood:
    """Bits per byte of each reference after the translation prompt of its own source, and of another's.

    The prompt is exactly what :meth:`Hydra.translate` feeds the model (:func:`~transtok.hydra.translation_prompt`:
    read through ``source``); the answer is the reference encoded in ``target`` without special tokens. Each
    answer token is scored once, from logits restricted to ``target``'s tokens as translate's decoder sees
    them: the other vocabularies and the table's padding rows are excluded and a line break cannot be the
    first token. With ``end`` the answer's end is scored too: the probability of any token translate stops
    at (a stop id or a line-break token) after the last reference token. Decoding heuristics (repetition
    penalty) are not applied: this is the model's own likelihood. Bytes are the references' UTF-8 bytes.

    The control gives reference ``i`` the source of line ``derangement(n, shuffle_seed)[i]`` (never its own
    line, though a repeated source line may hold the same text).
    ``device``: where to run (the model is moved there); default: where it is. ``bf16``: autocast to bfloat16;
    default: where the device computes it natively. A plain model is a one-vocabulary Hydra: ``source`` =
    ``target``, with ``source_language``/``target_language`` naming the languages in the prompt.
    """
    import torch

    from transtok.checks import SEED_MAX, check_number
    from transtok.hydra import check_instruction, newline_ids, translation_prompt
    from transtok.progress import bar as progress_bar
    from transtok.vocabulary import vocab_hash

    check_translation_pairs(sources, references)
    check_instruction(instruction)
    check_number("batch_size", batch_size, low=1, integer=True, hint="prompts per forward pass")
    check_number("shuffle_seed", shuffle_seed, low=0, high=SEED_MAX, integer=True)
    device = check_device(device)
    end = bool(end)
    span, source_offset = hydra.span(target), hydra.span(source).offset
    tokenizer = span.tokenizer
    width = min(len(tokenizer), span.size)  # the rows generation can emit: padding rows are suppressed
    newlines = [i for i in newline_ids(tokenizer) if i < width]
    stops = sorted({i for i in (*span.stop_ids, *newlines) if i < width})
    if end and not stops:
        raise ConfigError(f"vocabulary {target!r} has no stop id and no line-break token, so the end of an answer "
                          "cannot be scored; score without it (end=False) or give the tokenizer an eos token")

    prompts = [translation_prompt(hydra, text, source=source, target=target, instruction=instruction, chat=chat,
                                  source_language=source_language, target_language=target_language)
               for text in sources]
    answers = [tokenizer.encode(text, add_special_tokens=False) for text in references]
    limit = context_limit(hydra.model)
    for number, (prompt, answer) in enumerate(zip(prompts, answers), 1):
        if not answer:
            raise DataError(f"reference line {number} encodes to no {target!r} tokens; check that the references "
                            f"are in the language and script of vocabulary {target!r}")
        if limit is not None and len(prompt) + len(answer) > limit:
            raise DataError(f"line {number}: the prompt ({len(prompt):,} tokens) and the reference ({len(answer):,}) "
                            f"exceed the model's {limit:,} positions; shorten or drop that line")
    order = derangement(len(references), shuffle_seed)

    if device is not None:
        hydra.model.to(device)
    device = next(hydra.model.parameters()).device
    use_bf16 = pick_bf16(bf16, device)
    # Both passes at once, longest first, so that a batch holds sequences of similar length (little padding).
    items = [(i, False, prompts[i]) for i in range(len(prompts))] + [(i, True, prompts[j]) for i, j in enumerate(order)]
    items.sort(key=lambda item: -(len(item[2]) + len(answers[item[0]])))
    nats = {}
    logger.info("scoring %s references (%s, %s) after their own and another line's source, %d per batch, %s on %s",
                f"{len(references):,}", source, target, batch_size, "bf16" if use_bf16 else "fp32", device)
    was_training = hydra.model.training
    hydra.model.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            for start in progress_bar(range(0, len(items), batch_size), desc="translation likelihood", unit="batch"):
                batch = items[start:start + batch_size]
                scores = _answer_nll(hydra.model, [(prompt, answers[i]) for i, _, prompt in batch], span.offset,
                                     width, newlines, stops if end else [], device)
                nats.update({(i, shuffled): score for (i, shuffled, _), score in zip(batch, scores)})
    finally:
        hydra.model.train(was_training)

    to_bits = 1 / math.log(2)
    per_line = [{"bytes": len(text.encode("utf-8")), "tokens": len(answer) + end, "bits": nats[i, False] * to_bits,
                 "bits_shuffled": nats[i, True] * to_bits, "shuffled_source": order[i]}
                for i, (text, answer) in enumerate(zip(references, answers))]
    n_bytes = sum(line["bytes"] for line in per_line)
    bits, bits_shuffled = (math.fsum(line[key] for line in per_line) for key in ("bits", "bits_shuffled"))
    # The ids the model reads and writes (local, so that the order of a Hydra's vocabularies does not matter):
    # they name the instruction, chat template, language names and texts at once.
    fed = hashlib.sha256()
    for prompt, answer in zip(prompts, answers):
        fed.update(f"{[i - source_offset for i in prompt]}{answer}".encode())
    precision = "bf16" if use_bf16 else "fp32"
    signature = (f"mtlik|tok:{vocab_hash(tokenizer)}|src:{vocab_hash(hydra.tokenizer(source))}"
                 f"|ids:{fed.hexdigest()[:8]}|end:{'yes' if end else 'no'}|shuffle:{shuffle_seed}"
                 f"|lines:{len(references)}|bytes:{n_bytes}|prec:{precision}|v:{__version__}")
    result = TranslationLikelihood(
        bits_per_byte=bits / n_bytes, bits_per_byte_shuffled=bits_shuffled / n_bytes, bits=bits,
        bits_shuffled=bits_shuffled, tokens=sum(line["tokens"] for line in per_line), bytes=n_bytes,
        lines=len(references), end=bool(end), precision=precision, per_line=per_line, signature=signature)
    logger.info("%s", result)
    return result


def _answer_nll(model, pairs: list[tuple[list[int], list[int]]], offset: int, width: int, newlines: list[int],
                stops: list[int], device) -> list[float]:
    """NLL (nats) of each answer (local ids of the vocabulary at ``offset``) after its prompt (global ids),
    right-padded and masked; the logits are those of local ids ``0..width-1``, line breaks barred from the
    first answer token; with ``stops`` the end is scored as the probability of any of them."""
    import torch

    length = max(len(p) + len(a) for p, a in pairs)
    input_ids = torch.full((len(pairs), length), offset, dtype=torch.long)  # the padding is masked out
    attention = torch.zeros((len(pairs), length), dtype=torch.long)
    rows, positions, labels, first = [], [], [], []
    for row, (prompt, answer) in enumerate(pairs):
        sequence = prompt + [i + offset for i in answer]
        input_ids[row, :len(sequence)] = torch.tensor(sequence)
        attention[row, :len(sequence)] = 1
        # position p predicts the token at p + 1: the answer from the prompt's last position on, its end from
        # the answer's last one
        scored = len(answer) + bool(stops)
        rows += [row] * scored
        positions += range(len(prompt) - 1, len(prompt) - 1 + scored)
        labels += answer + ([-1] if stops else [])
        first += [True] + [False] * (scored - 1)
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
    rows_t, labels_t = torch.tensor(rows, device=device), torch.tensor(labels, device=device)
    # Upcast: a bf16 log-softmax over a large vocabulary loses ~2 digits of the NLL.
    picked = logits[rows_t, torch.tensor(positions, device=device), offset:offset + width].float()
    if newlines:  # translate's decoder cannot open an answer with a line break (begin_suppress_tokens)
        barred = torch.zeros(width, dtype=torch.bool, device=device)
        barred[newlines] = True
        picked = picked.masked_fill(torch.tensor(first, device=device)[:, None] & barred[None, :], float("-inf"))
    logp = torch.log_softmax(picked, dim=-1)
    token = logp.gather(1, labels_t.clamp(min=0)[:, None])[:, 0]
    if stops:
        token = torch.where(labels_t >= 0, token, torch.logsumexp(logp[:, stops], dim=-1))
    nll = torch.zeros(len(pairs), dtype=torch.float64, device=device).index_add_(0, rows_t, -token.double())
    return nll.tolist()
