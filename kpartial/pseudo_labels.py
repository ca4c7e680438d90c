"""Pseudo-labelling: the switch, and the callback that refreshes per-class thresholds turning
unknown entries into pseudo positives/negatives.

The thresholds (t+_c, t-_c), the rules that set them and the statistics they read are
`kpartial.pseudo_label_rules`'s. `PseudoLabelCallback` refreshes the labels on a schedule (first
after `start_epoch` epochs, then every `every` epochs) by ONE streaming pass over the training set
without augmentation (`pseudo_label_rules.HistogramPass`, compiled once); beyond `HISTOGRAM_ENTRIES`
entries the histograms count a fixed hashed sample of the examples.

The two sides are kept differently (`PartialLabelModel.resolve_labels` applies them):
- Positives are a snapshot. The refresh's candidates (`pseudo_label_rules.PositiveCandidates`,
  each example's L highest unknown logits above the floor of t+) that lie above t+_c become the
  model's store of pseudo positives, int32 [N, L] (`PartialLabelModel.set_pseudo_labels`).
  They number about prior x unknowns, so a small L holds them (candidates beyond L are counted
  and logged).
- Negatives are online: each step, an unknown entry whose current stop-gradient logit is below
  t-_c counts as a negative. They are most of the unknown entries, so they could not be stored.
Positives are not applied online (z > t+_c in every step) because that feeds on itself: between
refreshes the network raises the scores of its own pseudo positives and of their neighbours, more
entries cross t+, and the pseudo positives' precision falls (figures: benchmarks/README.md,
"Pseudo-label store vs the dense snapshot"). Nothing is N x C: the state is
O(C x NUM_BINS + N x L) during a refresh and O(C + N x L) after it.
Known labels always win.

The quota's rates are the unknown entries' positive rates: the class statistics' (by default), or
measured by the run before the first refresh (`--missing_labels=measured`,
`kpartial.unknown_rates`), or the reading the run tests then (`--missing_labels=tested`, the
default, `kpartial.annotation_test`). With those `pseudo_labels=auto` decides at the first refresh,
from the rates then in the model (`dense_line`, and no pseudo labels where the test read the labels
as missing for a reason), and says so in one line.

The technique owns its switch and its callback: `switched_on`, `off_because` and `is_on` read the
run's `kpartial.config.Config`, and `callbacks` builds what a run adds, so the trainer needs one
call for pseudo labels.
"""

import dataclasses
import time

import keras
import numpy as np

from kpartial import (
    annotation_test,
    class_stats,
    distribution,
    evaluation,
    pipeline,
    run_inputs,
    unknown_rates,
)
from kpartial.label_pruning import epoch_count
from kpartial.partial_model import network_of
from kpartial.pseudo_label_rules import (
    HistogramPass,
    PositiveCandidates,
    logit,
    pseudo_label_quality,
    rule_of,
    sigmoid,
)
from kpartial.sparse_labels import as_sparse

# Entries (examples x classes) counted into a refresh's histograms at most (see
# `PseudoLabelCallback`): 2^24, so at Open Images' 9,600 classes 1,747 examples, over which the
# 10% quantile of a class's scores that sets t- has a binomial standard error of 0.7 points. The
# thresholds need no more, and binning more costs a share of an inference pass that grows with C.
HISTOGRAM_ENTRIES = 2**24


def switched_on(config):
    """Whether the config asks for pseudo labels: `on`, or `auto` with kpartial's loss (the
    other methods run as published), and a start epoch >= 0. The data may still turn `auto` off
    (`off_because`)."""
    pseudo = config.pseudo
    wanted = pseudo.switch == "on" or (pseudo.switch == "auto" and config.loss.has_techniques)
    return wanted and pseudo.start_epoch >= 0


def start_epoch_of(config):
    """The epoch of the first refresh: `pseudo_start_epoch` as a count, or a share of the epochs
    (a float in (0, 1), rounded to the nearest epoch, at least 1); None when a share falls at or
    after the last epoch of a short run, which then trains without pseudo labels."""
    start, epochs = config.pseudo.start_epoch, config.runtime.epochs
    count = epoch_count(start, epochs)
    return count if isinstance(start, int) or count < epochs else None


def config_error(config):
    """Why the config's pseudo labels cannot run (one line), else "": a start given as a count of
    epochs must come before the last epoch (a share that does not is skipped, see `callbacks`)."""
    start = config.pseudo.start_epoch
    if switched_on(config) and isinstance(start, int) and start >= config.runtime.epochs:
        return (
            f"pseudo_start_epoch={start} is not before epochs={config.runtime.epochs}, so pseudo "
            "labels would never be used; lower it, give a share of the epochs (e.g. 0.33), or "
            "pseudo_labels=off"
        )
    return ""


def off_because(config, stats):
    """Why `pseudo_labels=auto` leaves pseudo labels off for this data, one line ("" = it does not).

    With rates read from the class statistics (`--missing_labels` other than measured), two
    cases (see `kpartial.class_stats`): where the annotation depends on the class, the unknown
    entries' positive rate is only a lower bound and pseudo negatives would outnumber the
    annotations; where the label space is dense, the unknown term already targets each class's
    rate and pseudo positives by that quota add noise. `on` refreshes anyway (see `callbacks`).
    With measured rates nothing is known yet: the first refresh decides (`dense_line`).

    Args:
      config: the run's `kpartial.config.Config`.
      stats: the training labels' `kpartial.class_stats.ClassStatistics`.

    Returns:
      The reason, to be logged after "pseudo labels: off, because", or "".
    """
    if config.pseudo.switch != "auto" or not switched_on(config):
        return ""
    if unknown_rates.switched_on(config, stats):
        return ""  # the rates are measured: the first refresh decides (`dense_line`)
    if annotation_test.switched_on(config, stats):
        # The test before the first refresh decides; only where the priors are dense is the
        # answer known already (off under either reading).
        return dense_line(stats.priors)
    if stats.depends_on_class:
        return (
            "the annotation depends on the class (see the class statistics line): the unknown "
            "entries' positive rate is only a lower bound there, and pseudo negatives would "
            "outnumber the annotations; --pseudo_labels=on refreshes anyway (pseudo negatives only)"
        )
    return dense_line(stats.unknown_priors)


def dense_line(rates):
    """Why pseudo labels stay off for a label space whose unknown entries' rates are `rates`
    (one line), or "" where it is not dense."""
    if float(np.mean(rates)) < class_stats.DENSE_LABEL_SPACE:
        return ""
    return (
        f"the label space is dense (the unknown entries' mean positive rate "
        f"{np.mean(rates):.2f} >= {class_stats.DENSE_LABEL_SPACE}): the unknown term already "
        "targets each class's rate, and pseudo positives by that quota add noise there; "
        "--pseudo_labels=on refreshes anyway"
    )


def tested_off_line(model, stats):
    """Why pseudo labels stay off under the reading the annotation test left in the model
    (`kpartial.annotation_test`), or ""."""
    if annotation_test.reads_for_a_reason(model, stats):
        return (
            "the labels read as missing for a reason (the labels-tested line): u_c is only a "
            "lower bound there; --pseudo_labels=on refreshes anyway"
        )
    return dense_line(model.unknown_rates.numpy())


def is_on(config, stats):
    """Whether the run makes pseudo labels: switched on by the config and not off for the data.

    The model keeps a pseudo-label store only then (`PartialLabelModel(pseudo_labelling=...)`).
    """
    return (
        switched_on(config)
        and start_epoch_of(config) is not None
        and not off_because(config, stats)
    )


def refresh_line(quality):
    """A refresh's figures in a short line (history.json and TensorBoard keep them all)."""
    q = dict(quality)
    positives = f"{q.pop('pseudo_positives')} positives"
    if "pseudo_pos_precision" in q:
        precision, recall = q.pop("pseudo_pos_precision"), q.pop("pseudo_pos_recall")
        positives += f" (precision {precision:.3g}, recall {recall:.3g})"
    negatives = f"{q.pop('pseudo_negatives')} negatives"
    if "pseudo_neg_precision" in q:
        negatives += f" (precision {q.pop('pseudo_neg_precision'):.3g})"
    seconds = q.pop("refresh_seconds", None)
    parts = [f"coverage {q.pop('pseudo_coverage'):.3g}", positives, negatives]
    parts += [
        f"{k.replace('_', ' ')} {v:.3g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
        for k, v in q.items()
    ]
    return ", ".join(parts) + ("" if seconds is None else f"; {seconds:.2f} s")


class PseudoLabelCallback(keras.callbacks.Callback):
    """Refreshes the model's pseudo labels on a schedule; logs coverage (and quality).

    Each refresh is one streaming pass (module docstring); its thresholds and stored positives
    go into the model by `PartialLabelModel.set_pseudo_labels`, which the compiled train step
    reads and checkpoints carry.

    Args:
      dataset: the training inputs, unshuffled and unaugmented (`{"x", "id"}` batches); with
        several workers, this worker's part of them (the statistics are summed across workers).
      known_labels: the training annotations, int [N, C] or `SparseLabels` (never made dense).
      settings: a `kpartial.config.PseudoLabelConfig`; read here: `start_epoch` (epochs trained
        before the first refresh), `every` (the refresh period in epochs), `mode` and
        `rule_options` (the rule, see `rule_of`) and `min_precision`. Its `weight` and
        `max_positives` are the model's (`PartialLabelModel`), its `switch` the trainer's.
      priors: float [C] positive rates among the unknown entries (needed by a rule with
        `needs_priors`), or "measured": the model's `unknown_rates`, read at each refresh (the
        measurement comes first, `kpartial.unknown_rates`).
      off_line_of: None, or a function of the model giving why a refresh makes no pseudo labels
        now ("" = it does): with rates the run measures or tests, read at each refresh
        (`pseudo_labels=auto`).
      validation: (dataset, labels) of held-out training examples with their known labels, for
        `min_precision`: if > 0, a class is pseudo-labelled positive only at scores where its
        held-out known entries are positive at least this often. For a class with at least 3
        validation positives, t+_c is raised to the lowest validation score with that precision
        (and 3 positives above it), or to inf (no pseudo positives) if no score has it; a class
        with fewer validation positives keeps the rule's t+ (no evidence either way).
      true_labels: the hidden full labels when the partial labels were simulated, for monitoring
        (int [N, C] or `SparseLabels`).
      log: a function that prints one line.
      histogram_entries: at most this many entries (examples x classes; the examples a fixed
        hash of their ids) are counted into the histograms; the thresholds' quantiles need no
        more, and binning every entry of a large set would cost several inference passes.

    Raises:
      ValueError: `start_epoch` < 0 or `every` < 1, a rule the settings cannot make, a rule that
        needs priors without them, or `min_precision` without validation data.
    """

    def __init__(
        self,
        dataset,
        known_labels,
        settings,
        priors=None,
        *,
        validation=None,
        true_labels=None,
        log=print,
        histogram_entries=HISTOGRAM_ENTRIES,
        off_line_of=None,
    ):
        super().__init__()
        start_epoch, every = settings.start_epoch, settings.every
        if start_epoch < 0 or every < 1:
            raise ValueError(f"need start_epoch >= 0 and every >= 1, got {start_epoch}, {every}")
        self.rule = rule_of(settings)
        if self.rule.needs_priors and priors is None:
            raise ValueError(f"pseudo-label mode {settings.mode!r} needs priors")
        self.min_precision = float(settings.min_precision)
        if self.min_precision and validation is None:
            raise ValueError("min_precision needs validation data (held-out known labels)")
        self.dataset, self.validation = dataset, validation
        self.known_labels, self.true_labels = known_labels, true_labels
        self.start_epoch, self.every = start_epoch, every
        self.measured = isinstance(priors, str) and priors == "measured"
        self.priors = None if priors is None or self.measured else np.asarray(priors)
        self.off_line_of = off_line_of
        self.off_line = ""  # why refreshes make nothing (`off_line_of`'s last line)
        self.log = log
        self.histogram_entries = histogram_entries
        self.quality = {}
        self._pass = None  # the refresh's HistogramPass, made at the first refresh

    def is_refresh_epoch(self, epoch):
        """Whether a refresh begins `epoch` (0-based): `start_epoch`, then every `every`."""
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every == 0

    def refresh(self):
        """One streaming pass: new thresholds and stored positives into the model.

        Returns:
          The refresh's quality: `pseudo_label_quality`'s figures (the negatives scaled to the
          whole set when the histograms counted a sample; the positives counted exactly in the
          store), `candidates_over_cap`, `refresh_seconds`, and `histogram_share` or
          `validated_classes` when they apply.
        """
        started = time.perf_counter()
        model = self.model
        network = network_of(model)
        truth = self.true_labels
        num_examples, _ = model.pseudo_store_shape
        entries = max(num_examples, 1) * self.known_labels.shape[1]
        share = min(1.0, self.histogram_entries / entries)
        if self._pass is None:  # made once: every refresh reuses its compiled pass
            slots = model.pseudo_store_shape[1]
            self._pass = HistogramPass(
                network,
                pipeline.known_entries_lookup(self.known_labels),
                self.known_labels.shape[1],
                None if truth is None else pipeline.label_lookup(truth),
                PositiveCandidates(num_examples, slots, logit(self.rule.positive_threshold)),
                share,
            )
        candidates = self._pass.candidates
        counts = self._pass(self.dataset)
        # Each worker passed over its part of the examples: the statistics of the whole set,
        # identical on every worker, before any threshold is computed.
        strategy = model.distribute_strategy
        counts = distribution.sum_across_workers(counts, strategy)
        candidates.sum_across_workers(strategy)
        known = as_sparse(self.known_labels)
        unknown_counts = num_examples - known.positives_per_class() - known.negatives_per_class()
        priors = self.priors
        if self.measured:
            priors = model.unknown_rates.numpy().astype(np.float64)
        positive, negative = self.rule.thresholds(
            counts.sum(axis=0), priors, candidates, unknown_counts
        )
        validated = None
        if self.min_precision:
            positive, validated = self._validated(positive, network)
            negative = np.minimum(negative, positive)
        stored = candidates.positives(positive)
        # t+ is a record; a class without unknown entries (t+ = inf) records the rule's floor,
        # which no entry reads, so the record stays a usable decision threshold.
        unknown = counts.sum(axis=(0, 2)) > 0
        model.set_pseudo_labels(
            stored,
            np.where(unknown, sigmoid(positive), self.rule.positive_threshold),
            sigmoid(negative),
        )
        quality = pseudo_label_quality(counts, positive, negative)
        if share < 1.0:  # the sample's count, scaled to the whole set (the shares stay)
            quality["pseudo_negatives"] = round(quality["pseudo_negatives"] / share)
            quality["histogram_share"] = share
        quality["pseudo_positives"] = int(np.count_nonzero(stored))  # exact: the store
        if validated is not None:
            quality["validated_classes"] = validated  # classes whose floor was measured
        quality["candidates_over_cap"] = int(candidates.over_cap.numpy())
        quality["refresh_seconds"] = time.perf_counter() - started
        return quality

    def _validated(self, positive, network):
        """Raises t+ to the scores at which the validation split shows `min_precision`.

        Args:
          positive: float64 [C] logit t+ of the rule.
          network: the network that scores the validation examples.

        Returns:
          (the raised logit t+ [C], how many classes had the evidence to be measured).
        """
        dataset, labels = self.validation
        scores = evaluation.model_scores(network, dataset, labels)
        floors = scores.precision_floors(self.min_precision)
        finite = np.isfinite(floors)
        # Just below the floor: the rule is strict (z > t+) and the floor's own score qualifies.
        logits = np.nextafter(logit(np.clip(floors, 0.0, 1.0)), -np.inf)
        floors = np.where(finite, logits, floors)  # inf: no precise score; -inf: no evidence
        raised = np.maximum(positive, floors)
        return raised, int(np.count_nonzero(finite))

    def on_epoch_begin(self, epoch, logs=None):
        if not self.is_refresh_epoch(epoch):
            return
        if self.off_line_of is not None:
            line = self.off_line_of(self.model)
            if line and not self.off_line:
                self.log(f"epoch {epoch + 1}: pseudo labels: off, because {line}")
            self.off_line = line
            if line:
                return
        self.quality = self.refresh()
        self.log(f"epoch {epoch + 1}: pseudo labels refreshed: {refresh_line(self.quality)}")

    def on_epoch_end(self, epoch, logs=None):
        # Figures on refresh epochs only (other epochs did not change the thresholds), and only
        # the shares: Keras prints every log value with four decimals, so the counts are in the
        # refresh line instead.
        if logs is not None and self.is_refresh_epoch(epoch) and not self.off_line:
            logs.update({k: v for k, v in self.quality.items() if isinstance(v, float)})


def callbacks(config, inputs, datasets, log):
    """What pseudo labels add to a run: `[PseudoLabelCallback]`, or nothing.

    Nothing when the config does not switch them on, or when `off_because` turns `auto` off for
    this data (said in one line). With `on` where the annotation depends on the class, the rule's
    quota is a zero rate: the unknown entries' rate is only a lower bound there, so the refresh
    makes pseudo negatives only.

    Args:
      config: the run's `kpartial.config.Config`.
      inputs: the run's data: `.train` (its labels the full truth), `.known` (the training labels
        the run may see), `.stats` (their `ClassStatistics`) and `.validation` (or None).
      datasets: the run's datasets: `.train_inputs` (the training inputs, unshuffled) and
        `.validation` (or None).
      log: a function that prints one line.

    Returns:
      A list of callbacks for `fit`.
    """
    stats = inputs.stats
    reason = off_because(config, stats)
    if reason:
        log(f"pseudo labels: off, because {reason}")
        return []
    if not switched_on(config):
        return []
    start = start_epoch_of(config)
    if start is None:
        log(
            f"pseudo labels: off, because the first refresh (pseudo_start_epoch="
            f"{config.pseudo.start_epoch} of {config.runtime.epochs} epochs) falls at or after "
            "the last epoch"
        )
        return []
    measured = unknown_rates.switched_on(config, stats)
    if measured and unknown_rates.measure_epoch(config) is None:
        return []  # nothing measured (said by `unknown_rates.callbacks`), and no time to refresh
    tested = annotation_test.switched_on(config, stats)
    rates = np.zeros_like(stats.priors) if stats.depends_on_class else stats.unknown_priors
    off_line_of = None
    if config.pseudo.switch == "auto" and measured:
        off_line_of = lambda model: dense_line(model.unknown_rates.numpy())
    elif config.pseudo.switch == "auto" and tested:
        off_line_of = lambda model: tested_off_line(model, stats)
    return [
        PseudoLabelCallback(
            datasets.train_inputs,
            inputs.known,  # looked up per batch: sparse labels stay sparse
            dataclasses.replace(config.pseudo, start_epoch=start),
            "measured" if measured or tested else rates,
            validation=run_inputs.held_out(inputs, datasets),
            true_labels=run_inputs.hidden_truth(config, inputs),
            log=log,
            off_line_of=off_line_of,
        )
    ]
