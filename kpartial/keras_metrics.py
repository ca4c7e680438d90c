"""Streaming Keras metrics for partially labelled multi-label classification.

These are ``keras.metrics.Metric`` counterparts of the NumPy functions in
:mod:`kpartial.metrics`, usable in ``model.compile(metrics=[...])``,
``model.fit`` and ``model.evaluate`` (also with ``jit_compile=True``).

Conventions (same as :mod:`kpartial.metrics`):

- ``y_true`` is ``[N, C]``, int or float, with ``+1`` = positive, ``-1`` =
  negative and ``0`` = unknown. **Only annotated entries (``y_true != 0``)
  count**: an unknown entry never contributes to any count, ranking or
  denominator, so its prediction is irrelevant (it may even be NaN).
- ``y_pred`` is ``[N, C]`` of **logits** by default (``from_logits=True``),
  which is what kpartial's networks output and its losses take: a sigmoid
  is applied before thresholding / bucketing / ranking, so ``threshold`` is
  always a probability. Pass ``from_logits=False`` for a model that outputs
  probabilities (a sigmoid output layer); compiling logits with
  ``from_logits=False`` would threshold logits at 0.5 and give wrong F1.
- ``sample_weight`` (optional) multiplies every count that an entry adds.
  ``MaskedF1`` and ``MaskedAveragePrecision`` accept any shape broadcastable
  to ``[N, C]`` (``[N]`` is treated as ``[N, 1]``); ``MaskedPrecisionAtK``
  takes per-example weights ``[N]`` or ``[N, 1]``. With ``sample_weight=None``
  every result equals the corresponding NumPy function applied to all the
  batches seen since the last ``reset_state()`` concatenated.

Everything uses ``keras.ops`` only, with static shapes (no boolean masking),
so the metrics trace into a ``tf.function`` and compile with XLA.

Classes:
    MaskedF1: CF1 (``average="macro"``) or OF1 (``average="micro"``) at a
        threshold, or with each example's top-k annotated entries predicted
        positive; matches :func:`kpartial.metrics.f1_scores` /
        :func:`kpartial.metrics.f1_scores_at_top_k`.
    MaskedPrecisionAtK: matches :func:`kpartial.metrics.precision_at_k`.
    MaskedAveragePrecision: bucketed approximation of
        :func:`kpartial.metrics.mean_average_precision` (a different algorithm: per-class score
        histograms, so it can stream inside a compiled step; the exact AP is computed in one
        place, :class:`kpartial.sparse_scores.SparseScores`).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["MaskedAveragePrecision", "MaskedF1", "MaskedPrecisionAtK"]


def _prepare(metric, y_true, y_pred):
    """Casts inputs; returns (probabilities, is_pos, is_neg, known) as metric-dtype [N, C]."""
    y = ops.cast(y_true, metric.dtype)
    p = ops.cast(y_pred, metric.dtype)
    if metric.from_logits:
        p = ops.sigmoid(p)
    if len(p.shape) != 2 or len(y.shape) != 2:
        raise ValueError(
            f"{type(metric).__name__} expects 2-D y_true and y_pred [N, C]; "
            f"got shapes {y.shape} and {p.shape}"
        )
    is_pos = ops.cast(ops.equal(y, 1.0), metric.dtype)
    is_neg = ops.cast(ops.equal(y, -1.0), metric.dtype)
    known = is_pos + is_neg
    return p, is_pos, is_neg, known


def _entry_weights(metric, sample_weight, like):
    """sample_weight broadcast to the shape of ``like`` ([N, C]), or ones."""
    if sample_weight is None:
        return ops.ones_like(like)
    w = ops.cast(sample_weight, metric.dtype)
    if len(w.shape) == 1:
        w = ops.expand_dims(w, -1)
    return ops.broadcast_to(w, ops.shape(like))


def _top_k_mask(p, known, k):
    """[N, C] 0/1: each row's k highest-scoring annotated entries (fewer if it has fewer).

    Unknown entries get score -inf, so they are only picked when the row has
    fewer than k annotated entries, and are then removed by ``* known``. Ties
    go to the lower column index (``top_k`` is stable).
    """
    num_classes = p.shape[-1]
    kk = min(int(k), int(num_classes))
    masked = ops.where(known > 0, p, ops.full_like(p, float("-inf")))
    _, idx = ops.top_k(masked, kk, sorted=True)
    mask = ops.sum(ops.one_hot(idx, num_classes, dtype=p.dtype), axis=1)
    return ops.minimum(mask, 1.0) * known


def _nan(dtype):
    return ops.cast(float("nan"), dtype)


def _harmonic(p, r):
    """2pr/(p+r); 0 if p + r == 0; NaN if either is NaN (NaN propagates)."""
    s = p + r
    safe = ops.where(s > 0, s, ops.ones_like(s))
    f = ops.where(s > 0, 2.0 * p * r / safe, ops.zeros_like(s))
    return ops.where(ops.isnan(p) | ops.isnan(r), _nan(p.dtype), f)


@keras.saving.register_keras_serializable(package="kpartial")
class MaskedF1(keras.metrics.Metric):
    """CF1 or OF1 over annotated entries, streaming (same definitions as ``f1_scores``).

    Keeps per-class TP / FP / FN over annotated entries only. An entry is
    predicted positive iff ``probability >= threshold`` or, with ``top_k``,
    iff it is among the ``top_k`` highest-scoring *annotated* entries of its
    example (as :func:`kpartial.metrics.f1_scores_at_top_k`; ``threshold`` is
    then unused).

    ``average="macro"`` returns CF1 exactly as :func:`kpartial.metrics.f1_scores`
    defines it: with ``A`` the classes having >= 1 annotated positive,
    ``P_c = TP_c / (TP_c + FP_c)`` (0 if the class has no predicted positive),
    ``R_c = TP_c / (TP_c + FN_c)``, ``CP = mean_{c in A} P_c``,
    ``CR = mean_{c in A} R_c`` and ``CF1 = 2 CP CR / (CP + CR)`` (0 if both
    are 0). Note that this is the F1 of the averaged precision and recall,
    *not* the mean of per-class F1 values. NaN if ``A`` is empty.

    ``average="micro"`` returns OF1: ``OP = sum TP / sum (TP + FP)`` (0 if
    nothing is predicted), ``OR = sum TP / sum (TP + FN)`` (NaN if no annotated
    positive), ``OF1 = 2 OP OR / (OP + OR)`` (0 if both are 0, NaN if OR is).

    Args:
        num_classes: Number of classes ``C`` (last dimension).
        threshold: Scalar, or list of ``C`` per-class thresholds, applied to
            probabilities (after the sigmoid when ``from_logits=True``).
        average: ``"macro"`` (CF1) or ``"micro"`` (OF1).
        top_k: ``None`` for thresholding, or an int >= 1.
        from_logits: Whether ``y_pred`` are logits (the default) or probabilities.
        name, dtype: As for ``keras.metrics.Metric``.
    """

    def __init__(
        self,
        num_classes,
        threshold=0.5,
        average="macro",
        top_k=None,
        from_logits=True,
        name=None,
        dtype=None,
    ):
        if average not in ("macro", "micro"):
            raise ValueError(f'average must be "macro" or "micro"; got {average!r}')
        if top_k is not None and int(top_k) < 1:
            raise ValueError(f"top_k must be None or >= 1; got {top_k}")
        if name is None:
            name = ("cf1" if average == "macro" else "of1") + (
                f"_top{int(top_k)}" if top_k is not None else ""
            )
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        if hasattr(threshold, "tolist"):  # NumPy scalar or array
            threshold = threshold.tolist()
        threshold = (
            [float(t) for t in threshold]
            if isinstance(threshold, (list, tuple))
            else float(threshold)
        )
        if isinstance(threshold, list) and len(threshold) != self.num_classes:
            raise ValueError(
                f"threshold must be a scalar or have {self.num_classes} entries; "
                f"got {len(threshold)}"
            )
        self.threshold = threshold
        self.average = average
        self.top_k = None if top_k is None else int(top_k)
        self.from_logits = bool(from_logits)
        shape = (self.num_classes,)
        self.tp = self.add_variable(shape=shape, initializer="zeros", dtype=self.dtype, name="tp")
        self.fp = self.add_variable(shape=shape, initializer="zeros", dtype=self.dtype, name="fp")
        self.fn = self.add_variable(shape=shape, initializer="zeros", dtype=self.dtype, name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        p, is_pos, is_neg, known = _prepare(self, y_true, y_pred)
        if self.top_k is not None:
            pred = _top_k_mask(p, known, self.top_k)
        else:
            t = ops.convert_to_tensor(self.threshold, dtype=self.dtype)
            pred = ops.cast(ops.greater_equal(p, t), self.dtype)
        w = _entry_weights(self, sample_weight, p)
        self.tp.assign_add(ops.sum(pred * is_pos * w, axis=0))
        self.fp.assign_add(ops.sum(pred * is_neg * w, axis=0))
        self.fn.assign_add(ops.sum((1.0 - pred) * is_pos * w, axis=0))

    def result(self):
        tp, fp, fn = self.tp, self.fp, self.fn
        zero = ops.zeros((), self.dtype)
        one = ops.ones((), self.dtype)
        if self.average == "macro":
            has_pos = ops.cast((tp + fn) > 0, self.dtype)
            n_pos_classes = ops.sum(has_pos)
            pred_cnt = tp + fp
            prec_c = ops.where(pred_cnt > 0, tp / ops.where(pred_cnt > 0, pred_cnt, one), zero)
            rec_c = tp / ops.where(tp + fn > 0, tp + fn, one)
            denom = ops.where(n_pos_classes > 0, n_pos_classes, one)
            cp = ops.where(n_pos_classes > 0, ops.sum(prec_c * has_pos) / denom, _nan(self.dtype))
            cr = ops.where(n_pos_classes > 0, ops.sum(rec_c * has_pos) / denom, _nan(self.dtype))
            return _harmonic(cp, cr)
        tp_all, fp_all, fn_all = ops.sum(tp), ops.sum(fp), ops.sum(fn)
        pc = tp_all + fp_all
        op = ops.where(pc > 0, tp_all / ops.where(pc > 0, pc, one), zero)
        rc = tp_all + fn_all
        orc = ops.where(rc > 0, tp_all / ops.where(rc > 0, rc, one), _nan(self.dtype))
        return _harmonic(op, orc)

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(ops.zeros(v.shape, dtype=v.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            threshold=self.threshold,
            average=self.average,
            top_k=self.top_k,
            from_logits=self.from_logits,
        )
        return config


@keras.saving.register_keras_serializable(package="kpartial")
class MaskedPrecisionAtK(keras.metrics.Metric):
    """Streaming P@k, same definition as :func:`kpartial.metrics.precision_at_k`.

    For each example, rank its *annotated* entries by score (unknown entries
    are skipped, never occupy a top-k slot) and count the positives among the
    first ``min(k, C)``; the example's value is that count divided by ``k``
    (so an example with fewer than ``k`` annotated entries cannot reach 1).
    The result is the mean over examples with >= 1 annotated positive;
    examples without one are not counted. NaN if no such example was seen.
    Ties go to the lower column index, as NumPy's stable argsort does.

    Args:
        k: Number of top-ranked entries, >= 1.
        from_logits: Whether ``y_pred`` are logits (the default) or probabilities; the
            ranking is the same either way.
        name, dtype: As for ``keras.metrics.Metric``.
    """

    def __init__(self, k=1, from_logits=True, name=None, dtype=None):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        super().__init__(name=name or f"p_at_{int(k)}", dtype=dtype)
        self.k = int(k)
        self.from_logits = bool(from_logits)
        self.total = self.add_variable(
            shape=(), initializer="zeros", dtype=self.dtype, name="total"
        )
        self.count = self.add_variable(
            shape=(), initializer="zeros", dtype=self.dtype, name="count"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        p, is_pos, _, known = _prepare(self, y_true, y_pred)
        hits = ops.sum(_top_k_mask(p, known, self.k) * is_pos, axis=1)  # [N]
        has_pos = ops.cast(ops.sum(is_pos, axis=1) > 0, self.dtype)  # [N]
        if sample_weight is not None:
            w = ops.cast(sample_weight, self.dtype)
            if len(w.shape) == 2:
                if w.shape[-1] != 1:
                    raise ValueError(
                        "MaskedPrecisionAtK takes per-example sample_weight [N] or [N, 1]; "
                        f"got shape {w.shape}"
                    )
                w = ops.squeeze(w, -1)
            has_pos = has_pos * ops.broadcast_to(w, ops.shape(has_pos))
        self.total.assign_add(ops.sum(has_pos * hits) / float(self.k))
        self.count.assign_add(ops.sum(has_pos))

    def result(self):
        return ops.where(
            self.count > 0,
            self.total / ops.where(self.count > 0, self.count, ops.ones((), self.dtype)),
            _nan(self.dtype),
        )

    def reset_state(self):
        for v in (self.total, self.count):
            v.assign(ops.zeros(v.shape, dtype=v.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(k=self.k, from_logits=self.from_logits)
        return config


@keras.saving.register_keras_serializable(package="kpartial")
class MaskedAveragePrecision(keras.metrics.Metric):
    """Streaming mAP over annotated entries, approximated on a grid of score buckets.

    The probability range ``[0, 1]`` is cut into ``num_thresholds`` equal
    buckets (thresholds ``j / num_thresholds``); per class we accumulate the
    number of annotated positives and annotated negatives falling in each
    bucket. The result is the step-wise AP of
    :func:`kpartial.metrics.average_precision`,
    ``AP_c = sum_j (R_j - R_{j+1}) * P_j`` with ``P_j``, ``R_j`` the
    precision / recall of ``{score >= j / num_thresholds}``, i.e. *exactly*
    the NumPy AP of the scores rounded down to the bucket grid (entries in one
    bucket are one tied block, which gets the precision at the block end, the
    same tie rule). It is therefore an approximation of the exact AP that
    :func:`kpartial.metrics.mean_average_precision` computes: it only differs
    where annotated positives and negatives of a class share a bucket, and is
    exact when the scores already lie on the grid. The mean is taken over the
    classes with >= 1 annotated positive and >= 1 annotated negative (as in
    ``mean_average_precision``; other classes are excluded, not counted as 0);
    NaN if no class qualifies.

    This is the same idea as ``keras.metrics.AUC(curve="PR", multi_label=True)``
    but uses the step-wise AP sum (not an interpolated area) and the
    evaluable-class filter, so it converges to the NumPy value.

    It is a second algorithm for the AP, not a copy of the exact one: fixed-size
    histograms are what a metric inside a compiled (XLA) train or test step can
    accumulate, where the exact AP needs every score sorted. Reports (a run's
    metrics.json, tools/evaluate.py) use the exact AP of
    :class:`kpartial.sparse_scores.SparseScores`.

    Args:
        num_classes: Number of classes ``C``.
        num_thresholds: Number of score buckets (>= 2); memory is
            ``2 * C * num_thresholds`` floats.
        from_logits: Whether ``y_pred`` are logits (the default; sigmoid applied first) or
            probabilities.
        name, dtype: As for ``keras.metrics.Metric``.
    """

    def __init__(self, num_classes, num_thresholds=200, from_logits=True, name="map", dtype=None):
        if int(num_thresholds) < 2:
            raise ValueError(f"num_thresholds must be >= 2; got {num_thresholds}")
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.num_thresholds = int(num_thresholds)
        self.from_logits = bool(from_logits)
        shape = (self.num_classes, self.num_thresholds)
        self.pos_hist = self.add_variable(
            shape=shape, initializer="zeros", dtype=self.dtype, name="pos_hist"
        )
        self.neg_hist = self.add_variable(
            shape=shape, initializer="zeros", dtype=self.dtype, name="neg_hist"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        p, is_pos, is_neg, known = _prepare(self, y_true, y_pred)
        b = self.num_thresholds
        # Unknown entries may hold anything (NaN); give them score 0, weight 0.
        p = ops.where(known > 0, p, ops.zeros_like(p))
        bucket = ops.cast(ops.floor(ops.clip(p, 0.0, 1.0) * float(b)), "int32")
        bucket = ops.minimum(bucket, b - 1)
        segment = ops.expand_dims(ops.arange(self.num_classes, dtype="int32") * b, 0) + bucket
        segment = ops.reshape(segment, (-1,))
        w = _entry_weights(self, sample_weight, p)
        size = self.num_classes * b
        pos = ops.segment_sum(ops.reshape(is_pos * w, (-1,)), segment, num_segments=size)
        neg = ops.segment_sum(ops.reshape(is_neg * w, (-1,)), segment, num_segments=size)
        self.pos_hist.assign_add(ops.reshape(pos, (self.num_classes, b)))
        self.neg_hist.assign_add(ops.reshape(neg, (self.num_classes, b)))

    def per_class_result(self):
        """[C] step-wise AP per class on the bucket grid; NaN for non-evaluable classes."""
        pos, neg = self.pos_hist, self.neg_hist
        one = ops.ones((), self.dtype)
        # Cumulative counts from the highest bucket down: {score >= j / B}.
        tp = ops.flip(ops.cumsum(ops.flip(pos, axis=1), axis=1), axis=1)
        fp = ops.flip(ops.cumsum(ops.flip(neg, axis=1), axis=1), axis=1)
        seen = tp + fp
        precision = tp / ops.where(seen > 0, seen, one)
        n_pos = tp[:, 0]
        n_neg = fp[:, 0]
        ap = ops.sum(pos * precision, axis=1) / ops.where(n_pos > 0, n_pos, one)
        evaluable = (n_pos > 0) & (n_neg > 0)
        return ops.where(evaluable, ap, _nan(self.dtype))

    def result(self):
        ap = self.per_class_result()
        ok = ops.logical_not(ops.isnan(ap))
        n = ops.sum(ops.cast(ok, self.dtype))
        total = ops.sum(ops.where(ok, ap, ops.zeros_like(ap)))
        return ops.where(
            n > 0, total / ops.where(n > 0, n, ops.ones((), self.dtype)), _nan(self.dtype)
        )

    def reset_state(self):
        for v in (self.pos_hist, self.neg_hist):
            v.assign(ops.zeros(v.shape, dtype=v.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            num_thresholds=self.num_thresholds,
            from_logits=self.from_logits,
        )
        return config
