"""Per-class label statistics: known positive/negative counts and an estimated prior.

The prior is the Laplace-smoothed positive rate among annotated entries,

    prior_c = (n+_c + 1) / (n+_c + n-_c + 2),

which is unbiased up to smoothing when annotations are missing at random. Statistics are either
computed from the training annotations or read from a CSV of an existing dataset
(`label,positives,negatives,prior`), so a small annotated subset can borrow a big dataset's priors.

The positive rate among the *unknown* entries (`unknown_priors`, which kpartial's unknown term
and pseudo-label quota use) equals the prior only if annotation does not depend on the label.
The count rule below reads the usual violation from the counts, and cannot tell labels verified
among proposed classes from labels missing at random within classes whose annotated shares
differ. So the default run (`--missing_labels=tested`) starts on its reading and tests it on the
validation split before the first pseudo-label refresh (`kpartial.annotation_test`: known and
unknown entries score alike there only when labels are missing at random within each class);
`--missing_labels=counts` keeps the count rule's reading. `--missing_labels=measured` has the run
measure the rate on the network of its first epochs instead (`kpartial.unknown_rates`; these
statistics then keep the priors): better where the classes were covered at random, worse under
verified candidates (benchmarks/README.md, "Measured unknown rates"). When annotators
were asked about the classes likely present in each example (Open Images' verification), the
annotated share of a class follows its frequency and differs by orders of magnitude between
classes, while labels missing at random leave every class annotated on about the same share of
the examples. So:

    a_c = (n+_c + n-_c) / N                       (annotated share of class c)
    spread = P90(a) / P10(a)                      (over the classes with an annotation)
    D = var_c(N a_c) / (N mean(a) (1 - mean(a)))  (1 for binomial noise alone)
    unknown_prior_c = (n+_c + 1) / (N + 2)        if spread > RANDOM_ANNOTATION_SPREAD and D > 4
                    = prior_c                     otherwise

(D keeps a small set's binomial noise, which can spread the shares by more than
RANDOM_ANNOTATION_SPREAD, from counting as dependence.)

The second is the class's known positives over all examples: what an unknown entry's rate is
when the annotations already hold most positives (a lower bound in general). With verified
labels 55% positive, as in Open Images, the prior would make more than half of every class's
unknown entries positive. Statistics read from a CSV keep its priors for the unknown entries too.
With class-dependent annotation kpartial's pseudo labels are off unless asked for, and then make
no pseudo positives (u_c is only a lower bound there), only pseudo negatives.

A label space is *dense* when the unknown entries' mean positive rate, mean_c(u_c), is at least
DENSE_LABEL_SPACE. There kpartial's pseudo labels are off unless asked for: the prior rule's quota
would make u_c of every class's unknown entries positive, several pseudo positives per example at
the precision of a half-trained model, while the unknown term already targets that rate. Pseudo
labels help most where the classes are many and rare. The comparison of pseudo labels on and off
by mean rate, from which DENSE_LABEL_SPACE is taken, is in benchmarks/README.md ("Pseudo labels on
vs off, by how dense the label space is").

The labels are *complete* when every training entry is annotated (`complete`). kpartial's loss
then has no unknown term and its pseudo labels have nothing to label, so it is a prior-weighted
ASL, and it takes ASL's published focusing of the known negatives, gamma- = 4 (`kpartial.losses.
COMPLETE_LABELS_NEGATIVE_FOCUSING`), instead of the milder default for partial labels: ASL's
published gamma is the better one where the negatives are all known. The comparison of gamma 4 and
2 with full labels is in benchmarks/README.md ("This version").
"""

import dataclasses

import numpy as np
import pandas as pd

from kpartial.data import DataError, read_csv_table
from kpartial.sparse_labels import SparseLabels

CSV_COLUMNS = ("label", "positives", "negatives", "prior")

# Annotated shares of classes within this factor (10th to 90th percentile) are read as labels
# missing at random: binomial noise, or a natively partial set whose tasks were measured on
# somewhat fewer examples (Tox21's spread: benchmarks/README.md), stay below it.
RANDOM_ANNOTATION_SPREAD = 16.0

# mean_c(u_c) from which a label space counts as dense (module docstring): between the densest
# measured label space where pseudo labels helped and the sparsest where they cost
# (benchmarks/README.md, "Pseudo labels on vs off").
DENSE_LABEL_SPACE = 0.15


@dataclasses.dataclass(frozen=True)
class ClassStatistics:
    """Label statistics for C classes.

    Attributes:
      label_names: tuple of C class names.
      positives: int64 [C], annotated positives per class.
      negatives: int64 [C], annotated negatives per class.
      priors: float64 [C], estimated probability that an entry of the class is positive.
      unknown_priors: float64 [C], estimated positive rate among the unknown entries (see the
        module docstring); the priors when not given.
      annotation: one line saying how `unknown_priors` were chosen ("" when not computed).
      complete: whether every training entry is annotated (computed from labels only).
    """

    label_names: tuple
    positives: np.ndarray
    negatives: np.ndarray
    priors: np.ndarray
    unknown_priors: np.ndarray = None
    annotation: str = ""
    complete: bool = False

    def __post_init__(self):
        if self.unknown_priors is None:
            object.__setattr__(self, "unknown_priors", self.priors)

    @property
    def depends_on_class(self):
        """Whether the unknown entries' rates are not the priors (class-dependent annotation)."""
        return not np.array_equal(self.unknown_priors, self.priors)

    @property
    def dense(self):
        """Whether the unknown entries' mean positive rate is at least `DENSE_LABEL_SPACE`."""
        return float(np.mean(self.unknown_priors)) >= DENSE_LABEL_SPACE

    @classmethod
    def from_labels(cls, labels, label_names, missing="counts"):
        """Counts annotated entries of an int [N, C] label matrix in {+1, -1, 0} or SparseLabels;
        `missing` as `unknown_priors` takes it."""
        if isinstance(labels, SparseLabels):
            positives = labels.positives_per_class().astype(np.int64)
            negatives = labels.negatives_per_class().astype(np.int64)
        else:
            labels = np.asarray(labels)
            positives = (labels > 0).sum(axis=0).astype(np.int64)
            negatives = (labels < 0).sum(axis=0).astype(np.int64)
        priors = (positives + 1.0) / (positives + negatives + 2.0)
        unknown, annotation = unknown_priors(positives, negatives, priors, labels.shape[0], missing)
        complete = bool(np.all(positives + negatives >= labels.shape[0]))
        return cls(tuple(label_names), positives, negatives, priors, unknown, annotation, complete)

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
        return cls(
            tuple(label_names),
            counts["positives"],
            counts["negatives"],
            priors,
            annotation=f"unknown entries take the priors of {path}",
        )

    def to_csv(self, path):
        """Writes `CSV_COLUMNS` and `unknown_prior` (which `from_csv` does not read)."""
        pd.DataFrame(
            {
                "label": self.label_names,
                "positives": self.positives,
                "negatives": self.negatives,
                "prior": self.priors,
                "unknown_prior": self.unknown_priors,
            }
        ).to_csv(path, index=False)


# How labels went missing (`--missing_labels`): "counts" reads the rates from the counts
# (`unknown_priors`), "tested" starts there and has the run test the reading on its validation
# split (`kpartial.annotation_test`), "measured" leaves the rates to the run
# (`kpartial.unknown_rates`); the user who knows says so.
MISSING_LABELS = ("tested", "counts", "measured", "at_random", "verified")


def unknown_priors(positives, negatives, priors, num_examples, missing="counts"):
    """(float64 [C] positive rate among unknown entries, a line saying which rule gave it).

    See the module docstring: the priors when every class is annotated on about the same share
    of the examples, else each class's known positives over all `num_examples`.

    Args:
      positives: int [C] annotated positives per class.
      negatives: int [C] annotated negatives per class.
      priors: float64 [C] the classes' priors.
      num_examples: N, the number of examples the counts come from.
      missing: a `MISSING_LABELS` name: "at_random" (within each class, e.g. assays screened on
        different libraries) gives the priors, "verified" (proposed classes verified, e.g. Open
        Images) the known positives over all examples, "counts" and "tested" read it from the
        counts (the run then tests "tested"'s reading, `kpartial.annotation_test`);
        "measured" gives the priors until the run measures the rates (`kpartial.unknown_rates`).
    """
    if missing == "measured":
        return priors, "unknown entries' positive rates: measured during the run"
    if missing == "at_random":
        return priors, "labels missing at random within each class (--missing_labels=at_random)"
    if missing == "verified":
        rates = (np.asarray(positives) + 1.0) / (num_examples + 2.0)
        return rates, (
            "proposed classes verified (--missing_labels=verified): unknown entries take each "
            f"class's known positives over all examples (mean {rates.mean():.3g})"
        )
    share = (np.asarray(positives) + np.asarray(negatives)) / max(int(num_examples), 1)
    annotated = share[share > 0]
    if annotated.size == 0 or np.all(share >= 1.0):
        return priors, "every entry is annotated"
    low, high = np.percentile(annotated, [10, 90])
    shares = f"annotated shares {low:.3g}-{high:.3g} (10th-90th percentile of classes)"
    mean = share.mean()
    dispersion = share.var() * num_examples / max(mean * (1.0 - mean), 1e-12)
    if high <= RANDOM_ANNOTATION_SPREAD * low or dispersion <= 4.0:
        return (
            priors,
            f"labels read as missing at random: {shares}; unknown entries take the priors",
        )
    rates = (np.asarray(positives) + 1.0) / (num_examples + 2.0)
    return rates, (
        f"annotation depends on the class: {shares}, more than {RANDOM_ANNOTATION_SPREAD:g}x "
        "apart; unknown entries take each class's known positives over all examples (mean "
        f"{rates.mean():.3g}) instead of the priors (mean {np.mean(priors):.3g})"
    )
