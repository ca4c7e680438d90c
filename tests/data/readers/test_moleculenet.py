"""The MoleculeNet CSV reader: tiny written files, and tox21 in ../shared/data when it is
there."""

import numpy as np
import pandas as pd
import pytest

from kpartial import data
from kpartial.data.readers.moleculenet import read_moleculenet
from tests.helpers import MOLECULES, SHARED_DATA, raises_at, write

TOX21 = SHARED_DATA / "moleculenet" / "tox21.csv"


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
