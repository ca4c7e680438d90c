"""kpartial.tfrecords: writing and reading TFRecord shards of features or images."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from kpartial import data, pipeline, simulate, tfrecords, training
from kpartial.sparse_labels import SparseLabels
from tests.helpers import LABELS, NAMES, feature_data


def records_per_shard(folder, index):
    return [
        sum(1 for _ in tf.data.TFRecordDataset(os.path.join(folder, shard)))
        for shard in index["shards"]
    ]


def test_feature_data_round_trip_over_several_shards(tmp_path):
    out = tmp_path / "rec"
    index = tfrecords.write_tfrecords(feature_data(), str(out), num_shards=3)
    assert index["shards"] == [
        "data-00000-of-00003.tfrecord",
        "data-00001-of-00003.tfrecord",
        "data-00002-of-00003.tfrecord",
    ]
    assert (index["num_examples"], index["written_examples"]) == (7, 7)
    assert index["inputs"] == "features" and index["feature_dim"] == 3
    assert index["skipped"] == {}
    with open(out / "dataset.json") as f:
        assert json.load(f) == index
    # Contiguous shards: round(linspace(0, 7, 4)) = 0, 2, 5, 7.
    assert records_per_shard(str(out), index) == [2, 3, 2]

    for path in (str(out), str(out / "dataset.json")):
        back = data.load("tfrecord", path)
        assert isinstance(back.labels, SparseLabels)
        np.testing.assert_array_equal(back.labels.to_dense(), LABELS)
        np.testing.assert_array_equal(back.features, feature_data().features)
        assert back.label_names == NAMES
        assert back.records is None and back.image_paths is None
        assert back.source == f"tfrecord:{out}"


def test_writes_simulated_labels_instead(tmp_path):
    full = feature_data()
    kept = simulate.per_image_count(LABELS, 1, 0, seed=0)
    tfrecords.write_tfrecords(full, str(tmp_path), num_shards=2, labels=kept)
    back = tfrecords.read_tfrecords(str(tmp_path))
    np.testing.assert_array_equal(back.labels.to_dense(), kept)
    assert not np.array_equal(kept, LABELS)
    np.testing.assert_array_equal((kept == 1).sum(axis=1), [1, 1, 0, 1, 1, 1, 0])


def test_write_checks_shards_and_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"num_shards must be in 1\.\.7, got 8"):
        tfrecords.write_tfrecords(feature_data(), str(tmp_path), num_shards=8)
    labels_only = data.MultiLabelData(LABELS, NAMES, source="npz:/x/labels.npz")
    with pytest.raises(data.DataError, match="npz:/x/labels.npz: neither features nor images"):
        tfrecords.write_tfrecords(labels_only, str(tmp_path), num_shards=1)


def write_jpegs(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        image = np.full((20 + 4 * k, 30 + 2 * k, 3), [20 * k, 100, 250 - 20 * k], np.uint8)
        path = folder / f"img{k}.jpg"
        path.write_bytes(tf.io.encode_jpeg(image, quality=100).numpy())
        paths.append(str(path))
    return paths


def test_image_data_round_trip_and_evaluation_order(tmp_path):
    paths = write_jpegs(tmp_path / "images", 7)
    images = data.MultiLabelData(LABELS, NAMES, image_paths=paths, source="coco:/x/i.json")
    out = tmp_path / "rec"
    index = tfrecords.write_tfrecords(images, str(out), num_shards=2)
    assert index["inputs"] == "image" and index["feature_dim"] is None
    back = data.load("tfrecord", str(out))
    assert back.records == (
        str(out),
        ("data-00000-of-00002.tfrecord", "data-00001-of-00002.tfrecord"),
    )
    assert back.features is None and back.image_paths is None
    np.testing.assert_array_equal(back.labels.to_dense(), LABELS)

    batches = list(pipeline.evaluation_dataset(back, 3, (32, 32)))
    assert [b["x"].shape for b in batches] == [(3, 32, 32, 3), (3, 32, 32, 3), (1, 32, 32, 3)]
    ids = np.concatenate([b["id"].numpy() for b in batches])
    np.testing.assert_array_equal(ids, np.arange(7))
    x = np.concatenate([b["x"].numpy() for b in batches])
    expected = np.array([[20 * k, 100, 250 - 20 * k] for k in range(7)], np.float32)
    np.testing.assert_allclose(x.mean(axis=(1, 2)), expected, atol=3)


def test_empty_image_is_an_error_or_skipped_with_consecutive_ids(tmp_path):
    paths = write_jpegs(tmp_path / "images", 7)
    open(paths[2], "wb").close()
    images = data.MultiLabelData(LABELS, NAMES, image_paths=paths, source="coco:/x/i.json")
    with pytest.raises(data.DataError, match=re.escape(f"{paths[2]}: image file is empty")):
        tfrecords.write_tfrecords(images, str(tmp_path / "err"), num_shards=2)
    out = tmp_path / "rec"
    index = tfrecords.write_tfrecords(images, str(out), num_shards=2, on_bad_input="skip")
    assert index["skipped"] == {"image file is empty": 1}
    assert (index["num_examples"], index["written_examples"]) == (7, 6)
    back = tfrecords.read_tfrecords(str(out))
    assert back.skipped == {"image file is empty": 1}
    np.testing.assert_array_equal(back.labels.to_dense(), np.delete(LABELS, 2, axis=0))
    ids = np.concatenate([b["id"].numpy() for b in pipeline.evaluation_dataset(back, 4, (32, 32))])
    np.testing.assert_array_equal(ids, np.arange(6))


def test_read_errors_name_the_folder(tmp_path):
    out = tmp_path / "rec"
    tfrecords.write_tfrecords(feature_data(), str(out), num_shards=2)
    os.remove(out / "data-00001-of-00002.tfrecord")
    with pytest.raises(
        data.DataError,
        match=re.escape(
            f"{out}: shard data-00001-of-00002.tfrecord listed in dataset.json is missing"
        ),
    ):
        data.load("tfrecord", str(out))
    os.remove(out / "dataset.json")
    with pytest.raises(
        data.DataError, match=re.escape(f"{out}: not a kpartial TFRecord folder (dataset.json:")
    ):
        data.load("tfrecord", str(out))


def test_image_shards_train_with_a_validation_set_of_their_own(tmp_path):
    def shards(name):
        paths = write_jpegs(tmp_path / f"images_{name}", 7)
        images = data.MultiLabelData(LABELS, NAMES, image_paths=paths, source=f"coco:/{name}")
        tfrecords.write_tfrecords(images, str(tmp_path / name), num_shards=2)
        return f"tfrecord:{tmp_path / name}"

    config = training.TrainConfig(
        train_data=shards("train"),
        test_data=shards("test"),
        epochs=2,
        batch_size=4,
        image_size=32,
        steps_per_execution=1,
        pseudo_labels="off",
        jit_compile="false",
        auto_tune="off",  # one image run is enough to show the shards stream
    )
    # Streamed shards cannot be split: the refusal names the flag that gives validation data.
    with pytest.raises(data.DataError, match="give them as --validation_data"):
        training.run(config, log=lambda line: None)
    lines = []
    validated = dataclasses.replace(config, validation_data=shards("validation"))
    result = training.run(validated, log=lines.append)
    assert f"validation: 7 examples of tfrecord:{tmp_path / 'validation'}" in "\n".join(lines)
    assert result["selection"]["validation_examples"] == 7 and 0.0 <= result["map"] <= 1.0
    assert "the validation data tfrecord:" in result["selection"]["note"]
