"""Seeded fuzzing of the readers: damaged files load, or fail with a one-line DataError naming them.

Each case takes a small, valid fixture, damages one of its files (flipped bytes, a truncation,
deleted or repeated lines; seeded NumPy RNG) and loads it with ``on_bad_input="error"`` and
``"skip"``. A case passes if the data loads (under "skip" possibly with counted skips) or
`kpartial.data.DataError` is raised with a one-line message naming the damaged file or the path
that was loaded; any other exception is a reader bug. The fixtures are inline, except MoleculeNet
and COCO, which use the first records of the real files in ``../shared`` when they are there.

TFRecord folders (feature and image records, written by `kpartial.tfrecords.write_tfrecords`)
are damaged in their shards and their index `dataset.json`; besides the byte-level damage above,
a shard may be emptied or cut at a record boundary (which TFRecord framing alone cannot tell from
a complete shard) and an index field may be deleted or replaced. A TFRecord folder that loads
under "error" must hold exactly the pristine labels and features.
"""

import json
import pathlib
import re
import traceback

import numpy as np
import pytest

from kpartial import data, tfrecords
from tests.helpers import JPEG, SHARED_DATA

CASES_PER_FORMAT = 50  # 11 formats x 50 = 550 damaged files, each loaded under both policies

MULAN_XML = """<?xml version="1.0" encoding="utf-8"?>
<labels xmlns="http://mulan.sourceforge.net/labels">
<label name="sun"></label>
<label name="sea"></label>
<label name="big 'cat'"></label>
</labels>
"""

MULAN_DENSE = """% toy
@relation toy
@attribute f0 numeric
@attribute sun {0,1}
@attribute 'f 1' real
@attribute colour {red,'dark blue',green}
@attribute sea {0,1}
@attribute 'big \\'cat\\'' {0,1}
@data
1.5,1,0.25,red,0,1
-2,0,4e1,'dark blue',1,0
0.5,?,3,green,1,1
7,1,-1,red,0,0
0,0,2,green,1,?
3.25,1,8,'dark blue',?,1
"""

MULAN_SPARSE = """@relation toy-sparse
@attribute f0 numeric
@attribute sun {0,1}
@attribute f1 numeric
@attribute sea {0,1}
@attribute "big 'cat'" {0,1}
@attribute f2 numeric
@data
{0 1.5,1 1,4 1}
{2 -3,3 1}
{1 1,3 1,5 2.5}
{0 4,4 ?,5 1}
{1 ?,2 1,3 1,4 1}
{0 -1,1 1,4 1}
"""

TOX21_HEADER = (
    "smiles,NR-AR,NR-AR-LBD,NR-AhR,NR-Aromatase,NR-ER,NR-ER-LBD,NR-PPAR-gamma,SR-ARE,SR-ATAD5,"
    "SR-HSE,SR-MMP,SR-p53"
)
TOX21_INLINE = f"""{TOX21_HEADER}
CCOc1ccc2nc(S(N)(=O)=O)sc2c1,0,0,1,,,0,0,1,0,0,0,0
CCN1C(=O)NC(c2ccccc2)C1=O,0,0,0,0,0,0,0,,0,,0,0
CC[C@]1(O)CC[C@H]2[C@@H]3CCC4=CCCC[C@@H]4[C@H]3CC[C@@]21C,0,,0,,0,0,,0,,1,0,0
CCCCCCCC(=O)[O-].CCCCCCCC(=O)[O-].[Zn+2],0,0,0,0,0,0,0,0,0,0,,0
CC(O)(P(=O)(O)O)P(=O)(O)O,0,0,0,0,0,0,0,0,0,0,0,0
CC(C)(C)OOC(C)(C)CCC(C)(C)OOC(C)(C)C,0,0,0,0,0,0,0,,0,,0,0
O=S(=O)(Cl)c1ccccc1,0,0,0,0,0,0,0,1,0,0,1,0
O=C(O)Cc1cc(I)c(Oc2ccc(O)c(I)c2)c(I)c1,0,0,0,,0,0,0,1,1,0,1,1
"""

MANIFEST_CLASSES = """id,f1,f2,cat,dog,bird
a,0.5,1.0,1,0,
b,-1.5,2.0,0,1,-1
c,3.0,0.0,,1,1
d,0.25,-4.0,1,-1,0
e,1e-3,5.5,0,,1
f,2.0,2.0,1,1,-1
"""

MANIFEST_LISTS = """image,positives,negatives
x1.jpg,cat;dog,bird
x2.jpg,bird,cat
x3.jpg,,cat;dog
x4.jpg,dog,
x5.jpg,cat;bird,dog
"""

OI_DESCRIPTIONS = (
    "LabelName,DisplayName\n/m/0c9ph5,Flower\n/m/011k07,Tortoise\n/m/01g317,Person\n/m/0bt9lr,Dog\n"
)
OI_TRAINABLE = "/m/011k07\n/m/0c9ph5\n/m/01g317\n"
OI_IMAGES = ("000a1249af2bc5f0", "0001eeaf4aed83f9", "00075905539074f2", "ffff21932da3ed01")
OI_ANNOTATIONS = (
    "\n".join(
        [
            "ImageID,Source,LabelName,Confidence",
            f"{OI_IMAGES[0]},verification,/m/0c9ph5,1",
            f"{OI_IMAGES[0]},verification,/m/011k07,0",
            f"{OI_IMAGES[1]},crowdsource-verification,/m/01g317,1",
            f"{OI_IMAGES[2]},verification,/m/0c9ph5,0",
            f"{OI_IMAGES[1]},verification,/m/0bt9lr,1",
            f"{OI_IMAGES[3]},verification,/m/011k07,1",
            f"{OI_IMAGES[3]},crowdsource-verification,/m/01g317,0",
            f"{OI_IMAGES[0]},verification,/m/01g317,0",
        ]
    )
    + "\n"
)


def _coco_instances():
    """A handful of COCO images: the first of coco-tiny's val split, else an inline stand-in."""
    real = SHARED_DATA / "coco-tiny" / "annotations" / "instances_val2017.json"
    if real.is_file():
        coco = json.loads(real.read_text())
        images = sorted(coco["images"], key=lambda im: im["id"])[:5]
        ids = {im["id"] for im in images}
        annotations = [a for a in coco["annotations"] if a["image_id"] in ids]
        used = {a["category_id"] for a in annotations}
        return {
            "images": [{"id": im["id"], "file_name": im["file_name"]} for im in images],
            "categories": [c for c in coco["categories"] if c["id"] in used],
            "annotations": [
                {"id": a["id"], "image_id": a["image_id"], "category_id": a["category_id"]}
                for a in annotations
            ],
        }
    return {
        "images": [{"id": k, "file_name": f"{k:012d}.jpg"} for k in (3, 9, 12, 40)],
        "categories": [{"id": 1, "name": "person"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 1},
            {"id": 2, "image_id": 9, "category_id": 7},
            {"id": 3, "image_id": 12, "category_id": 1},
            {"id": 4, "image_id": 12, "category_id": 7},
            {"id": 5, "image_id": 40, "category_id": 7},
        ],
    }


def _tox21_text():
    real = SHARED_DATA / "moleculenet" / "tox21.csv"
    if real.is_file():
        return "".join(real.read_text().splitlines(keepends=True)[:41])  # header + 40 molecules
    return TOX21_INLINE


# Format -> function(folder) returning (fmt, path to load, options, files that may be damaged).
def _mulan(arff_text):
    def build(folder):
        (folder / "toy.xml").write_text(MULAN_XML)
        (folder / "toy-train.arff").write_text(arff_text)
        return "mulan", folder / "toy-train.arff", {}, ["toy-train.arff"] * 4 + ["toy.xml"]

    return build


def _moleculenet(folder):
    (folder / "tox21.csv").write_text(_tox21_text())
    return "moleculenet", folder / "tox21.csv", {"featurizer": "none"}, ["tox21.csv"]


def _manifest_classes(folder):
    (folder / "m.csv").write_text(MANIFEST_CLASSES)
    return "manifest", folder / "m.csv", {"feature_columns": "f*"}, ["m.csv"]


def _manifest_lists(folder):
    (folder / "m.csv").write_text(MANIFEST_LISTS)
    for k in range(1, 6):
        (folder / f"x{k}.jpg").write_bytes(b"")  # the reader only checks that images exist
    return "manifest", folder / "m.csv", {}, ["m.csv"]


def _coco(folder):
    coco = _coco_instances()
    (folder / "annotations").mkdir()
    (folder / "val").mkdir()
    for image in coco["images"]:
        (folder / "val" / image["file_name"]).write_bytes(b"")
    path = folder / "annotations" / "instances_val.json"
    path.write_text(json.dumps(coco, indent=1))  # one field per line, so lines can be deleted
    return "coco", path, {}, ["annotations/instances_val.json"]


def _npz(folder):
    rng = np.random.default_rng(0)
    y = rng.choice(np.array([1, -1, 0], np.int8), size=(6, 3))
    y[:, 0] = 1
    np.savez(
        folder / "d.npz",
        x=rng.normal(size=(6, 4)),
        y=y,
        label_names=np.array(["a", "b", "c"]),
    )
    return "npz", folder / "d.npz", {}, ["d.npz"]


def _npz_compressed(folder):
    fmt, _, options, _ = _npz(folder)
    arrays = dict(np.load(folder / "d.npz"))
    np.savez_compressed(folder / "c.npz", **arrays)
    return fmt, folder / "c.npz", options, ["c.npz"]


def _openimages(folder):
    (folder / "oidv7-class-descriptions.csv").write_text(OI_DESCRIPTIONS)
    (folder / "oidv7-classes-trainable.txt").write_text(OI_TRAINABLE)
    annotations = "oidv7-train-annotations-human-imagelabels.csv"
    (folder / annotations).write_text(OI_ANNOTATIONS)
    (folder / "images").mkdir()
    for image in OI_IMAGES:
        (folder / "images" / f"{image}.jpg").write_bytes(b"")
    files = [annotations] * 3 + ["oidv7-class-descriptions.csv", "oidv7-classes-trainable.txt"]
    return "openimages", folder, {}, files


def _tfrecord(inputs):
    def build(folder):
        rng = np.random.default_rng(1)
        labels = rng.choice(np.array([1, -1, 0], np.int8), size=(9, 3))
        labels[:, 0] = 1
        if inputs == "features":
            kind = {"features": rng.normal(size=(9, 4)).astype(np.float32)}
        else:
            (folder / "images").mkdir()
            kind = {"image_paths": [folder / "images" / f"{k}.jpg" for k in range(9)]}
            for path in kind["image_paths"]:
                path.write_bytes(JPEG)
        dataset = data.MultiLabelData(labels, ("a", "b", "c"), source="npz:/x/toy.npz", **kind)
        index = tfrecords.write_tfrecords(dataset, folder / "rec", num_shards=3)
        shards = [f"rec/{shard}" for shard in index["shards"]]
        return "tfrecord", folder / "rec", {}, shards * 2 + ["rec/dataset.json"] * 3

    return build


FORMATS = {
    "mulan_dense": _mulan(MULAN_DENSE),
    "mulan_sparse": _mulan(MULAN_SPARSE),
    "moleculenet": _moleculenet,
    "manifest_classes": _manifest_classes,
    "manifest_lists": _manifest_lists,
    "coco": _coco,
    "npz": _npz,
    "npz_compressed": _npz_compressed,
    "openimages": _openimages,
    "tfrecord_features": _tfrecord("features"),
    "tfrecord_images": _tfrecord("image"),
}
# Bytes that mean something to one of the formats, so that flips hit the parsers' branches.
SPECIAL = np.frombuffer(b",;{}'\"?\n\r\t %@.-+eE01\\:[]\x00\xff", np.uint8)


# Replacements for one token: other types (JSON), blanks, unknowns, non-finite and huge values.
TOKENS = [b"", b"?", b"-1", b"2", b"1.5", b"nan", b"inf", b"1e999", b"null", b"[]", b"{}", b'"x"']
TOKEN = re.compile(rb"[A-Za-z0-9_.+-]+")


def mutate(content: bytes, rng) -> tuple[bytes, str]:
    """A damaged copy of `content` and a description of the damage."""
    kind = rng.choice(["flip", "flip", "truncate", "delete_lines", "repeat_line", "token", "head"])
    buf = bytearray(content)
    if kind == "token":
        tokens = list(TOKEN.finditer(content))
        if tokens:
            m = tokens[int(rng.integers(len(tokens)))]
            new = TOKENS[int(rng.integers(len(TOKENS)))]
            return content[: m.start()] + new + content[m.end() :], f"token {m[0]!r} -> {new!r}"
        kind = "flip"
    if kind == "flip" or len(buf) < 2:
        where = sorted(int(k) for k in rng.integers(0, len(buf), size=rng.integers(1, 4)))
        for k in where:
            buf[k] = int(rng.choice(SPECIAL)) if rng.random() < 0.6 else int(rng.integers(256))
        return bytes(buf), f"flip bytes {where} -> {[buf[k] for k in where]}"
    if kind == "truncate":
        at = int(rng.integers(0, len(buf)))
        return bytes(buf[:at]), f"truncate at byte {at} of {len(buf)}"
    lines = content.splitlines(keepends=True)
    if kind == "head":  # nothing or only the first lines: empty files, header-only files
        k = int(rng.integers(0, 4))
        return b"".join(lines[:k]), f"keep only lines 1..{k}"
    k = int(rng.integers(0, len(lines)))
    if kind == "repeat_line":
        return b"".join(lines[: k + 1] + lines[k:]), f"repeat line {k + 1}"
    count = int(rng.integers(1, 3))
    return b"".join(lines[:k] + lines[k + count :]), f"delete lines {k + 1}..{k + count}"


def record_ends(content: bytes) -> list[int]:
    """The byte offsets where the records of a TFRecord file end: each record is an 8-byte
    little-endian length, a 4-byte checksum, the data and a 4-byte checksum."""
    ends, at = [], 0
    while at + 8 <= len(content):
        at += 16 + int.from_bytes(content[at : at + 8], "little")
        ends.append(at)
    return ends


INDEX_VALUES = [None, [], {}, "x", -1, 0, 2, 10**12, 1.5, True, ["x"], [0, 0, 0]]


def mutate_records(target: str, content: bytes, rng) -> tuple[bytes, str]:
    """`mutate`, or damage aimed at a TFRecord folder: an emptied shard, a shard cut at a record
    boundary, an index field deleted or given another value."""
    kind = rng.choice(["bytes", "bytes", "aimed"])
    if kind == "bytes":
        return mutate(content, rng)
    if target.endswith(".tfrecord"):
        ends = [0, *record_ends(content)[:-1]]
        at = ends[int(rng.integers(len(ends)))]
        return content[:at], f"cut at record boundary byte {at} of {len(content)}"
    index = json.loads(content)
    field = sorted(index)[int(rng.integers(len(index)))]
    if rng.random() < 0.4:
        del index[field]
        return json.dumps(index).encode(), f"delete index field {field!r}"
    value = INDEX_VALUES[int(rng.integers(len(INDEX_VALUES)))]
    index[field] = value
    return json.dumps(index).encode(), f"index field {field!r} -> {value!r}"


def same_data(a, b) -> bool:
    same_features = (a.features is None) == (b.features is None) and (
        a.features is None or np.array_equal(a.features, b.features)
    )
    return same_features and np.array_equal(a.dense_labels(), b.dense_labels())


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_damaged_files_load_or_raise_a_data_error_naming_the_file(tmp_path, name):
    fmt, path, options, targets = FORMATS[name](tmp_path)
    pristine = {t: (tmp_path / t).read_bytes() for t in set(targets)}
    original = data.load(fmt, str(path), **options)
    assert original.num_examples > 0  # the fixture itself is valid
    failures = []
    for seed in range(CASES_PER_FORMAT):
        rng = np.random.default_rng([sorted(FORMATS).index(name), seed])
        target = targets[int(rng.integers(len(targets)))]
        if fmt == "tfrecord":
            damaged, how = mutate_records(target, pristine[target], rng)
        else:
            damaged, how = mutate(pristine[target], rng)
        (tmp_path / target).write_bytes(damaged)
        for policy in ("error", "skip"):
            case = f"{name} seed {seed} ({policy}): {target}: {how}"
            try:
                loaded = data.load(fmt, str(path), on_bad_input=policy, **options)
            except data.DataError as e:
                message = str(e)
                names = (pathlib.Path(target).name, path.name)
                if "\n" in message or not any(n in message for n in names):
                    failures.append(f"{case}: message not one line naming the file: {message!r}")
            except Exception:  # noqa: BLE001 -- any other exception is the bug being looked for
                failures.append(f"{case}: {traceback.format_exc(limit=-3)}")
            else:
                if policy == "error" and loaded.skipped:
                    failures.append(f"{case}: skipped {loaded.skipped} under 'error'")
                if fmt == "tfrecord" and policy == "error" and not same_data(loaded, original):
                    failures.append(f"{case}: loaded other data than was written")
        (tmp_path / target).write_bytes(pristine[target])
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures)
