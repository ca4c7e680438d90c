"""NumPy ``.npz`` feature datasets: ``x`` [N, D], ``y`` [N, C] and optional ``label_names``."""

from __future__ import annotations

import os

import numpy as np

from kpartial.data.container import LABEL_VALUES, BadInput, DataError, MultiLabelData, row_reporter
from kpartial.data.files import read_npz_arrays


def read_npz(path, *, on_bad_input="error") -> MultiLabelData:
    """Reads an ``.npz`` with ``x`` [N, D], ``y`` [N, C] and optional ``label_names``.

    Args:
        path: The npz file. ``y`` holds 1, 0 or -1 (0 = unknown);
            ``label_names`` defaults to ``class_0, class_1, ...``.
        on_bad_input: ``"error"`` raises on the first bad row; ``"skip"`` drops rows whose
            ``x`` holds NaN or inf (or a value beyond float32) or whose ``y`` holds a value other
            than 1, 0, -1, and counts them in ``skipped``.

    Raises:
        DataError: On a missing key, shape mismatch, non-numeric arrays, bad ``label_names``
            or (``"error"``) a bad row, naming the file and first bad row (0-based).
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    bad = BadInput(on_bad_input)
    arrays = read_npz_arrays(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing key {key!r} (found {sorted(arrays)})")
    x, y = arrays["x"], arrays["y"]
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: need x [N, D] and y [N, C]; got x {x.shape}, y {y.shape}")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: x must be numeric, got {x.dtype}")
    if y.dtype.kind not in "iuf":  # bool rejected: False would silently mean "unknown".
        raise DataError(f"{path}: y must be integer (1, 0, -1), got {y.dtype}")
    keep = np.ones(x.shape[0], bool)
    invalid = ~np.isin(y, LABEL_VALUES)  # NaN is never in the set.
    first = lambda mask, row: int(np.argmax(mask[row]))
    report_y = row_reporter(
        bad, keep, lambda row: f"{path}: row {row} (0-based), y = {y[row, first(invalid, row)]}"
    )
    report_y(invalid.any(axis=1), "label value other than 1, 0 or -1")
    with np.errstate(over="ignore", invalid="ignore"):  # Overflow becomes inf, reported below.
        features = x.astype(np.float32)
    non_finite = ~np.isfinite(features)
    report_x = row_reporter(
        bad,
        keep,
        lambda row: (
            f"{path}: row {row} (0-based), x column {first(non_finite, row)} = "
            f"{x[row, first(non_finite, row)]}"
        ),
    )
    report_x(non_finite.any(axis=1), "non-finite feature value (NaN, inf or beyond float32)")
    x = features
    if not keep.all():
        x, y = x[keep], y[keep]
    num_classes = y.shape[1]
    if "label_names" in arrays:
        names = arrays["label_names"]
        if names.ndim != 1 or len(names) != num_classes or names.dtype.kind not in "US":
            raise DataError(
                f"{path}: label_names must be {num_classes} strings, got "
                f"{names.dtype} {names.shape}"
            )
        try:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: label_names are not UTF-8 ({e.reason})") from None
    else:
        names = tuple(f"class_{k}" for k in range(num_classes))
    return MultiLabelData(
        labels=y.astype(np.int8),
        label_names=names,
        features=x,
        source=f"npz:{path}",
        skipped=bad.counts,
    )
