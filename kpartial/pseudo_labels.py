"""Pseudo-labelling: per-class thresholds that turn unknown entries into pseudo positives/negatives.

An unknown entry of class c with logit z counts as

    pseudo = +1 if z > t+_c,  -1 if z < t-_c,  0 otherwise.

The inequalities are strict so that ties at a threshold stay unknown. `PseudoLabelCallback`
refreshes the labels on a schedule (first after `start_epoch` epochs, then every `every` epochs)
by ONE streaming pass over the training set without augmentation: batch by batch, the unknown
entries' logits are counted into per-class histograms (`NUM_BINS` bins of width `BIN_WIDTH` on
the logit scale; logits beyond the range land in the end bins), with the known labels looked up
per batch by example id (sparse labels stay sparse). Beyond `HISTOGRAM_EXAMPLES` examples the
histograms count a fixed hashed sample of them (a quantile needs no more, and binning every entry
costs more than predicting it with a small network).

The two sides are kept differently (`PartialLabelModel.resolve_labels` applies them):
- Positives are a snapshot. In the same pass each example keeps its L highest unknown logits above
  the floor of t+ (`PositiveCandidates`); once the thresholds are known, those above t+_c become
  the model's store of pseudo positives, int32 [N, L] (`PartialLabelModel.set_pseudo_labels`).
  They number about prior x unknowns, so a small L holds them (candidates beyond L are counted
  and logged).
- Negatives are online: each step, an unknown entry whose current stop-gradient logit is below
  t-_c counts as a negative. They are most of the unknown entries, so they could not be stored.
Positives are not applied online (z > t+_c in every step) because that feeds on itself: between
refreshes the network raises the scores of its own pseudo positives and of their neighbours, more
entries cross t+, and the pseudo positives' precision falls (figures: benchmarks/README.md,
"Pseudo-label store vs the dense snapshot"). Nothing is N x C: the state is
O(C x NUM_BINS + N x L) during a refresh and O(C + N x L) after it.

A rule of `RULES` (`--pseudo_mode`, its options from `--pseudo_rule_options`) sets the thresholds;
its constructor's defaults are the run's defaults:
- `fixed` (`FixedThresholdRule`): the same t+ and t- for every class (probabilities 0.5, 0.05).
- `prior` (`PriorMatchedRule`): from each class's positive rate pi_c among its unknown entries.
  Among the U_c unknown entries of class c, t+_c lets exactly floor(pi_c U_c) of them through:
  the next candidate's logit (every entry above the floor is a candidate, so this needs no
  histogram and is exact for the rarest class), never below `positive_threshold` (0.5). t-_c is
  the highest histogram edge below which at most `negative_coverage * (1 - pi_c)` (0.1) of them
  lie, so only the most confident share of the expected negatives is labelled. A network that
  cannot yet tell entries apart (all scores in one bin) labels nothing.
Known labels always win.

Quality (coverage, and precision/recall against the hidden true labels when the labels were
simulated) is counted in the same pass, as of the refresh: the histograms are kept per hidden-label
group, so the counts are exact for thresholds on bin edges and at bin resolution otherwise.

The technique owns its switch and its callback: `switched_on`, `off_because` and `is_on` read the
run's `kpartial.config.Config`, and `callbacks` builds what a run adds, so the trainer needs one
call for pseudo labels.
"""

import inspect
import time

import keras
import numpy as np
import tensorflow as tf

from kpartial import class_stats, distribution, evaluation, pipeline
from kpartial.data import parse_options
from kpartial.partial_model import network_of
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


def _sigmoid(logit):
    """float32 probabilities of float64 logits (+-inf give 1 and 0)."""
    return (1.0 / (1.0 + np.exp(-np.asarray(logit, np.float64)))).astype(np.float32)


def prior_matched_negative_thresholds(counts, priors, negative_coverage):
    """Per-class logit t- so that unknown entries are pseudo-labelled negative at a prior's rate.

    t-_c is the highest bin edge below which at most `negative_coverage * (1 - pi_c)` of class c's
    unknown entries lie: the most confident share of its expected negatives.

    Args:
      counts: int [C, NUM_BINS] histogram of the unknown entries' logits per class.
      priors: float [C] positive rates among the unknown entries.
      negative_coverage: share of the expected unknown negatives that become pseudo negatives.

    Returns:
      float64 [C] logits (bin edges); -inf for a class whose share is below the first bin's
      count, or that has no unknown entries.
    """
    counts = np.asarray(counts, np.int64)
    total = counts.sum(axis=1)
    # below[c, k]: entries in bins < k (below edge k); below[:, 0] = 0.
    below = np.concatenate([np.zeros((len(total), 1), np.int64), np.cumsum(counts, axis=1)], axis=1)
    share = negative_coverage * (1.0 - np.asarray(priors, np.float64)) * total
    negative_edge = (below <= share[:, None]).sum(axis=1) - 1
    negative = np.where(negative_edge > 0, bin_edges()[negative_edge], -np.inf)
    return np.where(total == 0, -np.inf, negative)


class PriorMatchedRule:
    """Per-class thresholds from the positive rate among the unknown entries (`mode="prior"`).

    See the module docstring. The defaults are the run's (an empty `--pseudo_rule_options`).

    Args:
      positive_threshold: the floor of t+, a probability: no entry at or below it becomes a pseudo
        positive, whatever the quota.
      negative_coverage: share of the expected unknown negatives that become pseudo negatives.
    """

    needs_priors = True

    def __init__(self, positive_threshold=0.5, negative_coverage=0.1):
        self.positive_threshold, self.negative_coverage = positive_threshold, negative_coverage

    def thresholds(self, counts, priors, candidates, unknown_counts):
        """Logit (t+, t-) [C]: t+ exact from the candidates, t- from the histograms.

        Args:
          counts: int [C, NUM_BINS] histogram of the unknown entries' logits.
          priors: float [C] positive rates among the unknown entries.
          candidates: the refresh's `PositiveCandidates` (floor: `positive_threshold`).
          unknown_counts: int [C] unknown entries per class (all of them, not the histogram's
            sample).

        Returns:
          Two float64 arrays [C] of logits, t- <= t+.
        """
        positive = candidates.prior_matched_thresholds(priors, unknown_counts)
        negative = prior_matched_negative_thresholds(counts, priors, self.negative_coverage)
        return positive, np.minimum(negative, positive)


class FixedThresholdRule:
    """The same t+ and t- for every class (`mode="fixed"`).

    Args:
      positive_threshold: t+, a probability.
      negative_threshold: t-, a probability.
    """

    needs_priors = False

    def __init__(self, positive_threshold=0.5, negative_threshold=0.05):
        self.positive_threshold, self.negative_threshold = positive_threshold, negative_threshold

    def thresholds(self, counts, priors, candidates, unknown_counts):
        """Logit (t+, t-) [C], the same for every class (the arguments only give C)."""
        del priors, candidates, unknown_counts
        num_classes = len(counts)
        return (
            np.full(num_classes, _logit(self.positive_threshold)),
            np.full(num_classes, _logit(self.negative_threshold)),
        )


# --pseudo_mode name -> rule class. A rule's `thresholds(counts [C, NUM_BINS], priors, candidates,
# unknown_counts)` gives logit (t+, t-) [C]; its `positive_threshold` is the candidates' floor.
RULES = {"prior": PriorMatchedRule, "fixed": FixedThresholdRule}


def rule_option_names(name):
    """The options the rule `name` of `RULES` takes (its constructor's arguments)."""
    return tuple(inspect.signature(RULES[name]).parameters) if name in RULES else ()


def make_rule(name, **options):
    """The rule `name` of `RULES` made with `options`.

    Raises:
      ValueError: an unknown rule, or an option the rule does not take.
    """
    if name not in RULES:
        raise ValueError(f"unknown pseudo-label mode {name!r}; known: {', '.join(RULES)}")
    unknown = sorted(set(options) - set(rule_option_names(name)))
    if unknown:
        raise ValueError(
            f"pseudo-label rule {name!r} has no options {', '.join(map(repr, unknown))}; it takes "
            f"{', '.join(rule_option_names(name)) or 'none'}"
        )
    return RULES[name](**options)


def switched_on(config):
    """Whether the config asks for pseudo labels: `on`, or `auto` with kpartial's loss (the
    other methods run as published), and a start epoch >= 0. The data may still turn `auto` off
    (`off_because`)."""
    pseudo = config.pseudo
    wanted = pseudo.switch == "on" or (pseudo.switch == "auto" and config.loss.has_techniques)
    return wanted and pseudo.start_epoch >= 0


def config_error(config):
    """Why the config's pseudo labels cannot run (one line), else ""."""
    if switched_on(config) and config.pseudo.start_epoch >= config.runtime.epochs:
        return (
            f"pseudo_start_epoch={config.pseudo.start_epoch} is not before "
            f"epochs={config.runtime.epochs}, so pseudo labels would never be used; lower it, or "
            "pseudo_labels=off"
        )
    return ""


def rule_of(settings):
    """The rule a `kpartial.config.PseudoLabelConfig` names: `mode` made with `rule_options`.

    Raises:
      ValueError: an unknown mode, or an option the rule does not take.
    """
    return make_rule(settings.mode, **parse_options(settings.rule_options))


def off_because(config, stats):
    """Why `pseudo_labels=auto` leaves pseudo labels off for this data, one line ("" = it does not).

    Two cases, both read from the class statistics (see `kpartial.class_stats`): where the
    annotation depends on the class, the unknown entries' positive rate is only a lower bound and
    pseudo negatives would outnumber the annotations; where the label space is dense, the unknown
    term already targets each class's rate and pseudo positives by that quota add noise. `on`
    refreshes anyway (see `callbacks`).

    Args:
      config: the run's `kpartial.config.Config`.
      stats: the training labels' `kpartial.class_stats.ClassStatistics`.

    Returns:
      The reason, to be logged after "pseudo labels: off, because", or "".
    """
    if config.pseudo.switch != "auto" or not switched_on(config):
        return ""
    if stats.depends_on_class:
        return (
            "the annotation depends on the class (see the class statistics line): the unknown "
            "entries' positive rate is only a lower bound there, and pseudo negatives would "
            "outnumber the annotations; --pseudo_labels=on refreshes anyway (pseudo negatives only)"
        )
    if stats.dense:
        return (
            f"the label space is dense (the unknown entries' mean positive rate "
            f"{np.mean(stats.unknown_priors):.2f} >= {class_stats.DENSE_LABEL_SPACE}): the "
            "unknown term already targets each class's rate, and pseudo positives by that quota "
            "add noise there; --pseudo_labels=on refreshes anyway"
        )
    return ""


def is_on(config, stats):
    """Whether the run makes pseudo labels: switched on by the config and not off for the data.

    The model keeps a pseudo-label store only then (`PartialLabelModel(pseudo_labelling=...)`).
    """
    return switched_on(config) and not off_because(config, stats)


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
        """Records a batch's candidates (graph code: called inside the refresh's `tf.function`).

        Args:
          ids: int [B] example ids: the rows written.
          logits: float [B, C] the batch's logits.
          unknown: bool [B, C] whether each entry is unknown (only those can be candidates).
        """
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
        """Every worker's candidates in every worker.

        Each worker filled the rows of its part (the other rows hold no candidate), so the sum
        over workers is the whole set's.

        Args:
          strategy: the run's `tf.distribute` strategy; nothing to do with one worker.
        """
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
        """The prior rule's logit t+ [C], exact.

        Every entry above the floor is a candidate (unless its example had more than L), so the
        (k + 1)-th largest candidate of class c is the threshold that lets k through: at most
        floor(pi_c U_c) of class c's U_c unknown entries lie strictly above it (ties aside).

        Args:
          priors: float [C] positive rates pi_c among the unknown entries.
          unknown_counts: int [C] unknown entries U_c per class.

        Returns:
          float64 [C] logits, never below the floor; inf for a class without unknown entries.
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
        """The candidates strictly above their class's t+: the model's store of pseudo positives.

        Args:
          thresholds: float [C] logit t+ per class.

        Returns:
          int32 [N, L]: class + 1 per slot; 0 = empty.
        """
        classes = self.classes.numpy()
        threshold = np.concatenate([[np.inf], np.asarray(thresholds, np.float64)])[classes]
        return np.where(self.logits.numpy() > threshold, classes, 0).astype(np.int32)


def in_sample(ids, share):
    """Whether examples belong to the histogram sample: a fixed hash of the id, so every refresh
    (and every worker) counts the same examples.

    Args:
      ids: int [B] example ids.
      share: the sample's share of all examples, in (0, 1].

    Returns:
      bool [B].
    """
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
    # rest. Counted per batch with one 2-D bincount per group, much cheaper than a scatter of one
    # increment per entry.
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
    """Pseudo positives and negatives per histogram row and class under logit thresholds.

    A bin counts as positive when its lower edge is at or above t+, as negative when its upper
    edge is at or below t-: exact for thresholds on bin edges (the prior rule's t-), at bin
    resolution otherwise.

    Args:
      counts: int [..., C, NUM_BINS] histograms.
      positive, negative: float [C] logit t+ and t-.

    Returns:
      (positives, negatives), each int [..., C].
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
        `needs_priors`).
      validation: (dataset, labels) of held-out training examples with their known labels, for
        `min_precision`: if > 0, a class is pseudo-labelled positive only at scores where its
        held-out known entries are positive at least this often. For a class with at least 3
        validation positives, t+_c is raised to the lowest validation score with that precision
        (and 3 positives above it), or to inf (no pseudo positives) if no score has it; a class
        with fewer validation positives keeps the rule's t+ (no evidence either way).
      true_labels: the hidden full labels when the partial labels were simulated, for monitoring
        (int [N, C] or `SparseLabels`).
      log: a function that prints one line.
      histogram_examples: at most this many examples (a fixed hash of their ids) are counted into
        the histograms; the thresholds' quantiles need no more, and binning every entry of a
        large set would cost several inference passes.

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
        histogram_examples=HISTOGRAM_EXAMPLES,
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
        self.priors = None if priors is None else np.asarray(priors)
        self.log = log
        self.histogram_examples = histogram_examples
        self.quality = {}

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
        num_examples, slots = model.pseudo_store_shape
        floor = _logit(self.rule.positive_threshold)
        candidates = PositiveCandidates(num_examples, slots, floor)
        share = min(1.0, self.histogram_examples / max(num_examples, 1))
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
        unknown_counts = num_examples - known.positives_per_class() - known.negatives_per_class()
        positive, negative = self.rule.thresholds(
            counts.sum(axis=0), self.priors, candidates, unknown_counts
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
            np.where(unknown, _sigmoid(positive), self.rule.positive_threshold),
            _sigmoid(negative),
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
    simulated = config.data.known_fraction < 1.0 or bool(config.data.simulation)
    rates = np.zeros_like(stats.priors) if stats.depends_on_class else stats.unknown_priors
    validation = None
    if inputs.validation is not None:
        validation = (datasets.validation, inputs.validation.labels)
    return [
        PseudoLabelCallback(
            datasets.train_inputs,
            inputs.known,  # looked up per batch: sparse labels stay sparse
            config.pseudo,
            rates,
            validation=validation,
            true_labels=inputs.train.labels if simulated else None,
            log=log,
        )
    ]
