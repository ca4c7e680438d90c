"""The CUB-200-2011 attribute reader on a tiny, format-exact fixture."""

import os

import numpy as np
import pytest

from kpartial import data
from kpartial.data.readers import cub
from tests.helpers import JPEG, append, esc, write

# image_id attribute_id is_present certainty_id time [; one 6-field line as published]
CUB_LABELS = """1 1 1 4 1.5
1 2 0 3 2.0
1 3 1 2 0.5
2 1 0 1 3.1
2 2 1 3 0 12.5
2 3 0 2 4.0
3 1 1 4 1.0
3 2 0 4 1.0
3 3 1 1 1.0
"""


CUB_IMAGES = ("001.Albatross/a_1.jpg", "001.Albatross/a_2.jpg", "002.Auklet/b_3.jpg")


CUB_NAMES = ("has_bill_shape::curved_(up_or_down)", "has_wing_color::blue", "has_size::small")


@pytest.fixture
def cub_root(tmp_path):
    root = tmp_path / "CUB_200_2011"
    write(root / "images.txt", "".join(f"{i} {p}\n" for i, p in enumerate(CUB_IMAGES, 1)))
    write(root / "train_test_split.txt", "1 1\n2 1\n3 0\n")
    write(tmp_path / "attributes.txt", "".join(f"{i} {n}\n" for i, n in enumerate(CUB_NAMES, 1)))
    write(root / "attributes" / "image_attribute_labels.txt", CUB_LABELS)
    for p in CUB_IMAGES:
        write(root / "images" / p, JPEG)
    return root


def _cub_labels_file(root):
    return root / "attributes" / "image_attribute_labels.txt"


def _cub_paths(root, rows):
    return tuple(str(root / "images" / CUB_IMAGES[r]) for r in rows)


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, [[1, -1, 0], [0, 1, 0]]),
        ({"min_certainty": 2}, [[1, -1, 1], [0, 1, -1]]),
        ({"min_certainty": 4}, [[1, 0, 0], [0, 0, 0]]),
        ({"not_visible": "negative"}, [[1, -1, 0], [-1, 1, 0]]),
        ({"split": "test"}, [[1, -1, 0]]),
        ({"split": "test", "not_visible": "negative"}, [[1, -1, -1]]),
        ({"split": "all"}, [[1, -1, 0], [0, 1, 0], [1, -1, 0]]),
    ],
)
def test_read_cub_labels(cub_root, options, expected):
    d = cub.read_cub(cub_root, **options)
    np.testing.assert_array_equal(d.labels, np.array(expected, np.int8))
    assert d.labels.dtype == np.int8 and d.label_names == CUB_NAMES
    rows = {"train": [0, 1], "test": [2], "all": [0, 1, 2]}[options.get("split", "train")]
    assert d.image_paths == _cub_paths(cub_root, rows)
    assert d.source == f"cub:{cub_root}" and d.skipped == {}


@pytest.mark.parametrize("folder", [".", "attributes"])
def test_read_cub_attribute_names_location(cub_root, folder):
    target = cub_root / folder / "attributes.txt"  # the fixture's copy sits in the parent
    os.replace(cub_root.parent / "attributes.txt", target)
    assert cub.read_cub(cub_root).label_names == CUB_NAMES
    os.remove(target)
    with pytest.raises(data.DataError, match="attributes.txt not found"):
        cub.read_cub(cub_root)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"split": "val"}, "split must be one of"),
        ({"min_certainty": 1}, "min_certainty must be 2, 3 or 4"),
        ({"not_visible": "positive"}, "not_visible must be one of"),
    ],
)
def test_read_cub_bad_options(cub_root, options, message):
    with pytest.raises(data.DataError, match=message):
        cub.read_cub(cub_root, **options)


def test_load_cub(cub_root):
    d = data.load("cub", str(cub_root), min_certainty=2)
    np.testing.assert_array_equal(d.labels, [[1, -1, 1], [0, 1, -1]])


DEFAULT = [[1, -1, 0], [0, 1, 0]]


# (edit, message pattern given the root, skip reason, train labels under skip, train rows kept)
CUB_BAD = {
    "too few fields": (
        lambda r: append(_cub_labels_file(r), "1 1 1\n"),
        lambda r: esc(_cub_labels_file(r)) + ":10: malformed line",
        "malformed line",
        DEFAULT,
        [0, 1],
    ),
    "is_present not 0/1": (
        lambda r: write(_cub_labels_file(r), CUB_LABELS.replace("1 3 1 2", "1 3 2 2")),
        lambda r: esc(_cub_labels_file(r)) + ":3: malformed line",
        "malformed line",
        DEFAULT,
        [0, 1],
    ),
    "bad certainty": (
        lambda r: write(_cub_labels_file(r), CUB_LABELS.replace("1 2 0 3", "1 2 0 5")),
        lambda r: esc(_cub_labels_file(r)) + ":2: malformed line",
        "malformed line",
        [[1, 0, 0], [0, 1, 0]],
        [0, 1],
    ),
    "unknown attribute": (
        lambda r: append(_cub_labels_file(r), "1 9 1 4 0.0\n"),
        lambda r: esc(_cub_labels_file(r)) + ":10: attribute 9: unknown attribute id",
        "unknown attribute id",
        DEFAULT,
        [0, 1],
    ),
    "unknown image": (
        lambda r: append(_cub_labels_file(r), "7 1 1 4 0.0\n"),
        lambda r: esc(_cub_labels_file(r)) + ":10: image 7: unknown image id",
        "unknown image id",
        DEFAULT,
        [0, 1],
    ),
    "conflict": (
        lambda r: append(_cub_labels_file(r), "1 1 0 4 0.0\n"),
        lambda r: esc(_cub_labels_file(r)) + ":10: image 1 attribute 1: conflicting labels",
        "conflicting labels",
        [[0, -1, 0], [0, 1, 0]],  # neither annotation trusted
        [0, 1],
    ),
    "duplicate annotation": (
        lambda r: append(_cub_labels_file(r), "2 2 1 4 0.0\n"),
        lambda r: esc(_cub_labels_file(r)) + ":10: image 2 attribute 2: duplicate row",
        "duplicate row",
        DEFAULT,
        [0, 1],
    ),
    "missing image": (
        lambda r: os.remove(r / "images" / CUB_IMAGES[0]),
        lambda r: r"images\.txt:1: .*a_1\.jpg: missing image file",
        "missing image file",
        [[0, 1, 0]],
        [1],
    ),
    "empty image": (
        lambda r: write(r / "images" / CUB_IMAGES[1], b""),
        lambda r: r"images\.txt:2: .*a_2\.jpg: empty image file",
        "empty image file",
        [[1, -1, 0]],
        [0],
    ),
    "duplicate image id": (
        lambda r: append(r / "images.txt", "1 001.Albatross/a_2.jpg\n"),
        lambda r: r"images\.txt:4: duplicate row",
        "duplicate row",
        DEFAULT,
        [0, 1],
    ),
    "malformed images line": (
        lambda r: write(r / "images.txt", f"1 {CUB_IMAGES[0]}\n2\n3 {CUB_IMAGES[2]}\n"),
        lambda r: r"images\.txt:2: malformed line",
        "malformed line",
        [[1, -1, 0]],
        [0],
    ),
    "no split entry": (
        lambda r: write(r / "train_test_split.txt", "1 1\n3 0\n"),
        lambda r: r"images\.txt:2: image 2: no train/test split entry",
        "no train/test split entry",
        [[1, -1, 0]],
        [0],
    ),
    "bad split flag": (
        lambda r: write(r / "train_test_split.txt", "1 1\n2 yes\n3 0\n"),
        lambda r: r"train_test_split\.txt:2: malformed line",
        "malformed line",  # image 2 is then dropped without a second report
        [[1, -1, 0]],
        [0],
    ),
    "split for unknown image": (
        lambda r: append(r / "train_test_split.txt", "8 1\n"),
        lambda r: r"train_test_split\.txt:4: image 8: unknown image id",
        "unknown image id",
        DEFAULT,
        [0, 1],
    ),
}


@pytest.mark.parametrize("case", sorted(CUB_BAD))
def test_read_cub_bad_input(cub_root, case):
    edit, pattern, reason, labels, rows = CUB_BAD[case]
    edit(cub_root)
    with pytest.raises(data.DataError, match=pattern(cub_root)):
        cub.read_cub(cub_root)
    d = cub.read_cub(cub_root, on_bad_input="skip")
    np.testing.assert_array_equal(d.labels, np.array(labels, np.int8))
    assert d.image_paths == _cub_paths(cub_root, rows)
    assert d.skipped == {reason: 1}


def test_read_cub_unreadable_files(cub_root):
    os.remove(_cub_labels_file(cub_root))
    with pytest.raises(data.DataError, match=esc(_cub_labels_file(cub_root)) + ": cannot read"):
        cub.read_cub(cub_root, on_bad_input="skip")
    with pytest.raises(data.DataError, match="not a folder"):
        cub.read_cub(cub_root / "images.txt")


def test_read_cub_malformed_attribute_name_line(cub_root):
    names_file = cub_root.parent / "attributes.txt"
    write(names_file, f"1 {CUB_NAMES[0]}\n2\n3 {CUB_NAMES[2]}\n")
    with pytest.raises(data.DataError, match=esc(names_file) + ":2: malformed line"):
        cub.read_cub(cub_root)
    # Its annotation lines are dropped with the attribute, not reported again as unknown ids.
    d = cub.read_cub(cub_root, on_bad_input="skip")
    assert d.label_names == (CUB_NAMES[0], CUB_NAMES[2]) and d.skipped == {"malformed line": 1}
    np.testing.assert_array_equal(d.labels, [[1, 0], [0, 0]])
