"""Partial-label losses. `y_true` is int {+1 positive, -1 negative, 0 unknown}; `y_pred` are logits.

Every loss here reduces the same way: the weighted sum of entry losses over the batch, divided by
the number of entries it counts (for masked losses: the known labels), floored at 1 so a batch
without a known label gives 0 rather than NaN:

    L = sum_{i,c} s_ic * l_ic / max(1, sum_{i,c} s_ic * k_ic)

`s` is the optional `sample_weight`: shape [B] (per example), [1, C] (per class) or [B, C] (per
entry). kpartial's label-space reduction passes the active-class mask here, so a pruned class
contributes neither to the loss nor to its normaliser nor to the gradients. All arithmetic is
`keras.ops` in float32 with static shapes, so the losses compile under XLA and stay finite for
float16/bfloat16 logits.
"""

import keras
import numpy as np
from keras import ops


def _split(y_true):
    positive = ops.cast(ops.greater(y_true, 0), "float32")
    negative = ops.cast(ops.less(y_true, 0), "float32")
    return positive, negative


class PartialLabelLoss(keras.losses.Loss):
    """Base class: subclasses return entry losses `l` [B, C] and counted entries `k` [B, C]."""

    def __init__(self, name=None):
        # Always float32 arithmetic (see the module docstring), so there is no dtype argument.
        super().__init__(name=name, reduction="sum_over_batch_size")

    def entry_losses(self, y_true, logits):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)  # fixed: always normalised by counted entries
        return config

    def _weighted_terms(self, y_true, y_pred, sample_weight):
        logits = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        y_true = ops.cast(ops.convert_to_tensor(y_true), "float32")
        losses, counted = self.entry_losses(y_true, logits)
        if sample_weight is not None:
            weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            if len(weight.shape) == 1:
                weight = ops.expand_dims(weight, -1)
            losses = losses * weight
            counted = counted * weight
        return losses, counted

    def __call__(self, y_true, y_pred, sample_weight=None):
        losses, counted = self._weighted_terms(y_true, y_pred, sample_weight)
        return ops.sum(losses) / ops.maximum(ops.sum(counted), 1.0)

    def call(self, y_true, y_pred):
        """Per-example values whose batch mean is the loss (for Keras utilities that call `call`)."""
        losses, counted = self._weighted_terms(y_true, y_pred, None)
        batch_size = ops.cast(ops.shape(losses)[0], "float32")
        return ops.sum(losses, axis=-1) * batch_size / ops.maximum(ops.sum(counted), 1.0)


@keras.saving.register_keras_serializable(package="kpartial")
class IgnoreUnknownBCE(PartialLabelLoss):
    """Binary cross-entropy on known labels only (the `ignore` baseline).

        l_ic = [y_ic = +1] softplus(-z_ic) + [y_ic = -1] softplus(z_ic),   k_ic = [y_ic != 0]

    Args:
      name: loss name.
    """

    def __init__(self, name="ignore_unknown_bce"):
        super().__init__(name=name)

    def entry_losses(self, y_true, logits):
        positive, negative = _split(y_true)
        losses = positive * ops.softplus(-logits) + negative * ops.softplus(logits)
        return losses, positive + negative


@keras.saving.register_keras_serializable(package="kpartial")
class AssumeNegativeBCE(PartialLabelLoss):
    """Binary cross-entropy that reads every unknown label as negative (`assume_negative`).

        l_ic = [y_ic = +1] softplus(-z_ic) + [y_ic != +1] softplus(z_ic),   k_ic = 1

    Args:
      name: loss name.
    """

    def __init__(self, name="assume_negative_bce"):
        super().__init__(name=name)

    def entry_losses(self, y_true, logits):
        positive, _ = _split(y_true)
        losses = positive * ops.softplus(-logits) + (1.0 - positive) * ops.softplus(logits)
        return losses, ops.ones_like(losses)


@keras.saving.register_keras_serializable(package="kpartial")
class StatisticsWeightedLoss(PartialLabelLoss):
    """kpartial's loss: prior-balanced BCE on known labels plus a prior-target term on unknown ones.

    With the class prior pi_c (see `kpartial.class_stats`) and `balance` beta, known positives of a
    class are up-weighted by the odds against it, capped at `max_positive_weight`:

        w_c    = min(((1 - pi_c) / pi_c) ** beta, max_positive_weight)
        l_ic   = w_c [y_ic = +1] softplus(-z_ic) + [y_ic = -1] softplus(z_ic)
               + lambda [y_ic = 0] (pi_c softplus(-z_ic) + (1 - pi_c) softplus(z_ic))
        k_ic   = [y_ic != 0]

    The unknown term is the cross-entropy against the expected label pi_c of an unannotated entry:
    it costs almost nothing where the prior is right and keeps unknown logits from drifting up, which
    masking alone (lambda = 0) allows. beta = 0 and lambda = 0 give `IgnoreUnknownBCE`. The loss is
    normalised by the number of known labels only.

    Args:
      priors: C per-class positive priors in (0, 1).
      balance: beta >= 0, how strongly rare positives are up-weighted (0 = no weighting).
      unknown_weight: lambda >= 0, weight of the prior-target term on unknown entries.
      max_positive_weight: cap on w_c, so classes with a prior near 0 cannot dominate.
      name: loss name.
    """

    def __init__(
        self,
        priors,
        balance=0.5,
        unknown_weight=0.1,
        max_positive_weight=50.0,
        name="statistics_weighted_loss",
    ):
        super().__init__(name=name)
        priors = np.asarray(priors, dtype=np.float64).reshape(-1)
        if priors.size == 0 or not np.all((priors > 0) & (priors < 1)):
            raise ValueError("priors must be a non-empty list of values in (0, 1)")
        if balance < 0 or unknown_weight < 0 or max_positive_weight < 1:
            raise ValueError("need balance >= 0, unknown_weight >= 0 and max_positive_weight >= 1")
        self.priors = priors.tolist()
        self.balance = float(balance)
        self.unknown_weight = float(unknown_weight)
        self.max_positive_weight = float(max_positive_weight)
        self._prior = priors.astype(np.float32)[None, :]
        self._positive_weight = np.minimum(
            ((1 - priors) / priors) ** self.balance, self.max_positive_weight
        ).astype(np.float32)[None, :]

    def entry_losses(self, y_true, logits):
        positive, negative = _split(y_true)
        unknown = 1.0 - positive - negative
        loss_if_positive = ops.softplus(-logits)
        loss_if_negative = ops.softplus(logits)
        prior = ops.convert_to_tensor(self._prior)
        losses = (
            self._positive_weight * positive * loss_if_positive
            + negative * loss_if_negative
            + self.unknown_weight
            * unknown
            * (prior * loss_if_positive + (1.0 - prior) * loss_if_negative)
        )
        return losses, positive + negative

    def get_config(self):
        return {
            **super().get_config(),
            "priors": self.priors,
            "balance": self.balance,
            "unknown_weight": self.unknown_weight,
            "max_positive_weight": self.max_positive_weight,
        }


def ignore_unknown_bce(y_true, y_pred):
    return IgnoreUnknownBCE()(y_true, y_pred)


def assume_negative_bce(y_true, y_pred):
    return AssumeNegativeBCE()(y_true, y_pred)


def statistics_weighted_loss(y_true, y_pred, priors, **kwargs):
    return StatisticsWeightedLoss(priors, **kwargs)(y_true, y_pred)


def get(method, class_statistics=None, **kwargs):
    """Returns the loss of a `--method` name: `kpartial`, `ignore` or `assume_negative`."""
    if method == "ignore":
        return IgnoreUnknownBCE(**kwargs)
    if method == "assume_negative":
        return AssumeNegativeBCE(**kwargs)
    if method == "kpartial":
        if class_statistics is None:
            raise ValueError("method 'kpartial' needs class statistics for its priors")
        return StatisticsWeightedLoss(class_statistics.priors, **kwargs)
    raise ValueError(f"unknown method {method!r}; known: kpartial, ignore, assume_negative")
