"""Tests for kpartial.partial_model.PartialLabelModel: XLA vs. non-XLA train steps, checkpoints
of the label variables, and a short fit."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpartial import data, losses, models, pipeline, simulate
from kpartial.data.readers import synthetic
from kpartial.partial_model import PartialLabelModel, network_of
from tests.dense_reference import predict_probabilities

NUM_EXAMPLES, NUM_FEATURES, NUM_CLASSES = 64, 6, 5


def _tiny_data(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(NUM_EXAMPLES, NUM_FEATURES)).astype(np.float32)
    true = np.where(rng.random((NUM_EXAMPLES, NUM_CLASSES)) < 0.3, 1, -1).astype(np.int8)
    known = np.where(rng.random(true.shape) < 0.5, true, 0).astype(np.int8)
    train = data.MultiLabelData(
        labels=true, label_names=tuple(f"c{c}" for c in range(NUM_CLASSES)), features=features
    )
    return train, known


def _priors():
    return np.linspace(0.1, 0.4, NUM_CLASSES)


def _clone(network):
    clone = keras.models.clone_model(network)
    clone.set_weights(network.get_weights())
    return clone


def _compiled(network, loss):
    model = PartialLabelModel(network, NUM_EXAMPLES, NUM_CLASSES, loss)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=1e-2))
    model.optimizer.build(model.network.trainable_variables)
    return model


@pytest.mark.parametrize("loss_name", ["ignore", "kpartial"])
def test_xla_train_step_matches_non_xla(loss_name):
    train, known = _tiny_data()
    make_loss = {
        "ignore": losses.IgnoreUnknownBCE,
        "kpartial": lambda: losses.StatisticsWeightedLoss(_priors()),
    }[loss_name]
    network = models.build_mlp(NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=0)
    initial = [w.copy() for w in network.get_weights()]
    xla_model = _compiled(network, make_loss())
    plain_model = _compiled(_clone(network), make_loss())
    # t- near 0.5 so the online negative rule labels entries of the batch; stored positives
    # (classes 1 and 3 of every example) as a refresh would write them.
    upper, lower = np.full(NUM_CLASSES, 0.52, np.float32), np.full(NUM_CLASSES, 0.48, np.float32)
    active = np.array([1, 0, 1, 1, 1], np.float32)
    store = np.zeros(tuple(xla_model.pseudo_positives.shape), np.int32)
    store[:, :2] = [2, 4]
    for model in (xla_model, plain_model):
        model.pseudo_thresholds.assign(upper)
        model.pseudo_negative_thresholds.assign(lower)
        model.pseudo_positives.assign(store)
        model.active_classes.assign(active)

    batch = next(iter(pipeline.training_dataset(train, known, batch_size=32, seed=0)))
    xla_step = tf.function(xla_model.train_step, jit_compile=True)
    plain_step = tf.function(plain_model.train_step, jit_compile=False)

    hlo = xla_step.experimental_get_compiler_ir(batch)(stage="hlo")
    assert "ENTRY" in hlo

    xla_loss = float(xla_step(batch)["loss"])
    plain_loss = float(plain_step(batch)["loss"])
    assert np.isfinite(xla_loss)
    np.testing.assert_allclose(xla_loss, plain_loss, atol=1e-5, rtol=0)

    # The loss is that of the step's starting weights.
    reference = _compiled(_clone(network), make_loss())
    reference.network.set_weights(initial)
    reference.pseudo_thresholds.assign(upper)
    reference.pseudo_negative_thresholds.assign(lower)
    reference.pseudo_positives.assign(store)
    reference.active_classes.assign(active)
    expected_loss = float(reference.compute_partial_loss(batch[0], batch[1], training=True))
    np.testing.assert_allclose(xla_loss, expected_loss, atol=1e-5, rtol=0)

    moved = 0
    for xla_w, plain_w, start in zip(
        xla_model.network.get_weights(), plain_model.network.get_weights(), initial
    ):
        np.testing.assert_allclose(xla_w, plain_w, atol=1e-5, rtol=0)
        moved += int(np.abs(xla_w - start).max() > 1e-4)
    assert moved == len(initial)  # every variable took a step
    # Label variables are not touched by a train step.
    np.testing.assert_array_equal(xla_model.pseudo_thresholds.numpy(), upper)
    np.testing.assert_array_equal(xla_model.pseudo_negative_thresholds.numpy(), lower)
    np.testing.assert_array_equal(xla_model.pseudo_positives.numpy(), store)
    np.testing.assert_array_equal(xla_model.active_classes.numpy(), active)


def test_compile_jit_fit_matches_eager_free_fit():
    """`model.compile(jit_compile=True)` (what training.run does on GPUs) gives the same weights."""
    train, known = _tiny_data(seed=3)
    network = models.build_mlp(NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=0)
    results = []
    for jit in (True, False):
        model = PartialLabelModel(
            _clone(network), NUM_EXAMPLES, NUM_CLASSES, losses.IgnoreUnknownBCE()
        )
        model.compile(optimizer=keras.optimizers.AdamW(1e-2), jit_compile=jit)
        history = model.fit(
            pipeline.training_dataset(train, known, batch_size=16, seed=0),
            epochs=2,
            shuffle=False,
            verbose=0,
        )
        assert model.jit_compile is jit  # Keras may turn XLA off silently; it must not have here
        results.append((history.history["loss"], model.network.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], atol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _checkpoint_state():
    negative = np.array([0.25, 0.125, 0.5, 0.0, 0.0625], np.float32)
    active = np.array([1, 0, 1, 0, 1], np.float32)
    thresholds = np.array([0.5, 0.25, 0.75, 0.9, 0.125], np.float32)
    return negative, active, thresholds


def _new_model(seed):
    network = models.build_mlp(
        NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=seed
    )
    return PartialLabelModel(network, NUM_EXAMPLES, NUM_CLASSES, losses.IgnoreUnknownBCE())


def _assert_restored(fresh, model, negative, active, thresholds):
    np.testing.assert_array_equal(fresh.pseudo_negative_thresholds.numpy(), negative)
    np.testing.assert_array_equal(fresh.active_classes.numpy(), active)
    np.testing.assert_array_equal(fresh.pseudo_thresholds.numpy(), thresholds)
    for got, want in zip(fresh.network.get_weights(), model.network.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_checkpoint_round_trip(tmp_path):
    train, known = _tiny_data()
    batch_inputs, batch_labels = next(
        iter(pipeline.training_dataset(train, known, batch_size=8, seed=0))
    )
    model = _new_model(seed=0)
    model(batch_inputs)
    negative, active, thresholds = _checkpoint_state()
    model.pseudo_negative_thresholds.assign(negative)
    model.active_classes.assign(active)
    model.pseudo_thresholds.assign(thresholds)
    path = tmp_path / "ckpt.weights.h5"
    model.save_weights(str(path))

    fresh = _new_model(seed=1)
    fresh(batch_inputs)
    assert not np.array_equal(fresh.network.get_weights()[0], model.network.get_weights()[0])
    assert not fresh.pseudo_negative_thresholds.numpy().any()
    fresh.load_weights(str(path))
    _assert_restored(fresh, model, negative, active, thresholds)
    # The restored variables are the ones the loss reads.
    np.testing.assert_allclose(
        float(fresh.compute_partial_loss(batch_inputs, batch_labels, training=False)),
        float(model.compute_partial_loss(batch_inputs, batch_labels, training=False)),
        rtol=1e-6,
    )


def test_checkpoint_round_trip_without_forward_pass(tmp_path):
    model = _new_model(seed=0)
    negative, active, thresholds = _checkpoint_state()
    model.pseudo_negative_thresholds.assign(negative)
    model.active_classes.assign(active)
    model.pseudo_thresholds.assign(thresholds)
    path = tmp_path / "ckpt.weights.h5"
    model.save_weights(str(path))
    fresh = _new_model(seed=1)
    fresh.load_weights(str(path))
    _assert_restored(fresh, model, negative, active, thresholds)


def test_resolve_labels_known_win():
    model = PartialLabelModel(
        models.build_mlp(NUM_FEATURES, 3, hidden_units=(4,), dropout=0.0),
        4,
        3,
        losses.IgnoreUnknownBCE(),
    )
    model.pseudo_negative_thresholds.assign(np.full(3, 0.5, np.float32))
    # Stored positives: row 0 classes 0, 1 and 2; row 2 class 1 (all but row 0's class 0 known).
    model.pseudo_positives.assign(np.array([[1, 2, 3], [0, 0, 0], [2, 0, 0], [0, 0, 0]], np.int32))
    labels = np.array([[0, -1, 1], [0, 0, 0], [0, 1, 0]], np.int8)
    logits = np.array([[2.0, 2.0, -2.0], [-1.0, -1.0, -1.0], [0.0, 3.0, 0.0]], np.float32)
    resolved = np.asarray(model.resolve_labels(labels, logits, np.arange(3)))
    np.testing.assert_array_equal(resolved, [[1, -1, 1], [-1, -1, -1], [0, 1, 0]])


def test_fit_two_epochs_on_synthetic_data():
    keras.utils.set_random_seed(0)
    train = synthetic.make_imbalanced_features(num_examples=300, num_classes=6, num_features=8)
    known = simulate.keep_fraction(train.labels, 0.5, seed=0)
    network = models.build_mlp(8, 6, hidden_units=(32,), dropout=0.0, seed=0)
    model = PartialLabelModel(
        network, train.num_examples, train.num_classes, losses.IgnoreUnknownBCE()
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    dataset = pipeline.training_dataset(train, known, batch_size=64, seed=0)
    eval_ds = pipeline.training_dataset(train, known, batch_size=300, seed=0)  # one full batch
    loss_before = model.evaluate(eval_ds, verbose=0)
    history = model.fit(dataset, epochs=2, shuffle=False, verbose=0)
    loss_after = model.evaluate(eval_ds, verbose=0)
    assert loss_after < loss_before - 0.01
    loss = history.history["loss"]
    assert len(loss) == 2
    assert np.all(np.isfinite(loss))
    assert loss[1] < loss[0]
    probabilities = predict_probabilities(model, pipeline.evaluation_dataset(train, 128))
    assert probabilities.shape == (300, 6) and probabilities.dtype == np.float32
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


@pytest.mark.parametrize("jit_compile", [False, True])
def test_ll_cp_corrections_persist_in_the_corrected_labels_variable(tmp_path, jit_compile):
    """LL-Cp's permanent corrections are written into corrected_labels, survive later steps (known
    labels still win) and are saved with the checkpoint, together with the loss's epoch."""
    train, known = _tiny_data()
    network = models.build_mlp(NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=0)
    loss = losses.LargeLossModification("permanent", delta_rel=0.05)
    model = PartialLabelModel(network, NUM_EXAMPLES, NUM_CLASSES, loss)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.optimizer.build(network.trainable_variables)
    step = tf.function(model.train_step, jit_compile=jit_compile)
    batch = next(iter(pipeline.training_dataset(train, known, batch_size=32, seed=0)))
    inputs, labels = batch
    ids = inputs["id"].numpy()

    loss.epoch.assign(0)  # rate 0: nothing is corrected
    step(batch)
    assert not model.corrected_labels.numpy().any()

    loss.epoch.assign(2)  # rate 0.1 of the 32 x 5 entries: ceil(16) corrections
    logits = network(inputs["x"])
    targets = model.resolve_labels(labels, logits, inputs["id"])
    expected = loss.selection(targets, logits).numpy() > 0
    step(batch)
    pseudo = model.corrected_labels.numpy()
    assert expected.sum() == 16
    np.testing.assert_array_equal(pseudo[ids] == 1, expected)
    assert not pseudo[ids][labels.numpy() != 0].any()  # only unknown entries are corrected
    step(batch)  # corrections are permanent: a later step only adds to them
    assert np.all(model.corrected_labels.numpy()[ids][expected] == 1)

    model.save_weights(tmp_path / "ckpt.weights.h5")
    fresh_loss = losses.LargeLossModification("permanent", delta_rel=0.05)
    fresh = PartialLabelModel(
        models.build_mlp(NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=1),
        NUM_EXAMPLES,
        NUM_CLASSES,
        fresh_loss,
    )
    fresh.load_weights(tmp_path / "ckpt.weights.h5")
    np.testing.assert_array_equal(fresh.corrected_labels.numpy(), model.corrected_labels.numpy())
    assert int(fresh_loss.epoch.numpy()) == 2


# ----------------------------------------------------------------------------
# What callbacks change goes through the model's methods


def test_set_and_clear_pseudo_labels():
    model = _new_model(seed=0)
    store = np.zeros(model.pseudo_store_shape, np.int32)
    store[0, :2] = [2, 4]  # example 0: classes 1 and 3
    upper, lower = np.full(NUM_CLASSES, 0.9), np.full(NUM_CLASSES, 0.25)
    model.set_pseudo_labels(store, upper, lower)
    np.testing.assert_array_equal(model.pseudo_positives.numpy(), store)
    np.testing.assert_array_equal(model.pseudo_thresholds.numpy(), np.float32(upper))
    np.testing.assert_array_equal(model.pseudo_negative_thresholds.numpy(), np.float32(lower))
    labels = np.zeros((1, NUM_CLASSES), np.int8)
    logits = np.array([[-2.0, 0.0, 0.0, 0.0, 3.0]], np.float32)  # t- = 0.25: logit -1.1
    resolved = np.asarray(model.resolve_labels(labels, logits, np.array([0])))
    np.testing.assert_array_equal(resolved, [[-1, 1, 0, 1, 0]])

    model.clear_pseudo_labels()
    np.testing.assert_array_equal(model.resolve_labels(labels, logits, np.array([0])), labels)
    assert not model.pseudo_positives.numpy().any()
    np.testing.assert_array_equal(model.pseudo_thresholds.numpy(), 1.0)


def test_set_pseudo_labels_refuses_what_the_model_cannot_hold():
    model = _new_model(seed=0)
    shape = model.pseudo_store_shape
    assert shape == (NUM_EXAMPLES, NUM_CLASSES)  # L = min(16, C)
    with pytest.raises(ValueError, match="positives has shape"):
        model.set_pseudo_labels(np.zeros((3, 2)), np.ones(NUM_CLASSES), np.zeros(NUM_CLASSES))
    with pytest.raises(ValueError, match="negative_thresholds has shape"):
        model.set_pseudo_labels(np.zeros(shape), np.ones(NUM_CLASSES), np.zeros(2))
    without = PartialLabelModel(
        models.build_mlp(NUM_FEATURES, NUM_CLASSES, hidden_units=(4,), dropout=0.0),
        NUM_EXAMPLES,
        NUM_CLASSES,
        losses.IgnoreUnknownBCE(),
        pseudo_labelling=False,
    )
    with pytest.raises(ValueError, match="pseudo_labelling=False"):
        without.set_pseudo_labels(np.zeros(shape), np.ones(NUM_CLASSES), np.zeros(NUM_CLASSES))
    without.clear_pseudo_labels()  # nothing to clear but the thresholds


def test_set_active_classes_builds_the_phase_train_function():
    train, known = _tiny_data()
    model = _new_model(seed=0)
    model.set_active_classes(np.array([1, 0, 1, 1, 0], bool))  # not compiled: only assigned
    np.testing.assert_array_equal(model.active_class_mask, [1, 0, 1, 1, 0])
    assert model._head_phase is None
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    model.fit(pipeline.training_dataset(train, known, batch_size=16, seed=0), epochs=1, verbose=0)
    np.testing.assert_array_equal(model._head_phase.class_ids, [0, 2, 3])  # fit built it
    model.set_active_classes(np.array([1, 0, 0, 1, 0], bool))
    np.testing.assert_array_equal(model._head_phase.class_ids, [0, 3])  # built at once
    np.testing.assert_array_equal(model.active_classes.numpy(), [1, 0, 0, 1, 0])
    with pytest.raises(ValueError, match="at least one class"):
        model.set_active_classes(np.zeros(NUM_CLASSES, bool))
    with pytest.raises(ValueError, match="mask has shape"):
        model.set_active_classes(np.ones(3, bool))


def test_network_of():
    model = _new_model(seed=0)
    assert network_of(model) is model.network
    assert network_of(model.network) is model.network


def test_the_checkpointed_variables_keep_their_names():
    """A checkpoint written by an earlier version restores: the variables it holds are these."""
    model = _new_model(seed=0)
    state = [(v.name, tuple(v.shape), v.dtype) for v in model.non_trainable_variables]
    assert state == [
        ("pseudo_positives", (NUM_EXAMPLES, NUM_CLASSES), "int32"),
        ("active_classes", (NUM_CLASSES,), "float32"),
        ("pseudo_thresholds", (NUM_CLASSES,), "float32"),
        ("pseudo_negative_thresholds", (NUM_CLASSES,), "float32"),
        ("epochs_done", (), "int32"),
    ]
