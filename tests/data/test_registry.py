"""kpartial.data.registry: data specs, options, loading by format name, class alignment."""

import dataclasses

import numpy as np
import pytest

from kpartial import data
from kpartial.sparse_labels import SparseLabels
from tests.helpers import LABELS, MEKA_FIRST, MOLECULES, NAMES, feature_data, write


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
