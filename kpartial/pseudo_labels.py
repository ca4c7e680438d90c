"""Pseudo-labelling: per-class thresholds that turn unknown entries into pseudo positives/negatives.

An unknown entry of class c with logit z counts as

    pseudo = +1 if z > t+_c,  -1 if z < t-_c,  0 otherwise.

The inequalities are strict so that ties at a threshold stay unknown. This module refreshes the
labels on a schedule (first after `start_epoch` epochs, then every `every` epochs) by ONE
streaming pass over the training set without augmentation: batch by batch, the unknown entries'
logits are counted into per-class histograms (`NUM_BINS` bins of width `BIN_WIDTH` on the logit
scale; logits beyond the range land in the end bins), with the known labels looked up per batch by
example id (sparse labels stay sparse). The [C] thresholds come from the histograms. Beyond
`HISTOGRAM_EXAMPLES` examples the histograms count a fixed hashed sample of them (a quantile
needs no more, and binning every entry costs more than predicting it with a small network).

The two sides are kept differently (`PartialLabelModel.resolve_labels` applies them):
- Positives are a snapshot. In the same pass each example keeps its L highest unknown logits above
  the floor of t+ (`PositiveCandidates`); once the thresholds are known, those above t+_c become
  the model's `pseudo_positives` store, int32 [N, L]. They number about prior x unknowns, so a
  small L holds them (candidates beyond L are counted and logged).
- Negatives are online: each step, an unknown entry whose current stop-gradient logit is below
  t-_c counts as a negative. They are most of the unknown entries, so they could not be stored.
An online positive rule (z > t+_c each step) was measured first and rejected: between refreshes
the network raises the scores of its own pseudo positives and of their neighbours, more entries
cross t+, and on the demo the pseudo-positive precision fell from 0.97 to 0.70 within ten epochs
(mAP 74.0 against the snapshot's 81.3). Nothing is N x C: the state is O(C x NUM_BINS + N x L)
during a refresh and O(C + N x L) after it.

Thresholds are either fixed (`mode="fixed"`: t+ and t- the same for every class) or derived from
the class prior pi_c (`mode="prior"`): among the U_c unknown entries of class c, t+_c lets exactly
floor(pi_c U_c) of them through (the next candidate's logit: every entry above the floor is a
candidate, so this needs no histogram and is exact for the rarest class), never below
`min_positive_probability`; t-_c is the highest histogram edge below
which at most `negative_coverage * (1 - pi_c)` of them lies, so only the most confident share of
the expected negatives is labelled. A network that cannot yet tell entries apart (all scores in one
bin) labels nothing. Known labels always win.

Quality (coverage, and precision/recall against the hidden true labels when the labels were
simulated) is counted in the same pass, as of the refresh: the histograms are kept per hidden-label
group, so the counts are exact for thresholds on bin edges (the prior rule's) and at bin
resolution otherwise.
"""

import inspect
import time

import keras
import numpy as np
import tensorflow as tf

from kpartial import distribution, evaluation, pipeline
from kpartial.sparse_labels import as_sparse

# The logit histogram: NUM_BINS bins of BIN_WIDTH from LOWEST_LOGIT (sigmoid(16) = 1 - 1e-7).
NUM_BINS = 1024
LOWEST_LOGIT = -16.0
BIN_WIDTH = 32.0 / NUM_BINS


# Examples counted into a refresh's histograms at most (see `PseudoLabelCallback`).
HISTOGRAM_EXAMPLES = 16384


def bin_edges():
    """float64 [NUM_BINS + 1]: the logit at the lower edge of each bin, and the top edge."""
    return LOWEST_LOGIT + BIN_WIDTH * np.arange(NUM_BINS + 1)


def _logit(probability):
    with np.errstate(divide="ignore"):
        return np.log(probability) - np.log1p(-np.asarray(probability, np.float64))


def prior_matched_thresholds(counts, priors, min_positive_probability=0.5, negative_coverage=0.5):
    """Per-class logit (t+, t-) so that unknown entries are pseudo-labelled at the prior's rates.

    Args:
      counts: int [C, NUM_BINS] histogram of the unknown entries' logits per class.
      priors: float [C] class priors.
      min_positive_probability: floor of t+ (a probability).
      negative_coverage: share of the expected unknown negatives that become pseudo negatives.

    Returns:
      Two float64 arrays [C] of logits (bin edges, or the floor). A class whose share is below one
      bin's worth at the end gets t+ = inf (or t- = -inf); without unknown entries, both.
    """
    counts = np.asarray(counts, np.int64)
    total = counts.sum(axis=1)
    # above[c, k]: entries in bins k.. (at or above edge k); above[:, NUM_BINS] = 0.
    above = total[:, None] - np.concatenate(
        [np.zeros((len(total), 1), np.int64), np.cumsum(counts, axis=1)], axis=1
    )
    priors = np.asarray(priors, np.float64)
    edges = np.concatenate([bin_edges()[:-1], [np.inf]])  # nothing lies above the top bin's edge
    positive_edge = np.argmax(above <= (priors * total)[:, None], axis=1)
    positive = np.maximum(edges[positive_edge], _logit(min_positive_probability))
    below = total[:, None] - above
    negative_edge = (below <= (negative_coverage * (1.0 - priors) * total)[:, None]).sum(1) - 1
    negative = np.where(negative_edge > 0, bin_edges()[negative_edge], -np.inf)
    negative = np.minimum(negative, positive)
    empty = total == 0
    return np.where(empty, np.inf, positive), np.where(empty, -np.inf, negative)


class PriorMatchedRule:
    """Per-class thresholds from the class prior (`mode="prior"`; see the module docstring).

    Args:
      positive_threshold: the floor of t+ (min_positive_probability).
      negative_coverage: share of the expected unknown negatives that become pseudo negatives.
    """

    needs_priors = True

    def __init__(self, positive_threshold=0.5, negative_coverage=0.5):
        self.positive_threshold, self.negative_coverage = positive_threshold, negative_coverage

    def thresholds(self, counts, priors, candidates=None, unknown_counts=None):
        """Logit (t+, t-) [C]; t+ exactly from `candidates` when given (with `unknown_counts`)."""
        positive, negative = prior_matched_thresholds(
            counts, priors, self.positive_threshold, self.negative_coverage
        )
        if candidates is not None:
            positive = candidates.prior_matched_thresholds(priors, unknown_counts)
            negative = np.minimum(negative, positive)
        return positive, negative


class FixedThresholdRule:
    """The same t+ and t- for every class (`mode="fixed"`)."""

    needs_priors = False

    def __init__(self, positive_threshold=0.5, negative_threshold=0.05):
        self.positive_threshold, self.negative_threshold = positive_threshold, negative_threshold

    def thresholds(self, counts, priors, candidates=None, unknown_counts=None):
        del candidates, unknown_counts
        num_classes = len(counts)
        return (
            np.full(num_classes, _logit(self.positive_threshold)),
            np.full(num_classes, _logit(self.negative_threshold)),
        )


# --pseudo_mode name -> rule: `thresholds(counts [C, NUM_BINS], priors)` gives logit (t+, t-) [C].
RULES = {"prior": PriorMatchedRule, "fixed": FixedThresholdRule}


def make_rule(name, **options):
    """The rule `name` of `RULES`, given the `options` its constructor takes (others are ignored,
    so one set of settings serves every rule)."""
    if name not in RULES:
        raise ValueError(f"unknown pseudo-label mode {name!r}; known: {', '.join(RULES)}")
    rule = RULES[name]
    accepted = inspect.signature(rule).parameters
    return rule(**{key: value for key, value in options.items() if key in accepted})


class PositiveCandidates:
    """Each example's L highest unknown logits above `floor`, collected during a refresh pass.

    Args:
      num_examples: N (example ids are rows).
      slots: L.
      floor: a logit; only entries above it can become pseudo positives (the floor of t+).
    """

    def __init__(self, num_examples, slots, floor):
        self.slots, self.floor = slots, float(floor)
        self.classes = tf.Variable(tf.zeros([num_examples, slots], tf.int32), trainable=False)
        self.logits = tf.Variable(tf.fill([num_examples, slots], -np.inf), trainable=False)
        self.over_cap = tf.Variable(tf.constant(0, tf.int64), trainable=False)

    def add(self, ids, logits, unknown):
        """Graph code: records rows `ids` of float [B, C] `logits` (bool `unknown` [B, C])."""
        scores = tf.where(unknown & (logits > self.floor), logits, -np.inf)
        k = min(self.slots, scores.shape[1])
        values, index = tf.math.top_k(scores, k)
        kept = values > -np.inf
        padding = [[0, 0], [0, self.slots - k]]
        classes = tf.pad(tf.where(kept, index + 1, 0), padding)
        values = tf.pad(values, padding, constant_values=-np.inf)
        rows = tf.expand_dims(tf.cast(ids, tf.int32), -1)
        self.classes.scatter_nd_update(rows, classes)
        self.logits.scatter_nd_update(rows, values)
        over = tf.math.count_nonzero(scores > -np.inf) - tf.math.count_nonzero(kept)
        self.over_cap.assign_add(over)

    def sum_across_workers(self, strategy):
        """Every worker's candidates in every worker: each filled the rows of its part (the other
        rows hold no candidate), so the sum over workers is the whole set's."""
        if distribution.place(strategy).count == 1:
            return
        classes = self.classes.numpy()
        logits = np.where(classes > 0, self.logits.numpy(), 0.0).astype(np.float32)
        classes = distribution.sum_across_workers(classes, strategy)
        logits = distribution.sum_across_workers(logits, strategy)
        self.classes.assign(classes)
        self.logits.assign(np.where(classes > 0, logits, -np.inf).astype(np.float32))
        self.over_cap.assign(distribution.sum_across_workers(self.over_cap.numpy(), strategy))

    def prior_matched_thresholds(self, priors, unknown_counts):
        """Logit t+ [C], exact: at most floor(pi_c U_c) of class c's U_c unknown entries lie
        strictly above it (ties aside), never below the floor; inf for a class without unknowns.

        Every entry above the floor is a candidate (unless its example had more than L), so the
        (k + 1)-th largest candidate of class c is the threshold that lets k through.
        """
        priors = np.asarray(priors, np.float64)
        unknown_counts = np.asarray(unknown_counts, np.int64)
        classes, logits = self.classes.numpy(), self.logits.numpy()
        kept = classes > 0
        classes, logits = classes[kept] - 1, logits[kept]
        order = np.lexsort((-logits, classes))
        classes, logits = classes[order], logits[order]
        num_classes = len(priors)
        start = np.searchsorted(classes, np.arange(num_classes))
        count = np.bincount(classes, minlength=num_classes)
        k = np.floor(priors * unknown_counts).astype(np.int64)
        positive = np.full(num_classes, self.floor)
        enough = count > k
        positive[enough] = np.maximum(logits[start[enough] + k[enough]], self.floor)
        return np.where(unknown_counts > 0, positive, np.inf)

    def positives(self, thresholds):
        """int32 [N, L] store (class + 1; 0 = empty): the candidates above their class's logit t+."""
        classes = self.classes.numpy()
        threshold = np.concatenate([[np.inf], np.asarray(thresholds, np.float64)])[classes]
        return np.where(self.logits.numpy() > threshold, classes, 0).astype(np.int32)


def in_sample(ids, share):
    """bool [B]: whether example `ids` belong to the histogram sample (a fixed hash of the id)."""
    hashed = tf.math.floormod(tf.cast(ids, tf.int64) * 2654435761, 2**32)
    return hashed < int(share * 2**32)


def score_histograms(
    network, dataset, known_lookup, num_classes, truth_lookup=None, candidates=None, share=1.0
):
    """Per-class histograms of the unknown entries' logits, in one pass over `dataset`.

    Binning every entry costs several times what predicting it costs with a small network, so the
    histograms may count a hashed `share` of the examples (`in_sample`); the candidates always
    see every example.

    Args:
      network: maps a batch's inputs to [B, C] logits.
      dataset: batches of `{"x", "id"}`, finite, without augmentation.
      known_lookup: `pipeline.label_lookup` of the training labels: ids -> int8 [B, C].
      num_classes: C.
      truth_lookup: the same for the hidden true labels, or None.
      candidates: a `PositiveCandidates` that collects in the same pass, or None.
      share: the share of examples counted into the histograms (1 = all).

    Returns:
      int64 [G, C, NUM_BINS]: G = 1 without truth, else 3 (hidden label unknown, +1, -1).
    """
    groups = 1 if truth_lookup is None else 3
    # The hidden-label groups count only their (few) entries: +1 and unknown; the -1 group is the
    # rest. Counted per batch with one 2-D bincount per group (a scatter of one increment per
    # entry measured 7x slower).
    counts = tf.Variable(tf.zeros([groups, num_classes, NUM_BINS], tf.int32), trainable=False)

    def add(group, bins, where):
        bins = tf.transpose(tf.where(where, bins, NUM_BINS))  # [C, B]; NUM_BINS = not counted
        histogram = tf.math.bincount(
            bins, minlength=NUM_BINS + 1, maxlength=NUM_BINS + 1, axis=-1, dtype=tf.int32
        )
        counts.scatter_add(tf.IndexedSlices(histogram[None, :, :NUM_BINS], tf.constant([group])))

    @tf.function
    def count(dataset):
        for batch in dataset:
            ids = batch["id"]
            logits = tf.cast(network(batch["x"], training=False), tf.float32)
            unknown = tf.equal(known_lookup(ids), 0)
            if candidates is not None:
                candidates.add(ids, logits, unknown)
            if share < 1.0:
                rows = in_sample(ids, share)
                ids, logits, unknown = (tf.boolean_mask(x, rows) for x in (ids, logits, unknown))
            bins = tf.cast(tf.floor((logits - LOWEST_LOGIT) / BIN_WIDTH), tf.int32)
            bins = tf.clip_by_value(bins, 0, NUM_BINS - 1)
            add(0, bins, unknown)
            if truth_lookup is not None:
                truth = truth_lookup(ids)
                add(1, bins, unknown & (truth > 0))
                add(2, bins, unknown & tf.equal(truth, 0))

    count(dataset)
    result = counts.numpy().astype(np.int64)
    if groups == 3:  # [all, +1, unknown] -> [unknown, +1, -1]
        result = np.stack([result[2], result[1], result[0] - result[1] - result[2]])
    return result


def labelled_counts(counts, positive, negative):
    """(pseudo positives, pseudo negatives) per histogram row under logit thresholds [C].

    A bin counts as positive when its lower edge is at or above t+, as negative when its upper
    edge is at or below t-: exact for thresholds on bin edges.
    """
    lower = bin_edges()[:-1]
    is_positive = lower[None, :] >= np.asarray(positive)[:, None]
    is_negative = (lower + BIN_WIDTH)[None, :] <= np.asarray(negative)[:, None]
    is_negative &= ~is_positive
    return (counts * is_positive).sum(axis=-1), (counts * is_negative).sum(axis=-1)


def pseudo_label_quality(counts, positive, negative):
    """Coverage of unknown entries and, given hidden-label groups, precision and recall.

    Args:
      counts: `score_histograms`'s output, [1 or 3, C, NUM_BINS].
      positive, negative: logit thresholds [C].

    Returns:
      dict with `pseudo_coverage` (share of unknown entries with a pseudo label),
      `pseudo_positives`, `pseudo_negatives` and, with hidden labels, `pseudo_pos_precision`,
      `pseudo_pos_recall` (share of hidden positives found) and `pseudo_neg_precision`.
    """
    positives, negatives = (x.sum(axis=1) for x in labelled_counts(counts, positive, negative))
    unknown = counts.sum()
    quality = {
        "pseudo_coverage": float((positives.sum() + negatives.sum()) / max(unknown, 1)),
        "pseudo_positives": int(positives.sum()),
        "pseudo_negatives": int(negatives.sum()),
    }
    if len(counts) == 3:
        hidden_positives = counts[1].sum()
        quality["pseudo_pos_precision"] = float(positives[1] / max(positives.sum(), 1))
        quality["pseudo_pos_recall"] = float(positives[1] / max(hidden_positives, 1))
        quality["pseudo_neg_precision"] = float(negatives[2] / max(negatives.sum(), 1))
    return quality


class PseudoLabelCallback(keras.callbacks.Callback):
    """Refreshes the model's pseudo-label thresholds on a schedule; logs coverage (and quality).

    Args:
      dataset: the training inputs, unshuffled and unaugmented (`{"x", "id"}` batches); with
        several workers, this worker's part of them (the statistics are summed across workers).
      known_labels: the training annotations, int [N, C] or `SparseLabels` (never made dense).
      start_epoch: epochs trained before the first refresh.
      every: refresh period in epochs.
      mode: a name in `RULES` ("prior" or "fixed"), or a rule object.
      priors: float [C] class priors (needed by rules with `needs_priors`).
      positive_threshold: t+ in mode "fixed"; the floor of t+ (min_positive_probability) in "prior".
      negative_threshold: t- in mode "fixed".
      negative_coverage: see `prior_matched_thresholds`.
      true_labels: the hidden full labels when the partial labels were simulated, for monitoring
        (int [N, C] or `SparseLabels`).
      log: a function that prints one line.
      histogram_examples: at most this many examples (a fixed hash of their ids) are counted into
        the histograms; the thresholds' quantiles need no more, and binning every entry of a
        large set would cost several inference passes.
      validation: (dataset, labels) of held-out training examples with their known labels, for
        `min_precision`.
      min_precision: if > 0, a class is pseudo-labelled positive only at scores where its
        held-out known entries are positive at least this often: for a class with at least 3
        validation positives, t+_c is raised to the lowest validation score with that precision
        (and 3 positives above it), or to inf (no pseudo positives) if no score has it; a class
        with fewer validation positives keeps the rule's t+ (no evidence either way).
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
        histogram_examples=HISTOGRAM_EXAMPLES,
        validation=None,
        min_precision=0.0,
    ):
        super().__init__()
        self.histogram_examples = histogram_examples
        self.validation, self.min_precision = validation, float(min_precision)
        if self.min_precision and validation is None:
            raise ValueError("min_precision needs validation data (held-out known labels)")
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
        self.known_labels, self.true_labels = known_labels, true_labels
        self.start_epoch, self.every = start_epoch, every
        self.priors = None if priors is None else np.asarray(priors)
        self.default_threshold = positive_threshold
        self.log = log
        self.quality = {}

    def is_refresh_epoch(self, epoch):
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every == 0

    def refresh(self):
        """One streaming pass: new thresholds and stored positives into the model; the quality."""
        started = time.perf_counter()
        model = self.model
        network = getattr(model, "network", model)
        truth = self.true_labels
        store = model.pseudo_positives
        candidates = PositiveCandidates(*store.shape, _logit(self.rule.positive_threshold))
        share = min(1.0, self.histogram_examples / max(store.shape[0], 1))
        counts = score_histograms(
            network,
            self.dataset,
            pipeline.label_lookup(self.known_labels),
            self.known_labels.shape[1],
            None if truth is None else pipeline.label_lookup(truth),
            candidates,
            share,
        )
        # Each worker passed over its part of the examples: the statistics of the whole set,
        # identical on every worker, before any threshold is computed.
        strategy = model.distribute_strategy
        counts = distribution.sum_across_workers(counts, strategy)
        candidates.sum_across_workers(strategy)
        known = as_sparse(self.known_labels)
        unknown_counts = store.shape[0] - known.positives_per_class() - known.negatives_per_class()
        positive, negative = self.rule.thresholds(
            counts.sum(axis=0), self.priors, candidates, unknown_counts
        )
        validated = None
        if self.min_precision:
            positive, validated = self._validated(positive, network)
            negative = np.minimum(negative, positive)
        stored = candidates.positives(positive)
        store.assign(stored)
        # A class without unknown entries (t+ = inf) records the floor: no entry reads it.
        unknown = counts.sum(axis=(0, 2)) > 0
        probability = 1.0 / (1.0 + np.exp(-positive))
        model.pseudo_thresholds.assign(
            np.where(unknown, probability, self.default_threshold).astype(np.float32)
        )
        model.pseudo_negative_thresholds.assign(
            (1.0 / (1.0 + np.exp(-negative))).astype(np.float32)
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
        """(t+ raised to the validated precision floors, how many classes may have positives)."""
        dataset, labels = self.validation
        scores = evaluation.model_scores(network, dataset, labels)
        floors = scores.precision_floors(self.min_precision)
        finite = np.isfinite(floors)
        # Just below the floor: the rule is strict (z > t+) and the floor's own score qualifies.
        logits = np.nextafter(_logit(np.clip(floors, 0.0, 1.0)), -np.inf)
        floors = np.where(finite, logits, floors)  # inf: no precise score; -inf: no evidence
        raised = np.maximum(positive, floors)
        return raised, int(np.count_nonzero(finite))

    def on_epoch_begin(self, epoch, logs=None):
        if not self.is_refresh_epoch(epoch):
            return
        self.quality = self.refresh()
        self.log(
            f"epoch {epoch + 1}: pseudo labels refreshed: "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v:d}"
                for k, v in self.quality.items()
            )
        )

    def on_epoch_end(self, epoch, logs=None):
        # Figures on refresh epochs only (other epochs did not change the thresholds), and only
        # the shares: Keras prints every log value with four decimals, so the counts are in the
        # refresh line instead.
        if logs is not None and self.is_refresh_epoch(epoch):
            logs.update({k: v for k, v in self.quality.items() if isinstance(v, float)})
