"""MEKA ARFF, MoleculeNet CSV and manifest (CSV / Parquet) readers, on tiny written fixtures."""

import pathlib

import numpy as np
import pandas as pd
import pytest

from kpartial import data
from kpartial.data.readers.image_list import read_image_list
from kpartial.data.readers.meka import read_meka
from kpartial.data.readers.moleculenet import read_moleculenet
from kpartial.sparse_labels import SparseLabels

TOX21 = pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/moleculenet/tox21.csv"


def write(path, text):
    path.write_text(text)
    return path


def raises_at(where, match, fn, *args, **kwargs):
    """Asserts fn raises a DataError whose message starts with `where` and contains `match`."""
    with pytest.raises(data.DataError, match=match) as info:
        fn(*args, **kwargs)
    assert str(info.value).startswith(f"{where}:"), str(info.value)


# ----------------------------------------------------------------------------
# MEKA.

MEKA_FIRST = """% labels first
@relation 'Toy: -C 2'
@attribute l0 {0,1}
@attribute l1 numeric
@attribute f0 numeric
@attribute f1 numeric
@data
1,0,0.5,1.5
?,1,2,3
{0 1,3 7}
"""

MEKA_LAST = """@relation 'Toy: -C -2 -split 0.5'
@attribute f0 numeric
@attribute a {0,1}
@attribute b {0,1}
@data
1.0,1,?
{0 2}
"""


def test_meka_positive_c_dense_sparse_and_unknown(tmp_path):
    got = read_meka(write(tmp_path / "toy.arff", MEKA_FIRST))
    assert got.label_names == ("l0", "l1")
    # The sparse row omits l1, which is 0 = negative in MEKA.
    np.testing.assert_array_equal(got.labels, [[1, -1], [0, 1], [1, -1]])
    np.testing.assert_array_equal(got.features, [[0.5, 1.5], [2, 3], [0, 7]])
    assert got.features.dtype == np.float32 and got.skipped == {}
    assert got.source == f"meka:{tmp_path / 'toy.arff'}"


def test_meka_negative_c_takes_the_last_attributes(tmp_path):
    got = read_meka(write(tmp_path / "toy.arff", MEKA_LAST))
    assert got.label_names == ("a", "b")
    np.testing.assert_array_equal(got.labels, [[1, 0], [-1, -1]])
    np.testing.assert_array_equal(got.features, [[1], [2]])


def test_meka_missing_c_names_file_and_relation_line(tmp_path):
    path = write(tmp_path / "toy.arff", MEKA_FIRST.replace(": -C 2", ""))
    raises_at(f"{path}:2", "-C", read_meka, path)
    no_relation = MEKA_FIRST.replace("@relation 'Toy: -C 2'\n", "")
    raises_at(
        tmp_path / "n.arff", "no @relation", read_meka, write(tmp_path / "n.arff", no_relation)
    )
    raises_at(path.parent / "no.arff", "cannot read", read_meka, path.parent / "no.arff")


@pytest.mark.parametrize(
    "row, match",
    [("1,0,?,1", "feature 'f0'"), ("1,0,1,NaN", "feature 'f1'"), ("1,2,1,1", "label 'l1'")],
)
def test_meka_bad_rows(tmp_path, row, match):
    path = write(tmp_path / "toy.arff", MEKA_FIRST.replace("?,1,2,3", row))
    raises_at(f"{path}:9", match, read_meka, path)
    got = read_meka(path, on_bad_input="skip")
    np.testing.assert_array_equal(got.labels, [[1, -1], [1, -1]])
    assert sum(got.skipped.values()) == 1


# ----------------------------------------------------------------------------
# MoleculeNet.

MOLECULES = """smiles,A,B,mol_id
CCO,1,,m1
c1ccccc1,0,1.0,m2
CC(=O)O,,0,m3
"""


def test_moleculenet_blanks_are_unknown_and_ids_ignored(tmp_path):
    path = write(tmp_path / "mols.csv", MOLECULES)
    got = read_moleculenet(path, featurizer="none")
    assert got.label_names == ("A", "B") and got.features is None
    np.testing.assert_array_equal(got.labels, [[1, 0], [-1, 1], [0, -1]])
    got = read_moleculenet(path, featurizer="none", task_columns="B")
    np.testing.assert_array_equal(got.labels, [[0], [1], [-1]])
    assert read_moleculenet(path, featurizer="none", task_columns=["B", "A"]).label_names == (
        "B",
        "A",
    )
    raises_at(path, "not in", read_moleculenet, path, featurizer="none", task_columns="C")


@pytest.mark.parametrize(
    "line, match",
    [
        ("CCO,1,,m4", "duplicate SMILES"),
        ("CCN,2,,m4", "task 'A' has value '2'"),
        (",1,,m4", "blank"),
    ],
)
def test_moleculenet_bad_rows(tmp_path, line, match):
    path = write(tmp_path / "mols.csv", MOLECULES + "\n" + line + "\n")  # blank line 5 ignored
    options = {"featurizer": "none", "task_columns": "A,B"}
    raises_at(f"{path}:6", match, read_moleculenet, path, **options)
    got = read_moleculenet(path, on_bad_input="skip", **options)
    assert got.num_examples == 3 and sum(got.skipped.values()) == 1
    np.testing.assert_array_equal(got.labels, [[1, 0], [-1, 1], [0, -1]])


def test_moleculenet_ambiguous_columns_must_be_listed(tmp_path):
    # Without task_columns a stray value, or numeric ids, could silently become a task.
    path = write(tmp_path / "mols.csv", MOLECULES + "CCN,2,,m4\n")
    raises_at(
        f"{path}:5",
        "column 'A' mixes numbers",
        read_moleculenet,
        path,
        featurizer="none",
        on_bad_input="skip",
    )
    path = write(tmp_path / "ids.csv", "smiles,A,num\nCCO,1,0\nCC,0,7\n")
    raises_at(f"{path}:3", "column 'num'", read_moleculenet, path, featurizer="none")
    got = read_moleculenet(path, featurizer="none", task_columns="A")
    np.testing.assert_array_equal(got.labels, [[1], [-1]])


def test_moleculenet_morgan_features(tmp_path):
    pytest.importorskip("rdkit")
    path = write(tmp_path / "mols.csv", MOLECULES)
    got = read_moleculenet(path, fingerprint_bits=64)
    assert got.features.shape == (3, 64) and got.features.dtype == np.float32
    assert set(np.unique(got.features)) <= {0.0, 1.0} and got.features.sum() > 0
    again = read_moleculenet(path, fingerprint_bits=64)
    np.testing.assert_array_equal(got.features, again.features)
    assert not np.array_equal(
        got.features, read_moleculenet(path, fingerprint_radius=1, fingerprint_bits=64).features
    )
    bad = write(tmp_path / "bad.csv", MOLECULES + "C1CC,1,1,m4\n")
    raises_at(f"{bad}:5", "RDKit cannot parse", read_moleculenet, bad)
    got = read_moleculenet(bad, fingerprint_bits=64, on_bad_input="skip")
    assert got.num_examples == 3 and sum(got.skipped.values()) == 1


def test_moleculenet_real_tox21():
    if not TOX21.is_file():
        pytest.skip(f"{TOX21} not present")
    got = data.load("moleculenet", str(TOX21), featurizer="none")
    table = pd.read_csv(TOX21, dtype=str, keep_default_na=False)
    assert got.num_classes == 12 and got.label_names == tuple(table.columns[1:])
    assert (got.labels == 0).mean() > 0
    np.testing.assert_array_equal((got.labels != 0).sum(axis=0), (table.iloc[:, 1:] != "").sum())


# ----------------------------------------------------------------------------
# Manifest.


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


# ----------------------------------------------------------------------------
# Dispatch.


def test_load_dispatches_to_the_three_readers(tmp_path):
    got = data.load("meka", str(write(tmp_path / "toy.arff", MEKA_FIRST)))
    assert got.source.startswith("meka:") and got.num_classes == 2
    got = data.load("moleculenet", str(write(tmp_path / "m.csv", MOLECULES)), featurizer="none")
    assert got.label_names == ("A", "B")
    path = write(tmp_path / "f.csv", "id,f0,positives\nx,1,cat\ny,2,\n")
    got = data.load("manifest", str(path), feature_columns="f0", on_bad_input="skip")
    # load drops the row without labels itself.
    assert got.num_examples == 1 and sum(got.skipped.values()) == 1
    with pytest.raises(data.DataError, match="bad options"):
        data.load("meka", str(tmp_path / "toy.arff"), nope=1)
