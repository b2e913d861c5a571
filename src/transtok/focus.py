"""FOCUS (Dobler & de Melo, EMNLP 2023) as a token mapping, computed with the ``deepfocus`` package.

FOCUS copies the source row of every target token that the source vocabulary also has (the
*overlap*) and builds every other target token as a sparsemax-weighted mix of the overlapping
tokens' source rows, the weights being sparsemax(cosine similarity) in an auxiliary fastText
space trained on target-language text tokenized by the target tokenizer. The weights never look
at the source embeddings, so FOCUS is a sparse row-stochastic (V_t, V_s) matrix, i.e. a
:class:`~transtok.mapping.TokenMapping` like every other init method, applicable to the input
embeddings, an untied head and a bias alike.

What comes from deepfocus: its overlap detection and token canonicalisation
(``get_overlapping_tokens``), its rule for unusable tokens (not in the fastText vocabulary or a
zero vector), its fastText hyper-parameters (CBOW, neg 10, dim 100, 3 epochs, min count 10), the
similarity (``fastdist.cosine_matrix_to_matrix``) and ``entmax.sparsemax``, the very functions
``deepfocus.FOCUS`` calls. Deliberate differences, each to keep the output contract of transtok:

* fastText is trained here with one thread and an explicit seed (deepfocus uses all cores and
  caches models and tokenized text under ``~/.cache/deepfocus`` keyed by the text file's *path*,
  which silently reuses stale results when the file changes).
* Tokens without a usable fastText vector get the mean source row (residual 1, the transtok
  fallback) instead of deepfocus's per-dimension normal draw.
* Special tokens are matched by role (``vocabulary.special_pairs``), as for every init method.
* ``overlap="bytes"`` (default) takes the overlap from identical canonical surface bytes
  (``vocabulary.exact_matches``): deepfocus canonicalises with ``tokenizer.decode(id).lstrip()``,
  which maps every partial-UTF-8 byte token of a byte-level BPE to ``"�"`` and every whitespace
  token to ``""``, so those all copy the *same* source row. ``overlap="deepfocus"`` keeps
  deepfocus's overlap verbatim (the mapping then reproduces ``deepfocus.FOCUS``).
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from transtok.checks import SEED_MAX, check_number
from transtok.errors import ConfigError, DataError, require
from transtok.mapping import PROVENANCE, MappingReport, TokenMapping
from transtok.options import option
from transtok.progress import bar as progress_bar
from transtok.vocabulary import byte_fallback_ids, exact_matches, special_pairs, token_bytes, vocab_hash

if TYPE_CHECKING:  # scipy and torch load lazily: the CLI imports this module at parse time
    import scipy.sparse as sp

logger = logging.getLogger(__name__)

PURPOSE = "`init` focus"
OVERLAP_MODES = ("bytes", "deepfocus")
_CHUNK_ROWS = 2048
"""New tokens per similarity/sparsemax block: bounds memory at CHUNK × anchors float64."""


@dataclass(frozen=True)
class FocusConfig:
    """Options of :func:`focus_mapping` (fastText ones mirror deepfocus's defaults)."""

    dim: int = option(100, flag="--focus-dim", group="advanced", help="fastText dimension (default: %(default)s)")
    """fastText vector size."""
    epochs: int = option(3, flag="--focus-epochs", group="advanced", help="fastText epochs (default: %(default)s)")
    """fastText training epochs over the target text."""
    min_count: int = option(3, flag="--focus-min-count", group="advanced",
                            help="fastText min count; rarer tokens take the mean row (default: %(default)s)")
    """Target tokens seen fewer times get no fastText vector: they neither anchor nor get FOCUS
    weights (new ones take the mean fallback row). 3, not deepfocus's 10: best of 1, 3 and 10 on the
    Spanish dev books (benchmarks/results/ablation_focus/)."""
    threads: int = option(1, flag="--focus-threads", group="advanced",
                          help="fastText threads; >1 is faster but not reproducible (default: %(default)s)")
    """fastText threads; more than 1 is faster but no longer reproducible."""
    seed: int = 0
    """fastText seed (its minstd_rand engine treats 0 and 1 alike); with one thread the model, hence
    the mapping, is a function of (text, tokenizer, options, seed). The command line's --seed sets it."""
    overlap: str = option("bytes", flag="--focus-overlap", choices=OVERLAP_MODES, group="advanced",
                          help="overlap by identical surface bytes, or deepfocus's own matching (default: %(default)s)")
    """'bytes' (identical canonical surface bytes) or 'deepfocus' (its decode-based canonical forms)."""
    match_symbols: bool = False
    """deepfocus option: also match numbers/punctuation after fuzzy normalisation (overlap='deepfocus')."""
    fuzzy_match_all: bool = False
    """deepfocus option: match ignoring case and word-start markers (overlap='deepfocus')."""
    fasttext_model: str | None = option(None, flag="--focus-fasttext", metavar="BIN", group="advanced",
                                        help="a trained token-level fastText model (skips training)")
    """A fastText .bin trained on target text tokenized by this target tokenizer (skips training)."""

    def __post_init__(self) -> None:
        for name in ("dim", "epochs", "threads", "min_count"):
            check_number(f"`focus.{name}`", getattr(self, name), low=1, integer=True)
        check_number("`focus.seed`", self.seed, low=0, high=SEED_MAX, integer=True)
        if self.overlap not in OVERLAP_MODES:
            raise ConfigError(f"`focus.overlap` {self.overlap!r} is not known; "
                              f"choose one of {', '.join(OVERLAP_MODES)}")
        if self.overlap == "bytes" and (self.match_symbols or self.fuzzy_match_all):
            raise ConfigError("match_symbols / fuzzy_match_all change deepfocus's own overlap; "
                              "use them with overlap='deepfocus'")


def _deepfocus():
    """Import deepfocus's overlap code and the two numeric kernels FOCUS uses."""
    focus = require("deepfocus.focus", package="deepfocus", extra="focus", purpose=PURPOSE)
    fasttext = require("fasttext", package="fasttext", extra="focus", purpose=PURPOSE)
    entmax = require("entmax", package="entmax", extra="focus", purpose=PURPOSE)
    fastdist = require("fastdist.fastdist", package="fastdist", extra="focus", purpose=PURPOSE)
    return focus, fasttext, entmax, fastdist


def tokenized_lines(target_tokenizer, target_texts: Iterable[str]) -> Iterable[str]:
    """Each line of text as its space-joined target tokens: the text deepfocus trains fastText on."""
    for text in target_texts:
        for line in text.splitlines():
            yield " ".join(target_tokenizer.tokenize(line))


def train_token_fasttext(target_tokenizer, target_texts: Iterable[str], config: FocusConfig = FocusConfig()):
    """Train deepfocus's auxiliary token-level fastText model (CBOW) on target text.

    Same arguments as ``deepfocus.fasttext_embs.train_fasttext`` plus a seed and a thread count.
    """
    _, fasttext, _, _ = _deepfocus()
    with tempfile.TemporaryDirectory(prefix="transtok-focus-") as tmp:
        path = Path(tmp) / "tokenized.txt"
        lines = 0
        with path.open("w", encoding="utf-8") as handle:
            for line in progress_bar(tokenized_lines(target_tokenizer, target_texts),
                                     desc="tokenizing target text", unit=" lines"):
                handle.write(line + "\n")
                lines += bool(line.strip())
        if lines == 0:
            raise DataError("FOCUS needs target-language text to train its fastText model, got none; "
                            "pass monolingual target text (e.g. the target side of the parallel corpus)")
        logger.info("training fastText (cbow, dim %d, %d epochs, min count %d) on %d tokenized lines",
                    config.dim, config.epochs, config.min_count, lines)
        try:
            return _train_unsupervised(fasttext, str(path), model="cbow", dim=config.dim, epoch=config.epochs,
                                       minCount=config.min_count, neg=10, thread=config.threads, seed=config.seed,
                                       verbose=0)
        except ValueError as exc:  # fastText: "Empty vocabulary. Try a smaller -minCount value."
            raise DataError(f"no target token occurs `focus.min_count` {config.min_count} times in the {lines} "
                            f"lines of target text ({exc}); give more target text or lower `focus.min_count`") from exc


def _train_unsupervised(fasttext, path: str, *, seed: int, **options):
    """``fasttext.train_unsupervised`` with a seed: its Python wrapper rejects the ``seed`` argument
    that the C++ trainer has (and always leaves it at 0), so build the arguments the way it does."""
    wrapper = fasttext.FastText
    values = {**wrapper.unsupervised_default, "input": path, **options, "seed": seed}
    args = wrapper._build_args(values, set(options) | {"input", "seed"})
    model = wrapper._FastText(args=args)
    wrapper.fasttext.train(model.f, args)
    model.set_args(model.f.getArgs())
    return model


def _load_fasttext(path: str):
    _, fasttext, _, _ = _deepfocus()
    if not Path(path).is_file():
        raise DataError(f"fastText model {path!r} does not exist; give a .bin file saved by fastText "
                        "(trained on target text tokenized by the target tokenizer) or omit it to train one")
    return fasttext.load_model(str(path))


def focus_weights(anchor_vectors: np.ndarray, new_vectors: np.ndarray) -> sp.csr_matrix:
    """Sparsemax over cosine similarities, as ``deepfocus.focus.focus_additional_token_initialization``.

    Args: anchor_vectors (A, d), new_vectors (N, d) auxiliary vectors. Returns (N, A), rows sum to 1.
    """
    import scipy.sparse as sp
    import torch

    _, _, entmax, fastdist = _deepfocus()
    anchors = np.ascontiguousarray(anchor_vectors, dtype=np.float32)
    blocks = []
    for start in progress_bar(range(0, len(new_vectors), _CHUNK_ROWS), desc="FOCUS weights"):
        block = np.ascontiguousarray(new_vectors[start:start + _CHUNK_ROWS], dtype=np.float32)
        similarity = torch.from_numpy(fastdist.cosine_matrix_to_matrix(block, anchors))
        blocks.append(sp.csr_matrix(entmax.sparsemax(similarity, dim=-1).numpy()))
    if not blocks:
        return sp.csr_matrix((0, len(anchors)))
    return sp.vstack(blocks).tocsr()


def focus_mapping(source_tokenizer, target_tokenizer, target_texts: Iterable[str] | None = None, *,
                  config: FocusConfig = FocusConfig(), fasttext_model=None) -> tuple[TokenMapping, MappingReport]:
    """Build the FOCUS mapping from the source to the target vocabulary.

    Args:
        target_texts: target-language text (one segment per item) to train fastText on; not needed
            when ``fasttext_model`` (a loaded model) or ``config.fasttext_model`` (a path) is given.
    Returns:
        A (V_t, V_s) mapping: overlap rows copy one source row ("copied"), other rows are FOCUS
        mixes of overlap rows, rows without a fastText vector fall back to the mean row, special
        tokens map by role.
    """
    import scipy.sparse as sp

    focus, _, _, _ = _deepfocus()
    if fasttext_model is None:
        if config.fasttext_model is not None:
            fasttext_model = _load_fasttext(config.fasttext_model)
        elif target_texts is None:
            raise ConfigError("FOCUS needs target text to train fastText, or a trained fastText model; "
                              "pass target texts (e.g. the parallel corpus's target side) or `focus.fasttext_model` PATH")
        else:
            fasttext_model = train_token_fasttext(target_tokenizer, target_texts, config)

    target_size, source_size = len(target_tokenizer), len(source_tokenizer)
    pieces = target_tokenizer.convert_ids_to_tokens(list(range(target_size)))

    # deepfocus's overlap, as target id -> the source id whose row it copies (-1: a new token).
    overlapping, _ = focus.get_overlapping_tokens(target_tokenizer, source_tokenizer,
                                                  match_symbols=config.match_symbols, exact_match_all=True,
                                                  fuzzy_match_all=config.fuzzy_match_all)
    deepfocus_copy = np.full(target_size, -1, dtype=np.int64)
    for info in overlapping.values():
        deepfocus_copy[info.target.id] = info.source[0].id
    byte_copy = exact_matches(token_bytes(target_tokenizer), token_bytes(source_tokenizer),
                              target_byte_pieces=byte_fallback_ids(target_tokenizer),
                              source_byte_pieces=byte_fallback_ids(source_tokenizer))
    copy = byte_copy if config.overlap == "bytes" else deepfocus_copy
    disagree = int((byte_copy != deepfocus_copy).sum())
    logger.info("overlap: %d tokens by surface bytes, %d by deepfocus's canonical forms, %d rows differ; using %s",
                int((byte_copy >= 0).sum()), int((deepfocus_copy >= 0).sum()), disagree, config.overlap)

    # deepfocus.focus.is_very_rare_token, with a set instead of a list scan per token.
    known = set(fasttext_model.words)
    usable = np.zeros(target_size, dtype=bool)
    vectors = np.zeros((target_size, fasttext_model.get_dimension()), dtype=np.float32)
    for i, piece in enumerate(pieces):
        if piece in known:
            vectors[i] = fasttext_model[piece]
            usable[i] = np.abs(vectors[i]).sum() != 0
    anchors = np.flatnonzero((copy >= 0) & usable)
    mixed = np.flatnonzero((copy < 0) & usable)
    if len(anchors) == 0:
        logger.warning("no overlapping token has a fastText vector: every new token falls back to the mean row")
        mixed = mixed[:0]

    weights = focus_weights(vectors[anchors], vectors[mixed]).tocoo()
    copied = np.flatnonzero(copy >= 0)
    rows = np.concatenate([copied, mixed[weights.row]])
    cols = np.concatenate([copy[copied], copy[anchors][weights.col]])
    values = np.concatenate([np.ones(len(copied)), weights.data])
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(target_size, source_size))
    matrix.sum_duplicates()  # two anchors may copy the same source row

    provenance = np.full(target_size, PROVENANCE.index("fallback"), dtype=np.int8)
    provenance[copied] = PROVENANCE.index("copied")
    provenance[mixed] = PROVENANCE.index("focus")
    names = np.full(target_size, "fallback", dtype=object)
    names[copied], names[mixed] = "copied", "focus"
    specials = special_pairs(target_tokenizer, source_tokenizer)
    if specials:
        special_targets = np.array([t for t, _ in specials], dtype=np.int64)
        keep = np.ones(target_size)
        keep[special_targets] = 0
        matrix = (sp.diags(keep) @ matrix + sp.csr_matrix(
            (np.ones(len(specials)), (special_targets, [s for _, s in specials])),
            shape=(target_size, source_size))).tocsr()
        provenance[special_targets] = PROVENANCE.index("special")
        names[special_targets] = "special"
    matrix.eliminate_zeros()
    matrix.sort_indices()
    residual = (np.diff(matrix.indptr) == 0).astype(np.float32)

    settings = {"init": "focus", **asdict(config)}
    mapping = TokenMapping(matrix=matrix.astype(np.float32), residual=residual, provenance=provenance,
                           source_vocab_hash=vocab_hash(source_tokenizer),
                           target_vocab_hash=vocab_hash(target_tokenizer),
                           fallback="mean", seed=config.seed, config=settings)
    counts = {name: int((names == name).sum()) for name in ("special", "copied", "focus", "fallback")}
    mapped = (names == "copied") | (names == "focus")
    partners = np.diff(mapping.matrix.indptr)
    top = mapping.matrix.max(axis=1).toarray().ravel()
    report = MappingReport(target_tokens=target_size, source_tokens=source_size, provenance=counts,
                           aligned_coverage=0.0,
                           mean_partners=float(partners[mapped].mean()) if mapped.any() else 0.0,
                           mean_top_weight=float(top[mapped].mean()) if mapped.any() else 0.0,
                           config=settings)
    logger.info("FOCUS mapping: %s; %d overlap tokens anchor the mixes",
                ", ".join(f"{v:,} {k}" for k, v in counts.items()), len(anchors))
    return mapping, report
