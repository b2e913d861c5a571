"""Pure-maths tests of mapping.py on small matrices."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from transtok.errors import ConfigError, MismatchError
from transtok.mapping import MappingConfig, TokenMapping, build_mapping

V_T, V_S = 6, 5


def evidence(**overrides):
    counts = sp.csr_matrix(np.array([
        [0, 0, 0, 0, 0],    # special
        [30, 10, 0, 0, 0],  # well aligned
        [0, 0, 1, 0, 0],    # weakly aligned, has a spelling
        [0, 0, 0, 0, 0],    # only a spelling
        [0, 0, 0, 10, 0],   # exact match, a little aligned
        [0, 0, 0, 0, 0],    # nothing at all
    ], dtype=float))
    args = dict(target_size=V_T, source_size=V_S, source_vocab_hash="s", target_vocab_hash="t", counts=counts,
                decomposition=[[], [1], [3, 4], [1, 2, 2], [4], []], exact=np.array([-1, -1, -1, -1, 4, -1]),
                specials=[(0, 0)])
    args.update(overrides)
    return args


def test_rows_with_fallback_sum_to_one_and_provenance_is_right():
    mapping, report = build_mapping(**evidence())
    total = np.asarray(mapping.matrix.sum(axis=1)).ravel() + mapping.residual
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert report.provenance == {"special": 1, "copied": 1, "aligned": 1, "decomposed": 2, "fallback": 1}
    assert mapping.residual[5] == 1.0 and mapping.matrix[5].nnz == 0
    assert mapping.matrix[0].toarray().ravel().tolist() == [1, 0, 0, 0, 0]


def test_sharpening_concentrates_weight_on_the_main_partner():
    plain, _ = build_mapping(**evidence(config=MappingConfig(sharpen=1.0, confidence=0)))
    sharp, _ = build_mapping(**evidence(config=MappingConfig(sharpen=2.0, confidence=0)))
    assert plain.matrix[1, 0] == pytest.approx(0.75)
    assert sharp.matrix[1, 0] == pytest.approx(0.9)


def test_exact_match_keeps_a_strong_identity_prior_against_large_counts():
    counts = sp.csr_matrix(([1000.0], ([4], [3])), shape=(V_T, V_S))
    mapping, _ = build_mapping(**evidence(counts=counts, config=MappingConfig(copy_weight=0.9)))
    assert mapping.matrix[4, 4] >= 0.9  # the official code gave +1 against a count of 1000


def test_identity_prior_yields_to_plentiful_evidence():
    def identity_weight(count):
        counts = sp.csr_matrix(([float(count)], ([4], [3])), shape=(V_T, V_S))
        mapping, _ = build_mapping(**evidence(counts=counts, config=MappingConfig(copy_prior=30, copy_weight=0)))
        return mapping.matrix[4, 4]
    assert identity_weight(3) == pytest.approx(30 / 33)
    assert identity_weight(300) == pytest.approx(30 / 330)


def test_spelling_weight_is_a_floor_on_the_spelling_share():
    """Row 1 is well aligned (to source 0 and 1) and spelled [1]; row 3 only spelled; row 4 verbatim."""
    def rows(weight):
        mapping, report = build_mapping(**evidence(config=MappingConfig(spelling_weight=weight)))
        return mapping.matrix.toarray(), mapping, report
    plain, _, plain_report = rows(0.0)
    half, mapping, report = rows(0.5)
    spelled, _, _ = rows(1.0)
    fvt, _ = build_mapping(**evidence(config=MappingConfig(init="fvt")))
    np.testing.assert_allclose(half[1], 0.5 * spelled[1] + 0.5 * plain[1], atol=1e-6)
    np.testing.assert_allclose(spelled[1:4], fvt.matrix.toarray()[1:4], atol=1e-6)  # 1: the spelling alone
    assert plain[1, 0] > 0.5 and spelled[1, 0] == 0
    for r in (0, 3, 4, 5):  # special, spelling only, verbatim, nothing: unchanged
        np.testing.assert_allclose(half[r], plain[r], atol=1e-6)
    np.testing.assert_allclose(np.asarray(mapping.matrix.sum(axis=1)).ravel() + mapping.residual, 1.0, atol=1e-6)
    assert report.provenance == plain_report.provenance  # which evidence a token had, not how it is shared
    assert build_mapping(**evidence(config=MappingConfig()))[0].matrix.toarray() == pytest.approx(plain)  # None = 0
    with pytest.raises(ConfigError, match="`spelling_weight`"):
        MappingConfig(spelling_weight=1.5)


def test_weak_alignment_leans_on_the_spelling():
    mapping, _ = build_mapping(**evidence(config=MappingConfig(confidence=5.0)))
    row = mapping.matrix[2].toarray().ravel()
    # n=1 aligned occurrence -> trust 1/6 on the alignment, 5/6 on the spelling {3, 4}.
    np.testing.assert_allclose(row, [0, 0, 1 / 6, 5 / 12, 5 / 12], atol=1e-6)


def test_top_k_and_min_count_prune_partners():
    mapping, _ = build_mapping(**evidence(config=MappingConfig(top_k=1, confidence=0)))
    assert mapping.matrix[1].nnz == 1 and mapping.matrix[1, 0] == pytest.approx(1.0)
    mapping, _ = build_mapping(**evidence(config=MappingConfig(min_count=2, confidence=0)))
    assert mapping.matrix[2, 2] == 0  # count 1 dropped; the spelling takes over


def test_source_discount_lets_the_rarer_partner_lead_and_keeps_the_trust():
    # Target 1 aligns 30x to source 0 (also aligned 70x elsewhere: a function word) and 10x to source 1.
    counts = evidence()["counts"].tolil()
    counts[2, 0] = 70.0
    counts = counts.tocsr()
    raw, _ = build_mapping(**evidence(counts=counts, config=MappingConfig(sharpen=1.0, confidence=0)))
    discounted, _ = build_mapping(**evidence(counts=counts, config=MappingConfig(sharpen=1.0, confidence=0,
                                                                                 source_discount=1.0)))
    assert raw.matrix[1, 0] == pytest.approx(0.75)
    # 30/100 against 10/10: source 1 now leads, 0.3 : 1.
    assert discounted.matrix[1, 1] == pytest.approx(1 / 1.3) and discounted.matrix[1, 0] == pytest.approx(0.3 / 1.3)
    # Trust comes from the raw counts: with confidence 5 both rows trust the alignment equally.
    a, _ = build_mapping(**evidence(counts=counts, config=MappingConfig(sharpen=1.0)))
    b, _ = build_mapping(**evidence(counts=counts, config=MappingConfig(sharpen=1.0, source_discount=1.0)))
    assert a.matrix[1, 1] + a.matrix[1, 0] == pytest.approx(b.matrix[1, 1] + b.matrix[1, 0])
    with pytest.raises(ConfigError, match="`source_discount` must be a finite number >= 0"):
        MappingConfig(source_discount=-1)


@pytest.mark.parametrize("init", ["fvt", "mean", "random"])
def test_other_init_methods_keep_the_contract(init):
    mapping, report = build_mapping(**evidence(counts=None, config=MappingConfig(init=init)))
    total = np.asarray(mapping.matrix.sum(axis=1)).ravel() + mapping.residual
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert report.provenance["special"] == 1
    source = torch.randn(V_S, 3)
    target = mapping.apply(source)
    assert target.shape == (V_T, 3) and torch.isfinite(target).all()
    if init == "mean":
        torch.testing.assert_close(target[3], source.mean(0))
    if init == "fvt":
        torch.testing.assert_close(target[3], (source[1] + 2 * source[2]) / 3)


def test_trans_tokenization_without_counts_is_refused():
    with pytest.raises(ConfigError, match="needs alignment counts"):
        build_mapping(**evidence(counts=None))


def test_bad_config_values_name_the_flag():
    with pytest.raises(ConfigError, match="`init` 'focal' is not a known method"):
        MappingConfig(init="focal")
    with pytest.raises(ConfigError, match=r"`copy_weight` must be a finite number in \[0, 1\]"):
        MappingConfig(copy_weight=1.5)


def test_apply_is_one_sparse_product_and_checks_the_source_size():
    mapping, _ = build_mapping(**evidence())
    source = torch.randn(V_S, 4, dtype=torch.bfloat16)
    target = mapping.apply(source)
    assert target.dtype == torch.bfloat16
    expected = torch.from_numpy(mapping.matrix.toarray()) @ source.float() + torch.from_numpy(
        mapping.residual)[:, None] * source.float().mean(0)
    torch.testing.assert_close(target.float(), expected, atol=2e-2, rtol=2e-2)
    with pytest.raises(MismatchError, match="expects 5 source rows"):
        mapping.apply(torch.randn(7, 4))


def test_save_load_round_trip_is_byte_identical(tmp_path):
    mapping, _ = build_mapping(**evidence())
    mapping.save(tmp_path / "a")
    again, _ = build_mapping(**evidence())
    again.save(tmp_path / "b")
    for name in ("mapping.safetensors", "mapping.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    loaded = TokenMapping.load(tmp_path / "a")
    source = torch.randn(V_S, 3)
    torch.testing.assert_close(loaded.apply(source), mapping.apply(source))


def test_combine_averages_mappings_with_weights():
    a, _ = build_mapping(**evidence(config=MappingConfig(init="fvt")))
    b, _ = build_mapping(**evidence())
    both = TokenMapping.combine([a, b], [3, 1])
    source = torch.randn(V_S, 3)
    torch.testing.assert_close(both.apply(source), 0.75 * a.apply(source) + 0.25 * b.apply(source))
    other = TokenMapping(a.matrix, a.residual, a.provenance, "s", "other")
    with pytest.raises(MismatchError, match="share source and target vocabularies"):
        TokenMapping.combine([a, other])
