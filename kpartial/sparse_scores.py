"""The scores at the annotated entries of a test set, and every metric computed from them.

Labels use the convention ``+1`` = positive, ``-1`` = negative and ``0`` = unknown / not
annotated. No metric counts an entry whose label is ``0``, so :class:`SparseScores` keeps the
annotated entries only (memory O(annotated entries + C)) and is the one implementation of every
metric: the dense functions of `kpartial.metrics`, which document the formulas and tie rules,
return what it computes. It is built from dense ``[N, C]`` arrays (`SparseScores.from_dense`) or,
for a test set too large for them, batch by batch with :class:`StreamingEvaluation`. The argument
checks of the metrics are here too.

Classes:
    StreamingEvaluation: collects the scores at annotated entries from batches of a test set.
    SparseScores: those scores, and every metric computed from them.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SparseScores", "StreamingEvaluation"]

# Appended to the errors about labels: scores passed first show up there.
_ORDER = "; the metrics take (labels, scores), y_true first as in Keras and scikit-learn"


# ----------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------
def _check_pair(labels, scores, ndim: int, score_name: str = "scores"):
    """Checks a (labels, scores) pair.

    Args:
        labels: Array-like of integers in {-1, 0, 1}.
        scores: Array-like of real numbers.
        ndim: Required number of dimensions (1 or 2).
        score_name: Name used for ``scores`` in error messages.

    Returns:
        ``(labels, scores)``: the labels as ``int8``, the scores as given.

    Raises:
        ValueError: If the shapes differ or are not ``ndim``-dimensional, if the
            scores are not numeric, or if the labels are not integers in
            {-1, 0, 1} (the message then names the argument order).
    """
    y = np.asarray(labels)
    s = np.asarray(scores)
    if s.ndim != ndim or y.ndim != ndim:
        raise ValueError(
            f"labels and {score_name} must be {ndim}-D; got labels shape {y.shape} and "
            f"{score_name} shape {s.shape}"
        )
    if s.shape != y.shape:
        raise ValueError(
            f"labels and {score_name} must have the same shape; got labels shape {y.shape} "
            f"and {score_name} shape {s.shape}"
        )
    if s.dtype.kind not in "biuf":
        raise ValueError(f"{score_name} must be real numbers; got dtype {s.dtype}")
    if y.dtype.kind not in "iu" and y.size:
        raise ValueError(f"labels must be integers in {{-1, 0, 1}}; got dtype {y.dtype}{_ORDER}")
    valid = (y == 0) | (y == 1) | (y == -1)
    if not valid.all():
        bad = np.unique(y[~valid])[:5]
        raise ValueError(f"labels must contain only -1, 0 or 1; found {bad.tolist()}{_ORDER}")
    return y.astype(np.int8), s


def _check_no_nan(annotated_scores: np.ndarray, score_name: str):
    if np.isnan(annotated_scores).any():
        raise ValueError(f"{score_name} contain NaN at annotated entries")


def _validate_threshold(threshold, num_classes: int) -> np.ndarray:
    """Returns the threshold as a float array broadcastable to ``[N, C]``.

    Raises:
        ValueError: If ``threshold`` is neither a scalar nor of shape ``[C]``,
            or contains NaN.
    """
    t = np.asarray(threshold, dtype=np.float64)
    if t.ndim != 0 and t.shape != (num_classes,):
        raise ValueError(
            f"threshold must be a scalar or have shape ({num_classes},); got shape {t.shape}"
        )
    if np.isnan(t).any():
        raise ValueError("threshold must not be NaN")
    return t


# ----------------------------------------------------------------------------
# Scores from counts
# ----------------------------------------------------------------------------
def _nanmean_or_nan(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _f1(p: float, r: float) -> float:
    if math.isnan(p) or math.isnan(r):
        return math.nan
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict:
    """The `metrics.f1_scores` dict from per-class [C] TP, FP and FN counts."""
    has_pos = (tp + fn) > 0
    pred_cnt = tp + fp
    prec_c = np.where(pred_cnt > 0, tp / np.maximum(pred_cnt, 1), 0.0)
    rec_c = tp / np.maximum(tp + fn, 1)
    if has_pos.any():
        cp = float(prec_c[has_pos].mean())
        cr = float(rec_c[has_pos].mean())
    else:
        cp = cr = math.nan

    tp_all, fp_all, fn_all = int(tp.sum()), int(fp.sum()), int(fn.sum())
    op = tp_all / (tp_all + fp_all) if tp_all + fp_all > 0 else 0.0
    orc = tp_all / (tp_all + fn_all) if tp_all + fn_all > 0 else math.nan
    return {
        "cp": cp,
        "cr": cr,
        "cf1": _f1(cp, cr),
        "op": float(op),
        "or": float(orc),
        "of1": _f1(float(op), float(orc)),
    }


# ----------------------------------------------------------------------------
# Streaming evaluation: the same metrics from the annotated entries alone
# ----------------------------------------------------------------------------
class StreamingEvaluation:
    """Collects, batch by batch, the scores at annotated entries: all that the metrics count.

    Feed it the batches of a test set in example order; `result()` gives the `SparseScores` from
    which every metric of `kpartial.metrics` comes out as the dense functions give it on the full
    ``[N, C]`` arrays. Memory holds 21 bytes per annotated entry (example, class, score, label);
    nothing of size ``[N, C]`` and no float64 copy of a ``[B, C]`` batch is made.

    Args:
        num_classes: C.
    """

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)
        self.num_examples = 0
        self._parts = []

    def add(self, labels, scores, from_logits: bool = False):
        """Adds the next batch: labels and scores (probabilities, or logits), both ``[B, C]``.

        With ``from_logits``, a score becomes ``float32(sigmoid(float64(logit)))``: the
        probability rounded to float32 as a model's float32 output would be, so ties and
        thresholds fall as they do on probabilities predicted in float32.

        Raises:
            ValueError: As for :func:`kpartial.metrics.evaluate`, or if the batch does not have C
                columns.
        """
        y, s = _check_pair(labels, scores, 2)
        if s.shape[1] != self.num_classes:
            raise ValueError(f"a batch of {s.shape[1]} classes for {self.num_classes} classes")
        rows, classes = np.nonzero(y)
        annotated = s[rows, classes]
        if from_logits:
            annotated = (1.0 / (1.0 + np.exp(-annotated.astype(np.float64)))).astype(np.float32)
        annotated = annotated.astype(np.float64)
        _check_no_nan(annotated, "scores")
        self._parts.append(
            (rows + self.num_examples, classes.astype(np.int32), annotated, y[rows, classes])
        )
        self.num_examples += s.shape[0]

    def result(self) -> SparseScores:
        """The scores at the annotated entries of every batch added so far."""
        empty = [np.zeros(0, dtype) for dtype in (np.int64, np.int32, np.float64, np.int8)]
        columns = [np.concatenate(part) for part in zip(*self._parts, empty)]
        return SparseScores(*columns, self.num_examples, self.num_classes)


class SparseScores:
    """Scores at the annotated entries of N examples over C classes, and the metrics they give.

    This class is where every metric of `kpartial.metrics` is computed: the function of a
    method's name there is that method on ``from_dense(labels, scores)`` (unknown entries never
    count, so keeping only the annotated ones changes nothing); ranking ties go to the lower class
    index. Build it with `StreamingEvaluation` or `from_dense`.

    Attributes:
        rows: int64 [K] example of each annotated entry, non-decreasing.
        classes: int32 [K] its class.
        scores: float64 [K] its score.
        labels: int8 [K] its label, +1 or -1.
        num_examples: N.
        num_classes: C.
    """

    def __init__(self, rows, classes, scores, labels, num_examples, num_classes):
        self.rows, self.classes, self.scores, self.labels = rows, classes, scores, labels
        self.num_examples, self.num_classes = int(num_examples), int(num_classes)
        self._ranks = None

    @classmethod
    def from_dense(cls, labels, scores) -> SparseScores:
        """The annotated entries of dense ``[N, C]`` labels and scores (probabilities).

        Raises:
            ValueError: As for :func:`kpartial.metrics.evaluate`.
        """
        streaming = StreamingEvaluation(np.shape(labels)[1] if np.ndim(labels) == 2 else 0)
        streaming.add(labels, scores)
        return streaming.result()

    def _ranked(self):
        """The entries by class, then descending score (one sort), with per-position counts.

        Returns (c, s, pos, first, tp, predicted, is_end): class, score and whether positive of
        each sorted entry; each class's first position [C]; positives and entries of its class up
        to and including each position; whether a position ends its block of tied scores.
        """
        # By score first (ties in any order: every use counts a block of tied scores at its
        # end), then stably by class; a radix sort where the classes fit in int16.
        order = np.argsort(-self.scores)
        by_class = self.classes[order]
        if self.num_classes <= np.iinfo(np.int16).max:
            by_class = by_class.astype(np.int16)
        order = order[np.argsort(by_class, kind="stable")]
        c, s, pos = self.classes[order], self.scores[order], self.labels[order] == 1
        first = np.searchsorted(c, np.arange(self.num_classes))
        class_start = first[c]
        tp_before = np.concatenate([[0], np.cumsum(pos, dtype=np.int64)])
        tp = tp_before[1:] - tp_before[class_start]
        predicted = np.arange(c.size) - class_start + 1
        is_end = np.ones(c.size, bool)
        is_end[:-1] = (c[:-1] != c[1:]) | (s[:-1] != s[1:])
        return c, s, pos, first, tp, predicted, is_end

    def per_class_average_precision(self) -> np.ndarray:
        """float64 [C], see :func:`kpartial.metrics.per_class_average_precision`."""
        c, _, pos, _, tp, predicted, is_end = self._ranked()
        positions = np.arange(c.size)
        precision = tp / predicted
        # A positive gets the precision at the end of its block of ties
        # (`metrics.average_precision`).
        end = np.minimum.accumulate(np.where(is_end, positions, c.size)[::-1])[::-1]
        summed = np.bincount(c[pos], precision[end[pos]], minlength=self.num_classes)
        n_pos = np.bincount(c[pos], minlength=self.num_classes)
        n_neg = np.bincount(c[~pos], minlength=self.num_classes)
        out = np.full(self.num_classes, np.nan)
        evaluable = (n_pos > 0) & (n_neg > 0)
        out[evaluable] = summed[evaluable] / n_pos[evaluable]
        return out

    def mean_average_precision(self) -> float:
        """See :func:`kpartial.metrics.mean_average_precision`."""
        return _nanmean_or_nan(self.per_class_average_precision())

    def f1_scores(self, threshold=0.5) -> dict:
        """See :func:`kpartial.metrics.f1_scores`."""
        t = np.broadcast_to(_validate_threshold(threshold, self.num_classes), self.num_classes)
        return self._f1(self.scores >= t[self.classes])

    def best_f1_thresholds(self, min_positives: int = 3, default: float = 0.5):
        """Per-class thresholds maximising each class's F1 on these entries, and where they apply.

        A class is predicted positive iff its score >= its threshold. For a class with at least
        ``min_positives`` positives and one negative among the annotated entries, the threshold is
        the score (one of its own) at which F1 = 2 TP / (2 TP + FP + FN) is highest (the higher
        threshold among equal F1s); every other class keeps ``default``.

        Returns:
            (float64 [C] thresholds, bool [C] whether the class's threshold was chosen here).
        """
        c, s, pos, first, tp, predicted, is_end = self._ranked()
        positives = np.bincount(c[pos], minlength=self.num_classes)
        negatives = np.bincount(c[~pos], minlength=self.num_classes)
        chosen = (positives >= min_positives) & (negatives > 0)
        thresholds = np.full(self.num_classes, float(default))
        # Predicting a score's whole block of ties: only the last entry of a block is a cut.
        f1 = np.where(is_end, 2 * tp / (predicted + positives[c]), -1.0)
        for k in np.flatnonzero(chosen):
            block = slice(first[k], first[k] + positives[k] + negatives[k])
            best = np.flatnonzero(f1[block] == f1[block].max())[0]  # the highest threshold
            thresholds[k] = s[block][best]
        return thresholds, chosen

    def precision_floors(self, target: float, min_positives: int = 3):
        """Per class, the lowest score above which the annotated entries are precise enough.

        The floor of a class is the lowest score s such that the annotated entries scoring >= s
        are positives at a rate of at least ``target``, with at least ``min_positives`` of them.

        Returns:
            float64 [C]: the floors; inf for a class that has ``min_positives`` positives but no
            such score, -inf for a class with fewer positives (no evidence either way).
        """
        c, s, pos, _, tp, predicted, is_end = self._ranked()
        good = is_end & (tp >= min_positives) & (tp >= target * predicted)
        positives = np.bincount(c[pos], minlength=self.num_classes)
        floors = np.where(positives >= min_positives, np.inf, -np.inf)
        # The last good cut of each class is its lowest score.
        at = np.flatnonzero(good)
        floors[c[at]] = s[at]  # later (lower) cuts of a class overwrite earlier ones
        return floors

    def _f1(self, predicted: np.ndarray) -> dict:
        """The F1 dict of [K] bool predictions at the annotated entries."""
        pos = self.labels == 1
        count = lambda mask: np.bincount(self.classes[mask], minlength=self.num_classes)
        return _f1_from_counts(
            count(predicted & pos), count(predicted & ~pos), count(~predicted & pos)
        )

    def evaluate(self, threshold=0.5) -> dict:
        """See :func:`kpartial.metrics.evaluate`."""
        ap = self.per_class_average_precision()
        f1 = self.f1_scores(threshold)
        return {
            "map": _nanmean_or_nan(ap),
            **{key: f1[key] for key in ("cf1", "of1", "cp", "cr", "op", "or")},
            "evaluated_classes": int(np.count_nonzero(~np.isnan(ap))),
            "annotated_entries": int(self.scores.size),
        }

    def _rank(self) -> np.ndarray:
        """int64 [K]: each entry's 0-based place among its example's annotated entries."""
        if self._ranks is None:
            order = np.lexsort((self.classes, -self.scores, self.rows))
            rows = self.rows[order]
            self._ranks = np.empty(order.size, np.int64)
            self._ranks[order] = np.arange(order.size) - np.searchsorted(rows, rows)
        return self._ranks

    def _top(self, k: int) -> np.ndarray:
        """bool [K]: the entry is among its example's k highest-scoring annotated entries.

        Ties: the lower class index first.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return self._rank() < min(k, self.num_classes)

    def _per_example(self, mask, weights=None) -> np.ndarray:
        """float64 [N]: the entries at `mask` counted (or their `weights` summed) per example."""
        weights = None if weights is None else weights[mask]
        return np.bincount(self.rows[mask], weights, minlength=self.num_examples)

    def f1_scores_at_top_k(self, k=3) -> dict:
        """See :func:`kpartial.metrics.f1_scores_at_top_k`."""
        return self._f1(self._top(k))

    def precision_at_k(self, k=1) -> float:
        """See :func:`kpartial.metrics.precision_at_k`."""
        pos = self.labels == 1
        hits = self._per_example(self._top(k) & pos)
        rows = self._per_example(pos) > 0
        return float(hits[rows].mean() / k) if rows.any() else math.nan

    def ndcg_at_k(self, k=5) -> float:
        """See :func:`kpartial.metrics.ndcg_at_k`."""
        pos = self.labels == 1
        top = self._top(k) & pos
        discounts = 1.0 / np.log2(np.arange(2, min(k, self.num_classes) + 2))
        dcg = self._per_example(top, discounts[np.minimum(self._rank(), discounts.size - 1)])
        num_positive = self._per_example(pos).astype(np.int64)
        ideal = np.cumsum(discounts)[np.clip(num_positive, 1, discounts.size) - 1]
        rows = num_positive > 0
        return float((dcg[rows] / ideal[rows]).mean()) if rows.any() else math.nan

    def psp_at_k(self, propensity, k=5) -> float:
        """See :func:`kpartial.metrics.psp_at_k`."""
        top = self._top(k)
        pos = self.labels == 1
        inverse = 1.0 / np.broadcast_to(np.asarray(propensity, np.float64), self.num_classes)
        weights = inverse[self.classes]
        gained = weights[top & pos].sum()
        # The best achievable: each example's k largest weights among its positives.
        rows, best = self.rows[pos], weights[pos]
        order = np.lexsort((-best, rows))
        rows, best = rows[order], best[order]
        best = best[np.arange(rows.size) - np.searchsorted(rows, rows) < min(k, self.num_classes)]
        best = best.sum()
        return float(gained / best) if best > 0 else math.nan
