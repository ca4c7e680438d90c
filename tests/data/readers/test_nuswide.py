"""The NUS-WIDE reader on a tiny, format-exact fixture."""

import os

import numpy as np
import pytest

from kpartial import data
from tests.helpers import JPEG, append, esc, write

NUS_CONCEPTS = ("animal", "sky", "water")


NUS_TRAIN = ("actor\\0001_11.jpg", "actor\\0002_22.jpg", "beach\\0003_33.jpg")


NUS_TRAIN_LABELS = np.array([[1, -1, 1], [-1, -1, -1], [-1, 1, 1]], np.int8)


def _nus_label_file(root, concept, split="Train"):
    return root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{split}.txt"


@pytest.fixture
def nus_root(tmp_path):
    root = tmp_path / "NUS-WIDE"
    write(root / "Concepts81.txt", "".join(c + "\n" for c in NUS_CONCEPTS))
    # Published lists use backslashes and Windows line ends.
    write(root / "ImageList" / "TrainImagelist.txt", "".join(p + "\r\n" for p in NUS_TRAIN))
    write(root / "ImageList" / "TestImagelist.txt", "beach\\0004_44.jpg\r\n")
    for name in (
        "actor/0001_11.jpg",
        "actor/0002_22.jpg",
        "beach/0003_33.jpg",
        "beach/0004_44.jpg",
    ):
        write(root / "Flickr" / name, JPEG)
    for k, concept in enumerate(NUS_CONCEPTS):
        values = "".join("1\n" if v == 1 else "0\n" for v in NUS_TRAIN_LABELS[:, k])
        write(_nus_label_file(root, concept), values)
        write(_nus_label_file(root, concept, "Test"), "1\n" if concept == "sky" else "0\n")
    return root


def _nus_paths(root, rows):
    return tuple(str(root / "Flickr" / NUS_TRAIN[r].replace("\\", os.sep)) for r in rows)


def test_read_nuswide(nus_root):
    from kpartial.data.readers import nuswide

    d = nuswide.read_nuswide(nus_root)
    np.testing.assert_array_equal(d.labels, NUS_TRAIN_LABELS)
    assert d.label_names == NUS_CONCEPTS and d.image_paths == _nus_paths(nus_root, [0, 1, 2])
    assert d.source == f"nuswide:{nus_root}" and d.skipped == {}
    test = nuswide.read_nuswide(nus_root, split="test")
    np.testing.assert_array_equal(test.labels, [[-1, 1, -1]])
    assert test.image_paths == (str(nus_root / "Flickr" / "beach" / "0004_44.jpg"),)
    other = nus_root / "images"
    write(other / "beach" / "0004_44.jpg", JPEG)
    assert nuswide.read_nuswide(nus_root, split="Test", image_dir=other).image_paths == (
        str(other / "beach" / "0004_44.jpg"),
    )
    with pytest.raises(data.DataError, match="split must be 'Train' or 'Test'"):
        nuswide.read_nuswide(nus_root, split="val")


def test_load_nuswide(nus_root):
    d = data.load("nuswide", str(nus_root))
    np.testing.assert_array_equal(d.labels, NUS_TRAIN_LABELS)


def _nus_list(root):
    return root / "ImageList" / "TrainImagelist.txt"


NUS_BAD = {
    "label value": (
        lambda r: write(_nus_label_file(r, "sky"), "0\n0\n2\n"),
        lambda r: esc(_nus_label_file(r, "sky")) + ":3: '2': label not 0 or 1",
        "label not 0 or 1",
        [0, 1],
    ),
    "duplicate image": (
        lambda r: write(_nus_list(r), "\n".join(NUS_TRAIN[:2] + NUS_TRAIN[:1]) + "\n"),
        lambda r: r"TrainImagelist\.txt:3 \(first on line 1\): duplicate image",
        "duplicate image",
        [0, 1],
    ),
    "missing image": (
        lambda r: os.remove(r / "Flickr" / "actor" / "0001_11.jpg"),
        lambda r: r"TrainImagelist\.txt:1: .*0001_11\.jpg: missing image file",
        "missing image file",
        [1, 2],
    ),
    "empty image": (
        lambda r: write(r / "Flickr" / "actor" / "0002_22.jpg", b""),
        lambda r: r"TrainImagelist\.txt:2: .*0002_22\.jpg: empty image file",
        "empty image file",
        [0, 2],
    ),
    "blank line": (
        lambda r: write(_nus_list(r), f"{NUS_TRAIN[0]}\n \n{NUS_TRAIN[2]}\n"),
        lambda r: r"TrainImagelist\.txt:2: malformed line",
        "malformed line (empty image path)",
        [0, 2],
    ),
}


@pytest.mark.parametrize("case", sorted(NUS_BAD))
def test_read_nuswide_bad_input(nus_root, case):
    from kpartial.data.readers import nuswide

    edit, pattern, reason, rows = NUS_BAD[case]
    edit(nus_root)
    with pytest.raises(data.DataError, match=pattern(nus_root)):
        nuswide.read_nuswide(nus_root)
    d = nuswide.read_nuswide(nus_root, on_bad_input="skip")
    np.testing.assert_array_equal(d.labels, NUS_TRAIN_LABELS[rows])
    assert d.image_paths == _nus_paths(nus_root, rows) and d.skipped == {reason: 1}


def test_read_nuswide_duplicate_concept(nus_root):
    from kpartial.data.readers import nuswide

    append(nus_root / "Concepts81.txt", "sky\n")
    with pytest.raises(data.DataError, match=r"Concepts81\.txt:4: 'sky': duplicate concept"):
        nuswide.read_nuswide(nus_root)
    d = nuswide.read_nuswide(nus_root, on_bad_input="skip")
    np.testing.assert_array_equal(d.labels, NUS_TRAIN_LABELS)
    assert d.label_names == NUS_CONCEPTS and d.skipped == {"duplicate concept": 1}


def test_read_nuswide_unusable_files(nus_root):
    from kpartial.data.readers import nuswide

    write(_nus_label_file(nus_root, "water"), "1\n0\n")  # one line short: misaligned
    with pytest.raises(data.DataError, match=esc(_nus_label_file(nus_root, "water")) + ": 2 lines"):
        nuswide.read_nuswide(nus_root, on_bad_input="skip")
    os.remove(_nus_label_file(nus_root, "water"))
    with pytest.raises(data.DataError, match=esc(_nus_label_file(nus_root, "water")) + ": cannot"):
        nuswide.read_nuswide(nus_root, on_bad_input="skip")
