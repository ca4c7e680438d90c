"""Pascal VOC 2007/2012: image-level labels derived from the detection annotations."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np

from kpartial.data.container import NEGATIVE, POSITIVE, UNKNOWN, BadInput, DataError, MultiLabelData
from kpartial.data.files import check_image, read_lines

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
DIFFICULT = {"unknown": UNKNOWN, "positive": POSITIVE, "negative": NEGATIVE}


def read_voc(
    path, *, split="trainval", image_dir=None, difficult="unknown", on_bad_input="error"
) -> MultiLabelData:
    """Reads one split of Pascal VOC as 20-class image-level labels.

    A class is +1 for an image with a non-difficult object of it and -1 for an image with no
    object of it. A class whose only objects in the image are ``<difficult>1</difficult>`` gets
    the ``difficult`` value. Classes are the 20 VOC classes in alphabetical order
    (:data:`VOC_CLASSES`); examples follow the order of the split file.

    Args:
        path: The VOC year folder (e.g. ``VOCdevkit/VOC2007``) holding
            ``ImageSets/Main/<split>.txt`` (one image id per line), ``Annotations/<id>.xml`` and
            ``JPEGImages/<id>.jpg``; or a split file itself, whose year folder is then two levels
            above the file's folder (``split`` is not used then).
        split: Split file name without ``.txt`` under ``ImageSets/Main``, e.g. ``"train"``,
            ``"val"``, ``"trainval"`` or ``"test"``.
        image_dir: Folder holding ``<id>.jpg``. Default: ``<year folder>/JPEGImages``.
        difficult: Label of a class present only as difficult objects: ``"unknown"`` (0, as VOC
            evaluation ignores them), ``"positive"`` or ``"negative"``.
        on_bad_input: ``"error"`` raises on the first bad record; ``"skip"`` drops the image and
            counts it in ``MultiLabelData.skipped``.

    Raises:
        DataError: If the split file cannot be read or an option is invalid; and, unless
            skipping, on a malformed or duplicate split line, a missing or empty image, a missing
            or malformed annotation xml, or an object of an unknown class (the message names the
            split file and line, or the xml file).
    """
    if difficult not in DIFFICULT:
        raise DataError(f"difficult must be one of {sorted(DIFFICULT)}, got {difficult!r}")
    bad = BadInput(on_bad_input)
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if os.path.isfile(path):
        split_file = path
        root = os.path.normpath(os.path.join(os.path.dirname(path), os.pardir, os.pardir))
    else:
        root = path
        split_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if image_dir is None:
        image_dir = os.path.join(root, "JPEGImages")
    image_dir = os.path.abspath(os.path.expanduser(os.fspath(image_dir)))

    rows, image_paths, first_line = [], [], {}
    for lineno, line in enumerate(read_lines(split_file), 1):
        fields = line.split()
        where = f"{split_file}:{lineno}"
        if not fields:
            continue
        if len(fields) != 1:  # e.g. a per-class file like aeroplane_train.txt ("<id> <1|-1|0>").
            bad.report("malformed line (expected one image id)", where)
            continue
        image_id = fields[0]
        if image_id in first_line:
            bad.report("duplicate image id", f"{where} (first on line {first_line[image_id]})")
            continue
        first_line[image_id] = lineno
        image = os.path.join(image_dir, image_id + ".jpg")
        if not check_image(image, bad, where):
            continue
        xml_path = os.path.join(root, "Annotations", image_id + ".xml")
        row = _annotation_row(xml_path, DIFFICULT[difficult], bad, where)
        if row is not None:
            rows.append(row)
            image_paths.append(image)
    labels = np.stack(rows) if rows else np.zeros((0, len(VOC_CLASSES)), np.int8)
    return MultiLabelData(
        labels=labels,
        label_names=VOC_CLASSES,
        image_paths=tuple(image_paths),
        source=f"voc:{path}",
        skipped=bad.counts,
    )


def _annotation_row(xml_path, difficult_value, bad, where) -> np.ndarray | None:
    """The image's label row from its annotation xml, or None after reporting it as bad."""
    if not os.path.isfile(xml_path):
        bad.report("missing annotation file", f"{where}: {xml_path}")
        return None
    try:
        objects = ET.parse(xml_path).getroot().findall("object")
    except (OSError, ET.ParseError) as e:
        bad.report("malformed annotation xml", f"{xml_path} ({e})")
        return None
    easy = np.zeros(len(VOC_CLASSES), bool)
    hard = np.zeros(len(VOC_CLASSES), bool)
    for k, obj in enumerate(objects, 1):
        name = (obj.findtext("name") or "").strip()
        flag = obj.findtext("difficult")
        flag = "0" if flag is None else flag.strip()  # VOC2012 omits <difficult> on some objects.
        if name not in VOC_CLASSES:
            bad.report("unknown class", f"{xml_path}: object {k} has name {name!r}")
            return None
        if flag not in ("0", "1"):
            bad.report("malformed annotation xml", f"{xml_path}: object {k} difficult {flag!r}")
            return None
        (hard if flag == "1" else easy)[VOC_CLASSES.index(name)] = True
    row = np.full(len(VOC_CLASSES), NEGATIVE, np.int8)
    row[hard] = difficult_value
    row[easy] = POSITIVE  # one non-difficult object makes the class certain
    return row
