"""kpartial.tfrecords: writing and reading TFRecord shards of features or images."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from kpartial import data, pipeline, simulate, tfrecords, training
from kpartial.config import Config
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

    config = Config.from_flat(
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
    validated = config.replace(validation_data=shards("validation"))
    result = training.run(validated, log=lines.append)
    assert f"validation: 7 examples of tfrecord:{tmp_path / 'validation'}" in "\n".join(lines)
    assert result["selection"]["validation_examples"] == 7 and 0.0 <= result["map"] <= 1.0
    assert "the validation data tfrecord:" in result["selection"]["note"]


# ----------------------------------------------------------------------------
# Damaged shards and indexes: one DataError line naming the file, or (feature data, "skip")
# the lost records dropped and counted.

SHARD0 = "data-00000-of-00002.tfrecord"


def written(tmp_path, features=None):
    """A 2-shard folder of `feature_data()` (4 + 3 records); returns (folder, index)."""
    out = tmp_path / "rec"
    full = feature_data()
    if features is not None:
        full = data.MultiLabelData(LABELS, NAMES, features=features, source=full.source)
    return out, tfrecords.write_tfrecords(full, str(out), num_shards=2)


def edit_index(folder, **fields):
    """Rewrites dataset.json with `fields` set (a value None deletes the field)."""
    index = json.loads((folder / "dataset.json").read_text())
    for key, value in fields.items():
        if value is None:
            index.pop(key, None)
        else:
            index[key] = value
    (folder / "dataset.json").write_text(json.dumps(index))


def load_error(folder, on_bad_input="error"):
    with pytest.raises(data.DataError) as info:
        data.load("tfrecord", str(folder), on_bad_input=on_bad_input)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_the_index_records_each_shards_record_count(tmp_path):
    out, index = written(tmp_path)
    assert index["shard_records"] == [4, 3] == records_per_shard(str(out), index)
    assert not [p for p in os.listdir(out) if p.startswith(".writing-")]  # staging removed


def test_truncated_shard_is_an_error_or_its_lost_records_are_skipped(tmp_path):
    out, _ = written(tmp_path)
    shard = out / SHARD0
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    # Was a DataLossError traceback ("truncated record at ...").
    assert load_error(out) == (
        f"{shard}: record 1 (0-based) cannot be read (truncated record at 131: Read less bytes "
        "than requested): records lost from a damaged or truncated shard (3 such records) "
        "(on_bad_input=skip drops and counts them)"
    )
    kept = data.load("tfrecord", str(out), on_bad_input="skip")
    assert kept.skipped == {"records lost from a damaged or truncated shard": 3}
    rows = [0, 4, 5, 6]  # record 0 of shard 0, then shard 1
    np.testing.assert_array_equal(kept.features, feature_data().features[rows])
    np.testing.assert_array_equal(kept.labels.to_dense(), LABELS[rows])


def test_bit_flip_in_a_record_is_a_damaged_shard(tmp_path):
    out, _ = written(tmp_path)
    shard = out / SHARD0
    content = bytearray(shard.read_bytes())
    content[200] ^= 0x10  # inside record 1
    shard.write_bytes(bytes(content))
    message = load_error(out)
    assert message.startswith(f"{shard}: record 1 (0-based) cannot be read (corrupted record at")
    assert data.load("tfrecord", str(out), on_bad_input="skip").num_examples == 4


def test_shard_cut_at_a_record_boundary_or_emptied_fails_the_count(tmp_path):
    out, _ = written(tmp_path)
    shard = out / SHARD0
    whole = shard.read_bytes()
    # A record: 8-byte little-endian length, 4-byte checksum, the data, 4-byte checksum.
    first = 16 + int.from_bytes(whole[:8], "little")
    second = first + 16 + int.from_bytes(whole[first : first + 8], "little")
    shard.write_bytes(whole[:second])  # the first 2 of its 4 records
    assert records_per_shard(str(out), {"shards": [SHARD0]}) == [2]  # TFRecord framing is fine
    # Was loaded as 5 examples without a word.
    assert load_error(out).startswith(
        f"{shard}: holds 2 records, dataset.json lists 4 (truncated or emptied): records lost "
        "from a damaged or truncated shard (2 such records)"
    )
    shard.write_bytes(b"")
    # Was: "example ids are not 0..N-1 in shard order".
    assert load_error(out).startswith(f"{shard}: holds 0 records, dataset.json lists 4")
    kept = data.load("tfrecord", str(out), on_bad_input="skip")
    assert kept.skipped == {"records lost from a damaged or truncated shard": 4}
    np.testing.assert_array_equal(kept.features, feature_data().features[4:])


def test_index_without_shard_counts_still_reads_and_checks_the_total(tmp_path):
    out, _ = written(tmp_path)
    edit_index(out, shard_records=None)  # as written before the counts were recorded
    np.testing.assert_array_equal(data.load("tfrecord", str(out)).features, feature_data().features)
    (out / SHARD0).write_bytes(b"")
    assert load_error(out) == (
        f"{out}: the shards hold 3 records, dataset.json lists 7 (empty shards: {SHARD0}): records "
        "lost from a damaged or truncated shard (4 such records) (on_bad_input=skip drops and "
        "counts them)"
    )
    kept = data.load("tfrecord", str(out), on_bad_input="skip")
    assert kept.skipped == {"records lost from a damaged or truncated shard": 4}


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"shards": None}, "no 'shards' list"),
        ({"shards": []}, "no 'shards' list"),
        ({"shards": ["../x.tfrecord"]}, "shard '../x.tfrecord' is not a file name in the folder"),
        (
            {"feature_dim": None},
            "'feature_dim' must be a positive integer for feature records, got None",
        ),
        (
            {"feature_dim": "3"},
            "'feature_dim' must be a positive integer for feature records, got '3'",
        ),
        ({"feature_dim": 0}, "'feature_dim' must be a positive integer for feature records, got 0"),
        ({"shard_records": [4]}, "'shard_records' must list one record count per shard (2)"),
        ({"shard_records": [4, 4]}, "'shard_records' add up to 8, 'written_examples' is 7"),
        ({"inputs": "text"}, "'inputs' must be 'features' or 'image', got 'text'"),
        ({"label_names": "cat"}, "no 'label_names' list of class names"),
    ],
)
def test_malformed_index_is_one_line_naming_it(tmp_path, fields, problem):
    out, _ = written(tmp_path)
    edit_index(out, **fields)
    # Were KeyError, TypeError or a parse error inside tf.data.
    for policy in ("error", "skip"):
        assert load_error(out, policy) == (
            f"{out / 'dataset.json'}: {problem} (not an index written by kpartial.tfrecords)"
        )


def test_index_whose_feature_dim_or_counts_disagree_with_the_shards(tmp_path):
    out, _ = written(tmp_path)
    edit_index(out, feature_dim=5)
    # Was InvalidArgumentError from tf.io.parse_example.
    assert load_error(out, "skip") == (
        f"{out / SHARD0}: record 0 (0-based) holds 3 features, dataset.json says feature_dim 5"
    )
    edit_index(out, feature_dim=3, shard_records=[3, 4])
    assert load_error(out, "skip") == (
        f"{out / SHARD0}: holds 4 records, dataset.json lists 3 (not the shard it indexes)"
    )


def test_non_finite_feature_record_is_an_error_or_skipped(tmp_path):
    features = feature_data().features.copy()
    features[5, 1] = np.nan
    out, _ = written(tmp_path, features)
    assert load_error(out) == (
        f"{out / 'data-00001-of-00002.tfrecord'}: record 1 (id 5), feature 1 (0-based) is nan: "
        "non-finite feature value (on_bad_input=skip drops and counts them)"
    )
    kept = data.load("tfrecord", str(out), on_bad_input="skip")
    assert kept.skipped == {"non-finite feature value": 1}
    np.testing.assert_array_equal(kept.labels.to_dense(), np.delete(LABELS, 5, axis=0))


def test_damaged_image_shard_is_an_error_under_either_policy(tmp_path):
    paths = write_jpegs(tmp_path / "images", 7)
    images = data.MultiLabelData(LABELS, NAMES, image_paths=paths, source="coco:/x/i.json")
    out = tmp_path / "rec"
    tfrecords.write_tfrecords(images, str(out), num_shards=2)
    shard = out / SHARD0
    shard.write_bytes(shard.read_bytes()[:-5])
    for policy in ("error", "skip"):
        message = load_error(out, policy)
        assert message.startswith(f"{shard}: record 3 (0-based) cannot be read (truncated record")
        assert message.endswith(
            "(image records are streamed from the shards as they are, so on_bad_input=skip "
            "cannot drop them: write the shards again)"
        )


def test_a_failed_rewrite_leaves_the_old_records_and_a_rewrite_removes_stale_shards(tmp_path):
    out, _ = written(tmp_path)
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    paths = write_jpegs(tmp_path / "images", 7)
    open(paths[5], "wb").close()  # the rewrite stops at this empty image, after shard 0
    images = data.MultiLabelData(LABELS, NAMES, image_paths=paths, source="coco:/x/i.json")
    with pytest.raises(data.DataError, match="image file is empty"):
        tfrecords.write_tfrecords(images, str(out), num_shards=2)
    # Was: shard 0 rewritten with images under the old feature index.
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before
    np.testing.assert_array_equal(data.load("tfrecord", str(out)).features, feature_data().features)
    tfrecords.write_tfrecords(feature_data(), str(out), num_shards=3)
    assert sorted(os.listdir(out)) == [
        "data-00000-of-00003.tfrecord",
        "data-00001-of-00003.tfrecord",
        "data-00002-of-00003.tfrecord",
        "dataset.json",
    ]
