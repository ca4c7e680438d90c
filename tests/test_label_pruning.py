"""Tests for kpartial.label_pruning: schedule parsing, the fit-well criterion, the callback, and
that a pruned class really gets no loss and no gradient."""

import os
import pathlib
import subprocess
import sys
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpartial import class_stats, data, label_pruning, losses, models, pipeline
from kpartial.config import Config
from kpartial.label_pruning import (
    LabelPruningCallback,
    choose_classes_to_prune,
    parse_prune_schedule,
    resolve_prune_schedule,
    streamed_known_label_loss,
)
from kpartial.partial_model import PartialLabelModel
from kpartial.sparse_labels import SparseLabels
from tests.dense_reference import known_label_loss, predict_probabilities

REPO = pathlib.Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------
# parse_prune_schedule


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", ()),
        ("10:0.25,20:0.5", ((10, 0.25), (20, 0.5))),
        (" 3:0 , 4:0.5 ,", ((3, 0.0), (4, 0.5))),
        ("1:0.5,2:0.5", ((1, 0.5), (2, 0.5))),  # equal fractions are allowed (non-decreasing)
        ("7:0.999", ((7, 0.999),)),
    ],
)
def test_parse_prune_schedule_valid(text, expected):
    schedule = parse_prune_schedule(text)
    assert schedule == expected
    assert isinstance(schedule, tuple)
    assert all(
        isinstance(epoch, int) and isinstance(fraction, float) for epoch, fraction in schedule
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("10", "EPOCH:FRACTION"),  # no colon
        ("10-0.25", "EPOCH:FRACTION"),
        ("ten:0.25", "EPOCH:FRACTION"),  # non-int epoch
        ("1.5:0.25", "a decimal epoch is a share of the epochs and must be in (0, 1)"),
        ("1.0:0.25", "a decimal epoch is a share of the epochs and must be in (0, 1)"),
        ("0.0:0.25", "a decimal epoch is a share of the epochs and must be in (0, 1)"),
        ("-0.5:0.25", "a decimal epoch is a share of the epochs and must be in (0, 1)"),
        ("0.5:0.25,0.25:0.5", "epochs must increase"),
        ("0.5:0.5,0.75:0.25", "must not decrease"),
        ("10:half", "EPOCH:FRACTION"),
        ("0:0.25", "epoch must be >= 1"),
        ("-2:0.25", "epoch must be >= 1"),
        ("10:1.0", "fraction must be in [0, 1)"),
        ("10:1", "fraction must be in [0, 1)"),
        ("10:-0.1", "fraction must be in [0, 1)"),
        ("10:nan", "fraction must be in [0, 1)"),
        ("10:0.5,5:0.6", "epochs must increase"),
        ("10:0.5,10:0.6", "epochs must increase"),
        ("10:0.5,20:0.25", "must not decrease"),
    ],
)
def test_parse_prune_schedule_malformed(text, message):
    with pytest.raises(ValueError) as raised:
        parse_prune_schedule(text)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.75:0.25", ((0.75, 0.25),)),
        (".5:0.1", ((0.5, 0.1),)),
        ("10:0.1,0.5:0.25", ((10, 0.1), (0.5, 0.25))),  # mixed: ordered only once resolved
        ("0.5:0.1,3:0.2", ((0.5, 0.1), (3, 0.2))),
    ],
)
def test_parse_prune_schedule_shares_of_the_epochs(text, expected):
    schedule = parse_prune_schedule(text)
    assert schedule == expected
    assert [type(epoch) for epoch, _ in schedule] == [
        float if "." in item.split(":")[0] else int for item in text.split(",")
    ]


# ----------------------------------------------------------------------------
# resolve_prune_schedule


@pytest.mark.parametrize(
    "text, epochs, expected",
    [
        ("", 5, ()),
        ("10:0.25,20:0.5", 40, ((10, 0.25), (20, 0.5))),  # epoch counts keep their meaning
        ("0.75:0.25", 40, ((30, 0.25),)),
        ("0.75:0.25", 8, ((6, 0.25),)),  # the same schedule follows --epochs
        ("0.25:0.1", 10, ((3, 0.1),)),  # 2.5 rounds half up
        ("0.24:0.1", 10, ((2, 0.1),)),
        ("0.01:0.1", 30, ((1, 0.1),)),  # at least one epoch
        ("0.5:0.1,8:0.2", 10, ((5, 0.1), (8, 0.2))),
        ("2:0.1,0.5:0.2,0.9:0.3", 10, ((2, 0.1), (5, 0.2), (9, 0.3))),
    ],
)
def test_resolve_prune_schedule(text, epochs, expected):
    resolved = resolve_prune_schedule(parse_prune_schedule(text), epochs)
    assert resolved == expected
    assert all(type(epoch) is int and type(f) is float for epoch, f in resolved)
    assert resolve_prune_schedule(resolved, epochs) == resolved  # resolving again: no change


@pytest.mark.parametrize(
    "text, epochs, message",
    [
        ("10:0.5", 10, "entry '10:0.5' prunes after 10 epochs, when none of the 10 epochs is left"),
        ("0.99:0.5", 10, "entry '0.99:0.5' prunes after 10 epochs, when none of the 10 epochs"),
        ("0.75:0.25", 2, "entry '0.75:0.25' prunes after 2 epochs, when none of the 2 epochs"),
        ("0.5:0.1,5:0.2", 10, "entries '0.5:0.1' and '5:0.2' are both epoch 5"),
        ("0.52:0.1,0.54:0.2", 10, "entries '0.52:0.1' and '0.54:0.2' are both epoch 5"),
        ("0.5:0.1,4:0.2", 10, "entry '4:0.2' is epoch 4, before entry '0.5:0.1' (epoch 5)"),
        ("6:0.1,0.5:0.2", 10, "entry '0.5:0.2' is epoch 5, before entry '6:0.1' (epoch 6)"),
    ],
)
def test_resolve_prune_schedule_refuses_what_would_not_prune_as_written(text, epochs, message):
    with pytest.raises(ValueError) as raised:
        resolve_prune_schedule(parse_prune_schedule(text), epochs)
    assert message in str(raised.value)


@pytest.mark.parametrize("preset, old_epoch", [("mlp.cfg", 30), ("demo.cfg", 20)])
def test_presets_prune_at_the_epochs_they_did_before_shares(preset, old_epoch):
    """flags/mlp.cfg (40 epochs) and flags/demo.cfg (30) give their schedules as shares of the
    epochs; resolved at their own --epochs they prune when the old epoch counts did."""
    lines = (REPO / "flags" / preset).read_text().splitlines()
    (schedule,) = [line.split("=", 1)[1] for line in lines if line.startswith("--prune_schedule")]
    (epochs,) = [int(line.split("=", 1)[1]) for line in lines if line.startswith("--epochs")]
    assert "." in schedule.split(":")[0]
    assert resolve_prune_schedule(parse_prune_schedule(schedule), epochs) == ((old_epoch, 0.25),)


# ----------------------------------------------------------------------------
# The known-label loss (the dense reference of streamed_known_label_loss)


def test_known_label_loss_matches_hand_computation():
    probabilities = np.array([[0.9, 0.2, 0.5], [0.6, 0.7, 0.1], [0.3, 1.0, 0.8]], np.float32)
    known = np.array([[1, -1, 0], [-1, 0, 0], [1, -1, 0]], np.int8)
    loss = known_label_loss(known, probabilities)
    eps = 1e-7
    expected = np.array(
        [
            # positives (0.9, 0.3), negative 0.6: mean of the two class-balanced halves
            0.5 * ((-np.log(0.9) - np.log(0.3)) / 2 - np.log(1 - 0.6)),
            np.inf,  # negatives only (p = 1 for a negative would clip to 1 - eps)
            np.inf,  # no known entry
        ]
    )
    assert loss.shape == (3,)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    del eps


def test_known_label_loss_does_not_call_a_rare_class_at_its_prior_fit():
    # A rare class predicted at its prior (AP = chance) vs a common class ranked well.
    known = np.zeros((100, 2), np.int8)
    known[:, 0] = -1
    known[0, 0] = 1
    known[:, 1] = np.where(np.arange(100) < 30, 1, -1)
    probabilities = np.stack([np.full(100, 0.01), np.where(known[:, 1] > 0, 0.8, 0.2)], 1)
    loss = known_label_loss(known, probabilities)
    assert loss[1] < loss[0]  # a plain mean BCE would say the opposite (0.056 vs 0.22)


# ----------------------------------------------------------------------------
# choose_classes_to_prune


def test_choose_fit_well_picks_lowest_loss_active_classes():
    active = np.array([True, False, True, True, True, True])
    class_loss = np.array([0.3, 0.0, 0.1, 0.5, 0.2, 0.1])
    chosen = choose_classes_to_prune(active, 2, "fit_well", class_loss)
    assert sorted(chosen.tolist()) == [2, 5]  # class 1 has the lowest loss but is already pruned
    assert sorted(choose_classes_to_prune(active, 3, "fit_well", class_loss).tolist()) == [2, 4, 5]
    assert sorted(choose_classes_to_prune(active, 99, "fit_well", class_loss).tolist()) == [
        0,
        2,
        3,
        4,
        5,
    ]
    assert choose_classes_to_prune(active, 0, "fit_well", class_loss).size == 0
    assert choose_classes_to_prune(active, -1, "fit_well", class_loss).size == 0


def test_choose_random_is_seeded_and_active_only():
    active = np.zeros(20, bool)
    active[[1, 4, 5, 8, 11, 12, 17, 19]] = True
    first = choose_classes_to_prune(active, 5, "random", rng=np.random.default_rng(7))
    second = choose_classes_to_prune(active, 5, "random", rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first, second)
    assert len(set(first.tolist())) == 5
    assert active[first].all()
    picks = {
        tuple(
            sorted(
                choose_classes_to_prune(active, 5, "random", rng=np.random.default_rng(s)).tolist()
            )
        )
        for s in range(10)
    }
    assert len(picks) > 1  # the seed matters
    everything = choose_classes_to_prune(active, 50, "random", rng=np.random.default_rng(0))
    assert sorted(everything.tolist()) == [1, 4, 5, 8, 11, 12, 17, 19]


def test_choose_unknown_criterion():
    with pytest.raises(ValueError, match="unknown prune criterion"):
        choose_classes_to_prune(np.ones(3, bool), 1, "biggest")
    with pytest.raises(ValueError, match="unknown prune criterion"):
        LabelPruningCallback(None, np.zeros((1, 1)), (), criterion="biggest")


def test_callback_takes_a_resolved_schedule():
    with pytest.raises(ValueError, match=r"epoch 0.5 is not an epoch count.*resolve_prune_sch"):
        LabelPruningCallback(None, np.zeros((1, 1)), parse_prune_schedule("0.5:0.25"))


# ----------------------------------------------------------------------------
# A tiny model


NUM_EXAMPLES, NUM_FEATURES, NUM_CLASSES = 48, 5, 8


def _tiny_data(seed=0):
    rng = np.random.default_rng(seed)
    features = (rng.normal(size=(NUM_EXAMPLES, NUM_FEATURES)) * 2).astype(np.float32)
    true = np.where(rng.random((NUM_EXAMPLES, NUM_CLASSES)) < 0.3, 1, -1).astype(np.int8)
    known = np.where(rng.random(true.shape) < 0.5, true, 0).astype(np.int8)
    train = data.MultiLabelData(
        labels=true, label_names=tuple(f"c{c}" for c in range(NUM_CLASSES)), features=features
    )
    return train, known


def _tiny_model(loss=None, seed=0):
    network = models.build_mlp(
        NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=seed
    )
    model = PartialLabelModel(network, NUM_EXAMPLES, NUM_CLASSES, loss or losses.IgnoreUnknownBCE())
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    return model


def test_streamed_known_label_loss_is_the_dense_one_for_dense_and_sparse_labels():
    train, known = _tiny_data()
    model = _tiny_model()
    eval_ds = pipeline.evaluation_dataset(train, batch_size=20)  # a last, smaller batch too
    dense = known_label_loss(known, predict_probabilities(model, eval_ds))
    assert np.isfinite(dense).any()
    for labels in (known, SparseLabels.from_dense(known)):
        np.testing.assert_allclose(
            streamed_known_label_loss(model, eval_ds, labels), dense, rtol=1e-12
        )


def test_callback_cumulative_schedule_fit_well():
    train, known = _tiny_data()
    model = _tiny_model()
    eval_ds = pipeline.evaluation_dataset(train, batch_size=64)
    logged = []
    callback = LabelPruningCallback(
        eval_ds, known, ((1, 0.25), (2, 0.5)), "fit_well", log=logged.append
    )
    callback.set_model(model)

    callback.on_epoch_begin(0)
    np.testing.assert_array_equal(model.active_classes.numpy(), np.ones(NUM_CLASSES))

    class_loss = known_label_loss(known, predict_probabilities(model, eval_ds))
    callback.on_epoch_begin(1)
    active = model.active_classes.numpy()
    assert active.dtype == np.float32
    assert set(np.unique(active).tolist()) <= {0.0, 1.0}
    pruned_first = np.flatnonzero(active == 0)
    np.testing.assert_array_equal(pruned_first, np.sort(np.argsort(class_loss, kind="stable")[:2]))

    # Change the predictions, so the second round's ranking is different from the first.
    kernel = model.network.get_layer("logits").kernel
    kernel.assign(kernel.numpy() * np.linspace(-2, 2, NUM_CLASSES, dtype=np.float32))
    class_loss = known_label_loss(known, predict_probabilities(model, eval_ds))
    callback.on_epoch_begin(2)
    active = model.active_classes.numpy()
    pruned = np.flatnonzero(active == 0)
    assert pruned.size == 4
    assert set(pruned_first) <= set(pruned)  # pruned classes stay pruned
    still_active = np.setdiff1d(np.arange(NUM_CLASSES), pruned_first)
    newly = still_active[np.argsort(class_loss[still_active], kind="stable")[:2]]
    np.testing.assert_array_equal(pruned, np.sort(np.concatenate([pruned_first, newly])))

    callback.on_epoch_begin(3)  # not in the schedule
    np.testing.assert_array_equal(np.flatnonzero(model.active_classes.numpy() == 0), pruned)
    assert len(logged) == 2 and "4/8 remain active" in logged[1]
    logs = {}
    callback.on_epoch_end(3, logs)
    assert logs["active_classes"] == 4.0


def test_callback_during_fit_random():
    train, known = _tiny_data()
    model = _tiny_model()
    eval_ds = pipeline.evaluation_dataset(train, batch_size=64)
    train_ds = pipeline.training_dataset(train, known, batch_size=16, seed=0)
    callback = LabelPruningCallback(
        eval_ds, known, parse_prune_schedule("1:0.25,2:0.5"), "random", seed=3, log=lambda _: None
    )
    history = model.fit(train_ds, epochs=3, callbacks=[callback], shuffle=False, verbose=0)
    assert history.history["active_classes"] == [8.0, 6.0, 4.0]
    # Same seed, same choice.
    again = choose_classes_to_prune(
        np.ones(NUM_CLASSES, bool), 2, "random", rng=np.random.default_rng(3)
    )
    assert not model.active_classes.numpy()[again].any()


# ----------------------------------------------------------------------------
# A pruned class gets neither loss nor gradient


def _bce_by_hand(targets, logits, annotations):
    """Masked BCE over `targets` (annotations and pseudo labels), normalised by the annotations."""
    softplus = lambda z: np.logaddexp(0.0, z)
    entry = np.where(targets > 0, softplus(-logits), 0.0) + np.where(
        targets < 0, softplus(logits), 0.0
    )
    return entry.sum() / max((annotations != 0).sum(), 1)


def test_pruned_class_gets_zero_gradient_and_no_loss():
    train, known = _tiny_data(seed=2)
    model = _tiny_model()
    ((inputs, labels),) = pipeline.training_dataset(train, known, batch_size=16, seed=0).take(1)
    # Every unknown entry pseudo-labelled by its logit's sign: t- = 0.5, and the store holds
    # the positive ones (L = C slots).
    model.pseudo_negative_thresholds.assign(np.full(NUM_CLASSES, 0.5, np.float32))
    positive = model.network(inputs["x"], training=False).numpy() > 0
    store = np.zeros((NUM_EXAMPLES, NUM_CLASSES), np.int32)
    store[inputs["id"].numpy()] = np.where(positive, np.arange(1, NUM_CLASSES + 1), 0)
    model.pseudo_positives.assign(store)
    pruned = [1, 6]
    active = np.ones(NUM_CLASSES, np.float32)
    active[pruned] = 0.0
    model.active_classes.assign(active)

    layer = model.network.get_layer("logits")
    with tf.GradientTape() as tape:
        loss = model.compute_partial_loss(inputs, labels, training=True)
    kernel_grad, bias_grad = (g.numpy() for g in tape.gradient(loss, [layer.kernel, layer.bias]))

    for c in pruned:
        assert (kernel_grad[:, c] == 0).all()
        assert bias_grad[c] == 0
    for c in np.flatnonzero(active):
        assert np.abs(kernel_grad[:, c]).max() > 0
        assert bias_grad[c] != 0
    hidden_grads = _hidden_grads(model, inputs, labels)
    assert all(np.abs(g).max() > 0 for g in hidden_grads)

    # The loss equals IgnoreUnknownBCE with the pruned classes' labels removed (the pseudo
    # labels in its sum, the annotations alone in its normaliser).
    logits = model.network(inputs["x"], training=False)
    pseudo = np.sign(logits.numpy()).astype(np.int8)
    resolved = np.where(labels.numpy() != 0, labels.numpy(), pseudo)
    removed, annotations = resolved.copy(), labels.numpy().copy()
    removed[:, pruned] = annotations[:, pruned] = 0
    assert (resolved[:, pruned] != 0).any()  # there was something to remove
    ignore = losses.IgnoreUnknownBCE()
    expected = ignore.normalised(*ignore.sums(removed, logits, annotations=annotations), 16)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)
    by_hand = _bce_by_hand(removed, logits.numpy().astype(np.float64), annotations)
    np.testing.assert_allclose(float(loss), by_hand, rtol=1e-5)
    # ... and differs from the loss with every class active.
    assert abs(float(loss) - float(losses.IgnoreUnknownBCE()(resolved, logits))) > 1e-4


def _hidden_grads(model, inputs, labels):
    """Gradients of the hidden layer: active classes still train the shared layers."""
    hidden = model.network.layers[1]
    with tf.GradientTape() as tape:
        loss = model.compute_partial_loss(inputs, labels, training=True)
    return [g.numpy() for g in tape.gradient(loss, [hidden.kernel, hidden.bias])]


@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras.optimizers.SGD(0.5), lambda: keras.optimizers.AdamW(0.1, weight_decay=0.5)],
    ids=["sgd", "adamw"],
)
@pytest.mark.parametrize("jit_compile", [None, True], ids=["eager", "xla"])
def test_pruned_class_output_unchanged_by_train_step(optimizer, jit_compile):
    """The pruned column of the output layer does not move, even under AdamW's weight decay."""
    train, known = _tiny_data(seed=4)
    network = models.build_mlp(NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=0)
    model = PartialLabelModel(network, NUM_EXAMPLES, NUM_CLASSES, losses.IgnoreUnknownBCE())
    model.compile(optimizer=optimizer(), jit_compile=jit_compile)
    batches = pipeline.training_dataset(train, known, batch_size=16, seed=1)
    model.fit(batches, epochs=1, verbose=0)  # momentum in every column
    active = np.ones(NUM_CLASSES, np.float32)
    active[3] = 0.0
    model.active_classes.assign(active)
    layer = network.get_layer("logits")
    kernel_before, bias_before = layer.kernel.numpy().copy(), layer.bias.numpy().copy()
    model.fit(batches, epochs=1, verbose=0)  # several steps, where momentum alone would move it
    kernel_after, bias_after = layer.kernel.numpy(), layer.bias.numpy()
    np.testing.assert_array_equal(kernel_after[:, 3], kernel_before[:, 3])
    assert bias_after[3] == bias_before[3]
    assert (np.abs(kernel_after - kernel_before).max(axis=0)[active > 0] > 0).all()


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_a_pruned_train_function_computes_the_active_classes_only(jit_compile):
    """With classes pruned the train step computes the active head columns only: the loss is the
    loss of the active classes alone, pruned columns stay exactly, and the model still predicts
    every class."""
    train, known = _tiny_data(seed=4)
    network = models.build_mlp(NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=0)
    stats = class_stats.ClassStatistics.from_labels(known, [str(c) for c in range(NUM_CLASSES)])
    model = PartialLabelModel(network, NUM_EXAMPLES, NUM_CLASSES, losses.get("kpartial", stats))
    model.compile(optimizer=keras.optimizers.AdamW(0.1, weight_decay=0.5), jit_compile=jit_compile)
    batches = pipeline.training_dataset(train, known, batch_size=16, seed=1)
    model.fit(batches, epochs=1, verbose=0)  # Adam has momentum in every column now
    active = np.zeros(NUM_CLASSES, np.float32)
    active[[1, 5, 6]] = 1.0
    model.active_classes.assign(active)
    first = model.make_train_function()
    np.testing.assert_array_equal(model._head_phase.class_ids, [1, 5, 6])
    assert model.make_train_function() is first  # one train function per active set
    batch = next(iter(batches))
    full = float(model.compute_partial_loss(batch[0], batch[1], training=False))
    gathered = model._forward(batch[0], batch[1], False, class_ids=tf.constant([1, 5, 6]))[0]
    np.testing.assert_allclose(float(gathered), full, rtol=1e-5)
    layer = network.get_layer("logits")
    kernel_before, bias_before = layer.kernel.numpy().copy(), layer.bias.numpy().copy()
    model.fit(batches, epochs=1, verbose=0)
    pruned = active == 0
    np.testing.assert_array_equal(layer.kernel.numpy()[:, pruned], kernel_before[:, pruned])
    np.testing.assert_array_equal(layer.bias.numpy()[pruned], bias_before[pruned])
    assert (np.abs(layer.kernel.numpy() - kernel_before).max(axis=0)[~pruned] > 0).all()
    assert model.predict(pipeline.evaluation_dataset(train, 16), verbose=0).shape[1] == NUM_CLASSES


def test_a_pruning_phase_trains_like_the_masked_full_head():
    """The phase's own head variables and optimizer (slots carried over) give the active columns
    and the shared layers the same trajectory as masking the loss of the full head would."""
    train, known = _tiny_data(seed=4)
    batches = pipeline.training_dataset(train, known, batch_size=16, seed=1)
    twins = []
    for _ in range(2):
        network = models.build_mlp(
            NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=0
        )
        model = PartialLabelModel(network, NUM_EXAMPLES, NUM_CLASSES, losses.IgnoreUnknownBCE())
        model.compile(optimizer=keras.optimizers.AdamW(0.05, weight_decay=0.1))
        model.fit(batches, epochs=1, verbose=0)
        twins.append(model)
    phased, masked = twins
    active = np.ones(NUM_CLASSES, np.float32)
    active[[0, 3, 4]] = 0.0
    for model in twins:
        model.active_classes.assign(active)
    phased.fit(batches, epochs=2, verbose=0)  # one phase: the active columns' own variables
    assert phased._head_phase is not None
    for _ in range(2):
        for batch in batches:
            masked.train_step(batch)  # no phase: the full head, pruned classes weighted 0
    on = active > 0
    for mine, theirs in zip(phased.network.weights, masked.network.weights):
        mine, theirs = mine.numpy(), theirs.numpy()
        if mine.shape[-1] == NUM_CLASSES:  # the head: active columns only
            mine, theirs = mine[..., on], theirs[..., on]
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_a_masked_pruning_keeps_one_train_function_and_trains_like_a_phase(jit_compile):
    """Without `gathers_pruned_head` a pruning rebuilds nothing: the one train function reads the
    active classes from their variable, the pruned head columns stay exactly (momentum and weight
    decay included), and the active columns and shared layers follow the gathered phase's
    trajectory."""
    train, known = _tiny_data(seed=4)
    batches = pipeline.training_dataset(train, known, batch_size=16, seed=1)
    stats = class_stats.ClassStatistics.from_labels(known, [str(c) for c in range(NUM_CLASSES)])
    twins = []
    for gathers in (True, False):
        network = models.build_mlp(
            NUM_FEATURES, NUM_CLASSES, hidden_units=(16,), dropout=0.0, seed=0
        )
        model = PartialLabelModel(
            network,
            NUM_EXAMPLES,
            NUM_CLASSES,
            losses.get("kpartial", stats),
            gathers_pruned_head=gathers,
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(0.05, weight_decay=0.5), jit_compile=jit_compile
        )
        model.fit(batches, epochs=1, verbose=0)  # momentum in every column
        twins.append(model)
    phased, masked = twins
    first = masked.train_function
    active = np.ones(NUM_CLASSES, bool)
    active[[0, 3, 4]] = False
    layer = masked.network.get_layer("logits")
    kernel_before, bias_before = layer.kernel.numpy().copy(), layer.bias.numpy().copy()
    for model in twins:
        model.set_active_classes(active)
        model.fit(batches, epochs=2, verbose=0)
    assert phased._head_phase is not None and masked._head_phase is None
    assert masked.train_function is first
    np.testing.assert_array_equal(layer.kernel.numpy()[:, ~active], kernel_before[:, ~active])
    np.testing.assert_array_equal(layer.bias.numpy()[~active], bias_before[~active])
    for mine, theirs in zip(phased.network.weights, masked.network.weights):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "classes, examples, schedule, epochs, replicas, gathers",
    [
        (14, 1350, "0.75:0.25", 40, 1, False),  # a Mulan preset: the new train function costs more
        (9600, 100_000, "2:0.5", 3, 1, True),  # Open Images shape: the pruned epoch saves more
        (9600, 100_000, "", 3, 1, True),  # no pruning: nothing to decide
        (14, 1350, "0.75:0.25", 40, 2, True),  # several replicas always gather
        # Per phase: 0.1 x 1,000 x 100,000 x 3 = 3e7 for one phase, but not for each of two.
        (1000, 100_000, "7:0.1", 10, 1, True),
        (1000, 100_000, "7:0.1,9:0.1", 10, 1, False),
    ],
)
def test_gathers_pruned_head_where_the_skipped_entries_pay_for_a_train_function(
    classes, examples, schedule, epochs, replicas, gathers
):
    config = Config.from_flat(prune_schedule=schedule, epochs=epochs)
    assert label_pruning.gathers_pruned_head(config, examples, classes, replicas) is gathers


def test_a_share_after_the_last_epoch_is_skipped_in_one_line():
    """A preset's schedule fits any --epochs: a share entry too late for a short run is skipped."""
    config = Config.from_flat(epochs=1, prune_schedule="0.5:0.1,0.75:0.25", pseudo_labels="off")
    assert label_pruning.schedule_of(config) == ()
    lines = []
    assert label_pruning.callbacks(config, None, None, lines.append) == []
    assert lines == [
        "prune_schedule: 0.5:0.1, 0.75:0.25 falls at or after the last of 1 epochs; skipped"
    ]
    assert label_pruning.schedule_of(config.replace(epochs=2)) == ((1, 0.1),)
    assert label_pruning.schedule_of(config.replace(epochs=4)) == ((2, 0.1), (3, 0.25))


# ----------------------------------------------------------------------------
# tools/train.py rejects a bad schedule when parsing flags


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--prune_schedule=10:0.5,5:0.6"], "epochs must increase"),
        # An epoch count must fit the run (a share that does not is skipped, see below).
        (
            ["--prune_schedule=10:0.5", "--epochs=10", "--pseudo_labels=off"],
            "entry '10:0.5' prunes after 10 epochs",
        ),
    ],
    ids=["counts", "share"],
)
def test_train_cli_rejects_bad_prune_schedule(tmp_path, flags, message):
    workdir = tmp_path / "workdir"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "train.py"),
            f"--workdir={workdir}",
            *flags,
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode != 0
    assert "prune_schedule" in result.stderr
    assert message in result.stderr
    assert not workdir.exists()  # failed before main() created anything
    assert elapsed < 60


def test_pruned_class_gets_zero_gradient_under_statistics_weighted_loss():
    """The kpartial loss also has a term on unknown entries; pruning must silence it too."""
    train, known = _tiny_data(seed=3)
    model = _tiny_model(
        losses.StatisticsWeightedLoss(np.linspace(0.05, 0.4, NUM_CLASSES), unknown_weight=1.0)
    )
    active = np.ones(NUM_CLASSES, np.float32)
    active[[0, 5]] = 0.0
    model.active_classes.assign(active)
    ((inputs, labels),) = pipeline.training_dataset(train, known, batch_size=16, seed=0).take(1)
    layer = model.network.get_layer("logits")
    with tf.GradientTape() as tape:
        loss = model.compute_partial_loss(inputs, labels, training=True)
    kernel_grad, bias_grad = (g.numpy() for g in tape.gradient(loss, [layer.kernel, layer.bias]))
    assert (kernel_grad[:, [0, 5]] == 0).all() and (bias_grad[[0, 5]] == 0).all()
    assert (np.abs(kernel_grad[:, active > 0]).max(axis=0) > 0).all()
    assert (bias_grad[active > 0] != 0).all()
    # Same loss as the kpartial loss on the active classes alone.
    logits = model.network(inputs["x"], training=False)
    keep = np.flatnonzero(active)
    sub_loss = losses.StatisticsWeightedLoss(
        np.linspace(0.05, 0.4, NUM_CLASSES)[keep], unknown_weight=1.0
    )
    expected = sub_loss(labels.numpy()[:, keep], tf.gather(logits, keep, axis=1))
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)


def test_a_pruning_phase_loss_keeps_the_active_classes_priors_and_unknown_rates():
    priors, unknown = np.linspace(0.05, 0.4, NUM_CLASSES), np.linspace(0.001, 0.01, NUM_CLASSES)
    model = _tiny_model(losses.StatisticsWeightedLoss(priors, unknown_priors=unknown))
    keep = np.array([1, 4, 6])
    phase = model._loss_for_classes(keep)
    np.testing.assert_allclose(phase.priors, priors[keep])
    np.testing.assert_allclose(phase.unknown_priors, unknown[keep])


# ----------------------------------------------------------------------------
# The technique's callback, from the run's config


def test_callbacks_follow_the_config():
    from kpartial import label_pruning
    from kpartial.config import Config

    inputs = types.SimpleNamespace(known=np.zeros((4, 2), np.int8))
    datasets = types.SimpleNamespace(train_inputs="training inputs")
    config = Config.from_flat(
        epochs=8,
        prune_schedule="0.5:0.25,6:0.5",
        prune_criterion="random",
        seed=7,
        pseudo_labels="off",
    )
    (callback,) = label_pruning.callbacks(config, inputs, datasets, print)
    assert isinstance(callback, LabelPruningCallback)
    assert callback.schedule == {4: 0.25, 6: 0.5}  # the share resolved at --epochs
    assert (callback.criterion, callback.seed) == ("random", 7)
    assert callback.dataset == "training inputs" and callback.known_labels is inputs.known
    # No schedule, or auto with a loss that runs as published: nothing.
    assert label_pruning.callbacks(Config.from_flat(), inputs, datasets, print) == []
    ignore = Config.from_flat(method="ignore", prune_schedule="2:0.25")
    assert label_pruning.callbacks(ignore, inputs, datasets, print) == []
    asked = Config.from_flat(method="ignore", prune_schedule="2:0.25", pruning="on")
    assert len(label_pruning.callbacks(asked, inputs, datasets, print)) == 1
