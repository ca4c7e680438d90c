"""Bad input gives one DataError line naming the file (and line or label), never a traceback.

Each test writes a small broken file and checks the exact message; the fuzz-found cases at the
end pin down what tests/data/test_fuzz_readers.py found.
"""

import json
import re

import numpy as np
import pytest

from kpartial import class_stats, data, simulate
from kpartial.sparse_labels import SparseLabels
from tests.helpers import save_npz


def raises(message, fn, *args, **kwargs):
    """Asserts fn raises a one-line DataError whose whole message is `message`."""
    with pytest.raises(data.DataError) as info:
        fn(*args, **kwargs)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


X, Y = np.ones((3, 2)), np.array([[1, -1], [1, 0], [-1, 1]])


# ----------------------------------------------------------------------------
# npz.


def test_npz_that_is_not_a_zip_archive(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(np.random.default_rng(0).bytes(200))
    # Was: "This file contains pickled (object) data ... allow_pickle" (np.load read it as pickle).
    raises(f"{path}: cannot read npz: not a zip archive", data.load, "npz", str(path))


def test_npz_truncated_or_with_a_bad_crc(tmp_path):
    whole = save_npz(tmp_path / "whole.npz", x=X, y=Y).read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole[: len(whole) // 2])
    raises(  # was zipfile.BadZipFile
        f"{truncated}: cannot read npz: BadZipFile: File is not a zip file",
        data.load,
        "npz",
        str(truncated),
    )
    flipped = bytearray(whole)
    flipped[whole.index(b"\x93NUMPY") + 60] ^= 0xFF  # inside x.npy's data: its CRC fails
    bad_crc = tmp_path / "crc.npz"
    bad_crc.write_bytes(bytes(flipped))
    raises(
        f"{bad_crc}: cannot read npz: BadZipFile: Bad CRC-32 for file 'x.npy'",
        data.load,
        "npz",
        str(bad_crc),
    )


def test_npz_missing_x_or_y_or_with_mismatched_rows(tmp_path):
    no_x = save_npz(tmp_path / "no_x.npz", y=Y)
    raises(f"{no_x}: missing key 'x' (found ['y'])", data.load, "npz", str(no_x))
    no_y = save_npz(tmp_path / "no_y.npz", x=X)
    raises(f"{no_y}: missing key 'y' (found ['x'])", data.load, "npz", str(no_y))
    rows = save_npz(tmp_path / "rows.npz", x=X, y=Y[:2])
    raises(
        f"{rows}: need x [N, D] and y [N, C]; got x (3, 2), y (2, 2)", data.load, "npz", str(rows)
    )


def test_npz_label_names_that_are_not_utf8(tmp_path):
    path = save_npz(tmp_path / "names.npz", x=X, y=Y, label_names=np.array([b"\xff", b"b"]))
    raises(  # was UnicodeDecodeError
        f"{path}: label_names are not UTF-8 (invalid start byte)", data.load, "npz", str(path)
    )


# ----------------------------------------------------------------------------
# simulate.load (--simulation=FILE).


@pytest.fixture
def full(tmp_path):
    return data.load("npz", str(save_npz(tmp_path / "full.npz", x=X, y=Y)))


def test_simulation_file_that_is_empty(tmp_path, full):
    path = tmp_path / "sim.npz"
    path.write_bytes(b"")
    # Was EOFError: No data left in file.
    raises(f"{path}: not a kpartial simulation file: empty file", simulate.load, path, full)


def test_simulation_file_that_is_not_an_npz(tmp_path, full):
    path = tmp_path / "sim.npz"
    path.write_text("scheme,seed\nkeep_fraction,1\n")
    # Was a plain ValueError blaming pickling.
    raises(f"{path}: not a kpartial simulation file: not a zip archive", simulate.load, path, full)


def test_simulation_file_that_is_another_npz_or_lacks_its_meta(tmp_path, full):
    path = tmp_path / "data.npz"
    raises(
        f"{path}: not a kpartial simulation file: no ['indptr', 'classes', 'values', "
        "'num_classes', 'meta'] (found ['x', 'y'])",
        simulate.load,
        save_npz(path, x=X, y=Y),
        full,
    )
    no_names = tmp_path / "no_names.npz"
    SparseLabels.from_dense(Y).save(no_names, meta=np.array(json.dumps({"scheme": "x"})))
    raises(  # was KeyError: 'label_names'
        f"{no_names}: not a kpartial simulation file: meta has no label_names list",
        simulate.load,
        no_names,
        full,
    )


# ----------------------------------------------------------------------------
# Duplicate class names, checked once for every reader.


def test_duplicate_label_names_in_an_npz(tmp_path):
    path = save_npz(tmp_path / "dup.npz", x=X, y=Y, label_names=np.array(["a", "a"]))
    raises(
        f"npz:{path}: duplicate class name 'a' (classes 0 and 1, 0-based)",
        data.load,
        "npz",
        str(path),
    )


def test_duplicate_label_in_a_mulan_xml(tmp_path):
    (tmp_path / "toy.xml").write_text(
        '<labels xmlns="http://mulan.sourceforge.net/labels">'
        '<label name="a"/><label name="b"><label name="a"/></label></labels>'
    )
    arff = tmp_path / "toy-train.arff"
    arff.write_text(
        "@relation t\n@attribute f numeric\n@attribute a {0,1}\n@attribute b {0,1}\n"
        "@data\n1,1,0\n2,0,1\n"
    )
    # Was loaded, the second 'a' merged into the first.
    raises(f"{tmp_path / 'toy.xml'}: label 'a' is listed twice", data.load, "mulan", str(arff))


def test_duplicate_class_columns_in_a_manifest_or_moleculenet_csv(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,f1,cat,dog,cat\n1,0.5,1,0,0\n2,0.7,0,1,1\n")
    # Was loaded with classes ('cat', 'dog', 'cat.1'): pandas renames repeated columns.
    raises(
        f"{manifest}:1: column 'cat' appears twice",
        data.load,
        "manifest",
        str(manifest),
        feature_columns="f1",
    )
    tox = tmp_path / "tox.csv"
    tox.write_text("smiles,NR-AR,NR-AR\nCC,1,0\nCCC,0,1\n")
    raises(
        f"{tox}:1: column 'NR-AR' appears twice",
        data.load,
        "moleculenet",
        str(tox),
        featurizer="none",
    )


def _coco_file(tmp_path, categories, annotations):
    """instances_val.json with one image (val/a.jpg) and the given categories and annotations."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "a.jpg").write_bytes(b"")
    path = tmp_path / "annotations" / "instances_val.json"
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "categories": categories,
        "annotations": annotations,
    }
    path.write_text(json.dumps(coco))
    return path


def test_duplicate_category_names_in_coco(tmp_path):
    path = _coco_file(
        tmp_path,
        [{"id": 1, "name": "cat"}, {"id": 2, "name": "cat"}],
        [{"id": 1, "image_id": 1, "category_id": 1}],
    )
    raises(
        f"coco:{path}: duplicate class name 'cat' (classes 0 and 1, 0-based)",
        data.load,
        "coco",
        str(path),
    )


# ----------------------------------------------------------------------------
# Class statistics CSV (--class_stats).

HEADER = "label,positives,negatives,prior\n"


def stats(tmp_path, text, names=("a", "b")):
    path = tmp_path / "stats.csv"
    path.write_text(text)
    return path, lambda: class_stats.ClassStatistics.from_csv(path, names)


def test_statistics_csv_that_is_empty_or_header_only(tmp_path):
    path, read = stats(tmp_path, "")
    raises(f"{path}: empty class statistics CSV (no header line)", read)  # was EmptyDataError
    path, read = stats(tmp_path, HEADER)
    raises(f"{path}: no statistics rows after the header", read)


@pytest.mark.parametrize(
    "row_a, message",
    [
        ("a,-1,5,0.2", "line 2: positives of 'a' must be a non-negative integer, got '-1'"),
        ("a,1,-5,0.2", "line 2: negatives of 'a' must be a non-negative integer, got '-5'"),
        ("a,x,5,0.2", "line 2: positives of 'a' must be a non-negative integer, got 'x'"),
        ("a,1.5,5,0.2", "line 2: positives of 'a' must be a non-negative integer, got '1.5'"),
        ("a,1e30,5,0.2", "line 2: positives of 'a' must be a non-negative integer, got '1e30'"),
        ("a,1,,0.2", "line 2: negatives of 'a' must be a non-negative integer, got ''"),
        ("a,1,5,2", "line 2: prior of 'a' must be a number in (0, 1), got '2'"),
        ("a,1,5,-0.1", "line 2: prior of 'a' must be a number in (0, 1), got '-0.1'"),
        ("a,1,5,nan", "line 2: prior of 'a' must be a number in (0, 1), got 'nan'"),
        ("a,1,5,high", "line 2: prior of 'a' must be a number in (0, 1), got 'high'"),
    ],
)
def test_statistics_csv_impossible_counts_and_priors(tmp_path, row_a, message):
    path, read = stats(tmp_path, f"{HEADER}{row_a}\nb,3,4,0.4\n")
    raises(f"{path}: {message}", read)


def test_statistics_csv_counts_written_as_floats_and_an_inconsistent_prior_are_fine(tmp_path):
    _, read = stats(tmp_path, f"{HEADER}a,3.0,5,0.9\nb,+2,0,0.5\n")
    table = read()
    np.testing.assert_array_equal(table.positives, [3, 2])
    np.testing.assert_allclose(table.priors, [0.9, 0.5])


def test_statistics_csv_that_is_ragged_not_utf8_or_missing(tmp_path):
    path, read = stats(tmp_path, f"{HEADER}a,1,5,0.2,4,5\nb,1,5,0.2\n")
    # Was TypeError: pandas made the first fields of the long row an index.
    raises(f"{path}:2: 6 fields, the header has 4", read)
    path.write_bytes(HEADER.encode() + b"a,1,5,0.2\n\xe9,1,5,0.2\n")
    raises(f"{path}:3: class statistics CSV is not UTF-8 text (invalid continuation byte)", read)
    missing = tmp_path / "none.csv"
    raises(
        f"{missing}: cannot read class statistics CSV: [Errno 2] No such file or directory: "
        f"'{missing}'",
        class_stats.ClassStatistics.from_csv,
        missing,
        ["a"],
    )


# ----------------------------------------------------------------------------
# Mulan ARFF whose XML leaves out a label: the label is read as a feature, without a traceback.


def test_mulan_label_left_out_of_the_xml_is_a_feature_not_a_crash(tmp_path):
    (tmp_path / "toy.xml").write_text('<labels><label name="a"/></labels>')
    arff = tmp_path / "toy-train.arff"
    arff.write_text(
        "@relation t\n@attribute f numeric\n@attribute a {0,1}\n@attribute b {0,1}\n"
        "@data\n1,1,0\n2,0,1\n{0 3,1 1}\n"
    )
    loaded = data.load("mulan", str(arff))
    assert loaded.label_names == ("a",)
    np.testing.assert_array_equal(loaded.features, [[1, 0], [2, 1], [3, 0]])  # b: nominal index
    arff.write_text(arff.read_text() + "4,1,?\n")  # an unknown 'b' is a missing feature value
    raises(
        f"{arff}:9: missing or non-finite value for feature 'b' (on_bad_input=skip drops and "
        "counts them)",
        data.load,
        "mulan",
        str(arff),
    )


# ----------------------------------------------------------------------------
# NaN / inf feature rows: an error naming the file and row (line), or with on_bad_input=skip
# dropped and counted. Mulan and npz stopped the run under "skip" too.

SKIP_HINT = " (on_bad_input=skip drops and counts them)"


def _mulan_toy(tmp_path, rows):
    (tmp_path / "toy.xml").write_text('<labels><label name="a"/><label name="b"/></labels>')
    arff = tmp_path / "toy-train.arff"
    arff.write_text(
        "@relation t\n@attribute f numeric\n@attribute g numeric\n@attribute a {0,1}\n"
        "@attribute b {0,1}\n@data\n" + "".join(f"{row}\n" for row in rows)
    )
    return arff


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e40"])
def test_mulan_non_finite_feature_row_is_an_error_or_skipped_and_counted(tmp_path, value):
    arff = _mulan_toy(tmp_path, ["1,2,1,0", f"3,{value},0,1", "{1 " + value + ",2 1}", "5,6,1,1"])
    raises(
        f"{arff}:8: missing or non-finite value for feature 'g' (2 such records){SKIP_HINT}",
        data.load,
        "mulan",
        str(arff),
    )
    loaded = data.load("mulan", str(arff), on_bad_input="skip")
    assert loaded.skipped == {"missing or non-finite value for feature 'g'": 2}
    np.testing.assert_array_equal(loaded.features, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(loaded.labels, [[1, -1], [1, 1]])


def test_mulan_bad_label_value_is_skipped_and_counted(tmp_path):
    arff = _mulan_toy(tmp_path, ["1,2,1,0", "3,4,1,2", "5,6,0,1"])
    arff.write_text(arff.read_text().replace("b {0,1}", "b numeric"))  # so 2 parses
    raises(
        f"{arff}:8: label 'b' has value '2.0'; expected 1, 0 or ?{SKIP_HINT}",
        data.load,
        "mulan",
        str(arff),
    )
    loaded = data.load("mulan", str(arff), on_bad_input="skip")
    assert loaded.skipped == {"label 'b' has value '2.0'; expected 1, 0 or ?": 1}
    assert loaded.num_examples == 2


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e39])
def test_npz_non_finite_feature_row_is_an_error_or_skipped_and_counted(tmp_path, value):
    x = np.arange(8, dtype=np.float64).reshape(4, 2)
    x[1, 1] = x[3, 0] = value
    y = np.array([[1, -1], [1, 0], [-1, 1], [0, 1]])
    path = save_npz(tmp_path / "d.npz", x=x, y=y)
    raises(
        f"{path}: row 1 (0-based), x column 1 = {value}: non-finite feature value (NaN, inf or "
        f"beyond float32) (2 such records){SKIP_HINT}",
        data.load,
        "npz",
        str(path),
    )
    loaded = data.load("npz", str(path), on_bad_input="skip")
    assert loaded.skipped == {"non-finite feature value (NaN, inf or beyond float32)": 2}
    np.testing.assert_array_equal(loaded.features, x[[0, 2]])
    np.testing.assert_array_equal(loaded.labels, y[[0, 2]])


def test_npz_label_value_outside_the_three_is_skipped_and_counted(tmp_path):
    path = save_npz(tmp_path / "d.npz", x=X, y=np.array([[1, -1], [1, 3], [-1, 1]]))
    raises(
        f"{path}: row 1 (0-based), y = 3: label value other than 1, 0 or -1{SKIP_HINT}",
        data.load,
        "npz",
        str(path),
    )
    loaded = data.load("npz", str(path), on_bad_input="skip")
    assert loaded.skipped == {"label value other than 1, 0 or -1": 1}
    np.testing.assert_array_equal(loaded.labels, [[1, -1], [-1, 1]])


# ----------------------------------------------------------------------------
# Found by tests/data/test_fuzz_readers.py.


def test_coco_with_an_unhashable_id_or_non_list_annotations(tmp_path):
    path = _coco_file(
        tmp_path,
        [{"id": 1, "name": "cat"}],
        [
            {"id": 1, "image_id": 1, "category_id": 1},
            {"id": 2, "image_id": {}, "category_id": 1},
        ],
    )
    raises(  # was TypeError: unhashable type: 'dict'
        f"{path}: annotation 2 (image_id {{}}): annotation refers to an unknown image_id "
        "(on_bad_input=skip drops and counts them)",
        data.load,
        "coco",
        str(path),
    )
    assert data.load("coco", str(path), on_bad_input="skip").skipped == {
        "annotation refers to an unknown image_id": 1
    }
    coco = json.loads(path.read_text())
    path.write_text(json.dumps({**coco, "annotations": 7}))
    raises(  # was TypeError: 'int' object is not iterable
        f"{path}: not a COCO instances file ('annotations' is not a list of objects)",
        data.load,
        "coco",
        str(path),
    )
    path.write_text(json.dumps({**coco, "images": [{"id": 1, "file_name": None}]}))
    raises(  # was TypeError from os.path.join
        f"{path}: image file_name None (entry 0 in id order) is not a string",
        data.load,
        "coco",
        str(path),
    )


def test_mulan_xml_with_an_unknown_encoding_and_a_repeated_sparse_index(tmp_path):
    xml = tmp_path / "toy.xml"
    xml.write_text('<?xml version="1.0" encoding="inf"?><labels><label name="a"/></labels>')
    arff = tmp_path / "toy-train.arff"
    arff.write_text("@relation t\n@attribute f numeric\n@attribute a {0,1}\n@data\n{0 1,1 1,1 0}\n")
    raises(  # was LookupError
        f"{xml}: cannot read Mulan label XML: unknown encoding: inf", data.load, "mulan", str(arff)
    )
    xml.write_text('<labels><label name="a"/></labels>')
    # Was loaded with the last value winning.
    raises(f"{arff}:5: sparse index repeated", data.load, "mulan", str(arff))


def test_open_images_class_files_that_are_not_utf8_or_ragged(tmp_path):
    (tmp_path / "oidv7-class-descriptions.csv").write_text("LabelName,DisplayName\n/m/01,Cat\n")
    (tmp_path / "oidv7-train-annotations-human-imagelabels.csv").write_text(
        "ImageID,Source,LabelName,Confidence\n000a1249af2bc5f0,verification,/m/01,1\n"
    )
    trainable = tmp_path / "oidv7-classes-trainable.txt"
    trainable.write_bytes(b"/m/\xff1\n")
    raises(  # was UnicodeDecodeError
        f"{trainable}: cannot read class list: 'utf-8' codec can't decode byte 0xff in position "
        "3: invalid start byte",
        data.load,
        "openimages",
        str(tmp_path),
        with_images=False,
    )
    trainable.unlink()
    descriptions = tmp_path / "oidv7-class-descriptions.csv"
    descriptions.write_text("LabelName,DisplayName\n/m/01,Cat,extra\n")
    raises(  # pandas' message ended with a newline
        f"{descriptions}: cannot read class descriptions: Error tokenizing data. C error: "
        "Expected 2 fields in line 2, saw 3",
        data.load,
        "openimages",
        str(tmp_path),
        with_images=False,
    )


def test_csv_whose_first_record_is_too_long_is_not_shifted(tmp_path):
    tox = tmp_path / "tox.csv"
    tox.write_text("smiles,T1,T2\nCC,1,0,1\nCCC,0,1\n")
    # pandas made 'CC' an index and shifted the columns; now the record is bad input.
    raises(
        f"{tox}:2: 4 fields, the header has 3: record with a wrong number of fields "
        "(on_bad_input=skip drops and counts them)",
        data.load,
        "moleculenet",
        str(tox),
        featurizer="none",
    )
    loaded = data.load("moleculenet", str(tox), featurizer="none", on_bad_input="skip")
    np.testing.assert_array_equal(loaded.labels, [[-1, 1]])
    assert loaded.skipped == {"record with a wrong number of fields": 1}


def test_a_manifest_without_class_columns_or_with_every_record_skipped(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("id,f1\n1,0.5\n")
    raises(
        f"{path}: no class columns (columns: ['id', 'f1']); expected one per class or "
        "'positives'/'negatives' list columns",
        data.load,
        "manifest",
        str(path),
        feature_columns="f1",
    )
    path.write_text("id,f1,cat\n1,x,1\n")
    raises(
        f"manifest:{path}: no examples after skipping "
        "{\"missing or non-finite value for feature 'f1'\": 1, 'class without any known label "
        "(empty class)': 1}",
        data.load,
        "manifest",
        str(path),
        feature_columns="f1",
        on_bad_input="skip",
    )


def test_messages_quoting_library_errors_stay_on_one_line():
    assert str(data.DataError("f.csv: cannot read: Expected 2 fields\n")) == (
        "f.csv: cannot read: Expected 2 fields"
    )
    assert re.fullmatch(r"a b", str(data.DataError("a\n  b")))


@pytest.mark.parametrize(
    "option, value", [("fingerprint_bits", 0), ("fingerprint_bits", -5), ("fingerprint_bits", "abc"),
                      ("fingerprint_bits", 10**8), ("fingerprint_radius", -1)]
)  # fmt: skip
def test_moleculenet_fingerprint_options_are_one_line(tmp_path, option, value):
    path = tmp_path / "m.csv"
    path.write_text("smiles,task\nCCO,1\nCCN,0\n")
    with pytest.raises(data.DataError, match=f"reader option {option} must be an integer"):
        data.load("moleculenet", str(path), featurizer="none", **{option: value})
