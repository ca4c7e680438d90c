"""The image list reader (format "manifest": CSV or Parquet, class or list columns)."""

import numpy as np
import pandas as pd
import pytest

from kpartial.data.readers.image_list import read_image_list
from kpartial.sparse_labels import SparseLabels
from tests.helpers import raises_at, write


@pytest.fixture(scope="module")
def jpeg_bytes():
    tf = pytest.importorskip("tensorflow")
    return tf.io.encode_jpeg(np.full((4, 4, 3), 128, np.uint8)).numpy()


def images(folder, jpeg, names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(jpeg)


def test_manifest_csv_images_class_columns(tmp_path, jpeg_bytes):
    images(tmp_path / "img", jpeg_bytes, ["a.jpg", "b.jpg", "c.jpg"])
    path = write(tmp_path / "m.csv", "image,cat,dog\nimg/a.jpg,1,\nimg/b.jpg,0,-1\n")
    got = read_image_list(path)
    assert got.label_names == ("cat", "dog") and got.features is None
    np.testing.assert_array_equal(got.labels, [[1, 0], [-1, -1]])
    assert got.image_paths == (str(tmp_path / "img/a.jpg"), str(tmp_path / "img/b.jpg"))
    # image_dir resolves relative paths; classes picks and orders the class columns.
    got = read_image_list(
        write(tmp_path / "o.csv", "image,cat,dog\nb.jpg,0,1\n"),
        image_dir=tmp_path / "img",
        classes="dog,cat",
    )
    np.testing.assert_array_equal(got.labels, [[1, -1]])


@pytest.mark.parametrize(
    "line, match",
    [
        ("img/c.jpg,2,", "class 'cat' has value '2'"),
        ("img/nope.jpg,1,", "does not exist"),
        ("img/a.jpg,1,", "duplicate"),
        (",1,", "blank image"),
    ],
)
def test_manifest_csv_bad_rows(tmp_path, jpeg_bytes, line, match):
    images(tmp_path / "img", jpeg_bytes, ["a.jpg", "b.jpg", "c.jpg"])
    path = write(tmp_path / "m.csv", f"image,cat,dog\nimg/a.jpg,1,\nimg/b.jpg,0,-1\n{line}\n")
    raises_at(f"{path}:4", match, read_image_list, path)
    got = read_image_list(path, on_bad_input="skip")
    assert got.num_examples == 2 and sum(got.skipped.values()) == 1


def test_manifest_csv_features_and_list_columns(tmp_path):
    path = write(
        tmp_path / "m.csv",
        "id,f0,f1,g,positives,negatives\nx,1,2,9,cat;dog,\ny,3,4,9,,dog\nz,5,6,9,bird,cat\n",
    )
    got = read_image_list(path, feature_columns="f*")
    np.testing.assert_array_equal(got.features, [[1, 2], [3, 4], [5, 6]])
    assert got.image_paths is None and isinstance(got.labels, SparseLabels)
    assert got.label_names == ("bird", "cat", "dog")
    np.testing.assert_array_equal(got.dense_labels(), [[0, 1, 1], [0, 0, -1], [1, -1, 0]])
    got = read_image_list(path, feature_columns=["g", "f1"], classes="dog,cat,bird")
    np.testing.assert_array_equal(got.features, [[9, 2], [9, 4], [9, 6]])
    np.testing.assert_array_equal(got.dense_labels(), [[1, 1, 0], [-1, 0, 0], [0, -1, 1]])
    class_file = write(tmp_path / "classes.txt", "cat\ndog\n")
    raises_at(
        f"{path}:4",
        "unknown class 'bird'",
        read_image_list,
        path,
        feature_columns="f*",
        classes=str(class_file),
    )
    got = read_image_list(path, feature_columns="f*", classes=str(class_file), on_bad_input="skip")
    np.testing.assert_array_equal(got.dense_labels(), [[1, 1], [0, -1]])
    assert got.skipped == {"unknown class 'bird'": 1}


@pytest.mark.parametrize(
    "line, match",
    [
        ("w,7,8,9,cat,cat", "class 'cat' is both positive and negative"),
        ("x,7,8,9,cat,", "duplicate example 'x'"),
        ("w,7,nan,9,cat,", "non-finite value for feature 'f1'"),
        ("w,7,,9,cat,", "non-finite value for feature 'f1'"),
    ],
)
def test_manifest_list_bad_rows(tmp_path, line, match):
    path = write(tmp_path / "m.csv", f"id,f0,f1,g,positives,negatives\nx,1,2,9,cat,dog\n{line}\n")
    raises_at(f"{path}:3", match, read_image_list, path, feature_columns="f0,f1")
    got = read_image_list(path, feature_columns="f0,f1", on_bad_input="skip")
    assert got.num_examples == 1 and sum(got.skipped.values()) == 1
    np.testing.assert_array_equal(got.dense_labels(), [[1, -1]])


def test_manifest_parquet_lists_and_class_columns(tmp_path, jpeg_bytes):
    pytest.importorskip("pyarrow")
    images(tmp_path, jpeg_bytes, ["a.jpg", "b.jpg"])
    lists = pd.DataFrame(
        {"image": ["a.jpg", "b.jpg"], "positives": [["dog"], []], "negatives": [None, "cat;dog"]}
    )
    lists.to_parquet(tmp_path / "lists.parquet")
    got = read_image_list(tmp_path / "lists.parquet")
    assert got.label_names == ("cat", "dog")
    np.testing.assert_array_equal(got.dense_labels(), [[0, 1], [-1, -1]])
    assert got.image_paths == (str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"))

    columns = pd.DataFrame({"f0": [0.5, 1.5, 2.0], "cat": [1.0, np.nan, -1.0], "dog": [0, 1, 1]})
    columns.to_parquet(tmp_path / "cols.pq")
    got = read_image_list(tmp_path / "cols.pq", feature_columns="f0")
    np.testing.assert_array_equal(got.labels, [[1, -1], [0, 1], [-1, 1]])
    np.testing.assert_array_equal(got.features, [[0.5], [1.5], [2.0]])
    columns.assign(cat=[1.0, 3.0, 0.0]).to_parquet(tmp_path / "bad.pq")
    raises_at(
        f"{tmp_path / 'bad.pq'}: row 1 (0-based)",
        "class 'cat' has value '3.0'",
        read_image_list,
        tmp_path / "bad.pq",
        feature_columns="f0",
    )


def test_manifest_unreadable_files(tmp_path):
    raises_at(tmp_path / "m.tsv", "must be .csv", read_image_list, tmp_path / "m.tsv")
    raises_at(tmp_path / "no.csv", "cannot read", read_image_list, tmp_path / "no.csv")
    bad = write(tmp_path / "bad.parquet", "not parquet")
    raises_at(bad, "cannot read", read_image_list, bad)
    path = write(tmp_path / "m.csv", "id,f0,cat\nx,1,1\n")
    raises_at(path, "no feature column", read_image_list, path, feature_columns="h*")
    raises_at(path, "no image column", read_image_list, path)
