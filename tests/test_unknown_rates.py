"""Measuring the unknown entries' positive rates during the run (`kpartial.unknown_rates`)."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from kpartial import data, losses, models, pipeline, unknown_rates
from kpartial.config import Config
from kpartial.partial_model import PartialLabelModel
from kpartial.sparse_scores import SparseScores
from tests.test_losses import KPARTIAL_KW, reference


def _histograms(logits_per_class):
    """[C, BINS] histograms of each class's logits, in the bins `bin_logits` centres."""
    centres = unknown_rates.bin_logits()
    width = centres[1] - centres[0]
    rows = []
    for logits in logits_per_class:
        bins = np.clip(np.floor((logits - centres[0]) / width + 0.5), 0, unknown_rates.BINS - 1)
        rows.append(np.bincount(bins.astype(int), minlength=unknown_rates.BINS))
    return np.stack(rows)


def _scores_of_a_calibrated_network(rate, prior, size, rng, separation=2.0):
    """Logits of `size` unknown entries, `rate` of them positive, from a network calibrated to
    annotated entries whose positive rate is `prior`: its logit is the evidence (a log-likelihood
    ratio) plus logit(prior)."""
    positive = rng.random(size) < rate
    # N(+-m, 2m): the log-likelihood ratio of such a score is the score itself.
    evidence = rng.normal(np.where(positive, separation, -separation), np.sqrt(2.0 * separation))
    return evidence + np.log(prior / (1 - prior))


@pytest.mark.parametrize(
    "rate, prior",
    [(0.05, 0.5), (0.02, 0.3), (0.2, 0.2), (0.1, 0.1)],  # verified-like shifts, then at random
)
def test_em_recovers_the_unknown_entries_rate_from_a_prior_shift(rate, prior):
    rng = np.random.default_rng(0)
    logits = _scores_of_a_calibrated_network(rate, prior, 200_000, rng)
    shift = 0.4  # a miscalibration the held-out entries measured
    histograms = _histograms([logits + shift])
    (measured,) = unknown_rates.em_rates(histograms, [prior], shift)
    naive = np.mean(1 / (1 + np.exp(-logits)))  # the mean score alone keeps the annotated prior
    assert measured == pytest.approx(rate, abs=0.01)
    if rate != prior:
        assert abs(measured - rate) < abs(naive - rate) / 3


def test_the_pass_bins_the_unknown_entries_logits_for_the_em():
    """`binned_unknown_logits` (a refresh's `HistogramPass`, bins pooled) against NumPy: every
    unknown entry's logit in its bin, known entries not counted."""
    train, known = _data(num_examples=64)
    network = models.build_mlp(5, 3, hidden_units=(8,), dropout=0.0, seed=0)
    dataset = pipeline.evaluation_dataset(train, batch_size=16)
    logits = network(train.features).numpy() * 20  # spread over the range, past both ends
    network = keras.Sequential([network, keras.layers.Rescaling(20.0)])
    got = unknown_rates.binned_unknown_logits(network, dataset, known)
    expected = _histograms([logits[known[:, c] == 0, c] for c in range(3)])
    np.testing.assert_array_equal(got, expected)


def test_em_keeps_the_prior_for_a_class_without_unknown_entries_and_stays_in_bounds():
    histograms = np.zeros((2, unknown_rates.BINS), int)
    histograms[1, 0] = 10  # every unknown entry scores far below anything positive
    rates = unknown_rates.em_rates(histograms, [0.3, 0.3])
    assert rates[0] == pytest.approx(0.3)
    assert unknown_rates.RATE_FLOOR <= rates[1] < 1e-3


def test_calibration_shift_finds_the_offset_of_held_out_scores():
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 3, 50_000)
    labels = np.where(rng.random(classes.size) < 0.3, 1, -1)
    evidence = rng.normal(np.where(labels > 0, 1.0, -1.0), np.sqrt(2.0))
    logits = evidence + np.log(0.3 / 0.7) + 0.7  # true delta 0.7
    scores = SparseScores(
        np.arange(classes.size), classes, 1 / (1 + np.exp(-logits)), labels, classes.size, 3
    )
    assert unknown_rates.calibration_shift(scores) == pytest.approx(0.7, abs=0.05)


def test_em_never_exceeds_the_prior():
    """Annotation that would prefer negatives is not assumed: u_c <= pi_c."""
    rng = np.random.default_rng(3)
    logits = _scores_of_a_calibrated_network(0.6, 0.2, 50_000, rng)
    (measured,) = unknown_rates.em_rates(_histograms([logits]), [0.2])
    assert measured == pytest.approx(0.2)


@pytest.mark.parametrize("gather_share", [0.0, 1.0], ids=["dense", "gathered"])
def test_the_loss_takes_the_unknown_rates_from_tensors(gather_share, monkeypatch):
    """`sums(..., unknown=(measured, rates))` is the loss with those rates (measured = 1, or
    None: the rates alone, with no warm-up to blend) or masked BCE (measured = 0), value and
    gradient checked against the NumPy reference, with the known labels' terms computed over
    [B, C] and gathered."""
    monkeypatch.setattr(losses, "GATHER_KNOWN_SHARE", gather_share)
    rng = np.random.default_rng(2)
    y = rng.choice([-1, 0, 1], size=(6, 3), p=[0.3, 0.5, 0.2]).astype(np.int8)
    z = rng.normal(size=(6, 3)).astype(np.float32)
    loss = losses.StatisticsWeightedLoss(**KPARTIAL_KW)
    rates = np.array([0.01, 0.2, 0.001], np.float32)
    masked_bce = {"balance": 0.0, "unknown_weight": 0.0, "negative_focusing": 0.0}
    masked_bce["negative_margin"] = 0.0
    with_rates = {"unknown_priors": rates}
    for measured, options in ((1.0, with_rates), (None, with_rates), (0.0, masked_bce)):
        logits = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(logits)
            flag = None if measured is None else np.float32(measured)
            sums = loss.sums(y, logits, unknown=(flag, rates))
            value = loss.normalised(*sums, 6)
        expected, expected_grad = reference("kpartial", y, z, **{**KPARTIAL_KW, **options})
        assert float(value) == pytest.approx(expected, rel=1e-5)
        np.testing.assert_allclose(
            tape.gradient(value, logits), expected_grad, rtol=1e-4, atol=1e-7
        )
    bce, _ = reference("ignore", y, z)
    assert float(loss.normalised(*loss.sums(y, z, unknown=(np.float32(0), rates)), 6)) == (
        pytest.approx(bce, rel=1e-5)
    )
    with pytest.raises(ValueError, match="no unknown term"):
        losses.IgnoreUnknownBCE().sums(y, z, unknown=(np.float32(1.0), rates))


def _data(num_examples=64, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_examples, 5)).astype(np.float32)
    true = np.where(rng.random((num_examples, num_classes)) < 0.3, 1, -1).astype(np.int8)
    known = np.where(rng.random(true.shape) < 0.5, true, 0).astype(np.int8)
    names = tuple("abcdefgh"[:num_classes])
    return data.MultiLabelData(labels=true, label_names=names, features=features), known


def _model(num_examples=64, num_classes=3, **options):
    network = models.build_mlp(5, num_classes, hidden_units=(8,), dropout=0.0, seed=0)
    loss = losses.StatisticsWeightedLoss(np.full(num_classes, 0.3), unknown_weight=1.0)
    model = PartialLabelModel(
        network, num_examples, num_classes, loss, measures_unknown_rates=True, **options
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    return model


def test_the_train_step_reads_the_measured_rates_and_checkpoints_carry_them(tmp_path):
    train, _ = _data()
    model = _model()
    batch = ({"x": train.features[:16], "id": np.arange(16)}, np.zeros((16, 3), np.int8))
    off = float(model.compute_partial_loss(batch[0], batch[1], False))
    assert off == 0.0  # only unknown entries: masked BCE until the rates are measured
    model.set_unknown_rates([0.1, 0.2, 0.3])
    assert model.unknown_rates_measured
    on = float(model.compute_partial_loss(batch[0], batch[1], False))
    assert on > 0.0
    # A model whose rates are set before its first step (the annotation test's) reads them alone.
    rates_alone = _model(masked_until_rates_set=False)
    rates_alone.set_weights(model.get_weights())
    assert float(rates_alone.compute_partial_loss(batch[0], batch[1], False)) == pytest.approx(on)
    path = tmp_path / "state.weights.h5"
    model.save_weights(str(path))
    fresh = _model()
    assert not fresh.unknown_rates_measured
    fresh.load_weights(str(path))
    assert fresh.unknown_rates_measured
    np.testing.assert_allclose(fresh.unknown_rates.numpy(), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="rates in"):
        model.set_unknown_rates([0.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="no unknown term"):
        PartialLabelModel(
            models.build_mlp(5, 3, hidden_units=(8,)),
            64,
            3,
            losses.IgnoreUnknownBCE(),
            measures_unknown_rates=True,
        )


def test_the_callback_measures_once_before_its_epoch_and_logs_the_truth_when_simulated():
    train, known = _data()
    model = _model()
    dataset = pipeline.evaluation_dataset(train, batch_size=16)
    lines = []
    callback = unknown_rates.UnknownRateCallback(
        dataset, known, np.full(3, 0.3), 1, true_labels=train.labels, log=lines.append
    )
    callback.set_model(model)
    callback.on_epoch_begin(0)
    assert not model.unknown_rates_measured and not lines  # epoch 0: still the warm-up
    callback.on_epoch_begin(1)
    assert model.unknown_rates_measured and len(lines) == 1
    assert "measured on the network of 1 epochs" in lines[0] and "true mean" in lines[0]
    rates = model.unknown_rates.numpy()
    callback.on_epoch_begin(2)  # measured already (as after a resume): not again
    assert len(lines) == 1
    np.testing.assert_array_equal(model.unknown_rates.numpy(), rates)
    logs = {}
    callback.on_epoch_end(1, logs)
    assert set(logs) == {"unknown_rate_mean", "calibration_shift", "unknown_rate_true_mean"}
    assert np.all(rates <= 0.3 + 1e-6)  # never above the prior


def _stats(complete=False):
    return types.SimpleNamespace(complete=complete, priors=np.full(3, 0.3))


@pytest.mark.parametrize(
    "flat, stats, on",
    [
        ({}, _stats(), True),
        ({"missing_labels": "counts"}, _stats(), False),
        ({"method": "ignore"}, _stats(), False),
        ({}, _stats(complete=True), False),
    ],
)
def test_switched_on(flat, stats, on):
    config = Config.from_flat(**{"missing_labels": "measured", **flat})
    assert unknown_rates.switched_on(config, stats) == on


def test_given_class_statistics_are_not_measured_over(tmp_path):
    path = tmp_path / "given.csv"
    path.write_text("label,positives,negatives,prior\na,1,1,0.5\n")
    config = Config.from_flat(missing_labels="measured", class_stats=str(path))
    assert not unknown_rates.switched_on(config, _stats())


def test_a_run_too_short_to_measure_says_so():
    train, known = _data()
    inputs = types.SimpleNamespace(stats=_stats(), train=train, known=known, validation=None)
    datasets = types.SimpleNamespace(train_inputs=None, validation=None)
    lines = []
    short = Config.from_flat(epochs=1, missing_labels="measured")
    assert unknown_rates.callbacks(short, inputs, datasets, lines.append) == []
    assert len(lines) == 1 and "not measured" in lines[0] and "stays masked BCE" in lines[0]
    nine = short.replace(epochs=9)
    (callback,) = unknown_rates.callbacks(nine, inputs, datasets, print)
    assert callback.epoch == 3  # the first pseudo-label refresh's share, 0.33 of 9


def test_old_auto_reads_as_counts():
    assert Config().data.missing_labels == "tested"
    assert Config.from_flat(missing_labels="auto").data.missing_labels == "counts"
