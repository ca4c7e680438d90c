"""Tests for kpartial.metrics (reference values computed by hand)."""

import json
import math
import time

import numpy as np
import pytest

from kpartial import evaluation, metrics, sparse_scores
from kpartial.evaluation import plot_ap_by_frequency
from kpartial.metrics import (
    average_precision,
    evaluate,
    f1_scores,
    mean_average_precision,
    per_class_average_precision,
)
from tests import dense_reference


def _reference_ap(labels, scores):
    """Slow, literal implementation of AP = sum_k (R_k - R_{k-1}) P_k."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    keep = labels != 0
    s, y = scores[keep], labels[keep]
    n_pos = int((y == 1).sum())
    if n_pos == 0 or (y == -1).sum() == 0:
        return math.nan
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        sel = s >= t
        tp = int((y[sel] == 1).sum())
        precision = tp / int(sel.sum())
        recall = tp / n_pos
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


# ---------------------------------------------------------------------------
# average_precision
# ---------------------------------------------------------------------------
def test_ap_hand_computed_no_ties():
    # ranking: +  -  +  -  +
    # precision at the positives: 1/1, 2/3, 3/5
    # AP = (1 + 2/3 + 3/5) / 3 = (15 + 10 + 9) / 45 = 34/45
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    labels = [1, -1, 1, -1, 1]
    assert average_precision(labels, scores) == pytest.approx(34 / 45)
    assert isinstance(average_precision(labels, scores), float)


def test_ap_unsorted_input():
    # same as above, shuffled: order of the input must not matter
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, -1, 1, -1, 1])
    perm = np.array([3, 0, 4, 2, 1])
    assert average_precision(labels[perm], scores[perm]) == pytest.approx(34 / 45)


def test_ap_perfect_ranking_is_one():
    assert average_precision([1, 1, -1, -1], [0.9, 0.8, 0.3, 0.1]) == 1.0
    # worst ranking: positives at ranks 3 and 4 -> (1/3 + 2/4) / 2 = 5/12
    assert average_precision([1, 1, -1, -1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(5 / 12)


def test_ap_all_tied_block():
    # one block of 4 tied scores with 2 positives: precision at block end 2/4,
    # recall jumps 0 -> 1, so AP = 1 * 2/4 = 0.5.
    # (optimistic tie-breaking would give 1.0, pessimistic (1/3 + 2/4)/2 = 5/12)
    assert average_precision([1, -1, 1, -1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert average_precision([-1, -1, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_ap_partial_ties():
    # scores 0.9 | 0.5 0.5 | 0.1, labels - | + - | +
    # thresholds: 0.9 -> TP=0, n=1, R=0
    #             0.5 -> TP=1, n=3, P=1/3, R=1/2
    #             0.1 -> TP=2, n=4, P=1/2, R=1
    # AP = (1/2)(1/3) + (1/2)(1/2) = 1/6 + 1/4 = 5/12
    assert average_precision([-1, 1, -1, 1], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(5 / 12)
    # order of tied entries does not matter
    assert average_precision([-1, -1, 1, 1], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(5 / 12)
    # scores 0.9 | 0.5 0.5 | 0.1, labels + | + - | -
    # 0.9 -> P=1, R=1/2; 0.5 -> P=2/3, R=1; AP = 1/2 + 1/3 = 5/6
    assert average_precision([1, 1, -1, -1], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(5 / 6)


def test_ap_integer_scores_and_inf():
    # integer and infinite scores are fine; uint must not overflow on negation
    assert average_precision([1, -1, 1], np.array([3, 2, 1], dtype=np.uint8)) == (
        pytest.approx((1 + 2 / 3) / 2)
    )
    assert average_precision([1, -1, -1], [np.inf, -np.inf, 0.0]) == 1.0


def test_ap_unknown_entries_ignored():
    # annotated part: ranking + - + -> (1 + 2/3)/2 = 5/6
    scores = np.array([0.9, 0.95, 0.8, 0.1, 0.7, 0.75])
    labels = np.array([1, 0, -1, 0, 1, 0])
    assert average_precision(labels, scores) == pytest.approx(5 / 6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        s2 = scores.copy()
        s2[labels == 0] = rng.choice([0.9, 0.8, 0.7, 0.5, rng.normal()], size=3)
        assert average_precision(labels, s2) == pytest.approx(5 / 6)
    # even NaN is allowed at unknown entries
    s3 = scores.copy()
    s3[labels == 0] = np.nan
    assert average_precision(labels, s3) == pytest.approx(5 / 6)


def test_ap_nan_when_not_evaluable():
    assert math.isnan(average_precision([-1, -1], [0.1, 0.2]))
    assert math.isnan(average_precision([1, 1], [0.1, 0.2]))
    assert math.isnan(average_precision([1, 0], [0.1, 0.2]))
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))
    assert math.isnan(average_precision([], []))


def test_ap_matches_reference_on_random_data_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(2, 40))
        scores = np.round(rng.random(n), 1)  # coarse -> many ties
        labels = rng.choice([-1, 0, 1], size=n)
        got = average_precision(labels, scores)
        want = _reference_ap(labels, scores)
        if math.isnan(want):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(want, abs=1e-12)


# ---------------------------------------------------------------------------
# per-class AP / mAP
# ---------------------------------------------------------------------------
def test_per_class_ap_and_map_exclude_non_evaluable_classes():
    scores = np.array(
        [
            [0.9, 0.1, 0.3, 0.5],
            [0.8, 0.9, 0.2, 0.6],
            [0.7, 0.8, 0.1, 0.7],
            [0.6, 0.2, 0.4, 0.8],
        ]
    )
    labels = np.array(
        [
            [1, -1, -1, 1],
            [-1, 1, 0, 1],
            [1, 0, -1, 0],
            [0, -1, -1, 1],
        ]
    )
    # class 0: annotated ranking 0.9(+) 0.8(-) 0.7(+) -> (1 + 2/3)/2 = 5/6
    # class 1: annotated ranking 0.9(+) 0.2(-) 0.1(-) -> 1
    # class 2: no positive -> nan (excluded)
    # class 3: no negative -> nan (excluded)
    ap = per_class_average_precision(labels, scores)
    assert ap.shape == (4,)
    assert ap[0] == pytest.approx(5 / 6)
    assert ap[1] == pytest.approx(1.0)
    assert math.isnan(ap[2]) and math.isnan(ap[3])
    # mAP = (5/6 + 1) / 2 = 11/12 (not (5/6 + 1 + 0 + 0)/4)
    assert mean_average_precision(labels, scores) == pytest.approx(11 / 12)
    # columns agree with the 1-D function
    for c in range(4):
        np.testing.assert_equal(ap[c], average_precision(labels[:, c], scores[:, c]))


def test_map_perfect_ranking_is_one():
    labels = np.array([[1, -1], [1, 1], [-1, 1], [-1, -1]])
    scores = (labels == 1).astype(float) * 0.5 + np.array([[0.1], [0.2], [0.3], [0.4]])
    assert mean_average_precision(labels, scores) == 1.0


def test_map_nan_when_no_class_evaluable():
    assert math.isnan(mean_average_precision(np.zeros((3, 2), int), np.zeros((3, 2))))
    assert math.isnan(mean_average_precision(np.zeros((0, 3), int), np.zeros((0, 3))))
    assert math.isnan(mean_average_precision(np.zeros((3, 0), int), np.zeros((3, 0))))


def test_map_unknown_entries_ignored():
    rng = np.random.default_rng(2)
    scores = rng.random((50, 6))
    labels = rng.choice([-1, 0, 1], size=(50, 6))
    base = per_class_average_precision(labels, scores)
    scores2 = scores.copy()
    unknown = labels == 0
    scores2[unknown] = rng.random(unknown.sum()) * 10 - 5
    np.testing.assert_allclose(per_class_average_precision(labels, scores2), base)
    for c in range(6):
        assert base[c] == pytest.approx(_reference_ap(labels[:, c], scores[:, c]))


# ---------------------------------------------------------------------------
# f1_scores
# ---------------------------------------------------------------------------
PROBS = np.array(
    [
        [0.9, 0.2, 0.6],
        [0.4, 0.7, 0.1],
        [0.8, 0.3, 0.5],
        [0.1, 0.6, 0.9],
    ]
)
LABELS = np.array(
    [
        [1, -1, 0],
        [1, 1, -1],
        [-1, 0, -1],
        [0, -1, -1],
    ]
)


def test_f1_hand_computed_scalar_threshold():
    # threshold 0.5 (>=), unknown entries skipped:
    # class 0: 0.9(+) TP, 0.4(+) FN, 0.8(-) FP        -> TP1 FP1 FN1, P=1/2 R=1/2
    # class 1: 0.2(-) TN, 0.7(+) TP, 0.6(-) FP        -> TP1 FP1 FN0, P=1/2 R=1
    # class 2: 0.1(-) TN, 0.5(-) FP, 0.9(-) FP        -> TP0 FP2 FN0, no positive
    # CP = (1/2 + 1/2)/2 = 1/2, CR = (1/2 + 1)/2 = 3/4 (class 2 excluded)
    # CF1 = 2 (1/2)(3/4) / (5/4) = 3/5
    # OP = 2 / (2 + 4) = 1/3, OR = 2 / (2 + 1) = 2/3, OF1 = 2(1/3)(2/3)/1 = 4/9
    got = f1_scores(LABELS, PROBS)
    assert set(got) == {"cp", "cr", "cf1", "op", "or", "of1"}
    assert got["cp"] == pytest.approx(1 / 2)
    assert got["cr"] == pytest.approx(3 / 4)
    assert got["cf1"] == pytest.approx(3 / 5)
    assert got["op"] == pytest.approx(1 / 3)
    assert got["or"] == pytest.approx(2 / 3)
    assert got["of1"] == pytest.approx(4 / 9)


def test_f1_per_class_threshold():
    # thresholds [0.85, 0.5, 0.95]:
    # class 0: 0.9 TP, 0.4 FN, 0.8 < 0.85 TN  -> TP1 FP0 FN1, P=1 R=1/2
    # class 1: as before                      -> TP1 FP1 FN0, P=1/2 R=1
    # class 2: nothing >= 0.95                -> TP0 FP0 FN0 (excluded)
    # CP = 3/4, CR = 3/4, CF1 = 3/4; OP = 2/3, OR = 2/3, OF1 = 2/3
    got = f1_scores(LABELS, PROBS, threshold=np.array([0.85, 0.5, 0.95]))
    assert got["cp"] == pytest.approx(3 / 4)
    assert got["cr"] == pytest.approx(3 / 4)
    assert got["cf1"] == pytest.approx(3 / 4)
    assert got["op"] == pytest.approx(2 / 3)
    assert got["or"] == pytest.approx(2 / 3)
    assert got["of1"] == pytest.approx(2 / 3)
    # a list works too
    assert f1_scores(LABELS, PROBS, threshold=[0.85, 0.5, 0.95]) == got


def test_f1_class_without_predictions_has_zero_precision():
    # thresholds [0.95, 0.5, 0.5]: class 0 predicts nothing -> P0 = 0, R0 = 0/2 = 0
    # class 1: P=1/2 R=1. CP = 1/4, CR = 1/2, CF1 = 2(1/4)(1/2)/(3/4) = 1/3
    # OP = 1 / (1 + 1 + 2) = 1/4 (class 1 FP1, class 2 FP2), OR = 1/3
    # OF1 = 2(1/4)(1/3)/(7/12) = (1/6)/(7/12) = 2/7
    got = f1_scores(LABELS, PROBS, threshold=[0.95, 0.5, 0.5])
    assert got["cp"] == pytest.approx(1 / 4)
    assert got["cr"] == pytest.approx(1 / 2)
    assert got["cf1"] == pytest.approx(1 / 3)
    assert got["op"] == pytest.approx(1 / 4)
    assert got["or"] == pytest.approx(1 / 3)
    assert got["of1"] == pytest.approx(2 / 7)
    # nothing predicted anywhere -> all zero
    zero = f1_scores(LABELS, PROBS, threshold=2.0)
    assert zero == {"cp": 0.0, "cr": 0.0, "cf1": 0.0, "op": 0.0, "or": 0.0, "of1": 0.0}


def test_f1_unknown_entries_ignored():
    probs = PROBS.copy()
    probs[LABELS == 0] = 1 - probs[LABELS == 0]
    assert f1_scores(LABELS, probs) == f1_scores(LABELS, PROBS)


def test_f1_perfect_predictions():
    got = f1_scores(LABELS, (LABELS == 1).astype(float))
    assert all(got[k] == 1.0 for k in ("cp", "cr", "cf1", "op", "or", "of1"))


def test_f1_no_annotated_positive_is_nan():
    got = f1_scores(-np.ones_like(LABELS), PROBS)
    assert math.isnan(got["cp"]) and math.isnan(got["cr"]) and math.isnan(got["cf1"])
    assert math.isnan(got["or"]) and math.isnan(got["of1"])
    assert got["op"] == 0.0  # 0 TP out of predicted positives


# ---------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------
def test_evaluate_hand_computed_and_json():
    # mAP: class 0 annotated ranking 0.9(+) 0.8(-) 0.4(+) -> (1 + 2/3)/2 = 5/6
    #      class 1 annotated ranking 0.7(+) 0.6(-) 0.2(-) -> 1
    #      class 2 has no positive -> excluded; mAP = (5/6 + 1)/2 = 11/12
    # annotated entries: 2 + 3 + 2 + 2 = 9
    got = evaluate(LABELS, PROBS)
    assert set(got) == {
        "map",
        "cf1",
        "of1",
        "cp",
        "cr",
        "op",
        "or",
        "evaluated_classes",
        "annotated_entries",
    }
    assert got["map"] == pytest.approx(11 / 12)
    assert got["evaluated_classes"] == 2
    assert got["annotated_entries"] == 9
    assert got["cf1"] == pytest.approx(3 / 5)
    assert got["of1"] == pytest.approx(4 / 9)
    for key, value in got.items():
        if key in ("evaluated_classes", "annotated_entries"):
            assert type(value) is int
        else:
            assert type(value) is float
    json.loads(json.dumps(got, allow_nan=False))
    per_class = evaluate(LABELS, PROBS, threshold=[0.85, 0.5, 0.95])
    assert per_class["cf1"] == pytest.approx(3 / 4)
    assert per_class["map"] == got["map"]


def test_evaluate_is_fast_on_5000_by_400():
    rng = np.random.default_rng(3)
    probs = rng.random((5000, 400))
    labels = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(5000, 400))
    evaluate(labels, probs)  # warm-up
    start = time.perf_counter()
    result = evaluate(labels, probs)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"evaluate took {elapsed:.3f}s"
    assert result["evaluated_classes"] == 400
    # random scores -> AP about the positive rate among annotated (~0.5)
    assert 0.45 < result["map"] < 0.55


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------
def test_shape_mismatch_raises_with_shapes():
    with pytest.raises(ValueError, match=r"labels shape \(4,\).*scores shape \(3,\)"):
        average_precision([1, -1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        mean_average_precision(np.zeros((3, 2), int), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        f1_scores(np.zeros((2, 4), int), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        evaluate(np.zeros((2, 4), int), np.zeros((2, 3)))


def test_wrong_ndim_raises():
    with pytest.raises(ValueError, match=r"1-D.*\(2, 2\)"):
        average_precision(np.zeros((2, 2), int), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"2-D.*\(4,\)"):
        per_class_average_precision(np.zeros(4, int), np.zeros(4))
    with pytest.raises(ValueError, match="2-D"):
        f1_scores(np.zeros(4, int), np.zeros(4))
    with pytest.raises(ValueError, match="2-D"):
        evaluate(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2)))


@pytest.mark.parametrize("bad", [2, -2, 0.5, np.nan])
def test_invalid_labels_raise(bad):
    labels = np.array([[1.0, -1.0], [0.0, bad]])
    # Float labels are refused for their dtype; integer ones for their values.
    for given in (labels, labels.astype(int)) if float(bad).is_integer() else (labels,):
        with pytest.raises(ValueError, match="labels"):
            mean_average_precision(given, np.zeros((2, 2)))
        with pytest.raises(ValueError, match="labels"):
            evaluate(given, np.zeros((2, 2)))
        with pytest.raises(ValueError, match="labels"):
            average_precision(given[1], [0.1, 0.2])


def test_labels_must_be_integers():
    assert average_precision(np.array([1, -1], np.int8), [0.9, 0.1]) == 1.0
    assert math.isnan(average_precision(np.array([0, 1], np.uint8), [0.9, 0.1]))  # no negative
    with pytest.raises(ValueError, match="labels must be integers in .* got dtype float64"):
        average_precision([1.0, -1.0], [0.9, 0.1])


def test_scores_passed_first_are_named_in_the_error():
    """The metrics take (labels, scores), y_true first; the reverse order is caught at the labels."""
    order = r"take \(labels, scores\), y_true first"
    for function in (
        average_precision,
        per_class_average_precision,
        mean_average_precision,
        f1_scores,
        evaluate,
        metrics.f1_scores_at_top_k,
        metrics.precision_at_k,
        metrics.ndcg_at_k,
    ):
        labels, scores = (
            (LABELS[:, 0], PROBS[:, 0]) if function is average_precision else (LABELS, PROBS)
        )
        with pytest.raises(ValueError, match=order):
            function(scores, labels)
    with pytest.raises(ValueError, match=order):
        metrics.psp_at_k(PROBS, LABELS, np.ones(3))
    with pytest.raises(ValueError, match=order):
        sparse_scores.SparseScores.from_dense(PROBS, LABELS)
    # Integer scores outside {-1, 0, 1} are caught by their values.
    with pytest.raises(ValueError, match=rf"found \[2, 3\].*{order}"):
        average_precision(np.array([3, 2, 1], np.uint8), [1, -1, 1])


def test_bad_threshold_shape_raises():
    with pytest.raises(ValueError, match=r"threshold.*\(3,\).*\(2,\)"):
        f1_scores(LABELS, PROBS, threshold=[0.5, 0.5])
    with pytest.raises(ValueError, match="threshold"):
        evaluate(LABELS, PROBS, threshold=np.full((1, 3), 0.5))


def test_nan_score_at_annotated_entry_raises():
    with pytest.raises(ValueError, match="NaN"):
        average_precision([1, -1], [np.nan, 0.2])
    probs = PROBS.copy()
    probs[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        f1_scores(LABELS, probs)


# ---------------------------------------------------------------------------
# plot_ap_by_frequency


def _png_title(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.info["Title"]


def test_ap_plot_is_written_with_a_title_naming_dataset_method_and_map(tmp_path):
    path = tmp_path / "ap_by_frequency.png"
    png = plot_ap_by_frequency(
        [0.5, np.nan, 0.9, 0.25],
        [3, 5, 100, 0],
        path,
        dataset="mulan:/data/mulan/yeast/yeast-test.arff",
        method="kpartial, known fraction 0.1",
        mean_ap=0.55,
    )
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and path.read_bytes() == png
    # The data spec without its folders, the method, the mAP in percent.
    assert _png_title(path) == "mulan:yeast-test.arff · kpartial, known fraction 0.1 · mAP 55.00%"


def test_ap_plot_title_without_a_map(tmp_path):
    plot_ap_by_frequency([np.nan], [0], tmp_path / "ap.png", dataset="synthetic:test")
    assert _png_title(tmp_path / "ap.png") == "synthetic:test"
    plot_ap_by_frequency([0.5], [1], tmp_path / "ap.png", method="ignore", mean_ap=float("nan"))
    assert _png_title(tmp_path / "ap.png") == "ignore"


def test_ap_plot_leaves_matplotlib_backend_and_pyplot_alone(tmp_path, monkeypatch):
    import sys

    import matplotlib

    # A backend the plot does not use itself, as a notebook's would be.
    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")
    had_pyplot = "matplotlib.pyplot" in sys.modules
    before = matplotlib.get_backend()
    plot_ap_by_frequency([0.5, 0.7], [0, 10], tmp_path / "ap.png", "synthetic:test", "kpartial")
    assert matplotlib.get_backend() == before == "svg"
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot


# ----------------------------------------------------------------------------
# Per-example ranking metrics, against hand-computed values

# Row 0: positives c0, c2; c1 negative; c3 unknown with the highest score (must be skipped).
# Row 1: positive c1; c0 negative; c2, c3 unknown.  Row 2: no annotated positive (not counted).
RANKING_SCORES = np.array([[0.9, 0.8, 0.3, 0.99], [0.6, 0.4, 0.9, 0.95], [0.5, 0.1, 0.2, 0.3]])
RANKING_LABELS = np.array([[1, -1, 1, 0], [-1, 1, 0, 0], [-1, -1, 0, 0]])


def test_precision_at_k():
    # Row 0 ranks annotated c0 (+), c1 (-), c2 (+); row 1 ranks c0 (-), c1 (+).
    assert metrics.precision_at_k(RANKING_LABELS, RANKING_SCORES, k=1) == pytest.approx((1 + 0) / 2)
    assert metrics.precision_at_k(RANKING_LABELS, RANKING_SCORES, k=2) == pytest.approx(
        (1 / 2 + 1 / 2) / 2
    )
    assert metrics.precision_at_k(RANKING_LABELS, RANKING_SCORES, k=3) == pytest.approx(
        (2 / 3 + 1 / 3) / 2
    )


def test_ndcg_at_k():
    d = 1 / np.log2(np.arange(2, 5))
    row0 = (d[0] + d[2]) / (d[0] + d[1])  # positives at ranks 1 and 3, ideal ranks 1 and 2
    row1 = d[1] / d[0]  # positive at rank 2, ideal rank 1
    assert metrics.ndcg_at_k(RANKING_LABELS, RANKING_SCORES, k=3) == pytest.approx(
        (row0 + row1) / 2
    )


def test_unknown_entries_never_enter_the_ranking():
    changed = RANKING_SCORES.copy()
    changed[RANKING_LABELS == 0] = 1e9
    for fn in (metrics.precision_at_k, metrics.ndcg_at_k):
        assert fn(RANKING_LABELS, changed, k=2) == fn(RANKING_LABELS, RANKING_SCORES, k=2)


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
    assert metrics.psp_at_k(RANKING_LABELS, RANKING_SCORES, propensity, k=2) == pytest.approx(
        (2 + 4) / (12 + 4)
    )


def test_f1_at_top_k():
    # k=1 predicts c0 for rows 0, 1, 2: TP c0 = 1 (row 0), FP c0 = 2; c1: FN 1; c2: FN 1.
    result = metrics.f1_scores_at_top_k(RANKING_LABELS, RANKING_SCORES, k=1)
    assert result["op"] == pytest.approx(1 / 3)
    assert result["or"] == pytest.approx(1 / 3)
    # Classes with a positive: c0 (P 1/3, R 1), c1 (P 0, R 0), c2 (P 0, R 0).
    assert result["cp"] == pytest.approx(1 / 9) and result["cr"] == pytest.approx(1 / 3)


def test_plot_ap_by_frequency_writes_a_png(tmp_path):
    png = plot_ap_by_frequency([0.5, np.nan, 0.9], [3, 0, 100], tmp_path / "ap.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "ap.png").read_bytes() == png


def test_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        metrics.f1_scores_at_top_k(RANKING_LABELS, RANKING_SCORES, k=0)


def test_top_k_ties_go_to_the_lower_class_index():
    # Four tied annotated entries: the top 2 are c0 and c1, for the F1 as for P@k.
    scores, labels = np.full((1, 4), 0.5), np.array([[1, -1, 1, 1]])
    result = metrics.f1_scores_at_top_k(labels, scores, k=2)
    assert result["op"] == 0.5 and result["or"] == pytest.approx(1 / 3)
    assert metrics.precision_at_k(labels, scores, k=2) == 0.5


# ----------------------------------------------------------------------------
# SparseScores, streamed or from dense arrays, against the dense reference implementations
# (tests/dense_reference.py: the same metrics vectorised over [N, C], computed another way)


def _dense_reference(labels, scores, positive_counts, num_train, thresholds):
    return {
        **dense_reference.test_metrics(labels, scores, thresholds, positive_counts, num_train),
        **{f"{k}@t": v for k, v in dense_reference.f1_scores(labels, scores, 0.5).items()},
    }


def _streamed(labels, scores, positive_counts, num_train, thresholds, batch_sizes):
    streaming = sparse_scores.StreamingEvaluation(labels.shape[1])
    start = 0
    for size in batch_sizes:
        streaming.add(labels[start : start + size], scores[start : start + size])
        start += size
    assert start == len(labels)
    sparse = streaming.result()
    assert sparse.scores.size == np.count_nonzero(labels)  # only annotated entries are kept
    result = {
        **evaluation.test_metrics(sparse, thresholds, positive_counts, num_train),
        **{f"{k}@t": v for k, v in sparse.f1_scores(0.5).items()},
    }
    return result, sparse


def _assert_same(got, expected, tolerance=1e-6):
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=tolerance, rel=0), key


def _random_case(rng, n, c):
    """(labels, scores): labels with unknown entries, classes without positives (or negatives),
    tied scores."""
    labels = rng.choice([-1, 0, 1], size=(n, c), p=[0.4, 0.4, 0.2]).astype(np.int8)
    labels[:, 0] = np.where(labels[:, 0] == 1, -1, labels[:, 0])  # no positive
    labels[:, 1] = np.where(labels[:, 1] == -1, 0, labels[:, 1])  # no negative
    labels[:, 2] = 0  # nothing annotated
    labels[n // 2] = 0  # an example without annotated entries
    scores = np.round(rng.random((n, c)), 1).astype(np.float32)  # ten values: many ties
    scores[labels == 0] = np.where(rng.random(int((labels == 0).sum())) < 0.3, np.nan, 2.0)
    return labels, scores


@pytest.mark.parametrize("seed", range(5))
def test_streaming_metrics_equal_the_dense_reference(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(20, 120)), int(rng.integers(4, 15))
    labels, scores = _random_case(rng, n, c)
    counts, thresholds = rng.integers(0, 30, c), rng.random(c)
    expected = _dense_reference(labels, scores, counts, 200, thresholds)
    sizes = [int(rng.integers(1, 20)) for _ in range(n)]
    sizes = [s for s in np.diff(np.minimum(np.cumsum([0, *sizes]), n)) if s] or [n]
    got, sparse = _streamed(labels, scores, counts, 200, thresholds, sizes)
    _assert_same(got, expected)
    np.testing.assert_allclose(
        sparse.per_class_average_precision(),
        dense_reference.per_class_average_precision(labels, scores),
        atol=1e-6,
        rtol=0,
    )
    for k in (1, 2, 7, c + 3):  # k beyond C is clipped as in the dense functions
        assert sparse.precision_at_k(k) == pytest.approx(
            dense_reference.precision_at_k(labels, scores, k), abs=1e-6
        )
        assert sparse.ndcg_at_k(k) == pytest.approx(
            dense_reference.ndcg_at_k(labels, scores, k), abs=1e-6
        )


@pytest.mark.parametrize("seed", range(3))
def test_dense_functions_equal_the_dense_reference(seed):
    """The module's dense functions (computed by SparseScores) give the numbers of the dense
    implementations they replaced, up to the order of a float sum."""
    rng = np.random.default_rng(10 + seed)
    labels, scores = _random_case(rng, int(rng.integers(30, 150)), int(rng.integers(4, 12)))
    scores = np.where(labels != 0, rng.random(scores.shape), scores)  # distinct scores too
    c = labels.shape[1]
    thresholds, propensity = rng.random(c), rng.random(c) + 0.1
    np.testing.assert_allclose(
        per_class_average_precision(labels, scores),
        dense_reference.per_class_average_precision(labels, scores),
        atol=1e-12,
        rtol=0,
    )
    _assert_same(
        evaluate(labels, scores, thresholds),
        dense_reference.evaluate(labels, scores, thresholds),
        1e-12,
    )
    for k in (1, 3, c + 1):
        _assert_same(
            metrics.f1_scores_at_top_k(labels, scores, k),
            dense_reference.f1_scores_at_top_k(labels, scores, k),
            1e-12,
        )
        for name, args in (("precision_at_k", ()), ("ndcg_at_k", ()), ("psp_at_k", (propensity,))):
            got = getattr(metrics, name)(labels, scores, *args, k)
            want = getattr(dense_reference, name)(labels, scores, *args, k)
            assert got == pytest.approx(want, abs=1e-12), name


def test_test_metrics_keys_with_and_without_the_training_counts():
    labels, scores = _random_case(np.random.default_rng(7), 60, 6)
    sparse = sparse_scores.SparseScores.from_dense(labels, scores)
    thresholds = np.linspace(0.2, 0.7, 6)
    common = {
        *("map", "cf1", "of1", "cp", "cr", "op", "or", "evaluated_classes", "annotated_entries"),
        *("cf1@0.5", "of1@0.5", "p@1", "p@3", "p@5", "ndcg@3", "ndcg@5", "cf1@top3", "of1@top3"),
    }
    without = evaluation.test_metrics(sparse, thresholds)
    assert set(without) == common
    with_counts = evaluation.test_metrics(sparse, thresholds, np.arange(6), 100)
    assert set(with_counts) == common | {*evaluation.PROPENSITY_KEYS, "train_examples"}
    assert with_counts["train_examples"] == 100
    # cf1/of1 are at the given thresholds, cf1@0.5/of1@0.5 at 0.5.
    at = sparse.f1_scores(thresholds)
    assert (with_counts["cf1"], with_counts["of1"]) == (at["cf1"], at["of1"])
    at_half = sparse.f1_scores(0.5)
    assert (with_counts["cf1@0.5"], with_counts["of1@0.5"]) == (at_half["cf1"], at_half["of1"])
    assert evaluation.test_metrics(sparse, np.full(6, 0.5))["cf1"] == at_half["cf1"]
    for key in common:
        assert without[key] == with_counts[key] or math.isnan(without[key]), key


def test_streaming_from_logits_is_the_float32_sigmoid():
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(50, 6)) * 4).astype(np.float32)
    labels = rng.choice([-1, 0, 1], size=(50, 6)).astype(np.int8)
    # dense_reference.predict_probabilities' conversion, float64 then float32.
    probabilities = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    streaming = sparse_scores.StreamingEvaluation(6)
    streaming.add(labels[:30], logits[:30], from_logits=True)
    streaming.add(labels[30:], logits[30:], from_logits=True)
    np.testing.assert_array_equal(
        streaming.result().scores, probabilities[labels != 0].astype(np.float64)
    )


def test_streaming_edge_cases():
    empty = sparse_scores.StreamingEvaluation(3).result()
    assert empty.num_examples == 0 and math.isnan(empty.evaluate()["map"])
    unannotated = sparse_scores.SparseScores.from_dense(np.zeros((4, 3), np.int8), np.zeros((4, 3)))
    assert unannotated.evaluate()["annotated_entries"] == 0
    assert math.isnan(unannotated.precision_at_k(1)) and math.isnan(unannotated.ndcg_at_k(3))
    assert math.isnan(unannotated.psp_at_k(np.ones(3), 3))
    streaming = sparse_scores.StreamingEvaluation(3)
    with pytest.raises(ValueError, match="a batch of 2 classes for 3 classes"):
        streaming.add(np.ones((1, 2), np.int8), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN at annotated"):
        streaming.add(np.array([[1, 0, 0]]), np.array([[np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="labels must contain only"):
        streaming.add(np.array([[2, 0, 0]]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="k must be"):
        unannotated.precision_at_k(0)
    with pytest.raises(ValueError, match="threshold"):
        unannotated.f1_scores([0.5, 0.5])


def test_stream_scores_looks_labels_up_by_id_dense_or_sparse():
    import tensorflow as tf

    from kpartial.sparse_labels import SparseLabels

    rng = np.random.default_rng(4)
    labels, scores = _random_case(rng, 45, 7)
    dataset = tf.data.Dataset.from_tensor_slices(
        {"x": np.nan_to_num(scores), "id": np.arange(45, dtype=np.int64)}
    ).batch(16)
    expected = evaluate(labels, scores)
    for given in (labels, SparseLabels.from_dense(labels)):
        sparse = evaluation.stream_scores(lambda b: b["x"].numpy(), dataset, given, False)
        _assert_same(sparse.evaluate(), expected)


@pytest.mark.parametrize("name", ["yeast", "enron"])
def test_streaming_metrics_equal_the_dense_reference_on_mulan(shared_data, name):
    from kpartial import data, simulate

    test = data.load("mulan", str(shared_data(f"mulan/{name}/{name}-test.arff")))
    labels = simulate.keep_fraction(test.dense_labels(), 0.5, seed=1)
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(test.features.shape[1], test.num_classes)).astype(np.float32)
    logits = test.features @ weights / np.sqrt(test.features.shape[1])
    scores = (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    counts, thresholds = (labels == 1).sum(0), np.full(test.num_classes, 0.5)
    expected = _dense_reference(labels, scores, counts, len(labels), thresholds)
    sizes = [256] * (len(labels) // 256) + [len(labels) % 256]
    got, _ = _streamed(labels, scores, counts, len(labels), thresholds, [s for s in sizes if s])
    _assert_same(got, expected)


def test_best_f1_thresholds_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([-1, 0, 1], np.int8), size=(200, 6), p=[0.5, 0.3, 0.2])
    labels[:, 5] = np.where(labels[:, 5] > 0, -1, labels[:, 5])
    labels[:2, 5] = 1  # two positives: too few for a threshold of its own
    scores = np.round(np.clip(rng.random((200, 6)) * 0.6 + (labels > 0) * 0.3, 0, 1), 2)
    thresholds, chosen = sparse_scores.SparseScores.from_dense(labels, scores).best_f1_thresholds(3)
    assert chosen.tolist() == [True] * 5 + [False] and thresholds[5] == 0.5
    for c in range(5):
        annotated = labels[:, c] != 0
        s, positive = scores[annotated, c], labels[annotated, c] > 0
        best, best_threshold = -1.0, None
        for t in sorted(set(s), reverse=True):  # the highest threshold among equal F1s
            f1 = 2 * (positive & (s >= t)).sum() / ((s >= t).sum() + positive.sum())
            if f1 > best + 1e-12:
                best, best_threshold = f1, t
        assert thresholds[c] == pytest.approx(best_threshold), c


def test_precision_floors_match_a_brute_force_search():
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array([-1, 0, 1], np.int8), size=(300, 4), p=[0.5, 0.2, 0.3])
    scores = np.round(np.clip(rng.random((300, 4)) * 0.7 + (labels > 0) * 0.3, 0, 1), 2)
    labels[:, 3] = np.where(labels[:, 3] > 0, -1, labels[:, 3])  # no positives: no evidence
    labels[:5, 3] = 1
    scores[:5, 3] = 0.01  # five positives, all at the bottom: no score is precise
    floors = sparse_scores.SparseScores.from_dense(labels, scores).precision_floors(0.8, 3)
    assert floors[3] == np.inf
    assert (
        sparse_scores.SparseScores.from_dense(labels, scores).precision_floors(0.8, 6)[3] == -np.inf
    )
    for c in range(3):
        annotated = labels[:, c] != 0
        s, positive = scores[annotated, c], labels[annotated, c] > 0
        ok = [t for t in set(s) if positive[s >= t].sum() >= 3 and positive[s >= t].mean() >= 0.8]
        assert floors[c] == pytest.approx(min(ok)), c
