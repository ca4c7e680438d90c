"""TFRecord shards, sparse label lookup in the pipeline, data helpers and tiny training runs."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kpartial import data, pipeline, simulate, tfrecords, training
from kpartial.sparse_labels import SparseLabels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LABELS = np.array(
    [
        [1, -1, 0],
        [0, 0, 1],
        [-1, -1, -1],
        [0, 1, 0],
        [1, 0, -1],
        [-1, 1, 1],
        [0, -1, 0],
    ],
    np.int8,
)
NAMES = ("cat", "dog", "bird")


def feature_data(labels=LABELS):
    n = labels.shape[0]
    features = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 4
    return data.MultiLabelData(labels, NAMES, features=features, source="npz:/x/feat.npz")


def records_per_shard(folder, index):
    return [
        sum(1 for _ in tf.data.TFRecordDataset(os.path.join(folder, shard)))
        for shard in index["shards"]
    ]


# ----------------------------------------------------------------------------
# tfrecords


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


# ----------------------------------------------------------------------------
# pipeline


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
# data


def test_load_drops_or_rejects_rows_and_classes_without_labels(tmp_path):
    path = tmp_path / "gaps.npz"
    y = np.array([[1, -1, 0, 1], [0, 0, 0, 0], [-1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, -1]])
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.savez(path, x=x, y=y)
    with pytest.raises(
        data.DataError,
        match=re.escape(
            f"npz:{path}: class 'class_2': class without any known label (empty class)"
        ),
    ):
        data.load("npz", str(path))
    got = data.load("npz", str(path), on_bad_input="skip")
    assert got.label_names == ("class_0", "class_1", "class_3")
    np.testing.assert_array_equal(got.labels, [[1, -1, 1], [-1, 1, 0], [0, 0, -1]])
    np.testing.assert_array_equal(got.features, x[[0, 2, 4]])
    assert got.skipped == {
        "class without any known label (empty class)": 1,
        "row without any known label": 2,
    }
    np.savez(path, x=x, y=y[:, [0, 1, 3]])
    with pytest.raises(
        data.DataError,
        match=re.escape(
            f"npz:{path}: row 1 (0-based example): row without any known label (2 such records)"
        ),
    ):
        data.load("npz", str(path))


def test_drop_unlabelled_with_sparse_labels():
    y = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0], [0, -1, 1]], np.int8)
    d = data.MultiLabelData(SparseLabels.from_dense(y), ("a", "b", "c"), source="s")
    got = data.drop_unlabelled(d, data.BadInput("skip"))
    assert isinstance(got.labels, SparseLabels)
    assert got.label_names == ("b", "c")
    np.testing.assert_array_equal(got.labels.to_dense(), [[1, 0], [-1, 1]])
    assert got.skipped == {
        "class without any known label (empty class)": 1,
        "row without any known label": 2,
    }


def test_split_is_seeded_disjoint_and_complete():
    n = 20
    labels = np.where(np.arange(n * 2).reshape(n, 2) % 3 == 0, 1, -1).astype(np.int8)
    d = data.MultiLabelData(
        labels, ("a", "b"), features=np.arange(n, dtype=np.float32)[:, None], source="npz:f"
    )
    train, test = data.split(d, 0.3, seed=5)
    rows_train, rows_test = train.features[:, 0].astype(int), test.features[:, 0].astype(int)
    assert (train.num_examples, test.num_examples) == (14, 6)
    assert not set(rows_train) & set(rows_test)
    np.testing.assert_array_equal(np.sort(np.r_[rows_train, rows_test]), np.arange(n))
    assert list(rows_train) == sorted(rows_train) and list(rows_test) == sorted(rows_test)
    np.testing.assert_array_equal(train.labels, labels[rows_train])
    np.testing.assert_array_equal(test.labels, labels[rows_test])
    expected_test = np.sort(np.random.default_rng(5).permutation(n)[:6])
    np.testing.assert_array_equal(rows_test, expected_test)
    again = data.split(d, 0.3, seed=5)[1].features[:, 0]
    np.testing.assert_array_equal(again, rows_test)
    assert not np.array_equal(data.split(d, 0.3, seed=6)[1].features[:, 0], rows_test)
    assert test.source == "npz:f (split seed 5, test fraction 0.3: test)"
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(
            data.DataError, match=re.escape(f"test_fraction must be in (0, 1), got {bad}")
        ):
            data.split(d, bad, 0)
    with pytest.raises(data.DataError, match=r"npz:f: test_fraction 0\.01 of 20 examples leaves"):
        data.split(d, 0.01, 0)


def test_take_keeps_labels_features_and_paths_in_order():
    sparse = SparseLabels.from_dense(LABELS)
    paths = [f"/img/{k}.jpg" for k in range(7)]
    d = data.MultiLabelData(sparse, NAMES, image_paths=paths, source="src")
    got = d.take([5, 0, 5], source="part")
    np.testing.assert_array_equal(got.labels.to_dense(), LABELS[[5, 0, 5]])
    assert list(got.image_paths) == ["/img/5.jpg", "/img/0.jpg", "/img/5.jpg"]
    assert got.source == "part" and d.take([1]).source == "src"
    f = feature_data().take([6, 1])
    np.testing.assert_array_equal(f.features, feature_data().features[[6, 1]])
    np.testing.assert_array_equal(f.labels, LABELS[[6, 1]])


# ----------------------------------------------------------------------------
# training


def test_parse_options():
    assert data.parse_options("") == {}
    assert data.parse_options("min_count=3, ratio=0.5,with_images=false,flag=True,name=x") == {
        "min_count": 3,
        "ratio": 0.5,
        "with_images": False,
        "flag": True,
        "name": "x",
    }
    # A comma starts a new option only before `name=`: values may be comma lists.
    assert data.parse_options("task_columns=NR-AR,SR-p53,featurizer=morgan") == {
        "task_columns": "NR-AR,SR-p53",
        "featurizer": "morgan",
    }
    for bad in ("min_count", "=3", "x,a=1"):
        with pytest.raises(ValueError, match="must look like key=value"):
            data.parse_options(bad)


def test_align_classes_reorders_dense_and_sparse_and_names_missing_classes():
    test = feature_data()
    assert data.align_classes(test, NAMES, "spec") is test
    got = data.align_classes(test, ("bird", "cat"), "spec")
    assert got.label_names == ("bird", "cat")
    np.testing.assert_array_equal(got.labels, LABELS[:, [2, 0]])
    sparse = dataclasses.replace(test, labels=SparseLabels.from_dense(LABELS))
    got = data.align_classes(sparse, ("bird", "dog"), "spec")
    np.testing.assert_array_equal(got.labels.to_dense(), LABELS[:, [2, 1]])
    with pytest.raises(
        data.DataError, match=r"npz:t: 1 training classes are not classes of the test set .*'fish'"
    ):
        data.align_classes(test, ("cat", "fish"), "npz:t")


RUN = {
    "test_fraction": 0.3,
    "epochs": 1,
    "pseudo_labels": "off",
    "batch_size": 16,
    "hidden_units": (8,),
    "pseudo_labels": "off",
    "steps_per_execution": 1,
    "jit_compile": "false",
}


def write_run_npz(path, empty_row=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = np.where(rng.random((60, 4)) < 0.3, 1, -1).astype(np.int8)
    if empty_row is not None:
        y[empty_row] = 0
    np.savez(path, x=x, y=y)
    return path


def check_result(result, test_examples):
    for key in ("map", "cf1", "of1", "evaluated_classes", "p@1", "history", "train_seconds"):
        assert key in result
    assert result["annotated_entries"] == test_examples * 4  # test labels are all known
    assert result["epochs"] == 1 and len(result["history"]) == 1


def test_tiny_run_on_npz_with_a_skipped_row(tmp_path):
    path = write_run_npz(tmp_path / "run.npz", empty_row=5)
    config = training.TrainConfig(train_data=f"npz:{path}", on_bad_input="skip", **RUN)
    result = training.run(config, log=lambda *_: None)
    check_result(result, test_examples=18)  # round(0.3 * 59)
    reason = {"row without any known label": 1}
    assert result["skipped_input"] == {"train": reason, "test": {}}  # counted once, with train
    with pytest.raises(data.DataError, match=re.escape(f"npz:{path}: row 5 (0-based example)")):
        training.run(dataclasses.replace(config, on_bad_input="error"), log=lambda *_: None)


def test_tiny_run_with_a_saved_simulation(tmp_path):
    path = write_run_npz(tmp_path / "run.npz")
    full = data.load("npz", str(path))
    train, _ = data.split(full, 0.3, seed=0)
    kept = simulate.per_image_count(train.labels, 1, 1, seed=3)
    sim = tmp_path / "sim.npz"
    simulate.save(
        sim,
        kept,
        scheme="per_image_count",
        seed=3,
        params={"positives": 1, "negatives": 1},
        source=train.source,
        label_names=train.label_names,
    )
    config = training.TrainConfig(train_data=f"npz:{path}", simulation=str(sim), **RUN)
    assert np.array_equal(training.training_labels(config, train), kept)
    result = training.run(config, log=lambda *_: None)
    check_result(result, test_examples=18)
    assert result["skipped_input"] == {"train": {}, "test": {}}
    # A simulation of the whole file does not fit the training split.
    simulate.save(
        sim,
        full.labels,
        scheme="keep_fraction",
        seed=0,
        params={},
        source="x",
        label_names=full.label_names,
    )
    with pytest.raises(ValueError, match=re.escape(f"{sim}: shape (60, 4) differs")):
        training.run(config, log=lambda *_: None)


def test_tiny_run_from_tfrecord_shards_and_make_tfrecords_cli(tmp_path):
    path = write_run_npz(tmp_path / "run.npz")
    out = tmp_path / "rec"
    done = subprocess.run(
        [
            sys.executable,
            "tools/make_tfrecords.py",
            f"--data=npz:{path}",
            "--num_shards=3",
            f"--out={out}",
        ],
        check=False,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote 60 of 60 examples in 3 shards to {out}" in done.stdout
    back = data.load("tfrecord", str(out))
    full = data.load("npz", str(path))
    np.testing.assert_array_equal(back.labels.to_dense(), full.labels)
    np.testing.assert_array_equal(back.features, full.features)

    config = training.TrainConfig(train_data=f"tfrecord:{out}", **RUN)
    result = training.run(config, log=lambda *_: None)
    check_result(result, test_examples=18)
    assert result["skipped_input"] == {"train": {}, "test": {}}
    assert result["train_data"] == f"tfrecord:{out}"
