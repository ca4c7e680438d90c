"""kpartial.data.container: MultiLabelData's label checks and row selection."""

import numpy as np
import pytest

from kpartial import data
from kpartial.sparse_labels import SparseLabels
from tests.helpers import LABELS, NAMES, feature_data


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
