"""Per-class label statistics: known positive/negative counts and an estimated prior.

The prior is the Laplace-smoothed positive rate among annotated entries,

    prior_c = (n+_c + 1) / (n+_c + n-_c + 2),

which is unbiased up to smoothing when annotations are missing at random. Statistics are either
computed from the training annotations or read from a CSV of an existing dataset
(`label,positives,negatives,prior`), so a small annotated subset can borrow a big dataset's priors.
"""

import dataclasses

import numpy as np
import pandas as pd

from kpartial.sparse_labels import SparseLabels

from kpartial.data import DataError

CSV_COLUMNS = ("label", "positives", "negatives", "prior")


@dataclasses.dataclass(frozen=True)
class ClassStatistics:
    """Label statistics for C classes.

    Attributes:
      label_names: tuple of C class names.
      positives: int64 [C], annotated positives per class.
      negatives: int64 [C], annotated negatives per class.
      priors: float64 [C], estimated probability that an entry of the class is positive.
    """

    label_names: tuple
    positives: np.ndarray
    negatives: np.ndarray
    priors: np.ndarray

    @classmethod
    def from_labels(cls, labels, label_names):
        """Counts annotated entries of an int [N, C] label matrix in {+1, -1, 0} or SparseLabels."""
        if isinstance(labels, SparseLabels):
            positives = labels.positives_per_class().astype(np.int64)
            negatives = labels.negatives_per_class().astype(np.int64)
        else:
            labels = np.asarray(labels)
            positives = (labels > 0).sum(axis=0).astype(np.int64)
            negatives = (labels < 0).sum(axis=0).astype(np.int64)
        priors = (positives + 1.0) / (positives + negatives + 2.0)
        return cls(tuple(label_names), positives, negatives, priors)

    @classmethod
    def from_csv(cls, path, label_names):
        """Reads a statistics CSV and orders it by `label_names`.

        Raises:
          DataError: naming the file when a column or one of `label_names` is missing, a label is
            listed twice, a value is not a number, or a prior is outside (0, 1).
        """
        # Labels stay strings as written: "NA", "None" or "01" are class names, not NaN or 1.
        table = pd.read_csv(path, dtype={"label": str}, keep_default_na=False)
        missing_columns = [c for c in CSV_COLUMNS if c not in table.columns]
        if missing_columns:
            raise DataError(
                f"{path}: missing columns {missing_columns}; expected {list(CSV_COLUMNS)}"
            )
        duplicated = table["label"][table["label"].duplicated()]
        if len(duplicated):
            row = int(duplicated.index[0]) + 2  # 1-based, after the header line
            raise DataError(f"{path}: line {row}: duplicate label {duplicated.iloc[0]!r}")
        table = table.set_index("label")
        missing = [name for name in label_names if name not in table.index]
        if missing:
            raise DataError(f"{path}: no statistics for {len(missing)} classes, e.g. {missing[:5]}")
        table = table.loc[list(label_names)]
        try:
            priors = table["prior"].to_numpy(np.float64)
            positives = table["positives"].to_numpy(np.int64)
            negatives = table["negatives"].to_numpy(np.int64)
        except ValueError as e:
            raise DataError(f"{path}: a count or prior is not a number ({e})") from None
        bad = np.flatnonzero(~((priors > 0) & (priors < 1)))
        if bad.size:
            raise DataError(
                f"{path}: prior of {label_names[bad[0]]!r} must be in (0, 1), got {priors[bad[0]]}"
            )
        return cls(tuple(label_names), positives, negatives, priors)

    def to_csv(self, path):
        pd.DataFrame(
            {
                "label": self.label_names,
                "positives": self.positives,
                "negatives": self.negatives,
                "prior": self.priors,
            }
        ).to_csv(path, index=False)
