"""Partial-label losses. `y_true` is int {+1 positive, -1 negative, 0 unknown}; `y_pred` are logits.

Every loss here reduces the same way. It has one or more parts p, each a weighted sum of entry
losses divided by the number of entries that part counts, floored at 1 (a part that counts
nothing in a batch gives 0, not NaN), plus an optional term R of batch means:

    L = sum_p [ sum_{i,c} s_ic l^p_ic / max(1, sum_{i,c} s_ic k^p_ic) ]  +  R(mean_i r_i)

Most losses have one part. For a masked loss it counts the known labels, so a batch without a
known label gives exactly 0 (`ignore`, `focal`/`asl` with unknown="ignore"); a loss that reads
unknown entries as (weak) negatives counts them too, and is not 0 there (`assume_negative`, `wan`,
`an_ls`, `hill`, `splc`, `ll_*`, `focal`/`asl` with unknown="negative", and `p_asl` for the
unannotated entries it does not ignore). kpartial's loss has two parts, the known labels and the
unknown entries, so the weight of its unknown term does not depend on how many labels are known;
on a batch without a known label only its unknown part remains (0 only with lambda = 0). EPR's
regulariser is its R, so EPR is not 0 there either.

`s` is the optional `sample_weight`: shape [B] (per example), [1, C] (per class) or [B, C] (per
entry). kpartial's label-space reduction passes the active-class mask here, so a pruned class
contributes neither to the loss nor to its normalisers nor to the gradients. All arithmetic is
`keras.ops` in float32 with static shapes, so the losses compile under XLA and stay finite for
float16/bfloat16 logits.

Under data parallelism (`kpartial.distribution.replica_loss`) each replica computes `sums` of its
share of the global batch and the counts and batch sums are added over replicas before dividing,
so the gradient is the global batch's, except for the losses with `selects_across_batch` (LL-*,
P-ASL), which select entries among a replica's share of the batch.
"""

import functools
import inspect

import keras
import numpy as np
from keras import ops

# Above this share of a batch's entries known, `StatisticsWeightedLoss` computes its known labels'
# terms over [B, C] instead of gathering them: where the two cost the same on 2 CPU cores (between
# 5% and 10% at C = 1,000, about 15% at C = 9,600; benchmarks/README.md, "Loss step time").
GATHER_KNOWN_SHARE = 0.08


def _masks(y_true):
    """Boolean (positive, negative) masks of the labels.

    The labels are compared with a zero of their own dtype: a Python 0 would make Keras cast
    every int8 label to int32 first, one more pass over [B, C] per comparison.
    """
    zero = ops.zeros((), y_true.dtype)
    return ops.greater(y_true, zero), ops.less(y_true, zero)


def _known(y_true):
    """Boolean mask of the annotated entries (see `_masks` for the zero's dtype)."""
    return ops.not_equal(y_true, ops.zeros((), y_true.dtype))


def _split(y_true):
    positive, negative = _masks(y_true)
    return ops.cast(positive, "float32"), ops.cast(negative, "float32")


def _check_priors(priors):
    priors = np.asarray(priors, dtype=np.float64).reshape(-1)
    if priors.size == 0 or not np.all((priors > 0) & (priors < 1)):
        raise ValueError("priors must be a non-empty list of values in (0, 1)")
    return priors


class PartialLabelLoss(keras.losses.Loss):
    """Base class: subclasses return entry losses `l` [B, C] and counted entries `k` [B, C].

    What a loss needs from the rest of training is said by two capabilities, so callers never
    test for a loss by its name:

    Attributes:
      uses_priors: class attribute; True when the constructor takes the C class priors as its
        first argument (`get` passes them from the class statistics).
      needs_example_state: True when the loss writes per-example labels (LL-Cp's permanent
        corrections), so the model must keep the [N, C] pseudo-label table.
      selects_across_batch: class attribute; True when the loss ranks entries across the batch.
    """

    uses_priors = False
    # Whether the loss ranks entries across the whole batch (so a replica's share of it selects
    # among fewer entries than one device would).
    selects_across_batch = False

    def __init__(self, name=None):
        # Always float32 arithmetic (see the module docstring), so there is no dtype argument.
        super().__init__(name=name, reduction="sum_over_batch_size")

    @property
    def needs_example_state(self):
        return False

    def entry_losses(self, y_true, logits):
        """(entry losses l [B, C], counted entries k [B, C]) of a loss with one part."""
        raise NotImplementedError

    def parts(self, y_true, logits):
        """[(l^p [B, C], k^p [B, C]) for each part p]: `entry_losses` for a loss of one part."""
        return [self.entry_losses(y_true, logits)]

    # Whether `sums` takes `unknown`: the unknown term's weight and rates from the model's
    # variables (measured during the run, `kpartial.unknown_rates`) instead of constants.
    reads_unknown_rates = False

    def batch_statistics(self, y_true, logits, weight):
        """Per-example statistics r [B, S] whose batch mean `batch_term` takes; None here.

        `weight` is the sample weight as [B, 1], [1, C] or [B, C], or None (no weighting).
        """
        return

    def batch_term(self, means):
        """R: a scalar from the batch means [S] of `batch_statistics`."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)  # fixed: always normalised by counted entries
        return config

    def sums(self, y_true, y_pred, sample_weight=None, unknown=None, annotations=None):
        """The loss before it is normalised: (numerators [P], counts [P], statistics [S] or None).

        Per part p, sum s l^p and sum s k^p; the statistics are summed over the examples. The loss
        is `sum(numerators / max(1, counts)) + batch_term(statistics / B)`; a data-parallel
        train step adds the counts and statistics of every replica first
        (`kpartial.distribution.replica_loss`), so that its gradient is the global batch's.
        `unknown` is (measured [] or None, rates [C]) for a loss that `reads_unknown_rates`: its
        rates u_c replaced, and with measured = 0 the loss is masked BCE (the warm-up before the
        rates are measured); tensors, so a compiled step reads their current values. measured =
        None: the rates hold from the first step (no warm-up, and no pass over [B, C] to blend
        the two forms).

        `annotations`: the labels as annotated, where `y_true` holds pseudo labels too (a
        `PartialLabelModel` fills them in). A loss of known and unknown parts
        (`KnownUnknownLoss`) then counts only the annotations in its known part's normaliser: a
        pseudo label adds its weighted term without diluting every annotation's. At Open Images
        density the pseudo negatives outnumber the annotations about 50 to 1, so counted as
        annotations they would divide each annotation's weight by about 50. The other losses
        count what `y_true` holds.
        """
        logits = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        # Labels keep their (int8) dtype: the label masks compare them, nothing casts them to
        # float, and an unweighted loss multiplies by no weight at all (each is a pass over [B, C]).
        y_true = ops.convert_to_tensor(y_true)
        weight = None
        if sample_weight is not None:
            weight = ops.cast(ops.convert_to_tensor(sample_weight), "float32")
            if len(weight.shape) == 1:
                weight = ops.expand_dims(weight, -1)
        if unknown is not None and not self.reads_unknown_rates:
            raise ValueError(f"{type(self).__name__} has no unknown term to set rates of")
        numerators, counts = self.part_sums(y_true, logits, weight, unknown, annotations)
        statistics = self.batch_statistics(y_true, logits, weight)
        if statistics is not None:
            statistics = ops.sum(statistics, axis=0)
        return numerators, counts, statistics

    def part_sums(self, y_true, logits, weight, unknown, annotations=None):
        """(sum s l^p [P], sum s k^p [P]) of the parts; the gradient is the graph's."""
        parts = (
            self.parts(y_true, logits) if unknown is None else self.parts(y_true, logits, unknown)
        )
        numerators, counts = [], []
        for losses, counted in parts:
            if weight is not None:
                losses, counted = losses * weight, counted * weight
            numerators.append(ops.sum(losses))
            counts.append(ops.sum(counted))
        return ops.stack(numerators), ops.stack(counts)

    def normalised(self, numerators, counts, statistics, batch_size):
        """The loss from `sums` (of one batch of `batch_size` examples, or of several added)."""
        loss = ops.sum(numerators / ops.maximum(counts, 1.0))
        if statistics is None:
            return loss
        return loss + self.batch_term(statistics / ops.cast(batch_size, "float32"))

    def __call__(self, y_true, y_pred, sample_weight=None):
        batch_size = ops.shape(y_pred)[0]
        return self.normalised(*self.sums(y_true, y_pred, sample_weight), batch_size)

    def call(self, y_true, y_pred):
        """Per-example values whose batch mean is the loss (for Keras utilities calling `call`)."""
        logits = ops.cast(ops.convert_to_tensor(y_pred), "float32")
        y_true = ops.convert_to_tensor(y_true)
        batch_size = ops.cast(ops.shape(logits)[0], "float32")
        per_example = 0.0
        for losses, counted in self.parts(y_true, logits):
            per_example += (
                ops.sum(losses, axis=-1) * batch_size / ops.maximum(ops.sum(counted), 1.0)
            )
        statistics = self.batch_statistics(y_true, logits, None)
        if statistics is not None:
            per_example += self.batch_term(ops.mean(statistics, axis=0))
        return per_example


class KnownUnknownLoss(PartialLabelLoss):
    """Base class of a loss whose parts are the known labels and, optionally, the unknown entries.

    A subclass gives its entry losses with their derivative, `entries`, instead of `parts`.
    `part_sums` then computes both parts' sums in one pass over [B, C] and their gradient from
    that derivative (a custom gradient), instead of differentiating every operation of the
    formula: on a CPU without XLA each operation is a pass over [B, C], and the backward pass of
    the graph doubles them. `parts` (the same values, differentiated by the graph) serves `call`.

    Attributes:
      counts_unknown: class attribute; True when the unknown entries are a second part (their
        entry losses are then not 0), False when the loss is masked (one part, the known labels).
    """

    counts_unknown = False

    def entries(self, y_true, logits, unknown=None):
        """(entry losses l [B, C], dl/dz [B, C]), both 0 where a masked loss has no term."""
        raise NotImplementedError

    def parts(self, y_true, logits, unknown=None):
        entry, _ = self.entries(y_true, logits, unknown)
        known = ops.cast(_known(y_true), "float32")
        if not self.counts_unknown:
            return [(entry, known)]
        return [(entry * known, known), (entry * (1.0 - known), 1.0 - known)]

    def part_sums(self, y_true, logits, weight, unknown, annotations=None):
        known = _known(y_true)
        counted = ops.cast(known if annotations is None else _known(annotations), "float32")
        if weight is not None:
            counted = counted * weight
        known_count = ops.sum(counted)
        if self.counts_unknown:
            # sum_ic s_ic [y_ic = 0] as the whole weight minus the known part's.
            total = (
                ops.cast(ops.size(logits), "float32")
                if weight is None
                else ops.sum(ops.broadcast_to(weight, ops.shape(logits)))
            )
            counts = ops.stack([known_count, total - known_count])
        else:
            counts = ops.stack([known_count])

        @ops.custom_gradient
        def numerators(logits):
            sums, derivative = self.sums_and_derivative(y_true, logits, weight, unknown, known)

            def gradient(*args, upstream=None):
                upstream = args[0] if upstream is None else upstream
                if not self.counts_unknown:
                    return upstream[0] * derivative
                return ops.where(known, upstream[0], upstream[1]) * derivative

            return sums, gradient

        return numerators(logits), counts

    def sums_and_derivative(self, y_true, logits, weight, unknown, known):
        """(the parts' weighted entry-loss sums [P], the weighted dl/dz [B, C]) from `entries`."""
        entry, derivative = self.entries(y_true, logits, unknown)
        if weight is not None:
            entry, derivative = entry * weight, derivative * weight
        if not self.counts_unknown:
            return ops.stack([ops.sum(entry)]), derivative
        known_sum = ops.sum(ops.where(known, entry, 0.0))
        return ops.stack([known_sum, ops.sum(entry) - known_sum]), derivative


@keras.saving.register_keras_serializable(package="kpartial")
class IgnoreUnknownBCE(KnownUnknownLoss):
    """Binary cross-entropy on known labels only (the `ignore` baseline).

        l_ic = [y_ic = +1] softplus(-z_ic) + [y_ic = -1] softplus(z_ic),   k_ic = [y_ic != 0]

    Args:
      name: loss name.
    """

    def __init__(self, name="ignore_unknown_bce"):
        super().__init__(name=name)

    def entries(self, y_true, logits, unknown=None):
        del unknown
        positive, negative = _masks(y_true)
        known = ops.cast(ops.logical_or(positive, negative), "float32")
        positive = ops.cast(positive, "float32")
        # softplus(-z) = softplus(z) - z, so one softplus serves both kinds of label; the
        # derivative is sigmoid(z) - [y = +1] on the known labels.
        entry = known * ops.softplus(logits) - positive * logits
        return entry, known * ops.sigmoid(logits) - positive


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
class StatisticsWeightedLoss(KnownUnknownLoss):
    """kpartial's loss: prior-balanced BCE on known labels plus a prior-target term on unknown ones.

    With the class prior pi_c (see `kpartial.class_stats`) and `balance` beta, known positives of a
    class are up-weighted by the odds against it, capped at `max_positive_weight`:

        w_c    = min(((1 - pi_c) / pi_c) ** beta, max_positive_weight)
        p_m    = max(sigmoid(z_ic) - m, 0)
        l^known_ic   = w_c [y_ic = +1] softplus(-z_ic) + [y_ic = -1] p_m^gamma (-log(1 - p_m))
        l^unknown_ic = lambda [y_ic = 0] (u_c softplus(-z_ic) + (1 - u_c) softplus(z_ic))

    u_c is the positive rate among the unknown entries: pi_c when labels are missing at random
    (`kpartial.class_stats` decides from the annotation counts, e.g. not for Open Images'
    verified labels, where it is the known positives over all examples).

    The known negatives are focused as in ASL (Ridnik et al., ICCV 2021): easy negatives
    (p below the margin m, or small p^gamma) give little gradient, so the many easy negatives of a
    long-tailed label space do not drown the positives; gamma = m = 0 is plain BCE
    (-log(1 - p) = softplus(z)). Only annotated negatives are focused: an unknown entry is not a
    negative, and its term keeps the prior's target.

    The unknown term is the cross-entropy against the expected label u_c of an unannotated entry:
    it costs almost nothing where the prior is right and keeps unknown logits from drifting up,
    which masking alone (lambda = 0) allows. beta = lambda = gamma = m = 0 gives
    `IgnoreUnknownBCE`. The two terms are two parts (see the module docstring), each normalised by
    its own count:

        L = sum_ic s l^known_ic / max(1, sum_ic s [a_ic != 0])
          + sum_ic s l^unknown_ic / max(1, sum_ic s [a_ic = 0])

    where a_ic is the annotation: y_ic itself, or, where a `PartialLabelModel` has filled in
    pseudo labels, the label before it did (`sums(..., annotations=...)`), so a pseudo label is a
    known term at its weight s without counting as an annotation in the normaliser.

    so lambda is the weight of the mean unknown-entry term against the mean annotation term at
    any label density (with one normaliser, at 0.1% known labels lambda = 0.1 would weigh the
    unknown entries 100 : 1 against the annotations). A batch without a known label gives the
    unknown part alone; one without unknown entries (full labels), the known part alone.

    Where few labels are known (at most `GATHER_KNOWN_SHARE` of a batch's entries), the known
    labels' terms are computed on the gathered known entries and only the unknown term over all
    B x C: the same values, at about the cost of masked BCE (`sums_and_derivative`).

    Args:
      priors: C per-class positive priors in (0, 1).
      balance: beta >= 0, how strongly rare positives are up-weighted (0 = no weighting).
      unknown_weight: lambda >= 0, weight of the prior-target term on unknown entries.
      max_positive_weight: cap on w_c, so classes with a prior near 0 cannot dominate.
      negative_focusing: gamma >= 0 of the known negatives. The default 2 is milder than ASL's
        gamma- = 4: it keeps most of gamma 4's gain on long-tailed label spaces and loses less
        where the label space is small or dense (figures: benchmarks/README.md). `get` gives 4
        when the labels are complete (`kpartial.class_stats`).
      negative_margin: m in [0, 1), the probability margin of the known negatives (ASL's: 0.05).
      unknown_priors: u_c, C values in (0, 1); None = the priors. A `PartialLabelModel` that
        measures the rates during the run passes them to `sums` instead, from its variables
        (`reads_unknown_rates`, `kpartial.unknown_rates`), with a switch that makes the loss
        masked BCE (w_c = 1, gamma = m = 0, lambda = 0) until they are measured: the run's first
        epochs are then the model trained with the unknown entries ignored that measures them.
      name: loss name.
    """

    uses_priors = True
    reads_unknown_rates = True

    def __init__(
        self,
        priors,
        balance=0.5,
        unknown_weight=0.1,
        max_positive_weight=50.0,
        negative_focusing=2.0,
        negative_margin=0.05,
        unknown_priors=None,
        name="statistics_weighted_loss",
    ):
        super().__init__(name=name)
        priors = _check_priors(priors)
        if balance < 0 or unknown_weight < 0 or max_positive_weight < 1:
            raise ValueError("need balance >= 0, unknown_weight >= 0 and max_positive_weight >= 1")
        if negative_focusing < 0 or not 0.0 <= negative_margin < 1.0:
            raise ValueError("need negative_focusing >= 0 and negative_margin in [0, 1)")
        self.priors = priors.tolist()
        unknown = priors if unknown_priors is None else _check_priors(unknown_priors)
        if unknown.shape != priors.shape:
            raise ValueError(f"unknown_priors has {unknown.size} values, priors {priors.size}")
        self.unknown_priors = None if unknown_priors is None else unknown.tolist()
        self.balance = float(balance)
        self.unknown_weight = float(unknown_weight)
        self.max_positive_weight = float(max_positive_weight)
        self.negative_focusing = float(negative_focusing)
        self.negative_margin = float(negative_margin)
        self._unknown_target = (self.unknown_weight * unknown).astype(np.float32)[None, :]
        self._positive_weight = np.minimum(
            ((1 - priors) / priors) ** self.balance, self.max_positive_weight
        ).astype(np.float32)[None, :]

    counts_unknown = True

    def _coefficients(self, unknown):
        """(lambda, lambda u_c [1, C], w_c [1, C], measured or None) of the entry losses."""
        if unknown is None:
            return self.unknown_weight, self._unknown_target, self._positive_weight, None
        measured, rates = unknown  # from the model's variables
        rates = ops.expand_dims(ops.cast(rates, "float32"), 0)
        if measured is None:  # the rates were set before the first step: no masked warm-up
            return self.unknown_weight, self.unknown_weight * rates, self._positive_weight, None
        measured = ops.cast(measured, "float32")
        weight = self.unknown_weight * measured
        return weight, weight * rates, 1.0 + measured * (self._positive_weight - 1.0), measured

    @property
    def _focused(self):
        return bool(self.negative_focusing or self.negative_margin)

    def _negative(self, p, softplus, measured):
        """A known negative's (entry loss, dl/dz): ASL's negative term alone (its positive term
        is not needed here), or BCE's before the rates are measured."""
        if not self._focused:
            return softplus, p
        entry, derivative = _focused_negative(
            p, softplus, self.negative_focusing, self.negative_margin
        )
        if measured is not None:
            entry = softplus + measured * (entry - softplus)
            derivative = p + measured * (derivative - p)
        return entry, derivative

    def entries(self, y_true, logits, unknown=None):
        # With softplus(-z) = softplus(z) - z the entry loss is a softplus(z) - b z, where
        # (a, b) = (w_c, w_c) for a positive, lambda (1, u_c) for an unknown entry (a negative
        # below): one softplus, coefficients selected from the label masks; its derivative is
        # a sigmoid(z) - b.
        weight, target, positive_weight, measured = self._coefficients(unknown)
        positive, negative = _masks(y_true)
        a = ops.where(positive, positive_weight, weight)
        b = ops.where(positive, positive_weight, target)
        softplus = ops.softplus(logits)  # = -log(1 - p): shared by every term
        p = ops.sigmoid(logits)
        entry, derivative = a * softplus - b * logits, a * p - b
        negative_entry, negative_derivative = self._negative(p, softplus, measured)
        entry = ops.where(negative, negative_entry, entry)
        derivative = ops.where(negative, negative_derivative, derivative)
        return entry, derivative

    def sums_and_derivative(self, y_true, logits, weight, unknown, known):
        """The dense form (`entries`) where many labels are known; else the unknown term over
        [B, C] and the known labels gathered.

        At partial-label densities (Open Images: 8 of 9,600 classes per image) the known labels'
        terms, the focusing above all, cost a dense pass each for a few entries; gathered, the
        [B, C] passes are those of the unknown term, lambda (softplus(z) - u_c z), and of its
        derivative. Past `GATHER_KNOWN_SHARE` of known entries the gather costs more than it saves.
        """
        if weight is not None and len(weight.shape) != 2:  # a scalar: [1, 1]
            weight = ops.reshape(weight, (-1, 1))
        size = ops.cast(ops.size(logits), "float32")
        many_known = ops.sum(ops.cast(known, "float32")) > GATHER_KNOWN_SHARE * size
        return ops.cond(
            many_known,
            lambda: super(StatisticsWeightedLoss, self).sums_and_derivative(
                y_true, logits, weight, unknown, known
            ),
            lambda: self._gathered_sums_and_derivative(y_true, logits, weight, unknown, known),
        )

    def _gathered_sums_and_derivative(self, y_true, logits, weight, unknown, known):
        lam, target, positive_weight, measured = self._coefficients(unknown)
        num_classes = logits.shape[-1]
        per_class = weight is not None and weight.shape[0] == 1
        if per_class:  # folded into the class coefficients: no pass over [B, C] for it
            lam, target = lam * weight, target * weight
        softplus = ops.softplus(logits)
        entry = lam * softplus - target * logits
        derivative = lam * ops.sigmoid(logits) - target
        if weight is not None and not per_class:
            entry, derivative = entry * weight, derivative * weight
        # The known entries, flat indices (B x C < 2^31: int32).
        rows, columns = ops.nonzero(known)
        index = rows * num_classes + columns
        z = ops.take(ops.reshape(logits, (-1,)), index)
        softplus_known = ops.take(ops.reshape(softplus, (-1,)), index)
        p = ops.sigmoid(z)
        positive = ops.take(ops.reshape(y_true, (-1,)), index) > ops.zeros((), y_true.dtype)
        class_weight = ops.take(ops.reshape(positive_weight, (-1,)), columns)  # w_c: [1, C]
        negative_entry, negative_derivative = self._negative(p, softplus_known, measured)
        known_entry = ops.where(positive, class_weight * (softplus_known - z), negative_entry)
        known_derivative = ops.where(positive, class_weight * (p - 1.0), negative_derivative)
        if weight is not None:
            entry_weight = _gather_weight(weight, rows, columns, index)
            known_entry, known_derivative = (
                known_entry * entry_weight,
                known_derivative * entry_weight,
            )
        unknown_sum = ops.sum(entry) - ops.sum(ops.take(ops.reshape(entry, (-1,)), index))
        derivative = ops.scatter_update(
            ops.reshape(derivative, (-1,)), ops.expand_dims(index, -1), known_derivative
        )
        return (
            ops.stack([ops.sum(known_entry), unknown_sum]),
            ops.reshape(derivative, ops.shape(logits)),
        )

    def get_config(self):
        return {
            **super().get_config(),
            "priors": self.priors,
            "unknown_priors": self.unknown_priors,
            "balance": self.balance,
            "unknown_weight": self.unknown_weight,
            "max_positive_weight": self.max_positive_weight,
            "negative_focusing": self.negative_focusing,
            "negative_margin": self.negative_margin,
        }


def _gather_weight(weight, rows, columns, index):
    """A [1, 1], [1, C], [B, 1] or [B, C] weight at the entries (rows, columns) = flat `index`."""
    flat = ops.reshape(weight, (-1,))
    by_row, by_column = weight.shape[0] != 1, weight.shape[1] != 1
    if by_row and by_column:
        return ops.take(flat, index)
    if by_row:
        return ops.take(flat, rows)
    if by_column:
        return ops.take(flat, columns)
    return ops.reshape(weight, ())


def _check_unknown(unknown):
    if unknown not in ("negative", "ignore"):
        raise ValueError(f"unknown must be 'negative' or 'ignore', got {unknown!r}")
    return unknown


def _unknown_as_negative(y_true, unknown):
    """Negatives, plus unknown entries when `unknown == "negative"`."""
    positive, negative = _split(y_true)
    if unknown == "negative":
        negative = 1.0 - positive
    return positive, negative


def _focus(x, gamma):
    """x ** gamma with finite gradients at x = 0 (x ** 0 would give 0 * inf there)."""
    if gamma == 0:
        return ops.ones_like(x)
    if gamma == int(gamma) and gamma <= 4:  # products: a power is an exp and a log per entry
        result = x
        for _ in range(int(gamma) - 1):
            result = result * x
        return result
    return ops.power(ops.maximum(x, 1e-12), gamma)


def _focused_negative(p, softplus, gamma, margin):
    """ASL's negative entry loss p_m^gamma (-log(1 - p_m)), p_m = max(p - m, 0), and its
    derivative in the logit z, given p = sigmoid(z) and softplus(z) = -log(1 - p) (reused where
    m = 0):

        d/dz = [p > m] p (1 - p) (gamma p_m^(gamma - 1) (-log(1 - p_m)) + p_m^gamma / (1 - p_m))
    """
    shifted, log_term, ratio = p, softplus, 1.0  # ratio = (1 - p) / (1 - p_m)
    if margin > 0:
        shifted = ops.relu(p - margin)  # 1 - shifted >= margin, so the log is finite
        log_term = -ops.log(1.0 - shifted)
        ratio = (1.0 - p) / (1.0 - shifted)
    focus = _focus(shifted, gamma)
    derivative = focus * ratio
    if gamma:
        derivative = derivative + gamma * _focus(shifted, gamma - 1) * log_term * (1.0 - p)
    derivative = p * derivative
    if margin > 0 and gamma < 1:  # else p_m^(gamma - 1) p_m = 0 already holds below the margin
        derivative = ops.where(shifted > 0, derivative, 0.0)
    return focus * log_term, derivative


def _log_sigmoid_pair(logits):
    """(-log p, -log(1 - p)) with p = sigmoid(logits), stable for any logit."""
    return ops.softplus(-logits), ops.softplus(logits)


@keras.saving.register_keras_serializable(package="kpartial")
class WeakAssumeNegativeBCE(PartialLabelLoss):
    """Weak assume-negative BCE (WAN): unknown entries are negatives with a small weight gamma.

    Cole et al., CVPR 2021, "Multi-label learning from single positive labels".

        l_ic = [y=+1] softplus(-z) + [y=-1] softplus(z) + gamma [y=0] softplus(z)
        k_ic = [y != 0] + gamma [y = 0]

    Args:
      unknown_weight: gamma; None = 1 / (C - 1), the paper's choice.
      name: loss name.
    """

    def __init__(self, unknown_weight=None, name="weak_assume_negative_bce"):
        super().__init__(name=name)
        if unknown_weight is not None and unknown_weight < 0:
            raise ValueError(f"unknown_weight must be >= 0, got {unknown_weight}")
        self.unknown_weight = None if unknown_weight is None else float(unknown_weight)

    def entry_losses(self, y_true, logits):
        positive, negative = _split(y_true)
        unknown = 1.0 - positive - negative
        gamma = self.unknown_weight
        if gamma is None:
            gamma = 1.0 / max(logits.shape[-1] - 1, 1)
        loss_pos, loss_neg = _log_sigmoid_pair(logits)
        losses = positive * loss_pos + (negative + gamma * unknown) * loss_neg
        return losses, positive + negative + gamma * unknown

    def get_config(self):
        return {**super().get_config(), "unknown_weight": self.unknown_weight}


@keras.saving.register_keras_serializable(package="kpartial")
class AssumeNegativeLabelSmoothing(PartialLabelLoss):
    """Assume-negative BCE with label smoothing (AN-LS; Cole et al., CVPR 2021).

    Unknown entries are negatives; positives' targets become 1 - epsilon and negatives' epsilon,
    as in the authors' code (`ls_coef`, 0.1 in their experiments):

        t_ic = (1 - epsilon) [y=+1] + epsilon [y != +1]
        l_ic = t_ic softplus(-z) + (1 - t_ic) softplus(z),   k_ic = 1

    Args:
      smoothing: epsilon in [0, 1).
      name: loss name.
    """

    def __init__(self, smoothing=0.1, name="assume_negative_label_smoothing"):
        super().__init__(name=name)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)

    def entry_losses(self, y_true, logits):
        positive, _ = _split(y_true)
        target = (1.0 - 2.0 * self.smoothing) * positive + self.smoothing
        loss_pos, loss_neg = _log_sigmoid_pair(logits)
        losses = target * loss_pos + (1.0 - target) * loss_neg
        return losses, ops.ones_like(losses)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


@keras.saving.register_keras_serializable(package="kpartial")
class ExpectedPositiveRegularization(PartialLabelLoss):
    """Expected positive regularisation (EPR; Cole et al., CVPR 2021).

    BCE on known labels plus a penalty on the distance between the batch's mean expected number
    of positives per example and k, here taken from the class statistics (k = sum_c pi_c) instead
    of a hard-coded number. As in the authors' code, the batch mean is squared (not each
    example's distance):

        L = sum_ic [y != 0] BCE_ic / max(1, sum_ic [y != 0])
            + lambda ((mean_i sum_c s_ic p_ic) - k) ** 2 / C ** 2

    (Cole et al. use positives only; with partial labels the known negatives are used too.)

    Args:
      priors: C class priors; k is their sum.
      regularisation_weight: lambda.
      name: loss name.
    """

    uses_priors = True

    def __init__(self, priors, regularisation_weight=1.0, name="expected_positive_regularization"):
        super().__init__(name=name)
        self.priors = _check_priors(priors).tolist()
        self.regularisation_weight = float(regularisation_weight)

    def entry_losses(self, y_true, logits):
        positive, negative = _split(y_true)
        loss_pos, loss_neg = _log_sigmoid_pair(logits)
        return positive * loss_pos + negative * loss_neg, positive + negative

    def batch_statistics(self, y_true, logits, weight):
        probabilities = ops.sigmoid(logits)
        expected = probabilities if weight is None else probabilities * weight
        return ops.sum(expected, axis=-1, keepdims=True)  # [B, 1]

    def batch_term(self, means):
        num_classes = float(len(self.priors))
        return self.regularisation_weight * (means[0] - sum(self.priors)) ** 2 / num_classes**2

    def get_config(self):
        return {
            **super().get_config(),
            "priors": self.priors,
            "regularisation_weight": self.regularisation_weight,
        }


@keras.saving.register_keras_serializable(package="kpartial")
class FocalLoss(PartialLabelLoss):
    """Binary focal loss (Lin et al., ICCV 2017) on partial labels.

        l_ic = [y=+1] (1 - p)^gamma softplus(-z) + [neg] p^gamma softplus(z),   p = sigmoid(z)

    "neg" is y = -1, or y != +1 when `unknown="negative"`; k counts the entries the loss uses.

    Args:
      gamma: focusing exponent >= 0.
      unknown: "negative" (unknown entries are negatives) or "ignore" (masked).
      name: loss name.
    """

    def __init__(self, gamma=2.0, unknown="negative", name="focal_loss"):
        super().__init__(name=name)
        _check_unknown(unknown)
        self.gamma, self.unknown = float(gamma), unknown

    def entry_losses(self, y_true, logits):
        positive, negative = _unknown_as_negative(y_true, self.unknown)
        p = ops.sigmoid(logits)
        loss_pos, loss_neg = _log_sigmoid_pair(logits)
        losses = (
            positive * _focus(1.0 - p, self.gamma) * loss_pos
            + negative * _focus(p, self.gamma) * loss_neg
        )
        return losses, positive + negative

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "unknown": self.unknown}


def _asymmetric_terms(logits, gamma_positive, gamma_negative, margin):
    """ASL's (positive, negative) entry losses: focal positives, shifted-probability negatives."""
    p = ops.sigmoid(logits)
    loss_pos, loss_neg = _log_sigmoid_pair(logits)
    positive = _focus(1.0 - p, gamma_positive) * loss_pos
    if margin > 0:
        shifted = ops.relu(p - margin)  # 1 - shifted >= margin, so the log is finite
        negative = _focus(shifted, gamma_negative) * -ops.log(1.0 - shifted)
    else:
        negative = _focus(p, gamma_negative) * loss_neg
    return positive, negative


@keras.saving.register_keras_serializable(package="kpartial")
class AsymmetricLoss(PartialLabelLoss):
    """Asymmetric loss (ASL; Ridnik et al., ICCV 2021).

        p_m  = max(p - m, 0)
        l_ic = [y=+1] (1 - p)^gamma+ (-log p) + [neg] p_m^gamma- (-log(1 - p_m))

    "neg" is y = -1, or y != +1 when `unknown="negative"` (the paper's setting).

    Args:
      gamma_positive: gamma+ (paper: 0).
      gamma_negative: gamma- (paper: 4).
      margin: probability margin m of the negatives (paper: 0.05).
      unknown: "negative" or "ignore".
      name: loss name.
    """

    def __init__(
        self,
        gamma_positive=0.0,
        gamma_negative=4.0,
        margin=0.05,
        unknown="negative",
        name="asymmetric_loss",
    ):
        super().__init__(name=name)
        _check_unknown(unknown)
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {margin}")
        self.gamma_positive, self.gamma_negative = float(gamma_positive), float(gamma_negative)
        self.margin, self.unknown = float(margin), unknown

    def entry_losses(self, y_true, logits):
        positive, negative = _unknown_as_negative(y_true, self.unknown)
        loss_pos, loss_neg = _asymmetric_terms(
            logits, self.gamma_positive, self.gamma_negative, self.margin
        )
        return positive * loss_pos + negative * loss_neg, positive + negative

    def get_config(self):
        return {
            **super().get_config(),
            "gamma_positive": self.gamma_positive,
            "gamma_negative": self.gamma_negative,
            "margin": self.margin,
            "unknown": self.unknown,
        }


@keras.saving.register_keras_serializable(package="kpartial")
class PartialSelectiveAsymmetricLoss(PartialLabelLoss):
    """Partial / class-aware selective asymmetric loss (P-ASL, CSL).

    Ben-Baruch et al., CVPR 2022, "Multi-label classification with partial annotations using
    class-aware selective loss". Separate terms for positives, annotated negatives and
    unannotated entries. An unannotated entry is ignored when its class is likely present: the
    class prior is above `prior_threshold`, or the entry is among the `likelihood_top_k x B`
    highest-scoring unannotated entries of the batch (as the authors' code ranks them: over the
    whole batch, annotated entries excluded). The other unannotated entries are negatives with
    their own, stronger focusing:

        l_ic = [y=+1] (1-p)^g+ (-log p) + [y=-1] p^g- (-log(1-p))
             + [y=0] (1 - ignore_ic) p^gu (-log(1-p))
        k_ic = [y != 0] + [y = 0] (1 - ignore_ic)

    The authors' code sums the entry losses; like every loss here this one divides the sum by the
    counted entries (with Adam only a change of scale).

    Args:
      priors: C class priors (from `kpartial.class_stats`).
      gamma_positive, gamma_negative, gamma_unannotated: g+, g-, gu (paper: 0, 1, 4).
      prior_threshold: classes with prior > this keep their unannotated entries out of the loss.
      likelihood_top_k: k; the k x B highest-scoring unannotated entries of a batch of B are
        ignored (0 = off).
      name: loss name.
    """

    uses_priors = True
    selects_across_batch = True

    def __init__(
        self,
        priors,
        gamma_positive=0.0,
        gamma_negative=1.0,
        gamma_unannotated=4.0,
        prior_threshold=0.05,
        likelihood_top_k=5,
        name="partial_selective_asymmetric_loss",
    ):
        super().__init__(name=name)
        self.priors = _check_priors(priors).tolist()
        self.gamma_positive = float(gamma_positive)
        self.gamma_negative = float(gamma_negative)
        self.gamma_unannotated = float(gamma_unannotated)
        self.prior_threshold = float(prior_threshold)
        self.likelihood_top_k = int(likelihood_top_k)

    def entry_losses(self, y_true, logits):
        positive, negative = _split(y_true)
        unknown = 1.0 - positive - negative
        p = ops.sigmoid(logits)
        loss_pos, loss_neg = _log_sigmoid_pair(logits)
        likely = np.asarray(self.priors)[None, :] > self.prior_threshold
        ignore = ops.cast(ops.convert_to_tensor(likely), "float32") * ops.ones_like(p)
        batch, num_classes = logits.shape
        k = min(self.likelihood_top_k * batch, batch * num_classes)
        if k > 0:
            # The k highest-scoring unannotated entries of the whole batch (exactly k, as a sort
            # would pick them; annotated entries rank last and are never picked).
            scores = ops.where(ops.equal(unknown, 1.0), ops.stop_gradient(p), -1.0)
            values, index = ops.top_k(ops.reshape(scores, (-1,)), k)
            picked = ops.cast(ops.greater(values, -1.0), "float32")
            top = ops.scatter(ops.expand_dims(index, -1), picked, (batch * num_classes,))
            ignore = ops.maximum(ignore, ops.reshape(top, (batch, num_classes)))
        ignore = ops.stop_gradient(ignore)
        losses = (
            positive * _focus(1.0 - p, self.gamma_positive) * loss_pos
            + negative * _focus(p, self.gamma_negative) * loss_neg
            + unknown * (1.0 - ignore) * _focus(p, self.gamma_unannotated) * loss_neg
        )
        return losses, positive + negative + unknown * (1.0 - ignore)

    def get_config(self):
        return {
            **super().get_config(),
            "priors": self.priors,
            "gamma_positive": self.gamma_positive,
            "gamma_negative": self.gamma_negative,
            "gamma_unannotated": self.gamma_unannotated,
            "prior_threshold": self.prior_threshold,
            "likelihood_top_k": self.likelihood_top_k,
        }


@keras.saving.register_keras_serializable(package="kpartial")
class HillLoss(PartialLabelLoss):
    """Hill loss: focal-margin positives and a hill-shaped negative term.

    Zhang et al., 2021, "Simple and robust loss design for multi-label learning with missing
    labels". The negative term down-weights confident negatives, which are likely missing
    positives. Unknown entries are negatives.

        p_m  = sigmoid(z - m)
        l_ic = [y=+1] (1 - p_m)^gamma (-log p_m) + [y != +1] (lambda - p) p^2

    Args:
      margin: m (paper: 1).
      gamma: focusing exponent of the positives (paper: 2).
      hill_lambda: lambda (paper: 1.5).
      name: loss name.
    """

    def __init__(self, margin=1.0, gamma=2.0, hill_lambda=1.5, name="hill_loss"):
        super().__init__(name=name)
        self.margin, self.gamma, self.hill_lambda = float(margin), float(gamma), float(hill_lambda)

    def entry_losses(self, y_true, logits):
        positive, _ = _split(y_true)
        p = ops.sigmoid(logits)
        p_margin = ops.sigmoid(logits - self.margin)
        loss_pos = _focus(1.0 - p_margin, self.gamma) * ops.softplus(-(logits - self.margin))
        loss_neg = (self.hill_lambda - p) * p**2
        losses = positive * loss_pos + (1.0 - positive) * loss_neg
        return losses, ops.ones_like(losses)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "gamma": self.gamma,
            "hill_lambda": self.hill_lambda,
        }


class _EpochAware:
    """Mixin for losses whose behaviour follows the training epoch.

    `epoch` is a non-trainable int32 variable, set at the start of every epoch by
    `kpartial.partial_model.EpochClock` and tracked (so checkpointed) by `PartialLabelModel`;
    compiled steps read the new value without retracing.
    """

    def _create_epoch(self):
        self.epoch = keras.Variable(0, dtype="int32", trainable=False, name=f"{self.name}_epoch")

    def _epoch(self):
        return ops.cast(ops.convert_to_tensor(self.epoch), "float32")


def _kth_largest_bits(values, k):
    """int32 bit pattern of the k-th largest (1 <= k <= size) of the 1-D float32 `values`.

    For non-negative floats (here softplus values, and zeros) the bit pattern read as int32 is
    ordered like the value, so the k-th largest is the largest pattern t with count(bits >= t)
    >= k. It is built from the top bit down (bit 31 is the sign, always 0): 31 counting passes
    over the values, static and unrolled, so it compiles under XLA; it returns exactly the value
    a full sort would put at position k (ties included), for any k.

    The passes replace a sort because k is large (up to `max_rate` of all entries, with a static
    bound for XLA): TensorFlow's CPU `top_k` sorts for a k that large, so neither it nor a full
    sort beats 31 linear passes over the values (timings: benchmarks/README.md, "Loss step
    time").
    """
    bits = ops.view(values, "int32")
    found = ops.convert_to_tensor(0, "int32")
    for bit in range(30, -1, -1):
        candidate = found + (1 << bit)
        enough = ops.sum(ops.cast(ops.greater_equal(bits, candidate), "int32")) >= k
        found = ops.where(enough, candidate, found)
    return found


LARGE_LOSS_MODES = {"ll_r": "reject", "ll_ct": "temporary", "ll_cp": "permanent"}


@keras.saving.register_keras_serializable(package="kpartial")
class LargeLossModification(PartialLabelLoss, _EpochAware):
    """Large-loss modification (LL-R, LL-Ct, LL-Cp).

    Kim et al., CVPR 2022, "Large loss matters in weakly supervised multi-label classification".
    Unknown entries are negatives (assume-negative BCE), except that in every batch the unknown
    entries with the largest loss, a share rho(t) = min(t * delta_rel, max_rate) of all entries at
    epoch t (so none in the first epoch), are treated as likely missing positives:

        select_ic = [y=0] [l_ic >= the k-th largest unknown-entry loss],  k = ceil(rho(t) B C)
        reject    (LL-R):  l_ic = 0 for selected entries
        temporary (LL-Ct): l_ic = softplus(-z) for selected entries (read as positives)
        permanent (LL-Cp): as LL-Ct, and `PartialLabelModel` writes +1 into its pseudo-label
                           variable for them, so the correction persists in later epochs (and in
                           checkpoints) instead of being recomputed.
        k_ic = 1 (mean over all entries, as assume-negative)

    k is exact: the authors' code takes the entries above the k-th largest loss of a sort and is
    off by one when rho(t) B C is a whole number; with the same k the two agree entry for entry.

    Args:
      mode: "reject", "temporary" or "permanent".
      delta_rel: growth of the selected share per epoch (paper: 0.002 on COCO-style data).
      max_rate: cap on the share.
      name: loss name.
    """

    selects_across_batch = True

    def __init__(self, mode="reject", delta_rel=0.002, max_rate=0.2, name=None):
        if mode not in LARGE_LOSS_MODES.values():
            raise ValueError(
                f"mode must be one of {sorted(LARGE_LOSS_MODES.values())}, got {mode!r}"
            )
        super().__init__(name=name or f"large_loss_{mode}")
        self.mode, self.delta_rel, self.max_rate = mode, float(delta_rel), float(max_rate)
        self._create_epoch()

    def selection(self, y_true, logits):
        """[B, C] float mask of the unknown entries this batch treats as missing positives."""
        positive, negative = _split(ops.cast(y_true, "float32"))
        unknown = 1.0 - positive - negative
        # float32 like the loss itself, so low-precision logits (mixed precision) work here too.
        unknown_loss = ops.stop_gradient(ops.softplus(ops.cast(logits, "float32"))) * unknown
        flat = ops.reshape(unknown_loss, (-1,))
        size = int(flat.shape[0])
        rate = ops.minimum(self._epoch() * self.delta_rel, self.max_rate)
        k = ops.cast(ops.ceil(rate * size), "int32")
        # threshold = the k-th largest of all B*C values (known entries count as 0) for k > 0,
        # else +inf; ties with it are selected too. Found bit by bit instead of by sorting.
        threshold_bits = _kth_largest_bits(flat, ops.clip(k, 1, size))
        above = ops.greater_equal(ops.view(unknown_loss, "int32"), threshold_bits)
        return unknown * ops.cast(ops.logical_and(above, k > 0), "float32")

    def entry_losses(self, y_true, logits):
        positive, _ = _split(y_true)
        loss_pos, loss_neg = _log_sigmoid_pair(logits)
        select = self.selection(y_true, logits)
        as_negative = (1.0 - positive) * (1.0 - select) * loss_neg
        if self.mode == "reject":
            losses = positive * loss_pos + as_negative
        else:
            losses = (positive + select) * loss_pos + as_negative
        return losses, ops.ones_like(losses)

    @property
    def needs_example_state(self):
        return self.mode == "permanent"

    def permanent_corrections(self, y_true, logits):
        """Entries to set to +1 for good (LL-Cp only), else None."""
        return self.selection(y_true, logits) if self.mode == "permanent" else None

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "delta_rel": self.delta_rel,
            "max_rate": self.max_rate,
        }


@keras.saving.register_keras_serializable(package="kpartial")
class SelfPacedLossCorrection(PartialLabelLoss, _EpochAware):
    """Self-paced loss correction (SPLC).

    Zhang et al., 2021, "Simple and robust loss design for multi-label learning with missing
    labels". Focal-margin positives and focal negatives; from epoch `warmup_epochs` on, an
    unknown entry the network scores above tau is read as a missing positive (its loss becomes
    the positive term):

        l+ = (1 - sigmoid(z - m))^gamma softplus(-(z - m)),   l- = p^gamma softplus(z)
        l_ic = [y=+1] l+ + [y=-1] l- + [y=0] (c_ic l+ + (1 - c_ic) l-)
        c_ic = [p_ic > tau] [epoch >= warmup_epochs],   k_ic = 1

    This follows the paper's formula: a corrected entry gets the focal-margin positive term l+.
    The authors' code applies the focal margin to the original positives only (a corrected entry
    gets plain BCE towards 1 there); we keep the paper's form.

    Args:
      tau: correction threshold on the probability (paper: 0.6).
      margin: m (paper: 1).
      gamma: focusing exponent (paper: 2).
      warmup_epochs: epochs before corrections start (paper: 1).
      name: loss name.
    """

    def __init__(self, tau=0.6, margin=1.0, gamma=2.0, warmup_epochs=1, name="splc"):
        super().__init__(name=name)
        self.tau, self.margin, self.gamma = float(tau), float(margin), float(gamma)
        self.warmup_epochs = int(warmup_epochs)
        self._create_epoch()

    def entry_losses(self, y_true, logits):
        positive, negative = _split(y_true)
        unknown = 1.0 - positive - negative
        p = ops.sigmoid(logits)
        shifted = logits - self.margin
        loss_pos = _focus(1.0 - ops.sigmoid(shifted), self.gamma) * ops.softplus(-shifted)
        loss_neg = _focus(p, self.gamma) * ops.softplus(logits)
        warm = ops.cast(self._epoch() >= self.warmup_epochs, "float32")
        corrected = ops.stop_gradient(ops.cast(ops.greater(p, self.tau), "float32")) * warm
        losses = (
            positive * loss_pos
            + negative * loss_neg
            + unknown * (corrected * loss_pos + (1.0 - corrected) * loss_neg)
        )
        return losses, ops.ones_like(losses)

    def get_config(self):
        return {
            **super().get_config(),
            "tau": self.tau,
            "margin": self.margin,
            "gamma": self.gamma,
            "warmup_epochs": self.warmup_epochs,
        }


def ignore_unknown_bce(y_true, y_pred):
    """`IgnoreUnknownBCE` as a function of (labels, logits)."""
    return IgnoreUnknownBCE()(y_true, y_pred)


def assume_negative_bce(y_true, y_pred):
    """`AssumeNegativeBCE` as a function of (labels, logits)."""
    return AssumeNegativeBCE()(y_true, y_pred)


def statistics_weighted_loss(y_true, y_pred, priors, **kwargs):
    """`StatisticsWeightedLoss(priors, **kwargs)` as a function of (labels, logits)."""
    return StatisticsWeightedLoss(priors, **kwargs)(y_true, y_pred)


# --method name -> loss constructor. The three LL modes are partials (not lambdas), so that
# `inspect.signature` shows their options, which `get` checks.
LOSSES = {
    "kpartial": StatisticsWeightedLoss,
    "ignore": IgnoreUnknownBCE,
    "assume_negative": AssumeNegativeBCE,
    "wan": WeakAssumeNegativeBCE,
    "an_ls": AssumeNegativeLabelSmoothing,
    "epr": ExpectedPositiveRegularization,
    "focal": FocalLoss,
    "asl": AsymmetricLoss,
    "p_asl": PartialSelectiveAsymmetricLoss,
    "hill": HillLoss,
    "splc": SelfPacedLossCorrection,
    **{
        name: functools.partial(LargeLossModification, mode)
        for name, mode in LARGE_LOSS_MODES.items()
    },
}


def option_names(name):
    """The option names `get(name, ...)` accepts: the constructor's arguments but the priors."""
    parameters = inspect.signature(LOSSES[name]).parameters
    return sorted(p for p in parameters if p not in ("priors", "unknown_priors"))


# kpartial's known-negative focusing when every training entry is annotated: ASL's published
# gamma- (see `kpartial.class_stats`).
COMPLETE_LABELS_NEGATIVE_FOCUSING = 4.0


def get(name, /, class_statistics=None, **options):
    """Returns the loss registered as `name` (a key of `LOSSES`) with `options` as its options.

    Losses that use class priors (`uses_priors`: `kpartial`, `epr`, `p_asl`) take them from
    `class_statistics`; they are never an option. kpartial's `negative_focusing`, when not given,
    is `COMPLETE_LABELS_NEGATIVE_FOCUSING` for complete labels (`class_statistics.complete`).

    Args:
      name: the loss's `--method` name; positional-only, so `name=...` among the options names
        the loss object.
      class_statistics: a `kpartial.class_stats.ClassStatistics`; needed by the losses that use
        class priors, and their unknown-entry rates where the annotation depends on the class.
      **options: the loss's constructor arguments (see `option_names`).

    Returns:
      The loss object.

    Raises:
      ValueError: for an unknown name, an option the loss does not have, or missing statistics.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    accepted = option_names(name)
    bad = sorted(set(options) - set(accepted))
    if bad:
        raise ValueError(
            f"loss {name!r} has no option{'s' if len(bad) > 1 else ''} "
            f"{', '.join(map(repr, bad))}; options: {', '.join(accepted)}"
        )
    constructor = LOSSES[name]
    loss_class = getattr(constructor, "func", constructor)  # the class behind an LL partial
    if not loss_class.uses_priors:
        return constructor(**options)
    if class_statistics is None:
        raise ValueError(f"loss {name!r} needs class statistics for its priors")
    if class_statistics.depends_on_class and (
        "unknown_priors" in inspect.signature(loss_class).parameters
    ):
        options["unknown_priors"] = class_statistics.unknown_priors
    if loss_class is StatisticsWeightedLoss and class_statistics.complete:
        options.setdefault("negative_focusing", COMPLETE_LABELS_NEGATIVE_FOCUSING)
    return constructor(class_statistics.priors, **options)
