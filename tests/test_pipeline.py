"""Tests for kpartial.pipeline: feature and image datasets, static shapes, id -> row mapping
with dense or sparse labels, per-epoch reshuffling, evaluation order, and the COCO tiny images
when they are available."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
import tensorflow as tf

from kpartial import data, pipeline
from kpartial.sparse_labels import SparseLabels
from tests.helpers import LABELS, SHARED_DATA, feature_data

COCO_VAL = SHARED_DATA / "coco-tiny" / "annotations" / "instances_val2017.json"

# ----------------------------------------------------------------------------
# Feature data

N, D, C, B = 22, 3, 4, 4


def _feature_data(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(N, D)).astype(np.float32)
    labels = rng.choice(np.array([1, -1, 0], np.int8), size=(N, C))
    return data.MultiLabelData(labels=labels, label_names=tuple("abcd"), features=features), labels


def _epoch(dataset):
    return [
        (inputs["x"].numpy(), inputs["id"].numpy(), labels.numpy()) for inputs, labels in dataset
    ]


def test_feature_batches_types_and_static_shapes():
    train, labels = _feature_data()
    dataset = pipeline.training_dataset(train, labels, batch_size=B, seed=0)
    inputs_spec, labels_spec = dataset.element_spec
    assert set(inputs_spec) == {"x", "id"}
    assert inputs_spec["x"] == tf.TensorSpec([B, D], tf.float32)
    assert inputs_spec["id"] == tf.TensorSpec([B], tf.int32)
    assert labels_spec == tf.TensorSpec([B, C], tf.int8)
    batches = _epoch(dataset)
    assert len(batches) == N // B  # the incomplete last batch is dropped
    for x, ids, y in batches:
        assert x.dtype == np.float32 and x.shape == (B, D)
        assert ids.dtype == np.int32 and ids.shape == (B,)
        assert y.dtype == np.int8 and y.shape == (B, C)


def test_feature_batches_map_ids_to_rows():
    train, labels = _feature_data()
    batches = _epoch(pipeline.training_dataset(train, labels, batch_size=B, seed=0))
    ids = np.concatenate([b[1] for b in batches])
    assert len(set(ids.tolist())) == ids.size == (N // B) * B  # no example twice in an epoch
    assert ids.min() >= 0 and ids.max() < N
    for x, batch_ids, y in batches:
        np.testing.assert_array_equal(x, train.features[batch_ids])
        np.testing.assert_array_equal(y, labels[batch_ids])


def test_feature_batches_use_the_given_labels_not_data_labels():
    train, _ = _feature_data()
    partial = np.zeros_like(train.labels)
    partial[::3, 1] = 1
    for _, ids, y in _epoch(pipeline.training_dataset(train, partial, batch_size=B, seed=0)):
        np.testing.assert_array_equal(y, partial[ids])


def _order(dataset):
    return np.concatenate([inputs["id"].numpy() for inputs, _ in dataset])


def test_feature_epochs_reshuffle_reproducibly():
    train, labels = _feature_data()
    first = [_order(pipeline.training_dataset(train, labels, B, 5, epoch=e)) for e in range(3)]
    second = [_order(pipeline.training_dataset(train, labels, B, 5, epoch=e)) for e in range(3)]
    np.testing.assert_array_equal(first, second)  # same seed, same sequence of epochs
    assert not np.array_equal(first[0], first[1])
    assert not np.array_equal(first[1], first[2])
    assert not np.array_equal(first[0], np.arange(first[0].size))  # shuffled at all
    other = _order(pipeline.training_dataset(train, labels, B, seed=6))
    assert not np.array_equal(other, first[0])


def test_an_epoch_is_drawn_from_the_epoch_variable_when_iteration_starts():
    # What exact resume needs: epoch 2 is the same batches whether training got there or resumed.
    train, labels = _feature_data()
    epoch = tf.Variable(0, dtype=tf.int32)
    dataset = pipeline.training_dataset(train, labels, B, seed=5, epoch=epoch)
    orders = []
    for e in range(3):
        epoch.assign(e)
        orders.append(_order(dataset))
    fixed = [_order(pipeline.training_dataset(train, labels, B, 5, epoch=e)) for e in range(3)]
    np.testing.assert_array_equal(orders, fixed)


def test_feature_batch_size_larger_than_data():
    train, labels = _feature_data()
    dataset = pipeline.training_dataset(train, labels, batch_size=1000, seed=0)
    assert dataset.element_spec[1].shape == (N, C)
    ((_, ids, _),) = _epoch(dataset)
    assert sorted(ids.tolist()) == list(range(N))


def test_training_dataset_rejects_wrong_label_rows():
    train, labels = _feature_data()
    with pytest.raises(ValueError, match="label rows"):
        pipeline.training_dataset(train, labels[:-1], batch_size=B, seed=0)


def test_feature_evaluation_dataset_in_order():
    train, _ = _feature_data()
    dataset = pipeline.evaluation_dataset(train, batch_size=5)
    assert isinstance(dataset.element_spec, dict) and set(dataset.element_spec) == {"x", "id"}
    batches = list(dataset)
    assert [int(b["id"].shape[0]) for b in batches] == [5, 5, 5, 5, 2]  # nothing dropped
    ids = np.concatenate([b["id"].numpy() for b in batches])
    np.testing.assert_array_equal(ids, np.arange(N))
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(np.concatenate([b["x"].numpy() for b in batches]), train.features)


def test_label_lookup_dense_and_sparse_give_identical_rows():
    sparse = SparseLabels.from_dense(LABELS)
    for ids in ([0, 1, 2, 3, 4, 5, 6], [6, 6, 0, 3, 3, 2], [1], [3, 6]):
        ids_t = tf.constant(ids, tf.int32)
        dense_rows = pipeline.label_lookup(LABELS)(ids_t)
        sparse_rows = pipeline.label_lookup(sparse)(ids_t)
        assert dense_rows.dtype == sparse_rows.dtype == tf.int8
        assert sparse_rows.shape == (len(ids), 3)
        np.testing.assert_array_equal(sparse_rows.numpy(), LABELS[ids])
        np.testing.assert_array_equal(dense_rows.numpy(), LABELS[ids])
    # Rows without any entry.
    empty = SparseLabels.from_dense(np.array([[0, 0], [1, 0], [0, 0]], np.int8))
    rows = pipeline.label_lookup(empty)(tf.constant([0, 2, 0], tf.int32))
    np.testing.assert_array_equal(rows.numpy(), np.zeros((3, 2), np.int8))


def test_label_lookup_yields_the_columns_it_is_given_as_each_batch_is_made():
    """With `LabelColumns` the rows hold those classes alone, read per call: all C, then [B, K]."""
    rng = np.random.default_rng(3)
    labels = rng.choice(np.array([-1, 0, 0, 1], np.int8), size=(20, 9))
    ids = tf.constant([4, 0, 19, 4, 7], tf.int32)
    for source in (labels, SparseLabels.from_dense(labels)):
        columns = pipeline.LabelColumns(9)
        lookup = tf.function(pipeline.label_lookup(source, columns))
        np.testing.assert_array_equal(lookup(ids).numpy(), labels[ids.numpy()])
        for kept in ([1, 2, 5, 8], [0], [3, 4, 5, 6, 7, 8, 0, 1, 2][:8]):
            columns.set(sorted(kept))
            np.testing.assert_array_equal(lookup(ids).numpy(), labels[ids.numpy()][:, sorted(kept)])


def test_known_entries_lookup_lists_the_known_entries_of_dense_and_sparse_labels():
    sparse = SparseLabels.from_dense(LABELS)
    for ids in ([0, 1, 2, 3, 4, 5, 6], [6, 6, 0, 3, 3, 2], [1], [3, 6]):
        expected = np.argwhere(LABELS[ids] != 0)
        for labels in (LABELS, sparse):
            entries = pipeline.known_entries_lookup(labels)(tf.constant(ids, tf.int32))
            assert entries.dtype == tf.int32
            got = entries.numpy()
            np.testing.assert_array_equal(got[np.lexsort((got[:, 1], got[:, 0]))], expected)
    empty = SparseLabels.from_dense(np.zeros((3, 2), np.int8))
    assert pipeline.known_entries_lookup(empty)(tf.constant([0, 2], tf.int32)).shape == (0, 2)


def test_training_dataset_with_sparse_labels_equals_dense():
    d = feature_data()

    def batches(labels):
        return [
            (x["x"].numpy(), x["id"].numpy(), y.numpy())
            for x, y in pipeline.training_dataset(d, labels, batch_size=3, seed=4)
        ]

    dense, sparse = batches(LABELS), batches(SparseLabels.from_dense(LABELS))
    assert len(dense) == 2  # 7 examples, batches of 3, remainder dropped
    for (xd, idd, yd), (xs, ids_, ys) in zip(dense, sparse):
        np.testing.assert_array_equal(idd, ids_)
        np.testing.assert_array_equal(xd, xs)
        np.testing.assert_array_equal(ys, yd)
        np.testing.assert_array_equal(yd, LABELS[idd])
        np.testing.assert_array_equal(xd, d.features[idd])
    assert len(set(np.concatenate([b[1] for b in dense]))) == 6


# ----------------------------------------------------------------------------
# Image data

IMAGE_SIZES = [(40, 30), (20, 50), (32, 32), (64, 48), (25, 25)]  # (height, width)
SIZE = (32, 32)


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for k, (height, width) in enumerate(IMAGE_SIZES):
        # Smooth gradients plus a per-image colour, so images differ and survive JPEG well.
        yy, xx = np.mgrid[0:height, 0:width]
        base = rng.integers(0, 200, 3)
        pixels = np.stack(
            [(base[0] + 2 * yy) % 256, (base[1] + 3 * xx) % 256, np.full_like(yy, 40 * k)], -1
        ).astype(np.uint8)
        path = folder / f"image_{k}.jpg"
        tf.io.write_file(str(path), tf.io.encode_jpeg(pixels, quality=95))
        paths.append(str(path))
    labels = np.array([[1, -1, 0], [0, 1, -1], [-1, 0, 1], [1, 1, 0], [0, 0, -1]], np.int8)
    return data.MultiLabelData(labels=labels, label_names=("p", "q", "r"), image_paths=paths)


def _reference_image(path, size=SIZE):
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    return tf.image.resize(tf.cast(image, tf.float32), size).numpy()


@pytest.mark.parametrize("augment", [True, False])
def test_image_training_batches(image_data, augment):
    dataset = pipeline.training_dataset(
        image_data, image_data.labels, batch_size=2, seed=0, image_size=SIZE, augment=augment
    )
    inputs_spec, labels_spec = dataset.element_spec
    assert inputs_spec["x"] == tf.TensorSpec([2, *SIZE, 3], tf.float32)
    assert inputs_spec["id"] == tf.TensorSpec([2], tf.int32)
    assert labels_spec == tf.TensorSpec([2, 3], tf.int8)
    batches = _epoch(dataset)
    assert len(batches) == 2
    ids = np.concatenate([b[1] for b in batches])
    assert len(set(ids.tolist())) == 4
    for x, batch_ids, y in batches:
        assert x.dtype == np.float32 and x.shape == (2, *SIZE, 3)
        assert x.min() >= 0.0 and x.max() <= 255.0
        np.testing.assert_array_equal(y, image_data.labels[batch_ids])
        for image, i in zip(x, batch_ids):
            reference = _reference_image(image_data.image_paths[i])
            if augment:
                # A crop of the same picture: its mean colour stays close, unlike other images'.
                distances = [
                    np.abs(image.mean((0, 1)) - _reference_image(p).mean((0, 1))).sum()
                    for p in image_data.image_paths
                ]
                assert int(np.argmin(distances)) == i
            else:
                np.testing.assert_allclose(image, reference, atol=1e-3)


def test_image_augmentation_reproducible_and_varies_by_epoch(image_data):
    def run():
        return [
            _epoch(
                pipeline.training_dataset(
                    image_data, image_data.labels, 5, seed=3, image_size=SIZE, epoch=epoch
                )
            )[0]
            for epoch in (0, 1)
        ]

    first, second = run(), run()
    for (x1, ids1, _), (x2, ids2, _) in zip(first, second):
        np.testing.assert_array_equal(ids1, ids2)
        np.testing.assert_array_equal(x1, x2)
    (x_a, ids_a, _), (x_b, ids_b, _) = first
    by_id_a = {int(i): x for i, x in zip(ids_a, x_a)}
    by_id_b = {int(i): x for i, x in zip(ids_b, x_b)}
    assert any(not np.array_equal(by_id_a[i], by_id_b[i]) for i in range(5))


def test_image_evaluation_dataset(image_data):
    dataset = pipeline.evaluation_dataset(image_data, batch_size=2, image_size=SIZE)
    assert set(dataset.element_spec) == {"x", "id"}
    runs = []
    for _ in range(2):
        batches = list(dataset)
        ids = np.concatenate([b["id"].numpy() for b in batches])
        images = np.concatenate([b["x"].numpy() for b in batches])
        runs.append(images)
        np.testing.assert_array_equal(ids, np.arange(5))
        assert images.shape == (5, *SIZE, 3) and images.dtype == np.float32
        for i, path in enumerate(image_data.image_paths):
            np.testing.assert_allclose(images[i], _reference_image(path), atol=1e-3)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_image_data_needs_an_image_size(image_data):
    with pytest.raises(ValueError, match="image_size"):
        pipeline.training_dataset(image_data, image_data.labels, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        pipeline.evaluation_dataset(image_data, batch_size=2)


@pytest.mark.skipif(not COCO_VAL.is_file(), reason=f"{COCO_VAL} not available")
def test_coco_tiny_training_batch():
    coco = data.load("coco", str(COCO_VAL))
    assert coco.image_paths is not None and coco.num_examples >= 16
    dataset = pipeline.training_dataset(
        coco, coco.labels, batch_size=16, seed=0, image_size=(64, 64)
    )
    ((inputs, labels),) = dataset.take(1)
    x, ids = inputs["x"].numpy(), inputs["id"].numpy()
    assert x.shape == (16, 64, 64, 3) and x.dtype == np.float32
    assert np.isfinite(x).all()
    assert x.min() >= 0.0 and x.max() <= 255.0 and x.std() > 1.0
    assert len(set(ids.tolist())) == 16
    np.testing.assert_array_equal(labels.numpy(), coco.labels[ids])


def test_a_file_that_is_not_an_image_fails_naming_the_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"this is not a JPEG")
    broken = data.MultiLabelData(
        labels=np.ones((1, 2), np.int8), label_names=("a", "b"), image_paths=(str(path),)
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="broken.jpg"):
        next(iter(pipeline.evaluation_dataset(broken, 1, image_size=(32, 32))))


def test_image_records_epochs_are_drawn_from_seed_and_epoch(image_data, tmp_path):
    from kpartial import tfrecords

    tfrecords.write_tfrecords(image_data, str(tmp_path / "records"), num_shards=2)
    records = data.load("tfrecord", str(tmp_path / "records"))

    def epoch_ids(epoch):
        dataset = pipeline.training_dataset(
            records, records.labels, 5, seed=3, image_size=SIZE, epoch=epoch
        )
        ((x, ids, y),) = _epoch(dataset)
        np.testing.assert_array_equal(y, image_data.labels[ids])
        return ids, x

    orders = [epoch_ids(epoch) for epoch in (0, 1, 1)]
    assert sorted(orders[0][0].tolist()) == list(range(5))  # every record once per epoch
    np.testing.assert_array_equal(orders[1][0], orders[2][0])
    np.testing.assert_array_equal(orders[1][1], orders[2][1])  # same crops for the same epoch


def test_record_data_needs_an_image_size(image_data, tmp_path):
    from kpartial import tfrecords

    tfrecords.write_tfrecords(image_data, str(tmp_path / "records"), num_shards=1)
    records = data.load("tfrecord", str(tmp_path / "records"))
    with pytest.raises(ValueError, match="image_size"):
        pipeline.training_dataset(records, records.labels, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        pipeline.evaluation_dataset(records, batch_size=2)
