"""The npz reader: arrays x, y and optional label_names."""

import numpy as np
import pytest

from kpartial import data
from kpartial.data.readers.npz import read_npz
from tests.helpers import save_npz


def test_read_npz(tmp_path):
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    y = np.array([[1, 0], [-1, 1], [0, -1]])
    d = data.load(
        "npz", str(save_npz(tmp_path / "a.npz", x=x, y=y, label_names=np.array(["p", "q"])))
    )
    np.testing.assert_array_equal(d.features, x.astype(np.float32))
    np.testing.assert_array_equal(d.labels, y)
    assert d.labels.dtype == np.int8 and d.label_names == ("p", "q")
    assert read_npz(save_npz(tmp_path / "b.npz", x=x, y=y)).label_names == (
        "class_0",
        "class_1",
    )


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((2, 1))}, r"missing key 'y'"),
        ({"x": np.zeros((2, 1)), "y": np.zeros((3, 1))}, r"got x \(2, 1\), y \(3, 1\)"),
        (
            {"x": np.zeros((3, 1)), "y": np.array([[1], [0], [2]])},
            r"row 2 \(0-based\), y = 2: label value other than 1, 0 or -1",
        ),
        (
            {"x": np.array([[0.0], [np.inf]]), "y": np.zeros((2, 1), int)},
            r"row 1 \(0-based\), x column 0 = inf: non-finite feature value",
        ),
        (
            {"x": np.zeros((1, 1)), "y": np.zeros((1, 2), int), "label_names": np.array(["a"])},
            r"label_names",
        ),
    ],
)
def test_read_npz_errors(tmp_path, arrays, message):
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(data.DataError, match=str(path) + ".*" + message):
        read_npz(path)
