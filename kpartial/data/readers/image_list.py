"""The "manifest" format: a generic table (CSV or Parquet), one example per row, images or features.

Inputs: with ``feature_columns`` the named columns are float32 features; otherwise the
``image_column`` holds image paths (relative ones resolved against ``image_dir``), each of which
must be an existing file. The example key, whose repetition is bad input, is the resolved image
path, or for features the ``image_column`` if present else a column named ``id`` if present (else
rows are not checked for duplicates).

Labels, in one of two layouts:

* List columns (used when ``positives_column`` or ``negatives_column`` is in the file): class
  names separated by ``list_separator`` (CSV, or a Parquet string), or a Parquet list column;
  blank = none. Every class not listed in a row is unknown. Classes are ``classes`` if given (a
  name outside it is bad input) else the sorted union of the names seen. The labels are returned
  as `SparseLabels`.
* One column per class: ``1`` -> +1; ``0`` and ``-1`` -> -1 (both mean negative); blank (or a
  Parquet null/NaN) -> 0 unknown. Class columns are ``classes`` (in that order) or by default
  every column other than the image, feature, ``id``, positives and negatives columns, in file
  order.
"""

import fnmatch
import math
import os

import numpy as np
import pandas as pd

from kpartial.data.container import (
    NEGATIVE,
    POSITIVE,
    UNKNOWN,
    BadInput,
    DataError,
    MultiLabelData,
    row_reporter,
)
from kpartial.data.files import read_csv_table
from kpartial.sparse_labels import SparseLabels

ID_COLUMN = "id"


def read_image_list(
    path,
    *,
    image_column="image",
    feature_columns=None,
    classes=None,
    positives_column="positives",
    negatives_column="negatives",
    list_separator=";",
    image_dir=None,
    on_bad_input="error",
) -> MultiLabelData:
    """Reads a manifest: one file, ``.csv`` (with a header line) or ``.parquet`` / ``.pq``.

    ``path`` is that file, not a folder. Each row is one example, with inputs and labels as the
    module docstring describes.

    Args:
        path: The manifest file.
        image_column: Column of image paths.
        feature_columns: Feature column names, comma-separated or a sequence; an item with
            ``*``, ``?`` or ``[`` is a shell pattern (e.g. ``f*`` = every column starting with
            ``f``, in file order). Default: image data.
        classes: Class names: a sequence, a comma-separated string, or the path of a text file
            with one name per line.
        positives_column: List column of positive classes.
        negatives_column: List column of negative classes.
        list_separator: Separator of class names in string list cells.
        image_dir: Folder that relative image paths are relative to. Default: the manifest's
            folder.
        on_bad_input: ``"error"`` raises on the first bad row; ``"skip"`` drops rows with a
            blank, missing or repeated image, a repeated key, a missing or non-finite feature,
            a label value other than 1/0/-1/blank, an unknown class name, or a class both
            positive and negative, and counts them in ``skipped``.

    Raises:
        DataError: If the file cannot be read or has an unknown extension, a named column or
            the classes file is missing, or (``"error"``) on a bad row. Messages name the file
            and line (CSV, header = line 1) or row (Parquet, 0-based).
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    bad = BadInput(on_bad_input)
    table, where = _read_table(path, bad)
    keep = np.ones(len(table), bool)
    report = row_reporter(bad, keep, where)

    features, image_paths, used = _inputs(
        table, feature_columns, image_column, image_dir, path, report
    )
    lists = [c for c in (positives_column, negatives_column) if c in table.columns]
    if lists:
        names, labels = _list_labels(
            table, lists, positives_column, classes, list_separator, report, keep, path
        )
    else:
        skip = set(used) | {image_column, ID_COLUMN, positives_column, negatives_column}
        names = (
            [c for c in table.columns if c not in skip]
            if classes is None
            else _classes(classes, path)
        )
        if not names:
            raise DataError(
                f"{path}: no class columns (columns: {list(table.columns)}); expected one per "
                f"class or {positives_column!r}/{negatives_column!r} list columns"
            )
        labels = _column_labels(table, names, report, keep, path)
    return MultiLabelData(
        labels=labels,
        label_names=tuple(names),
        features=None if features is None else features[keep],
        image_paths=None if image_paths is None else tuple(image_paths[keep]),
        source=f"manifest:{path}",
        skipped=bad.counts,
    )


def _inputs(table, feature_columns, image_column, image_dir, path, report):
    """(features, image paths, input columns): one of the first two is None.

    Rows with a bad input, or whose example key repeats an earlier row's, go to `report`.
    """
    features = image_paths = None
    if feature_columns is not None:
        used = _match_columns(_names(feature_columns), table.columns, path)
        features = _features(table, used, report)
        key_name = next((c for c in (image_column, ID_COLUMN) if c in table.columns), None)
        keys = None if key_name is None else table[key_name].astype(str).str.strip()
    else:
        used = [image_column]
        image_dir = os.path.dirname(path) if image_dir is None else image_dir
        image_paths = _image_paths(_column(table, image_column, "image", path), image_dir, report)
        keys = pd.Series(image_paths)
    if keys is not None:
        report(keys.duplicated().to_numpy(), lambda row: f"duplicate example {keys.iloc[row]!r}")
    return features, image_paths, used


def _column(table, name, what, path):
    if name not in table.columns:
        raise DataError(f"{path}: no {what} column {name!r} in {list(table.columns)}")
    return table[name]


def _features(table, used, report) -> np.ndarray:
    """The float32 [rows, features] of the columns `used`; rows with a bad value go to `report`."""
    with np.errstate(over="ignore"):  # Overflow becomes inf, reported as non-finite.
        features = table[used].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    finite = np.isfinite(features)
    report(
        ~finite.all(axis=1),
        lambda row: (
            f"missing or non-finite value for feature {used[int(np.argmin(finite[row]))]!r}"
        ),
    )
    return features


def _image_paths(cells, image_dir, report) -> np.ndarray:
    """The image path of each row, resolved against `image_dir`; blank or missing ones reported."""
    image_dir = os.path.abspath(os.path.expanduser(os.fspath(image_dir)))
    names = cells.fillna("").astype(str).to_numpy()
    report(names == "", "blank image path")
    image_paths = np.array([os.path.normpath(os.path.join(image_dir, n)) for n in names])
    report(
        ~np.vectorize(os.path.isfile, otypes=[bool])(image_paths),
        lambda row: f"image file {image_paths[row]} does not exist",
    )
    return image_paths


def _column_labels(table, names, report, keep, path) -> np.ndarray:
    """The int8 labels of the kept rows from one column per class (1; 0 or -1; blank)."""
    values = pd.DataFrame({c: _column(table, c, "class", path) for c in names})
    blank = values.isna() | values.astype(str).eq("")
    numbers = values.apply(pd.to_numeric, errors="coerce").to_numpy()
    invalid = ~blank.to_numpy() & ~np.isin(numbers, (1, 0, -1))
    report(
        invalid.any(axis=1),
        lambda row: (
            f"class {names[int(np.argmax(invalid[row]))]!r} has value "
            f"{str(values.iloc[row, int(np.argmax(invalid[row]))])!r}; "
            "expected 1, 0, -1 or blank"
        ),
    )
    return np.select([numbers == 1, np.isin(numbers, (0, -1))], [POSITIVE, NEGATIVE], UNKNOWN)[
        keep
    ].astype(np.int8)


def _read_table(path, bad):
    """(DataFrame, row -> "where" string) of a CSV or Parquet manifest."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        table, lines = read_csv_table(path, bad, "manifest")
        return table, lambda row: f"{path}:{lines[row]}"
    try:
        if ext in (".parquet", ".pq"):
            table = pd.read_parquet(path)
            repeated = table.columns[table.columns.duplicated()]
            if len(repeated):
                raise DataError(f"{path}: column {repeated[0]!r} appears twice")
            return table.reset_index(drop=True), lambda row: f"{path}: row {row} (0-based)"
    except (OSError, ValueError, ImportError) as e:  # ValueError: parser, Arrow, decoding errors.
        raise DataError(f"{path}: cannot read manifest: {e}") from None
    raise DataError(f"{path}: manifest must be .csv, .parquet or .pq, not {ext!r}")


def _names(names) -> list[str]:
    """A comma-separated string or a sequence of names as a list of stripped names."""
    names = names.split(",") if isinstance(names, str) else names
    return [str(n).strip() for n in names if str(n).strip()]


def _classes(classes, path) -> list[str]:
    """Class names from a sequence, a comma-separated string or a one-name-per-line file."""
    if isinstance(classes, (str, os.PathLike)) and os.path.isfile(classes):
        try:
            with open(classes, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{classes}: cannot read class list for {path}: {e}") from None
    else:
        names = _names(classes)
    if len(set(names)) != len(names) or not names:
        raise DataError(f"{path}: class list {classes!r} is empty or repeats a name")
    return names


def _match_columns(patterns, columns, path) -> list[str]:
    used = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matched = [c for c in columns if fnmatch.fnmatchcase(str(c), pattern)]
        else:
            matched = [pattern] if pattern in columns else []
        if not matched:
            raise DataError(f"{path}: no feature column matches {pattern!r}")
        used += matched
    return list(dict.fromkeys(used))


def _cell_names(value, separator) -> list[str]:
    """Class names in one list cell: a separated string, a list/array, or null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    parts = value.split(separator) if isinstance(value, str) else list(value)
    return [name for part in parts if (name := str(part).strip())]


def _list_labels(table, lists, positives_column, classes, separator, report, keep, path):
    """(class names, SparseLabels of the kept rows) from the positives/negatives columns."""
    parts = []
    for name in lists:
        cells = table[name].map(lambda v: _cell_names(v, separator)).explode().dropna()
        value = POSITIVE if name == positives_column else NEGATIVE
        parts.append(
            pd.DataFrame(
                {"row": cells.index.to_numpy(), "name": cells.to_numpy(), "value": np.int8(value)}
            )
        )
    entries = pd.concat(parts, ignore_index=True).drop_duplicates()
    conflict = entries.duplicated(["row", "name"], keep=False).to_numpy()
    first = entries[conflict].groupby("row")["name"].first()
    report(
        np.isin(np.arange(len(table)), first.index),
        lambda row: f"class {first[row]!r} is both positive and negative",
    )
    if classes is not None:
        names = _classes(classes, path)
        unknown = entries[~entries["name"].isin(names)].groupby("row")["name"].first()
        report(
            np.isin(np.arange(len(table)), unknown.index),
            lambda row: f"unknown class {unknown[row]!r}",
        )
    entries = entries[keep[entries["row"].to_numpy()]]
    if classes is None:
        names = sorted(entries["name"].unique())
    new_row = np.cumsum(keep) - 1  # index among the kept rows
    labels = SparseLabels.from_entries(
        new_row[entries["row"].to_numpy()],
        pd.Index(names).get_indexer(entries["name"]),
        entries["value"].to_numpy(),
        int(keep.sum()),
        len(names),
    )
    return names, labels
