"""Measuring the unknown entries' positive rate u_c during the run, instead of guessing it.

kpartial's unknown term targets u_c and its pseudo-label quota labels u_c of a class's unknown
entries positive. u_c is the prior pi_c only if annotation does not depend on the label: where
people verified the classes a detector proposed (Open Images), the annotated entries are rich in
positives and the unknown ones poor; where assays were screened on different libraries, each
class is annotated on its own share of the examples but at random within it. The counts look the
same in both cases, so they cannot tell u_c. The network can: as in CSL (Ben-Baruch et al.,
2022), a model trained with the unknown entries ignored predicts them, and their mean prediction
estimates the class's rate. Here that model is the run's own first epochs: until the measurement
the loss is masked BCE (`StatisticsWeightedLoss` with w_c = 1, no focusing, lambda = 0), whose
scores are calibrated to the annotated entries, and nothing is trained twice. From the measurement
on, the loss is kpartial's, with the measured rates.

A network trained on the annotated entries predicts the annotated distribution, whose positive
rate is not the unknown entries'. Read as a shift of the class prior between the annotated and the
unknown entries (the annotation depends on the entry through its label), the rate is the fixed
point of Saerens et al.'s EM ("Adjusting the outputs of a classifier to new a priori
probabilities", 2002), per class c over its unknown entries i with logits z_i:

    p_i = sigmoid(z_i - delta)
    q_i = (p_i u / pi_c) / (p_i u / pi_c + (1 - p_i)(1 - u) / (1 - pi_c))
    u  <- min(mean_i q_i, pi_c),   from u = mean_i p_i, until it settles

pi_c is the class prior (the annotated share of positives, `kpartial.class_stats`). delta, one
number, makes the held-out annotated entries' (the validation split's) mean score equal their
share of positives (0 without a validation split): the training entries' own annotations are
memorised, so their scores would not show a miscalibration. The cap at pi_c assumes annotation
never prefers a class's negatives: labels missing at random leave u_c = pi_c (the unknown entries
score like held-out annotated ones), verified candidates leave fewer positives unknown (their
scores are low and the EM lowers u). Where the annotation depends on the entry beyond its label (a
real detector looked at the image), the estimate is a measurement with that bias, not the truth;
benchmarks/README.md compares it with the simulations' true rates.

The pass is a pseudo-label refresh's streaming pass over (a fixed hashed sample of) the training
inputs (`HistogramPass`), holding O(C x NUM_BINS); the model then switches to kpartial's loss with
the rates (`PartialLabelModel.set_unknown_rates`: variables the compiled step reads, checkpointed, so a
resumed run does not measure again).
"""

import keras
import numpy as np

from kpartial import distribution, evaluation, losses, pipeline, run_inputs
from kpartial.label_pruning import epoch_count
from kpartial.pseudo_label_rules import BIN_WIDTH, LOWEST_LOGIT, NUM_BINS, HistogramPass
from kpartial.sparse_labels import as_sparse

# The EM reads a refresh's histogram of the unknown entries' logits (`HistogramPass`) with
# BIN_POOL of its bins pooled into one: BINS bins of the logit scale from -16 to 16.
BIN_POOL = 4
BINS = NUM_BINS // BIN_POOL
# Examples counted at most (a fixed hash of their ids): the means need no more.
MEASURED_EXAMPLES = 16384
EM_STEPS = 200
# Measured rates are kept within [RATE_FLOOR, 1 - RATE_FLOOR].
RATE_FLOOR = 1e-5


def measure_epoch(config):
    """The epoch before which the rates are measured: the first pseudo-label refresh's (a share
    of the epochs, see `kpartial.pseudo_labels`), at least 1; None when it is not before the last
    epoch (the run then trains with masked BCE)."""
    start = config.pseudo.start_epoch
    default = type(config.pseudo)().start_epoch  # a run without pseudo labels keeps the share
    epochs = config.runtime.epochs
    count = epoch_count(start if start >= 0 else default, epochs)
    return count if count < epochs else None


def sets_its_own_rates(config, stats):
    """Whether a run can set its loss's unknown rates itself: a loss that reads them
    (kpartial's), labels with unknown entries, and no statistics CSV (its priors are the
    user's)."""
    constructor = losses.LOSSES.get(config.loss.method)
    loss_class = getattr(constructor, "func", constructor)
    return (
        getattr(loss_class, "reads_unknown_rates", False)
        and not stats.complete
        and not config.data.class_stats
    )


def switched_on(config, stats):
    """Whether the run measures u_c: `missing_labels=measured` where `sets_its_own_rates`."""
    return config.data.missing_labels == "measured" and sets_its_own_rates(config, stats)


def em_rates(unknown_histograms, priors, shift=0.0, steps=EM_STEPS):
    """u_c by the EM of the module docstring.

    Args:
      unknown_histograms: int [C, BINS] the unknown entries' logits, binned (`bin_logits`).
      priors: float [C] pi_c, the annotated entries' positive rate, in (0, 1).
      shift: delta, or float [C] per class, taken off every logit.
      steps: EM steps.

    Returns:
      float64 [C] rates in [RATE_FLOOR, pi_c]; pi_c for a class without unknown entries.
    """
    counts = np.asarray(unknown_histograms, np.float64)
    totals = counts.sum(axis=1)
    shift = np.broadcast_to(np.asarray(shift, np.float64), counts.shape[:1])
    logits = bin_logits()[None, :] - shift[:, None]
    p = 1.0 / (1.0 + np.exp(-logits))
    a = np.clip(np.asarray(priors, np.float64), RATE_FLOOR, 1 - RATE_FLOOR)[:, None]
    weights = counts / np.maximum(totals, 1.0)[:, None]
    u = np.clip((weights * p).sum(axis=1, keepdims=True), RATE_FLOOR, a)
    for _ in range(steps):
        positive = p * u / a
        q = positive / (positive + (1.0 - p) * (1.0 - u) / (1.0 - a))
        u = np.clip((weights * q).sum(axis=1, keepdims=True), RATE_FLOOR, a)
    return np.where(totals > 0, u[:, 0], a[:, 0])


def calibration_shift(scores):
    """delta: the shift that makes the mean of sigmoid(logit(s) - delta) over annotated entries
    equal their share of positives (0 for no entries, or all of one value).

    Args:
      scores: a `SparseScores` of held-out annotated entries.
    """
    labels = np.asarray(scores.labels) > 0
    if labels.all() or not labels.any():
        return 0.0
    clipped = np.clip(np.asarray(scores.scores, np.float64), 1e-7, 1 - 1e-7)
    logits = np.log(clipped / (1 - clipped))
    target = labels.mean()
    low, high = -30.0, 30.0
    for _ in range(60):  # the mean falls as delta grows
        middle = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(middle - logits))) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def bin_logits():
    """float64 [BINS]: each pooled histogram bin's central logit."""
    return LOWEST_LOGIT + BIN_WIDTH * BIN_POOL * (np.arange(BINS) + 0.5)


def binned_unknown_logits(network, dataset, known_labels, share=1.0):
    """int64 [C, BINS]: the unknown entries' logits of `dataset`, binned for the EM (one
    `HistogramPass` over a hashed `share` of the examples, its bins pooled)."""
    num_classes = known_labels.shape[1]
    counts = HistogramPass(
        network, pipeline.known_entries_lookup(known_labels), num_classes, share=share
    )
    return counts(dataset)[0].reshape(num_classes, BINS, BIN_POOL).sum(axis=2)


class UnknownRateCallback(keras.callbacks.Callback):
    """Measures u_c before epoch `epoch` and switches the loss's unknown term on with them.

    Args:
      dataset: the training inputs, unshuffled and unaugmented (`{"x", "id"}` batches); with
        several workers this worker's part (the counts are summed across workers).
      known_labels: the training annotations, int [N, C] or `SparseLabels`.
      priors: float [C] pi_c, the annotated entries' positive rates.
      epoch: epochs trained (with masked BCE) before the measurement.
      validation: (dataset, labels) of held-out examples with their known labels, to calibrate
        the scores (delta of the module docstring), or None.
      true_labels: the hidden full labels of a simulation, or None: their rate among the unknown
        entries is logged next to the measured one, for reports only (nothing reads it).
      log: prints one line.
      measured_examples: at most this many examples are counted (a fixed hash of their ids).
    """

    def __init__(
        self,
        dataset,
        known_labels,
        priors,
        epoch,
        *,
        validation=None,
        true_labels=None,
        log=print,
        measured_examples=MEASURED_EXAMPLES,
    ):
        super().__init__()
        self.dataset, self.known_labels, self.epoch = dataset, known_labels, int(epoch)
        self.priors, self.validation = np.asarray(priors, np.float64), validation
        self.true_labels, self.log = true_labels, log
        self.measured_examples = measured_examples
        self.figures = {}

    def measure(self):
        """(float64 [C] rates, the figures logged with them)."""
        model = self.model
        share = min(1.0, self.measured_examples / max(self.known_labels.shape[0], 1))
        unknown = distribution.sum_across_workers(
            binned_unknown_logits(model.network, self.dataset, self.known_labels, share),
            model.distribute_strategy,
        )
        delta = 0.0
        if self.validation is not None:
            delta = calibration_shift(evaluation.model_scores(model.network, *self.validation))
        rates = em_rates(unknown, self.priors, delta)
        figures = {"unknown_rate_mean": float(rates.mean()), "calibration_shift": delta}
        if self.true_labels is not None:
            figures["unknown_rate_true_mean"] = _true_unknown_rate(
                self.known_labels, self.true_labels
            )
        return rates, figures

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.epoch or self.model.unknown_rates_measured:
            return
        rates, self.figures = self.measure()
        self.model.set_unknown_rates(rates)
        truth = self.figures.get("unknown_rate_true_mean")
        self.log(
            f"epoch {epoch + 1}: unknown entries' positive rate measured on the network of "
            f"{epoch} epochs: mean {rates.mean():.4g} (the priors' {self.priors.mean():.4g}); "
            "kpartial's loss from now"
            + ("" if truth is None else f"; the simulation's true mean {truth:.4g} (report only)")
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and epoch == self.epoch and self.figures:
            logs.update(self.figures)


def _true_unknown_rate(known, truth):
    """mean_c of the true positive rate among class c's unknown entries (classes with any)."""

    known, truth = as_sparse(known), as_sparse(truth)
    num_examples = known.shape[0]
    unknown = num_examples - known.positives_per_class() - known.negatives_per_class()
    hidden = truth.positives_per_class() - known.positives_per_class()
    has = unknown > 0
    return float(np.mean(hidden[has] / unknown[has])) if has.any() else float("nan")


def callbacks(config, inputs, datasets, log):
    """What measuring adds to a run: `[UnknownRateCallback]`, or nothing (said in one line when
    the run measures nothing because it is too short)."""
    if not switched_on(config, inputs.stats):
        return []
    epoch = measure_epoch(config)
    if epoch is None:
        log(
            "unknown rates: not measured, because the measurement (after "
            f"{config.pseudo.start_epoch} of {config.runtime.epochs} epochs) falls at or after "
            "the last epoch; the loss stays masked BCE"
        )
        return []
    return [
        UnknownRateCallback(
            datasets.train_inputs,
            inputs.known,
            inputs.stats.priors,
            epoch,
            validation=run_inputs.held_out(inputs, datasets),
            true_labels=run_inputs.hidden_truth(config, inputs),
            log=log,
        )
    ]
