"""Pseudo-labelling: a callback that turns unknown entries into pseudo positives and negatives.

On a schedule (first refresh after `start_epoch` epochs, then every `every` epochs) the callback
predicts on the training set without augmentation and, per class c, labels unknown entries with

    pseudo_ic = +1 if p_ic > t+_c,  -1 if p_ic < t-_c,  0 otherwise.

The inequalities are strict so that ties at a threshold stay unknown: a network that cannot yet
tell entries apart (e.g. constant outputs early in training) labels nothing.

Thresholds are either fixed (`mode="fixed"`: t+ and t- the same for every class) or derived from
the class prior pi_c (`mode="prior"`): among the U_c unknown entries of class c, t+_c is the score
above which a fraction pi_c of them lies (so the pseudo-positive rate matches the prior), never
below `min_positive_probability`; t-_c is the score below which a fraction
`negative_coverage * (1 - pi_c)` lies, so only the most confident share of the expected negatives
is labelled. Known labels always win: pseudo labels are only read where the annotation is 0.

The labels are written into `PartialLabelModel.pseudo_labels`, a variable the compiled train step
gathers by example id; t+ goes into `pseudo_thresholds` (checkpointed with the model).
"""

import inspect

import keras
import numpy as np

from kpartial.partial_model import predict_probabilities


def prior_matched_thresholds(
    probabilities, known_labels, priors, min_positive_probability=0.5, negative_coverage=0.5
):
    """Per-class (t+, t-) so that unknown entries are pseudo-labelled at the prior's rates.

    Args:
      probabilities: float [N, C] predictions on the training set.
      known_labels: int [N, C] in {+1, -1, 0}.
      priors: float [C] class priors.
      min_positive_probability: floor of t+.
      negative_coverage: share of the expected unknown negatives that become pseudo negatives.

    Returns:
      Two float32 arrays [C]. Classes without unknown entries get t+ = inf and t- = -inf.
    """
    num_classes = probabilities.shape[1]
    positive = np.full(num_classes, np.inf, dtype=np.float32)
    negative = np.full(num_classes, -np.inf, dtype=np.float32)
    for c in range(num_classes):
        scores = probabilities[known_labels[:, c] == 0, c]
        if scores.size == 0:
            continue
        positive[c] = max(np.quantile(scores, 1.0 - priors[c]), min_positive_probability)
        negative[c] = min(np.quantile(scores, negative_coverage * (1.0 - priors[c])), positive[c])
    return positive, negative


def assign_pseudo_labels(probabilities, known_labels, positive_thresholds, negative_thresholds):
    """Pseudo labels int8 [N, C]: 0 wherever the entry is known, else by strict thresholds."""
    unknown = known_labels == 0
    pseudo = np.zeros(known_labels.shape, dtype=np.int8)
    pseudo[unknown & (probabilities > positive_thresholds)] = 1
    pseudo[unknown & (probabilities < negative_thresholds) & (pseudo == 0)] = -1
    return pseudo


def pseudo_label_quality(pseudo_labels, known_labels, true_labels=None):
    """Coverage of unknown entries and, given the hidden true labels, precision and recall.

    Returns:
      dict with `pseudo_coverage` (share of unknown entries with a pseudo label),
      `pseudo_positives`, `pseudo_negatives` and, with `true_labels`, `pseudo_pos_precision`,
      `pseudo_pos_recall` (share of hidden positives found) and `pseudo_neg_precision`.
    """
    unknown = known_labels == 0
    is_positive, is_negative = pseudo_labels > 0, pseudo_labels < 0
    quality = {
        "pseudo_coverage": float((is_positive | is_negative).sum() / max(unknown.sum(), 1)),
        "pseudo_positives": int(is_positive.sum()),
        "pseudo_negatives": int(is_negative.sum()),
    }
    if true_labels is not None:
        hidden_positive = unknown & (true_labels > 0)
        quality["pseudo_pos_precision"] = float(
            (is_positive & (true_labels > 0)).sum() / max(is_positive.sum(), 1)
        )
        quality["pseudo_pos_recall"] = float(
            (is_positive & hidden_positive).sum() / max(hidden_positive.sum(), 1)
        )
        quality["pseudo_neg_precision"] = float(
            (is_negative & (true_labels < 0)).sum() / max(is_negative.sum(), 1)
        )
    return quality


class PriorMatchedRule:
    """Per-class thresholds from the class prior (`mode="prior"`; see the module docstring).

    Args:
      positive_threshold: the floor of t+ (min_positive_probability).
      negative_coverage: share of the expected unknown negatives that become pseudo negatives.
    """

    needs_priors = True

    def __init__(self, positive_threshold=0.5, negative_coverage=0.5):
        self.positive_threshold, self.negative_coverage = positive_threshold, negative_coverage

    def thresholds(self, probabilities, known_labels, priors):
        return prior_matched_thresholds(
            probabilities, known_labels, priors, self.positive_threshold, self.negative_coverage
        )


class FixedThresholdRule:
    """The same t+ and t- for every class (`mode="fixed"`)."""

    needs_priors = False

    def __init__(self, positive_threshold=0.5, negative_threshold=0.05):
        self.positive_threshold, self.negative_threshold = positive_threshold, negative_threshold

    def thresholds(self, probabilities, known_labels, priors):
        num_classes = probabilities.shape[1]
        return (
            np.full(num_classes, self.positive_threshold, np.float32),
            np.full(num_classes, self.negative_threshold, np.float32),
        )


# --pseudo_mode name -> rule: `thresholds(probabilities, known, priors)` gives per-class (t+, t-).
RULES = {"prior": PriorMatchedRule, "fixed": FixedThresholdRule}


def make_rule(name, **options):
    """The rule `name` of `RULES`, given the `options` its constructor takes (others are ignored,
    so one set of settings serves every rule)."""
    if name not in RULES:
        raise ValueError(f"unknown pseudo-label mode {name!r}; known: {', '.join(RULES)}")
    rule = RULES[name]
    accepted = inspect.signature(rule).parameters
    return rule(**{key: value for key, value in options.items() if key in accepted})


class PseudoLabelCallback(keras.callbacks.Callback):
    """Refreshes `model.pseudo_labels` on a schedule; logs coverage (and precision/recall).

    Args:
      dataset: the training inputs, unshuffled and unaugmented, in example-id order.
      known_labels: int [N, C] training annotations.
      start_epoch: epochs trained before the first refresh.
      every: refresh period in epochs.
      mode: a name in `RULES` ("prior" or "fixed"), or a rule object.
      priors: float [C] class priors (needed by rules with `needs_priors`).
      positive_threshold: t+ in mode "fixed"; the floor of t+ (min_positive_probability) in "prior".
      negative_threshold: t- in mode "fixed".
      negative_coverage: see `prior_matched_thresholds`.
      true_labels: the hidden full labels when the partial labels were simulated, for monitoring.
      log: a function that prints one line.
    """

    def __init__(
        self,
        dataset,
        known_labels,
        start_epoch,
        every,
        mode="prior",
        priors=None,
        positive_threshold=0.5,
        negative_threshold=0.05,
        negative_coverage=0.5,
        true_labels=None,
        log=print,
    ):
        super().__init__()
        if start_epoch < 0 or every < 1:
            raise ValueError(f"need start_epoch >= 0 and every >= 1, got {start_epoch}, {every}")
        self.rule = (
            mode
            if not isinstance(mode, str)
            else make_rule(
                mode,
                positive_threshold=positive_threshold,
                negative_threshold=negative_threshold,
                negative_coverage=negative_coverage,
            )
        )
        if self.rule.needs_priors and priors is None:
            raise ValueError(f"pseudo-label mode {mode!r} needs priors")
        self.dataset = dataset
        self.known_labels = np.asarray(known_labels)
        self.start_epoch, self.every = start_epoch, every
        self.priors = None if priors is None else np.asarray(priors)
        self.default_threshold = positive_threshold
        self.true_labels = true_labels
        self.log = log
        self.quality = {}

    def is_refresh_epoch(self, epoch):
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every == 0

    def on_epoch_begin(self, epoch, logs=None):
        if not self.is_refresh_epoch(epoch):
            return
        probabilities = predict_probabilities(self.model, self.dataset)
        positive, negative = self.rule.thresholds(probabilities, self.known_labels, self.priors)
        pseudo = assign_pseudo_labels(probabilities, self.known_labels, positive, negative)
        self.model.pseudo_labels.assign(pseudo)
        # A class without unknown entries (t+ = inf) records the floor.
        self.model.pseudo_thresholds.assign(
            np.where(np.isfinite(positive), np.clip(positive, 0.0, 1.0), self.default_threshold)
        )
        self.quality = pseudo_label_quality(pseudo, self.known_labels, self.true_labels)
        self.log(
            f"epoch {epoch + 1}: pseudo labels refreshed: "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v:d}"
                for k, v in self.quality.items()
            )
        )

    def on_epoch_end(self, epoch, logs=None):
        # Figures on refresh epochs only (other epochs did not change the pseudo labels), and
        # only the shares: Keras prints every log value with four decimals, so the counts are in
        # the refresh line instead.
        if logs is not None and self.is_refresh_epoch(epoch):
            logs.update({k: v for k, v in self.quality.items() if isinstance(v, float)})
