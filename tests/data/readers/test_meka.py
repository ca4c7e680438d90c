"""The MEKA ARFF reader (labels named by -C in the @relation line) on tiny written files."""

import numpy as np
import pytest

from kpartial.data.readers.meka import read_meka
from tests.helpers import MEKA_FIRST, raises_at, write

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
