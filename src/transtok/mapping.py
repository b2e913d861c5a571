"""Token mappings: which source rows, with which weights, make each target row.

Pure maths on sparse matrices (numpy, scipy, torch); no tokenizers or models here. A mapping is
a row-stochastic (V_t, V_s) matrix ``M`` plus, per target row, a ``residual`` weight given to a
fallback row (the mean of the source rows, or a random draw):

    target_weight[t] = Σ_s M[t, s] · source_weight[s] + residual[t] · fallback[t]
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from safetensors.numpy import save_file

from transtok.artifacts import read_sparse
from transtok.checks import SEED_MAX, check_number
from transtok.errors import ConfigError, CorruptFileError, MismatchError
from transtok.options import option

if TYPE_CHECKING:  # scipy and torch load lazily: the CLI imports this module at parse time
    import scipy.sparse as sp
    import torch

logger = logging.getLogger(__name__)

_HEAD = "head."
INIT_METHODS = ("trans-tokenization", "fvt", "mean", "random", "focus")
# Codes are saved in mapping files: only ever append.
PROVENANCE = ("special", "copied", "aligned", "decomposed", "fallback", "focus", "kept")
_SPECIAL, _COPIED, _ALIGNED, _DECOMPOSED, _FALLBACK = range(5)
_KEPT = PROVENANCE.index("kept")
EXTEND_SPELLING_WEIGHT = 0.25
"""Default :attr:`MappingConfig.spelling_weight` of an extended vocabulary. A new token sits next
to the source tokens it translates: a row made only of its aligned partners (`` Dios`` from
`` God``) takes their probability in source-language text (English +14.0 % bits per byte on the
Spanish dev books, SmolLM2's tied head); a quarter of spelling brings that to +2.2 % for +0.07 bits
per byte on Spanish; larger shares gain at most 1.2 points more on English for +0.24 on Spanish
(the knee of the trade-off, chosen on the dev books: benchmarks/results/extension). With separate
LM-head rows (the default when extending, :attr:`MappingConfig.tied_head` False) it applies only to a
tied head; the input rows then keep no spelling and the head rows take
:data:`EXTEND_HEAD_SPELLING_WEIGHT`."""
EXTEND_HEAD_SPELLING_WEIGHT = 0.5
"""Default :attr:`MappingConfig.head_spelling_weight` of an extended vocabulary with an untied head.
Reading and predicting no longer share one row: the input rows are pure trans-tokenization (what
reads the target language best) and the head rows keep half their spelling, which keeps new tokens
off the probability of the source tokens they translate (Spanish dev books: English +1.20 % at init
against +2.2 % with the tied share of 0.25; benchmarks/results/extension)."""


@dataclass(frozen=True)
class MappingConfig:
    """How alignment counts, exact overlap and subword spelling are combined into weights."""

    init: str = option("trans-tokenization", choices=INIT_METHODS, metavar="METHOD",
                       help="initialisation: %(choices)s; focus needs pip install 'transtok[focus]' "
                            "(default: %(default)s)")
    """One of trans-tokenization, fvt, mean, random, focus (built by :mod:`transtok.focus`)."""
    min_count: float = option(0.0, group="advanced", help="drop aligned token pairs with a smaller expected count "
                                                          "(default: %(default)s)")
    """Aligned token pairs with a smaller expected count are dropped as noise."""
    top_k: int | None = option(4, group="advanced", help="keep at most K source partners per target token "
                                                         "(default: %(default)s)")
    """Keep at most this many source partners per target token (None: all)."""
    sharpen: float = option(2.0, group="advanced", help="exponent on counts before normalising; >1 concentrates "
                                                        "weight (default: %(default)s)")
    """Exponent applied to counts before normalising: >1 concentrates weight on the main partners,
    which keeps averaged rows from flattening the output distribution of a tied head."""
    confidence: float = option(5.0, group="advanced", help="aligned occurrences at which alignment and prior weigh "
                                                           "the same (default: %(default)s)")
    """κ in λ = n / (n + κ): how many aligned occurrences make the alignment outweigh the prior."""
    copy_prior: float = option(30.0, group="advanced", help="identity prior of tokens present verbatim in both "
                                                            "vocabularies, in aligned occurrences (default: %(default)s)")
    """Strength, in aligned occurrences, of the identity prior of a target token present verbatim in
    the source vocabulary: it keeps the identical row until the alignment has seen the token about
    this often, then the alignment takes over (false friends, rare source tokens)."""
    copy_weight: float = option(0.0, group="advanced", help="identity weight verbatim tokens keep whatever the "
                                                            "evidence (default: %(default)s)")
    """Identity weight that a verbatim token keeps however much alignment evidence there is."""
    spelling_weight: float | None = option(
        None, group="advanced",
        help="share of its subword spelling a new token keeps whatever the alignment evidence (default: 0 for a "
             "replaced vocabulary and for the input rows of an extended one; 0.25 for an extended one with "
             "--tied-head, chosen on dev: it keeps new tokens from taking the probability of the source tokens they "
             "translate)")
    """Share of its subword spelling that a spelled (not verbatim) token keeps however much alignment
    evidence there is. None: 0 when the vocabulary is replaced, :data:`EXTEND_SPELLING_WEIGHT` when it
    is extended (resolved by the caller that knows which; :func:`build_mapping` reads None as 0)."""
    source_discount: float = option(0.0, cli=False, help="benchmarks' knob: aligned counts divided by the source "
                                                         "token's total ** α")
    """α: each aligned count c(t, s) is divided by s's total aligned count ** α before top-k and sharpening
    (0: raw counts). Frequent function words then weigh less in rows of tokens that also align to
    content words. Library only, not a CLI flag: a setting of benchmarks/ablation.py (0.25 / 0.5 / 1
    cost +0.03 / +0.07 / +0.42 bits per byte on the Arabic dev books, benchmarks/results/ablation_ar);
    kept here because the mapping records its whole configuration (``mapping.json``)."""
    head_spelling_weight: float | None = option(
        None, group="advanced", metavar="S",
        help="extended vocabulary: spelling share of the new LM-head rows, which get their own mapping (a tied head "
             "is untied; default: 0.5, chosen on dev)")
    """Vocabulary extension with separate LM-head rows: the spelling share of the new *head* rows (the
    input rows take :attr:`spelling_weight`). None: :data:`EXTEND_HEAD_SPELLING_WEIGHT` when the
    vocabulary is extended and :attr:`tied_head` is False, no separate head rows otherwise (resolved by
    :func:`resolve_config`; :func:`build_mapping` reads None as "no head rows")."""
    tied_head: bool = option(
        False, group="advanced",
        help="extended vocabulary: one set of new rows for the input table and the LM head (a tied head "
                    "stays tied, spelling share 0.25, no language offset): fewer parameters, English further from "
                    "the source model")
    """Vocabulary extension: one set of new rows for the input table and the LM head (a tied source
    stays tied; spelling share :data:`EXTEND_SPELLING_WEIGHT`), instead of separate head rows (a tied
    source is untied). Ignored when the vocabulary is replaced."""
    first_piece_weight: float | None = option(None, cli=False, help="benchmarks' knob: share of a subword "
                                                                    "spelling's weight given to its first piece")
    """Share of a subword spelling's weight given to its first piece (None: all pieces equal, as FVT).
    Library only, not a CLI flag: a variant of benchmarks/extension.py (``--phase inits``); kept here
    because the mapping records its whole configuration (``mapping.json``)."""
    preserve_norm: bool = option(False, group="advanced", help="rescale averaged rows to the mean norm of their "
                                                               "sources")
    """Rescale each averaged row to the weighted mean norm of the rows it averages."""
    seed: int = option(0, group="advanced", help="seed for random rows and FOCUS's fastText (default: %(default)s)")
    """Seed of the random fallback rows (and, on the command line, of FOCUS's fastText)."""

    def __post_init__(self) -> None:
        if self.init not in INIT_METHODS:
            raise ConfigError(f"`init` {self.init!r} is not a known method; choose one of {', '.join(INIT_METHODS)}")
        check_number("`min_count`", self.min_count, low=0, hint="an expected count; 0 keeps every pair")
        if self.top_k is not None:
            check_number("`top_k`", self.top_k, low=1, integer=True, hint="or omitted for all partners")
        check_number("`sharpen`", self.sharpen, low=0, low_open=True, hint="1 keeps the counts' proportions")
        check_number("`confidence`", self.confidence, low=0, hint="aligned occurrences; 0 trusts any evidence")
        check_number("`source_discount`", self.source_discount, low=0, hint="0: raw counts")
        check_number("`copy_prior`", self.copy_prior, low=0, hint="aligned occurrences; 0 turns the prior off")
        for flag, share in (("`first_piece_weight`", self.first_piece_weight), ("`copy_weight`", self.copy_weight),
                            ("`spelling_weight`", self.spelling_weight),
                            ("`head_spelling_weight`", self.head_spelling_weight)):
            if share is not None:
                check_number(flag, share, low=0, high=1, hint="a share")
        check_number("`seed`", self.seed, low=0, high=SEED_MAX, integer=True)
        if self.tied_head and self.head_spelling_weight is not None:
            raise ConfigError(f"`head_spelling_weight` {self.head_spelling_weight} gives the LM head rows of their "
                              "own, `tied_head` asks for one set of rows: drop one of the two")


def resolve_config(config: MappingConfig, extended: bool) -> MappingConfig:
    """``config`` with its recipe-dependent defaults filled in.

    Replaced vocabulary: spelling share 0, no separate head rows (a head share given is refused).
    Extended vocabulary: with :attr:`MappingConfig.tied_head`, spelling share
    :data:`EXTEND_SPELLING_WEIGHT` and no head rows; otherwise input spelling share 0 and head rows
    with share :data:`EXTEND_HEAD_SPELLING_WEIGHT`. Explicit values win.
    """
    if not extended:
        if config.head_spelling_weight is not None:
            raise ConfigError(f"`head_spelling_weight` {config.head_spelling_weight} is for an extended vocabulary "
                              "(its new LM-head rows); the target tokenizer replaces the source's: drop the option")
        spelling = 0.0 if config.spelling_weight is None else config.spelling_weight
        return dataclasses.replace(config, spelling_weight=spelling)
    if config.tied_head:
        spelling = EXTEND_SPELLING_WEIGHT if config.spelling_weight is None else config.spelling_weight
        return dataclasses.replace(config, spelling_weight=spelling)
    return dataclasses.replace(
        config, spelling_weight=0.0 if config.spelling_weight is None else config.spelling_weight,
        head_spelling_weight=(EXTEND_HEAD_SPELLING_WEIGHT if config.head_spelling_weight is None
                              else config.head_spelling_weight))


@dataclass(frozen=True)
class TokenMapping:
    """Row-stochastic (V_t, V_s) mapping with a per-row fallback weight; see module docstring."""

    matrix: sp.csr_matrix
    residual: np.ndarray
    provenance: np.ndarray
    source_vocab_hash: str
    target_vocab_hash: str
    fallback: Literal["mean", "random"] = "mean"
    preserve_norm: bool = False
    seed: int = 0
    config: dict = field(default_factory=dict)
    keeps_source_rows: bool = False
    """Vocabulary extension: target ids < V_s are the source's tokens, and :meth:`apply` copies their
    rows bit for bit (see :func:`keep_source_rows`)."""
    head: TokenMapping | None = None
    """Separate LM-head rows (vocabulary extension, :attr:`MappingConfig.head_spelling_weight`): a
    mapping of the same shape and provenance whose rows make the new head (the model's head is untied
    where it was tied). None: the head takes the same rows as the input table."""

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    @property
    def output(self) -> TokenMapping:
        """The mapping that makes the LM-head rows: :attr:`head`, else this one."""
        return self.head if self.head is not None else self

    def apply(self, source_weight: torch.Tensor) -> torch.Tensor:
        """Map source rows ``(V_s, d)`` (or a bias ``(V_s,)``) to target rows ``(V_t, d)``.

        Computed in float32 and returned in the source dtype.
        """
        import torch

        if source_weight.shape[0] != self.shape[1]:
            raise MismatchError(
                f"the mapping expects {self.shape[1]} source rows, the model has {source_weight.shape[0]}; "
                "rebuild the mapping for this model's tokenizer"
            )
        dense = source_weight.detach().float().cpu()
        vector = dense.ndim == 1
        if vector:
            dense = dense[:, None]
        source = dense.numpy()
        out = np.asarray(self.matrix.astype(np.float32) @ source, dtype=np.float32)
        if self.preserve_norm and not vector:
            norms = np.linalg.norm(source, axis=1)
            wanted = np.asarray(abs(self.matrix) @ norms).ravel()
            have = np.linalg.norm(out, axis=1)
            scale = np.where(have > 0, wanted / np.maximum(have, 1e-12), 1.0)
            out *= scale[:, None].astype(np.float32)
        if self.residual.any():
            rows = np.flatnonzero(self.residual)
            # Only the fallback rows: a dense (V_t, d) temporary would double the peak memory.
            out[rows] += self.residual[rows, None] * self._fallback_rows(source, rows)
        if self.keeps_source_rows:
            # Exact copies, whatever rounding the product or the norm rescaling did.
            out[:self.shape[1]] = source
        result = torch.from_numpy(out)
        if vector:
            result = result[:, 0]
        return result.to(source_weight.dtype)

    def _fallback_rows(self, source: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows), d) float32 fallback rows: the source mean, or seeded draws at the source's scale."""
        import torch

        if self.fallback == "mean":
            return np.broadcast_to(source.mean(axis=0), (len(rows), source.shape[1]))
        generator = torch.Generator().manual_seed(self.seed)
        draw = torch.randn(len(rows), source.shape[1], generator=generator).numpy()
        return draw * source.std() + 0.0

    def save(self, directory: str | Path) -> None:
        """Write ``mapping.safetensors`` and ``mapping.json`` (byte-identical for equal mappings)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {**_sparse_arrays(self.matrix, self.residual), "provenance": self.provenance.astype(np.int8)}
        if self.head is not None:  # the head rows: same file, keys prefixed "head." (old readers ignore them)
            arrays.update({f"{_HEAD}{k}": v for k, v in _sparse_arrays(self.head.matrix, self.head.residual).items()})
        save_file(arrays, str(directory / "mapping.safetensors"))
        meta = {"format": "transtok-mapping/1", "shape": list(self.shape), "fallback": self.fallback,
                "preserve_norm": self.preserve_norm, "seed": self.seed, "source_vocab_hash": self.source_vocab_hash,
                "target_vocab_hash": self.target_vocab_hash, "config": self.config, "provenance_codes": list(PROVENANCE),
                "keeps_source_rows": self.keeps_source_rows}
        if self.head is not None:
            meta["head"] = {"config": self.head.config}
        (directory / "mapping.json").write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> TokenMapping:
        import scipy.sparse as sp

        fix = "rebuild it with 'transtok map' (or the verb that wrote this directory)"
        meta, arrays, matrix = read_sparse(directory, "mapping.json", "mapping.safetensors", what="mapping",
                                           verb="map", fix=fix)
        mapping = cls(matrix=matrix, residual=arrays["residual"], provenance=arrays["provenance"],
                      source_vocab_hash=meta["source_vocab_hash"], target_vocab_hash=meta["target_vocab_hash"],
                      fallback=meta["fallback"], preserve_norm=meta["preserve_norm"], seed=meta["seed"],
                      config=meta.get("config", {}), keeps_source_rows=bool(meta.get("keeps_source_rows", False)))
        if "head" not in meta:  # mappings without head rows, and every mapping written before they existed
            return mapping
        try:
            head = sp.csr_matrix((arrays[f"{_HEAD}data"], arrays[f"{_HEAD}indices"], arrays[f"{_HEAD}indptr"]),
                                 shape=matrix.shape)
            head_residual = arrays[f"{_HEAD}residual"]
        except Exception as exc:  # missing keys, or arrays that do not fit the shape
            raise CorruptFileError(Path(directory) / "mapping.safetensors", fix,
                                   f"mapping.json announces head rows: {exc!r}") from exc
        return dataclasses.replace(mapping, head=dataclasses.replace(
            mapping, matrix=head, residual=head_residual, config=meta["head"].get("config", {})))

    @classmethod
    def combine(cls, mappings: Sequence[TokenMapping], weights: Sequence[float] | None = None) -> TokenMapping:
        """Weighted average of mappings between the same vocabularies (e.g. en→tt and ru→tt)."""
        if not mappings:
            raise ConfigError("combine needs at least one mapping")
        weights = np.full(len(mappings), 1.0 / len(mappings)) if weights is None else np.asarray(weights, float)
        if len(weights) != len(mappings) or not (np.isfinite(weights).all() and (weights >= 0).all()
                                                 and weights.sum() > 0):
            raise ConfigError(f"combine needs one finite weight >= 0 per mapping, not all 0; got {weights.tolist()} "
                              f"for {len(mappings)} mappings")
        weights = weights / weights.sum()
        first = mappings[0]
        for other in mappings[1:]:
            if (other.source_vocab_hash, other.target_vocab_hash) != (first.source_vocab_hash, first.target_vocab_hash):
                raise MismatchError("mappings to combine must share source and target vocabularies; got hashes "
                                    f"{first.source_vocab_hash}/{first.target_vocab_hash} and "
                                    f"{other.source_vocab_hash}/{other.target_vocab_hash}")
        matrix = sum(w * m.matrix for w, m in zip(weights, mappings)).tocsr()
        residual = sum(w * m.residual for w, m in zip(weights, mappings)).astype(np.float32)
        best = np.argmax(np.stack([w * (1 - m.residual) for w, m in zip(weights, mappings)]), axis=0)
        provenance = np.choose(best, [m.provenance for m in mappings]).astype(np.int8)
        head = None
        if any(m.head is not None for m in mappings):  # head rows where given, else the input rows
            head = cls.combine([dataclasses.replace(m.output, head=None) for m in mappings], weights)
        combined = cls(matrix=matrix.astype(np.float32), residual=residual, provenance=provenance,
                       source_vocab_hash=first.source_vocab_hash, target_vocab_hash=first.target_vocab_hash,
                       fallback=first.fallback, preserve_norm=first.preserve_norm, seed=first.seed,
                       config={"combined": [m.config for m in mappings], "weights": weights.tolist()})
        if head is not None:
            combined = dataclasses.replace(combined, head=dataclasses.replace(head, provenance=provenance))
        return keep_source_rows(combined) if any(m.keeps_source_rows for m in mappings) else combined


@dataclass
class MappingReport:
    """What each target row was built from."""

    target_tokens: int
    source_tokens: int
    provenance: dict[str, int]
    aligned_coverage: float
    """Share of non-special target tokens with at least one kept alignment count."""
    mean_partners: float
    """Mean number of source rows per target row (non-fallback rows)."""
    mean_top_weight: float
    config: dict

    def to_dict(self) -> dict:
        return asdict(self)


def _sparse_arrays(matrix: sp.csr_matrix, residual: np.ndarray) -> dict[str, np.ndarray]:
    """The safetensors arrays of a CSR matrix (sorted indices) and its residual."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    return {"indptr": matrix.indptr.astype(np.int64), "indices": matrix.indices.astype(np.int64),
            "data": matrix.data.astype(np.float32), "residual": residual.astype(np.float32)}


def _row_normalise(matrix: sp.csr_matrix) -> sp.csr_matrix:
    import scipy.sparse as sp

    sums = np.asarray(matrix.sum(axis=1)).ravel()
    inverse = np.divide(1.0, sums, out=np.zeros_like(sums, dtype=np.float64), where=sums > 0)
    return sp.diags(inverse) @ matrix


def _keep_top_k(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Zero all but the k largest entries of each row (ties broken by lower column id)."""
    import scipy.sparse as sp

    matrix = matrix.tocsr()
    matrix.sort_indices()
    lengths = np.diff(matrix.indptr)
    if lengths.max(initial=0) <= k:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), lengths)
    # Sort by row, then by descending value, then by column: deterministic. One stable argsort of
    # (row, value rank) takes half the time of a 3-key lexsort at 6M entries; ties keep CSR order,
    # which is ascending column.
    _, value_rank = np.unique(-matrix.data, return_inverse=True)
    order = np.argsort(rows * np.int64(value_rank.max(initial=0) + 1) + value_rank, kind="stable")
    rank = np.arange(len(order)) - np.repeat(matrix.indptr[:-1], lengths)
    keep = order[rank < k]
    out = sp.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])), shape=matrix.shape)
    out.sum_duplicates()
    return out


def alignment_distribution(counts: sp.csr_matrix, config: MappingConfig) -> tuple[sp.csr_matrix, np.ndarray]:
    """Filter, sharpen and normalise aligned counts. Returns (rows summing to 1 or 0, kept count per row)."""
    counts = counts.tocsr().astype(np.float64)
    counts.data[counts.data < config.min_count] = 0
    counts.eliminate_zeros()
    weights = counts
    if config.source_discount:
        # A frequent source token (the, and, of) co-aligns with much of a long target token's text (a
        # clitic chain, a particle); dividing by its total aligned count ** α lets the content word lead.
        total = np.asarray(counts.sum(axis=0)).ravel()
        weights = counts.copy()
        weights.data = weights.data / total[weights.indices] ** config.source_discount
    if config.top_k is not None:
        weights = _keep_top_k(weights, config.top_k)
    # The trust in a row comes from the raw counts of the partners it keeps, discounted or not.
    kept = counts.multiply(weights > 0) if config.source_discount else weights
    mass = np.asarray(kept.sum(axis=1)).ravel()
    sharpened = weights.copy()
    sharpened.data = sharpened.data ** config.sharpen
    return _row_normalise(sharpened).tocsr(), mass


def spelling_distribution(decomposition: Sequence[Sequence[int]], source_size: int,
                          first_piece_weight: float | None = None) -> sp.csr_matrix:
    """FVT rows: the mean of the source tokens spelling each target token.

    With ``first_piece_weight`` w, the first piece gets w and the others share 1 − w.
    """
    import scipy.sparse as sp

    lengths = np.fromiter((len(d) for d in decomposition), dtype=np.int64, count=len(decomposition))
    rows = np.repeat(np.arange(len(decomposition)), lengths)
    cols = np.fromiter((i for d in decomposition for i in d), dtype=np.int64, count=int(lengths.sum()))
    values = np.repeat(np.divide(1.0, lengths, out=np.zeros(len(lengths)), where=lengths > 0), lengths)
    if first_piece_weight is not None:
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        rest = np.repeat(np.divide(1.0 - first_piece_weight, lengths - 1, out=np.zeros(len(lengths)),
                                   where=lengths > 1), lengths)
        values = rest
        values[starts[lengths > 0]] = np.where(lengths[lengths > 0] > 1, first_piece_weight, 1.0)
    matrix = sp.csr_matrix((values, (rows, cols)), shape=(len(decomposition), source_size))
    matrix.sum_duplicates()
    return matrix


def build_mapping(
    *,
    target_size: int,
    source_size: int,
    source_vocab_hash: str,
    target_vocab_hash: str,
    counts: sp.csr_matrix | None,
    decomposition: Sequence[Sequence[int]],
    exact: np.ndarray,
    specials: Sequence[tuple[int, int]],
    config: MappingConfig = MappingConfig(),
) -> tuple[TokenMapping, MappingReport]:
    """Combine the evidence into a :class:`TokenMapping`.

    Args:
        counts: (V_t, V_s) expected aligned token-pair counts (needed for trans-tokenization).
        decomposition: per target id, the source ids spelling it (FVT evidence).
        exact: (V_t,) source id with identical surface bytes, or -1.
        specials: (target id, source id) pairs of special tokens matched by role.

    Per target token t, with aligned distribution A_t over ``n_t`` kept counts: a token present
    verbatim in the source vocabulary gets ``c·e + (1−c)·(μ A_t + (1−μ) e)`` with
    μ_t = n_t / (n_t + copy_prior) and c = copy_weight; other tokens get
    ``s·F_t + (1−s)(λ A_t + (1−λ) F_t)`` with λ_t = n_t / (n_t + confidence), F = subword spelling and
    s = spelling_weight; tokens with no evidence fall back to the mean row. Both priors are pseudo-counts: evidence outweighs them once it is more plentiful.
    """
    import scipy.sparse as sp

    if len(decomposition) != target_size or len(exact) != target_size:
        raise MismatchError(f"evidence sizes {len(decomposition)}/{len(exact)} do not match {target_size} target tokens")
    exact = np.asarray(exact, dtype=np.int64)
    has_exact = exact >= 0
    spelling = spelling_distribution(decomposition, source_size, config.first_piece_weight)
    has_spelling = np.diff(spelling.indptr) > 0
    identity = sp.csr_matrix((np.ones(has_exact.sum()), (np.flatnonzero(has_exact), exact[has_exact])),
                             shape=(target_size, source_size))

    if config.init == "focus":
        raise ConfigError("`init` focus is built from target text by transtok.focus.focus_mapping, "
                          "not from this evidence; call pipeline.mapping_from_alignment with target texts")
    if config.init == "trans-tokenization":
        if counts is None:
            raise ConfigError("`init` trans-tokenization needs alignment counts; run 'transtok align' first "
                              "or choose `init` fvt")
        if counts.shape != (target_size, source_size):
            raise MismatchError(f"alignment counts have shape {counts.shape}, expected ({target_size}, {source_size}); "
                                "the alignment was made with other tokenizers")
        aligned, mass = alignment_distribution(counts, config)
        trust = mass / (mass + config.confidence) if config.confidence > 0 else (mass > 0).astype(float)
    else:
        aligned = sp.csr_matrix((target_size, source_size))
        mass = np.zeros(target_size)
        trust = np.zeros(target_size)
    has_aligned = mass > 0

    if config.init in ("mean", "random"):
        a_coef = np.zeros(target_size)
        e_coef = np.zeros(target_size)
        f_coef = np.zeros(target_size)
    else:
        copy = config.copy_weight
        copy_trust = mass / (mass + config.copy_prior) if config.copy_prior > 0 else (mass > 0).astype(float)
        e_coef = np.where(has_exact, copy + (1 - copy) * (1 - copy_trust), 0.0)
        a_coef = np.where(has_exact, (1 - copy) * copy_trust, trust)
        f_coef = np.where(has_exact, 0.0, np.where(has_spelling, 1 - trust, 0.0))
        # No spelling and no exact match: the alignment is all we have.
        a_coef = np.where(~has_exact & ~has_spelling & has_aligned, 1.0, a_coef)
    # Provenance says which evidence a token had (before the spelling share below).
    provenance = np.full(target_size, _FALLBACK, dtype=np.int8)
    provenance[(f_coef > 0) & (f_coef >= a_coef)] = _DECOMPOSED
    provenance[(a_coef > 0) & (a_coef > f_coef) & (a_coef >= e_coef)] = _ALIGNED
    provenance[(e_coef > 0) & (e_coef > a_coef)] = _COPIED

    def rows(spell: float) -> tuple[sp.csr_matrix, np.ndarray]:
        """The mapping's matrix and residual with spelling share ``spell``."""
        a, f = a_coef, f_coef
        if spell and config.init not in ("mean", "random"):
            shared = ~has_exact & has_spelling
            a = np.where(shared, (1 - spell) * a_coef, a_coef)
            f = np.where(shared, spell + (1 - spell) * f_coef, f_coef)
        matrix = (sp.diags(a) @ aligned + sp.diags(e_coef) @ identity + sp.diags(f) @ spelling).tocsr()
        residual = np.clip(1.0 - np.asarray(matrix.sum(axis=1)).ravel(), 0.0, 1.0)
        residual[residual < 1e-6] = 0.0
        if specials:
            special_targets = np.array([t for t, _ in specials], dtype=np.int64)
            special_sources = np.array([s for _, s in specials], dtype=np.int64)
            keep = np.ones(target_size)
            keep[special_targets] = 0
            matrix = (sp.diags(keep) @ matrix + sp.csr_matrix(
                (np.ones(len(specials)), (special_targets, special_sources)), shape=(target_size, source_size))).tocsr()
            residual[special_targets] = 0.0
        matrix.eliminate_zeros()
        matrix.sort_indices()
        return matrix.astype(np.float32), residual.astype(np.float32)

    if specials:
        provenance[np.array([t for t, _ in specials], dtype=np.int64)] = _SPECIAL
    matrix, residual = rows(config.spelling_weight or 0.0)
    fallback = "random" if config.init == "random" else "mean"
    mapping = TokenMapping(matrix=matrix, residual=residual,
                           provenance=provenance, source_vocab_hash=source_vocab_hash,
                           target_vocab_hash=target_vocab_hash, fallback=fallback,
                           preserve_norm=config.preserve_norm, seed=config.seed, config=asdict(config))
    if config.head_spelling_weight is not None:
        head_matrix, head_residual = rows(config.head_spelling_weight)
        mapping = dataclasses.replace(mapping, head=dataclasses.replace(
            mapping, matrix=head_matrix, residual=head_residual,
            config={**asdict(config), "spelling_weight": config.head_spelling_weight, "role": "head"}))
    return mapping, _report(mapping, has_aligned, config)


def keep_source_rows(mapping: TokenMapping) -> TokenMapping:
    """The extension form of ``mapping`` (V_t >= V_s): rows < V_s become the identity (provenance
    "kept", no fallback weight) and :meth:`TokenMapping.apply` copies them exactly; new rows stay."""
    import scipy.sparse as sp

    target_size, source_size = mapping.shape
    if target_size < source_size:
        raise MismatchError(f"an extension mapping needs at least as many target tokens as source tokens, got "
                            f"{target_size} < {source_size}; the target tokenizer does not extend the source")
    keep = np.r_[np.zeros(source_size), np.ones(target_size - source_size)]
    identity = sp.csr_matrix((np.ones(source_size), (np.arange(source_size), np.arange(source_size))),
                             shape=mapping.shape)
    matrix = (sp.diags(keep) @ mapping.matrix + identity).tocsr().astype(np.float32)
    matrix.eliminate_zeros()
    matrix.sort_indices()
    residual = mapping.residual.astype(np.float32).copy()
    residual[:source_size] = 0.0
    provenance = mapping.provenance.astype(np.int8).copy()
    provenance[:source_size] = _KEPT
    head = None if mapping.head is None else keep_source_rows(dataclasses.replace(mapping.head, head=None))
    return dataclasses.replace(mapping, matrix=matrix, residual=residual, provenance=provenance,
                               keeps_source_rows=True, head=head)


def provenance_counts(provenance: np.ndarray) -> dict[str, int]:
    """Target tokens per provenance: the five core kinds always, method-specific ones when present."""
    counts = np.bincount(provenance.astype(np.int64), minlength=len(PROVENANCE))
    return {name: int(counts[code]) for code, name in enumerate(PROVENANCE) if code <= _FALLBACK or counts[code]}


def new_rows_report(mapping: TokenMapping, report: MappingReport) -> MappingReport:
    """``report`` recomputed for an extension mapping: provenance of all rows, coverage and partners
    of the new rows only."""
    new = np.arange(mapping.shape[0]) >= mapping.shape[1]
    ordinary = new & (mapping.provenance != _SPECIAL)
    mapped = ordinary & (mapping.residual < 1)
    partners = np.diff(mapping.matrix.indptr)
    top = mapping.matrix.max(axis=1).toarray().ravel()
    aligned = mapping.provenance == _ALIGNED
    return dataclasses.replace(
        report, provenance=provenance_counts(mapping.provenance),
        aligned_coverage=float((aligned & ordinary).sum() / max(int(ordinary.sum()), 1)),
        mean_partners=float(partners[mapped].mean()) if mapped.any() else 0.0,
        mean_top_weight=float(top[mapped].mean()) if mapped.any() else 0.0,
        config={**report.config, "extension": True})


def _report(mapping: TokenMapping, has_aligned: np.ndarray, config: MappingConfig) -> MappingReport:
    counts = provenance_counts(mapping.provenance)
    ordinary = mapping.provenance != _SPECIAL
    mapped = ordinary & (mapping.residual < 1)
    partners = np.diff(mapping.matrix.indptr)
    top = mapping.matrix.max(axis=1).toarray().ravel()
    n_ordinary = max(int(ordinary.sum()), 1)
    summary = MappingReport(
        target_tokens=mapping.shape[0], source_tokens=mapping.shape[1], provenance=counts,
        aligned_coverage=float((has_aligned & ordinary).sum() / n_ordinary),
        mean_partners=float(partners[mapped].mean()) if mapped.any() else 0.0,
        mean_top_weight=float(top[mapped].mean()) if mapped.any() else 0.0,
        config=asdict(config),
    )
    logger.info("mapping: %s; %.1f%% of target tokens aligned", ", ".join(f"{v:,} {k}" for k, v in counts.items()),
                100 * summary.aligned_coverage)
    return summary
