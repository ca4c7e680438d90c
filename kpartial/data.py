"""Readers that load multi-label datasets into one in-memory structure.

Every reader returns a :class:`MultiLabelData` whose labels are int8 with
``+1`` (positive), ``-1`` (negative) and ``0`` (unknown). Readers are looked up
by format name in :data:`READERS`, which other modules may extend::

    data = load(*parse_data_spec("mulan:/data/yeast/yeast-train.arff"))
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import importlib
import inspect
import io
import json
import math
import os
import re
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from kpartial.sparse_labels import SparseLabels, as_dense

POSITIVE, NEGATIVE, UNKNOWN = 1, -1, 0
_LABEL_VALUES = (POSITIVE, NEGATIVE, UNKNOWN)


class DataError(ValueError):
    """Bad input; message names the file and (where applicable) the line/row.

    The message is kept on one line: some embed a library's error text, and pandas ends its
    parser errors with a newline.
    """

    def __init__(self, message=""):
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


ON_BAD_INPUT = ("error", "skip")


class BadInput:
    """What a reader does with a bad record: raise (policy "error") or count and drop ("skip").

    Readers call `report(reason, where)` for each bad record and keep going only if it returns;
    `counts` (reason -> number skipped) ends up in `MultiLabelData.skipped`, and runs print it.
    """

    def __init__(self, policy="error"):
        if policy not in ON_BAD_INPUT:
            raise DataError(f"on_bad_input must be one of {ON_BAD_INPUT}, got {policy!r}")
        self.policy = policy
        self.counts: dict[str, int] = {}

    def report(self, reason, where, count=1):
        """Raises DataError("<where>: <reason>") unless skipping; then counts `count` records."""
        if self.policy == "error":
            hint = "" if count == 1 else f" ({count} such records)"
            raise DataError(f"{where}: {reason}{hint} (on_bad_input=skip drops and counts them)")
        self.counts[reason] = self.counts.get(reason, 0) + int(count)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: ndarray fields make == ambiguous.
class MultiLabelData:
    """A multi-label dataset held in memory.

    Attributes:
        labels: int8 array [N, C] with values in {1, -1, 0}, or `SparseLabels` holding only the
            known entries (readers of large datasets use it; see `dense_labels`).
        label_names: One name per class (length C).
        features: float32 array [N, D] for feature data, else None.
        image_paths: Absolute image paths (length N) for image data, else None.
        source: Where the data came from, e.g. ``"mulan:/path/file.arff"``.
        skipped: Reason -> number of records the reader dropped under ``on_bad_input="skip"``.
        records: ``(folder, shard names)`` of TFRecords holding the encoded images, for image
            data streamed from records rather than read from paths (see kpartial.tfrecords).
    """

    labels: np.ndarray | SparseLabels
    label_names: tuple[str, ...]
    features: np.ndarray | None = None
    image_paths: tuple[str, ...] | None = None
    source: str = ""
    skipped: dict = dataclasses.field(default_factory=dict)
    records: tuple | None = None

    def __post_init__(self):
        # Frozen, so normalised values are stored with object.__setattr__.
        set_ = lambda name, value: object.__setattr__(self, name, value)
        set_("labels", _check_labels(self.labels, self.source))
        n, c = self.labels.shape
        set_("label_names", tuple(str(name) for name in self.label_names))
        if len(self.label_names) != c:
            raise DataError(f"{self.source}: {len(self.label_names)} label names for {c} classes")
        if len(set(self.label_names)) != c:
            # Checked here so that every reader is covered: two columns with one name would be
            # merged or confused by anything that looks classes up by name (stats, exports).
            first = {}
            for k, name in enumerate(self.label_names):
                if name in first:
                    raise DataError(
                        f"{self.source}: duplicate class name {name!r} (classes {first[name]} "
                        f"and {k}, 0-based)"
                    )
                first[name] = k
        if self.features is not None:
            features = np.asarray(self.features)
            if features.ndim != 2 or features.shape[0] != n:
                raise DataError(
                    f"{self.source}: features shape {features.shape} does not match {n} examples"
                )
            if features.dtype.kind not in "biuf":
                raise DataError(f"{self.source}: features must be numeric, got {features.dtype}")
            set_("features", features.astype(np.float32, copy=False))
        if isinstance(self.image_paths, np.ndarray):  # large datasets: one array, not N objects
            set_("image_paths", self.image_paths.astype(str, copy=False))
        elif self.image_paths is not None:
            set_("image_paths", tuple(str(p) for p in self.image_paths))
            if len(self.image_paths) != n:
                raise DataError(
                    f"{self.source}: {len(self.image_paths)} image paths for {n} examples"
                )

    @property
    def num_examples(self) -> int:
        """Number of examples N."""
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return int(self.labels.shape[1])

    @property
    def num_known(self) -> int:
        """Number of known (non-zero) label entries."""
        if isinstance(self.labels, SparseLabels):
            return self.labels.num_known
        return int(np.count_nonzero(self.labels))

    def dense_labels(self) -> np.ndarray:
        """Labels as an int8 [N, C] array (builds it for sparse labels)."""
        return as_dense(self.labels)

    def take(self, rows, source=None) -> MultiLabelData:
        """The examples at `rows` (int indices), in that order."""
        rows = np.asarray(rows, np.int64)
        labels = (
            self.labels.take_rows(rows)
            if isinstance(self.labels, SparseLabels)
            else self.labels[rows]
        )
        return dataclasses.replace(
            self,
            labels=labels,
            features=None if self.features is None else self.features[rows],
            image_paths=None
            if self.image_paths is None
            else np.asarray(self.image_paths)[rows]
            if isinstance(self.image_paths, np.ndarray)
            else tuple(self.image_paths[r] for r in rows),
            source=source or self.source,
        )

    def take_classes(self, columns) -> MultiLabelData:
        """The classes at `columns` (int indices), in that order."""
        columns = np.asarray(columns, np.int64)
        labels = self.labels
        return dataclasses.replace(
            self,
            labels=labels.take_classes(columns)
            if isinstance(labels, SparseLabels)
            else labels[:, columns],
            label_names=tuple(self.label_names[k] for k in columns),
        )

    def with_skipped(self, counts: dict) -> MultiLabelData:
        """A copy whose `skipped` also counts `counts` (reason -> records)."""
        merged = dict(self.skipped)
        for reason, count in counts.items():
            merged[reason] = merged.get(reason, 0) + count
        return dataclasses.replace(self, skipped=merged)

    def with_labels(self, labels) -> MultiLabelData:
        """Returns a copy with ``labels`` replaced.

        Args:
            labels: Integer array of the same [N, C] shape, values in {1, -1, 0}.

        Raises:
            DataError: If the shape, dtype or values are wrong.
        """
        if not isinstance(labels, SparseLabels):
            labels = np.asarray(labels)
        if labels.shape != self.labels.shape:
            raise DataError(
                f"{self.source}: new labels have shape {labels.shape}, expected {self.labels.shape}"
            )
        return dataclasses.replace(self, labels=labels)


def _check_labels(labels, source: str) -> np.ndarray | SparseLabels:
    if isinstance(labels, SparseLabels):
        return labels  # validated on construction
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise DataError(f"{source}: labels must be 2-D [N, C], got shape {labels.shape}")
    if labels.dtype.kind not in "iu":  # bool rejected: False would silently mean "unknown".
        raise DataError(f"{source}: labels must be an integer array, got {labels.dtype}")
    bad = ~np.isin(labels, _LABEL_VALUES)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise DataError(
            f"{source}: label values must be in {{1, -1, 0}}; "
            f"row {row} (0-based) has {labels[row][bad[row]][0]}"
        )
    return labels.astype(np.int8, copy=False)


# ----------------------------------------------------------------------------
# Dispatch.


def parse_data_spec(spec: str) -> tuple[str, str]:
    """Splits a ``"FMT:PATH"`` spec into ``(fmt, path)``.

    Args:
        spec: Format name, a colon, then the path (split at the first colon).

    Raises:
        DataError: If there is no colon, the path is empty or FMT is unknown.
    """
    fmt, sep, path = spec.partition(":")
    fmt = fmt.strip().lower()
    if not sep or not path:
        raise DataError(
            f"data spec {spec!r} must look like FMT:PATH with FMT one of {_known_formats()}"
        )
    if fmt not in READERS:
        raise DataError(
            f"data spec {spec!r}: unknown format {fmt!r}; known formats: {_known_formats()}"
        )
    return fmt, path


def load(fmt: str, path: str, on_bad_input: str = "error", **options) -> MultiLabelData:
    """Loads a dataset with the reader registered for ``fmt``.

    After reading, rows without any known label and classes without any known label are bad
    input: an error naming the first one, or with ``on_bad_input="skip"`` dropped and counted in
    ``MultiLabelData.skipped``.

    Args:
        fmt: Key of :data:`READERS` (looked up at call time, so later
            registrations are honoured).
        path: Passed to the reader.
        on_bad_input: ``"error"`` or ``"skip"``; passed on to readers that take it.
        **options: Reader-specific keyword arguments.

    Raises:
        DataError: If ``fmt`` is unknown, an option is not accepted by the
            reader, or the reader rejects the data.
    """
    reader = reader_for(fmt, path)
    bad = BadInput(on_bad_input)
    if "on_bad_input" in inspect.signature(reader).parameters:
        options = {**options, "on_bad_input": on_bad_input}
    try:
        inspect.signature(reader).bind(path, **options)
    except TypeError as e:  # Checked up front so TypeErrors inside readers are not masked.
        raise DataError(f"format {fmt!r} ({path}): bad options {sorted(options)}: {e}") from None
    data = drop_unlabelled(reader(path, **options), bad)
    if data.num_examples == 0 or data.num_classes == 0:
        # Nothing to train or evaluate on: say so here, not as a shape error deep in training.
        what = "examples" if data.num_examples == 0 else "classes"
        skipped = f" after skipping {data.skipped}" if data.skipped else ""
        raise DataError(f"{data.source or f'{fmt}:{path}'}: no {what}{skipped}")
    return data


def reader_for(fmt: str, path: str = "") -> Callable[..., MultiLabelData]:
    """The reader function of ``fmt`` (imports lazily registered ``"module:function"`` entries)."""
    reader = READERS.get(fmt)
    if reader is None:
        raise DataError(
            f"unknown data format {fmt!r} for {path}; known formats: {_known_formats()}"
        )
    if isinstance(reader, str):
        module, _, name = reader.partition(":")
        reader = getattr(importlib.import_module(module), name)
    return reader


def drop_unlabelled(data: MultiLabelData, bad: BadInput) -> MultiLabelData:
    """Reports rows and classes without any known label to `bad`, and drops them when skipping."""
    labels = data.labels
    if isinstance(labels, SparseLabels):
        row_known = labels.row_lengths() > 0
        class_known = (labels.positives_per_class() + labels.negatives_per_class()) > 0
    else:
        row_known = (labels != 0).any(axis=1)
        class_known = (labels != 0).any(axis=0)
    if not class_known.all():
        empty = np.flatnonzero(~class_known)
        bad.report(
            "class without any known label (empty class)",
            f"{data.source}: class {data.label_names[empty[0]]!r}",
            count=empty.size,
        )
        data = data.take_classes(np.flatnonzero(class_known))
        return drop_unlabelled(data, bad)  # dropping classes can leave rows without labels
    if not row_known.all():
        empty = np.flatnonzero(~row_known)
        bad.report(
            "row without any known label",
            f"{data.source}: row {empty[0]} (0-based example)",
            count=empty.size,
        )
        data = data.take(np.flatnonzero(row_known))
    return data.with_skipped(bad.counts) if bad.counts else data


def verify_images(data: MultiLabelData, on_bad_input: str = "error", threads: int = 8):
    """Decodes every image of `data` once (Pillow), so a corrupt file is named before training.

    TensorFlow's decoder fails mid-epoch without the file's name; this check reports a missing,
    empty, truncated or non-image file as bad input (error naming the file, or dropped and counted
    under "skip"). Feature data and TFRecord data are returned unchanged.
    """
    if data.image_paths is None:
        return data
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def problem(path):
        try:
            with Image.open(path) as image:
                image.load()  # full decode: truncated files fail here
            return None
        except FileNotFoundError:
            return "missing image file"
        except Exception as e:  # Pillow raises many types for damaged files  # noqa: BLE001
            return f"corrupt image ({type(e).__name__}: {e})"

    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(problem, data.image_paths))
    bad_rows = [r for r, p in enumerate(problems) if p]
    if not bad_rows:
        return data
    bad = BadInput(on_bad_input)
    for row in bad_rows:
        reason = problems[row].split(" (")[0]
        bad.report(
            reason, f"{data.image_paths[row]} ({data.source}, example {row}): {problems[row]}"
        )
    keep = np.setdiff1d(np.arange(data.num_examples), bad_rows)
    return data.take(keep).with_skipped(bad.counts)


def split(data: MultiLabelData, test_fraction: float, seed: int):
    """(train, test): a seeded random split of the examples, test getting ``test_fraction``."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(data.num_examples)
    num_test = int(round(test_fraction * data.num_examples))
    if num_test == 0 or num_test == data.num_examples:
        raise DataError(
            f"{data.source}: test_fraction {test_fraction} of {data.num_examples} examples "
            "leaves an empty split"
        )
    tag = f"split seed {seed}, test fraction {test_fraction}"
    train = data.take(np.sort(order[num_test:]), f"{data.source} ({tag}: train)")
    # Records skipped while reading the one file are counted once, with the training part.
    test = dataclasses.replace(
        data.take(np.sort(order[:num_test]), f"{data.source} ({tag}: test)"), skipped={}
    )
    return train, test


def _known_formats() -> str:
    return ", ".join(sorted(READERS))


# ----------------------------------------------------------------------------
# CSV tables (manifest, MoleculeNet, class statistics).


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


# ----------------------------------------------------------------------------
# Mulan: ARFF + XML label file.

_SPLIT_SUFFIX = re.compile(r"-(?:train|test).*$", re.IGNORECASE)
# One comma-separated token: quoted ('...' or "..." with backslash escapes) or bare.
_TOKEN = re.compile(r"""\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,'"]*?)\s*(,|$)""", re.DOTALL)
_SPARSE_ENTRY = re.compile(
    r"""\s*(\d+)\s+('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,'"\s]+)\s*(,|$)""", re.DOTALL
)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}
_NUMERIC_TYPES = ("numeric", "real", "integer")


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), token[1:-1])
    return token


def _split_tokens(text: str) -> list[str]:
    """Splits on commas outside quotes, strips whitespace and quotes."""
    if "'" not in text and '"' not in text:
        return [t.strip() for t in text.split(",")]
    out, pos = [], 0
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"malformed quoting near {text[pos : pos + 40]!r}")
        out.append(_unquote(m.group(1)))
        if not m.group(2):
            return out
        pos = m.end()


def _split_sparse_quoted(body: str) -> tuple[list[int], list[str]]:
    """Splits a sparse row body holding quoted values into indices and tokens."""
    idx, toks, pos = [], [], 0
    while body[pos:].strip():
        m = _SPARSE_ENTRY.match(body, pos)
        if m is None:
            raise ValueError(f"malformed sparse entry near {body[pos : pos + 40]!r}")
        idx.append(int(m.group(1)))
        toks.append(_unquote(m.group(2)))
        pos = m.end()
        if not m.group(3):
            break
    return idx, toks


def _parse_name(text: str) -> tuple[str, str]:
    """Splits ``NAME REST`` where NAME may be quoted; returns (name, rest)."""
    if text[:1] in "'\"":
        m = re.match(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""", text)
        if m is None:
            raise ValueError("unterminated quoted name")
        return _unquote(m.group(0)), text[m.end() :].strip()
    if not text:
        raise ValueError("missing attribute name")
    name, *rest = text.split(None, 1)
    return name, rest[0].strip() if rest else ""


@dataclasses.dataclass
class _Attribute:
    name: str
    nominal: tuple[str, ...] | None  # None for numeric attributes.


def _parse_arff_header(lines: Sequence[str], path: str) -> tuple[list[_Attribute], int]:
    """Returns the attributes and the index of the first line after ``@data``."""
    attrs: list[_Attribute] = []
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        keyword, *rest = line.split(None, 1)
        keyword, rest = keyword.lower(), rest[0] if rest else ""
        if keyword == "@data":
            return attrs, i + 1
        if keyword == "@relation":
            continue
        if keyword != "@attribute":
            raise DataError(f"{path}:{i + 1}: unexpected header line {line[:60]!r}")
        try:
            name, type_ = _parse_name(rest)
            if type_.startswith("{"):
                if not type_.endswith("}"):
                    raise ValueError("unterminated nominal value list")
                nominal = tuple(_split_tokens(type_[1:-1]))
            elif type_.lower() in _NUMERIC_TYPES:
                nominal = None
            else:
                raise ValueError(
                    f"unsupported attribute type {type_!r} (need numeric/real/integer or {{...}})"
                )
        except ValueError as e:
            raise DataError(f"{path}:{i + 1}: bad @attribute line: {e}") from None
        if not name:
            raise DataError(f"{path}:{i + 1}: empty attribute name")
        attrs.append(_Attribute(name, nominal))
    raise DataError(f"{path}: no @data section")


def _read_label_names(xml_path: str) -> list[str]:
    """All ``<label name=...>`` names in document order, nested ones included."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError, LookupError) as e:  # LookupError: unknown declared encoding
        raise DataError(f"{xml_path}: cannot read Mulan label XML: {e}") from None
    names = [el.get("name") for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "label"]
    if any(n is None for n in names):
        raise DataError(f"{xml_path}: <label> element without a name attribute")
    if not names:
        raise DataError(f"{xml_path}: no <label> elements")
    if len(set(names)) != len(names):
        # Mulan itself rejects a repeated label; merging it would hide an edited or broken file.
        seen = set()
        name = next(n for n in names if n in seen or seen.add(n))
        raise DataError(f"{xml_path}: label {name!r} is listed twice")
    return names


def _default_xml_path(arff_path: str) -> str:
    directory, base = os.path.split(arff_path)
    stem = _SPLIT_SUFFIX.sub("", os.path.splitext(base)[0])
    return os.path.join(directory, stem + ".xml")


def read_mulan(path, xml_path=None) -> MultiLabelData:
    """Reads a Mulan dataset: an ARFF file plus its XML label file.

    Label attributes are those named in the XML; all others are features
    (numeric values as floats, nominal values as their index in the nominal
    list). Dense and sparse (``{index value, ...}``) rows are supported; in
    sparse rows omitted entries take internal value 0 (numeric 0, first
    nominal value), as in Weka. Labels ``1`` -> +1, ``0`` -> -1, ``?`` -> 0.
    Classes keep the ARFF attribute order.

    Args:
        path: The ARFF file.
        xml_path: The label XML. Default: next to ``path``, with a
            ``-train``/``-test`` suffix (and anything after it) removed from
            the stem, e.g. ``Corel5k-train-sparse.arff`` -> ``Corel5k.xml``.

    Raises:
        DataError: On missing files, malformed lines, missing or non-finite
            feature values, bad label values, or XML labels absent from the
            ARFF. Messages name the file and line.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if xml_path is None:
        xml_path = _default_xml_path(path)
    xml_path = os.path.abspath(os.path.expanduser(os.fspath(xml_path)))
    if not os.path.isfile(xml_path):
        raise DataError(f"{path}: Mulan label file {xml_path} not found (pass xml_path)")
    label_names = _read_label_names(xml_path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ARFF file: {e}") from None

    attrs, start = _parse_arff_header(lines, path)
    index = {}
    for j, attr in enumerate(attrs):
        if attr.name in index:
            raise DataError(f"{path}: duplicate attribute name {attr.name!r}")
        index[attr.name] = j
    missing = [n for n in label_names if n not in index]
    if missing:
        raise DataError(
            f"{path}: {len(missing)} labels from {xml_path} are not ARFF attributes: {missing[:10]}"
        )
    label_set = set(label_names)
    label_cols = [j for j, a in enumerate(attrs) if a.name in label_set]
    feature_cols = [j for j, a in enumerate(attrs) if a.name not in label_set]

    with np.errstate(over="ignore"):  # Overflow becomes inf, reported below with its line.
        values, line_numbers = _parse_arff_rows(lines, start, attrs, path)
    features = np.ascontiguousarray(values[:, feature_cols])
    bad = ~np.isfinite(features)
    if bad.any():
        row, col = (int(k) for k in np.argwhere(bad)[0])
        raise DataError(
            f"{path}:{line_numbers[row]}: missing or non-finite value for feature "
            f"{attrs[feature_cols[col]].name!r}"
        )
    labels = np.empty((len(values), len(label_cols)), np.int8)
    for k, j in enumerate(label_cols):
        labels[:, k] = _decode_label_column(values[:, j], attrs[j], path, line_numbers)
    return MultiLabelData(
        labels=labels,
        label_names=tuple(attrs[j].name for j in label_cols),
        features=features,
        source=f"mulan:{path}",
    )


def _decode_label_column(
    column: np.ndarray, attr: _Attribute, path: str, line_numbers
) -> np.ndarray:
    """Maps internal values (numeric value or nominal index; NaN = '?') to +1/-1/0."""
    invalid = 2
    known = ~np.isnan(column)
    if attr.nominal is None:
        mapped = np.select(
            [column == 1, column == 0, ~known], [POSITIVE, NEGATIVE, UNKNOWN], invalid
        )
    else:
        codes = {"1": POSITIVE, "0": NEGATIVE}
        table = np.array([codes.get(v, invalid) for v in attr.nominal] + [UNKNOWN], np.int8)
        mapped = table[np.where(known, column, len(attr.nominal)).astype(np.int64)]
    bad = np.flatnonzero(mapped == invalid)
    if bad.size:
        row = int(bad[0])
        value = column[row] if attr.nominal is None else attr.nominal[int(column[row])]
        raise DataError(
            f"{path}:{line_numbers[row]}: label {attr.name!r} has value {value!r}; "
            "expected 1, 0 or ?"
        )
    return mapped.astype(np.int8)


def _converter(attr: _Attribute) -> Callable[[str], float]:
    """Token -> internal value (float, nominal index, NaN for '?'); raises KeyError/ValueError."""
    if attr.nominal is None:
        return lambda token: math.nan if token == "?" else float(token)
    lookup = {v: float(k) for k, v in enumerate(attr.nominal)}
    lookup.setdefault("?", math.nan)
    return lookup.__getitem__


def _parse_arff_rows(lines, start, attrs, path) -> tuple[np.ndarray, list[int]]:
    """Parses data lines into a float32 [N, A] array of internal values."""
    data_lines = [
        (i + 1, line)
        for i, raw in enumerate(lines[start:], start)
        if (line := raw.strip()) and not line.startswith("%")
    ]
    num_attrs = len(attrs)
    convs = [_converter(a) for a in attrs]
    # float32 holds nominal indices exactly and makes float32 overflow show up as inf.
    values = np.zeros((len(data_lines), num_attrs), np.float32)
    for r, (lineno, line) in enumerate(data_lines):
        try:
            if line.startswith("{"):
                if not line.endswith("}"):
                    raise ValueError("sparse row does not end with '}'")
                body = line[1:-1]
                if "'" in body or '"' in body:
                    idx, toks = _split_sparse_quoted(body)
                else:  # Fast path: no quotes, so values contain no spaces or commas.
                    flat = body.replace(",", " ").split()
                    if len(flat) % 2:
                        raise ValueError("sparse entries must be 'index value'")
                    idx = [int(t) for t in flat[0::2]]
                    toks = flat[1::2]
                if idx and (min(idx) < 0 or max(idx) >= num_attrs):
                    raise ValueError(f"sparse index out of range 0..{num_attrs - 1}")
                if len(set(idx)) != len(idx):  # else the last value would win silently
                    raise ValueError("sparse index repeated")
                try:
                    values[r, idx] = [convs[j](t) for j, t in zip(idx, toks)]
                except (KeyError, ValueError):
                    j, t = next((j, t) for j, t in zip(idx, toks) if not _converts(convs[j], t))
                    raise ValueError(f"bad value {t!r} for attribute {attrs[j].name!r}") from None
            else:
                toks = _split_tokens(line)
                if len(toks) != num_attrs:
                    raise ValueError(f"expected {num_attrs} values, got {len(toks)}")
                try:
                    values[r] = [conv(t) for conv, t in zip(convs, toks)]
                except (KeyError, ValueError):
                    j = next(j for j, t in enumerate(toks) if not _converts(convs[j], t))
                    raise ValueError(
                        f"bad value {toks[j]!r} for attribute {attrs[j].name!r}"
                    ) from None
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: {e}") from None
    return values, [n for n, _ in data_lines]


def _converts(conv, token) -> bool:
    try:
        conv(token)
        return True
    except (KeyError, ValueError):
        return False


# ----------------------------------------------------------------------------
# npz.

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
    bad = ~np.isin(y, _LABEL_VALUES)  # NaN is never in the set.
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
            f"{path}: x has NaN/inf (or float32 overflow) in row {int(np.argwhere(bad)[0, 0])} (0-based)"
        )
    num_classes = y.shape[1]
    if "label_names" in arrays:
        names = arrays["label_names"]
        if names.ndim != 1 or len(names) != num_classes or names.dtype.kind not in "US":
            raise DataError(
                f"{path}: label_names must be {num_classes} strings, got {names.dtype} {names.shape}"
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


# ----------------------------------------------------------------------------
# COCO instances json.

_COCO_NAME = re.compile(r"^instances_(.+)\.json$")


def read_coco(path, image_dir=None, on_bad_input="error") -> MultiLabelData:
    """Reads image-level labels from a COCO ``instances_*.json``.

    Classes are the categories sorted by id. A class is +1 for an image with
    any annotation of it and -1 otherwise (COCO is exhaustively annotated).
    Examples are all images, ordered by image id.

    Args:
        path: The ``instances_<split>.json`` file.
        image_dir: Folder holding the images. Default: ``<json dir>/../<split>``.
        on_bad_input: "error", or "skip" to drop (and count) annotations naming an unknown
            image or category id and images whose file is missing.

    Raises:
        DataError: On a missing image file, or an annotation naming an unknown
            image or category id; messages name the json.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if image_dir is None:
        m = _COCO_NAME.match(os.path.basename(path))
        if m is None:
            raise DataError(
                f"{path}: cannot derive the split from a name not like instances_<split>.json; "
                "pass image_dir"
            )
        image_dir = os.path.join(os.path.dirname(path), os.pardir, m.group(1))
    image_dir = os.path.abspath(os.path.expanduser(os.fspath(image_dir)))
    try:
        with open(path, encoding="utf-8") as f:
            coco = json.load(f)
        images = sorted(coco["images"], key=lambda im: im["id"])
        categories = sorted(coco["categories"], key=lambda c: c["id"])
        annotations = coco.get("annotations", [])
        image_row = {im["id"]: r for r, im in enumerate(images)}
        cat_col = {c["id"]: k for k, c in enumerate(categories)}
        names = tuple(c["name"] for c in categories)
        files = [im["file_name"] for im in images]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read COCO json: {e}") from None
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not a COCO instances file (missing or bad field {e})") from None
    if len(image_row) != len(images) or len(cat_col) != len(categories):
        raise DataError(f"{path}: duplicate image or category ids")
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise DataError(
            f"{path}: not a COCO instances file ('annotations' is not a list of objects)"
        )
    for what, values in (("image file_name", files), ("category name", names)):
        k = next((k for k, v in enumerate(values) if not isinstance(v, str)), None)
        if k is not None:  # str() would make a name of null or a number silently
            raise DataError(f"{path}: {what} {values[k]!r} (entry {k} in id order) is not a string")

    def lookup(ids, key):
        try:
            return ids.get(key)
        except TypeError:  # an unhashable id (a list or an object) is no known id
            return None

    bad = BadInput(on_bad_input)
    labels = np.full((len(images), len(categories)), NEGATIVE, np.int8)
    for ann in annotations:
        row = lookup(image_row, ann.get("image_id"))
        col = lookup(cat_col, ann.get("category_id"))
        if row is None or col is None:
            what = "image_id" if row is None else "category_id"
            bad.report(
                f"annotation refers to an unknown {what}",
                f"{path}: annotation {ann.get('id')} ({what} {ann.get(what)!r})",
            )
            continue
        labels[row, col] = POSITIVE
    image_paths = tuple(os.path.join(image_dir, f) for f in files)
    present = np.array([os.path.isfile(p) for p in image_paths], bool)
    for row in np.flatnonzero(~present):
        bad.report("missing image file", f"image file {image_paths[row]} listed in {path}")
    return MultiLabelData(
        labels=labels[present],
        label_names=names,
        image_paths=tuple(p for p, ok in zip(image_paths, present) if ok),
        source=f"coco:{path}",
        skipped=bad.counts,
    )


def read_synthetic(path="train", **options) -> MultiLabelData:
    """The embedded demo dataset: ``synthetic:train`` or ``synthetic:test`` (see kpartial.synthetic)."""
    from kpartial import synthetic  # imported here: synthetic builds on this module

    if path not in ("train", "test"):
        raise DataError(f"synthetic:{path}: the split must be 'train' or 'test'")
    return synthetic.make_imbalanced_features(split=path, **options)


# Format name -> reader, or "module:function" for readers imported on first use.
READERS: dict[str, Callable[..., MultiLabelData] | str] = {
    "mulan": read_mulan,
    "npz": read_npz,
    "coco": read_coco,
    "synthetic": read_synthetic,
    "openimages": "kpartial.readers.openimages:read_openimages",
    "voc": "kpartial.readers.voc:read_voc",
    "nuswide": "kpartial.readers.nuswide:read_nuswide",
    "cub": "kpartial.readers.cub:read_cub",
    "meka": "kpartial.readers.meka:read_meka",
    "moleculenet": "kpartial.readers.moleculenet:read_moleculenet",
    "manifest": "kpartial.readers.manifest:read_manifest",
    "tfrecord": "kpartial.tfrecords:read_tfrecords",
}
