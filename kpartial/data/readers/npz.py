"""NumPy ``.npz`` feature datasets: ``x`` [N, D], ``y`` [N, C] and optional ``label_names``."""

from __future__ import annotations

import os

import numpy as np

from kpartial.data.container import LABEL_VALUES, DataError, MultiLabelData
from kpartial.data.files import read_npz_arrays


def read_npz(path) -> MultiLabelData:
    """Reads an ``.npz`` with ``x`` [N, D], ``y`` [N, C] and optional ``label_names``.

    Args:
        path: The npz file. ``y`` holds 1, 0 or -1 (0 = unknown);
            ``label_names`` defaults to ``class_0, class_1, ...``.

    Raises:
        DataError: On a missing key, shape mismatch, label values outside
            {1, 0, -1} or NaN/inf features, naming the file and first bad row.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
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
    bad = ~np.isin(y, LABEL_VALUES)  # NaN is never in the set.
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise DataError(
            f"{path}: y values must be 1, 0 or -1; row {row} (0-based) has {y[row][bad[row]][0]}"
        )
    with np.errstate(over="ignore"):  # Overflow becomes inf, reported just below.
        x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        raise DataError(
            f"{path}: x has NaN/inf (or float32 overflow) in row "
            f"{int(np.argwhere(bad)[0, 0])} (0-based)"
        )
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
        labels=y.astype(np.int8), label_names=names, features=x, source=f"npz:{path}"
    )
