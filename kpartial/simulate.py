"""Seeded partial-label simulation: hide labels of an annotated training set.

Every scheme takes labels (dense int [N, C] in {+1, -1, 0} or `SparseLabels`), returns the same
kind, only ever turns known entries into unknown ones, and gives the same result for the same
seed. A simulation can be saved next to the data (`save`) and reloaded (`load`) so that every
method trains on identical labels.

Schemes (`SCHEMES`, the names `tools/simulate.py --scheme` takes):
- `keep_fraction(p)`: each known entry kept independently with probability p.
- `per_image_fraction(p)`: each image keeps round(p * its known labels) of them (at least one).
- `per_class_count(n)`: each class keeps n positives and n negatives (all it has if fewer).
- `per_image_count(k, m)`: each image keeps k positives and m negatives; k=1, m=0 is the
  single-positive setting.

Two schemes hide labels *for a reason*, as real partially annotated sets do:
- `verified_candidates(K, A)`: how Open Images' human-verified labels were made. A simulated
  detector scores every class of every example; each example verifies its top k_i classes
  (k_i ~ Poisson(K), at least 1) and learns their true value; every other entry is unknown,
  the positives the detector ranked low included. The detector's score of entry (n, c) is

      s_nc = logit(pi_c) + d_c [y_nc = +1] + e_nc,   e_nc ~ N(0, 1),
      d_c = sqrt(2) Phi^-1(A_c),   A_c ~ U[A - 0.05, A + 0.05] clipped to [0.55, 0.995],

  so within class c the scores separate positives from negatives with ROC AUC A_c (about A on
  average), and across classes a frequent class is proposed more often (pi_c is the class's
  positive rate among the annotated entries, smoothed), as a calibrated detector's would be.
- `class_coverage(a, b)`: class c keeps each of its entries with its own probability f_c,
  log-uniform in [a, b], independent of the value: tasks screened on different libraries.

`describe` gives what a scheme left: the share of true positives now unknown and the known share
per class (10th, 50th, 90th percentile).
"""

import json
import os
import statistics

import numpy as np

from kpartial.data import DataError, read_npz_arrays
from kpartial.sparse_labels import SparseLabelError, SparseLabels, as_sparse


def keep_fraction(labels, known_fraction, seed):
    """Keeps each annotated entry independently with probability `known_fraction`.

    Entries that are not kept become 0 (unknown). Entries that were already unknown stay unknown.

    Args:
      labels: int array [N, C] in {+1, -1, 0}, or SparseLabels.
      known_fraction: probability in (0, 1] of keeping an annotated entry.
      seed: integer seed; the same seed and shape always hide the same entries.

    Returns:
      labels of the input's kind, with the hidden entries unknown.
    """
    if not 0.0 < known_fraction <= 1.0:
        raise ValueError(f"known_fraction must be in (0, 1], got {known_fraction}")
    rng = np.random.default_rng(seed)
    if isinstance(labels, SparseLabels):
        if known_fraction == 1.0:
            return labels
        return labels.with_entries(rng.random(labels.num_known) < known_fraction)
    labels = np.asarray(labels, dtype=np.int8)
    if known_fraction == 1.0:
        return labels.copy()
    # Dense draws one number per entry of the matrix, unknown ones included (SparseLabels: one per
    # known entry), so the kept positions depend on the seed and the shape alone.
    keep = rng.random(labels.shape) < known_fraction
    return np.where(keep, labels, 0).astype(np.int8)


def _keep_ranked(labels, groups, quotas, seed):
    """Keeps, in each group of entries, the `quotas[group]` entries with the smallest random key."""
    sparse = as_sparse(labels)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(sparse.num_known), groups))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    keep = np.zeros(sparse.num_known, bool)
    keep[order] = rank < quotas[sorted_groups]
    return _like(labels, sparse.with_entries(keep))


def _like(original, sparse):
    return sparse if isinstance(original, SparseLabels) else sparse.to_dense()


def per_image_fraction(labels, fraction, seed):
    """Each image keeps round(fraction * its known labels), at least one, chosen at random."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    sparse = as_sparse(labels)
    lengths = sparse.row_lengths()
    quotas = np.maximum(np.rint(fraction * lengths), np.minimum(lengths, 1)).astype(np.int64)
    return _keep_ranked(labels, sparse.rows(), quotas, seed)


def per_class_count(labels, count, seed):
    """Each class keeps `count` positives and `count` negatives (all of them if it has fewer)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    sparse = as_sparse(labels)
    groups = sparse.classes.astype(np.int64) * 2 + (sparse.values > 0)
    return _keep_ranked(labels, groups, np.full(2 * sparse.num_classes, count), seed)


def per_image_count(labels, positives, negatives, seed):
    """Each image keeps `positives` positives and `negatives` negatives (fewer if it has fewer)."""
    if positives < 0 or negatives < 0 or positives + negatives == 0:
        raise ValueError(
            f"need positives, negatives >= 0, not both 0; got {positives}, {negatives}"
        )
    sparse = as_sparse(labels)
    groups = sparse.rows() * 2 + (sparse.values > 0)
    quotas = np.tile(np.array([negatives, positives], np.int64), sparse.shape[0])
    return _keep_ranked(labels, groups, quotas, seed)


# A class's detector AUC varies this much around the scheme's `detector_auc`, within AUC_RANGE.
AUC_SPREAD = 0.05
AUC_RANGE = (0.55, 0.995)
ROWS_PER_CHUNK = 4096
_NORMAL = statistics.NormalDist()


def verified_candidates(labels, candidates, detector_auc, seed):
    """Each example verifies the top k_i ~ Poisson(candidates) classes of a simulated detector.

    See the module docstring for the detector. Verified entries keep their value (entries the
    data does not annotate stay unknown); every other entry becomes unknown.

    Args:
      labels: int [N, C] in {+1, -1, 0}, or SparseLabels.
      candidates: K, the mean number of classes verified per example (> 0).
      detector_auc: A, the detector's mean per-class ROC AUC, in (0.5, 1).
      seed: integer seed.

    Returns:
      labels of the input's kind.
    """
    if not candidates > 0:
        raise ValueError(f"candidates must be > 0, got {candidates}")
    if not 0.5 < detector_auc < 1.0:
        raise ValueError(f"detector_auc must be in (0.5, 1), got {detector_auc}")
    sparse = as_sparse(labels)
    num_rows, num_classes = sparse.shape
    rng = np.random.default_rng(seed)
    low, high = AUC_RANGE
    auc = np.clip(detector_auc + rng.uniform(-AUC_SPREAD, AUC_SPREAD, num_classes), low, high)
    separation = np.sqrt(2.0) * np.array([_NORMAL.inv_cdf(a) for a in auc])
    positives = sparse.positives_per_class()
    prior = (positives + 1.0) / (positives + sparse.negatives_per_class() + 2.0)
    offset = np.log(prior / (1.0 - prior))
    quotas = np.clip(rng.poisson(candidates, num_rows), 1, num_classes)
    keep = np.zeros(sparse.num_known, bool)
    for start in range(0, num_rows, ROWS_PER_CHUNK):
        stop = min(start + ROWS_PER_CHUNK, num_rows)
        dense = sparse.take_rows(np.arange(start, stop)).to_dense()
        scores = offset + separation * (dense == 1) + rng.standard_normal(dense.shape)
        rank = np.argsort(np.argsort(-scores, axis=1), axis=1)
        verified = rank < quotas[start:stop, None]
        first, last = sparse.indptr[start], sparse.indptr[stop]
        rows = sparse.rows()[first:last] - start
        keep[first:last] = verified[rows, sparse.classes[first:last]]
    return _like(labels, sparse.with_entries(keep))


def class_coverage(labels, min_fraction, max_fraction, seed):
    """Class c keeps each of its known entries with probability f_c ~ log-uniform[min, max].

    Args:
      labels: int [N, C] in {+1, -1, 0}, or SparseLabels.
      min_fraction, max_fraction: 0 < min <= max <= 1.
      seed: integer seed.

    Returns:
      labels of the input's kind.
    """
    if not 0.0 < min_fraction <= max_fraction <= 1.0:
        raise ValueError(
            f"need 0 < min_fraction <= max_fraction <= 1, got {min_fraction}, {max_fraction}"
        )
    sparse = as_sparse(labels)
    rng = np.random.default_rng(seed)
    fractions = np.exp(rng.uniform(np.log(min_fraction), np.log(max_fraction), sparse.num_classes))
    keep = rng.random(sparse.num_known) < fractions[sparse.classes]
    return _like(labels, sparse.with_entries(keep))


SCHEMES = {
    "keep_fraction": (keep_fraction, ("fraction",)),
    "per_image_fraction": (per_image_fraction, ("fraction",)),
    "per_class_count": (per_class_count, ("count",)),
    "per_image_count": (per_image_count, ("positives", "negatives")),
    "verified_candidates": (verified_candidates, ("candidates", "detector_auc")),
    "class_coverage": (class_coverage, ("min_fraction", "max_fraction")),
}


def describe(full, kept):
    """What a simulation left of the labels, for people reading it.

    Args:
      full: the labels simulated from (dense or SparseLabels).
      kept: the simulated labels.

    Returns:
      {"known_share": kept entries / all entries, "positives_unknown": the share of the
      annotated positives the simulation hid, "class_known_share": (10th, 50th, 90th percentile)
      over classes of kept entries / examples}.
    """
    full, kept = as_sparse(full), as_sparse(kept)
    num_rows, num_classes = kept.shape
    positives = full.positives_per_class().sum()
    per_class = np.bincount(kept.classes, minlength=num_classes) / max(num_rows, 1)
    return {
        "known_share": float(kept.num_known / max(num_rows * num_classes, 1)),
        "positives_unknown": float(1.0 - kept.positives_per_class().sum() / max(positives, 1)),
        "class_known_share": tuple(float(q) for q in np.percentile(per_class, (10, 50, 90))),
    }


def simulate(labels, scheme, seed, **params):
    """Runs a simulation scheme on `labels`.

    Args:
      labels: int [N, C] in {+1, -1, 0}, or SparseLabels.
      scheme: a key of `SCHEMES`.
      seed: integer seed; the same seed and labels always give the same result.
      **params: the scheme's parameters, all of them, e.g. fraction=0.1 (see `SCHEMES`).

    Returns:
      labels of the input's kind, with the hidden entries unknown.

    Raises:
      ValueError: for an unknown scheme, or missing or unexpected parameters.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; known: {sorted(SCHEMES)}")
    function, names = SCHEMES[scheme]
    missing = [n for n in names if n not in params]
    extra = sorted(set(params) - set(names))
    if missing or extra:
        raise ValueError(f"scheme {scheme} takes {names}; missing {missing}, unexpected {extra}")
    return function(labels, *(params[n] for n in names), seed)


def save(path, labels, *, scheme, seed, params, source, label_names):
    """Writes a simulation: the kept labels (sparse) and what produced them, as one .npz.

    Args:
      path: the .npz to write (its folder is created).
      labels: the simulated labels, dense or SparseLabels.
      scheme, seed, params: what `simulate` was called with.
      source: the data the labels were simulated from (a data spec), for people reading it.
      label_names: the C class names, which `load` checks against the data.
    """
    meta = {
        "scheme": scheme,
        "seed": seed,
        "params": params,
        "source": source,
        "label_names": list(label_names),
    }
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    as_sparse(labels).save(path, meta=np.array(json.dumps(meta)))


def read_meta(path):
    """The record of a simulation file: scheme, seed, params, source, label_names.

    Raises:
      DataError: naming the file when it is not a simulation file.
    """
    return _read(path)[1]


def _read(path):
    not_simulation = "not a kpartial simulation file"
    arrays = read_npz_arrays(path, not_simulation)
    missing = [k for k in ("indptr", "classes", "values", "num_classes", "meta") if k not in arrays]
    if missing:
        raise DataError(f"{path}: {not_simulation}: no {missing} (found {sorted(arrays)})")
    try:
        sparse = SparseLabels.load(arrays)
        meta = json.loads(str(arrays["meta"]))
    except (SparseLabelError, TypeError, ValueError) as e:  # TypeError: e.g. 2-D num_classes
        raise DataError(f"{path}: {not_simulation}: {e}") from None
    if not (isinstance(meta, dict) and isinstance(meta.get("label_names"), list)):
        raise DataError(f"{path}: {not_simulation}: meta has no label_names list")
    return sparse, meta


def load(path, full_data):
    """The labels saved by `save`, checked against the data they were simulated from.

    Args:
      path: the .npz `save` wrote.
      full_data: the `MultiLabelData` the simulation came from (same examples and classes).

    Returns:
      (labels of the kind full_data holds, meta dict).

    Raises:
      DataError: naming the file when it is not a simulation file or does not fit `full_data`.
    """
    sparse, meta = _read(path)
    if tuple(meta["label_names"]) != tuple(full_data.label_names):
        raise DataError(f"{path}: classes differ from those of {full_data.source}")
    if sparse.shape != full_data.labels.shape:
        raise DataError(
            f"{path}: shape {sparse.shape} differs from {full_data.source} {full_data.labels.shape}"
        )
    full = as_sparse(full_data.labels)
    # Every kept entry must be an annotation of the same sign in the data.
    row_full = full.rows() * full.num_classes + full.classes
    row_kept = sparse.rows() * sparse.num_classes + sparse.classes
    at = np.searchsorted(row_full, row_kept)
    ok = (at < row_full.size) & (row_full[np.minimum(at, row_full.size - 1)] == row_kept)
    ok &= full.values[np.minimum(at, max(row_full.size - 1, 0))] == sparse.values
    if not ok.all():
        row = int(sparse.rows()[np.argmax(~ok)])
        raise DataError(f"{path}: row {row} keeps a label {full_data.source} does not have")
    return _like(full_data.labels, sparse), meta
