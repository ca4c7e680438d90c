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

from kpartial.data import DataError, read_csv_table
from kpartial.sparse_labels import SparseLabels

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
          DataError: naming the file when it cannot be read or is empty, a column or one of
            `label_names` is missing, a label is listed twice, or (naming the line and label) a
            count is not a non-negative integer or a prior is not a number in (0, 1).
        """
        # Strings as written: "NA", "None" or "01" are class names, not NaN or 1; the numbers
        # are parsed below, per line, so that a bad one can be named.
        table, lines = read_csv_table(path, None, "class statistics CSV")
        missing_columns = [c for c in CSV_COLUMNS if c not in table.columns]
        if missing_columns:
            raise DataError(
                f"{path}: missing columns {missing_columns}; expected {list(CSV_COLUMNS)}"
            )
        if table.empty:
            raise DataError(f"{path}: no statistics rows after the header")
        duplicated = table["label"].duplicated().to_numpy()
        if duplicated.any():
            row = int(np.argmax(duplicated))
            raise DataError(
                f"{path}: line {lines[row]}: duplicate label {table['label'].iloc[row]!r}"
            )
        lines = dict(zip(table["label"], lines))
        table = table.set_index("label")
        missing = [name for name in label_names if name not in table.index]
        if missing:
            raise DataError(f"{path}: no statistics for {len(missing)} classes, e.g. {missing[:5]}")
        table = table.loc[list(label_names)]

        def where(k):
            return f"{path}: line {lines[label_names[k]]}: "

        counts = {}
        for column in ("positives", "negatives"):
            text = table[column]
            # Integers only: a float would be truncated and a huge value wrap around in int64.
            ok = text.str.fullmatch(r"\+?\d{1,18}(?:\.0*)?").to_numpy()
            if not ok.all():
                k = int(np.argmin(ok))
                raise DataError(
                    f"{where(k)}{column} of {label_names[k]!r} must be a non-negative integer, "
                    f"got {text.iloc[k]!r}"
                )
            counts[column] = text.str.replace(r"\.0*$", "", regex=True).to_numpy().astype(np.int64)
        priors = pd.to_numeric(table["prior"], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~((priors > 0) & (priors < 1)))  # NaN (not a number) fails too
        if bad.size:
            k = int(bad[0])
            raise DataError(
                f"{where(k)}prior of {label_names[k]!r} must be a number in (0, 1), got "
                f"{table['prior'].iloc[k]!r}"
            )
        return cls(tuple(label_names), counts["positives"], counts["negatives"], priors)

    def to_csv(self, path):
        pd.DataFrame(
            {
                "label": self.label_names,
                "positives": self.positives,
                "negatives": self.negatives,
                "prior": self.priors,
            }
        ).to_csv(path, index=False)
