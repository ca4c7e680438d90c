"""The contract every loss of `kpartial.losses.LOSSES` keeps, checked the same way for each.

Values against independent NumPy formulas are in test_losses.py and test_literature_losses.py;
here each loss is only compared with itself: finite values and gradients, configuration and
serialisation round trips, XLA, the sample-weight contract label pruning relies on, batches
without a known label, and low-precision logits. Where a loss legitimately differs, the test says
so next to the reason.
"""

import inspect
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpartial import class_stats, losses

B, C = 6, 8
_rng = np.random.default_rng(0)
Y = _rng.choice(np.array([-1, 0, 0, 1], np.int8), size=(B, C))
Y[1] = 0  # an example without a known label
Z = (_rng.normal(size=(B, C)) * 3).astype(np.float32)
# Priors on both sides of p_asl's prior_threshold (0.05), so its top-k selection matters.
PRIORS = np.array([0.01, 0.3, 0.02, 0.5, 0.04, 0.1, 0.03, 0.2])
STATS = class_stats.ClassStatistics(
    tuple("abcdefgh"), np.zeros(C, np.int64), np.zeros(C, np.int64), PRIORS
)
# Epoch-aware losses (splc, ll_*) are checked after their corrections have started.
EPOCH = 2

# Every registered name with its defaults, plus options that switch on other code paths.
CONFIGS = {name: (name, {}) for name in losses.LOSSES} | {
    "wan_fixed_weight": ("wan", {"unknown_weight": 0.2}),
    "focal_ignore": ("focal", {"unknown": "ignore"}),
    "asl_no_margin": ("asl", {"gamma_positive": 1.0, "gamma_negative": 2.0, "margin": 0.0}),
}


def make(config, epoch=EPOCH):
    name, options = CONFIGS[config]
    loss = losses.get(name, STATS, **options)
    if hasattr(loss, "epoch"):
        loss.epoch.assign(epoch)
    return loss


def value_and_grad(loss, y, z, sample_weight=None):
    z = tf.convert_to_tensor(z)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = loss(y, z, sample_weight=sample_weight)
    return value, tape.gradient(value, z)


def assert_finite(value, grad):
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))


def same_epoch(restored, loss):
    # The epoch is training state (checkpointed with the model), not configuration.
    if hasattr(loss, "epoch"):
        restored.epoch.assign(loss.epoch)
    return restored


@pytest.fixture(params=list(CONFIGS))
def config(request):
    return request.param


def test_value_and_gradients_are_finite(config):
    value, grad = value_and_grad(make(config), Y, Z)
    assert_finite(value, grad)
    assert float(value) > 0 and np.any(grad.numpy() != 0)


def test_get_config_names_every_constructor_argument_and_round_trips(config):
    loss = make(config)
    loss_config = loss.get_config()
    assert set(loss_config) == set(inspect.signature(type(loss)).parameters)
    json.dumps(loss_config)  # a .keras file stores it as JSON
    restored = same_epoch(type(loss).from_config(loss_config), loss)
    assert restored.get_config() == loss_config
    np.testing.assert_allclose(float(restored(Y, Z)), float(loss(Y, Z)), rtol=1e-6)


def test_keras_serialization_round_trip(config):
    loss = make(config)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    np.testing.assert_allclose(
        float(same_epoch(restored, loss)(Y, Z)), float(loss(Y, Z)), rtol=1e-6
    )


def test_xla_matches_eager(config):
    loss = make(config)
    compiled = tf.function(lambda y, z: value_and_grad(loss, y, z), jit_compile=True)
    value, grad = compiled(tf.constant(Y), tf.constant(Z))
    eager_value, eager_grad = value_and_grad(loss, Y, Z)
    np.testing.assert_allclose(float(value), float(eager_value), rtol=1e-5)
    np.testing.assert_allclose(grad.numpy(), eager_grad.numpy(), rtol=1e-4, atol=1e-7)


KEEP = np.array([0, 1, 3, 4, 6, 7])
ZEROED = np.setdiff1d(np.arange(C), KEEP)


def _subset_loss(config, loss):
    """The same loss for the classes KEEP alone (their priors, the same options)."""
    loss_config = loss.get_config()
    if "priors" in loss_config:
        loss_config["priors"] = PRIORS[KEEP].tolist()
    if config == "wan":
        # gamma defaults to 1 / (C - 1) of the label space it sees: give it the full C's value.
        loss_config["unknown_weight"] = 1.0 / (C - 1)
    return same_epoch(type(loss).from_config(loss_config), loss)


def test_a_zero_class_weight_is_the_loss_without_that_class(config):
    name = CONFIGS[config][0]
    loss = make(config)
    z = Z.copy()
    if name.startswith("ll_"):
        # The large-loss share is of all B x C entries, a zero-weight class's included, so once
        # selection runs, leaving classes out changes how many entries are selected and which.
        # The contract holds before the schedule starts selecting.
        loss = make(config, epoch=0)
    if name == "p_asl":
        # Its top-k likely classes are ranked over all C scores: a zero-weight class with a high
        # score takes a slot. Give the zeroed classes the lowest scores so the ranking of the
        # kept classes is what it is without them.
        z[:, ZEROED] = -20.0
    if name == "epr":
        # Its regulariser's target k = sum of all C priors and its 1/C scale are of the full
        # label space (a zeroed class still counts in k), so only the masked BCE is compared;
        # the gradient check below includes the regulariser.
        bce = losses.get("epr", STATS, regularisation_weight=0.0)
        masked = float(bce(Y, z, sample_weight=_class_weight()))
        alone = float(_subset_loss(config, bce)(Y[:, KEEP], z[:, KEEP]))
    value, grad = value_and_grad(loss, Y, z, sample_weight=_class_weight())
    if name != "epr":
        masked, alone = float(value), float(_subset_loss(config, loss)(Y[:, KEEP], z[:, KEEP]))
    np.testing.assert_allclose(masked, alone, rtol=1e-5)
    assert np.all(grad.numpy()[:, ZEROED] == 0.0)


def _class_weight():
    weight = np.ones((1, C), np.float32)
    weight[0, ZEROED] = 0.0
    return weight


def _documented_value(loss, weight):
    """The module docstring's reduction: each part's sum s l / max(1, sum s k), then R."""
    y, z = tf.constant(Y, tf.float32), tf.constant(Z)
    weight = tf.broadcast_to(weight if weight.ndim == 2 else weight[:, None], (B, C))
    value = 0.0
    for entry, counted in loss.parts(y, z):
        value += tf.reduce_sum(weight * entry) / tf.maximum(tf.reduce_sum(weight * counted), 1.0)
    statistics = loss.batch_statistics(y, z, weight)
    if statistics is not None:
        value += loss.batch_term(tf.reduce_mean(statistics, axis=0))
    return float(value)


def test_example_and_entry_weights_reduce_as_documented(config):
    loss = make(config)
    rng = np.random.default_rng(1)
    per_example = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0], np.float32)
    per_entry = (rng.random((B, C)) * (rng.random((B, C)) > 0.2)).astype(np.float32)
    for weight in (per_example, per_example[:, None], per_entry):
        np.testing.assert_allclose(
            float(loss(Y, Z, sample_weight=weight)), _documented_value(loss, weight), rtol=1e-5
        )
    # [B] is a per-example weight: the same as [B, 1].
    np.testing.assert_allclose(
        float(loss(Y, Z, sample_weight=per_example)),
        float(loss(Y, Z, sample_weight=np.broadcast_to(per_example[:, None], (B, C)))),
        rtol=1e-6,
    )


def test_a_batch_without_known_labels_is_finite(config):
    value, grad = value_and_grad(make(config), np.zeros_like(Y), Z)
    assert_finite(value, grad)


# As the module docstring says: the masked losses are 0 on a batch without a known label.
ZERO_WITHOUT_KNOWN_LABELS = {"ignore", "focal_ignore"}


def test_a_batch_without_known_labels_is_zero_exactly_where_the_docstring_says(config):
    if config == "p_asl":
        pytest.skip("0 or not by the batch: whether its top-k x B covers every unannotated entry")
    value = float(make(config)(np.zeros_like(Y), Z))
    assert (value == 0.0) == (config in ZERO_WITHOUT_KNOWN_LABELS), value


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_extreme_low_precision_logits_stay_finite(config, dtype):
    z = np.resize(np.array([1e4, -1e4, 6e4, -6e4, 0.0, 3e4, 30.0, -30.0]), (B, C))
    value, grad = value_and_grad(make(config), Y, tf.constant(z, dtype))
    assert_finite(value, grad)


def test_capabilities(config):
    name = CONFIGS[config][0]
    loss = make(config)
    assert isinstance(loss, losses.PartialLabelLoss)
    assert loss.needs_example_state == (name == "ll_cp")  # LL-Cp writes per-example labels
    if loss.uses_priors:
        assert loss.get_config()["priors"] == PRIORS.tolist()
        with pytest.raises(ValueError, match="needs class statistics"):
            losses.get(name)
    else:
        assert "priors" not in loss.get_config()
