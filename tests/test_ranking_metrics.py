"""Per-example ranking metrics on partial labels, against hand-computed values."""

import math

import numpy as np
import pytest

from kpartial import metrics

# Row 0: positives c0, c2; c1 negative; c3 unknown with the highest score (must be skipped).
# Row 1: positive c1; c0 negative; c2, c3 unknown.  Row 2: no annotated positive (not counted).
SCORES = np.array([[0.9, 0.8, 0.3, 0.99], [0.6, 0.4, 0.9, 0.95], [0.5, 0.1, 0.2, 0.3]])
LABELS = np.array([[1, -1, 1, 0], [-1, 1, 0, 0], [-1, -1, 0, 0]])


def test_precision_at_k():
    # Row 0 ranks annotated c0 (+), c1 (-), c2 (+); row 1 ranks c0 (-), c1 (+).
    assert metrics.precision_at_k(SCORES, LABELS, k=1) == pytest.approx((1 + 0) / 2)
    assert metrics.precision_at_k(SCORES, LABELS, k=2) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert metrics.precision_at_k(SCORES, LABELS, k=3) == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_ndcg_at_k():
    d = 1 / np.log2(np.arange(2, 5))
    row0 = (d[0] + d[2]) / (d[0] + d[1])  # positives at ranks 1 and 3, ideal ranks 1 and 2
    row1 = d[1] / d[0]  # positive at rank 2, ideal rank 1
    assert metrics.ndcg_at_k(SCORES, LABELS, k=3) == pytest.approx((row0 + row1) / 2)


def test_unknown_entries_never_enter_the_ranking():
    changed = SCORES.copy()
    changed[LABELS == 0] = 1e9
    for fn in (metrics.precision_at_k, metrics.ndcg_at_k):
        assert fn(changed, LABELS, k=2) == fn(SCORES, LABELS, k=2)


def test_propensities_match_the_formula():
    counts, n, a, b = np.array([0, 10, 1000]), 5000, 0.55, 1.5
    c = (math.log(n) - 1) * (b + 1) ** a
    expected = [1 / (1 + c * math.exp(-a * math.log(x + b))) for x in counts]
    np.testing.assert_allclose(metrics.propensities(counts, n), expected)
    assert np.all(np.diff(metrics.propensities(counts, n)) > 0)  # frequent labels: higher p


def test_psp_at_k():
    propensity = np.array([0.5, 0.25, 0.1, 0.2])
    # Row 0 top-2 annotated: c0 (+, 1/0.5 = 2), c1 (-): 2; best of row 0: c2 (10) + c0 (2) = 12.
    # Row 1 top-2: c0 (-), c1 (+, 4): 4; best 4. Row 2: nothing.
    assert metrics.psp_at_k(SCORES, LABELS, propensity, k=2) == pytest.approx((2 + 4) / (12 + 4))


def test_f1_at_top_k():
    # k=1 predicts c0 for rows 0, 1, 2: TP c0 = 1 (row 0), FP c0 = 2; c1: FN 1; c2: FN 1.
    result = metrics.f1_scores_at_top_k(SCORES, LABELS, k=1)
    assert result["op"] == pytest.approx(1 / 3)
    assert result["or"] == pytest.approx(1 / 3)
    # Classes with a positive: c0 (P 1/3, R 1), c1 (P 0, R 0), c2 (P 0, R 0).
    assert result["cp"] == pytest.approx(1 / 9) and result["cr"] == pytest.approx(1 / 3)


def test_plot_ap_by_frequency_writes_a_png(tmp_path):
    png = metrics.plot_ap_by_frequency([0.5, np.nan, 0.9], [3, 0, 100], tmp_path / "ap.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "ap.png").read_bytes() == png


def test_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        metrics.f1_scores_at_top_k(SCORES, LABELS, k=0)
