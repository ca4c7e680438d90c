"""NUS-WIDE: 81 concept labels of Flickr images, as published (image lists + per-concept files)."""

from __future__ import annotations

import os

import numpy as np

from kpartial.data.container import NEGATIVE, POSITIVE, BadInput, DataError, MultiLabelData
from kpartial.data.files import check_image, read_lines


def read_nuswide(path, *, split="Train", image_dir=None, on_bad_input="error") -> MultiLabelData:
    """Reads the Train or Test split of NUS-WIDE.

    The ground truth is exhaustive over the concepts, so 1 maps to +1 and 0 to -1. Classes follow
    ``Concepts81.txt``; examples follow the image list.

    Args:
        path: The NUS-WIDE folder holding ``Concepts81.txt`` (one concept name per line),
            ``ImageList/<Split>Imagelist.txt`` (one image path per line, relative to
            ``image_dir``, with backslash separators as published) and
            ``Groundtruth/TrainTestLabels/Labels_<concept>_<Split>.txt`` (one 0 or 1 per line,
            line i belonging to image i of the list).
        split: ``"Train"`` or ``"Test"`` (any case).
        image_dir: Folder the listed paths are relative to. Default: ``<path>/Flickr``.
        on_bad_input: ``"error"`` raises on the first bad record; ``"skip"`` drops the image (or
            the repeated concept) and counts it in ``MultiLabelData.skipped``.

    Raises:
        DataError: If a file cannot be read, ``split`` is invalid, or a label file has a different
            number of lines than the image list; and, unless skipping, on an empty or duplicate
            line in the image list, a missing or empty image, a label other than 0 or 1, or a
            repeated concept name (the message names the file and line).
    """
    split = str(split).capitalize()
    if split not in ("Train", "Test"):
        raise DataError(f"nuswide split must be 'Train' or 'Test', got {split!r}")
    bad = BadInput(on_bad_input)
    root = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if image_dir is None:
        image_dir = os.path.join(root, "Flickr")
    image_dir = os.path.abspath(os.path.expanduser(os.fspath(image_dir)))

    concepts = _read_concepts(os.path.join(root, "Concepts81.txt"), bad)

    list_file = os.path.join(root, "ImageList", f"{split}Imagelist.txt")
    entries = _without_trailing_blanks(read_lines(list_file))
    keep = np.ones(len(entries), bool)
    image_paths, first_line = [], {}
    for i, line in enumerate(entries):
        rel = line.strip().replace("\\", "/")
        where = f"{list_file}:{i + 1}"
        image = os.path.join(image_dir, *rel.split("/"))
        if not rel:  # a blank line inside the list still owns a line of every label file
            bad.report("malformed line (empty image path)", where)
            keep[i] = False
        elif image in first_line:
            bad.report("duplicate image", f"{where} (first on line {first_line[image]})")
            keep[i] = False
        else:
            first_line[image] = i + 1
            keep[i] = check_image(image, bad, where)
        image_paths.append(image)

    labels = np.empty((len(entries), len(concepts)), np.int8)
    label_dir = os.path.join(root, "Groundtruth", "TrainTestLabels")
    for k, name in enumerate(concepts):
        label_file = os.path.join(label_dir, f"Labels_{name}_{split}.txt")
        values = np.array(
            [v.strip() for v in _without_trailing_blanks(read_lines(label_file))], dtype=str
        )
        if values.size != len(entries):
            raise DataError(
                f"{label_file}: {values.size} lines, but {list_file} lists {len(entries)} images"
            )
        labels[:, k] = np.where(values == "1", POSITIVE, NEGATIVE)
        for i in np.flatnonzero(keep & (values != "1") & (values != "0")):
            bad.report("label not 0 or 1", f"{label_file}:{i + 1}: {str(values[i])!r}")
            keep[i] = False
    rows = np.flatnonzero(keep)
    return MultiLabelData(
        labels=labels[rows],
        label_names=tuple(concepts),
        image_paths=tuple(image_paths[r] for r in rows),
        source=f"nuswide:{root}",
        skipped=bad.counts,
    )


def _read_concepts(concepts_file, bad) -> list[str]:
    """The concept names, one per non-blank line; a repeated one is reported to `bad`."""
    concepts = []
    for lineno, line in enumerate(read_lines(concepts_file), 1):
        name = line.strip()
        if name in concepts:  # its label file would be read twice
            bad.report("duplicate concept", f"{concepts_file}:{lineno}: {name!r}")
        elif name:
            concepts.append(name)
    return concepts


def _without_trailing_blanks(lines):
    # A final newline (or a few) must not count as an image; blank lines inside do count.
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    return lines[:end]
