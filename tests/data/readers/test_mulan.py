"""The Mulan reader (ARFF + label XML): tiny written fixtures, and the real files in
../shared/data when they are there."""

import numpy as np
import pytest

from kpartial import data
from kpartial.data.readers.mulan import read_mulan

XML = """<?xml version="1.0" encoding="utf-8"?>
<labels xmlns="http://mulan.sourceforge.net/labels">
<label name="sun"></label>
<label name="animal"><label name="big 'cat'"></label></label>
</labels>
"""


# Labels interleaved with features; quoted names with spaces and escaped quotes;
# a nominal feature with a quoted value; a '?' (unknown) label; comments, blanks.
DENSE_ARFF = """% leading comment
@RELATION toy

@attribute 'my feat\\'s' NUMERIC
@attribute sun {0,1}
@attribute colour {red, 'dark blue', green}
@Attribute 'big \\'cat\\'' {0,1}
@attribute height real
@attribute animal {0,1}
@DATA
% data comment
1.5, 1, red, 0, 3, 1
-2,0,'dark blue',1,4e1,0

0.25 , ?, green, 1, 0, 1
"""


SPARSE_ARFF = """@relation sparse
@attribute f0 numeric
@attribute f1 {0,1}
@attribute sun {0,1}
@attribute f2 numeric
@attribute "big 'cat'" {0,1}
@attribute animal {0,1}
@data
{0 2.5,2 1,5 1}
{}
{1 1, 3 -1, 4 1, 5 ?}
"""


def _write(directory, name, text):
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture
def mulan_dir(tmp_path):
    _write(tmp_path, "toy.xml", XML)
    _write(tmp_path, "toy-train.arff", DENSE_ARFF)
    _write(tmp_path, "toy-test-sparse.arff", SPARSE_ARFF)
    return tmp_path


def test_read_mulan_dense(mulan_dir):
    d = read_mulan(mulan_dir / "toy-train.arff")
    assert d.label_names == ("sun", "big 'cat'", "animal")  # ARFF order, not XML order.
    np.testing.assert_array_equal(d.labels, [[1, -1, 1], [-1, 1, -1], [0, 1, 1]])
    assert d.labels.dtype == np.int8
    np.testing.assert_array_equal(
        d.features, np.array([[1.5, 0, 3], [-2, 1, 40], [0.25, 2, 0]], np.float32)
    )
    assert d.features.dtype == np.float32
    assert d.image_paths is None and (d.num_examples, d.num_classes) == (3, 3)
    assert d.source == f"mulan:{mulan_dir / 'toy-train.arff'}"


def test_read_mulan_sparse(mulan_dir):
    d = data.load("mulan", str(mulan_dir / "toy-test-sparse.arff"))  # Finds toy.xml.
    assert d.label_names == ("sun", "big 'cat'", "animal")
    np.testing.assert_array_equal(d.labels, [[1, -1, 1], [-1, -1, -1], [-1, 1, 0]])
    np.testing.assert_array_equal(d.features, [[2.5, 0, 0], [0, 0, 0], [0, 1, -1]])


def test_read_mulan_explicit_xml(tmp_path):
    arff = _write(tmp_path, "data.arff", DENSE_ARFF)
    xml = _write(tmp_path, "other.xml", XML)
    assert read_mulan(arff, xml_path=xml).num_classes == 3


def test_read_mulan_missing_xml(tmp_path):
    arff = _write(tmp_path, "toy-train.arff", DENSE_ARFF)
    with pytest.raises(data.DataError) as e:
        read_mulan(arff)
    assert str(arff) in str(e.value) and str(tmp_path / "toy.xml") in str(e.value)


@pytest.mark.parametrize("bad_value", ["?", "nan", "inf", "1e40"])
def test_read_mulan_bad_feature(mulan_dir, bad_value):
    arff = _write(mulan_dir, "toy-train.arff", DENSE_ARFF.replace("4e1", bad_value))
    with pytest.raises(data.DataError, match=r"toy-train\.arff:13: .*'height'"):
        read_mulan(arff)


@pytest.mark.parametrize(
    "edits, message",
    [
        ({"dark blue',1": "dark blue',2"}, r":13: bad value '2' for attribute \"big 'cat'\""),
        (
            {"sun {0,1}": "sun {0,1,maybe}", "?, green": "maybe, green"},
            r":15: label 'sun' has value 'maybe'",
        ),
        ({"green, 1": "purple, 1"}, r":15: bad value 'purple' for attribute 'colour'"),
        ({"-2,0,": "-2,"}, r":13: expected 6 values, got 5"),
        ({"animal {0,1}": "animals {0,1}"}, r"not ARFF attributes: \['animal'\]"),
        ({"height real": "height string"}, r":8: bad @attribute line: unsupported"),
    ],
)
def test_read_mulan_errors(mulan_dir, edits, message):
    text = DENSE_ARFF
    for old, new in edits.items():
        text = text.replace(old, new)
    arff = _write(mulan_dir, "toy-train.arff", text)
    with pytest.raises(data.DataError, match=r"toy-train\.arff.*" + message):
        read_mulan(arff)


def test_read_mulan_bad_sparse_index(mulan_dir):
    arff = _write(mulan_dir, "toy-test-sparse.arff", SPARSE_ARFF.replace("{}", "{6 1}"))
    with pytest.raises(
        data.DataError, match=r"toy-test-sparse\.arff:10: sparse index out of range"
    ):
        read_mulan(arff)


@pytest.mark.parametrize(
    "relative, n, d, c",
    [
        ("mulan/bibtex/bibtex-train.arff", 4880, 1836, 159),
        ("mulan/corel5k/Corel5k-train-sparse.arff", 4500, 499, 374),
        ("mulan/yeast/yeast-train.arff", 1500, 103, 14),
    ],
)
def test_real_mulan(relative, n, d, c, shared_data):
    data_ = read_mulan(shared_data(relative))
    assert data_.features.shape == (n, d) and data_.labels.shape == (n, c)
    assert set(np.unique(data_.labels)) == {-1, 1}  # Fully annotated.
    assert len(set(data_.label_names)) == c
