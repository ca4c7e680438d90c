"""COCO ``instances_*.json``: image-level labels from the object annotations."""

from __future__ import annotations

import json
import os
import re

import numpy as np

from kpartial.data.container import NEGATIVE, POSITIVE, BadInput, DataError, MultiLabelData

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
    bad = BadInput(on_bad_input)
    labels = _labels(annotations, image_row, cat_col, path, bad)
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


def _labels(annotations, image_row, cat_col, path, bad) -> np.ndarray:
    """int8 [images, categories]: +1 where an annotation names the pair, else -1."""
    labels = np.full((len(image_row), len(cat_col)), NEGATIVE, np.int8)
    for ann in annotations:
        row = _lookup(image_row, ann.get("image_id"))
        col = _lookup(cat_col, ann.get("category_id"))
        if row is None or col is None:
            what = "image_id" if row is None else "category_id"
            bad.report(
                f"annotation refers to an unknown {what}",
                f"{path}: annotation {ann.get('id')} ({what} {ann.get(what)!r})",
            )
            continue
        labels[row, col] = POSITIVE
    return labels


def _lookup(ids, key):
    try:
        return ids.get(key)
    except TypeError:  # an unhashable id (a list or an object) is no known id
        return None
