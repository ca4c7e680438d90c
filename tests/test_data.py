"""Tests for kpartial.data readers."""

import json
import pathlib

import numpy as np
import pytest

from kpartial import data
from kpartial.data.readers.coco import read_coco
from kpartial.data.readers.mulan import read_mulan
from kpartial.data.readers.npz import read_npz

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"

XML = """<?xml version="1.0" encoding="utf-8"?>
<labels xmlns="http://mulan.sourceforge.net/labels">
<label name="sun"></label>
<label name="animal"><label name="big 'cat'"></label></label>
</labels>
"""

# Labels interleaved with features; quoted names with spaces and escaped quotes;
# a nominal feature with a quoted value; a '?' (unknown) label; comments, blanks.
DENSE_ARFF = """% leading comment
@RELATION toy

@attribute 'my feat\\'s' NUMERIC
@attribute sun {0,1}
@attribute colour {red, 'dark blue', green}
@Attribute 'big \\'cat\\'' {0,1}
@attribute height real
@attribute animal {0,1}
@DATA
% data comment
1.5, 1, red, 0, 3, 1
-2,0,'dark blue',1,4e1,0

0.25 , ?, green, 1, 0, 1
"""

SPARSE_ARFF = """@relation sparse
@attribute f0 numeric
@attribute f1 {0,1}
@attribute sun {0,1}
@attribute f2 numeric
@attribute "big 'cat'" {0,1}
@attribute animal {0,1}
@data
{0 2.5,2 1,5 1}
{}
{1 1, 3 -1, 4 1, 5 ?}
"""


def _write(directory, name, text):
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture
def mulan_dir(tmp_path):
    _write(tmp_path, "toy.xml", XML)
    _write(tmp_path, "toy-train.arff", DENSE_ARFF)
    _write(tmp_path, "toy-test-sparse.arff", SPARSE_ARFF)
    return tmp_path


def test_read_mulan_dense(mulan_dir):
    d = read_mulan(mulan_dir / "toy-train.arff")
    assert d.label_names == ("sun", "big 'cat'", "animal")  # ARFF order, not XML order.
    np.testing.assert_array_equal(d.labels, [[1, -1, 1], [-1, 1, -1], [0, 1, 1]])
    assert d.labels.dtype == np.int8
    np.testing.assert_array_equal(
        d.features, np.array([[1.5, 0, 3], [-2, 1, 40], [0.25, 2, 0]], np.float32)
    )
    assert d.features.dtype == np.float32
    assert d.image_paths is None and (d.num_examples, d.num_classes) == (3, 3)
    assert d.source == f"mulan:{mulan_dir / 'toy-train.arff'}"


def test_read_mulan_sparse(mulan_dir):
    d = data.load("mulan", str(mulan_dir / "toy-test-sparse.arff"))  # Finds toy.xml.
    assert d.label_names == ("sun", "big 'cat'", "animal")
    np.testing.assert_array_equal(d.labels, [[1, -1, 1], [-1, -1, -1], [-1, 1, 0]])
    np.testing.assert_array_equal(d.features, [[2.5, 0, 0], [0, 0, 0], [0, 1, -1]])


def test_read_mulan_explicit_xml(tmp_path):
    arff = _write(tmp_path, "data.arff", DENSE_ARFF)
    xml = _write(tmp_path, "other.xml", XML)
    assert read_mulan(arff, xml_path=xml).num_classes == 3


def test_read_mulan_missing_xml(tmp_path):
    arff = _write(tmp_path, "toy-train.arff", DENSE_ARFF)
    with pytest.raises(data.DataError) as e:
        read_mulan(arff)
    assert str(arff) in str(e.value) and str(tmp_path / "toy.xml") in str(e.value)


@pytest.mark.parametrize("bad_value", ["?", "nan", "inf", "1e40"])
def test_read_mulan_bad_feature(mulan_dir, bad_value):
    arff = _write(mulan_dir, "toy-train.arff", DENSE_ARFF.replace("4e1", bad_value))
    with pytest.raises(data.DataError, match=r"toy-train\.arff:13: .*'height'"):
        read_mulan(arff)


@pytest.mark.parametrize(
    "edits, message",
    [
        ({"dark blue',1": "dark blue',2"}, r":13: bad value '2' for attribute \"big 'cat'\""),
        (
            {"sun {0,1}": "sun {0,1,maybe}", "?, green": "maybe, green"},
            r":15: label 'sun' has value 'maybe'",
        ),
        ({"green, 1": "purple, 1"}, r":15: bad value 'purple' for attribute 'colour'"),
        ({"-2,0,": "-2,"}, r":13: expected 6 values, got 5"),
        ({"animal {0,1}": "animals {0,1}"}, r"not ARFF attributes: \['animal'\]"),
        ({"height real": "height string"}, r":8: bad @attribute line: unsupported"),
    ],
)
def test_read_mulan_errors(mulan_dir, edits, message):
    text = DENSE_ARFF
    for old, new in edits.items():
        text = text.replace(old, new)
    arff = _write(mulan_dir, "toy-train.arff", text)
    with pytest.raises(data.DataError, match=r"toy-train\.arff.*" + message):
        read_mulan(arff)


def test_read_mulan_bad_sparse_index(mulan_dir):
    arff = _write(mulan_dir, "toy-test-sparse.arff", SPARSE_ARFF.replace("{}", "{6 1}"))
    with pytest.raises(
        data.DataError, match=r"toy-test-sparse\.arff:10: sparse index out of range"
    ):
        read_mulan(arff)


def _save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_read_npz(tmp_path):
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    y = np.array([[1, 0], [-1, 1], [0, -1]])
    d = data.load(
        "npz", str(_save_npz(tmp_path / "a.npz", x=x, y=y, label_names=np.array(["p", "q"])))
    )
    np.testing.assert_array_equal(d.features, x.astype(np.float32))
    np.testing.assert_array_equal(d.labels, y)
    assert d.labels.dtype == np.int8 and d.label_names == ("p", "q")
    assert read_npz(_save_npz(tmp_path / "b.npz", x=x, y=y)).label_names == (
        "class_0",
        "class_1",
    )


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(x=np.zeros((2, 1))), r"missing key 'y'"),
        (dict(x=np.zeros((2, 1)), y=np.zeros((3, 1))), r"got x \(2, 1\), y \(3, 1\)"),
        (dict(x=np.zeros((3, 1)), y=np.array([[1], [0], [2]])), r"row 2 \(0-based\) has 2"),
        (dict(x=np.array([[0.0], [np.inf]]), y=np.zeros((2, 1), int)), r"NaN/inf .* row 1"),
        (
            dict(x=np.zeros((1, 1)), y=np.zeros((1, 2), int), label_names=np.array(["a"])),
            r"label_names",
        ),
    ],
)
def test_read_npz_errors(tmp_path, arrays, message):
    path = _save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(data.DataError, match=str(path) + ".*" + message):
        read_npz(path)


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


def test_parse_data_spec_and_load():
    assert data.parse_data_spec("mulan:/a/b:c.arff") == ("mulan", "/a/b:c.arff")
    with pytest.raises(data.DataError, match="'no-colon'"):
        data.parse_data_spec("no-colon")
    with pytest.raises(data.DataError, match=r"'bogus:/x'.*coco, cub, manifest, meka"):
        data.parse_data_spec("bogus:/x")
    with pytest.raises(data.DataError, match="known formats: coco, cub, manifest"):
        data.load("bogus", "/x")
    with pytest.raises(data.DataError, match="bad options"):
        data.load("npz", "/x", colour="red")


def test_load_sees_late_registration(monkeypatch):
    made = data.MultiLabelData(labels=np.ones((1, 1), np.int8), label_names=("a",))
    monkeypatch.setitem(data.READERS, "fake", lambda path, k=0: made)
    assert data.parse_data_spec("fake:p") == ("fake", "p")
    assert data.load("fake", "p", k=1) is made


def test_with_labels():
    d = data.MultiLabelData(
        labels=np.array([[1, -1]], np.int8), label_names=("a", "b"), features=np.zeros((1, 3))
    )
    assert d.features.dtype == np.float32
    e = d.with_labels(np.array([[0, -1]]))
    np.testing.assert_array_equal(e.labels, [[0, -1]])
    assert e.labels.dtype == np.int8 and e.features is d.features
    for bad in (
        np.zeros((2, 2), np.int8),
        np.array([[2, 0]]),
        np.array([[0.0, 1.0]]),
        np.array([[True, False]]),
    ):
        with pytest.raises(data.DataError):
            d.with_labels(bad)


# --- Real data in ../shared/data (read-only; skipped when absent). ---


def _shared(relative):
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.mark.parametrize(
    "relative, n, d, c",
    [
        ("mulan/bibtex/bibtex-train.arff", 4880, 1836, 159),
        ("mulan/corel5k/Corel5k-train-sparse.arff", 4500, 499, 374),
        ("mulan/yeast/yeast-train.arff", 1500, 103, 14),
    ],
)
def test_real_mulan(relative, n, d, c):
    data_ = read_mulan(_shared(relative))
    assert data_.features.shape == (n, d) and data_.labels.shape == (n, c)
    assert set(np.unique(data_.labels)) == {-1, 1}  # Fully annotated.
    assert len(set(data_.label_names)) == c


def test_real_coco_tiny():
    d = read_coco(_shared("coco-tiny/annotations/instances_train2017.json"))
    assert d.num_classes == 80 and d.num_examples == 80
    assert d.label_names[0] == "person"
    assert all(pathlib.Path(p).is_file() for p in d.image_paths)
    assert (d.labels == 1).any(axis=0).all()  # One image per category by construction.


def test_verify_images_names_corrupt_and_missing_files_or_skips_and_counts(tmp_path):
    from PIL import Image

    good = tmp_path / "good.jpg"
    Image.new("RGB", (16, 12), (200, 10, 10)).save(good)
    (tmp_path / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    (tmp_path / "text.jpg").write_text("not an image")
    paths = [good, tmp_path / "truncated.jpg", tmp_path / "text.jpg", tmp_path / "absent.jpg"]
    images = data.MultiLabelData(
        np.array([[1], [1], [-1], [1]], np.int8), ("a",), image_paths=paths, source="toy"
    )
    with pytest.raises(data.DataError, match=r"truncated\.jpg \(toy, example 1\): corrupt image"):
        data.verify_images(images)
    kept = data.verify_images(images, "skip")
    assert kept.image_paths == (str(good),) and isinstance(kept.image_paths, tuple)
    np.testing.assert_array_equal(kept.labels, [[1]])
    assert kept.skipped == {"corrupt image": 2, "missing image file": 1}
    assert data.verify_images(kept) is kept  # nothing to report: unchanged
