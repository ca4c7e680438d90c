"""The embedded synthetic dataset (``synthetic:train`` / ``synthetic:test``)."""

import numpy as np
import pytest

from kpartial import data

SMALL = {"num_examples": 50, "num_classes": 5, "num_features": 4}


def test_splits_share_the_task_but_not_the_examples():
    train = data.load("synthetic", "train", **SMALL)
    assert train.features.shape == (50, 4) and train.features.dtype == np.float32
    assert train.labels.dtype == np.int8 and set(np.unique(train.labels)) == {-1, 1}
    assert train.label_names == tuple(f"class_{c:02d}" for c in range(5))
    assert train.source == "synthetic:train"
    np.testing.assert_array_equal(data.load("synthetic", "train", **SMALL).features, train.features)
    test = data.load("synthetic", "test", **SMALL)
    assert test.label_names == train.label_names and test.source == "synthetic:test"
    assert not np.array_equal(test.features, train.features)


def test_another_split_is_a_data_error():
    with pytest.raises(
        data.DataError, match=r"^synthetic:val: the split must be 'train' or 'test'$"
    ):
        data.load("synthetic", "val")
