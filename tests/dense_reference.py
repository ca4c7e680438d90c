"""Dense [N, C] twins of what kpartial computes from sparse or streamed data, kept out of the
package.

kpartial computes each metric in one place, `kpartial.sparse_scores.SparseScores` (the scores at
annotated entries only), and the known-label loss of pruning in one compiled pass
(`label_pruning.streamed_known_label_loss`). The functions here compute the same numbers another
way, vectorised over whole [N, C] matrices: they are the independent reference the tests compare
against, and the dense path of benchmarks/eval_memory.py.

The metric functions take (labels, scores), as `kpartial.metrics` does, and check them with the
same argument checks (`kpartial.sparse_scores`).
"""

import math

import numpy as np

from kpartial import metrics, sparse_scores


def _checked(labels, scores, ndim=2):
    """(int8 labels, float64 scores), checked as kpartial.metrics checks them."""
    y, s = sparse_scores._check_pair(labels, scores, ndim)
    s = s.astype(np.float64)
    sparse_scores._check_no_nan(s[y != 0], "scores")
    return y, s


# ----------------------------------------------------------------------------
# Average precision


def _ap_columns(labels, scores):
    """Step-wise AP of every column of checked [N, C] input, all columns at once.

    Each column is sorted by descending score (one argsort over a [C, N] copy). Tied scores form
    one block; every positive in a block gets the precision at the end of its block. Unknown
    entries add neither to the true positives nor to the annotated count.
    """
    n, c = scores.shape
    out = np.full(c, np.nan)
    if n == 0 or c == 0:
        return out
    neg_s = np.ascontiguousarray(-scores.T)  # [C, N], ascending = best first
    order = np.argsort(neg_s, axis=1)
    s = np.take_along_axis(neg_s, order, axis=1)
    y = np.take_along_axis(np.ascontiguousarray(labels.T), order, axis=1)
    pos = y == 1
    tp = np.cumsum(pos, axis=1, dtype=np.int32)
    seen = np.cumsum(y != 0, axis=1, dtype=np.int32)
    precision = tp / np.maximum(seen, 1)
    # Every position looks up the last position of its block of tied scores.
    is_end = np.ones((c, n), dtype=bool)
    np.not_equal(s[:, :-1], s[:, 1:], out=is_end[:, :-1])
    end_idx = np.where(is_end, np.arange(n, dtype=np.int32), np.int32(n))
    end_idx = np.minimum.accumulate(end_idx[:, ::-1], axis=1)[:, ::-1]
    at_block_end = np.take_along_axis(precision, end_idx, axis=1)
    n_pos = tp[:, -1]
    n_neg = seen[:, -1] - n_pos
    evaluable = (n_pos > 0) & (n_neg > 0)
    summed = np.where(pos, at_block_end, 0.0).sum(axis=1)
    out[evaluable] = summed[evaluable] / n_pos[evaluable]
    return out


def per_class_average_precision(labels, scores):
    """float64 [C]: `metrics.per_class_average_precision`, from the dense matrices."""
    return _ap_columns(*_checked(labels, scores))


def mean_average_precision(labels, scores):
    ap = per_class_average_precision(labels, scores)
    return float(np.nanmean(ap)) if (~np.isnan(ap)).any() else math.nan


# ----------------------------------------------------------------------------
# F1 at a threshold and at the top k


def _f1(y, predicted):
    is_pos, is_neg = y == 1, y == -1
    return sparse_scores._f1_from_counts(
        (predicted & is_pos).sum(axis=0),
        (predicted & is_neg).sum(axis=0),
        (~predicted & is_pos).sum(axis=0),
    )


def f1_scores(labels, scores, threshold=0.5):
    y, s = _checked(labels, scores)
    return _f1(y, s >= sparse_scores._validate_threshold(threshold, s.shape[1]))


def evaluate(labels, scores, threshold=0.5):
    """`metrics.evaluate`, from the dense matrices."""
    y, s = _checked(labels, scores)
    ap = _ap_columns(y, s)
    return {
        "map": float(np.nanmean(ap)) if (~np.isnan(ap)).any() else math.nan,
        **f1_scores(y, s, threshold),
        "evaluated_classes": int(np.count_nonzero(~np.isnan(ap))),
        "annotated_entries": int(np.count_nonzero(y)),
    }


def _ranked_top_k(y, s, k):
    """int [N, min(k, C)]: each row's top-k annotated columns, best first (ties: lower index)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    masked = np.where(y != 0, s, -np.inf)
    return np.argsort(-masked, axis=1, kind="stable")[:, : min(k, s.shape[1])]


def f1_scores_at_top_k(labels, scores, k=3):
    y, s = _checked(labels, scores)
    predicted = np.zeros(s.shape, bool)
    np.put_along_axis(predicted, _ranked_top_k(y, s, k), True, axis=1)
    return _f1(y, predicted & (y != 0))


# ----------------------------------------------------------------------------
# Ranking metrics per example


def precision_at_k(labels, scores, k=1):
    y, s = _checked(labels, scores)
    hits = np.take_along_axis(y == 1, _ranked_top_k(y, s, k), axis=1).sum(axis=1)
    rows = (y == 1).any(axis=1)
    return float(hits[rows].mean() / k) if rows.any() else math.nan


def ndcg_at_k(labels, scores, k=5):
    y, s = _checked(labels, scores)
    ranked = _ranked_top_k(y, s, k)
    discounts = 1.0 / np.log2(np.arange(2, ranked.shape[1] + 2))
    dcg = (np.take_along_axis(y == 1, ranked, axis=1) * discounts).sum(axis=1)
    num_positive = (y == 1).sum(axis=1)
    ideal = np.cumsum(discounts)[np.clip(num_positive, 1, ranked.shape[1]) - 1]
    rows = num_positive > 0
    return float((dcg[rows] / ideal[rows]).mean()) if rows.any() else math.nan


def psp_at_k(labels, scores, propensity, k=5):
    y, s = _checked(labels, scores)
    weights = np.where(y == 1, 1.0 / np.asarray(propensity, np.float64)[None, :], 0.0)
    gained = np.take_along_axis(weights, _ranked_top_k(y, s, k), axis=1).sum()
    best = -np.sort(-weights, axis=1)[:, : min(k, s.shape[1])].sum()
    return float(gained / best) if best > 0 else math.nan


def ranking_metrics(labels, scores, train_positives=None, num_train_examples=None):
    """The ranking keys of `evaluation.test_metrics`, from the dense matrices: P@1/3/5,
    nDCG@3/5, top-3 CF1/OF1, and PSP@1/3/5 when the training counts are given."""
    result = {f"p@{k}": precision_at_k(labels, scores, k) for k in (1, 3, 5)}
    result.update({f"ndcg@{k}": ndcg_at_k(labels, scores, k) for k in (3, 5)})
    top3 = f1_scores_at_top_k(labels, scores, 3)
    result.update({"cf1@top3": top3["cf1"], "of1@top3": top3["of1"]})
    if train_positives is not None and num_train_examples is not None:
        propensity = metrics.propensities(train_positives, num_train_examples)
        result.update({f"psp@{k}": psp_at_k(labels, scores, propensity, k) for k in (1, 3, 5)})
    return result


def test_metrics(labels, scores, thresholds, train_positives=None, num_train_examples=None):
    """`evaluation.test_metrics`, from the dense matrices."""
    result = evaluate(labels, scores, thresholds)
    at_half = f1_scores(labels, scores, 0.5)
    result.update({"cf1@0.5": at_half["cf1"], "of1@0.5": at_half["of1"]})
    result.update(ranking_metrics(labels, scores, train_positives, num_train_examples))
    if train_positives is not None and num_train_examples is not None:
        result["train_examples"] = int(num_train_examples)
    return result


test_metrics.__test__ = False  # a reference function, not a pytest test


# ----------------------------------------------------------------------------
# Predictions and the known-label loss of pruning


def predict_probabilities(model, dataset):
    """Sigmoid outputs of `model` on a finite, unshuffled, unaugmented dataset, float32 [N, C]
    (computed in float64 from the logits, then rounded)."""
    logits = model.predict(dataset, verbose=0)
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def known_label_loss(known_labels, probabilities, epsilon=1e-7):
    """Class-balanced BCE on known entries, float64 [C]: the mean of the positives' mean loss and
    the negatives' mean loss; inf for a class without a known positive or a known negative."""
    p = np.clip(np.asarray(probabilities, np.float64), epsilon, 1 - epsilon)
    positive, negative = known_labels > 0, known_labels < 0
    num_positive, num_negative = positive.sum(axis=0), negative.sum(axis=0)
    positive_loss = np.where(positive, -np.log(p), 0.0).sum(axis=0)
    negative_loss = np.where(negative, -np.log(1 - p), 0.0).sum(axis=0)
    balanced = 0.5 * (
        positive_loss / np.maximum(num_positive, 1) + negative_loss / np.maximum(num_negative, 1)
    )
    return np.where((num_positive > 0) & (num_negative > 0), balanced, np.inf)
