"""Open Images V6/V7 human-verified image-level labels, read in chunks into sparse labels.

Per known label the reader holds a uint64 image key, an int32 class and an int8 value (plus an
int32 line number for error messages) while reading, and 5 bytes in the returned `SparseLabels`;
it never builds an N x C array.
"""

import glob
import os

import numpy as np
import pandas as pd

from kpartial.data.container import BadInput, DataError, MultiLabelData
from kpartial.sparse_labels import SparseLabels

_COLUMNS = ("ImageID", "LabelName", "Confidence")
_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def _find(folder, pattern, what):
    matches = sorted(glob.glob(os.path.join(folder, pattern)))
    if len(matches) != 1:
        found = f"found {matches}" if matches else "found none"
        raise DataError(f"{folder}: expected one {what} file matching {pattern!r}, {found}")
    return matches[0]


def image_keys(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 keys, bool ok) of Open Images ids: 16 hex digits each."""
    raw = np.asarray(ids, dtype="S17")  # one byte more, so a 17-character id is caught
    ok = np.char.str_len(raw) == 16
    nibbles = _HEX[raw.view(np.uint8).reshape(len(raw), 17)[:, :16]]
    ok &= (nibbles != 255).all(axis=1)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    keys = (nibbles.astype(np.uint64) << shifts).sum(axis=1, dtype=np.uint64)
    return keys, ok


def key_strings(keys: np.ndarray) -> np.ndarray:
    """Inverse of `image_keys`: 'S16' lowercase hex ids."""
    nibbles = (keys[:, None] >> np.arange(60, -4, -4, dtype=np.uint64)) & np.uint64(15)
    return np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles].view("S16").ravel()


def read_class_descriptions(path) -> tuple[list[str], list[str]]:
    """(MIDs, display names) from `oidv*-class-descriptions.csv` (with or without header)."""
    try:
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:  # ValueError: parser, empty-file and decoding errors
        raise DataError(f"{path}: cannot read class descriptions: {e}") from None
    if table.shape[1] < 2:
        raise DataError(f"{path}: expected columns LabelName,DisplayName")
    if tuple(table.iloc[0, :2]) == ("LabelName", "DisplayName"):
        table = table.iloc[1:]
    mids = table.iloc[:, 0].tolist()
    if len(set(mids)) != len(mids):
        dup = pd.Series(mids)[pd.Series(mids).duplicated()].iloc[0]
        raise DataError(f"{path}: class {dup!r} is described twice")
    return mids, table.iloc[:, 1].tolist()


def read_openimages(
    path,
    *,
    split="train",
    classes="auto",
    min_count=0,
    image_dir=None,
    with_images=True,
    chunk_rows=250_000,
    on_bad_input="error",
):
    """Reads Open Images human-verified image-level labels.

    Expects the files as published, in one folder (``path``; or ``path`` is the annotations CSV
    itself and the folder is its parent):

    - ``*<split>-annotations-human-imagelabels*.csv`` with ``ImageID,Source,LabelName,Confidence``
      (e.g. ``oidv6-train-annotations-human-imagelabels.csv``,
      ``validation-annotations-human-imagelabels-boxable.csv``). Confidence 1 is a verified
      positive (+1), 0 a verified negative (-1); (image, class) pairs without a row are unknown.
    - ``oidv*-class-descriptions.csv`` (``LabelName,DisplayName``): the classes that exist.
    - optionally ``oidv*-classes-trainable.txt`` (one MID per line).
    - images as ``images/<ImageID>.jpg`` (or ``image_dir``), when ``with_images``.

    The label space is the described classes, restricted to the trainable list when there is one
    (``classes="auto"``), or all described (``"all"``), or the MIDs listed one per line in the file
    ``classes`` (e.g. a training run's ``label_names.txt``); then only classes with at least
    ``min_count`` verified positives in this split are kept. Labels of classes outside the label
    space are left out (not an error). Class names are the MIDs, in the order of the description
    file (or of the ``classes`` file); examples are ordered by image id.

    Args:
      path: the folder, or the annotations CSV.
      split: "train", "validation" or "test": which annotations file to read.
      classes: "auto", "all", or a file of MIDs.
      min_count: minimum number of verified positives for a class to be kept.
      image_dir: folder of ``<ImageID>.jpg``; default ``<folder>/images``.
      with_images: check that every image exists and return image paths; False returns labels only
        (for label statistics and the scale benchmark).
      chunk_rows: CSV rows parsed at a time.
      on_bad_input: "error" or "skip" (counted) for a malformed ImageID, a Confidence other than
        0/1, an unknown class MID, a duplicate row, a pair marked both positive and negative, and
        (with images) a missing image.

    Raises:
      DataError: naming the file and line of the first bad row, or a missing file.
    """
    folder, annotations = _locate(path, split)
    mids, _ = read_class_descriptions(
        _find(folder, "*class-descriptions*.csv", "class description")
    )
    space = _label_space(folder, mids, classes)
    bad = BadInput(on_bad_input)
    rows = _read_annotations(annotations, mids, space, chunk_rows, bad)
    rows = _drop_repeated_pairs(rows, space, annotations, bad)
    if min_count > 0:
        rows, space = _keep_frequent_classes(rows, space, min_count, annotations)
    keys, class_ids, values, lines = rows

    row_start = (
        np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if keys.size else np.zeros(0, np.int64)
    )
    image_ids = keys[row_start]
    indptr = np.append(row_start, keys.size).astype(np.int64)
    labels = SparseLabels(indptr, class_ids, values, len(space))
    image_paths = None
    if with_images:
        image_dir = os.path.abspath(image_dir or os.path.join(folder, "images"))
        labels, image_paths = _image_paths(
            labels, key_strings(image_ids), lines[indptr[:-1]], image_dir, annotations, bad
        )
    return MultiLabelData(
        labels=labels,
        label_names=tuple(space),
        image_paths=image_paths,
        source=f"openimages:{annotations}",
        skipped=bad.counts,
    )


def _locate(path, split) -> tuple[str, str]:
    """(folder, annotations CSV) of `path`, a folder or the annotations CSV itself."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.isdir(path):
        return os.path.dirname(path), path
    pattern = f"*{split}-annotations-human-imagelabels*.csv"
    return path, _find(path, pattern, f"{split} annotations")


def _label_space(folder, mids, classes) -> list[str]:
    """The MIDs of the label space that `classes` ("auto", "all" or a file of MIDs) selects."""
    if classes == "auto":
        trainable = glob.glob(os.path.join(folder, "*classes-trainable*.txt"))
        if len(trainable) == 1:  # the described classes (in description order) that are listed
            listed = set(_read_mid_list(trainable[0], mids))
            return [mid for mid in mids if mid in listed]
        return mids
    if classes == "all":
        return mids
    return _read_mid_list(os.fspath(classes), mids)


def _drop_repeated_pairs(rows, space, annotations, bad):
    """`rows` (keys, class ids, values, lines) sorted by (image, class), each pair once.

    Conflicts (a pair marked both positive and negative) drop both rows of the pair; duplicates
    keep the first.
    """
    # One sort by (image, class) gives rows, duplicate and conflicting pairs at once.
    keys, class_ids, values, lines = rows
    order = np.lexsort((class_ids, keys))
    keys, class_ids, values, lines = keys[order], class_ids[order], values[order], lines[order]
    del order
    same_pair = (keys[1:] == keys[:-1]) & (class_ids[1:] == class_ids[:-1])
    if not same_pair.any():
        return keys, class_ids, values, lines
    drop = np.zeros(keys.size, bool)
    for reason, pairs in (
        ("pair marked both positive and negative", same_pair & (values[1:] != values[:-1])),
        ("duplicate row", same_pair & (values[1:] == values[:-1])),
    ):
        where = np.flatnonzero(pairs)
        if where.size:
            first = where[0]
            bad.report(
                f"{reason} (image {key_strings(keys[first : first + 1])[0].decode()}, class "
                f"{space[class_ids[first]]}; also line {lines[first]})",
                f"{annotations}:{lines[first + 1]}",
                count=where.size,
            )
            drop[where + 1] = True
            if reason.startswith("pair"):
                drop[where] = True
    keep = ~drop
    return keys[keep], class_ids[keep], values[keep], lines[keep]


def _keep_frequent_classes(rows, space, min_count, annotations):
    """(rows, space) without the classes of fewer than `min_count` verified positives."""
    keys, class_ids, values, lines = rows
    positives = np.bincount(class_ids[values > 0], minlength=len(space))
    kept = np.flatnonzero(positives >= min_count)
    new_id = np.full(len(space), -1, np.int32)
    new_id[kept] = np.arange(kept.size, dtype=np.int32)
    class_ids = new_id[class_ids]
    keep = class_ids >= 0
    space = [space[k] for k in kept]
    if not space:
        raise DataError(f"{annotations}: no class has min_count={min_count} verified positives")
    return (keys[keep], class_ids[keep], values[keep], lines[keep]), space


def _image_paths(labels, names, first_lines, image_dir, annotations, bad):
    """(labels, image paths) of the images (`names`: 'S16' ids) that exist in `image_dir`.

    `first_lines` holds the annotations line of each image's first row, for messages.
    """
    exists = np.array(
        [os.path.isfile(os.path.join(image_dir, n.decode() + ".jpg")) for n in names], bool
    )
    if not exists.all():
        missing = np.flatnonzero(~exists)
        bad.report(
            f"image {os.path.join(image_dir, names[missing[0]].decode() + '.jpg')} does not exist",
            f"{annotations}:{first_lines[missing[0]]}",
            count=missing.size,
        )
        labels = labels.take_rows(np.flatnonzero(exists))
        names = names[exists]
    prefix = (image_dir + os.sep).encode()
    return labels, np.char.add(np.char.add(prefix, names), b".jpg").astype(str)


def _read_mid_list(path, described):
    try:
        with open(path, encoding="utf-8") as f:
            listed = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read class list: {e}") from None
    known = set(described)
    for lineno, mid in enumerate(listed, 1):
        if mid not in known:
            raise DataError(f"{path}:{lineno}: class {mid!r} is not in the class descriptions")
    if len(set(listed)) != len(listed):
        raise DataError(f"{path}: a class is listed twice")
    return listed


def _read_annotations(annotations, mids, space, chunk_rows, bad):
    """Concatenated (image key, class id in `space`, value, line) of the rows in the label space."""
    space_id = pd.Index(space)
    described = pd.Index(mids)
    parts = []
    try:
        reader = pd.read_csv(
            annotations,
            usecols=list(_COLUMNS),
            dtype={"ImageID": str, "LabelName": str, "Confidence": str},
            keep_default_na=False,
            chunksize=chunk_rows,
        )
        first_line = 2  # line 1 is the header
        for chunk in reader:
            lines = np.arange(first_line, first_line + len(chunk), dtype=np.int32)
            first_line += len(chunk)
            keys, ok = image_keys(chunk["ImageID"].to_numpy())
            confidence = chunk["Confidence"].to_numpy()
            values = np.where(confidence == "1", 1, np.where(confidence == "0", -1, 0)).astype(
                np.int8
            )
            described_ok = described.get_indexer(chunk["LabelName"]) >= 0
            for problem, mask in (
                ("ImageID is not 16 hex digits", ~ok),
                ("Confidence is not 0 or 1", values == 0),
                ("LabelName is not in the class descriptions (unknown class)", ~described_ok),
            ):
                if mask.any():
                    first = int(np.argmax(mask))
                    bad.report(  # the reason is the same in every chunk, so counts add up
                        problem,
                        f"{annotations}:{lines[first]}: {chunk.iloc[first].tolist()}",
                        count=int(mask.sum()),
                    )
            class_ids = space_id.get_indexer(chunk["LabelName"]).astype(np.int32)
            keep = ok & (values != 0) & (class_ids >= 0)
            parts.append((keys[keep], class_ids[keep], values[keep], lines[keep]))
    except ValueError as e:  # pandas: missing columns, bad quoting
        raise DataError(f"{annotations}: not an Open Images labels CSV: {e}") from None
    except OSError as e:
        raise DataError(f"{annotations}: cannot read: {e}") from None
    if not parts:
        return (
            np.zeros(0, np.uint64),
            np.zeros(0, np.int32),
            np.zeros(0, np.int8),
            np.zeros(0, np.int32),
        )
    return tuple(np.concatenate(column) for column in zip(*parts))
