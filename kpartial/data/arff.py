"""The ARFF parser that the Mulan and MEKA readers share: header, dense and sparse rows, labels.

Values are held as float32 "internal values": numbers as themselves, nominal values as their index
in the attribute's nominal list, ``?`` as NaN.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from kpartial.data.container import (
    NEGATIVE,
    POSITIVE,
    UNKNOWN,
    DataError,
    MultiLabelData,
    row_reporter,
)

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
class Attribute:
    name: str
    nominal: tuple[str, ...] | None  # None for numeric attributes.


def parse_header(lines: Sequence[str], path: str) -> tuple[list[Attribute], int]:
    """Returns the attributes and the index of the first line after ``@data``."""
    attrs: list[Attribute] = []
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
        attrs.append(Attribute(name, nominal))
    raise DataError(f"{path}: no @data section")


def read_arff(path: str, what: str = "ARFF file") -> tuple[list[str], list[Attribute], int]:
    """(lines, attributes, index of the first line after ``@data``) of the ARFF file `path`.

    Raises:
        DataError: ``"<path>: cannot read <what>: ..."`` or a malformed header line.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read {what}: {e}") from None
    attrs, start = parse_header(lines, path)
    return lines, attrs, start


def valid_label(column: np.ndarray, attr: Attribute) -> np.ndarray:
    """Whether each internal value (number, nominal index, NaN = '?') is 1, 0 or '?'."""
    if attr.nominal is None:
        return np.isnan(column) | (column == 0) | (column == 1)
    allowed = np.array([v in ("0", "1") for v in attr.nominal] + [True])
    return allowed[np.where(np.isnan(column), len(attr.nominal), column).astype(np.int64)]


def bad_label(value, attr: Attribute) -> str:
    """Why the internal value `value` of label `attr` (not 1, 0 or '?') is bad input."""
    token = str(value) if attr.nominal is None else attr.nominal[int(value)]
    return f"label {attr.name!r} has value {token!r}; expected 1, 0 or ?"


def decode_label_column(column: np.ndarray, attr: Attribute, path: str, line_numbers) -> np.ndarray:
    """Maps internal values (numeric value or nominal index; NaN = '?') to +1/-1/0.

    Raises:
        DataError: Naming the file and line of the first value other than 1, 0 or '?'.
    """
    valid = valid_label(column, attr)
    if not valid.all():
        row = int(np.argmin(valid))
        raise DataError(f"{path}:{line_numbers[row]}: {bad_label(column[row], attr)}")
    if attr.nominal is not None:  # nominal index -> the number it names ('?' stays NaN)
        numbers = np.array([float(v) if v in ("0", "1") else math.nan for v in attr.nominal])
        column = np.append(numbers, math.nan)[
            np.where(np.isnan(column), len(attr.nominal), column).astype(np.int64)
        ]
    return np.select([column == 1, column == 0], [POSITIVE, NEGATIVE], UNKNOWN).astype(np.int8)


def labelled_data(values, attrs, label_cols, feature_cols, path, line_numbers, **fields):
    """`MultiLabelData` of parsed rows: the label columns decoded (see `decode_label_column`),
    the other columns as features; `fields` (source, skipped) are passed on."""
    labels = np.empty((len(values), len(label_cols)), np.int8)
    for k, j in enumerate(label_cols):
        labels[:, k] = decode_label_column(values[:, j], attrs[j], path, line_numbers)
    return MultiLabelData(
        labels=labels,
        label_names=tuple(attrs[j].name for j in label_cols),
        features=np.ascontiguousarray(values[:, feature_cols]),
        **fields,
    )


def _converter(attr: Attribute) -> Callable[[str], float]:
    """Token -> internal value (float, nominal index, NaN for '?'); raises KeyError/ValueError."""
    if attr.nominal is None:
        return lambda token: math.nan if token == "?" else float(token)
    lookup = {v: float(k) for k, v in enumerate(attr.nominal)}
    lookup.setdefault("?", math.nan)
    return lookup.__getitem__


def parse_rows(lines, start, attrs, path) -> tuple[np.ndarray, list[int]]:
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


def parse_checked_rows(lines, start, attrs, path, label_cols, feature_cols, bad):
    """`parse_rows`, then the rows with a missing or non-finite feature or an invalid label
    reported through `bad` (a `BadInput`): an error naming the file and line, or dropped and
    counted. Returns (values [rows kept, attrs], their line numbers)."""
    with np.errstate(over="ignore"):  # Overflow becomes inf, reported below with its line.
        values, line_numbers = parse_rows(lines, start, attrs, path)
    keep = np.ones(len(values), bool)
    finite = np.isfinite(values[:, feature_cols])
    report = row_reporter(bad, keep, lambda row: f"{path}:{line_numbers[row]}")
    report(
        ~finite.all(axis=1),
        lambda row: (
            "missing or non-finite value for feature "
            f"{attrs[feature_cols[int(np.argmin(finite[row]))]].name!r}"
        ),
    )
    for j in label_cols:
        # decode_label_column raises on the first invalid value; invalid rows go through `bad`
        # first so that "skip" can drop them.
        report(
            ~valid_label(values[:, j], attrs[j]),
            lambda row, j=j: bad_label(values[row, j], attrs[j]),
        )
    return values[keep], [n for n, k in zip(line_numbers, keep) if k]


def checked_labelled_data(lines, start, attrs, path, label_cols, feature_cols, bad, fmt):
    """The `MultiLabelData` of an ARFF body (`parse_checked_rows`, then `labelled_data`), its
    source named `fmt:path` and its skipped rows counted."""
    values, line_numbers = parse_checked_rows(
        lines, start, attrs, path, label_cols, feature_cols, bad
    )
    return labelled_data(
        values,
        attrs,
        label_cols,
        feature_cols,
        path,
        line_numbers,
        source=f"{fmt}:{path}",
        skipped=bad.counts,
    )


def _converts(conv, token) -> bool:
    try:
        conv(token)
        return True
    except (KeyError, ValueError):
        return False
