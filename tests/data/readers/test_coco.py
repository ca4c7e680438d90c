"""The COCO instances reader: a tiny written fixture, and coco-tiny in ../shared/data when
it is there."""

import json
import pathlib

import numpy as np
import pytest

from kpartial import data
from kpartial.data.readers.coco import read_coco


@pytest.fixture
def coco_json(tmp_path):
    import tensorflow as tf  # Imported here: only these tests need it.

    (tmp_path / "annotations").mkdir()
    (tmp_path / "val").mkdir()
    for name in ("b.jpg", "a.jpg"):
        jpeg = tf.io.encode_jpeg(tf.zeros([4, 4, 3], tf.uint8)).numpy()
        (tmp_path / "val" / name).write_bytes(jpeg)
    coco = {
        "images": [{"id": 9, "file_name": "b.jpg"}, {"id": 3, "file_name": "a.jpg"}],
        "categories": [
            {"id": 7, "name": "dog"},
            {"id": 2, "name": "cat"},
            {"id": 5, "name": "cow"},
        ],
        "annotations": [
            {"id": 1, "image_id": 9, "category_id": 7},
            {"id": 2, "image_id": 9, "category_id": 7},
            {"id": 3, "image_id": 3, "category_id": 2},
            {"id": 4, "image_id": 9, "category_id": 5},
        ],
    }
    path = tmp_path / "annotations" / "instances_val.json"
    path.write_text(json.dumps(coco))
    return path


def test_read_coco(coco_json):
    d = data.load("coco", str(coco_json))
    assert d.label_names == ("cat", "cow", "dog")
    np.testing.assert_array_equal(d.labels, [[1, -1, -1], [-1, 1, 1]])
    root = coco_json.parents[1]
    assert d.image_paths == (str(root / "val" / "a.jpg"), str(root / "val" / "b.jpg"))
    assert d.features is None


def test_read_coco_missing_image(coco_json):
    (coco_json.parents[1] / "val" / "a.jpg").unlink()
    with pytest.raises(data.DataError) as e:
        read_coco(coco_json)
    assert "a.jpg" in str(e.value) and str(coco_json) in str(e.value)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("category_id", 99, r"\(category_id 99\): annotation refers to an unknown category_id"),
        ("image_id", 42, r"\(image_id 42\): annotation refers to an unknown image_id"),
    ],
)
def test_read_coco_unknown_ids(coco_json, field, value, message):
    coco = json.loads(coco_json.read_text())
    coco["annotations"][0][field] = value
    coco_json.write_text(json.dumps(coco))
    with pytest.raises(data.DataError, match=message):
        read_coco(coco_json)
    skipped = read_coco(coco_json, on_bad_input="skip")
    assert skipped.skipped == {f"annotation refers to an unknown {field}": 1}


def test_read_coco_skips_and_counts_a_missing_image(coco_json):
    full = read_coco(coco_json)
    (coco_json.parents[1] / "val" / "a.jpg").unlink()
    kept = read_coco(coco_json, on_bad_input="skip")
    assert kept.num_examples == full.num_examples - 1
    assert not any(p.endswith("a.jpg") for p in kept.image_paths)
    assert kept.skipped == {"missing image file": 1}


def test_real_coco_tiny(shared_data):
    d = read_coco(shared_data("coco-tiny/annotations/instances_train2017.json"))
    assert d.num_classes == 80 and d.num_examples == 80
    assert d.label_names[0] == "person"
    assert all(pathlib.Path(p).is_file() for p in d.image_paths)
    assert (d.labels == 1).any(axis=0).all()  # One image per category by construction.
