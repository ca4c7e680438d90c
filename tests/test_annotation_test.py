"""Testing how labels went missing on the validation split (`kpartial.annotation_test`)."""

import types

import keras
import numpy as np
import pytest

from kpartial import annotation_test, class_stats, data, losses, pipeline, pseudo_labels
from kpartial.config import Config
from kpartial.partial_model import PartialLabelModel
from kpartial.pseudo_label_rules import LOWEST_LOGIT
from kpartial.sparse_labels import SparseLabels
from kpartial.unknown_rates import BINS


def _binned(values):
    width = -2.0 * LOWEST_LOGIT / BINS
    return np.clip(np.floor((np.asarray(values) - LOWEST_LOGIT) / width), 0, BINS - 1).astype(int)


def _histogram(bins):
    return np.bincount(bins, minlength=BINS)


def _reference(known_per_class, unknown_per_class):
    """van Elteren's z and the pooled AUC by comparing every (known, unknown) pair of bins."""
    numerator = variance = won_total = pairs_total = 0.0
    for known, unknown in zip(known_per_class, unknown_per_class):
        n1, n2 = len(known), len(unknown)
        if not n1 or not n2:
            continue
        won = sum((k > u) + 0.5 * (k == u) for k in known for u in unknown)
        weight = 1.0 / (n1 + n2 + 1)
        numerator += weight * (won - n1 * n2 / 2)
        variance += weight**2 * n1 * n2 * (n1 + n2 + 1) / 12
        won_total, pairs_total = won_total + won, pairs_total + n1 * n2
    return numerator / np.sqrt(variance), won_total / pairs_total


def test_exchangeability_matches_the_pairwise_count():
    rng = np.random.default_rng(0)
    known = [_binned(rng.normal(0.5, 2, size)) for size in (7, 1, 30, 0)]
    unknown = [_binned(rng.normal(0.0, 2, size)) for size in (40, 9, 3, 5)]
    z, auc = annotation_test.exchangeability(
        np.stack([_histogram(b) for b in known]), np.stack([_histogram(b) for b in unknown])
    )
    expected_z, expected_auc = _reference(known, unknown)
    assert z == pytest.approx(expected_z, rel=1e-9)
    assert auc == pytest.approx(expected_auc, rel=1e-9)


def test_z_is_standard_normal_when_the_entries_are_exchangeable_and_large_when_not():
    rng = np.random.default_rng(1)
    null = []
    for _ in range(400):
        sizes = rng.integers(2, 40, size=(12, 2))
        known = np.stack([_histogram(_binned(rng.normal(0, 3, n))) for n, _ in sizes])
        unknown = np.stack([_histogram(_binned(rng.normal(0, 3, n))) for _, n in sizes])
        null.append(annotation_test.exchangeability(known, unknown)[0])
    assert abs(np.mean(null)) < 0.15 and 0.85 < np.std(null) < 1.15
    assert np.mean(np.asarray(null) > 1.645) == pytest.approx(0.05, abs=0.03)
    sizes = rng.integers(20, 200, size=(12, 2))
    known = np.stack([_histogram(_binned(rng.normal(1, 3, n))) for n, _ in sizes])
    unknown = np.stack([_histogram(_binned(rng.normal(0, 3, n))) for _, n in sizes])
    z, auc = annotation_test.exchangeability(known, unknown)
    assert z > annotation_test.Z_CRITICAL and auc > 0.55
    assert annotation_test.exchangeability(np.zeros((2, BINS)), unknown[:2]) == (0.0, 0.5)


def _identity_model(priors, num_classes):
    """A PartialLabelModel whose network returns its inputs as logits: the test's scores are the
    validation features themselves."""
    network = keras.Sequential([keras.Input((num_classes,)), keras.layers.Identity()])
    loss = losses.StatisticsWeightedLoss(priors)
    return PartialLabelModel(network, 8, num_classes, loss, measures_unknown_rates=True)


def _validation(verified, num_examples=400, num_classes=6, seed=0):
    """(dataset, known labels) of held-out examples whose features are informative logits; their
    known entries are each example's 2 highest-scoring classes (verified candidates) or 2 classes
    at random."""
    rng = np.random.default_rng(seed)
    truth = rng.random((num_examples, num_classes)) < 0.2
    logits = rng.normal(np.where(truth, 1.5, -1.5), 1.0).astype(np.float32)
    order = np.argsort(-(logits if verified else rng.random(logits.shape)), axis=1)
    known = np.zeros(truth.shape, np.int8)
    rows = np.arange(num_examples)[:, None]
    known[rows, order[:, :2]] = np.where(truth, 1, -1)[rows, order[:, :2]]
    held_out = data.MultiLabelData(
        labels=known, label_names=tuple("abcdef"[:num_classes]), features=logits
    )
    return pipeline.evaluation_dataset(held_out, batch_size=64), known


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_validation_histograms_bin_the_known_and_the_unknown_entries(sparse):
    dataset, known = _validation(True)
    logits = np.concatenate([batch["x"].numpy() for batch in dataset])
    logits[0, :3] = [LOWEST_LOGIT - 1.0, -LOWEST_LOGIT + 1.0, 0.0]  # outside the bins, an edge
    dataset = pipeline.evaluation_dataset(
        data.MultiLabelData(labels=known, label_names=tuple("abcdef"), features=logits), 64
    )
    labels = SparseLabels.from_dense(known) if sparse else known
    network = keras.Sequential([keras.Input((6,)), keras.layers.Identity()])
    # 300 of 400 examples, in chunks of 5 rows (not a divisor of the batches of 64).
    got_known, got_unknown, seen = annotation_test.validation_histograms(
        network, dataset, labels, max_examples=300, rows=5
    )
    assert seen == 300
    bins, annotated = _binned(logits[:300]), known[:300] != 0
    for c in range(6):
        np.testing.assert_array_equal(got_known[c], _histogram(bins[annotated[:, c], c]))
        np.testing.assert_array_equal(got_unknown[c], _histogram(bins[~annotated[:, c], c]))


@pytest.mark.parametrize("verified", [True, False])
def test_the_callback_starts_on_the_counts_and_keeps_or_replaces_them_at_its_epoch(verified):
    validation = _validation(verified)
    training_labels = np.zeros((1000, 6), np.int8)
    training_labels[:20, :] = 1
    training_labels[20:200, :] = -1  # annotated shares alike: the counts read "at random"
    stats = class_stats.ClassStatistics.from_labels(training_labels, tuple("abcdef"))
    assert not stats.depends_on_class
    model = _identity_model(stats.priors, 6)
    lines = []
    callback = annotation_test.AnnotationTestCallback(validation, stats, 1000, 2, log=lines.append)
    callback.set_model(model)
    callback.on_train_begin()
    np.testing.assert_allclose(model.unknown_rates.numpy(), stats.priors, rtol=1e-6)
    assert model.unknown_rates_measured and not annotation_test.reads_for_a_reason(model, stats)
    callback.on_epoch_begin(1)
    assert not lines
    callback.on_epoch_begin(2)
    assert len(lines) == 1 and "labels tested on 400 held-out examples" in lines[0]
    logs = {}
    callback.on_epoch_end(2, logs)
    assert set(logs) == {"annotation_z", "annotation_auc"}
    assert (logs["annotation_z"] > annotation_test.Z_CRITICAL) == verified
    assert annotation_test.reads_for_a_reason(model, stats) == verified
    if verified:
        assert "missing for a reason" in lines[0] and "the counts read at random" in lines[0]
        np.testing.assert_allclose(model.unknown_rates.numpy(), 21 / 1002, rtol=1e-6)
        assert "lower bound" in pseudo_labels.tested_off_line(model, stats)
    else:
        assert "missing at random in classes" in lines[0]
        assert pseudo_labels.tested_off_line(model, stats) == ""
    rates = model.unknown_rates.numpy()
    resumed = annotation_test.AnnotationTestCallback(validation, stats, 1000, 2, log=lines.append)
    resumed.set_model(model)
    resumed.on_train_begin()  # a resumed run keeps what its checkpoint holds
    resumed.on_epoch_begin(3)
    np.testing.assert_array_equal(model.unknown_rates.numpy(), rates)
    assert len(lines) == 1


def _stats(complete=False):
    return types.SimpleNamespace(
        complete=complete, priors=np.full(3, 0.3), unknown_priors=np.full(3, 0.3)
    )


@pytest.mark.parametrize(
    "flat, stats, on",
    [
        ({}, _stats(), True),
        ({"missing_labels": "counts"}, _stats(), False),
        ({"missing_labels": "measured"}, _stats(), False),
        ({"method": "ignore"}, _stats(), False),
        ({}, _stats(complete=True), False),
    ],
)
def test_switched_on_by_default_for_kpartial_with_unknown_entries(flat, stats, on):
    assert annotation_test.switched_on(Config.from_flat(**flat), stats) == on


def test_a_run_without_a_validation_split_keeps_the_counts_and_says_why():
    stats = _stats()
    inputs = types.SimpleNamespace(stats=stats, known=np.zeros((10, 3)), validation=None)
    datasets = types.SimpleNamespace(validation=None)
    lines = []
    config = Config.from_flat(epochs=8)
    (callback,) = annotation_test.callbacks(config, inputs, datasets, lines.append)
    assert callback.epoch == 8  # never tests
    assert len(lines) == 1 and "not tested, because the run has no validation split" in lines[0]
    short = annotation_test.callbacks(config.replace(epochs=1), inputs, datasets, lines.append)
    assert short[0].epoch == 1 and "not tested" in lines[-1]


def test_pseudo_labels_wait_for_the_test_unless_the_priors_are_dense():
    sparse = types.SimpleNamespace(
        complete=False, priors=np.full(3, 0.05), unknown_priors=np.full(3, 0.001)
    )
    sparse.depends_on_class = True
    config = Config()
    assert config.data.missing_labels == "tested"
    assert pseudo_labels.off_because(config, sparse) == ""  # the test decides
    dense = types.SimpleNamespace(complete=False, priors=np.full(3, 0.4))
    dense.unknown_priors, dense.depends_on_class = dense.priors, False
    assert "dense" in pseudo_labels.off_because(config, dense)
