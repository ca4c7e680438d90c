"""Dynamic label-space reduction: prune classes from training on a schedule.

A schedule `E1:F1,E2:F2,...` means: after E1 epochs, a cumulative fraction F1 of all classes is
pruned; after E2, F2; and so on (epochs strictly increasing, fractions non-decreasing, in [0, 1)).
Criteria for which active classes go first:

- `fit_well`: lowest class-balanced cross-entropy on the class's *known* training labels,
  0.5 * (mean BCE over known positives + mean BCE over known negatives), computed on predictions
  without augmentation: the classes the network already fits, whose gradients mostly add imbalance
  (their many easy negatives) and compute. Balancing matters: a plain mean would call a rare class
  fit whenever it predicts its prior, and prune exactly the classes kpartial is meant to help.
  A class without a known positive or negative scores inf: it is never "fit well".
- `random`: a seeded random choice (a control for ablations).

Pruned classes get weight 0 in `PartialLabelModel.active_classes`, so they contribute neither loss
nor gradient for the rest of training; their output units are kept, so the model still predicts
every class.
"""

import keras
import numpy as np

from kpartial.partial_model import predict_probabilities

CRITERIA = ("fit_well", "random")


def parse_prune_schedule(text):
    """Parses `"10:0.25,20:0.5"` into `((10, 0.25), (20, 0.5))`; "" means no pruning.

    Raises:
      ValueError: describing what is wrong with the schedule.
    """
    schedule = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        epoch_text, sep, fraction_text = item.partition(":")
        try:
            if not sep:
                raise ValueError
            epoch, fraction = int(epoch_text), float(fraction_text)
        except ValueError:
            raise ValueError(f"entry {item!r} is not EPOCH:FRACTION (e.g. 10:0.25)") from None
        if epoch < 1:
            raise ValueError(f"entry {item!r}: epoch must be >= 1")
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"entry {item!r}: fraction must be in [0, 1)")
        if schedule and epoch <= schedule[-1][0]:
            raise ValueError(f"entry {item!r}: epochs must increase")
        if schedule and fraction < schedule[-1][1]:
            raise ValueError(f"entry {item!r}: fractions are cumulative and must not decrease")
        schedule.append((epoch, fraction))
    return tuple(schedule)


def known_label_loss(probabilities, known_labels, epsilon=1e-7):
    """Class-balanced BCE on known entries, float [C]: the mean of the positives' mean loss and the
    negatives' mean loss; inf for a class without a known positive or without a known negative."""
    p = np.clip(probabilities.astype(np.float64), epsilon, 1 - epsilon)
    positive, negative = known_labels > 0, known_labels < 0
    num_positive, num_negative = positive.sum(axis=0), negative.sum(axis=0)
    positive_loss = np.where(positive, -np.log(p), 0.0).sum(axis=0) / np.maximum(num_positive, 1)
    negative_loss = np.where(negative, -np.log(1 - p), 0.0).sum(axis=0) / np.maximum(
        num_negative, 1
    )
    balanced = 0.5 * (positive_loss + negative_loss)
    return np.where((num_positive > 0) & (num_negative > 0), balanced, np.inf)


def choose_classes_to_prune(active, count, criterion, class_loss=None, rng=None):
    """Indices of `count` active classes to prune by `criterion` (see module docstring)."""
    candidates = np.flatnonzero(active)
    count = min(count, candidates.size)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if criterion == "fit_well":
        return candidates[np.argsort(class_loss[candidates], kind="stable")[:count]]
    if criterion == "random":
        return rng.choice(candidates, size=count, replace=False)
    raise ValueError(f"unknown prune criterion {criterion!r}; known: {', '.join(CRITERIA)}")


class LabelPruningCallback(keras.callbacks.Callback):
    """Prunes classes from `model.active_classes` following `schedule`.

    Args:
      dataset: the training inputs, unshuffled and unaugmented, in example-id order.
      known_labels: int [N, C] training annotations.
      schedule: output of `parse_prune_schedule`.
      criterion: one of `CRITERIA`.
      seed: seed of the `random` criterion.
      log: a function that prints one line.
    """

    def __init__(self, dataset, known_labels, schedule, criterion="fit_well", seed=0, log=print):
        super().__init__()
        if criterion not in CRITERIA:
            raise ValueError(f"unknown prune criterion {criterion!r}; known: {', '.join(CRITERIA)}")
        self.dataset = dataset
        self.known_labels = np.asarray(known_labels)
        self.schedule = dict(schedule)
        self.criterion = criterion
        self.seed = seed
        self.log = log

    def on_epoch_begin(self, epoch, logs=None):
        if epoch not in self.schedule:
            return
        active = self.model.active_classes.numpy() > 0
        num_classes = active.size
        count = int(round(self.schedule[epoch] * num_classes)) - int((~active).sum())
        class_loss = None
        if self.criterion == "fit_well":
            class_loss = known_label_loss(
                predict_probabilities(self.model, self.dataset), self.known_labels
            )
        # Seeded per event, so a resumed run prunes the same classes.
        rng = np.random.default_rng([self.seed, epoch])
        pruned = choose_classes_to_prune(active, count, self.criterion, class_loss, rng)
        active[pruned] = False
        self.model.active_classes.assign(active.astype(np.float32))
        self.log(
            f"epoch {epoch}: pruned {pruned.size} classes by {self.criterion}; "
            f"{int(active.sum())}/{num_classes} remain active"
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["active_classes"] = float(self.model.active_classes.numpy().sum())
