"""kpartial.data.cleaning: unlabelled rows and classes, image checks, the seeded split."""

import re

import numpy as np
import pytest

from kpartial import data
from kpartial.sparse_labels import SparseLabels


def test_load_drops_or_rejects_rows_and_classes_without_labels(tmp_path):
    path = tmp_path / "gaps.npz"
    y = np.array([[1, -1, 0, 1], [0, 0, 0, 0], [-1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, -1]])
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    np.savez(path, x=x, y=y)
    with pytest.raises(
        data.DataError,
        match=re.escape(
            f"npz:{path}: class 'class_2': class without any known label (empty class)"
        ),
    ):
        data.load("npz", str(path))
    got = data.load("npz", str(path), on_bad_input="skip")
    assert got.label_names == ("class_0", "class_1", "class_3")
    np.testing.assert_array_equal(got.labels, [[1, -1, 1], [-1, 1, 0], [0, 0, -1]])
    np.testing.assert_array_equal(got.features, x[[0, 2, 4]])
    assert got.skipped == {
        "class without any known label (empty class)": 1,
        "row without any known label": 2,
    }
    np.savez(path, x=x, y=y[:, [0, 1, 3]])
    with pytest.raises(
        data.DataError,
        match=re.escape(
            f"npz:{path}: row 1 (0-based example): row without any known label (2 such records)"
        ),
    ):
        data.load("npz", str(path))


def test_drop_unlabelled_with_sparse_labels():
    y = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0], [0, -1, 1]], np.int8)
    d = data.MultiLabelData(SparseLabels.from_dense(y), ("a", "b", "c"), source="s")
    got = data.drop_unlabelled(d, data.BadInput("skip"))
    assert isinstance(got.labels, SparseLabels)
    assert got.label_names == ("b", "c")
    np.testing.assert_array_equal(got.labels.to_dense(), [[1, 0], [-1, 1]])
    assert got.skipped == {
        "class without any known label (empty class)": 1,
        "row without any known label": 2,
    }


def test_split_is_seeded_disjoint_and_complete():
    n = 20
    labels = np.where(np.arange(n * 2).reshape(n, 2) % 3 == 0, 1, -1).astype(np.int8)
    d = data.MultiLabelData(
        labels, ("a", "b"), features=np.arange(n, dtype=np.float32)[:, None], source="npz:f"
    )
    train, test = data.split(d, 0.3, seed=5)
    rows_train, rows_test = train.features[:, 0].astype(int), test.features[:, 0].astype(int)
    assert (train.num_examples, test.num_examples) == (14, 6)
    assert not set(rows_train) & set(rows_test)
    np.testing.assert_array_equal(np.sort(np.r_[rows_train, rows_test]), np.arange(n))
    assert list(rows_train) == sorted(rows_train) and list(rows_test) == sorted(rows_test)
    np.testing.assert_array_equal(train.labels, labels[rows_train])
    np.testing.assert_array_equal(test.labels, labels[rows_test])
    expected_test = np.sort(np.random.default_rng(5).permutation(n)[:6])
    np.testing.assert_array_equal(rows_test, expected_test)
    again = data.split(d, 0.3, seed=5)[1].features[:, 0]
    np.testing.assert_array_equal(again, rows_test)
    assert not np.array_equal(data.split(d, 0.3, seed=6)[1].features[:, 0], rows_test)
    assert test.source == "npz:f (split seed 5, test fraction 0.3: test)"
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(
            data.DataError, match=re.escape(f"test_fraction must be in (0, 1), got {bad}")
        ):
            data.split(d, bad, 0)
    with pytest.raises(data.DataError, match=r"npz:f: test_fraction 0\.01 of 20 examples leaves"):
        data.split(d, 0.01, 0)


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
