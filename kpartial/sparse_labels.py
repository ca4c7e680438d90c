"""Partial labels stored sparsely: only known entries, row by row (CSR).

At Open Images scale (9M images x 9.6k classes, ~8 verified labels per image) a dense int8 label
matrix is 86 GB while the known labels are 72M. `SparseLabels` holds, per known entry, a class id
(int32) and a sign (int8), plus one int64 row offset per example: 5 bytes per known label and
8 bytes per row.
"""

from __future__ import annotations

import dataclasses

import numpy as np


class SparseLabelError(ValueError):
    """Malformed sparse labels (message says which row)."""


@dataclasses.dataclass(frozen=True, eq=False)
class SparseLabels:
    """Known labels of N examples over C classes; everything not stored is unknown (0).

    Attributes:
      indptr: int64 [N + 1]; row r's entries are `classes[indptr[r]:indptr[r + 1]]`.
      classes: int32 [K] class ids, increasing within a row.
      values: int8 [K], +1 (positive) or -1 (negative).
      num_classes: C.
    """

    indptr: np.ndarray
    classes: np.ndarray
    values: np.ndarray
    num_classes: int

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)
        for name, dtype in (("classes", np.int32), ("values", np.int8)):
            raw = np.asarray(getattr(self, name))
            info = np.iinfo(dtype)
            if (
                raw.size
                and raw.dtype.kind in "iu"
                and (raw.min() < info.min or raw.max() > info.max)
            ):
                raise SparseLabelError(f"{name} hold values outside the {dtype.__name__} range")
        set_("indptr", np.asarray(self.indptr, np.int64))
        set_("classes", np.asarray(self.classes, np.int32))
        set_("values", np.asarray(self.values, np.int8))
        set_("num_classes", int(self.num_classes))
        indptr, classes, values = self.indptr, self.classes, self.values
        if indptr.ndim != 1 or indptr.size == 0 or indptr[0] != 0 or indptr[-1] != classes.size:
            raise SparseLabelError("indptr must start at 0 and end at the number of entries")
        if classes.shape != values.shape or classes.ndim != 1:
            raise SparseLabelError("classes and values must be 1-D and of equal length")
        if np.any(np.diff(indptr) < 0):
            raise SparseLabelError(f"indptr decreases at row {int(np.argmax(np.diff(indptr) < 0))}")
        bad = (classes < 0) | (classes >= self.num_classes)
        if bad.any():
            raise SparseLabelError(
                f"row {self._row_of(int(np.argmax(bad)))}: class id {classes[bad][0]} outside "
                f"0..{self.num_classes - 1}"
            )
        bad = (values != 1) & (values != -1)
        if bad.any():
            raise SparseLabelError(
                f"row {self._row_of(int(np.argmax(bad)))}: value {values[bad][0]} is not +1 or -1"
            )
        # Within a row, class ids strictly increase (no duplicates): compare each entry with the
        # previous one unless it starts a row.
        starts = np.zeros(classes.size, bool)
        starts[indptr[:-1][indptr[:-1] < classes.size]] = True
        bad = ~starts[1:] & (classes[1:] <= classes[:-1])
        if bad.any():
            raise SparseLabelError(
                f"row {self._row_of(int(np.argmax(bad)) + 1)}: class ids must increase within a "
                "row (duplicate or unsorted entry)"
            )

    def _row_of(self, entry):
        return int(np.searchsorted(self.indptr, entry, side="right") - 1)

    @property
    def shape(self):
        """(N, C)."""
        return (int(self.indptr.size - 1), self.num_classes)

    @property
    def num_known(self):
        """K, the number of known entries."""
        return int(self.classes.size)

    @property
    def nbytes(self):
        """Bytes held: the three arrays."""
        return int(self.indptr.nbytes + self.classes.nbytes + self.values.nbytes)

    def row_lengths(self):
        """int64 [N]: the known entries of every row."""
        return np.diff(self.indptr)

    def rows(self):
        """int64 [K]: the row of every stored entry."""
        return np.repeat(np.arange(self.shape[0], dtype=np.int64), self.row_lengths())

    @classmethod
    def from_dense(cls, labels):
        """From a dense int [N, C] matrix in {+1, -1, 0}."""
        labels = np.asarray(labels)
        rows, cols = np.nonzero(labels)
        indptr = _offsets(np.bincount(rows, minlength=labels.shape[0]))
        return cls(indptr, cols, labels[rows, cols], labels.shape[1])

    @classmethod
    def from_entries(cls, rows, classes, values, num_rows, num_classes):
        """From unordered (row, class, value) triplets with no repeated (row, class) pair."""
        rows = np.asarray(rows, np.int64)
        classes = np.asarray(classes, np.int64)
        order = np.lexsort((classes, rows))
        indptr = _offsets(np.bincount(rows, minlength=num_rows))
        return cls(indptr, classes[order], np.asarray(values)[order], num_classes)

    def to_dense(self):
        """The labels as a dense int8 [N, C] matrix."""
        dense = np.zeros(self.shape, np.int8)
        dense[self.rows(), self.classes] = self.values
        return dense

    def take_rows(self, rows):
        """The labels of `rows` (int indices), in that order."""
        rows = np.asarray(rows, np.int64)
        lengths = self.row_lengths()[rows]
        indptr = _offsets(lengths)
        starts = self.indptr[rows]
        # Entry k of the output comes from starts[row] + (k - indptr[row]).
        entry = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return SparseLabels(indptr, self.classes[entry], self.values[entry], self.num_classes)

    def take_classes(self, classes):
        """The labels restricted to `classes` (distinct ids), class k becoming column k."""
        classes = np.asarray(classes, np.int64)
        new_id = np.full(self.num_classes, -1, np.int64)
        new_id[classes] = np.arange(classes.size)
        mapped = new_id[self.classes]
        keep = mapped >= 0
        if np.any(np.diff(classes) < 0):  # reordered: entries must be sorted again within rows
            return SparseLabels.from_entries(
                self.rows()[keep], mapped[keep], self.values[keep], self.shape[0], classes.size
            )
        return self.with_entries(keep, mapped[keep].astype(np.int32), num_classes=classes.size)

    def with_entries(self, keep, classes=None, values=None, num_classes=None):
        """Keeps the entries where the boolean [K] `keep` holds (optionally new ids / values)."""
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        kept_per_row = kept_before[self.indptr[1:]] - kept_before[self.indptr[:-1]]
        indptr = _offsets(kept_per_row)
        return SparseLabels(
            indptr,
            self.classes[keep] if classes is None else classes,
            self.values[keep] if values is None else values,
            self.num_classes if num_classes is None else num_classes,
        )

    def positives_per_class(self):
        """int64 [C]: known positives per class."""
        return np.bincount(self.classes[self.values > 0], minlength=self.num_classes)

    def negatives_per_class(self):
        """int64 [C]: known negatives per class."""
        return np.bincount(self.classes[self.values < 0], minlength=self.num_classes)

    def save(self, path, **extra):
        """Writes an .npz with the three arrays, `num_classes` and any extra arrays."""
        np.savez_compressed(
            path,
            indptr=self.indptr,
            classes=self.classes,
            values=self.values,
            num_classes=np.int64(self.num_classes),
            **extra,
        )

    @classmethod
    def load(cls, npz):
        """From the arrays `save` wrote (an opened .npz, or any mapping of them)."""
        return cls(npz["indptr"], npz["classes"], npz["values"], int(npz["num_classes"]))


def _offsets(row_lengths):
    """CSR row offsets [N + 1] of rows with these lengths."""
    indptr = np.zeros(len(row_lengths) + 1, np.int64)
    np.cumsum(row_lengths, out=indptr[1:])
    return indptr


def as_sparse(labels):
    """`labels` as SparseLabels (dense int arrays are converted)."""
    return labels if isinstance(labels, SparseLabels) else SparseLabels.from_dense(labels)


def take_rows(labels, rows):
    """The rows `rows` of dense labels or `SparseLabels`, as the same kind."""
    if isinstance(labels, SparseLabels):
        return labels.take_rows(rows)
    return np.asarray(labels)[rows]


def as_dense(labels):
    """`labels` as a dense int8 [N, C] array."""
    return labels.to_dense() if isinstance(labels, SparseLabels) else np.asarray(labels, np.int8)
