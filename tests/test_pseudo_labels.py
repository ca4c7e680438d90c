"""Tests for kpartial.pseudo_labels (thresholds, assignment, quality, callback) and for the
pseudo-label variable as seen by compiled code."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpartial import data, losses, models, pipeline
from kpartial.partial_model import PartialLabelModel, predict_probabilities
from kpartial.pseudo_labels import (
    PseudoLabelCallback,
    assign_pseudo_labels,
    prior_matched_thresholds,
    pseudo_label_quality,
)

# ----------------------------------------------------------------------------
# prior_matched_thresholds


def _threshold_case():
    """Rows 0-9 unknown in classes 0 and 1 with scores 0.05 .. 0.95; rows 10-11 known with extreme
    scores that must not move the quantiles; class 2 is fully known."""
    unknown_scores = np.arange(10) / 10.0 + 0.05  # 0.05, 0.15, ..., 0.95
    probabilities = np.zeros((12, 3), np.float32)
    probabilities[:10, 0] = unknown_scores
    probabilities[:10, 1] = unknown_scores[::-1]
    probabilities[10:, :2] = [[0.999, 0.001], [0.001, 0.999]]
    probabilities[:, 2] = np.linspace(0.1, 0.9, 12)
    known = np.zeros((12, 3), np.int8)
    known[10:, :2] = [[1, -1], [-1, 1]]
    known[:, 2] = np.where(np.arange(12) % 2 == 0, 1, -1)
    return probabilities, known


def test_prior_matched_thresholds_exact_values():
    probabilities, known = _threshold_case()
    priors = np.array([0.2, 0.6, 0.3])
    positive, negative = prior_matched_thresholds(
        probabilities, known, priors, min_positive_probability=0.5, negative_coverage=0.5
    )
    assert positive.dtype == np.float32 and negative.dtype == np.float32
    # Class 0: 80% quantile of 0.05..0.95 (linear) = 0.77; 40% quantile = 0.41.
    assert positive[0] == pytest.approx(0.77, abs=1e-6)
    assert negative[0] == pytest.approx(0.41, abs=1e-6)
    # Class 1: 40% quantile = 0.41 < floor 0.5 -> t+ = 0.5; t- = 20% quantile = 0.23.
    assert positive[1] == pytest.approx(0.5, abs=1e-7)
    assert negative[1] == pytest.approx(0.23, abs=1e-6)
    # Class 2 has no unknown entry.
    assert positive[2] == np.inf and negative[2] == -np.inf


def test_prior_matched_thresholds_rates_match_prior():
    probabilities, known = _threshold_case()
    priors = np.array([0.2, 0.3, 0.3])
    positive, negative = prior_matched_thresholds(
        probabilities, known, priors, min_positive_probability=0.0
    )
    pseudo = assign_pseudo_labels(probabilities, known, positive, negative)
    unknown = known == 0
    for c in (0, 1):
        count = unknown[:, c].sum()
        assert count == 10
        assert (pseudo[unknown[:, c], c] == 1).sum() == round(priors[c] * count)
        assert (pseudo[unknown[:, c], c] == -1).sum() == round(0.5 * (1 - priors[c]) * count)
    assert not pseudo[:, 2].any()  # nothing unknown in class 2


def test_prior_matched_thresholds_random_rates_and_floor():
    rng = np.random.default_rng(3)
    n, c = 2000, 4
    probabilities = rng.random((n, c)).astype(np.float32) * 0.9  # scores in [0, 0.9)
    known = rng.choice(np.array([1, -1, 0], np.int8), size=(n, c), p=[0.1, 0.3, 0.6])
    priors = np.array([0.05, 0.1, 0.25, 0.8])
    floor = 0.3
    positive, negative = prior_matched_thresholds(
        probabilities, known, priors, min_positive_probability=floor, negative_coverage=0.5
    )
    pseudo = assign_pseudo_labels(probabilities, known, positive, negative)
    for k in range(c):
        unknown = known[:, k] == 0
        scores = probabilities[unknown, k]
        rate = (pseudo[unknown, k] == 1).mean()
        assert positive[k] >= floor
        if np.quantile(scores, 1 - priors[k]) >= floor:
            assert abs(rate - priors[k]) <= 1.0 / unknown.sum() + 1e-9
        else:  # the floor binds: everything at or above it, and more than the prior would not be
            assert positive[k] == pytest.approx(floor)
            assert rate == pytest.approx((scores >= floor).mean())
            assert rate < priors[k]
        assert negative[k] <= positive[k]
    # Prior 0.8 with scores below 0.9: its 20% quantile (~0.18) is under the floor.
    assert positive[3] == pytest.approx(floor)


def test_negative_threshold_never_exceeds_positive():
    probabilities = np.array([[0.6], [0.6], [0.6], [0.6]], np.float32)
    known = np.zeros((4, 1), np.int8)
    positive, negative = prior_matched_thresholds(
        probabilities, known, np.array([0.1]), min_positive_probability=0.5, negative_coverage=1.0
    )
    assert negative[0] <= positive[0]
    pseudo = assign_pseudo_labels(probabilities, known, positive, negative)
    # All scores tie at t+ = t- = 0.6: strict thresholds leave every tied entry unknown.
    np.testing.assert_array_equal(pseudo, np.zeros((4, 1), np.int8))


# ----------------------------------------------------------------------------
# assign_pseudo_labels


def test_assign_pseudo_labels_exact():
    probabilities = np.array(
        [[0.9, 0.10, 0.50], [0.7, 0.02, 0.95], [0.3, 0.60, 0.04], [0.95, 0.01, 0.5]], np.float32
    )
    known = np.array([[0, 0, 0], [0, 1, -1], [1, 0, 0], [-1, -1, 0]], np.int8)
    positive = np.array([0.8, 0.5, 0.9], np.float32)
    negative = np.array([0.3, 0.05, 0.05], np.float32)
    pseudo = assign_pseudo_labels(probabilities, known, positive, negative)
    expected = np.array(
        [
            [1, 0, 0],
            [0, 0, 0],  # 0.7 in the gap; 0.02 and 0.95 are known entries
            [0, 1, -1],  # 0.3 is known positive
            [0, 0, 0],
        ],
        np.int8,
    )
    assert pseudo.dtype == np.int8
    np.testing.assert_array_equal(pseudo, expected)
    assert not pseudo[known != 0].any()  # known entries always stay 0


def test_assign_pseudo_labels_known_entries_stay_zero_random():
    rng = np.random.default_rng(0)
    probabilities = rng.random((50, 6)).astype(np.float32)
    known = rng.choice(np.array([1, -1, 0], np.int8), size=(50, 6))
    pseudo = assign_pseudo_labels(
        probabilities, known, np.full(6, 0.0, np.float32), np.full(6, 1.0, np.float32)
    )
    assert not pseudo[known != 0].any()
    assert (pseudo[known == 0] == 1).all()  # t+ = 0: every unknown is positive (it wins over t-)


# ----------------------------------------------------------------------------
# pseudo_label_quality


def test_pseudo_label_quality_exact():
    known = np.array([[1, 0, 0], [0, 0, -1], [0, 0, 0]], np.int8)  # 7 unknown entries
    pseudo = np.array(
        [[0, 1, -1], [1, 0, 0], [-1, 1, 0]], np.int8
    )  # 5 labelled: 3 positive, 2 negative
    true = np.array([[1, 1, 1], [-1, 1, -1], [-1, -1, 1]], np.int8)
    quality = pseudo_label_quality(pseudo, known, true)
    # Hidden positives: (0,1), (0,2), (1,1), (2,2) -> 4; found: (0,1) only.
    assert quality == {
        "pseudo_coverage": pytest.approx(5 / 7),
        "pseudo_positives": 3,
        "pseudo_negatives": 2,
        "pseudo_pos_precision": pytest.approx(1 / 3),  # (0,1) right; (1,0), (2,1) wrong
        "pseudo_pos_recall": pytest.approx(1 / 4),
        "pseudo_neg_precision": pytest.approx(1 / 2),  # (2,0) right, (0,2) wrong
    }
    assert set(pseudo_label_quality(pseudo, known)) == {
        "pseudo_coverage",
        "pseudo_positives",
        "pseudo_negatives",
    }


def test_pseudo_label_quality_empty():
    known = np.ones((2, 2), np.int8)
    pseudo = np.zeros((2, 2), np.int8)
    quality = pseudo_label_quality(pseudo, known, known)
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


def test_callback_validates_arguments():
    with pytest.raises(ValueError):
        PseudoLabelCallback(None, np.zeros((1, 1)), start_epoch=-1, every=1, mode="fixed")
    with pytest.raises(ValueError):
        PseudoLabelCallback(None, np.zeros((1, 1)), start_epoch=0, every=0, mode="fixed")
    with pytest.raises(ValueError):
        PseudoLabelCallback(None, np.zeros((1, 1)), start_epoch=0, every=1, mode="prior")
    with pytest.raises(ValueError):
        PseudoLabelCallback(None, np.zeros((1, 1)), start_epoch=0, every=1, mode="median")


def test_refresh_schedule():
    callback = PseudoLabelCallback(None, np.zeros((1, 1)), start_epoch=2, every=3, mode="fixed")
    refresh = [epoch for epoch in range(15) if callback.is_refresh_epoch(epoch)]
    assert refresh == [2, 5, 8, 11, 14]


@pytest.mark.parametrize("mode", ["fixed", "prior"])
def test_callback_writes_assigned_pseudo_labels(mode):
    train, known = _tiny_data()
    model = _tiny_model()
    eval_ds = pipeline.evaluation_dataset(train, batch_size=16)
    priors = np.array([0.3, 0.2, 0.4])
    logged = []
    callback = PseudoLabelCallback(
        eval_ds,
        known,
        start_epoch=2,
        every=3,
        mode=mode,
        priors=priors,
        positive_threshold=0.55,
        negative_threshold=0.45,
        true_labels=train.labels,
        log=logged.append,
    )
    callback.set_model(model)

    callback.on_epoch_begin(1)  # not a refresh epoch: nothing happens
    assert not model.pseudo_labels.numpy().any() and not logged

    callback.on_epoch_begin(2)
    probabilities = predict_probabilities(model, eval_ds)
    if mode == "prior":
        positive, negative = prior_matched_thresholds(probabilities, known, priors, 0.55, 0.5)
    else:
        positive = np.full(NUM_CLASSES, 0.55, np.float32)
        negative = np.full(NUM_CLASSES, 0.45, np.float32)
    expected = assign_pseudo_labels(probabilities, known, positive, negative)
    assert (expected == 1).any() and (expected == -1).any()  # a non-trivial case
    got = model.pseudo_labels.numpy()
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(model.pseudo_thresholds.numpy(), np.clip(positive, 0, 1), atol=1e-7)
    assert callback.quality == pseudo_label_quality(expected, known, train.labels)
    # Before the third epoch, which Keras prints as "Epoch 3/N"; counts print as integers.
    assert len(logged) == 1 and logged[0].startswith("epoch 3: pseudo labels refreshed")
    assert f"pseudo_positives={callback.quality['pseudo_positives']:d}," in logged[0]

    logs = {"loss": 1.0}
    callback.on_epoch_end(2, logs)
    assert logs["pseudo_coverage"] == pytest.approx(callback.quality["pseudo_coverage"])
    # Keras prints log values with four decimals: counts stay in the refresh line.
    assert "pseudo_positives" not in logs and "pseudo_negatives" not in logs
    quiet = {"loss": 1.0}
    callback.on_epoch_end(3, quiet)  # not a refresh epoch: nothing changed, nothing logged
    assert quiet == {"loss": 1.0}


def test_callback_refreshes_after_training_changed_predictions():
    train, known = _tiny_data(seed=1)
    model = _tiny_model()
    eval_ds = pipeline.evaluation_dataset(train, batch_size=64)
    callback = PseudoLabelCallback(
        eval_ds,
        known,
        start_epoch=0,
        every=1,
        mode="fixed",
        positive_threshold=0.5,
        negative_threshold=0.5,
        log=lambda _: None,
    )
    callback.set_model(model)
    callback.on_epoch_begin(0)
    first = model.pseudo_labels.numpy().copy()
    # With t+ = t- = 0.5 every unknown entry gets a label; a big weight change flips some.
    assert (first[known == 0] != 0).all()
    kernel = model.network.get_layer("logits").kernel
    kernel.assign(-kernel.numpy())
    model.network.get_layer("logits").bias.assign(-model.network.get_layer("logits").bias.numpy())
    callback.on_epoch_begin(1)
    second = model.pseudo_labels.numpy()
    expected = assign_pseudo_labels(
        predict_probabilities(model, eval_ds),
        known,
        np.full(NUM_CLASSES, 0.5, np.float32),
        np.full(NUM_CLASSES, 0.5, np.float32),
    )
    np.testing.assert_array_equal(second, expected)
    assert (second != first).any()


# ----------------------------------------------------------------------------
# Compiled code sees variable updates


@pytest.mark.parametrize("jit_compile", [False, True])
def test_compiled_resolve_labels_sees_assigned_pseudo_labels(jit_compile):
    model = _tiny_model(num_examples=6, num_classes=3)
    fn = tf.function(model.resolve_labels, jit_compile=jit_compile)
    labels = tf.constant([[1, 0, -1], [0, 0, 0], [0, 1, 0]], tf.int8)
    ids = tf.constant([4, 0, 2], tf.int32)

    first = fn(labels, ids).numpy()
    np.testing.assert_array_equal(first, labels.numpy())  # pseudo labels are all 0 initially

    pseudo = np.array(
        [[1, 1, 1], [0, 0, 0], [-1, -1, -1], [1, 1, 1], [-1, -1, 1], [0, 0, 0]], np.int8
    )
    model.pseudo_labels.assign(pseudo)
    second = fn(labels, ids).numpy()
    # Row 0 is example 4 ([-1, -1, 1]) under known [1, 0, -1]; row 1 is example 0; row 2 example 2.
    np.testing.assert_array_equal(second, [[1, -1, -1], [1, 1, 1], [-1, 1, -1]])
    assert second.dtype == np.int8

    model.pseudo_labels.assign(-pseudo)
    third = fn(labels, ids).numpy()
    np.testing.assert_array_equal(third, [[1, 1, -1], [-1, -1, -1], [1, 1, 1]])
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
        start_epoch=0,
        every=1,
        mode="prior",
        priors=np.array([0.3, 0.3, 0.3]),
        positive_threshold=0.5,
        log=lambda _: None,
    )
    callback.set_model(model)
    callback.on_epoch_begin(0)
    assert not model.pseudo_labels.numpy()[:, 1].any()  # nothing to pseudo-label there (passes)
    thresholds = model.pseudo_thresholds.numpy()
    assert thresholds[1] == pytest.approx(0.5)  # the floor / default, not 1.0
