"""Tests for kpartial.pseudo_label_rules (histograms, thresholds, quality) and
kpartial.pseudo_labels (switch, callback), and for the train step's rule (stored positives, online
negatives) as seen by compiled code."""

import dataclasses
import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpartial import class_stats, data, losses, models, pipeline, pseudo_label_rules, pseudo_labels
from kpartial.config import Config, PseudoLabelConfig
from kpartial.partial_model import PartialLabelModel
from kpartial.pseudo_label_rules import (
    BIN_WIDTH,
    NUM_BINS,
    FixedThresholdRule,
    HistogramPass,
    PositiveCandidates,
    PriorMatchedRule,
    bin_edges,
    in_sample,
    make_rule,
    prior_matched_negative_thresholds,
    pseudo_label_quality,
    rule_of,
)
from kpartial.pseudo_labels import PseudoLabelCallback
from kpartial.sparse_labels import SparseLabels
from tests.helpers import prior_matched_thresholds


def _histogram(logits, known):
    """[C, NUM_BINS] counts of the unknown entries' logits, by hand."""
    bins = np.clip(np.floor((logits - bin_edges()[0]) / BIN_WIDTH), 0, NUM_BINS - 1).astype(int)
    return np.stack(
        [np.bincount(bins[known[:, c] == 0, c], minlength=NUM_BINS) for c in range(known.shape[1])]
    )


def _known_entries(unknown):
    """int32 [K, 2] (row, class) of the entries that are not unknown, as the pipeline gives them."""
    return tf.cast(tf.where(~np.asarray(unknown)), tf.int32)


def _assign(logits, known, positive, negative):
    """The train step's rule in numpy: strict thresholds on unknown entries."""
    pseudo = np.where(logits > positive, 1, np.where(logits < negative, -1, 0)).astype(np.int8)
    return np.where(known == 0, pseudo, 0).astype(np.int8)


# ----------------------------------------------------------------------------
# The prior rule: t+ exact from the candidates, t- from the histograms


def _rule_thresholds(rule, logits, known, priors):
    """`rule`'s logit (t+, t-) as a refresh computes them from these logits (one batch)."""
    logits = np.asarray(logits, np.float32)
    num_examples, num_classes = logits.shape
    unknown = known == 0
    with np.errstate(divide="ignore"):
        floor = np.log(rule.positive_threshold) - np.log1p(-rule.positive_threshold)
    candidates = PositiveCandidates(num_examples, num_classes, floor)
    candidates.add(tf.range(num_examples), tf.constant(logits), _known_entries(unknown))
    counts = _histogram(logits.astype(np.float64), known)
    return rule.thresholds(counts, priors, candidates, unknown.sum(axis=0))


def _threshold_case():
    """Classes 0 and 1: 10 unknown logits at bin edges -4.5 .. 4.5 (+ a quarter bin); two known
    entries with extreme logits that must not count; class 2 is fully known."""
    unknown = np.arange(10) - 4.5 + BIN_WIDTH / 4
    logits = np.zeros((12, 3))
    logits[:10, 0] = unknown
    logits[:10, 1] = unknown[::-1]
    logits[10:, :2] = [[9.0, -9.0], [-9.0, 9.0]]
    logits[:, 2] = np.linspace(-3, 3, 12)
    known = np.zeros((12, 3), np.int8)
    known[10:, :2] = [[1, -1], [-1, 1]]
    known[:, 2] = np.where(np.arange(12) % 2 == 0, 1, -1)
    return logits, known


def test_prior_rule_exact_values():
    logits, known = _threshold_case()
    priors = np.array([0.2, 0.6, 0.3])
    counts = _histogram(logits, known)
    # t-: class 0's 4 lowest of 10 lie below edge -0.5; class 1's 2 lowest below -2.5.
    negative = prior_matched_negative_thresholds(counts, priors, negative_coverage=0.5)
    np.testing.assert_array_equal(negative, [-0.5, -2.5, -np.inf])  # nothing unknown in class 2
    rule = PriorMatchedRule(positive_threshold=0.5, negative_coverage=0.5)
    positive, negative = _rule_thresholds(rule, logits, known, priors)
    # Class 0: floor(0.2 x 10) = 2 through, so t+ is the third highest unknown logit.
    # Class 1: 6 through, but only 5 lie above the floor (logit 0): t+ is the floor.
    expected = np.float32(2.5 + BIN_WIDTH / 4)
    np.testing.assert_array_equal(positive, [expected, 0.0, np.inf])
    np.testing.assert_array_equal(negative, [-0.5, -2.5, -np.inf])
    # The histograms alone (tests.helpers) put class 0's t+ on the edge above it.
    dense_positive, dense_negative = prior_matched_thresholds(counts, priors, 0.5, 0.5)
    np.testing.assert_array_equal(dense_positive, [2.5 + BIN_WIDTH, 0.0, np.inf])
    np.testing.assert_array_equal(dense_negative, negative)


def test_prior_rule_rates_match_prior_random():
    rng = np.random.default_rng(3)
    n, c = 4000, 4
    logits = (rng.normal(size=(n, c)) * 3).astype(np.float32)
    known = rng.choice(np.array([1, -1, 0], np.int8), size=(n, c), p=[0.1, 0.3, 0.6])
    priors = np.array([0.05, 0.1, 0.25, 0.8])
    floor = 0.3
    rule = PriorMatchedRule(positive_threshold=floor, negative_coverage=0.5)
    positive, negative = _rule_thresholds(rule, logits, known, priors)
    pseudo = _assign(logits, known, positive, negative)
    dense_positive, _ = prior_matched_thresholds(_histogram(logits, known), priors, floor, 0.5)
    floor_logit = np.float32(np.log(floor / (1 - floor)))
    for k in range(c):
        unknown = known[:, k] == 0
        rate = (pseudo[unknown, k] == 1).mean()
        exact = np.sort(logits[unknown, k])[::-1][int(np.floor(priors[k] * unknown.sum()))]
        if exact > floor_logit:  # exactly the prior's share: floor(pi U) entries
            assert (pseudo[unknown, k] == 1).sum() == int(np.floor(priors[k] * unknown.sum()))
            assert positive[k] == exact
            # The histograms alone find the edge above it.
            assert exact < dense_positive[k] <= exact + BIN_WIDTH + 1e-6
        else:  # the floor binds
            assert positive[k] == pytest.approx(floor_logit) and rate < priors[k]
        negative_rate = (pseudo[unknown, k] == -1).mean()
        assert negative_rate <= 0.5 * (1 - priors[k]) + 1e-12
        assert negative_rate > 0.5 * (1 - priors[k]) - 0.01  # short by at most a bin's worth
        assert negative[k] <= positive[k]


def test_one_bin_labels_nothing():
    """Scores a network cannot yet tell apart (one bin) label nothing, whatever the shares."""
    logits = np.full((50, 1), bin_edges()[600] + BIN_WIDTH / 2, np.float32)
    known = np.zeros((50, 1), np.int8)
    rule = PriorMatchedRule(positive_threshold=0.0, negative_coverage=1.0)
    positive, negative = _rule_thresholds(rule, logits, known, np.array([0.1]))
    assert positive[0] == logits[0, 0] and negative[0] <= bin_edges()[600]
    assert not _assign(logits, known, positive, negative).any()


def test_rule_defaults_are_the_run_defaults():
    """An empty --pseudo_rule_options reproduces the runs before the options had a string."""
    prior = rule_of(PseudoLabelConfig())
    assert isinstance(prior, PriorMatchedRule)
    assert (prior.positive_threshold, prior.negative_coverage) == (0.5, 0.1)
    fixed = rule_of(PseudoLabelConfig(mode="fixed", rule_options="negative_threshold=0.01"))
    assert isinstance(fixed, FixedThresholdRule)
    assert (fixed.positive_threshold, fixed.negative_threshold) == (0.5, 0.01)
    with pytest.raises(ValueError, match="has no options 'negative_threshold'"):
        make_rule("prior", negative_threshold=0.1)
    with pytest.raises(ValueError, match="unknown pseudo-label mode"):
        make_rule("median")


# ----------------------------------------------------------------------------
# HistogramPass and pseudo_label_quality


def test_histograms_and_quality_count_what_the_rule_labels():
    train, known = _tiny_data(seed=4)
    network = _tiny_model().network
    dataset = pipeline.evaluation_dataset(train, batch_size=16)
    logits = network.predict(dataset, verbose=0).astype(np.float64)
    for labels in (known, SparseLabels.from_dense(known)):  # sparse labels stay sparse
        counts = HistogramPass(
            network,
            pipeline.known_entries_lookup(labels),
            NUM_CLASSES,
            pipeline.label_lookup(train.labels),
        )(dataset)
        assert counts.shape == (3, NUM_CLASSES, NUM_BINS)
        np.testing.assert_array_equal(counts.sum(axis=0), _histogram(logits, known))
    hidden = [np.where(known == 0, train.labels == sign, False) for sign in (1, -1)]
    np.testing.assert_array_equal(counts[1].sum(axis=1), hidden[0].sum(axis=0))
    np.testing.assert_array_equal(counts[2].sum(axis=1), hidden[1].sum(axis=0))

    positive, negative = prior_matched_thresholds(
        counts.sum(0), np.array([0.3, 0.2, 0.4]), 0.0, 0.5
    )
    pseudo = _assign(logits, known, positive, negative)
    assert (pseudo == 1).any() and (pseudo == -1).any()  # a non-trivial case
    unknown, true = known == 0, train.labels
    is_positive, is_negative = pseudo > 0, pseudo < 0
    assert pseudo_label_quality(counts, positive, negative) == {
        "pseudo_coverage": pytest.approx((is_positive | is_negative).sum() / unknown.sum()),
        "pseudo_positives": int(is_positive.sum()),
        "pseudo_negatives": int(is_negative.sum()),
        "pseudo_pos_precision": pytest.approx((is_positive & (true > 0)).sum() / is_positive.sum()),
        "pseudo_pos_recall": pytest.approx(
            (is_positive & (true > 0)).sum() / (unknown & (true > 0)).sum()
        ),
        "pseudo_neg_precision": pytest.approx((is_negative & (true < 0)).sum() / is_negative.sum()),
    }
    assert set(pseudo_label_quality(counts[:1].sum(0, keepdims=True), positive, negative)) == {
        "pseudo_coverage",
        "pseudo_positives",
        "pseudo_negatives",
    }


def test_histograms_of_a_hashed_sample_count_only_its_rows():
    train, known = _tiny_data(seed=4)
    network = _tiny_model().network
    dataset = pipeline.evaluation_dataset(train, batch_size=16)
    logits = network.predict(dataset, verbose=0).astype(np.float64)
    candidates = PositiveCandidates(NUM_EXAMPLES, 2, floor=0.0)
    counts = HistogramPass(
        network, pipeline.known_entries_lookup(known), NUM_CLASSES, None, candidates, share=0.5
    )(dataset)
    rows = in_sample(np.arange(NUM_EXAMPLES), 0.5).numpy()
    assert 0.3 < rows.mean() < 0.7  # the hash spreads consecutive ids
    np.testing.assert_array_equal(counts[0], _histogram(logits[rows], known[rows]))
    # The candidates see every example: each row's 2 highest unknown logits above 0.
    scores = np.where((known == 0) & (logits > 0), logits, -np.inf)
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :2] + 1
    expected = np.where(np.take_along_axis(scores, expected - 1, 1) > -np.inf, expected, 0)
    np.testing.assert_array_equal(candidates.classes.numpy(), expected)


def test_pseudo_label_quality_empty():
    counts = np.zeros((3, 2, NUM_BINS), np.int64)
    quality = pseudo_label_quality(counts, np.full(2, np.inf), np.full(2, -np.inf))
    assert quality["pseudo_coverage"] == 0.0
    assert quality["pseudo_pos_precision"] == 0.0 and quality["pseudo_pos_recall"] == 0.0


# ----------------------------------------------------------------------------
# PseudoLabelCallback


NUM_EXAMPLES, NUM_FEATURES, NUM_CLASSES = 40, 5, 3


def _tiny_model(num_examples=NUM_EXAMPLES, num_classes=NUM_CLASSES, seed=0):
    network = models.build_mlp(NUM_FEATURES, num_classes, hidden_units=(8,), dropout=0.0, seed=seed)
    model = PartialLabelModel(network, num_examples, num_classes, losses.IgnoreUnknownBCE())
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    return model


def _tiny_data(seed=0):
    rng = np.random.default_rng(seed)
    features = (rng.normal(size=(NUM_EXAMPLES, NUM_FEATURES)) * 3).astype(np.float32)
    true = np.where(rng.random((NUM_EXAMPLES, NUM_CLASSES)) < 0.3, 1, -1).astype(np.int8)
    known = np.where(rng.random(true.shape) < 0.4, true, 0).astype(np.int8)
    return data.MultiLabelData(labels=true, label_names=("a", "b", "c"), features=features), known


def _settings(**fields):
    """A `PseudoLabelConfig` (the callback's settings), checked like a run's."""
    return PseudoLabelConfig(**fields)


def _unchecked(**fields):
    """Settings with the fields of a `PseudoLabelConfig` that no config checked."""
    return types.SimpleNamespace(**{**dataclasses.asdict(PseudoLabelConfig()), **fields})


def test_callback_validates_arguments():
    labels = np.zeros((1, 1))
    with pytest.raises(ValueError, match="start_epoch >= 0"):
        PseudoLabelCallback(None, labels, _settings(start_epoch=-1, mode="fixed"))
    # Settings of any origin (not checked by the config): the callback checks them itself.
    with pytest.raises(ValueError, match="every >= 1"):
        PseudoLabelCallback(None, labels, _unchecked(mode="fixed", every=0))
    with pytest.raises(ValueError, match="needs priors"):
        PseudoLabelCallback(None, labels, _settings(mode="prior"))
    with pytest.raises(ValueError, match="min_precision needs validation"):
        PseudoLabelCallback(None, labels, _settings(mode="fixed", min_precision=0.9))
    with pytest.raises(ValueError, match="has no options"):
        PseudoLabelCallback(None, labels, _unchecked(mode="fixed", rule_options="floor=1"))


def test_refresh_schedule():
    callback = PseudoLabelCallback(
        None, np.zeros((1, 1)), _settings(start_epoch=2, every=3, mode="fixed")
    )
    refresh = [epoch for epoch in range(15) if callback.is_refresh_epoch(epoch)]
    assert refresh == [2, 5, 8, 11, 14]


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("mode", ["fixed", "prior"])
def test_callback_writes_thresholds_the_train_step_applies(mode):
    train, known = _tiny_data()
    model = _tiny_model()
    eval_ds = pipeline.evaluation_dataset(train, batch_size=16)
    priors = np.array([0.3, 0.2, 0.4])
    logged = []
    options = {
        "fixed": "positive_threshold=0.55,negative_threshold=0.45",
        "prior": "positive_threshold=0.55,negative_coverage=0.5",
    }[mode]
    callback = PseudoLabelCallback(
        eval_ds,
        known,
        _settings(start_epoch=2, every=3, mode=mode, rule_options=options),
        priors,
        true_labels=train.labels,
        log=logged.append,
    )
    callback.set_model(model)
    logits = model.network.predict(eval_ds, verbose=0)
    ids = np.arange(NUM_EXAMPLES)
    # Before the first refresh nothing is pseudo-labelled.
    np.testing.assert_array_equal(model.resolve_labels(known, logits, ids), known)

    callback.on_epoch_begin(1)  # not a refresh epoch: nothing happens
    assert not logged and model.pseudo_thresholds.numpy().min() == 1.0

    callback.on_epoch_begin(2)
    counts = _histogram(logits.astype(np.float64), known)
    if mode == "prior":
        negative = prior_matched_negative_thresholds(counts, priors, 0.5)
        # t+ by hand: the (k + 1)-th largest unknown logit above the floor, k = floor(pi U).
        floor = np.log(0.55 / 0.45)
        positive = np.full(NUM_CLASSES, floor)
        for c in range(NUM_CLASSES):
            unknown_logits = logits[known[:, c] == 0, c]
            above = np.sort(unknown_logits[unknown_logits > floor])[::-1]
            k = int(np.floor(priors[c] * unknown_logits.size))
            if above.size > k:
                positive[c] = above[k]
        assert (positive > floor).any()  # the prior, not the floor, decides somewhere
        negative = np.minimum(negative, positive)
    else:
        positive = np.full(NUM_CLASSES, np.log(0.55 / 0.45))
        negative = np.full(NUM_CLASSES, np.log(0.45 / 0.55))
    np.testing.assert_allclose(model.pseudo_thresholds.numpy(), _sigmoid(positive), atol=1e-7)
    np.testing.assert_allclose(
        model.pseudo_negative_thresholds.numpy(), _sigmoid(negative), atol=1e-7
    )
    expected = _assign(logits, known, positive, negative)
    assert (expected == 1).any() and (expected == -1).any()  # a non-trivial case
    resolved = np.asarray(model.resolve_labels(known, logits, ids))
    assert resolved.dtype == np.int8
    np.testing.assert_array_equal(resolved, np.where(known != 0, known, expected))
    unknown, true = known == 0, train.labels
    assert callback.quality["pseudo_positives"] == (expected > 0).sum()
    assert callback.quality["candidates_over_cap"] == 0
    assert callback.quality["pseudo_negatives"] == (expected < 0).sum()
    if mode == "prior":  # at bin resolution: t+ is no bin edge
        assert callback.quality["pseudo_pos_recall"] == pytest.approx(
            ((expected > 0) & (true > 0)).sum() / (unknown & (true > 0)).sum(), abs=0.1
        )
    # Before the third epoch, which Keras prints as "Epoch 3/N"; counts print as integers.
    assert len(logged) == 1 and logged[0].startswith("epoch 3: pseudo labels refreshed")
    assert f", {callback.quality['pseudo_positives']:d} positives (" in logged[0]

    logs = {"loss": 1.0}
    callback.on_epoch_end(2, logs)
    assert logs["pseudo_coverage"] == pytest.approx(callback.quality["pseudo_coverage"])
    # Keras prints log values with four decimals: counts stay in the refresh line.
    assert "pseudo_positives" not in logs and "pseudo_negatives" not in logs
    quiet = {"loss": 1.0}
    callback.on_epoch_end(3, quiet)  # not a refresh epoch: nothing changed, nothing logged
    assert quiet == {"loss": 1.0}


def test_positives_are_stored_and_negatives_follow_the_network():
    """Between refreshes the stored positives stay; the negative rule reads the current scores."""
    train, known = _tiny_data(seed=1)
    model = _tiny_model()
    eval_ds = pipeline.evaluation_dataset(train, batch_size=64)
    settings = _settings(
        start_epoch=0, every=1, mode="fixed", rule_options="negative_threshold=0.5"
    )
    callback = PseudoLabelCallback(eval_ds, known, settings, log=lambda _: None)
    callback.set_model(model)
    callback.on_epoch_begin(0)
    ids = np.arange(NUM_EXAMPLES)
    logits = model.network.predict(eval_ds, verbose=0)
    first = np.asarray(model.resolve_labels(known, logits, ids))
    # With t+ = t- = 0.5 every unknown entry gets a label.
    assert (first[known == 0] != 0).all()
    np.testing.assert_array_equal(first, np.where(known != 0, known, np.where(logits > 0, 1, -1)))
    # Negated scores: the negatives flip to unknown-above-t- ... except stored positives.
    second = np.asarray(model.resolve_labels(known, -logits, ids))
    unknown = known == 0
    np.testing.assert_array_equal(second[unknown & (first > 0)], 1)  # stored: unchanged
    np.testing.assert_array_equal(second[unknown & (first < 0)], 0)  # now above t-: unknown
    np.testing.assert_array_equal(second[~unknown], known[~unknown])


def test_store_keeps_the_highest_logits_and_counts_the_rest():
    model = _tiny_model(num_examples=2, num_classes=3)
    model_store = PartialLabelModel(
        model.network, 2, 3, losses.IgnoreUnknownBCE(), max_pseudo_positives=2
    )
    assert tuple(model_store.pseudo_positives.shape) == (2, 2)
    candidates = PositiveCandidates(2, 2, floor=0.0)
    logits = tf.constant([[3.0, 1.0, 2.0], [-1.0, 0.5, 4.0]])
    unknown = tf.constant([[True, True, True], [True, True, False]])
    tf.function(candidates.add)(tf.constant([1, 0]), logits, _known_entries(unknown))
    # Row 1 (first batch row): the two highest of three candidates; one over the cap.
    # Row 0: class 1 only (class 0 is below the floor, class 2 is known).
    np.testing.assert_array_equal(candidates.classes.numpy(), [[2, 0], [1, 3]])
    assert int(candidates.over_cap.numpy()) == 1
    # t+ per class (logits): class 0 at 2.5 keeps row 1's 3.0; class 2 at 2.5 drops its 2.0.
    np.testing.assert_array_equal(candidates.positives([2.5, 0.0, 2.5]), [[2, 0], [1, 0]])


@pytest.mark.parametrize("slots", [3, 12], ids=["few_slots", "more_slots_than_classes"])
@pytest.mark.parametrize("ranking", ["sorted", "top_k"])
@pytest.mark.parametrize("unknown_share", [0.7, 1.0], ids=["some_known", "none_known"])
def test_candidates_are_each_rows_highest_unknown_logits_ties_to_the_lower_class(
    unknown_share, ranking, slots, monkeypatch
):
    # Both ways of ranking them: the gathered entries above the floor, and a top-k of the batch.
    share = {"sorted": 1.0, "top_k": 0.0}[ranking]
    monkeypatch.setattr(pseudo_label_rules, "TOP_K_CANDIDATE_SHARE", share)
    rng = np.random.default_rng(7)
    num_examples, num_classes = 12, 9
    logits = np.round(rng.normal(0.5, 1.0, (8, num_classes)), 1).astype(np.float32)  # ties
    logits[2] = -1.0  # a row without a candidate
    unknown = rng.random((8, num_classes)) < unknown_share
    ids = rng.permutation(num_examples)[:8]
    candidates = PositiveCandidates(num_examples, slots, floor=0.0)
    tf.function(candidates.add)(tf.constant(ids), tf.constant(logits), _known_entries(unknown))
    scores = np.where(unknown & (logits > 0.0), logits, -np.inf)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :slots]
    values = np.take_along_axis(scores, top, 1)
    expected_classes = np.zeros((num_examples, slots), np.int32)
    expected_logits = np.full((num_examples, slots), -np.inf, np.float32)
    ranked = min(slots, num_classes)
    expected_classes[ids, :ranked] = np.where(values > -np.inf, top + 1, 0)
    expected_logits[ids, :ranked] = values
    np.testing.assert_array_equal(candidates.classes.numpy(), expected_classes)
    np.testing.assert_array_equal(candidates.logits.numpy(), expected_logits)
    above = np.isfinite(scores).sum(axis=1)
    assert int(candidates.over_cap.numpy()) == int(np.maximum(above - slots, 0).sum())


def test_stored_positives_map_to_the_active_columns():
    model = _tiny_model(num_examples=3, num_classes=NUM_CLASSES)
    model.pseudo_positives.assign(np.array([[1, 3, 0], [2, 0, 0], [0, 0, 0]], np.int32))
    labels = np.zeros((3, NUM_CLASSES), np.int8)
    logits = np.zeros((3, NUM_CLASSES), np.float32)
    ids = np.array([2, 0, 1])
    full = np.asarray(model.resolve_labels(labels, logits, ids))
    np.testing.assert_array_equal(full, [[0, 0, 0], [1, 0, 1], [0, 1, 0]])
    subset = tf.function(model.resolve_labels, jit_compile=True)
    got = subset(labels[:, [0, 2]], logits[:, [0, 2]], ids, class_ids=tf.constant([0, 2]))
    np.testing.assert_array_equal(got.numpy(), full[:, [0, 2]])


# ----------------------------------------------------------------------------
# Compiled code sees variable updates


@pytest.mark.parametrize("jit_compile", [False, True])
def test_compiled_resolve_labels_sees_assigned_thresholds(jit_compile):
    model = _tiny_model(num_examples=6, num_classes=3)
    fn = tf.function(model.resolve_labels, jit_compile=jit_compile)
    labels = tf.constant([[1, 0, -1], [0, 0, 0], [0, 1, 0]], tf.int8)
    logits = tf.constant([[5.0, 5.0, 5.0], [-5.0, 0.0, 2.0], [-2.0, 3.0, -0.5]])

    ids = tf.constant([0, 1, 2])
    first = fn(labels, logits, ids).numpy()
    np.testing.assert_array_equal(first, labels.numpy())  # nothing pseudo-labelled initially

    model.pseudo_negative_thresholds.assign(_sigmoid(np.array([-1.0, -1.0, -0.25])))
    model.pseudo_positives.assign(np.array([[2, 0, 0], [3, 0, 0]] + [[0, 0, 0]] * 4, np.int32))
    second = fn(labels, logits, ids).numpy()
    np.testing.assert_array_equal(second, [[1, 1, -1], [-1, 0, 1], [-1, 1, -1]])
    assert second.dtype == np.int8
    # A class subset (as pruning gathers it): the columns' own thresholds and stored classes.
    subset = tf.function(model.resolve_labels, jit_compile=jit_compile)
    got = subset(labels[:, 1:], logits[:, 1:], ids, class_ids=tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(got, second[:, 1:])

    model.pseudo_positives.assign(np.zeros((6, 3), np.int32))
    model.pseudo_negative_thresholds.assign(np.zeros(3, np.float32))
    np.testing.assert_array_equal(fn(labels, logits, ids).numpy(), labels.numpy())
    assert fn.experimental_get_tracing_count() == 1


def test_fully_known_class_keeps_a_usable_decision_threshold():
    train, known = _tiny_data()
    known = known.copy()
    known[:, 1] = train.labels[:, 1]  # class 1 fully annotated: no unknown entries
    model = _tiny_model()
    eval_ds = pipeline.evaluation_dataset(train, batch_size=64)
    callback = PseudoLabelCallback(
        eval_ds,
        known,
        _settings(start_epoch=0, every=1, mode="prior"),  # the floor of t+: 0.5
        np.array([0.3, 0.3, 0.3]),
        log=lambda _: None,
    )
    callback.set_model(model)
    callback.on_epoch_begin(0)
    thresholds = model.pseudo_thresholds.numpy()
    assert thresholds[1] == pytest.approx(0.5)  # the floor / default, not 1.0


# ----------------------------------------------------------------------------
# The technique's switch and callback, from the run's config


def _stats(depends_on_class=False, dense=False):
    rates = np.array([0.02, 0.05, 0.1])
    return types.SimpleNamespace(
        depends_on_class=depends_on_class,
        dense=dense,
        complete=False,
        unknown_priors=rates + (0.3 if dense else 0.0),
        priors=rates * 2,
    )


def _run_parts(stats, validation=True):
    train, known = _tiny_data()
    dataset = pipeline.evaluation_dataset(train, batch_size=16)
    held_out = train.take(np.arange(8)) if validation else None
    inputs = types.SimpleNamespace(train=train, known=known, stats=stats, validation=held_out)
    datasets = types.SimpleNamespace(train_inputs=dataset, validation="validation dataset")
    return inputs, datasets


@pytest.mark.parametrize(
    "flat, stats, reason",
    [
        ({}, _stats(), ""),
        ({}, _stats(depends_on_class=True), "the annotation depends on the class"),
        ({}, _stats(dense=True), "the label space is dense (the unknown entries' mean positive"),
        ({"pseudo_labels": "on"}, _stats(depends_on_class=True), ""),  # asked for: refreshes
        ({"method": "ignore"}, _stats(dense=True), ""),  # not switched on: nothing to say
        ({"pseudo_start_epoch": -1}, _stats(dense=True), ""),
    ],
)
def test_off_because_and_is_on(flat, stats, reason):
    config = Config.from_flat(missing_labels="counts", **flat)
    assert pseudo_labels.off_because(config, stats).startswith(reason)
    assert bool(pseudo_labels.off_because(config, stats)) == bool(reason)
    wanted = flat.get("method") != "ignore" and flat.get("pseudo_start_epoch") != -1
    assert pseudo_labels.is_on(config, stats) == (wanted and not reason)


def test_callbacks_log_why_auto_is_off():
    logged = []
    config = Config.from_flat(missing_labels="counts")
    inputs, datasets = _run_parts(_stats(dense=True))
    assert pseudo_labels.callbacks(config, inputs, datasets, logged.append) == []
    assert len(logged) == 1 and logged[0].startswith("pseudo labels: off, because the label")
    off = Config.from_flat(pseudo_labels="off")
    assert pseudo_labels.callbacks(off, inputs, datasets, logged.append) == []
    assert len(logged) == 1  # off as asked: nothing to say


@pytest.mark.parametrize("known_fraction", [1.0, 0.5])
def test_callbacks_make_the_configured_callback(known_fraction):
    config = Config.from_flat(
        missing_labels="counts",
        known_fraction=known_fraction,
        pseudo_start_epoch=3,
        pseudo_every=2,
        pseudo_mode="fixed",
        pseudo_rule_options="positive_threshold=0.7",
        pseudo_min_precision=0.8,
    )
    stats = _stats()
    inputs, datasets = _run_parts(stats)
    (callback,) = pseudo_labels.callbacks(config, inputs, datasets, print)
    assert isinstance(callback, PseudoLabelCallback)
    assert (callback.start_epoch, callback.every, callback.min_precision) == (3, 2, 0.8)
    assert isinstance(callback.rule, FixedThresholdRule) and callback.rule.positive_threshold == 0.7
    assert callback.dataset is datasets.train_inputs and callback.known_labels is inputs.known
    np.testing.assert_array_equal(callback.priors, stats.unknown_priors)
    assert callback.validation[0] == "validation dataset"
    assert callback.validation[1] is inputs.validation.labels
    # The hidden truth is monitored only where the run simulated the partial labels.
    assert (callback.true_labels is inputs.train.labels) == (known_fraction < 1.0)
    assert (callback.true_labels is None) == (known_fraction == 1.0)


def test_callbacks_where_annotation_depends_on_the_class_make_negatives_only():
    """Asked for where `auto` would be off: the prior rule's quota is zero (no positives)."""
    config = Config.from_flat(
        missing_labels="counts", pseudo_labels="on", validation_fraction=0.0, select_epoch="last"
    )
    inputs, datasets = _run_parts(_stats(depends_on_class=True), validation=False)
    (callback,) = pseudo_labels.callbacks(config, inputs, datasets, print)
    np.testing.assert_array_equal(callback.priors, 0.0)
    assert callback.validation is None
    model = _tiny_model()
    callback.set_model(model)
    callback.refresh()
    assert not model.pseudo_positives.numpy().any()


def test_is_on_with_real_class_statistics():
    train, known = _tiny_data()
    stats = class_stats.ClassStatistics.from_labels(known, train.label_names)
    # 30% positives: a dense label space, where `auto` leaves pseudo labels off.
    assert stats.dense and not pseudo_labels.is_on(Config.from_flat(missing_labels="counts"), stats)
    # Measured rates: the first refresh decides, so the model keeps a store.
    assert pseudo_labels.is_on(Config.from_flat(missing_labels="measured"), stats)
    assert pseudo_labels.is_on(Config.from_flat(pseudo_labels="on"), stats)
