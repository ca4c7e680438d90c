"""MEKA multi-label ARFF files: the label count is in the ``@relation`` line (``-C n``)."""

import os
import re

from kpartial.data.arff import checked_labelled_data, read_arff
from kpartial.data.container import BadInput, DataError, MultiLabelData

# "-C 14" / "-C -14" anywhere in the relation name, e.g. @relation 'Yeast: -C 14 -split 0.6'.
_NUM_LABELS = re.compile(r"(?<![\w-])-C\s*(-?\d+)")


def read_meka(path, *, on_bad_input="error") -> MultiLabelData:
    """Reads one MEKA ARFF file (e.g. ``Yeast.arff``).

    ``path`` is a single ``.arff`` file, not a folder. Its ``@relation`` line carries ``-C n``:
    for ``n > 0`` the first ``n`` attributes are the labels, for ``n < 0`` the last ``|n|``.
    All other attributes are features (numeric values as floats, nominal values as their index
    in the nominal list). Dense and sparse (``{index value, ...}``) rows are read; in sparse rows
    an omitted entry is 0, so an omitted label is negative, as in MEKA. Labels ``1`` -> +1,
    ``0`` -> -1, ``?`` -> 0 (unknown). Classes keep the attribute order.

    Args:
        path: The MEKA ARFF file.
        on_bad_input: ``"error"`` raises on the first bad row; ``"skip"`` drops rows with a
            missing (``?``) or non-finite feature value or a label value other than 1, 0, ``?``,
            and counts them in ``skipped``.

    Raises:
        DataError: If the file cannot be read, has malformed lines, has no ``-C n`` in its
            ``@relation`` line (or ``n`` leaves no label or no feature), or (``"error"``) on a
            bad row. Messages name the file and line.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    bad = BadInput(on_bad_input)
    lines, attrs, start = read_arff(path, "MEKA ARFF file")
    num_labels = _num_labels(lines[:start], path)
    if not 0 < abs(num_labels) < len(attrs):
        raise DataError(
            f"{path}: -C {num_labels} does not leave both labels and features among "
            f"{len(attrs)} attributes"
        )
    split_at = num_labels if num_labels > 0 else len(attrs) + num_labels
    label_cols, feature_cols = list(range(split_at)), list(range(split_at, len(attrs)))
    if num_labels < 0:
        label_cols, feature_cols = feature_cols, label_cols

    return checked_labelled_data(lines, start, attrs, path, label_cols, feature_cols, bad, "meka")


def _num_labels(header_lines, path) -> int:
    """The ``n`` of ``-C n`` in the ``@relation`` line."""
    for lineno, raw in enumerate(header_lines, 1):
        line = raw.strip()
        if line[:9].lower() == "@relation":
            m = _NUM_LABELS.search(line)
            if m is None:
                raise DataError(
                    f"{path}:{lineno}: @relation line {line[:80]!r} has no '-C <number of "
                    "labels>' (not a MEKA ARFF file? Mulan files need the mulan format)"
                )
            return int(m.group(1))
    raise DataError(f"{path}: no @relation line with '-C <number of labels>'")
