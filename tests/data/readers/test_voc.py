"""The Pascal VOC reader on a tiny, format-exact fixture."""

import os

import numpy as np
import pytest

from kpartial import data
from kpartial.data.readers import voc
from tests.helpers import JPEG, append, esc, write


def _voc_xml(*objects, difficult_tag=True):
    """Annotation xml; each object is (name, difficult) and difficult None omits the tag."""
    body = "".join(
        f"<object><name>{name}</name><pose>Left</pose>"
        + ("" if flag is None else f"<difficult>{flag}</difficult>")
        + "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
        for name, flag in objects
    )
    return f"<annotation><folder>VOC2007</folder><filename>x.jpg</filename>{body}</annotation>"


VOC_OBJECTS = {
    "000001": [("dog", 0), ("person", 1), ("person", 0)],  # difficult + easy person -> +1
    "000002": [("cat", 1), ("chair", None)],  # no <difficult> tag (as in VOC2012) -> easy
    "000003": [("aeroplane", 0), ("tvmonitor", 1)],
}


@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2007"
    write(root / "ImageSets" / "Main" / "trainval.txt", "000001\n000002\n000003\n")
    write(root / "ImageSets" / "Main" / "val.txt", "000003\n")
    for image_id, objects in VOC_OBJECTS.items():
        write(root / "Annotations" / f"{image_id}.xml", _voc_xml(*objects))
        write(root / "JPEGImages" / f"{image_id}.jpg", JPEG)
    return root


def _voc_expected(difficult_value):
    labels = np.full((3, 20), -1, np.int8)
    col = voc.VOC_CLASSES.index
    labels[0, [col("dog"), col("person")]] = 1
    labels[1, col("chair")] = 1
    labels[1, col("cat")] = difficult_value
    labels[2, col("aeroplane")] = 1
    labels[2, col("tvmonitor")] = difficult_value
    return labels


def test_voc_classes_are_the_standard_order():
    assert voc.VOC_CLASSES == tuple(sorted(voc.VOC_CLASSES)) and len(voc.VOC_CLASSES) == 20
    assert voc.VOC_CLASSES[:3] == ("aeroplane", "bicycle", "bird")
    assert voc.VOC_CLASSES[-1] == "tvmonitor"


@pytest.mark.parametrize("mode, value", [("unknown", 0), ("positive", 1), ("negative", -1)])
def test_read_voc_labels(voc_root, mode, value):
    d = voc.read_voc(voc_root, difficult=mode)
    np.testing.assert_array_equal(d.labels, _voc_expected(value))
    assert d.labels.dtype == np.int8 and d.label_names == voc.VOC_CLASSES
    assert d.image_paths == tuple(str(voc_root / "JPEGImages" / f"{i}.jpg") for i in VOC_OBJECTS)
    assert d.source == f"voc:{voc_root}" and d.skipped == {}


def test_read_voc_split_option_and_split_file_path(voc_root, tmp_path):
    val = voc.read_voc(voc_root, split="val")
    np.testing.assert_array_equal(val.labels, _voc_expected(0)[2:])
    # A split file directly; the year folder is found two levels above its folder.
    split_file = voc_root / "ImageSets" / "Main" / "trainval.txt"
    direct = voc.read_voc(split_file, difficult="negative")
    np.testing.assert_array_equal(direct.labels, _voc_expected(-1))
    # image_dir overrides JPEGImages.
    other = tmp_path / "jpgs"
    for image_id in VOC_OBJECTS:
        write(other / f"{image_id}.jpg", JPEG)
    assert voc.read_voc(voc_root, image_dir=other).image_paths[0] == str(other / "000001.jpg")


def test_load_voc(voc_root):
    d = data.load("voc", str(voc_root), difficult="positive")
    np.testing.assert_array_equal(d.labels, _voc_expected(1))
    with pytest.raises(data.DataError, match="difficult must be one of"):
        data.load("voc", str(voc_root), difficult="maybe")


def _voc_xml_path(root, image_id):
    return root / "Annotations" / f"{image_id}.xml"


# (edit of the fixture, message pattern given the root, skip reason, rows kept under skip)
VOC_BAD = {
    "missing image": (
        lambda r: os.remove(r / "JPEGImages" / "000002.jpg"),
        lambda r: r"trainval\.txt:2: .*000002\.jpg: missing image file",
        "missing image file",
        [0, 2],
    ),
    "empty image": (
        lambda r: write(r / "JPEGImages" / "000003.jpg", b""),
        lambda r: r"trainval\.txt:3: .*000003\.jpg: empty image file",
        "empty image file",
        [0, 1],
    ),
    "unknown class": (
        lambda r: write(_voc_xml_path(r, "000003"), _voc_xml(("aeroplan", 0))),
        lambda r: esc(_voc_xml_path(r, "000003")) + ": object 1 has name 'aeroplan': unknown class",
        "unknown class",
        [0, 1],
    ),
    "duplicate line": (
        lambda r: append(r / "ImageSets" / "Main" / "trainval.txt", "000001\n"),
        lambda r: r"trainval\.txt:4 \(first on line 1\): duplicate image id",
        "duplicate image id",
        [0, 1, 2],
    ),
    "malformed line": (
        lambda r: write(r / "ImageSets" / "Main" / "trainval.txt", "000001\n000002 1\n000003\n"),
        lambda r: r"trainval\.txt:2: malformed line",
        "malformed line (expected one image id)",
        [0, 2],
    ),
    "missing annotation": (
        lambda r: os.remove(_voc_xml_path(r, "000001")),
        lambda r: r"trainval\.txt:1: " + esc(_voc_xml_path(r, "000001")) + ": missing annotation",
        "missing annotation file",
        [1, 2],
    ),
    "malformed xml": (
        lambda r: write(_voc_xml_path(r, "000002"), "<annotation><object>"),
        lambda r: esc(_voc_xml_path(r, "000002")) + r" \(.*line 1.*\): malformed annotation xml",
        "malformed annotation xml",
        [0, 2],
    ),
    "bad difficult flag": (
        lambda r: write(_voc_xml_path(r, "000002"), _voc_xml(("cat", "yes"))),
        lambda r: esc(_voc_xml_path(r, "000002")) + ": object 1 difficult 'yes'",
        "malformed annotation xml",
        [0, 2],
    ),
}


@pytest.mark.parametrize("case", sorted(VOC_BAD))
def test_read_voc_bad_input(voc_root, case):
    edit, pattern, reason, rows = VOC_BAD[case]
    edit(voc_root)
    with pytest.raises(data.DataError, match=pattern(voc_root)):
        voc.read_voc(voc_root)
    d = voc.read_voc(voc_root, on_bad_input="skip")
    np.testing.assert_array_equal(d.labels, _voc_expected(0)[rows])
    assert d.image_paths == tuple(
        str(voc_root / "JPEGImages" / f"{list(VOC_OBJECTS)[r]}.jpg") for r in rows
    )
    assert d.skipped == {reason: 1}


def test_read_voc_unreadable_split_file(voc_root):
    missing = voc_root / "ImageSets" / "Main" / "nosuch.txt"
    with pytest.raises(data.DataError, match=esc(missing) + ": cannot read"):
        voc.read_voc(voc_root, split="nosuch", on_bad_input="skip")
