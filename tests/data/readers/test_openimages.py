"""The Open Images reader on a tiny, format-exact fixture (oidv7 file names and columns)."""

import os
import re

import numpy as np
import pytest

from kpartial import data
from kpartial.data.readers import openimages
from kpartial.sparse_labels import SparseLabels

FLOWER, TORTOISE, PERSON, DOG, PLANT = (
    "/m/0c9ph5",
    "/m/011k07",
    "/m/01g317",
    "/m/0bt9lr",
    "/m/05s2s",
)
DESCRIPTIONS = (
    "LabelName,DisplayName\n"
    f"{FLOWER},Flower\n"
    f"{TORTOISE},Tortoise\n"
    f"{PERSON},Person\n"
    f"{DOG},Dog\n"
    f"{PLANT},Plant\n"
)
# Not in description order, and without Dog.
TRAINABLE = f"{PLANT}\n{TORTOISE}\n{FLOWER}\n{PERSON}\n"

A, B, C, D, E = (
    "000a1249af2bc5f0",
    "0001eeaf4aed83f9",
    "00075905539074f2",
    "ffff21932da3ed01",
    "5a1b2c3d4e5f6071",
)
IMAGES = (A, B, C, D, E)
ROWS = [  # line 2 onwards
    f"{A},verification,{FLOWER},1",  # 2
    f"{A},verification,{TORTOISE},0",  # 3
    f"{B},crowdsource-verification,{PERSON},1",  # 4
    f"{C},verification,{PLANT},0",  # 5
    f"{C},verification,{FLOWER},0",  # 6
    f"{B},verification,{DOG},1",  # 7 (not trainable)
    f"{D},verification,{PLANT},1",  # 8
    f"{D},crowdsource-verification,{PERSON},0",  # 9
    f"{A},verification,{PERSON},0",  # 10
    f"{E},verification,{TORTOISE},0",  # 11
]
ANNOTATIONS = "oidv7-train-annotations-human-imagelabels.csv"
# Examples by image id: B, C, A, E, D. Classes (auto): Flower, Tortoise, Person, Plant.
ORDER = [B, C, A, E, D]
EXPECTED = np.array(
    [
        [0, 0, 1, 0],  # B
        [-1, 0, 0, -1],  # C
        [1, -1, -1, 0],  # A
        [0, -1, 0, 0],  # E
        [0, 0, -1, 1],  # D
    ],
    np.int8,
)


def write_fixture(folder, extra_rows=(), images=IMAGES, image_dir="images", trainable=True):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "oidv7-class-descriptions.csv").write_text(DESCRIPTIONS)
    if trainable:
        (folder / "oidv7-classes-trainable.txt").write_text(TRAINABLE)
    rows = ["ImageID,Source,LabelName,Confidence", *ROWS, *extra_rows]
    (folder / ANNOTATIONS).write_text("\n".join(rows) + "\n")
    pictures = folder / image_dir
    pictures.mkdir(exist_ok=True)
    for image in images:
        (pictures / f"{image}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def load(folder, **options):
    return data.load("openimages", str(folder), **options)


def dense(result):
    assert isinstance(result.labels, SparseLabels)
    return result.labels.to_dense()


def test_reads_exact_labels_sorted_by_image_in_description_order(tmp_path):
    folder = write_fixture(tmp_path / "oi")
    result = load(folder)
    assert result.label_names == (FLOWER, TORTOISE, PERSON, PLANT)
    np.testing.assert_array_equal(dense(result), EXPECTED)
    assert result.image_paths.tolist() == [str(folder / "images" / f"{i}.jpg") for i in ORDER]
    assert result.features is None and result.skipped == {}
    assert result.source == f"openimages:{folder / ANNOTATIONS}"


def test_without_trainable_list_auto_means_all(tmp_path):
    folder = write_fixture(tmp_path / "oi", trainable=False)
    assert load(folder).label_names == (FLOWER, TORTOISE, PERSON, DOG, PLANT)


def test_classes_all_keeps_untrainable_classes(tmp_path):
    folder = write_fixture(tmp_path / "oi")
    result = load(folder, classes="all")
    assert result.label_names == (FLOWER, TORTOISE, PERSON, DOG, PLANT)
    expected = np.insert(EXPECTED, 3, [1, 0, 0, 0, 0], axis=1)  # Dog: B positive
    np.testing.assert_array_equal(dense(result), expected)


def test_classes_file_gives_its_order_and_drops_images_without_labels(tmp_path):
    folder = write_fixture(tmp_path / "oi")
    classes = tmp_path / "label_names.txt"
    classes.write_text(f"{PLANT}\n\n{FLOWER}\n")
    result = load(folder, classes=str(classes))
    assert result.label_names == (PLANT, FLOWER)
    # B and E have no Plant/Flower label and are not examples.
    np.testing.assert_array_equal(dense(result), [[-1, -1], [0, 1], [1, 0]])
    assert result.image_paths.tolist() == [str(folder / "images" / f"{i}.jpg") for i in (C, A, D)]


def test_classes_file_errors_name_the_file_and_line(tmp_path):
    folder = write_fixture(tmp_path / "oi")
    classes = tmp_path / "label_names.txt"
    classes.write_text(f"{PLANT}\n/m/0zzzz\n")
    with pytest.raises(data.DataError, match=re.escape(f"{classes}:2: class '/m/0zzzz' is not")):
        load(folder, classes=str(classes))
    classes.write_text(f"{PLANT}\n{PLANT}\n")
    with pytest.raises(data.DataError, match=re.escape(f"{classes}: a class is listed twice")):
        load(folder, classes=str(classes))


def test_min_count_drops_classes_with_too_few_positives(tmp_path):
    folder = write_fixture(tmp_path / "oi")
    result = load(folder, min_count=1)
    # Tortoise has no positive; E had only Tortoise and goes with it.
    assert result.label_names == (FLOWER, PERSON, PLANT)
    np.testing.assert_array_equal(dense(result), EXPECTED[[0, 1, 2, 4]][:, [0, 2, 3]])
    assert result.image_paths.tolist() == [
        str(folder / "images" / f"{i}.jpg") for i in (B, C, A, D)
    ]


def test_labels_only_and_image_dir_and_csv_path(tmp_path):
    folder = write_fixture(tmp_path / "oi", images=())
    labels_only = load(folder, with_images=False)
    assert labels_only.image_paths is None
    np.testing.assert_array_equal(dense(labels_only), EXPECTED)

    elsewhere = tmp_path / "pictures"
    elsewhere.mkdir()
    for image in IMAGES:
        (elsewhere / f"{image}.jpg").write_bytes(b"x")
    result = load(folder, image_dir=str(elsewhere))
    assert result.image_paths.tolist() == [str(elsewhere / f"{i}.jpg") for i in ORDER]

    write_fixture(folder)  # now with images/
    from_csv = load(folder / ANNOTATIONS)
    np.testing.assert_array_equal(dense(from_csv), EXPECTED)
    assert from_csv.image_paths.tolist() == [str(folder / "images" / f"{i}.jpg") for i in ORDER]


def test_small_chunks_give_identical_results(tmp_path):
    extra = [f"{A},verification,{FLOWER},1", f"zz{A[2:]},verification,{FLOWER},1"]
    folder = write_fixture(tmp_path / "oi", extra_rows=extra)
    whole = load(folder, on_bad_input="skip")
    for chunk_rows in (1, 2, 3):
        chunked = load(folder, on_bad_input="skip", chunk_rows=chunk_rows)
        np.testing.assert_array_equal(chunked.labels.indptr, whole.labels.indptr)
        np.testing.assert_array_equal(chunked.labels.classes, whole.labels.classes)
        np.testing.assert_array_equal(chunked.labels.values, whole.labels.values)
        assert chunked.label_names == whole.label_names
        assert chunked.image_paths.tolist() == whole.image_paths.tolist()
        assert chunked.skipped == whole.skipped
    np.testing.assert_array_equal(dense(whole), EXPECTED)


def test_bad_hex_ids_in_several_chunks_are_counted_under_one_reason(tmp_path):
    extra = [f"{A[:-1]}g,verification,{FLOWER},1", f"{B[:-1]},verification,{FLOWER},1"]
    folder = write_fixture(tmp_path / "oi", extra_rows=extra)
    for chunk_rows in (1, 1000):  # in separate chunks, in one chunk
        result = load(folder, on_bad_input="skip", chunk_rows=chunk_rows)
        assert result.skipped == {"ImageID is not 16 hex digits": 2}
        np.testing.assert_array_equal(dense(result), EXPECTED)


BAD_ROWS = [
    # (extra row at line 12, what the error says after "file:12: <row>: ", the reason counted)
    (f"000a1249af2bc5fz,verification,{FLOWER},1", "ImageID is not 16 hex digits"),
    (f"{A}1,verification,{FLOWER},1", "ImageID is not 16 hex digits"),
    (f"{A},verification,{PLANT},0.5", "Confidence is not 0 or 1"),
    (
        f"{A},verification,/m/0zzzzz,1",
        "LabelName is not in the class descriptions (unknown class)",
    ),
]


@pytest.mark.parametrize("row, reason", BAD_ROWS)
def test_bad_rows_name_file_line_and_row_or_are_skipped(tmp_path, row, reason):
    folder = write_fixture(tmp_path / "oi", extra_rows=[row])
    image, _, label, confidence = row.split(",")
    where = f"{folder / ANNOTATIONS}:12: {[image, label, confidence]}: "
    with pytest.raises(data.DataError, match=re.escape(where + reason + " (on_bad_input=skip")):
        load(folder)
    result = load(folder, on_bad_input="skip")
    np.testing.assert_array_equal(dense(result), EXPECTED)  # the row is dropped, the rest kept
    assert result.skipped == {reason: 1}


def test_duplicate_row_keeps_the_first(tmp_path):
    folder = write_fixture(tmp_path / "oi", extra_rows=[f"{B},verification,{PERSON},1"])
    reason = f"duplicate row (image {B}, class {PERSON}; also line 4)"
    with pytest.raises(data.DataError, match=re.escape(f"{folder / ANNOTATIONS}:12: {reason}")):
        load(folder)
    result = load(folder, on_bad_input="skip")
    np.testing.assert_array_equal(dense(result), EXPECTED)
    assert result.skipped == {reason: 1}


def test_conflicting_pair_drops_both_rows(tmp_path):
    folder = write_fixture(tmp_path / "oi", extra_rows=[f"{B},verification,{PERSON},0"])
    message = f"{folder / ANNOTATIONS}:12: pair marked both positive and negative (image {B}, "
    with pytest.raises(data.DataError, match=re.escape(message)):
        load(folder)
    result = load(folder, on_bad_input="skip")
    # B had only that label (Dog is not trainable), so B is gone.
    np.testing.assert_array_equal(dense(result), EXPECTED[1:])
    assert result.image_paths.tolist() == [str(folder / "images" / f"{i}.jpg") for i in ORDER[1:]]
    assert result.skipped == {
        f"pair marked both positive and negative (image {B}, class {PERSON}; also line 4)": 1
    }


def test_missing_image_names_the_image_and_line(tmp_path):
    folder = write_fixture(tmp_path / "oi", images=(B, C, D, E))
    path = folder / "images" / f"{A}.jpg"
    with pytest.raises(
        data.DataError, match=re.escape(f"{folder / ANNOTATIONS}:2: image {path} does not exist")
    ):
        load(folder)
    result = load(folder, on_bad_input="skip")
    np.testing.assert_array_equal(dense(result), EXPECTED[[0, 1, 3, 4]])
    assert result.image_paths.tolist() == [
        str(folder / "images" / f"{i}.jpg") for i in (B, C, E, D)
    ]
    assert result.skipped == {f"image {path} does not exist": 1}
    assert load(folder, with_images=False).num_examples == 5  # not checked without images


def test_missing_files_are_named(tmp_path):
    folder = write_fixture(tmp_path / "oi")
    os.remove(folder / "oidv7-class-descriptions.csv")
    with pytest.raises(
        data.DataError, match=re.escape(f"{folder}: expected one class description")
    ):
        load(folder)
    folder = write_fixture(tmp_path / "oi2")
    os.remove(folder / ANNOTATIONS)
    with pytest.raises(
        data.DataError, match=re.escape(f"{folder}: expected one train annotations")
    ):
        load(folder)
    with pytest.raises(data.DataError, match=re.escape(f"{folder}: expected one validation")):
        load(folder, split="validation")


def test_image_keys_and_key_strings_round_trip():
    ids = np.array(
        ["0123456789abcdef", "FFFFFFFFFFFFFFFF", A, "xyz", "0123456789abcdef0", "0123456789abcdeg"]
    )
    keys, ok = openimages.image_keys(ids)
    np.testing.assert_array_equal(ok, [True, True, True, False, False, False])
    assert keys.dtype == np.uint64
    np.testing.assert_array_equal(
        keys[ok], np.array([0x0123456789ABCDEF, 0xFFFFFFFFFFFFFFFF, int(A, 16)], np.uint64)
    )
    strings = openimages.key_strings(keys[ok])
    assert strings.dtype == np.dtype("S16")
    assert strings.tolist() == [b"0123456789abcdef", b"ffffffffffffffff", A.encode()]
    np.testing.assert_array_equal(openimages.image_keys(strings.astype(str))[0], keys[ok])
