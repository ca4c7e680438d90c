"""Pseudo-label thresholds: the rules that set them, and the refresh pass's statistics.

An unknown entry of class c with logit z counts as

    pseudo = +1 if z > t+_c,  -1 if z < t-_c,  0 otherwise.

The inequalities are strict so that ties at a threshold stay unknown. This module holds what a
refresh (`kpartial.pseudo_labels.PseudoLabelCallback`) computes the thresholds from, and the
rules that compute them; the switch, the schedule and the model's store are
`kpartial.pseudo_labels`'s.

The statistics come from ONE streaming pass over the training set without augmentation
(`HistogramPass`): batch by batch, the unknown entries' logits are counted into per-class
histograms (`NUM_BINS` bins of width `BIN_WIDTH` on the logit scale; logits beyond the range land
in the end bins), with the known labels looked up per batch by example id (sparse labels stay
sparse). The histograms may count a fixed hashed sample of the examples (`in_sample`): a quantile
needs no more, and binning every entry costs more than predicting it with a small network. In the
same pass each example keeps its L highest unknown logits above the floor of t+
(`PositiveCandidates`); once the thresholds are known, those above t+_c are the pseudo positives,
int32 [N, L]. They number about prior x unknowns, so a small L holds them (candidates beyond L
are counted). Nothing is N x C: the pass holds O(C x NUM_BINS + N x L).

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

Quality (coverage, and precision/recall against the hidden true labels when the labels were
simulated) is counted in the same pass, as of the refresh (`pseudo_label_quality`): the histograms
are kept per hidden-label group, so the counts are exact for thresholds on bin edges and at bin
resolution otherwise.
"""

import inspect

import numpy as np
import tensorflow as tf

from kpartial import distribution, pipeline
from kpartial.data import parse_options

# The logit histogram: NUM_BINS bins of BIN_WIDTH from LOWEST_LOGIT (sigmoid(16) = 1 - 1e-7).
NUM_BINS = 1024
LOWEST_LOGIT = -16.0
BIN_WIDTH = 32.0 / NUM_BINS


def bin_edges():
    """float64 [NUM_BINS + 1]: the logit at the lower edge of each bin, and the top edge."""
    return LOWEST_LOGIT + BIN_WIDTH * np.arange(NUM_BINS + 1)


def logit(probability):
    """float64 logits of probabilities (0 and 1 give -inf and +inf)."""
    with np.errstate(divide="ignore"):
        return np.log(probability) - np.log1p(-np.asarray(probability, np.float64))


def sigmoid(logits):
    """float32 probabilities of float64 logits (+-inf give 1 and 0)."""
    return (1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))).astype(np.float32)


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
            np.full(num_classes, logit(self.positive_threshold)),
            np.full(num_classes, logit(self.negative_threshold)),
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


def rule_of(settings):
    """The rule a `kpartial.config.PseudoLabelConfig` names: `mode` made with `rule_options`.

    Raises:
      ValueError: an unknown mode, or an option the rule does not take.
    """
    return make_rule(settings.mode, **parse_options(settings.rule_options))


# Where more than this share of a batch's entries lie above the floor, a refresh ranks its
# candidates by a top-k over the batch instead of gathering and sorting them: the two cost the same
# at 1-3% on 2 CPU cores, for 159 to 9,600 classes (benchmarks/README.md, "Refresh candidates").
TOP_K_CANDIDATE_SHARE = 0.02


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

    def reset(self):
        """Forgets every candidate (before a new pass)."""
        self.classes.assign(tf.zeros_like(self.classes))
        self.logits.assign(tf.fill(self.logits.shape, -np.inf))
        self.over_cap.assign(0)

    def add(self, ids, logits, known):
        """Records a batch's candidates (graph code: called inside the refresh's `tf.function`).

        Args:
          ids: int [B] example ids: the rows written.
          logits: float [B, C] the batch's logits.
          known: int [K, 2] the batch's known entries (row, class), distinct, which cannot be
            candidates (`pipeline.known_entries_lookup`).
        """
        known = tf.cast(known, tf.int32)
        above = tf.cast(tf.where(logits > self.floor), tf.int32)  # [M, 2]
        if logits.shape[1] is None:  # a top-k needs the classes' static count
            classes, values, over = self._sorted(logits, above, known)
        else:
            # Gathering and sorting the entries above the floor costs about their number; a top-k
            # costs about B x C whatever the logits, so it is the cheaper where the candidates are
            # many (an early network whose scores are high everywhere).
            entries = tf.cast(tf.size(logits), tf.float32)
            many = tf.cast(tf.shape(above)[0], tf.float32) > TOP_K_CANDIDATE_SHARE * entries
            classes, values, over = tf.cond(
                many,
                lambda: self._top_k(logits, above, known),
                lambda: self._sorted(logits, above, known),
            )
        ids = tf.expand_dims(tf.cast(ids, tf.int32), -1)
        self.classes.scatter_nd_update(ids, classes)
        self.logits.scatter_nd_update(ids, values)
        self.over_cap.assign_add(over)

    def _sorted(self, logits, where, known):
        """(classes + 1, logits, over the cap) [B, L] of the entries `where` lists above the
        floor, ranked."""
        # `tf.where` lists them row by row, classes ascending; the stable sorts keep that order
        # among equal logits, so ties go to the lower class, as a top-k's do. The known ones are
        # dropped by looking their flat index up among the known entries' (few as well).
        num_classes = tf.shape(logits)[1]
        flat = where[:, 0] * num_classes + where[:, 1]
        known_flat = tf.concat(
            [tf.sort(known[:, 0] * num_classes + known[:, 1]), [tf.int32.max]], axis=0
        )
        is_known = tf.equal(tf.gather(known_flat, tf.searchsorted(known_flat, flat)), flat)
        where = tf.boolean_mask(where, tf.logical_not(is_known))
        values = tf.gather_nd(logits, where)
        order = tf.argsort(values, direction="DESCENDING", stable=True)
        order = tf.gather(order, tf.argsort(tf.gather(where[:, 0], order), stable=True))
        where, values = tf.gather(where, order), tf.gather(values, order)
        rows, classes = where[:, 0], where[:, 1]
        batch = tf.shape(logits)[0]
        starts = tf.cumsum(tf.math.bincount(rows, minlength=batch, maxlength=batch), exclusive=True)
        rank = tf.range(tf.shape(rows)[0]) - tf.gather(starts, rows)
        kept = rank < self.slots
        slots = tf.boolean_mask(tf.stack([rows, rank], axis=1), kept)
        shape = tf.stack([batch, self.slots])
        classes = tf.scatter_nd(slots, tf.boolean_mask(classes, kept) + 1, shape)
        values = tf.tensor_scatter_nd_update(
            tf.fill(shape, -np.inf), slots, tf.boolean_mask(values, kept)
        )
        over = tf.size(rank, out_type=tf.int64) - tf.math.count_nonzero(kept)
        return classes, values, over

    def _top_k(self, logits, above, known):
        """The same as `_sorted`, from a top-k over every unknown entry of the batch."""
        unknown_logits = tf.tensor_scatter_nd_update(
            logits, known, tf.fill(tf.shape(known)[:1], tf.constant(-np.inf, logits.dtype))
        )
        k = min(self.slots, int(logits.shape[1]))
        values, classes = tf.math.top_k(unknown_logits, k)  # ties: the lower class first
        valid = values > self.floor
        padding = [[0, 0], [0, self.slots - k]]
        classes = tf.pad(tf.where(valid, classes + 1, 0), padding)
        values = tf.pad(tf.where(valid, values, -np.inf), padding, constant_values=-np.inf)
        known_above = tf.math.count_nonzero(tf.gather_nd(logits, known) > self.floor)
        unknown_above = tf.cast(tf.shape(above)[0], tf.int64) - known_above
        return classes, values, unknown_above - tf.math.count_nonzero(valid)

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


def sampled(dataset, share, batch_size=1024):
    """The examples of `dataset` (batches of `{"x", "id"}`) that are `in_sample`, in full batches.

    A pass that counts only the sample iterates these: it predicts and bins just the sample, and
    each of its batches is full, where the sample's rows spread over every batch of `dataset`
    would make each batch pay for a whole [C, NUM_BINS] histogram for a few rows.
    """

    # Masked and rebatched batch by batch: unbatching and filtering example by example costs
    # tf.data about as much as the pass itself.
    def sample_of(batch):
        rows = in_sample(batch["id"], share)
        return {key: tf.boolean_mask(value, rows) for key, value in batch.items()}

    return dataset.map(sample_of).rebatch(batch_size).prefetch(tf.data.AUTOTUNE)


class HistogramPass:
    """Per-class histograms of the unknown entries' logits, in one pass over a dataset.

    Made once per run and called at every refresh: its counts and its `tf.function`s are kept, so
    a refresh reuses the compiled passes instead of tracing new ones. Binning every entry costs
    several times what predicting it costs with a small network, so the histograms may count a
    hashed `share` of the examples (`in_sample`), in a pass over that sample alone (`sampled`);
    the candidates then see every example in a pass of their own.

    Args:
      network: maps a batch's inputs to [B, C] logits.
      known_entries: `pipeline.known_entries_lookup` of the training labels: ids -> int [K, 2].
      num_classes: C.
      truth_lookup: `pipeline.label_lookup` of the hidden true labels, or None.
      candidates: a `PositiveCandidates` that collects in the same pass, or None.
      share: the share of examples counted into the histograms (1 = all).
    """

    def __init__(
        self, network, known_entries, num_classes, truth_lookup=None, candidates=None, share=1.0
    ):
        self.groups = 1 if truth_lookup is None else 3
        self.candidates, self.share = candidates, share
        # The hidden-label groups count only their (few) entries: +1 and unknown; the -1 group is
        # the rest. Counted per batch with one 2-D bincount per group, much cheaper than a
        # scatter of one increment per entry.
        counts = tf.Variable(tf.zeros([self.groups, num_classes, NUM_BINS], tf.int32), False)
        self.counts = counts

        def add(group, bins, where=None):
            if where is not None:
                bins = tf.where(where, bins, NUM_BINS)  # NUM_BINS: not counted
            histogram = tf.math.bincount(
                tf.transpose(bins),  # [C, B]
                minlength=NUM_BINS + 1,
                maxlength=NUM_BINS + 1,
                axis=-1,
                dtype=tf.int32,
            )
            counts.scatter_add(
                tf.IndexedSlices(histogram[None, :, :NUM_BINS], tf.constant([group]))
            )

        def scored(batch):
            ids = batch["id"]
            logits = tf.cast(network(batch["x"], training=False), tf.float32)
            return ids, logits, known_entries(ids)

        def collect(ids, logits, known):
            if candidates is not None:
                candidates.add(ids, logits, known)

        def count(ids, logits, known):
            bins = tf.cast(tf.floor((logits - LOWEST_LOGIT) / BIN_WIDTH), tf.int32)
            bins = tf.clip_by_value(bins, 0, NUM_BINS - 1)
            if truth_lookup is None:
                # Every entry, then the (few) known ones taken out: no [B, C] mask of the
                # unknown entries.
                add(0, bins)
                known_bins = tf.gather_nd(bins, known)
                group = tf.zeros_like(known_bins)
                counts.scatter_nd_sub(
                    tf.stack([group, known[:, 1], known_bins], axis=1), tf.ones_like(known_bins)
                )
                return
            unknown = tf.equal(
                tf.scatter_nd(known, tf.ones(tf.shape(known)[:1], tf.int8), tf.shape(bins)), 0
            )
            truth = truth_lookup(ids)
            add(0, bins, unknown)
            add(1, bins, unknown & (truth > 0))
            add(2, bins, unknown & tf.equal(truth, 0))

        def collect_and_count(batch):
            scores = scored(batch)
            collect(*scores)
            count(*scores)

        # `count` counts the histograms: of the whole set, collecting the candidates in the same
        # pass, or of the sample alone, after `collect` passed over every example (each traces
        # at its first call, so an unused one costs nothing).
        self.count = pipeline.PerBatch(
            collect_and_count if share >= 1.0 else lambda batch: count(*scored(batch))
        )
        self.collect = pipeline.PerBatch(lambda batch: collect(*scored(batch)))

    def __call__(self, dataset):
        """int64 [G, C, NUM_BINS] of `dataset` (batches of `{"x", "id"}`, finite, unaugmented):
        G = 1 without truth, else 3 (hidden label unknown, +1, -1). Resets the candidates first."""
        self.counts.assign(tf.zeros_like(self.counts))
        if self.candidates is not None:
            self.candidates.reset()
        if self.share >= 1.0:
            self.count(dataset)
        else:
            if self.candidates is not None:
                self.collect(dataset)
            self.count(sampled(dataset, self.share))
        result = self.counts.numpy().astype(np.int64)
        if self.groups == 3:  # [all, +1, unknown] -> [unknown, +1, -1]
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
      counts: a `HistogramPass`'s output, [1 or 3, C, NUM_BINS].
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
