"""Streaming Keras metrics against the NumPy reference functions in kpartial.metrics."""

import itertools
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpartial import losses, metrics
from kpartial.keras_metrics import (
    MaskedAveragePrecision,
    MaskedF1,
    MaskedPrecisionAtK,
)

C = 7
B = 50  # num_thresholds used where the AP must match exactly


def _data(n=90, c=C, seed=0, unknown=0.4):
    rng = np.random.default_rng(seed)
    y = rng.choice([1, -1], size=(n, c), p=[0.35, 0.65]).astype(np.int8)
    y[rng.random((n, c)) < unknown] = 0
    p = rng.random((n, c)).astype(np.float32)
    return p, y


def _quantized(p, b=B):
    """Scores rounded down to the bucket grid, as MaskedAveragePrecision sees them."""
    q = np.minimum(np.floor(np.clip(p, 0, 1).astype(np.float32) * np.float32(b)), b - 1)
    return q / b


THRESH = [0.3, 0.4, 0.5, 0.6, 0.5, 0.45, 0.7]

# (id, factory, numpy reference on (p, y)); y_pred here are probabilities, hence
# from_logits=False (PROBS) everywhere: the metrics default to logits.
PROBS = {"from_logits": False}
CASES = [
    ("cf1", lambda: MaskedF1(C, **PROBS), lambda p, y: metrics.f1_scores(y, p)["cf1"]),
    (
        "of1",
        lambda: MaskedF1(C, average="micro", **PROBS),
        lambda p, y: metrics.f1_scores(y, p)["of1"],
    ),
    (
        "cf1_per_class_threshold",
        lambda: MaskedF1(C, threshold=THRESH, **PROBS),
        lambda p, y: metrics.f1_scores(y, p, threshold=THRESH)["cf1"],
    ),
    (
        "of1_threshold_0.3",
        lambda: MaskedF1(C, threshold=0.3, average="micro", **PROBS),
        lambda p, y: metrics.f1_scores(y, p, threshold=0.3)["of1"],
    ),
    (
        "cf1_top2",
        lambda: MaskedF1(C, top_k=2, **PROBS),
        lambda p, y: metrics.f1_scores_at_top_k(y, p, k=2)["cf1"],
    ),
    (
        "of1_top3",
        lambda: MaskedF1(C, average="micro", top_k=3, **PROBS),
        lambda p, y: metrics.f1_scores_at_top_k(y, p, k=3)["of1"],
    ),
    (
        "p_at_1",
        lambda: MaskedPrecisionAtK(1, **PROBS),
        lambda p, y: metrics.precision_at_k(y, p, k=1),
    ),
    (
        "p_at_3",
        lambda: MaskedPrecisionAtK(3, **PROBS),
        lambda p, y: metrics.precision_at_k(y, p, k=3),
    ),
    # k > C: ranking clipped to C entries, still divided by k (as in NumPy).
    (
        "p_at_9",
        lambda: MaskedPrecisionAtK(9, **PROBS),
        lambda p, y: metrics.precision_at_k(y, p, k=9),
    ),
    (
        "map_grid",
        lambda: MaskedAveragePrecision(C, num_thresholds=B, **PROBS),
        lambda p, y: metrics.mean_average_precision(y, _quantized(p)),
    ),
]
IDS = [c[0] for c in CASES]


def _feed(metric, p, y, splits=(0, 17, 50, None), sample_weight=None):
    bounds = list(splits[:-1]) + [len(p)]
    for a, b in itertools.pairwise(bounds):
        sw = None if sample_weight is None else sample_weight[a:b]
        metric.update_state(y[a:b], p[a:b], sample_weight=sw)
    return float(metric.result())


def _close(a, b, tol=1e-5):
    if math.isnan(b):
        return math.isnan(a)
    return abs(a - b) <= tol


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_accumulated_batches_equal_numpy_on_everything(case):
    _, make, ref = case
    p, y = _data()
    got = _feed(make(), p, y)
    want = ref(p, y)
    assert not math.isnan(want)
    assert _close(got, want), (got, want)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unknown_entries_are_ignored(case):
    _, make, ref = case
    p, y = _data(seed=1)
    rng = np.random.default_rng(5)
    base = _feed(make(), p, y)
    for fill in (rng.random(p.shape), np.full(p.shape, np.nan), np.ones(p.shape)):
        p2 = np.where(y == 0, fill, p).astype(np.float32)
        assert _close(_feed(make(), p2, y), base)
    assert _close(base, ref(p, y))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reset_state(case):
    _, make, ref = case
    p, y = _data(seed=2)
    m = make()
    _feed(m, p, y)
    m.reset_state()
    p2, y2 = _data(n=40, seed=3)
    m.update_state(y2, p2)
    assert _close(float(m.result()), ref(p2, y2))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_serialization_round_trip(case):
    _, make, _ = case
    m = make()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(m))
    assert type(clone) is type(m)
    assert clone.get_config() == m.get_config()
    p, y = _data(seed=4)
    assert _close(_feed(clone, p, y), _feed(m, p, y), tol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_integer_sample_weight_equals_repeated_rows(case):
    _, make, ref = case
    p, y = _data(n=60, seed=6)
    w = np.random.default_rng(7).integers(0, 4, size=len(p))
    got = _feed(make(), p, y, sample_weight=w.astype(np.float32))
    want = ref(np.repeat(p, w, axis=0), np.repeat(y, w, axis=0))
    assert _close(got, want, tol=1e-5), (got, want)


def test_map_approximates_exact_numpy_map():
    p, y = _data(n=500, c=6, seed=8)
    # Make the scores informative so the AP is not trivially ~prevalence.
    p = np.clip(p * 0.6 + 0.4 * (y == 1), 0, 1).astype(np.float32)
    m = MaskedAveragePrecision(6, **PROBS)  # default num_thresholds=200
    got = _feed(m, p, y, splits=(0, 123, 333, None))
    exact = metrics.mean_average_precision(y, p)
    assert abs(got - exact) < 0.02, (got, exact)
    per_class = keras.ops.convert_to_numpy(m.per_class_result())
    np.testing.assert_allclose(per_class, metrics.per_class_average_precision(y, p), atol=0.03)


def test_class_filter_and_nan_when_nothing_evaluable():
    p, y = _data(n=50, seed=9)
    y[:, 2] = np.where(y[:, 2] != 0, -1, 0)  # class 2: no positive -> excluded from mAP / CF1
    y[:, 4] = np.where(y[:, 4] != 0, 1, 0)  # class 4: no negative -> excluded from mAP only
    for _, make, ref in CASES:
        assert _close(_feed(make(), p, y), ref(p, y))
    neg = np.where(y != 0, -1, 0).astype(np.int8)  # no annotated positive anywhere
    for name, make, ref in CASES:
        assert math.isnan(ref(p, neg)), name
        assert math.isnan(_feed(make(), p, neg)), name


def test_from_logits():
    p, y = _data(seed=10)
    logits = np.log(p / (1 - p)).astype(np.float32)
    for make in (
        lambda **kw: MaskedF1(C, threshold=0.6, **kw),
        lambda **kw: MaskedF1(C, average="micro", top_k=2, **kw),
        lambda **kw: MaskedPrecisionAtK(2, **kw),
        lambda **kw: MaskedAveragePrecision(C, num_thresholds=B, **kw),
    ):
        a = _feed(make(from_logits=False), p, y)
        b = _feed(make(), logits, y)  # logits are the default
        assert abs(a - b) < 1e-4
        assert make().get_config()["from_logits"] is True
        assert make(from_logits=False).get_config()["from_logits"] is False


def test_invalid_arguments():
    with pytest.raises(ValueError):
        MaskedF1(C, average="weighted")
    with pytest.raises(ValueError):
        MaskedF1(C, threshold=[0.5, 0.5])
    with pytest.raises(ValueError):
        MaskedF1(C, top_k=0)
    with pytest.raises(ValueError):
        MaskedPrecisionAtK(0)
    with pytest.raises(ValueError):
        MaskedAveragePrecision(C, num_thresholds=1)


def test_compile_jit_evaluate_matches_numpy():
    d_in, n = 5, 64  # 4 full batches: one trace, one XLA compilation
    rng = np.random.default_rng(11)
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    _, y = _data(n=n, seed=12)
    model = keras.Sequential([keras.Input((d_in,)), keras.layers.Dense(C, activation="sigmoid")])
    model.set_weights(
        [rng.normal(size=(d_in, C)).astype(np.float32), rng.normal(size=C).astype(np.float32)]
    )
    # One case per metric family (keeps the XLA compile short); the jit tf.function test below
    # covers other configurations.
    cases = [
        c for c in CASES if c[0] in ("cf1_per_class_threshold", "of1_top3", "p_at_3", "map_grid")
    ]
    made = [(name, make()) for name, make, _ in cases]
    for name, m in made:  # several cases share a default name ("cf1", "of1")
        m.name = name
    model.compile(loss="mse", metrics=[m for _, m in made], jit_compile=True)
    res = model.evaluate(x, y.astype(np.float32), batch_size=16, return_dict=True, verbose=0)
    p = keras.ops.convert_to_numpy(model(x))
    for (name, m), (_, _, ref) in zip(made, cases):
        assert _close(res[m.name], ref(p, y), tol=1e-5), (name, res[m.name], ref(p, y))


def test_update_state_in_jit_tf_function():
    p, y = _data(seed=13)
    cases = [c for c in CASES if c[0] in ("cf1_top2", "of1", "p_at_9", "map_grid")]
    made = [make() for _, make, _ in cases]

    @tf.function(jit_compile=True)
    def step(yt, yp):
        for m in made:
            m.update_state(yt, yp)

    for a, b in ((0, 30), (30, 60), (60, 90)):
        step(tf.constant(y[a:b]), tf.constant(p[a:b]))
    for m, (name, _, ref) in zip(made, cases):
        assert _close(float(m.result()), ref(p, y)), name


def test_default_metrics_agree_with_a_kpartial_loss_on_logits():
    """Compiled next to a kpartial loss (which takes logits), the defaults need no from_logits."""
    d_in, n = 5, 64
    rng = np.random.default_rng(14)
    x = rng.normal(size=(n, d_in)).astype(np.float32)
    _, y = _data(n=n, seed=15)
    model = keras.Sequential([keras.Input((d_in,)), keras.layers.Dense(C)])  # logits out
    model.set_weights(
        [rng.normal(size=(d_in, C)).astype(np.float32), rng.normal(size=C).astype(np.float32)]
    )
    made = {
        "cf1": (MaskedF1(C), lambda p: metrics.f1_scores(y, p)["cf1"]),
        "of1": (MaskedF1(C, average="micro"), lambda p: metrics.f1_scores(y, p)["of1"]),
        "p_at_3": (MaskedPrecisionAtK(3), lambda p: metrics.precision_at_k(y, p, k=3)),
        "map": (
            MaskedAveragePrecision(C, num_thresholds=B),
            lambda p: metrics.mean_average_precision(y, _quantized(p)),
        ),
    }
    model.compile(loss=losses.IgnoreUnknownBCE(), metrics=[m for m, _ in made.values()])
    res = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    probabilities = 1.0 / (1.0 + np.exp(-keras.ops.convert_to_numpy(model(x)).astype(np.float64)))
    for name, (_, reference) in made.items():
        assert _close(res[name], reference(probabilities)), (name, res[name])
