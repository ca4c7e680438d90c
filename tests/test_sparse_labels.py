"""kpartial.sparse_labels: SparseLabels (CSR) construction, selection, checks, save/load."""

import numpy as np
import pytest

from kpartial.sparse_labels import SparseLabelError, SparseLabels, as_dense, as_sparse
from tests.helpers import CLASSES, DENSE, INDPTR, VALUES


def assert_sparse(sparse, indptr, classes, values, num_classes):
    np.testing.assert_array_equal(sparse.indptr, indptr)
    np.testing.assert_array_equal(sparse.classes, classes)
    np.testing.assert_array_equal(sparse.values, values)
    assert sparse.num_classes == num_classes
    assert sparse.indptr.dtype == np.int64
    assert sparse.classes.dtype == np.int32
    assert sparse.values.dtype == np.int8


def test_from_dense_matches_hand_written_csr_and_round_trips():
    sparse = SparseLabels.from_dense(DENSE)
    assert_sparse(sparse, INDPTR, CLASSES, VALUES, 4)
    assert sparse.shape == (5, 4)
    assert sparse.num_known == 9
    assert sparse.nbytes == 6 * 8 + 9 * 4 + 9 * 1
    np.testing.assert_array_equal(sparse.row_lengths(), [3, 1, 0, 2, 3])
    np.testing.assert_array_equal(sparse.rows(), [0, 0, 0, 1, 3, 3, 4, 4, 4])
    dense = sparse.to_dense()
    assert dense.dtype == np.int8
    np.testing.assert_array_equal(dense, DENSE)


def test_from_entries_sorts_unordered_triplets_into_rows():
    rng = np.random.default_rng(3)
    rows = np.array([0, 0, 0, 1, 3, 3, 4, 4, 4])
    perm = rng.permutation(rows.size)
    sparse = SparseLabels.from_entries(
        rows[perm], np.array(CLASSES)[perm], np.array(VALUES)[perm], 5, 4
    )
    assert_sparse(sparse, INDPTR, CLASSES, VALUES, 4)
    # Trailing empty rows come from num_rows.
    sparse = SparseLabels.from_entries([1, 0], [2, 3], [-1, 1], num_rows=4, num_classes=5)
    assert_sparse(sparse, [0, 1, 2, 2, 2], [3, 2], [1, -1], 5)


def test_take_rows_in_given_order_with_repeats_and_empty_rows():
    sparse = SparseLabels.from_dense(DENSE)
    rows = [4, 2, 0, 4, 1]
    taken = sparse.take_rows(rows)
    np.testing.assert_array_equal(taken.to_dense(), DENSE[rows])
    assert_sparse(
        taken,
        [0, 3, 3, 6, 9, 10],
        [1, 2, 3, 0, 1, 3, 1, 2, 3, 2],
        [1, -1, -1, 1, -1, 1, 1, -1, -1, 1],
        4,
    )
    empty = sparse.take_rows([2, 2])
    assert empty.shape == (2, 4) and empty.num_known == 0
    assert sparse.take_rows(np.zeros(0, np.int64)).shape == (0, 4)


def test_take_classes_renumbers_and_drops_other_entries():
    sparse = SparseLabels.from_dense(DENSE)
    taken = sparse.take_classes([1, 3])
    np.testing.assert_array_equal(taken.to_dense(), DENSE[:, [1, 3]])
    assert_sparse(taken, [0, 2, 2, 2, 2, 4], [0, 1, 0, 1], [-1, 1, 1, -1], 2)


def test_take_classes_in_another_order_sorts_entries_within_rows():
    sparse = SparseLabels.from_dense(DENSE)
    taken = sparse.take_classes([3, 0, 2])
    np.testing.assert_array_equal(taken.to_dense(), DENSE[:, [3, 0, 2]])
    # Row 0: class 3 -> 0 (+1), class 0 -> 1 (+1); row 1: 2 -> 2; row 3: 0 -> 1, 2 -> 2; row 4:
    # 2 -> 2 (-1), 3 -> 0 (-1).
    assert_sparse(taken, [0, 2, 3, 3, 5, 7], [0, 1, 2, 1, 2, 0, 2], [1, 1, 1, -1, -1, -1, -1], 3)


def test_with_entries_keeps_masked_entries_and_replaces_ids_and_values():
    sparse = SparseLabels.from_dense(DENSE)
    keep = np.array([0, 1, 0, 1, 0, 0, 0, 0, 1], bool)
    kept = sparse.with_entries(keep)
    # Row 0 keeps class 1, row 1 class 2, row 2 stays empty, row 3 loses everything, row 4 class 3.
    assert_sparse(kept, [0, 1, 2, 2, 2, 3], [1, 2, 3], [-1, 1, -1], 4)
    replaced = sparse.with_entries(keep, classes=[0, 0, 0], values=[1, 1, 1], num_classes=1)
    assert_sparse(replaced, [0, 1, 2, 2, 2, 3], [0, 0, 0], [1, 1, 1], 1)
    nothing = sparse.with_entries(np.zeros(9, bool))
    assert_sparse(nothing, [0, 0, 0, 0, 0, 0], [], [], 4)


def test_positives_and_negatives_per_class():
    sparse = SparseLabels.from_dense(DENSE)
    np.testing.assert_array_equal(sparse.positives_per_class(), [1, 1, 1, 1])
    np.testing.assert_array_equal(sparse.negatives_per_class(), [1, 1, 2, 1])
    np.testing.assert_array_equal(sparse.positives_per_class(), (DENSE == 1).sum(axis=0))
    np.testing.assert_array_equal(sparse.negatives_per_class(), (DENSE == -1).sum(axis=0))


def test_save_and_load_round_trip_with_extra_arrays(tmp_path):
    sparse = SparseLabels.from_dense(DENSE)
    path = tmp_path / "labels.npz"
    sparse.save(path, note=np.array("hello"))
    with np.load(path) as npz:
        restored = SparseLabels.load(npz)
        assert str(npz["note"]) == "hello"
    assert_sparse(restored, INDPTR, CLASSES, VALUES, 4)


def test_as_sparse_and_as_dense():
    sparse = SparseLabels.from_dense(DENSE)
    assert as_sparse(sparse) is sparse
    assert_sparse(as_sparse(DENSE), INDPTR, CLASSES, VALUES, 4)
    np.testing.assert_array_equal(as_dense(sparse), DENSE)
    assert as_dense(DENSE.astype(np.int64)).dtype == np.int8


@pytest.mark.parametrize(
    "indptr, classes, values, num_classes, match",
    [
        ([0, 1, 2], [0, 4], [1, 1], 4, r"row 1: class id 4 outside 0\.\.3"),
        ([0, 1, 2], [-1, 0], [1, 1], 4, r"row 0: class id -1 outside 0\.\.3"),
        ([0, 2, 2, 3], [0, 1, 2], [1, -1, 0], 4, r"row 2: value 0 is not \+1 or -1"),
        ([0, 1, 3], [0, 2, 2], [1, -1, 1], 4, r"row 1: class ids must increase.*duplicate"),
        ([0, 0, 2], [3, 1], [1, 1], 4, r"row 1: class ids must increase.*unsorted"),
        ([1, 2], [0, 1], [1, 1], 4, "indptr must start at 0"),
        ([0, 1], [0, 1], [1, 1], 4, "end at the number of entries"),
        ([0, 2, 1, 2], [0, 1], [1, 1], 4, "indptr decreases at row 1"),
        ([0, 2], [0, 1], [1], 4, "classes and values must be 1-D and of equal length"),
    ],
)
def test_invalid_sparse_labels_name_the_problem_and_row(
    indptr, classes, values, num_classes, match
):
    with pytest.raises(SparseLabelError, match=match):
        SparseLabels(indptr, classes, values, num_classes)


def test_valid_rows_starting_with_a_smaller_class_are_accepted():
    # Class ids only need to increase within a row; a new row (also after an empty one) restarts.
    sparse = SparseLabels([0, 2, 2, 4], [1, 3, 0, 3], [1, -1, -1, 1], 4)
    np.testing.assert_array_equal(sparse.to_dense(), [[0, 1, 0, -1], [0, 0, 0, 0], [-1, 0, 0, 1]])
