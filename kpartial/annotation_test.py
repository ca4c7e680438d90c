"""Testing, on the run's validation split, whether labels went missing at random within classes.

kpartial's unknown term and pseudo-label quota need the unknown entries' positive rate u_c, and
it depends on why a label is unknown (`kpartial.class_stats`). Where each class kept its entries
at random (assays screened on different libraries), u_c is the class prior. Where people verified
the classes a detector proposed (Open Images), the verified entries are the likely positives and
hard negatives, and u_c is far below the prior. The counts cannot tell the two apart: both spread
the classes' annotated shares. Held-out examples can. Within a class, labels missing at random
make the known and the unknown entries of the validation split exchangeable, so ANY network that
never trained on them scores both alike; verification picks entries by a score that knows the
label, so the network's scores rank the known entries above the unknown ones.

The test is van Elteren's stratified Wilcoxon-Mann-Whitney test of the validation split's known
against its unknown entries' logits, with the classes as strata. Per class c, with n1 known and
n2 unknown entries and U_c the count of (known, unknown) pairs the known entry outranks (ties
count one half),

    z = sum_c w_c (U_c - n1 n2 / 2) / sqrt(sum_c w_c^2 n1 n2 (n1 + n2 + 1) / 12),
    w_c = 1 / (n1 + n2 + 1)

is about N(0, 1) under labels missing at random within each class (the variance ignores ties,
which only makes z smaller). Known entries scoring higher (z > Z_CRITICAL, one-sided p < 0.001)
read as labels missing for a reason: u_c = (n+_c + 1) / (N + 2), the class's known positives over
all examples, a lower bound (`class_stats`, "verified"). Otherwise u_c = the priors. The pooled
AUC, sum_c U_c / sum_c n1 n2, says how far apart the two are (0.5: exchangeable).

The network is the run's own at the first pseudo-label refresh (`unknown_rates.measure_epoch`):
until then the run trains with the count rule's rates, and the test then keeps or replaces them
(`PartialLabelModel.set_unknown_rates`: variables the compiled step reads, checkpointed), and the
pseudo labels follow the reading (none where the labels are missing for a reason). The logits are
binned (`unknown_rates.BINS` bins of the logit scale), over at most `TESTED_EXAMPLES` validation
examples. A run without a validation split keeps the count rule and says so.
"""

import keras
import numpy as np

from kpartial import (
    class_stats,
    distribution,
    evaluation,
    pipeline,
    run_inputs,
    unknown_rates,
)
from kpartial.partial_model import network_of
from kpartial.pseudo_label_rules import LOWEST_LOGIT

# One-sided 0.001 quantile of N(0, 1): a conventional level, strict because the null (labels
# missing at random within classes) is the reading the test overturns.
Z_CRITICAL = 3.09
# Validation examples scored at most (the first ones): the test needs no more.
TESTED_EXAMPLES = 16384


def switched_on(config, stats):
    """Whether the run tests how its labels went missing: `missing_labels=tested` (the
    default) where `unknown_rates.sets_its_own_rates`."""
    return config.data.missing_labels == "tested" and unknown_rates.sets_its_own_rates(
        config, stats
    )


def exchangeability(known_histograms, unknown_histograms):
    """(z, pooled AUC) of the module docstring's test from binned logits.

    Args:
      known_histograms: int [C, BINS] the known entries' logits per class, binned.
      unknown_histograms: int [C, BINS] the unknown entries', on the same bins.

    Returns:
      (z, AUC); (0.0, 0.5) when no class has both known and unknown entries.
    """
    known = np.asarray(known_histograms, np.float64)
    unknown = np.asarray(unknown_histograms, np.float64)
    n1, n2 = known.sum(axis=1), unknown.sum(axis=1)
    below = np.cumsum(unknown, axis=1) - unknown  # unknown entries in lower bins
    pairs_won = (known * (below + 0.5 * unknown)).sum(axis=1)
    both = (n1 > 0) & (n2 > 0)
    if not both.any():
        return 0.0, 0.5
    n1, n2, pairs_won = n1[both], n2[both], pairs_won[both]
    weight = 1.0 / (n1 + n2 + 1.0)
    variance = (weight**2 * n1 * n2 * (n1 + n2 + 1.0) / 12.0).sum()
    z = float((weight * (pairs_won - n1 * n2 / 2.0)).sum() / np.sqrt(variance))
    return z, float(pairs_won.sum() / (n1 * n2).sum())


def validation_histograms(network, dataset, labels, max_examples=TESTED_EXAMPLES, rows=256):
    """(known, unknown, examples scored): int64 [C, BINS] histograms of the validation split's
    known and unknown entries' logits; `dataset` yields `{"x", "id"}` batches in example order.

    Every entry is binned (float64, `rows` rows at a time, so the pass holds no more than a
    batch's logits) and the known entries, looked up sparsely, are taken out for the unknown
    histograms.
    """
    num_classes = labels.shape[1]
    predict = evaluation.logits_function(network)
    known_entries = pipeline.known_entries_lookup(labels)
    width = (-2.0 * LOWEST_LOGIT) / unknown_rates.BINS
    offsets = np.arange(num_classes)[None, :] * unknown_rates.BINS
    every = np.zeros(num_classes * unknown_rates.BINS, np.int64)
    known = np.zeros_like(every)
    seen = 0
    for batch in dataset:
        if seen >= max_examples:
            break
        logits = predict(batch)[: max_examples - seen]
        entries = known_entries(batch["id"][: len(logits)]).numpy()
        index = np.empty(logits.shape, np.int32)
        for start in range(0, len(logits), rows):
            chunk = np.asarray(logits[start : start + rows], np.float64)
            bins = np.clip(np.floor((chunk - LOWEST_LOGIT) / width), 0, unknown_rates.BINS - 1)
            index[start : start + rows] = bins.astype(np.int32) + offsets
        every += np.bincount(index.ravel(), minlength=every.size)
        known += np.bincount(index[entries[:, 0], entries[:, 1]], minlength=known.size)
        seen += len(logits)
    shape = (num_classes, unknown_rates.BINS)
    return known.reshape(shape), (every - known).reshape(shape), seen


def reading_rates(stats, num_examples, at_random):
    """float64 [C] u_c of a reading: the priors, or the known positives over all examples."""
    if at_random:
        return np.asarray(stats.priors, np.float64)
    rates, _ = class_stats.unknown_priors(
        stats.positives, stats.negatives, stats.priors, num_examples, "verified"
    )
    return rates


def reads_for_a_reason(model, stats):
    """Whether the model's unknown rates are a lower bound (not the priors): the reading the
    count rule or the test left in it."""
    priors = np.asarray(stats.priors, np.float32)
    return not np.allclose(model.unknown_rates.numpy(), priors, rtol=1e-6, atol=0.0)


class AnnotationTestCallback(keras.callbacks.Callback):
    """Starts the run on the count rule's rates and tests them before epoch `epoch`.

    Args:
      validation: (dataset, known labels) of the held-out examples.
      stats: the training labels' `ClassStatistics` (the count rule's rates and the priors).
      num_examples: N, the training examples the counts come from.
      epoch: the epoch before which the test runs (0-based); a run resumed after it keeps the
        rates its checkpoint holds.
      log: prints one line.
    """

    def __init__(self, validation, stats, num_examples, epoch, log=print):
        super().__init__()
        self.validation, self.stats = validation, stats
        self.num_examples, self.epoch, self.log = int(num_examples), int(epoch), log
        self.figures = {}

    def on_train_begin(self, logs=None):
        if not self.model.unknown_rates_measured:  # a fresh run: the count rule's rates
            self.model.set_unknown_rates(self.stats.unknown_priors)

    def test(self):
        """(z, AUC, validation examples scored) of the model's network.

        Every worker holds the whole validation split and the same weights; their figures are
        averaged anyway, so that no rounding difference can split the workers' readings.
        """
        known, unknown, seen = validation_histograms(network_of(self.model), *self.validation)
        strategy = self.model.distribute_strategy
        figures = np.asarray(exchangeability(known, unknown), np.float64)
        workers = distribution.place(strategy).count
        z, auc = distribution.sum_across_workers(figures, strategy) / workers
        return float(z), float(auc), seen

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.epoch:
            return
        z, auc, seen = self.test()
        at_random = z <= Z_CRITICAL
        rates = reading_rates(self.stats, self.num_examples, at_random)
        counted = "for a reason" if self.stats.depends_on_class else "at random"
        self.model.set_unknown_rates(rates)
        self.figures = {"annotation_z": z, "annotation_auc": auc}
        reading = (
            "missing at random in classes, u = the priors"
            if at_random
            else "missing for a reason, u = n+/N"
        )
        self.log(
            f"epoch {epoch + 1}: labels tested on {seen} held-out examples: known vs unknown AUC "
            f"{auc:.3f}, z = {z:.2f} {'<=' if at_random else '>'} {Z_CRITICAL}: {reading} (mean "
            f"u {rates.mean():.3g}; the counts read {counted})"
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and epoch == self.epoch and self.figures:
            logs.update(self.figures)


def callbacks(config, inputs, datasets, log):
    """What the test adds to a run: `[AnnotationTestCallback]`, or nothing."""
    if not switched_on(config, inputs.stats):
        return []
    validation = run_inputs.held_out(inputs, datasets)
    epoch = unknown_rates.measure_epoch(config)
    why_not = ""
    if validation is None:
        why_not = "the run has no validation split"
    elif epoch is None:
        why_not = (
            f"the test (after {config.pseudo.start_epoch} of {config.runtime.epochs} epochs) "
            "falls at or after the last epoch"
        )
    if why_not:
        log(f"labels: not tested, because {why_not}; the count rule's reading stays")
        epoch = config.runtime.epochs  # never: the callback only sets the count rule's rates
    return [AnnotationTestCallback(validation, inputs.stats, inputs.known.shape[0], epoch, log=log)]
