"""Sharded TFRecords with sparse partial labels: write once, stream inputs, hold labels sparsely.

A records folder holds its shard index `dataset.json` and shards `data-<k>-of-<n>.tfrecord`; shard k holds the
contiguous examples `[k*N/n, (k+1)*N/n)`. Each record is a `tf.train.Example` with

- `id` int64: the example's row 0..N-1 in record order (labels held in memory are looked up by
  id),
- `key` bytes: the source image path or example key,
- `positives`, `negatives` int64 lists: class ids of the known labels,
- either `image` bytes (the encoded file, as read from disk) or `features` float list [D].

The index lists the shards and how many records each holds (`shard_records`; indexes written
before it was recorded have only the total, `written_examples`).

`read_tfrecords` (format `tfrecord`) reads the labels (sparse) and, for feature data, the
features; image bytes stay on disk and `kpartial.input_sources` streams them from the shards.
"""

import json
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from kpartial import data
from kpartial.sparse_labels import SparseLabels, as_sparse

# The shard index: what the records hold (features or images, classes, skipped) and the shards.
INDEX_FILE = "dataset.json"
_SHARD_NAME = re.compile(r"data-\d{5}-of-\d{5}\.tfrecord")

# Reasons `read_tfrecords` counts under on_bad_input="skip" (feature data).
LOST_RECORDS = "records lost from a damaged or truncated shard"
NON_FINITE = "non-finite feature value"
BAD_LABELS = "class id out of range or listed twice"

_READ_BATCH = 4096


def shard_name(shard, num_shards):
    return f"data-{shard:05d}-of-{num_shards:05d}.tfrecord"


def _int64s(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def write_tfrecords(dataset, out_dir, num_shards=8, labels=None, on_bad_input="error"):
    """Writes `dataset` (a MultiLabelData) as sharded TFRecords plus their index `dataset.json`.

    The shards and the index are written to a temporary folder inside `out_dir` first. Then the
    old index (if any) is removed, the new shards are moved into place and the new index last, so
    a write that is killed leaves either the old records, or a folder without an index (read as
    "not a kpartial TFRecord folder"), never an index over shards it does not describe. Shards
    the old index listed that the new one does not are removed at the end.

    Args:
      dataset: features or image paths, and labels.
      out_dir: created if needed; existing shards of the same name are replaced.
      num_shards: number of files.
      labels: labels to write instead of `dataset.labels` (e.g. a simulation).
      on_bad_input: "error" or "skip" (counted) for an image file that cannot be read or is empty.

    Returns:
      The shard index dict written to `dataset.json`.

    Raises:
      ValueError: `num_shards` is not in 1..N.
      DataError: `dataset` has neither features nor images, or (policy "error") an image file
        cannot be read or is empty.
    """
    labels = as_sparse(dataset.labels if labels is None else labels)
    n = dataset.num_examples
    if num_shards < 1 or num_shards > max(n, 1):
        raise ValueError(f"num_shards must be in 1..{n}, got {num_shards}")
    if dataset.features is None and dataset.image_paths is None:
        raise data.DataError(f"{dataset.source}: neither features nor images to write")
    os.makedirs(out_dir, exist_ok=True)
    bad = data.BadInput(on_bad_input)
    bounds = np.linspace(0, n, num_shards + 1).round().astype(np.int64)
    staging = tempfile.mkdtemp(prefix=".writing-", dir=out_dir)
    try:
        shards, counts, written = [], [], 0
        for k in range(num_shards):
            shards.append(shard_name(k, num_shards))
            counts.append(0)
            with tf.io.TFRecordWriter(os.path.join(staging, shards[-1])) as writer:
                for row in range(bounds[k], bounds[k + 1]):
                    inputs = _example_inputs(dataset, row, bad)
                    if inputs is not None:  # None: an image skipped under on_bad_input="skip"
                        # Ids count written records, so they stay 0..N-1 when an image is skipped.
                        writer.write(_example(written, labels, row, inputs))
                        written += 1
                        counts[-1] += 1
        index = {
            "label_names": list(dataset.label_names),
            "num_examples": n,
            "written_examples": written,
            "inputs": "features" if dataset.features is not None else "image",
            "feature_dim": None if dataset.features is None else int(dataset.features.shape[1]),
            "shards": shards,
            "shard_records": counts,
            "source": dataset.source,
            "skipped": bad.counts,
        }
        with open(os.path.join(staging, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2)
        _replace_records(staging, out_dir, shards)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return index


def _replace_records(staging, out_dir, shards):
    """Moves the shards and index written to `staging` into `out_dir` (see `write_tfrecords`)."""
    index_path = os.path.join(out_dir, INDEX_FILE)
    old = []
    try:
        with open(index_path) as f:
            old = json.load(f).get("shards", [])
    except (OSError, ValueError, AttributeError):
        pass  # no (readable) old index: nothing to clean up after
    if os.path.lexists(index_path):
        os.remove(index_path)
    for shard in shards:
        os.replace(os.path.join(staging, shard), os.path.join(out_dir, shard))
    os.replace(os.path.join(staging, INDEX_FILE), index_path)
    old = old if isinstance(old, list) else []
    for shard in {s for s in old if isinstance(s, str)} - set(shards):
        if _SHARD_NAME.fullmatch(shard):  # only names write_tfrecords gives
            try:
                os.remove(os.path.join(out_dir, shard))
            except OSError:
                pass  # already gone


def _example_inputs(dataset, row, bad):
    """The "features" or "image", and "key" entries of `row`'s record; None for a skipped image."""
    if dataset.features is not None:
        values = tf.train.FloatList(value=dataset.features[row])
        key = f"{dataset.source}#{row}"
        return {"features": tf.train.Feature(float_list=values), "key": _bytes(key.encode())}
    key = str(dataset.image_paths[row])
    try:
        with open(key, "rb") as f:
            image = f.read()
    except OSError as e:
        bad.report(f"cannot read image: {e}", key)
        return None
    if not image:
        bad.report("image file is empty", key)
        return None
    return {"image": _bytes(image), "key": _bytes(key.encode())}


def _example(example_id, labels, row, inputs):
    """The serialized `tf.train.Example` of `row`'s labels and inputs, as record `example_id`."""
    start, end = labels.indptr[row], labels.indptr[row + 1]
    classes, values = labels.classes[start:end], labels.values[start:end]
    feature = {
        "id": _int64s([example_id]),
        "positives": _int64s(classes[values > 0]),
        "negatives": _int64s(classes[values < 0]),
        **inputs,
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def read_shard_index(path):
    """(folder, shard index dict) for a records folder or its `dataset.json`.

    Checks the index's fields (their types; a non-empty list of shard file names; a positive
    integer `feature_dim` for feature records; one record count per shard, adding up to
    `written_examples`, where the index has counts) and that every shard it lists is a file. It
    does not open the shards: `read_tfrecords` reads them.

    Raises:
      DataError: one line naming the folder or `dataset.json`: the index is missing, not JSON, or
        has a missing or malformed field, or a shard it lists is missing.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    try:
        with open(os.path.join(folder, INDEX_FILE), encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or UTF-8
        raise data.DataError(
            f"{folder}: not a kpartial TFRecord folder ({INDEX_FILE}: {e})"
        ) from None
    _check_index(index, os.path.join(folder, INDEX_FILE))
    for shard in index["shards"]:
        if not os.path.isfile(os.path.join(folder, shard)):
            raise data.DataError(f"{folder}: shard {shard} listed in {INDEX_FILE} is missing")
    return folder, index


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_index(index, where):
    """Raises DataError("<where>: ...") unless `index` has the fields `read_tfrecords` uses."""

    def fail(problem):
        raise data.DataError(f"{where}: {problem} (not an index written by kpartial.tfrecords)")

    if not isinstance(index, dict):
        fail(f"holds a JSON {type(index).__name__}, not an object")
    names = index.get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        fail("no 'label_names' list of class names")
    shards = index.get("shards")
    if not isinstance(shards, list) or not shards:
        fail("no 'shards' list")
    for shard in shards:
        if (
            not isinstance(shard, str)
            or shard in ("", ".", "..")
            or os.path.basename(shard) != shard
        ):
            fail(f"shard {shard!r} is not a file name in the folder")
    if len(set(shards)) != len(shards):
        fail("a shard is listed twice")
    if index.get("inputs") not in ("features", "image"):
        fail(f"'inputs' must be 'features' or 'image', got {index.get('inputs')!r}")
    dim = index.get("feature_dim")
    if index["inputs"] == "features" and not (_is_count(dim) and dim > 0):
        fail(f"'feature_dim' must be a positive integer for feature records, got {dim!r}")
    for field in ("num_examples", "written_examples"):
        if field in index and not _is_count(index[field]):
            fail(f"{field!r} must be a non-negative integer, got {index[field]!r}")
    if "num_examples" not in index:
        fail("no 'num_examples'")
    counts = index.get("shard_records")
    if counts is not None:
        if not (isinstance(counts, list) and len(counts) == len(shards)):
            fail(f"'shard_records' must list one record count per shard ({len(shards)})")
        if not all(_is_count(c) for c in counts):
            fail(f"'shard_records' must be non-negative integers, got {counts}")
        if "written_examples" in index and sum(counts) != index["written_examples"]:
            fail(
                f"'shard_records' add up to {sum(counts)}, 'written_examples' is "
                f"{index['written_examples']}"
            )
    skipped = index.get("skipped", {})
    if not isinstance(skipped, dict) or not all(_is_count(c) for c in skipped.values()):
        fail(f"'skipped' must map reasons to counts, got {skipped!r}")


def _feature_spec(index, with_inputs):
    spec = {
        "id": tf.io.FixedLenFeature([], tf.int64),
        "positives": tf.io.VarLenFeature(tf.int64),
        "negatives": tf.io.VarLenFeature(tf.int64),
    }
    if with_inputs:
        if index["inputs"] == "features":
            spec["features"] = tf.io.FixedLenFeature([index["feature_dim"]], tf.float32)
        else:
            spec["image"] = tf.io.FixedLenFeature([], tf.string)
            spec["key"] = tf.io.FixedLenFeature([], tf.string)
    return spec


def record_dataset(folder, index, with_inputs=True, file_order_seed=None, batch_size=None):
    """Parsed records; files interleaved in parallel, in shard order unless `file_order_seed` (a
    [2] stateless seed, e.g. from (seed, epoch)) draws a permutation of the shards."""
    files = tf.constant([os.path.join(folder, s) for s in index["shards"]])
    if file_order_seed is not None:
        files = tf.random.experimental.stateless_shuffle(files, file_order_seed)
    names = tf.data.Dataset.from_tensor_slices(files)
    if file_order_seed is None:  # evaluation and label reading: records in id order
        records = names.interleave(tf.data.TFRecordDataset, cycle_length=1)
    else:
        records = names.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(index["shards"]), 16),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,  # seeded runs repeat exactly
        )
    spec = _feature_spec(index, with_inputs)
    if batch_size:
        return records.batch(batch_size).map(
            lambda r: tf.io.parse_example(r, spec), num_parallel_calls=tf.data.AUTOTUNE
        )
    return records.map(
        lambda r: tf.io.parse_single_example(r, spec), num_parallel_calls=tf.data.AUTOTUNE
    )


class _Streamed(data.BadInput):
    """The bad-input policy of image records: the pipeline streams the shards as they are written,
    so a bad record cannot be dropped; `report` raises under either policy."""

    def report(self, reason, where, count=1):
        hint = "" if count == 1 else f" ({count} such records)"
        raise data.DataError(
            f"{where}: {reason}{hint} (image records are streamed from the shards as they are, "
            "so on_bad_input=skip cannot drop them: write the shards again)"
        )


def read_tfrecords(path, on_bad_input="error"):
    """Reads a folder written by `write_tfrecords` (or its `dataset.json`).

    Labels come back as SparseLabels, features (feature data) as an array; for image data the
    examples keep `records` (the shard files) and no paths: the pipeline streams image bytes.

    What is checked, all while loading: the index (see `read_shard_index`); then every record of
    every shard is read once, which checks the TFRecord framing and checksums (a truncated or
    bit-flipped shard), the number of records of each shard against the index's
    `shard_records` (an index without them: the total against `written_examples`), the ids
    (0..N-1 in shard order), the class ids (in range, none listed twice in a record) and, for
    feature data, that each record holds `feature_dim` finite values. For image data the first
    record of each shard is also parsed as the pipeline parses it (an `image` and a `key`);
    image bytes are not decoded here: the pipeline decodes them while training (a non-image
    names its record's key).

    Args:
      path: the records folder or its `dataset.json`.
      on_bad_input: "error": the first bad record raises. "skip", feature data: the records a
        damaged or truncated shard lost, records with a non-finite feature value, and records
        with a class id out of range or listed twice are dropped and counted in `skipped`
        (besides what `write_tfrecords` skipped); the examples are then numbered in record
        order. Image data is streamed from the shards as they are, so there every bad record
        raises under either policy.

    Raises:
      DataError: one line naming the folder, index or shard (and record): a bad index or missing
        shard; a record whose features do not match `feature_dim`, that is not a kpartial
        example, or ids out of order; a shard holding more records than its index lists; or a
        bad record (policy "error", or image data).
    """
    folder, index = read_shard_index(path)
    features = index["inputs"] == "features"
    bad = data.BadInput(on_bad_input) if features else _Streamed(on_bad_input)
    counts = index.get("shard_records") or [None] * len(index["shards"])
    shards = [
        _read_shard(folder, shard, index, expected, bad)
        for shard, expected in zip(index["shards"], counts)
    ]
    _check_total(folder, index, shards, bad)
    records = {
        key: np.concatenate([s[key] for s in shards])
        for key in ("id", "class", "value", *(("features",) if features else ()))
    }
    sizes = [s["id"].size for s in shards]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    # The label entries' records, counted over the shards read one after another.
    records["row"] = np.concatenate([s["row"] + start for s, start in zip(shards, starts)])
    _check_ids(folder, records["id"], lost=LOST_RECORDS in bad.counts)

    shard_of = np.repeat(np.arange(len(shards)), sizes)

    def where(r):
        shard = os.path.join(folder, index["shards"][shard_of[r]])
        return f"{shard}: record {r - starts[shard_of[r]]} (id {records['id'][r]})"

    keep = _kept_records(records, len(index["label_names"]), bad, where)
    skipped = dict(index.get("skipped", {}))
    for reason, count in bad.counts.items():
        skipped[reason] = skipped.get(reason, 0) + count
    rows = records["row"]
    entries = keep[rows]
    labels = SparseLabels.from_entries(
        (np.cumsum(keep) - 1)[rows[entries]],  # rows renumbered without the dropped records
        records["class"][entries],
        records["value"][entries],
        int(keep.sum()),
        len(index["label_names"]),
    )
    return data.MultiLabelData(
        labels=labels,
        label_names=tuple(index["label_names"]),
        features=records["features"][keep] if features else None,
        records=None if features else (folder, tuple(index["shards"])),
        source=f"tfrecord:{folder}",
        skipped=skipped,
    )


def _check_ids(folder, ids, lost):
    """Raises DataError unless the record ids are 0..N-1 (with `lost` records: increasing)."""
    where = os.path.join(folder, INDEX_FILE)
    if not lost and not np.array_equal(ids, np.arange(ids.size)):
        raise data.DataError(f"{folder}: example ids are not 0..N-1 in shard order ({where})")
    if lost and (np.diff(ids) <= 0).any():
        raise data.DataError(f"{folder}: example ids do not increase in shard order ({where})")


def _kept_records(records, num_classes, bad, where):
    """Which records to keep (bool [N]); the others are reported to `bad`, naming the first.

    Bad records: a class id out of range or listed twice (as positive and negative, or
    repeated), and (feature data) a non-finite feature value. `where(r)` names record r.
    """
    rows, classes = records["row"], records["class"]
    keep = np.ones(records["id"].size, bool)

    def report(mask, reason, detail):
        mask = keep & mask
        if mask.any():
            r = int(np.argmax(mask))
            bad.report(reason, f"{where(r)}, {detail(r)}", count=int(mask.sum()))
            keep[mask] = False

    wrong = (classes < 0) | (classes >= num_classes)
    order = np.lexsort((classes, rows))
    repeat = (rows[order][1:] == rows[order][:-1]) & (classes[order][1:] == classes[order][:-1])
    wrong[order[1:][repeat]] = True
    wrong_rows = np.zeros(keep.size, bool)
    wrong_rows[rows[wrong]] = True
    first_wrong = lambda r: classes[np.flatnonzero(wrong & (rows == r))[0]]
    report(
        wrong_rows,
        BAD_LABELS,
        lambda r: f"class id {first_wrong(r)} (classes are 0..{num_classes - 1}, each listed once)",
    )
    if "features" in records:
        finite = np.isfinite(records["features"])
        first = lambda r: int(np.argmin(finite[r]))
        report(
            ~finite.all(axis=1),
            NON_FINITE,
            lambda r: f"feature {first(r)} (0-based) is {records['features'][r, first(r)]}",
        )
    return keep


def _read_shard(folder, shard, index, expected, bad):
    """The records of one shard as numpy arrays.

    Returns a dict: "id" [n]; "row", "class", "value" (int8 +1/-1) for each label entry, its row
    being the record's position in the shard; for feature data "features" [n, feature_dim].

    A shard that cannot be read to its end (DataLossError: truncated or bit-flipped), or holds
    fewer records than `expected`, reports its lost records to `bad` and gives the records
    before the damage.

    Raises:
      DataError: the shard cannot be opened, a record is not a kpartial example or holds other
        than `feature_dim` features, the shard holds more records than `expected`, or `bad`
        raises.
    """
    path = os.path.join(folder, shard)
    spec = {
        "id": tf.io.FixedLenFeature([], tf.int64),
        "positives": tf.io.VarLenFeature(tf.int64),
        "negatives": tf.io.VarLenFeature(tf.int64),
    }
    if index["inputs"] == "features":
        # Variable length, so that a record of another length is named rather than failing the
        # batch (and a huge feature_dim allocates nothing).
        spec["features"] = tf.io.VarLenFeature(tf.float32)

    def parsed(records):
        batches = records.batch(_READ_BATCH).map(
            lambda r: tf.io.parse_example(r, spec), num_parallel_calls=tf.data.AUTOTUNE
        )
        out, offset = [], 0
        for batch in batches.prefetch(2):
            out.append(_batch_arrays(batch, offset, index, path))
            offset += out[-1]["id"].size
        return out

    def check_image_record(records):
        """Parses the first record with the pipeline's image spec (the others are not parsed
        for their images here: that would copy every image)."""
        image_spec = _feature_spec(index, with_inputs=True)
        for record in records.take(1):
            tf.io.parse_single_example(record, image_spec)

    damage = None
    try:
        try:
            batches = parsed(tf.data.TFRecordDataset(path))
        except tf.errors.DataLossError as e:
            damage = _tf_message(e)
            # The records before the damage: ignore_errors ends the shard at the first error.
            batches = parsed(tf.data.TFRecordDataset(path).ignore_errors())
        if index["inputs"] == "image":
            check_image_record(tf.data.TFRecordDataset(path).ignore_errors())
    except tf.errors.InvalidArgumentError as e:
        raise data.DataError(
            f"{path}: a record is not a kpartial example ({_tf_message(e)})"
        ) from None
    except tf.errors.OpError as e:
        raise data.DataError(f"{path}: cannot read shard ({_tf_message(e)})") from None
    shard_data = _concatenate(batches, index)
    n = shard_data["id"].size
    if expected is not None and n > expected:
        raise data.DataError(
            f"{path}: holds {n} records, {INDEX_FILE} lists {expected} (not the shard it indexes)"
        )
    if damage is not None:
        count = 1 if expected is None else max(expected - n, 1)
        bad.report(LOST_RECORDS, f"{path}: record {n} (0-based) cannot be read ({damage})", count)
    elif expected is not None and n < expected:
        bad.report(
            LOST_RECORDS,
            f"{path}: holds {n} records, {INDEX_FILE} lists {expected} (truncated or emptied)",
            expected - n,
        )
    return shard_data


def _batch_arrays(batch, offset, index, path):
    """Numpy arrays of one parsed batch (see `_read_shard`); rows are offset by `offset`."""
    ids = batch["id"].numpy()
    rows, classes, values = [], [], []
    for name, sign in (("positives", 1), ("negatives", -1)):
        sparse = batch[name]
        rows.append(sparse.indices[:, 0].numpy() + offset)
        classes.append(sparse.values.numpy())
        values.append(np.full(sparse.values.shape[0], sign, np.int8))
    out = {
        "id": ids,
        "row": np.concatenate(rows),
        "class": np.concatenate(classes),
        "value": np.concatenate(values),
    }
    if "features" in batch:
        dim = index["feature_dim"]
        sparse = batch["features"]
        lengths = np.bincount(sparse.indices[:, 0].numpy(), minlength=ids.size)
        wrong = np.flatnonzero(lengths != dim)
        if wrong.size:
            raise data.DataError(
                f"{path}: record {offset + wrong[0]} (0-based) holds {lengths[wrong[0]]} "
                f"features, {INDEX_FILE} says feature_dim {dim}"
            )
        out["features"] = sparse.values.numpy().reshape(ids.size, dim)
    return out


def _concatenate(batches, index):
    keys = ["id", "row", "class", "value"]
    empty = {"id": np.int64, "row": np.int64, "class": np.int64, "value": np.int8}
    out = {
        k: np.concatenate([b[k] for b in batches]) if batches else np.zeros(0, empty[k])
        for k in keys
    }
    if index["inputs"] == "features":
        dim = index["feature_dim"]
        out["features"] = (
            np.concatenate([b["features"] for b in batches])
            if batches
            else np.zeros((0, dim), np.float32)
        )
    return out


def _check_total(folder, index, shards, bad):
    """For an index without per-shard counts: the records read against `written_examples`.

    Records lost that no damaged shard has reported are reported to `bad` (a damaged shard
    reports 1 record when the index does not say how many it held).

    Raises:
      DataError: the shards hold more records than `written_examples`, or `bad` raises.
    """
    if index.get("shard_records") is not None or "written_examples" not in index:
        return
    read = sum(s["id"].size for s in shards)
    written = index["written_examples"]
    if read > written:
        raise data.DataError(
            f"{folder}: the shards hold {read} records, {INDEX_FILE} lists {written}"
        )
    unreported = written - read - bad.counts.get(LOST_RECORDS, 0)
    if unreported > 0:
        empty = [name for name, s in zip(index["shards"], shards) if s["id"].size == 0]
        hint = f" (empty shards: {', '.join(empty)})" if empty else ""
        bad.report(
            LOST_RECORDS,
            f"{folder}: the shards hold {read} records, {INDEX_FILE} lists {written}{hint}",
            unreported,
        )


def _tf_message(error):
    """A TensorFlow error's message without its op and function names."""
    message = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message)
    message = re.sub(r"'\s*failed with\s*", ": ", message)  # "truncated record at 131' failed with"
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", message, flags=re.DOTALL).strip()
