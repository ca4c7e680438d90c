"""Dynamic label-space reduction: prune classes from training on a schedule.

A schedule `E1:F1,E2:F2,...` means: after E1 epochs, a cumulative fraction F1 of all classes is
pruned; after E2, F2; and so on (epochs strictly increasing, fractions non-decreasing, in [0, 1)).
An epoch written as a decimal is a share of the run's epochs: `0.75:0.25` prunes a quarter of the
classes after 75% of the epochs, whatever their number.
Criteria for which active classes go first:

- `fit_well`: lowest class-balanced cross-entropy on the class's *known* training labels,
  0.5 * (mean BCE over known positives + mean BCE over known negatives), computed on predictions
  without augmentation: the classes the network already fits, whose gradients mostly add imbalance
  (their many easy negatives) and compute. Balancing matters: a plain mean would call a rare class
  fit whenever it predicts its prior, and prune exactly the classes kpartial is meant to help.
  A class without a known positive or negative scores inf: it is never "fit well".
- `random`: a seeded random choice (a control for ablations).

Pruned classes get weight 0 in `PartialLabelModel.active_classes` (`set_active_classes`), so they
contribute neither loss nor gradient for the rest of training; their output units are kept, so the
model still predicts every class. The compute they no longer cost is saved where it pays for the
pruned phase's own train function (`gathers_pruned_head`: Open Images' 9,600 classes); on a small
label space (Mulan's) pruning only masks, in the run's one train function.

The technique owns its switch and its callback: `switched_on` and `schedule_of` read the run's
`kpartial.config.Config`, and `callbacks` builds what a run adds, so the trainer needs one call for
pruning.
"""

import math
import time

import keras
import numpy as np
import tensorflow as tf

from kpartial import distribution, pipeline
from kpartial.partial_model import network_of


def parse_prune_schedule(text):
    """Parses `"10:0.25,0.75:0.5"` into `((10, 0.25), (0.75, 0.5))`; "" means no pruning.

    An integer EPOCH is an epoch count; a decimal one (written with a ".") is a share of the
    training epochs, in (0, 1), so the schedule keeps its meaning when the number of epochs
    changes. The two may be mixed; `resolve_prune_schedule` turns them into epoch counts.

    Raises:
      ValueError: describing what is wrong with the schedule.
    """
    schedule = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        epoch_text, sep, fraction_text = item.partition(":")
        try:
            if not sep:
                raise ValueError
            epoch = float(epoch_text) if "." in epoch_text else int(epoch_text)
            fraction = float(fraction_text)
        except ValueError:
            raise ValueError(
                f"entry {item!r} is not EPOCH:FRACTION (e.g. 10:0.25, or 0.75:0.25 for after 75% "
                "of the epochs)"
            ) from None
        if isinstance(epoch, int) and epoch < 1:
            raise ValueError(f"entry {item!r}: epoch must be >= 1")
        if isinstance(epoch, float) and not 0.0 < epoch < 1.0:
            raise ValueError(
                f"entry {item!r}: a decimal epoch is a share of the epochs and must be in (0, 1)"
            )
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"entry {item!r}: fraction must be in [0, 1)")
        if schedule:
            previous_epoch, previous_fraction = schedule[-1]
            # A count and a share can only be ordered once the epochs are known (resolve_...).
            if type(epoch) is type(previous_epoch) and epoch <= previous_epoch:
                raise ValueError(f"entry {item!r}: epochs must increase")
            if fraction < previous_fraction:
                raise ValueError(f"entry {item!r}: fractions are cumulative and must not decrease")
        schedule.append((epoch, fraction))
    return tuple(schedule)


def resolve_prune_schedule(schedule, epochs):
    """The epoch counts of a parsed schedule in a run of `epochs` epochs: `((epoch, fraction),)`.

    A share of the epochs rounds to the nearest epoch (halves up), and to at least 1; an integer
    epoch stays as it is, so resolving a resolved schedule changes nothing.

    Raises:
      ValueError: naming the entry that resolves to an epoch at or after `epochs` (it would never
        prune), to the same epoch as the entry before it, or to an earlier one.
    """
    resolved, entries = [], []
    for epoch, fraction in schedule:
        entry = f"{epoch}:{fraction}"
        at = epoch_count(epoch, epochs)
        if at >= epochs:
            raise ValueError(
                f"entry {entry!r} prunes after {at} epochs, when none of the {epochs} epochs is "
                "left: it would never prune"
            )
        if resolved and at == resolved[-1][0]:
            raise ValueError(f"entries {entries[-1]!r} and {entry!r} are both epoch {at}")
        if resolved and at < resolved[-1][0]:
            raise ValueError(
                f"entry {entry!r} is epoch {at}, before entry {entries[-1]!r} (epoch "
                f"{resolved[-1][0]}): epochs must increase"
            )
        resolved.append((at, fraction))
        entries.append(entry)
    return tuple(resolved)


# Class-entries (one class of one example in one step) that each of a run's pruned phases must
# skip, on average, for gathering the active head columns to pay for the phase's new train function:
# on 2 CPU cores a skipped entry saved 2e-8 s (Open Images shape, a head of 64 inputs) to 5e-8 s
# (512 inputs), and a pruning phase's new train function cost about 0.6 s (benchmarks/README.md,
# "Label pruning: step time").
PRUNED_ENTRIES_TO_GATHER = 3e7


def gathers_pruned_head(config, num_examples, num_classes, replicas=1):
    """Whether the run's pruning phases gather the active head columns
    (`PartialLabelModel(gathers_pruned_head=...)`).

    They do where the class-entries the pruned phases skip, sum_i F_i C N (E_{i+1} - E_i) over the
    schedule's entries (E_i, F_i) up to the last epoch, come to `PRUNED_ENTRIES_TO_GATHER` per
    phase, and always with several replicas. Elsewhere the full head is kept with the pruned
    classes masked: one train function for the whole run.
    """
    schedule = pruning_schedule(config)
    if replicas > 1 or not schedule:
        return True
    ends = [epoch for epoch, _ in schedule[1:]] + [config.runtime.epochs]
    skipped = sum(
        fraction * num_classes * num_examples * (end - epoch)
        for (epoch, fraction), end in zip(schedule, ends)
    )
    return skipped >= PRUNED_ENTRIES_TO_GATHER * len(schedule)


def switched_on(config):
    """Whether the config prunes: a schedule, and `on`, or `auto` with kpartial's loss."""
    pruning = config.pruning
    wanted = pruning.switch == "on" or (pruning.switch == "auto" and config.loss.has_techniques)
    return wanted and bool(pruning.schedule)


def epoch_count(epoch, epochs):
    """An epoch given as a count (an int, kept) or as a share of `epochs` (a float in (0, 1),
    rounded to the nearest epoch, halves up, and at least 1), in counts. The pruning schedule and
    the first pseudo-label refresh read their shares this way."""
    return max(1, math.floor(epoch * epochs + 0.5)) if isinstance(epoch, float) else epoch


def in_epoch_counts(schedule, epochs):
    """`schedule` with every share written as its epoch count (no checks): how two configs that
    say the same schedule in other words compare equal."""
    return tuple((epoch_count(epoch, epochs), fraction) for epoch, fraction in schedule)


def _split(config):
    """(the entries that fit the run, the share entries that fall at or after its last epoch)."""
    epochs = config.runtime.epochs
    late = tuple(
        entry
        for entry in config.pruning.schedule
        if isinstance(entry[0], float) and epoch_count(entry[0], epochs) >= epochs
    )
    return tuple(entry for entry in config.pruning.schedule if entry not in late), late


def config_error(config):
    """Why the config's pruning schedule cannot run (one line), else "".

    An entry given as a share of the epochs that falls after the last epoch of a short run is
    skipped (and said by `callbacks`), so a preset fits any `epochs`; an entry given as an epoch
    count must fit.
    """
    if switched_on(config):
        try:
            resolve_prune_schedule(_split(config)[0], config.runtime.epochs)
        except ValueError as e:
            return f"prune_schedule: {e}"
    return ""


def schedule_of(config):
    """The config's pruning schedule in epoch counts, without the share entries that do not fit."""
    return resolve_prune_schedule(_split(config)[0], config.runtime.epochs)


def pruning_schedule(config):
    """What the run prunes by: `schedule_of`, or () where pruning is switched off."""
    return schedule_of(config) if switched_on(config) else ()


def _balanced_loss(sums):
    """float64 [C] class-balanced BCE from [4, C] per-class sums (positives' BCE, negatives' BCE,
    positives, negatives): inf for a class without a known positive or a known negative."""
    positive_loss, negative_loss, num_positive, num_negative = sums
    balanced = 0.5 * (
        positive_loss / np.maximum(num_positive, 1) + negative_loss / np.maximum(num_negative, 1)
    )
    return np.where((num_positive > 0) & (num_negative > 0), balanced, np.inf)


class KnownLabelLossPass:
    """`streamed_known_label_loss` as a pass made once and called at every pruning, so its
    `tf.function` is traced once.

    Args:
      model: the model (or network) whose predictions are scored.
      known_labels: the training labels, int8 [N, C] or `SparseLabels`.
      epsilon: probabilities are clipped to [epsilon, 1 - epsilon].
    """

    def __init__(self, model, known_labels, epsilon=1e-7):
        network = network_of(model)
        lookup = pipeline.label_lookup(known_labels)
        num_classes = known_labels.shape[1]
        sums = tf.Variable(tf.zeros([4, num_classes], tf.float64), trainable=False)
        self.model, self.sums = model, sums

        def accumulate(batch):
            logits = tf.cast(network(batch["x"], training=False), tf.float32)
            known = lookup(batch["id"])
            # Only the known entries count: a few per example, so the float64 work is small.
            where = tf.where(tf.not_equal(known, 0))
            z = tf.cast(tf.gather_nd(logits, where), tf.float64)
            p = tf.cast(tf.cast(1.0 / (1.0 + tf.exp(-z)), tf.float32), tf.float64)
            p = tf.clip_by_value(p, epsilon, 1 - epsilon)
            positive = tf.gather_nd(known, where) > 0
            classes = tf.cast(where[:, 1], tf.int32)
            zero = tf.zeros_like(p)
            parts = [
                tf.where(positive, -tf.math.log(p), zero),
                tf.where(positive, zero, -tf.math.log(1 - p)),
                tf.cast(positive, tf.float64),
                tf.cast(tf.logical_not(positive), tf.float64),
            ]
            sums.assign_add(
                tf.stack([tf.math.unsorted_segment_sum(x, classes, num_classes) for x in parts])
            )

        self.accumulate = pipeline.PerBatch(accumulate)

    def __call__(self, dataset):
        """float64 [C]: the class-balanced BCE of the known entries of `dataset`."""
        self.sums.assign(tf.zeros_like(self.sums))
        self.accumulate(dataset)
        # With several workers, each passed over its part of the examples.
        strategy = getattr(self.model, "distribute_strategy", None)
        return _balanced_loss(distribution.sum_across_workers(self.sums.numpy(), strategy))


def streamed_known_label_loss(model, dataset, known_labels, epsilon=1e-7):
    """Class-balanced BCE of `model`'s predictions on `dataset` at the known entries, float64 [C].

    Per class, the mean of the known positives' mean BCE and the known negatives' mean BCE; inf
    for a class without a known positive or a known negative. Computed in one compiled pass.

    Per-class sums over the known entries are accumulated batch by batch (float64, from the
    float32 probabilities the model predicts), so memory is [B, C] + [4, C], never [N, C]; the
    batch's labels come from `pipeline.label_lookup` by example id (dense or `SparseLabels`).
    With several workers, `dataset` is this worker's part and the sums are added across workers.
    A caller that scores repeatedly keeps a `KnownLabelLossPass` instead.
    """
    return KnownLabelLossPass(model, known_labels, epsilon)(dataset)


class FitWell:
    """Prunes the active classes with the lowest `streamed_known_label_loss` first."""

    uses_class_loss = True

    def choose(self, candidates, count, class_loss, rng):
        del rng
        return candidates[np.argsort(class_loss[candidates], kind="stable")[:count]]


class RandomClasses:
    """Prunes a seeded random choice of the active classes (a control for ablations)."""

    uses_class_loss = False

    def choose(self, candidates, count, class_loss, rng):
        del class_loss
        return rng.choice(candidates, size=count, replace=False)


# --prune_criterion name -> criterion: `choose(candidates, count, class_loss, rng)` gives the
# classes to prune; `uses_class_loss` says whether it needs `streamed_known_label_loss` (a
# prediction pass).
CRITERIA = {"fit_well": FitWell(), "random": RandomClasses()}


def criterion_named(name):
    if name not in CRITERIA:
        raise ValueError(f"unknown prune criterion {name!r}; known: {', '.join(CRITERIA)}")
    return CRITERIA[name]


def choose_classes_to_prune(active, count, criterion, class_loss=None, rng=None):
    """Indices of `count` active classes to prune by `criterion` (a name in `CRITERIA`)."""
    chooser = criterion_named(criterion)
    candidates = np.flatnonzero(active)
    count = min(count, candidates.size)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    return chooser.choose(candidates, count, class_loss, rng)


class LabelPruningCallback(keras.callbacks.Callback):
    """Prunes classes of a `PartialLabelModel` following `schedule`.

    At each scheduled epoch it picks classes by `criterion` among the active ones and hands the new
    active set to `PartialLabelModel.set_active_classes`, which also builds the train function of
    the remaining K classes.

    Args:
      dataset: the training inputs, unshuffled and unaugmented, in example-id order (with several
        workers, this worker's part: see `streamed_known_label_loss`).
      known_labels: int [N, C] training annotations, or `SparseLabels` (looked up per batch).
      schedule: `((epoch, fraction), ...)` in epoch counts: the output of
        `resolve_prune_schedule`.
      criterion: one of `CRITERIA`.
      seed: seed of the `random` criterion.
      log: a function that prints one line.

    Raises:
      ValueError: an unknown criterion, or a schedule entry that is a share of the epochs.
    """

    def __init__(self, dataset, known_labels, schedule, criterion="fit_well", seed=0, log=print):
        super().__init__()
        criterion_named(criterion)  # refuses an unknown name now, not at the first pruning
        shares = [epoch for epoch, _ in schedule if isinstance(epoch, float)]
        if shares:
            raise ValueError(
                f"prune schedule epoch {shares[0]} is not an epoch count: pass the schedule "
                "through resolve_prune_schedule(schedule, epochs) first"
            )
        self.dataset = dataset
        self.known_labels = known_labels
        self.schedule = {epoch: float(fraction) for epoch, fraction in schedule}
        self.criterion = criterion
        self.seed = seed
        self.log = log
        self._loss_pass = None  # the fit_well pass, made at the first pruning

    def on_epoch_begin(self, epoch, logs=None):
        if epoch not in self.schedule:
            return
        started = time.perf_counter()
        active = self.model.active_class_mask
        num_classes = active.size
        count = round(self.schedule[epoch] * num_classes) - int((~active).sum())
        class_loss = None
        if criterion_named(self.criterion).uses_class_loss:
            if self._loss_pass is None:  # made once: every pruning reuses its compiled pass
                self._loss_pass = KnownLabelLossPass(self.model, self.known_labels)
            class_loss = self._loss_pass(self.dataset)
        # Seeded per event, so a resumed run prunes the same classes.
        rng = np.random.default_rng([self.seed, epoch])
        pruned = choose_classes_to_prune(active, count, self.criterion, class_loss, rng)
        active[pruned] = False
        # The next steps compute the K active classes only (the model builds their train
        # function), or mask the others in the run's one train function.
        self.model.set_active_classes(active)
        self.prune_seconds = time.perf_counter() - started
        form = (
            "the step computes them alone"
            if self.model.gathers_pruned_head
            else "the others masked in the same step"
        )
        self.log(
            f"epoch {epoch + 1}: pruned {pruned.size} classes by {self.criterion}; "
            f"{int(active.sum())}/{num_classes} remain active, {form} "
            f"({self.prune_seconds:.2f} s)"
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["active_classes"] = float(self.model.active_class_mask.sum())
            if epoch in self.schedule:
                logs["prune_seconds"] = self.prune_seconds


def callbacks(config, inputs, datasets, log):
    """What pruning adds to a run: `[LabelPruningCallback]` when the config switches it on, else
    nothing.

    Args:
      config: the run's `kpartial.config.Config` (its `pruning` part, and `runtime.seed` for the
        `random` criterion).
      inputs: the run's data; `.known` (the training labels the run may see) is read.
      datasets: the run's datasets; `.train_inputs` (the training inputs, unshuffled) is read.
      log: a function that prints one line.

    Returns:
      A list of callbacks for `fit`.
    """
    if not switched_on(config):
        return []
    late = _split(config)[1]
    if late:
        log(
            f"prune_schedule: {', '.join(f'{e}:{f}' for e, f in late)} falls at or after the last "
            f"of {config.runtime.epochs} epochs; skipped"
        )
    schedule = schedule_of(config)
    if not schedule:
        return []
    return [
        LabelPruningCallback(
            datasets.train_inputs,
            inputs.known,  # looked up per batch: sparse labels stay sparse
            schedule,
            config.pruning.criterion,
            config.runtime.seed,
            log,
        )
    ]
