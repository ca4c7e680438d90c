"""Evaluation metrics for partially labelled multi-label classification.

Labels use the convention ``+1`` = positive, ``-1`` = negative and ``0`` =
unknown / not annotated. **Every metric in this module counts only annotated
entries** (``label != 0``): an entry whose label is ``0`` never contributes to
any count, ranking or denominator, so changing its score or probability
changes nothing.

Every function takes ``(labels, scores)``, in the order of Keras and
scikit-learn (``y_true, y_pred``): ``labels`` are integers in {-1, 0, 1},
``scores`` real numbers (probabilities where a threshold applies), both
``[N, C]`` (examples x classes) except for :func:`average_precision` (``[N]``).
Labels that are not integers in {-1, 0, 1} raise a ``ValueError`` that names
the order, which is how scores passed first are caught.

Each metric is computed in one place, :class:`SparseScores`: the scores at the
annotated entries only (memory O(annotated entries + C)). The dense functions
collect those entries from their ``[N, C]`` arrays and return what
:class:`SparseScores` computes; a test set too large for ``[N, C]`` arrays is
collected batch by batch with :class:`StreamingEvaluation`.

Functions:
    average_precision: AP of one 1-D score vector.
    per_class_average_precision: AP of every column of an ``[N, C]`` matrix.
    mean_average_precision: mean of the per-class APs over evaluable classes.
    f1_scores: per-class (CP, CR, CF1) and overall (OP, OR, OF1) scores at a
        threshold.
    evaluate: all of the above as a JSON-serialisable dict.
    f1_scores_at_top_k, precision_at_k, ndcg_at_k, psp_at_k: per-example ranking metrics over
        each example's annotated entries; propensities: Jain et al.'s propensity model.
    StreamingEvaluation, SparseScores: the scores at annotated entries, from batches or from
        dense arrays, and every metric above computed from them.
    plot_ap_by_frequency: per-class AP against class frequency, as a PNG.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "SparseScores",
    "StreamingEvaluation",
    "average_precision",
    "evaluate",
    "f1_scores",
    "f1_scores_at_top_k",
    "mean_average_precision",
    "ndcg_at_k",
    "per_class_average_precision",
    "plot_ap_by_frequency",
    "precision_at_k",
    "propensities",
    "psp_at_k",
]

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
# Average precision
# ----------------------------------------------------------------------------
def average_precision(labels, scores) -> float:
    """Average precision of one score vector, counting only annotated entries.

    Entries with ``label == 0`` are dropped. The remaining entries are ranked
    by score, descending. With distinct score thresholds
    ``t_1 > t_2 > ... > t_K`` and, for the set ``{score >= t_k}``,

        P_k = TP_k / (TP_k + FP_k)    (precision)
        R_k = TP_k / n_pos            (recall),

    the step-wise AP (same definition as scikit-learn's
    ``average_precision_score``) is

        AP = sum_k (R_k - R_{k-1}) * P_k,   R_0 = 0.

    Without ties this is the mean over positives of the precision at that
    positive's rank. Tie rule: all entries sharing a score form one block and
    every positive in it receives the precision at the end of the block, so
    the result does not depend on the order of tied entries. E.g. four tied
    scores with labels ``[1, -1, 1, -1]`` give ``AP = 2/4 = 0.5``.

    Args:
        labels: 1-D array-like ``[N]`` of integers in {-1, 0, 1}.
        scores: 1-D array-like ``[N]`` of real scores (higher = more likely
            positive). Scores of unknown entries are ignored and may be NaN.

    Returns:
        AP in ``[0, 1]`` as a Python float, or ``nan`` if there is no
        annotated positive or no annotated negative.

    Raises:
        ValueError: If the inputs are not 1-D, their shapes differ, the labels
            are not integers in {-1, 0, 1}, or an annotated entry has a NaN score.
    """
    y, s = _check_pair(labels, scores, ndim=1)
    return float(SparseScores.from_dense(y[:, None], s[:, None]).per_class_average_precision()[0])


def per_class_average_precision(labels, scores) -> np.ndarray:
    """Average precision of every class (column), annotated entries only.

    Column ``c`` gets ``average_precision(labels[:, c], scores[:, c])``
    (see that function for the formula and the tie rule).

    Args:
        labels: Array-like ``[N, C]`` of integers in {-1, 0, 1}.
        scores: Array-like ``[N, C]`` of real scores.

    Returns:
        ``float64`` array ``[C]``; ``nan`` for classes that are not evaluable
        (no annotated positive or no annotated negative).

    Raises:
        ValueError: If the inputs are not 2-D, their shapes differ, the labels
            are not integers in {-1, 0, 1}, or an annotated entry has a NaN score.
    """
    return SparseScores.from_dense(labels, scores).per_class_average_precision()


def _nanmean_or_nan(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def mean_average_precision(labels, scores) -> float:
    """Mean average precision over evaluable classes, annotated entries only.

        mAP = (1 / |E|) * sum_{c in E} AP_c,

    where ``E`` is the set of classes with at least one annotated positive and
    at least one annotated negative. Other classes are excluded (not counted
    as 0).

    Args:
        labels: Array-like ``[N, C]`` of integers in {-1, 0, 1}.
        scores: Array-like ``[N, C]`` of real scores.

    Returns:
        mAP as a fraction in ``[0, 1]`` (Python float), or ``nan`` if no
        class is evaluable.

    Raises:
        ValueError: As for :func:`per_class_average_precision`.
    """
    return SparseScores.from_dense(labels, scores).mean_average_precision()


# ----------------------------------------------------------------------------
# Threshold-based scores
# ----------------------------------------------------------------------------
def _f1(p: float, r: float) -> float:
    if math.isnan(p) or math.isnan(r):
        return math.nan
    return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)


def f1_scores(labels, scores, threshold=0.5) -> dict:
    """Per-class and overall precision / recall / F1, annotated entries only.

    An entry is predicted positive iff ``score >= threshold``. Only
    entries with ``label != 0`` are counted. For class ``c``:

        TP_c = #{pred 1, label +1},  FP_c = #{pred 1, label -1},
        FN_c = #{pred 0, label +1}
        P_c  = TP_c / (TP_c + FP_c)   (0 if the class has no predicted
                                       positive among annotated entries)
        R_c  = TP_c / (TP_c + FN_c)

    Per-class (macro) scores average over ``A``, the classes with at least
    one annotated positive:

        CP  = mean_{c in A} P_c,   CR = mean_{c in A} R_c,
        CF1 = 2 * CP * CR / (CP + CR)   (0 if CP = CR = 0)

    Overall (micro) scores pool the counts over all classes:

        OP  = sum_c TP_c / sum_c (TP_c + FP_c)   (0 if nothing predicted)
        OR  = sum_c TP_c / sum_c (TP_c + FN_c)
        OF1 = 2 * OP * OR / (OP + OR)            (0 if OP = OR = 0)

    If no class has an annotated positive, ``cp``, ``cr``, ``cf1``, ``or`` and
    ``of1`` are ``nan``.

    Args:
        labels: Array-like ``[N, C]`` of integers in {-1, 0, 1}.
        scores: Array-like ``[N, C]`` of predicted probabilities (any real
            scores work). Values at unknown entries are ignored.
        threshold: Scalar, or array-like ``[C]`` with one threshold per class.

    Returns:
        Dict with Python-float values for keys ``"cp"``, ``"cr"``, ``"cf1"``,
        ``"op"``, ``"or"``, ``"of1"``.

    Raises:
        ValueError: If the inputs are not 2-D, their shapes differ, the labels
            are not integers in {-1, 0, 1}, an annotated entry is NaN, or
            ``threshold`` is neither a scalar nor of shape ``[C]``.
    """
    return SparseScores.from_dense(labels, scores).f1_scores(threshold)


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict:
    """The `f1_scores` dict from per-class [C] TP, FP and FN counts."""
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


def evaluate(labels, scores, threshold=0.5) -> dict:
    """Computes all metrics at once, annotated entries only.

    Args:
        labels: Array-like ``[N, C]`` of integers in {-1, 0, 1}.
        scores: Array-like ``[N, C]`` of predicted probabilities.
        threshold: Scalar or array-like ``[C]``, see :func:`f1_scores`.

    Returns:
        Dict of plain Python numbers (JSON-serialisable; undefined values are
        ``float('nan')``):

        - ``"map"``: :func:`mean_average_precision` as a fraction in [0, 1].
        - ``"cf1"``, ``"of1"``, ``"cp"``, ``"cr"``, ``"op"``, ``"or"``: see
          :func:`f1_scores`, at ``threshold``.
        - ``"evaluated_classes"``: number of classes in the mAP (at least one
          annotated positive and one annotated negative).
        - ``"annotated_entries"``: number of entries with ``label != 0``.

    Raises:
        ValueError: As for :func:`f1_scores`.
    """
    return SparseScores.from_dense(labels, scores).evaluate(threshold)


# ----------------------------------------------------------------------------
# Ranking metrics per example (top-k over each row's annotated entries)
# ----------------------------------------------------------------------------
def f1_scores_at_top_k(labels, scores, k=3) -> dict:
    """CP/CR/CF1 and OP/OR/OF1 with each example's top-k annotated entries predicted positive.

    Same definitions as :func:`f1_scores`, with "predicted positive" meaning "among the k
    highest-scoring annotated entries of the example" instead of a threshold. Ties go to the
    lower class index (here and in every top-k metric below).

    Raises:
        ValueError: As for :func:`f1_scores`, or if ``k < 1``.
    """
    return SparseScores.from_dense(labels, scores).f1_scores_at_top_k(k)


def precision_at_k(labels, scores, k=1) -> float:
    """P@k = mean over examples with an annotated positive of (#positives in top-k) / k."""
    return SparseScores.from_dense(labels, scores).precision_at_k(k)


def ndcg_at_k(labels, scores, k=5) -> float:
    """nDCG@k over each example's annotated entries, averaged over examples with a positive.

    nDCG@k = DCG@k / ideal DCG@k,   DCG@k = sum_{r<=k} [positive at rank r] / log2(r + 1)
    """
    return SparseScores.from_dense(labels, scores).ndcg_at_k(k)


def propensities(positive_counts, num_examples, a=0.55, b=1.5) -> np.ndarray:
    """Jain et al. (KDD 2016) propensity model of a label being observed when relevant.

        p_c = 1 / (1 + C exp(-A log(N_c + B))),   C = (log N - 1) (B + 1) ** A

    with N_c the positives of class c among N examples (A = 0.55, B = 1.5 by default; the paper
    uses 0.6 / 2.6 for Amazon and 0.5 / 0.4 for Wikipedia).
    """
    counts = np.asarray(positive_counts, dtype=np.float64)
    c = (np.log(num_examples) - 1.0) * (b + 1.0) ** a
    return 1.0 / (1.0 + c * np.exp(-a * np.log(counts + b)))


def psp_at_k(labels, scores, propensity, k=5) -> float:
    """Propensity-scored precision PSP@k, normalised by its best achievable value.

    PSP@k = sum_i sum_{l in top-k_i} [y_il = +1] / p_l
            / sum_i (the k largest [y_il = +1] / p_l of row i)
    """
    return SparseScores.from_dense(labels, scores).psp_at_k(propensity, k)


# ----------------------------------------------------------------------------
# Streaming evaluation: the same metrics from the annotated entries alone
# ----------------------------------------------------------------------------
class StreamingEvaluation:
    """Collects, batch by batch, the scores at annotated entries: all that the metrics count.

    Feed it the batches of a test set in example order; `result()` gives the `SparseScores` from
    which every metric of this module comes out as the dense functions give it on the full
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
            ValueError: As for :func:`evaluate`, or if the batch does not have C columns.
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

    This class is where every metric of the module is computed: the module function of a
    method's name is that method on ``from_dense(labels, scores)`` (unknown entries never count,
    so keeping only the annotated ones changes nothing); ranking ties go to the lower class
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
            ValueError: As for :func:`evaluate`.
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
        """float64 [C], see :func:`per_class_average_precision`."""
        c, _, pos, _, tp, predicted, is_end = self._ranked()
        positions = np.arange(c.size)
        precision = tp / predicted
        # A positive gets the precision at the end of its block of ties (`average_precision`).
        end = np.minimum.accumulate(np.where(is_end, positions, c.size)[::-1])[::-1]
        summed = np.bincount(c[pos], precision[end[pos]], minlength=self.num_classes)
        n_pos = np.bincount(c[pos], minlength=self.num_classes)
        n_neg = np.bincount(c[~pos], minlength=self.num_classes)
        out = np.full(self.num_classes, np.nan)
        evaluable = (n_pos > 0) & (n_neg > 0)
        out[evaluable] = summed[evaluable] / n_pos[evaluable]
        return out

    def mean_average_precision(self) -> float:
        """See :func:`mean_average_precision`."""
        return _nanmean_or_nan(self.per_class_average_precision())

    def f1_scores(self, threshold=0.5) -> dict:
        """See :func:`f1_scores`."""
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
        """See :func:`evaluate`."""
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
        """See :func:`f1_scores_at_top_k`."""
        return self._f1(self._top(k))

    def precision_at_k(self, k=1) -> float:
        """See :func:`precision_at_k`."""
        pos = self.labels == 1
        hits = self._per_example(self._top(k) & pos)
        rows = self._per_example(pos) > 0
        return float(hits[rows].mean() / k) if rows.any() else math.nan

    def ndcg_at_k(self, k=5) -> float:
        """See :func:`ndcg_at_k`."""
        pos = self.labels == 1
        top = self._top(k) & pos
        discounts = 1.0 / np.log2(np.arange(2, min(k, self.num_classes) + 2))
        dcg = self._per_example(top, discounts[np.minimum(self._rank(), discounts.size - 1)])
        num_positive = self._per_example(pos).astype(np.int64)
        ideal = np.cumsum(discounts)[np.clip(num_positive, 1, discounts.size) - 1]
        rows = num_positive > 0
        return float((dcg[rows] / ideal[rows]).mean()) if rows.any() else math.nan

    def psp_at_k(self, propensity, k=5) -> float:
        """See :func:`psp_at_k`."""
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


def plot_ap_by_frequency(per_class_ap, positive_counts, path, dataset="", method="", mean_ap=None):
    """Writes a PNG scatter of per-class AP against the class's number of training positives.

    The AP counts annotated test entries only. The title names `dataset`, `method` and `mean_ap`
    (also the PNG's Title metadata); classes without an evaluable AP are left out and counted in
    the legend. The x axis is logarithmic from 1 up (symlog), so the classes with no training
    positive sit apart at 0, with their own marker. Draws on its own `Figure`: no pyplot state,
    no change of matplotlib's backend.

    Args:
        per_class_ap: float [C] test AP per class (NaN where not evaluable).
        positive_counts: [C] known training positives per class.
        path: the PNG file to write.
        dataset: the data spec, for the title (its folders are left out).
        method: the method, for the title.
        mean_ap: the mAP for the title, or None.

    Returns:
        The PNG bytes (for a TensorBoard image too).
    """
    import io
    import os

    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    ap = np.asarray(per_class_ap, np.float64)
    counts = np.asarray(positive_counts, np.float64)
    evaluated = ~np.isnan(ap)
    unseen = evaluated & (counts <= 0)
    seen = evaluated & ~unseen
    figure = Figure(figsize=(6.4, 4.2), dpi=100)
    axes = figure.subplots()
    axes.scatter(
        counts[seen],
        ap[seen],
        s=14,
        alpha=0.7,
        label=f"{int(seen.sum())} classes with training positives",
    )
    if unseen.any():
        axes.scatter(
            np.zeros(int(unseen.sum())),
            ap[unseen],
            s=30,
            marker="x",
            color="tab:red",
            label=f"{int(unseen.sum())} classes with no training positive",
        )
    axes.set_xscale("symlog", linthresh=1, linscale=0.5)
    axes.set_xlim(left=-0.5, right=max(10.0, counts[evaluated].max(initial=1) * 1.5))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.set_xlabel("training positives of the class (known labels; log scale above 1)")
    axes.set_ylabel("AP on annotated test entries")
    axes.set_ylim(-0.02, 1.02)
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.grid(alpha=0.3)
    if (~evaluated).any():
        axes.plot([], [], " ", label=f"{int((~evaluated).sum())} classes not evaluable (no AP)")
    axes.legend(loc="lower right", fontsize=8)
    # A data spec's folders would crowd the title out: FMT:/a/b/file.arff -> FMT:file.arff.
    fmt, _, source = dataset.partition(":")
    dataset = f"{fmt}:{os.path.basename(source.rstrip('/'))}" if "/" in source else dataset
    mean = "" if mean_ap is None or not np.isfinite(mean_ap) else f"mAP {100 * mean_ap:.2f}%"
    title = " · ".join(filter(None, (dataset, method, mean))) or "per-class AP"
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Title": title})
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return buffer.getvalue()
