"""Mulan multi-label datasets: an ARFF file plus an XML file naming the label attributes."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET

from kpartial.data.arff import checked_labelled_data, read_arff
from kpartial.data.container import BadInput, DataError, MultiLabelData

_SPLIT_SUFFIX = re.compile(r"-(?:train|test).*$", re.IGNORECASE)


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


def read_mulan(path, xml_path=None, *, on_bad_input="error") -> MultiLabelData:
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
        on_bad_input: ``"error"`` raises on the first bad row; ``"skip"``
            drops rows with a missing (``?``) or non-finite feature value
            (NaN, inf, or beyond float32) or a label value other than 1, 0,
            ``?``, and counts them in ``skipped``.

    Raises:
        DataError: On missing files, malformed lines, XML labels absent from
            the ARFF, or (``"error"``) a bad row. Messages name the file and
            line.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    bad = BadInput(on_bad_input)
    if xml_path is None:
        xml_path = _default_xml_path(path)
    xml_path = os.path.abspath(os.path.expanduser(os.fspath(xml_path)))
    if not os.path.isfile(xml_path):
        raise DataError(f"{path}: Mulan label file {xml_path} not found (pass xml_path)")
    label_names = _read_label_names(xml_path)
    lines, attrs, start = read_arff(path)
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

    return checked_labelled_data(lines, start, attrs, path, label_cols, feature_cols, bad, "mulan")
