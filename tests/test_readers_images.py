"""Tests for the VOC, NUS-WIDE and CUB readers on tiny format-exact fixtures."""

import os
import re

import numpy as np
import pytest

from kpartial import data
from kpartial.data.readers import cub, voc

# A valid 1x1 JPEG, made once with tf.io.encode_jpeg(tf.zeros([1, 1, 3], tf.uint8), quality=50);
# stored as bytes so these tests need not import TensorFlow.
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010101012c012c0000ffdb004300100b0c0e0c0a100e0d0e1211101318281a18161618"
    "3123251d283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c656763ffdb00"
    "43011112121815182f1a1a2f63423842636363636363636363636363636363636363636363636363636363636363"
    "6363636363636363636363636363636363636363ffc00011080001000103012200021101031101ffc4001f000001"
    "0501010101010100000000000000000102030405060708090a0bffc400b510000201030302040305050404000001"
    "7d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25"
    "262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a8384"
    "85868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5"
    "d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffc4001f0100030101010101010101010000000000"
    "000102030405060708090a0bffc400b5110002010204040304070504040001027700010203110405213106124151"
    "0761711322328108144291a1b1c109233352f0156272d10a162434e125f11718191a262728292a35363738393a43"
    "4445464748494a535455565758595a636465666768696a737475767778797a82838485868788898a929394959697"
    "98999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8"
    "e9eaf2f3f4f5f6f7f8f9faffda000c03010002110311003f00f3fa28a2803fffd9"
)


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _append(path, text):
    with open(path, "a") as f:
        f.write(text)


def _esc(path):
    return re.escape(str(path))


# ----------------------------------------------------------------------------
# Pascal VOC.


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
    _write(root / "ImageSets" / "Main" / "trainval.txt", "000001\n000002\n000003\n")
    _write(root / "ImageSets" / "Main" / "val.txt", "000003\n")
    for image_id, objects in VOC_OBJECTS.items():
        _write(root / "Annotations" / f"{image_id}.xml", _voc_xml(*objects))
        _write(root / "JPEGImages" / f"{image_id}.jpg", JPEG)
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
        _write(other / f"{image_id}.jpg", JPEG)
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
        lambda r: _write(r / "JPEGImages" / "000003.jpg", b""),
        lambda r: r"trainval\.txt:3: .*000003\.jpg: empty image file",
        "empty image file",
        [0, 1],
    ),
    "unknown class": (
        lambda r: _write(_voc_xml_path(r, "000003"), _voc_xml(("aeroplan", 0))),
        lambda r: (
            _esc(_voc_xml_path(r, "000003")) + ": object 1 has name 'aeroplan': unknown class"
        ),
        "unknown class",
        [0, 1],
    ),
    "duplicate line": (
        lambda r: _append(r / "ImageSets" / "Main" / "trainval.txt", "000001\n"),
        lambda r: r"trainval\.txt:4 \(first on line 1\): duplicate image id",
        "duplicate image id",
        [0, 1, 2],
    ),
    "malformed line": (
        lambda r: _write(r / "ImageSets" / "Main" / "trainval.txt", "000001\n000002 1\n000003\n"),
        lambda r: r"trainval\.txt:2: malformed line",
        "malformed line (expected one image id)",
        [0, 2],
    ),
    "missing annotation": (
        lambda r: os.remove(_voc_xml_path(r, "000001")),
        lambda r: r"trainval\.txt:1: " + _esc(_voc_xml_path(r, "000001")) + ": missing annotation",
        "missing annotation file",
        [1, 2],
    ),
    "malformed xml": (
        lambda r: _write(_voc_xml_path(r, "000002"), "<annotation><object>"),
        lambda r: _esc(_voc_xml_path(r, "000002")) + r" \(.*line 1.*\): malformed annotation xml",
        "malformed annotation xml",
        [0, 2],
    ),
    "bad difficult flag": (
        lambda r: _write(_voc_xml_path(r, "000002"), _voc_xml(("cat", "yes"))),
        lambda r: _esc(_voc_xml_path(r, "000002")) + ": object 1 difficult 'yes'",
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
    with pytest.raises(data.DataError, match=_esc(missing) + ": cannot read"):
        voc.read_voc(voc_root, split="nosuch", on_bad_input="skip")


# ----------------------------------------------------------------------------
# NUS-WIDE.

NUS_CONCEPTS = ("animal", "sky", "water")
NUS_TRAIN = ("actor\\0001_11.jpg", "actor\\0002_22.jpg", "beach\\0003_33.jpg")
NUS_TRAIN_LABELS = np.array([[1, -1, 1], [-1, -1, -1], [-1, 1, 1]], np.int8)


def _nus_label_file(root, concept, split="Train"):
    return root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{split}.txt"


@pytest.fixture
def nus_root(tmp_path):
    root = tmp_path / "NUS-WIDE"
    _write(root / "Concepts81.txt", "".join(c + "\n" for c in NUS_CONCEPTS))
    # Published lists use backslashes and Windows line ends.
    _write(root / "ImageList" / "TrainImagelist.txt", "".join(p + "\r\n" for p in NUS_TRAIN))
    _write(root / "ImageList" / "TestImagelist.txt", "beach\\0004_44.jpg\r\n")
    for name in (
        "actor/0001_11.jpg",
        "actor/0002_22.jpg",
        "beach/0003_33.jpg",
        "beach/0004_44.jpg",
    ):
        _write(root / "Flickr" / name, JPEG)
    for k, concept in enumerate(NUS_CONCEPTS):
        values = "".join("1\n" if v == 1 else "0\n" for v in NUS_TRAIN_LABELS[:, k])
        _write(_nus_label_file(root, concept), values)
        _write(_nus_label_file(root, concept, "Test"), "1\n" if concept == "sky" else "0\n")
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
    _write(other / "beach" / "0004_44.jpg", JPEG)
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
        lambda r: _write(_nus_label_file(r, "sky"), "0\n0\n2\n"),
        lambda r: _esc(_nus_label_file(r, "sky")) + ":3: '2': label not 0 or 1",
        "label not 0 or 1",
        [0, 1],
    ),
    "duplicate image": (
        lambda r: _write(_nus_list(r), "\n".join(NUS_TRAIN[:2] + NUS_TRAIN[:1]) + "\n"),
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
        lambda r: _write(r / "Flickr" / "actor" / "0002_22.jpg", b""),
        lambda r: r"TrainImagelist\.txt:2: .*0002_22\.jpg: empty image file",
        "empty image file",
        [0, 2],
    ),
    "blank line": (
        lambda r: _write(_nus_list(r), f"{NUS_TRAIN[0]}\n \n{NUS_TRAIN[2]}\n"),
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

    _append(nus_root / "Concepts81.txt", "sky\n")
    with pytest.raises(data.DataError, match=r"Concepts81\.txt:4: 'sky': duplicate concept"):
        nuswide.read_nuswide(nus_root)
    d = nuswide.read_nuswide(nus_root, on_bad_input="skip")
    np.testing.assert_array_equal(d.labels, NUS_TRAIN_LABELS)
    assert d.label_names == NUS_CONCEPTS and d.skipped == {"duplicate concept": 1}


def test_read_nuswide_unusable_files(nus_root):
    from kpartial.data.readers import nuswide

    _write(_nus_label_file(nus_root, "water"), "1\n0\n")  # one line short: misaligned
    with pytest.raises(
        data.DataError, match=_esc(_nus_label_file(nus_root, "water")) + ": 2 lines"
    ):
        nuswide.read_nuswide(nus_root, on_bad_input="skip")
    os.remove(_nus_label_file(nus_root, "water"))
    with pytest.raises(data.DataError, match=_esc(_nus_label_file(nus_root, "water")) + ": cannot"):
        nuswide.read_nuswide(nus_root, on_bad_input="skip")


# ----------------------------------------------------------------------------
# CUB-200-2011.

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
    _write(root / "images.txt", "".join(f"{i} {p}\n" for i, p in enumerate(CUB_IMAGES, 1)))
    _write(root / "train_test_split.txt", "1 1\n2 1\n3 0\n")
    _write(tmp_path / "attributes.txt", "".join(f"{i} {n}\n" for i, n in enumerate(CUB_NAMES, 1)))
    _write(root / "attributes" / "image_attribute_labels.txt", CUB_LABELS)
    for p in CUB_IMAGES:
        _write(root / "images" / p, JPEG)
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
        lambda r: _append(_cub_labels_file(r), "1 1 1\n"),
        lambda r: _esc(_cub_labels_file(r)) + ":10: malformed line",
        "malformed line",
        DEFAULT,
        [0, 1],
    ),
    "is_present not 0/1": (
        lambda r: _write(_cub_labels_file(r), CUB_LABELS.replace("1 3 1 2", "1 3 2 2")),
        lambda r: _esc(_cub_labels_file(r)) + ":3: malformed line",
        "malformed line",
        DEFAULT,
        [0, 1],
    ),
    "bad certainty": (
        lambda r: _write(_cub_labels_file(r), CUB_LABELS.replace("1 2 0 3", "1 2 0 5")),
        lambda r: _esc(_cub_labels_file(r)) + ":2: malformed line",
        "malformed line",
        [[1, 0, 0], [0, 1, 0]],
        [0, 1],
    ),
    "unknown attribute": (
        lambda r: _append(_cub_labels_file(r), "1 9 1 4 0.0\n"),
        lambda r: _esc(_cub_labels_file(r)) + ":10: attribute 9: unknown attribute id",
        "unknown attribute id",
        DEFAULT,
        [0, 1],
    ),
    "unknown image": (
        lambda r: _append(_cub_labels_file(r), "7 1 1 4 0.0\n"),
        lambda r: _esc(_cub_labels_file(r)) + ":10: image 7: unknown image id",
        "unknown image id",
        DEFAULT,
        [0, 1],
    ),
    "conflict": (
        lambda r: _append(_cub_labels_file(r), "1 1 0 4 0.0\n"),
        lambda r: _esc(_cub_labels_file(r)) + ":10: image 1 attribute 1: conflicting labels",
        "conflicting labels",
        [[0, -1, 0], [0, 1, 0]],  # neither annotation trusted
        [0, 1],
    ),
    "duplicate annotation": (
        lambda r: _append(_cub_labels_file(r), "2 2 1 4 0.0\n"),
        lambda r: _esc(_cub_labels_file(r)) + ":10: image 2 attribute 2: duplicate row",
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
        lambda r: _write(r / "images" / CUB_IMAGES[1], b""),
        lambda r: r"images\.txt:2: .*a_2\.jpg: empty image file",
        "empty image file",
        [[1, -1, 0]],
        [0],
    ),
    "duplicate image id": (
        lambda r: _append(r / "images.txt", "1 001.Albatross/a_2.jpg\n"),
        lambda r: r"images\.txt:4: duplicate row",
        "duplicate row",
        DEFAULT,
        [0, 1],
    ),
    "malformed images line": (
        lambda r: _write(r / "images.txt", f"1 {CUB_IMAGES[0]}\n2\n3 {CUB_IMAGES[2]}\n"),
        lambda r: r"images\.txt:2: malformed line",
        "malformed line",
        [[1, -1, 0]],
        [0],
    ),
    "no split entry": (
        lambda r: _write(r / "train_test_split.txt", "1 1\n3 0\n"),
        lambda r: r"images\.txt:2: image 2: no train/test split entry",
        "no train/test split entry",
        [[1, -1, 0]],
        [0],
    ),
    "bad split flag": (
        lambda r: _write(r / "train_test_split.txt", "1 1\n2 yes\n3 0\n"),
        lambda r: r"train_test_split\.txt:2: malformed line",
        "malformed line",  # image 2 is then dropped without a second report
        [[1, -1, 0]],
        [0],
    ),
    "split for unknown image": (
        lambda r: _append(r / "train_test_split.txt", "8 1\n"),
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
    with pytest.raises(data.DataError, match=_esc(_cub_labels_file(cub_root)) + ": cannot read"):
        cub.read_cub(cub_root, on_bad_input="skip")
    with pytest.raises(data.DataError, match="not a folder"):
        cub.read_cub(cub_root / "images.txt")


def test_read_cub_malformed_attribute_name_line(cub_root):
    names_file = cub_root.parent / "attributes.txt"
    _write(names_file, f"1 {CUB_NAMES[0]}\n2\n3 {CUB_NAMES[2]}\n")
    with pytest.raises(data.DataError, match=_esc(names_file) + ":2: malformed line"):
        cub.read_cub(cub_root)
    # Its annotation lines are dropped with the attribute, not reported again as unknown ids.
    d = cub.read_cub(cub_root, on_bad_input="skip")
    assert d.label_names == (CUB_NAMES[0], CUB_NAMES[2]) and d.skipped == {"malformed line": 1}
    np.testing.assert_array_equal(d.labels, [[1, 0], [0, 0]])
