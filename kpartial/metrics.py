"""Evaluation metrics of partially labelled multi-label classification, on dense NumPy arrays.

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

Each metric is computed in one place, `kpartial.sparse_scores.SparseScores`: the
scores at the annotated entries only. The functions here collect those entries
from their ``[N, C]`` arrays and return what it computes; a test set too large
for ``[N, C]`` arrays is collected batch by batch with
`kpartial.sparse_scores.StreamingEvaluation`.

Functions:
    average_precision: AP of one 1-D score vector.
    per_class_average_precision: AP of every column of an ``[N, C]`` matrix.
    mean_average_precision: mean of the per-class APs over evaluable classes.
    f1_scores: per-class (CP, CR, CF1) and overall (OP, OR, OF1) scores at a
        threshold.
    evaluate: all of the above as a JSON-serialisable dict.
    f1_scores_at_top_k, precision_at_k, ndcg_at_k, psp_at_k: per-example ranking metrics over
        each example's annotated entries; propensities: Jain et al.'s propensity model.
"""

import numpy as np

from kpartial import sparse_scores

__all__ = [
    "average_precision",
    "evaluate",
    "f1_scores",
    "f1_scores_at_top_k",
    "mean_average_precision",
    "ndcg_at_k",
    "per_class_average_precision",
    "precision_at_k",
    "propensities",
    "psp_at_k",
]


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
    y, s = sparse_scores._check_pair(labels, scores, ndim=1)
    sparse = sparse_scores.SparseScores.from_dense(y[:, None], s[:, None])
    return float(sparse.per_class_average_precision()[0])


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
    return sparse_scores.SparseScores.from_dense(labels, scores).per_class_average_precision()


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
    return sparse_scores.SparseScores.from_dense(labels, scores).mean_average_precision()


# ----------------------------------------------------------------------------
# Threshold-based scores
# ----------------------------------------------------------------------------
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
    return sparse_scores.SparseScores.from_dense(labels, scores).f1_scores(threshold)


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
    return sparse_scores.SparseScores.from_dense(labels, scores).evaluate(threshold)


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
    return sparse_scores.SparseScores.from_dense(labels, scores).f1_scores_at_top_k(k)


def precision_at_k(labels, scores, k=1) -> float:
    """P@k = mean over examples with an annotated positive of (#positives in top-k) / k."""
    return sparse_scores.SparseScores.from_dense(labels, scores).precision_at_k(k)


def ndcg_at_k(labels, scores, k=5) -> float:
    """nDCG@k over each example's annotated entries, averaged over examples with a positive.

    nDCG@k = DCG@k / ideal DCG@k,   DCG@k = sum_{r<=k} [positive at rank r] / log2(r + 1)
    """
    return sparse_scores.SparseScores.from_dense(labels, scores).ndcg_at_k(k)


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
    return sparse_scores.SparseScores.from_dense(labels, scores).psp_at_k(propensity, k)
