"""The in-memory dataset every reader returns, and the bad-input policy readers report to.

Labels are int8 with ``+1`` (positive), ``-1`` (negative) and ``0`` (unknown).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from kpartial.sparse_labels import SparseLabels, as_dense, take_rows

POSITIVE, NEGATIVE, UNKNOWN = 1, -1, 0
LABEL_VALUES = (POSITIVE, NEGATIVE, UNKNOWN)


class DataError(ValueError):
    """Bad input; message names the file and (where applicable) the line/row.

    The message is kept on one line: some embed a library's error text, and pandas ends its
    parser errors with a newline.
    """

    def __init__(self, message=""):
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


ON_BAD_INPUT = ("error", "skip")


class BadInput:
    """What a reader does with a bad record: raise (policy "error") or count and drop ("skip").

    Readers call `report(reason, where)` for each bad record and keep going only if it returns;
    `counts` (reason -> number skipped) ends up in `MultiLabelData.skipped`, and runs print it.
    """

    def __init__(self, policy="error"):
        if policy not in ON_BAD_INPUT:
            raise DataError(f"on_bad_input must be one of {ON_BAD_INPUT}, got {policy!r}")
        self.policy = policy
        self.counts: dict[str, int] = {}

    def report(self, reason, where, count=1):
        """Raises DataError("<where>: <reason>") unless skipping; then counts `count` records."""
        if self.policy == "error":
            hint = "" if count == 1 else f" ({count} such records)"
            raise DataError(f"{where}: {reason}{hint} (on_bad_input=skip drops and counts them)")
        self.counts[reason] = self.counts.get(reason, 0) + int(count)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: ndarray fields make == ambiguous.
class MultiLabelData:
    """A multi-label dataset held in memory.

    Attributes:
        labels: int8 array [N, C] with values in {1, -1, 0}, or `SparseLabels` holding only the
            known entries (readers of large datasets use it; see `dense_labels`).
        label_names: One name per class (length C).
        features: float32 array [N, D] for feature data, else None.
        image_paths: Absolute image paths (length N) for image data, else None.
        source: Where the data came from, e.g. ``"mulan:/path/file.arff"``.
        skipped: Reason -> number of records the reader dropped under ``on_bad_input="skip"``.
        records: ``(folder, shard names)`` of TFRecords holding the encoded images, for image
            data streamed from records rather than read from paths (see kpartial.tfrecords).
    """

    labels: np.ndarray | SparseLabels
    label_names: tuple[str, ...]
    features: np.ndarray | None = None
    image_paths: tuple[str, ...] | None = None
    source: str = ""
    skipped: dict = dataclasses.field(default_factory=dict)
    records: tuple | None = None

    def __post_init__(self):
        # Frozen, so normalised values are stored with object.__setattr__.
        set_ = lambda name, value: object.__setattr__(self, name, value)
        set_("labels", _check_labels(self.labels, self.source))
        n, c = self.labels.shape
        set_("label_names", tuple(str(name) for name in self.label_names))
        if len(self.label_names) != c:
            raise DataError(f"{self.source}: {len(self.label_names)} label names for {c} classes")
        if len(set(self.label_names)) != c:
            # Checked here so that every reader is covered: two columns with one name would be
            # merged or confused by anything that looks classes up by name (stats, exports).
            first = {}
            for k, name in enumerate(self.label_names):
                if name in first:
                    raise DataError(
                        f"{self.source}: duplicate class name {name!r} (classes {first[name]} "
                        f"and {k}, 0-based)"
                    )
                first[name] = k
        if self.features is not None:
            features = np.asarray(self.features)
            if features.ndim != 2 or features.shape[0] != n:
                raise DataError(
                    f"{self.source}: features shape {features.shape} does not match {n} examples"
                )
            if features.dtype.kind not in "biuf":
                raise DataError(f"{self.source}: features must be numeric, got {features.dtype}")
            set_("features", features.astype(np.float32, copy=False))
        if isinstance(self.image_paths, np.ndarray):  # large datasets: one array, not N objects
            set_("image_paths", self.image_paths.astype(str, copy=False))
        elif self.image_paths is not None:
            set_("image_paths", tuple(str(p) for p in self.image_paths))
            if len(self.image_paths) != n:
                raise DataError(
                    f"{self.source}: {len(self.image_paths)} image paths for {n} examples"
                )

    @property
    def num_examples(self) -> int:
        """Number of examples N."""
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return int(self.labels.shape[1])

    @property
    def num_known(self) -> int:
        """Number of known (non-zero) label entries."""
        if isinstance(self.labels, SparseLabels):
            return self.labels.num_known
        return int(np.count_nonzero(self.labels))

    def dense_labels(self) -> np.ndarray:
        """Labels as an int8 [N, C] array (builds it for sparse labels)."""
        return as_dense(self.labels)

    def take(self, rows, source=None) -> MultiLabelData:
        """The examples at `rows` (int indices), in that order."""
        rows = np.asarray(rows, np.int64)
        return dataclasses.replace(
            self,
            labels=take_rows(self.labels, rows),
            features=None if self.features is None else self.features[rows],
            image_paths=None
            if self.image_paths is None
            else np.asarray(self.image_paths)[rows]
            if isinstance(self.image_paths, np.ndarray)
            else tuple(self.image_paths[r] for r in rows),
            source=source or self.source,
        )

    def take_classes(self, columns) -> MultiLabelData:
        """The classes at `columns` (int indices), in that order."""
        columns = np.asarray(columns, np.int64)
        labels = self.labels
        return dataclasses.replace(
            self,
            labels=labels.take_classes(columns)
            if isinstance(labels, SparseLabels)
            else labels[:, columns],
            label_names=tuple(self.label_names[k] for k in columns),
        )

    def with_skipped(self, counts: dict) -> MultiLabelData:
        """A copy whose `skipped` also counts `counts` (reason -> records)."""
        merged = dict(self.skipped)
        for reason, count in counts.items():
            merged[reason] = merged.get(reason, 0) + count
        return dataclasses.replace(self, skipped=merged)

    def with_labels(self, labels) -> MultiLabelData:
        """Returns a copy with ``labels`` replaced.

        Args:
            labels: Integer array of the same [N, C] shape, values in {1, -1, 0}.

        Raises:
            DataError: If the shape, dtype or values are wrong.
        """
        if not isinstance(labels, SparseLabels):
            labels = np.asarray(labels)
        if labels.shape != self.labels.shape:
            raise DataError(
                f"{self.source}: new labels have shape {labels.shape}, expected {self.labels.shape}"
            )
        return dataclasses.replace(self, labels=labels)


def _check_labels(labels, source: str) -> np.ndarray | SparseLabels:
    if isinstance(labels, SparseLabels):
        return labels  # validated on construction
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"{source}: labels must be 2-D [N, C], got shape {labels.shape}")
    if labels.dtype.kind not in "iu":  # bool rejected: False would silently mean "unknown".
        raise DataError(f"{source}: labels must be an integer array, got {labels.dtype}")
    bad = ~np.isin(labels, LABEL_VALUES)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise DataError(
            f"{source}: label values must be in {{1, -1, 0}}; "
            f"row {row} (0-based) has {labels[row][bad[row]][0]}"
        )
    return labels.astype(np.int8, copy=False)


def row_reporter(bad, keep, where):
    """report(rows, reason): one `bad.report` for the kept rows in the bool mask `rows` (naming
    the first; `reason` may be a function of it), which are then dropped from `keep`."""

    def report(rows, reason):
        rows = keep & rows
        if rows.any():
            first = int(np.argmax(rows))
            reason = reason(first) if callable(reason) else reason
            bad.report(reason, where(first), count=int(rows.sum()))
            keep[rows] = False

    return report
