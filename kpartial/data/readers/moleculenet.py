"""MoleculeNet classification CSVs (Tox21, ToxCast, SIDER, ...): SMILES plus 0/1/blank tasks."""

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

FEATURIZERS = ("morgan", "none")


# Reader option bounds: a fingerprint is a float32 row per molecule, so its length bounds memory.
MAX_FINGERPRINT_BITS = 65536
MAX_FINGERPRINT_RADIUS = 8


def read_moleculenet(
    path,
    *,
    smiles_column="smiles",
    task_columns=None,
    featurizer="morgan",
    fingerprint_bits=2048,
    fingerprint_radius=2,
    on_bad_input="error",
) -> MultiLabelData:
    """Reads one MoleculeNet CSV file, e.g. ``tox21.csv`` (``smiles`` + 12 assay columns).

    ``path`` is a single CSV file (``.csv`` or compressed ``.csv.gz``), not a folder, with a
    header line and one molecule per line. A task value ``1`` (or ``1.0``) -> +1, ``0`` -> -1,
    blank (never measured) -> 0 unknown. Without ``task_columns``, the tasks are the columns
    other than ``smiles_column`` whose non-blank values are all 0/1 (and not all blank), in file
    order; columns without any numeric value (text identifiers such as ``mol_id``, all-blank
    columns) are ignored; any other column (numeric ids, regression targets, a task with a
    stray value) raises DataError, so pass ``task_columns``. With ``task_columns``, a value
    other than 0/1/blank in a task is bad input. Blank lines are ignored.

    Args:
        path: The CSV file.
        smiles_column: Column holding the SMILES (the example key: a repeated SMILES is bad
            input).
        task_columns: Task column names (comma-separated string or sequence), in the order the
            classes should have. Default: detected as above.
        featurizer: ``"morgan"``: Morgan (ECFP-like) bit fingerprints through RDKit as float32
            features [N, fingerprint_bits]. ``"none"``: no features (``features=None``) -- only
            for label statistics, such data cannot be trained on.
        fingerprint_bits: Fingerprint length (``fpSize``).
        fingerprint_radius: Morgan radius (2 = ECFP4).
        on_bad_input: ``"error"`` raises on the first bad row; ``"skip"`` drops rows with a
            blank or duplicate SMILES, a task value other than 0/1/blank, or (morgan) a SMILES
            RDKit cannot parse, and counts them in ``skipped``.

    Raises:
        DataError: If the file cannot be read, a named column is missing, no task column is
            found, a column is ambiguous (see above), RDKit is missing for ``"morgan"``, or
            (``"error"``) on a bad row. Messages name the file and line (header = line 1).
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if featurizer not in FEATURIZERS:
        raise DataError(f"{path}: featurizer must be one of {FEATURIZERS}, got {featurizer!r}")
    for name, value, low, high in (
        ("fingerprint_bits", fingerprint_bits, 1, MAX_FINGERPRINT_BITS),
        ("fingerprint_radius", fingerprint_radius, 0, MAX_FINGERPRINT_RADIUS),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise DataError(
                f"{path}: reader option {name} must be an integer in [{low}, {high}], got {value!r}"
            )
    bad = BadInput(on_bad_input)
    table, lines = read_csv_table(path, bad, "MoleculeNet CSV")
    if smiles_column not in table.columns:
        raise DataError(
            f"{path}: no SMILES column {smiles_column!r} (columns: {list(table.columns)})"
        )
    numbers = table.apply(pd.to_numeric, errors="coerce")
    binary = (numbers == 0) | (numbers == 1)
    tasks = _tasks(table, task_columns, smiles_column, numbers, binary, lines, path)

    keep = np.ones(len(table), bool)
    report = row_reporter(bad, keep, lambda row: f"{path}:{lines[row]}")

    smiles = table[smiles_column].to_numpy()
    _report_bad_rows(table, smiles_column, tasks, binary, report)
    features = None
    if featurizer == "morgan":
        features, parsed = _morgan(smiles, keep, fingerprint_bits, fingerprint_radius)
        report(~parsed, lambda row: f"RDKit cannot parse SMILES {smiles[row]!r}")
        features = features[keep]
    numbers = numbers.loc[keep, tasks].to_numpy()
    labels = np.select([numbers == 1, numbers == 0], [POSITIVE, NEGATIVE], UNKNOWN)
    return MultiLabelData(
        labels=labels.astype(np.int8),
        label_names=tuple(tasks),
        features=features,
        source=f"moleculenet:{path}",
        skipped=bad.counts,
    )


def _tasks(table, task_columns, smiles_column, numbers, binary, lines, path) -> list[str]:
    """The task columns: `task_columns`, or detected as `read_moleculenet` describes.

    Raises:
        DataError: If a named column is missing, a column mixes numbers with other values
            (neither a task nor a text id), or there is no task.
    """
    if task_columns is None:
        tasks = []
        for c in table.columns.drop(smiles_column):
            other = (table[c] != "").to_numpy() & ~binary[c].to_numpy()
            if not other.any():
                tasks += [c] if binary[c].any() else []  # all blank: never measured, ignored
            elif numbers[c].notna().any():  # neither a task nor a text id column: ambiguous
                row = int(np.argmax(other))
                raise DataError(
                    f"{path}:{lines[row]}: column {c!r} mixes numbers with value "
                    f"{table[c].iloc[row]!r}; pass task_columns to say which columns are tasks"
                )
    else:
        tasks = _names(task_columns)
        missing = [c for c in tasks if c not in table.columns]
        if missing:
            raise DataError(f"{path}: task columns {missing} not in {list(table.columns)}")
    if not tasks:
        raise DataError(f"{path}: no task column with 0/1 values (pass task_columns)")
    return tasks


def _report_bad_rows(table, smiles_column, tasks, binary, report):
    """Reports rows with a blank or repeated SMILES or a task value other than 0/1/blank."""
    smiles = table[smiles_column].to_numpy()
    report(smiles == "", "blank SMILES")
    report(
        table[smiles_column].duplicated().to_numpy(),
        lambda row: f"duplicate SMILES {smiles[row]!r}",
    )
    for task in tasks:
        values = table[task].to_numpy()
        report(
            (values != "") & ~binary[task].to_numpy(),
            lambda row, task=task, values=values: (
                f"task {task!r} has value {values[row]!r}; expected 1, 0 or blank"
            ),
        )


def _names(names) -> list[str]:
    """A comma-separated string or a sequence of names as a list of stripped names."""
    names = names.split(",") if isinstance(names, str) else names
    return [str(n).strip() for n in names if str(n).strip()]


def _morgan(smiles, rows, bits, radius) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [N, bits] fingerprints, bool [N] parsed) for the SMILES at `rows` (bool mask)."""
    try:
        from rdkit import Chem
        from rdkit.Chem import rdFingerprintGenerator
        from rdkit.rdBase import BlockLogs
    except ImportError:
        raise DataError("featurizer='morgan' needs RDKit: pip install kpartial[chem]") from None
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    features = np.zeros((len(smiles), bits), np.float32)
    parsed = np.ones(len(smiles), bool)
    with BlockLogs():  # RDKit's parse errors on stderr: they are reported as bad input instead.
        for row in np.flatnonzero(rows):
            mol = Chem.MolFromSmiles(smiles[row])
            if mol is None:
                parsed[row] = False
            else:
                features[row] = generator.GetFingerprintAsNumPy(mol)
    return features, parsed
