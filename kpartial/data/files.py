"""File readers that several dataset readers share: CSV tables, .npz arrays, text lines, images.

Each turns an unreadable or malformed file into a one-line `DataError` naming the file (and line).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import zipfile
import zlib

import numpy as np

from kpartial.data.container import BadInput, DataError


def read_csv_table(path, bad: BadInput | None, what="CSV"):
    """(table, lines) of a CSV file with a header line, as stripped strings.

    Read with the csv module rather than pandas.read_csv, which guesses silently: it turns the
    extra fields of a too-long first record into an index (shifting every column), pads short
    records with blanks and renames a repeated column ``a`` to ``a.1``. Here a record with more
    or fewer fields than the header is bad input (reported to `bad`, naming the line), and a
    repeated column name is an error. Blank records are dropped. An empty header cell is named
    ``Unnamed: <k>`` as pandas does. ``.gz`` files are decompressed.

    Args:
        path: The file.
        bad: Receives the records with a wrong number of fields; None: raise on the first.
        what: What the file is, for messages (e.g. "MoleculeNet CSV").

    Returns:
        A pandas DataFrame of str (one row per kept record; index 0..n-1) and an int64 array
        with the 1-based line each kept record starts on.

    Raises:
        DataError: If the file cannot be read or decoded, has no header line, malformed quoting
            or a repeated column name, or (policy "error") a record of the wrong length.
    """
    import pandas as pd  # imported here: only the CSV readers need pandas

    try:
        opener = gzip.open if os.fspath(path).lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # EOFError, zlib.error: a damaged .gz
        raise DataError(f"{path}: cannot read {what}: {e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:  # decoded whole, so the line of the bad byte is known
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: {what} is not UTF-8 text ({e.reason})") from None
    del raw
    rows, lines = [], []
    header = None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # strict: no unclosed quote
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            fields = [field.strip() for field in record]
            if not any(fields):
                continue
            if header is None:
                header = [name or f"Unnamed: {k}" for k, name in enumerate(fields)]
                if len(set(header)) != len(header):
                    seen = set()
                    name = next(n for n in header if n in seen or seen.add(n))
                    raise DataError(f"{path}:{start}: column {name!r} appears twice")
            elif len(fields) != len(header):
                where = f"{path}:{start}: {len(fields)} fields, the header has {len(header)}"
                if bad is None:
                    raise DataError(where)
                bad.report("record with a wrong number of fields", where)
            else:
                rows.append(fields)
                lines.append(start)
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed {what}: {e}") from None
    if header is None:
        raise DataError(f"{path}: empty {what} (no header line)")
    return pd.DataFrame(rows, columns=header, dtype=object), np.asarray(lines, np.int64)


# What reading a damaged .npz raises besides OSError/ValueError: a bad or truncated archive,
# a bad CRC, a corrupted deflate stream, a flipped compression-method or encryption flag.
NPZ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,
    RuntimeError,
)


def read_npz_arrays(path, problem="cannot read npz") -> dict[str, np.ndarray]:
    """All arrays of the .npz at `path` (no pickle).

    Args:
        path: The file.
        problem: Start of the message when it cannot be read, e.g. "not a kpartial simulation
            file".

    Raises:
        DataError: ``"<path>: <problem>: <why>"`` for a missing, empty, non-zip or damaged file.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise DataError(f"{path}: {problem}: {e}") from None
    # np.load would read any other content as .npy or pickle and blame pickling.
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DataError(f"{path}: {problem}: {'empty file' if not magic else 'not a zip archive'}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except NPZ_ERRORS as e:  # ValueError also covers object arrays, which would need pickle.
        raise DataError(f"{path}: {problem}: {type(e).__name__}: {e}") from None


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 text file, without line ends.

    Raises:
        DataError: Naming the file, if it cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def check_image(image, bad: BadInput, where) -> bool:
    """True if `image` is a non-empty file; otherwise reports it to `bad` and returns False."""
    if not os.path.isfile(image):
        bad.report("missing image file", f"{where}: {image}")
        return False
    if os.path.getsize(image) == 0:
        bad.report("empty image file", f"{where}: {image}")
        return False
    return True
