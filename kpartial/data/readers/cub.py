"""CUB-200-2011: the 312 binary bird attributes as multi-label targets, with certainties."""

from __future__ import annotations

import os

import numpy as np

from kpartial.data.container import NEGATIVE, POSITIVE, UNKNOWN, BadInput, DataError, MultiLabelData
from kpartial.data.files import check_image, read_lines

SPLITS = {"train": "1", "test": "0", "all": None}  # value in train_test_split.txt
NOT_VISIBLE = {"unknown": UNKNOWN, "negative": NEGATIVE}
_NOT_VISIBLE_CERTAINTY = 1  # certainty ids: 1 not visible, 2 guessing, 3 probably, 4 definitely


def read_cub(
    path,
    *,
    split="train",
    image_dir=None,
    min_certainty=3,
    not_visible="unknown",
    on_bad_input="error",
) -> MultiLabelData:
    """Reads one split of CUB-200-2011 with its 312 attributes as labels.

    An attribute annotated with certainty >= ``min_certainty`` is +1 if present and -1 if not;
    with lower certainty it is 0 (unknown), except certainty 1 (not visible), which maps per
    ``not_visible`` whatever ``is_present`` says. Attributes without an annotation line are 0.
    Classes are the attributes by id; examples follow ``images.txt``.

    Args:
        path: The ``CUB_200_2011`` folder holding ``images.txt`` (``<image_id> <relative
            path>``), ``train_test_split.txt`` (``<image_id> <1 train | 0 test>``),
            ``attributes/image_attribute_labels.txt`` (``<image_id> <attribute_id> <is_present>
            <certainty_id> <time>``, or 6 fields as on some published lines; the first four are
            used) and ``images/``. ``attributes.txt`` (``<attribute_id> <name>``) is looked for in
            this folder, in its ``attributes/`` folder and in its parent (where the published
            archive puts it), in that order.
        split: ``"train"``, ``"test"`` or ``"all"``.
        image_dir: Folder the paths in ``images.txt`` are relative to. Default: ``<path>/images``.
        min_certainty: 2, 3 or 4: the lowest certainty id trusted as a label (1 is governed by
            ``not_visible``).
        not_visible: ``"unknown"`` (0) or ``"negative"`` (-1) for certainty 1 (not visible).
        on_bad_input: ``"error"`` raises on the first bad record; ``"skip"`` drops it (an image,
            an attribute or one annotation line; conflicting annotations leave the entry unknown)
            and counts it in ``MultiLabelData.skipped``.

    Raises:
        DataError: If a file cannot be read, ``attributes.txt`` is not found or an option is
            invalid; and, unless skipping, on a malformed or duplicate line, an unknown image or
            attribute id, an image without a split entry, a missing or empty image, or one
            (image, attribute) annotated as both present and absent (the message names the file
            and line).
    """
    _check_options(split, min_certainty, not_visible)
    bad = BadInput(on_bad_input)
    root = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a folder; expected the CUB_200_2011 folder")
    if image_dir is None:
        image_dir = os.path.join(root, "images")
    image_dir = os.path.abspath(os.path.expanduser(os.fspath(image_dir)))

    names = _id_table(_attributes_file(root), bad)
    column = {a: k for k, a in enumerate(sorted((a for a in names if names[a]), key=int))}
    images_file = os.path.join(root, "images.txt")
    images = _id_table(images_file, bad)  # image id -> (line, relative path)
    selected = _select_split(root, images_file, images, split, bad)
    row_of, image_paths = {}, []
    for image_id in selected:
        lineno, rel = images[image_id]
        image = os.path.join(image_dir, *rel.split("/"))
        if check_image(image, bad, f"{images_file}:{lineno}"):
            row_of[image_id] = len(image_paths)
            image_paths.append(image)

    labels = _read_labels(
        os.path.join(root, "attributes", "image_attribute_labels.txt"),
        _label_values(min_certainty, not_visible),
        images,
        names,
        row_of,
        column,
        bad,
    )
    return MultiLabelData(
        labels=labels,
        label_names=tuple(names[a][1] for a in column),
        image_paths=tuple(image_paths),
        source=f"cub:{root}",
        skipped=bad.counts,
    )


def _check_options(split, min_certainty, not_visible):
    if split not in SPLITS:
        raise DataError(f"cub split must be one of {sorted(SPLITS)}, got {split!r}")
    if min_certainty not in (2, 3, 4):
        raise DataError(
            f"min_certainty must be 2, 3 or 4, got {min_certainty!r} (certainty 1, not visible, "
            "follows not_visible)"
        )
    if not_visible not in NOT_VISIBLE:
        raise DataError(f"not_visible must be one of {sorted(NOT_VISIBLE)}, got {not_visible!r}")


def _attributes_file(root) -> str:
    """attributes.txt: in `root`, in its attributes/ folder or in its parent, in that order."""
    candidates = [
        os.path.join(root, "attributes.txt"),
        os.path.join(root, "attributes", "attributes.txt"),
        os.path.join(os.path.dirname(root), "attributes.txt"),
    ]
    attributes_file = next((c for c in candidates if os.path.isfile(c)), None)
    if attributes_file is None:
        raise DataError(f"{root}: attributes.txt not found; looked for {candidates}")
    return attributes_file


def _select_split(root, images_file, images, split, bad) -> list[str]:
    """The ids of the well-formed images of `split`, in images.txt order."""
    if SPLITS[split] is None:
        return [image_id for image_id in images if images[image_id]]
    split_file = os.path.join(root, "train_test_split.txt")
    flags = _id_table(split_file, bad, images=images)
    selected = []
    for image_id, entry in images.items():
        if entry is None or flags.get(image_id, ()) is None:  # bad line, already reported
            continue
        if image_id not in flags:
            bad.report("no train/test split entry", f"{images_file}:{entry[0]}: image {image_id}")
        elif flags[image_id][1] == SPLITS[split]:
            selected.append(image_id)
    return selected


def _label_values(min_certainty, not_visible) -> dict[str, dict[str, int]]:
    """value[is_present][certainty_id], keyed by the tokens as written, so lookup also validates."""
    return {
        present: {
            str(c): NOT_VISIBLE[not_visible]
            if c == _NOT_VISIBLE_CERTAINTY
            else (sign if c >= min_certainty else UNKNOWN)
            for c in (1, 2, 3, 4)
        }
        for present, sign in (("1", POSITIVE), ("0", NEGATIVE))
    }


def _read_labels(labels_file, value, images, names, row_of, column, bad) -> np.ndarray:
    """The int8 [rows, columns] labels from image_attribute_labels.txt.

    `value` is `_label_values`; `images` and `names` are the id tables of images.txt and
    attributes.txt; `row_of` and `column` map the kept image and attribute ids to their row and
    column (lines of other ids, another split or already dropped, are passed over).
    """
    labels = np.zeros((len(row_of), len(column)), np.int8)
    seen = np.zeros(labels.shape, bool)
    for lineno, line in enumerate(read_lines(labels_file), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{labels_file}:{lineno}"
        try:
            label = value[fields[2]][fields[3]] if len(fields) in (5, 6) else None
        except KeyError:
            label = None
        if label is None:
            bad.report("malformed line", where)
            continue
        image_id, attribute_id = fields[0], fields[1]
        if image_id not in images:
            bad.report("unknown image id", f"{where}: image {image_id}")
            continue
        if attribute_id not in names:
            bad.report("unknown attribute id", f"{where}: attribute {attribute_id}")
            continue
        row, col = row_of.get(image_id), column.get(attribute_id)
        if row is None or col is None:  # another split, or an image or attribute already dropped
            continue
        if seen[row, col]:
            if labels[row, col] * label < 0:
                bad.report(
                    "conflicting labels", f"{where}: image {image_id} attribute {attribute_id}"
                )
                labels[row, col] = UNKNOWN  # neither annotation can be trusted
            else:
                bad.report("duplicate row", f"{where}: image {image_id} attribute {attribute_id}")
            continue
        seen[row, col] = True
        labels[row, col] = label
    return labels


def _id_table(path, bad, images=None) -> dict[str, tuple[int, str]]:
    """``<id> <value>`` lines as id -> (line number, value); ids are compared as written.

    With `images`, the file is train_test_split.txt: ids must be image ids and values 0 or 1.
    The id of a malformed line maps to None, so that later references to it are not reported
    again as unknown.
    """
    table = {}
    for lineno, line in enumerate(read_lines(path), 1):
        fields = line.split(None, 1)
        if not fields:
            continue
        where = f"{path}:{lineno}"
        key = fields[0]
        val = fields[1].strip() if len(fields) == 2 else ""
        if not key.isdigit() or not val or (images is not None and val not in ("0", "1")):
            bad.report("malformed line", where)
            if key.isdigit():
                table.setdefault(key, None)
        elif key in table:
            bad.report("duplicate row", where)
        elif images is not None and key not in images:
            bad.report("unknown image id", f"{where}: image {key}")
        else:
            table[key] = (lineno, val)
    return table
