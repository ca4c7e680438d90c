"""Sharded TFRecords with sparse partial labels: write once, stream inputs, hold labels sparsely.

A records folder holds its shard index `dataset.json` and shards `data-<k>-of-<n>.tfrecord`; shard k holds the
contiguous examples `[k*N/n, (k+1)*N/n)`. Each record is a `tf.train.Example` with

- `id` int64: the example's row 0..N-1 in record order (labels held in memory are looked up by
  id),
- `key` bytes: the source image path or example key,
- `positives`, `negatives` int64 lists: class ids of the known labels,
- either `image` bytes (the encoded file, as read from disk) or `features` float list [D].

`read_tfrecords` (format `tfrecord`) reads the labels (sparse) and, for feature data, the
features; image bytes stay on disk and `kpartial.input_sources` streams them from the shards.
"""

import json
import os

import numpy as np
import tensorflow as tf

from kpartial import data
from kpartial.sparse_labels import SparseLabels, as_sparse

# The shard index: what the records hold (features or images, classes, skipped) and the shards.
INDEX_FILE = "dataset.json"


def shard_name(shard, num_shards):
    return f"data-{shard:05d}-of-{num_shards:05d}.tfrecord"


def _int64s(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def write_tfrecords(dataset, out_dir, num_shards=8, labels=None, on_bad_input="error"):
    """Writes `dataset` (a MultiLabelData) as sharded TFRecords plus their index `dataset.json`.

    Args:
      dataset: features or image paths, and labels.
      out_dir: created if needed; existing shards of the same name are overwritten.
      num_shards: number of files.
      labels: labels to write instead of `dataset.labels` (e.g. a simulation).
      on_bad_input: "error" or "skip" (counted) for an image file that cannot be read or is empty.

    Returns:
      The shard index dict written to `dataset.json`.
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
    shards, written = [], 0
    for k in range(num_shards):
        shards.append(shard_name(k, num_shards))
        with tf.io.TFRecordWriter(os.path.join(out_dir, shards[-1])) as writer:
            for row in range(bounds[k], bounds[k + 1]):
                inputs = _example_inputs(dataset, row, bad)
                if inputs is not None:  # None: an image skipped under on_bad_input="skip"
                    # Ids count written records, so they stay 0..N-1 when an image is skipped.
                    writer.write(_example(written, labels, row, inputs))
                    written += 1
    index = {
        "label_names": list(dataset.label_names),
        "num_examples": n,
        "written_examples": written,
        "inputs": "features" if dataset.features is not None else "image",
        "feature_dim": None if dataset.features is None else int(dataset.features.shape[1]),
        "shards": shards,
        "source": dataset.source,
        "skipped": bad.counts,
    }
    with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
        json.dump(index, f, indent=2)
    return index


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

    Raises:
      DataError: the index is missing or not JSON, or a shard it lists is missing.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    try:
        with open(os.path.join(folder, INDEX_FILE)) as f:
            index = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise data.DataError(
            f"{folder}: not a kpartial TFRecord folder ({INDEX_FILE}: {e})"
        ) from None
    for shard in index["shards"]:
        if not os.path.isfile(os.path.join(folder, shard)):
            raise data.DataError(f"{folder}: shard {shard} listed in {INDEX_FILE} is missing")
    return folder, index


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


def read_tfrecords(path, on_bad_input="error"):
    """Reads a folder written by `write_tfrecords` (or its `dataset.json`).

    Labels come back as SparseLabels, features (feature data) as an array; for image data the
    examples keep `records` (the shard files) and no paths: the pipeline streams image bytes.

    Raises:
      DataError: on a missing shard index or shard, a class id out of range, a pair both positive
        and negative, or ids that are not 0..N-1 in shard order.
    """
    folder, index = read_shard_index(path)
    num_classes = len(index["label_names"])
    ids, rows, classes, values, features = [], [], [], [], []
    for batch in record_dataset(
        folder, index, with_inputs=index["inputs"] == "features", batch_size=4096
    ):
        batch_ids = batch["id"].numpy()
        ids.append(batch_ids)
        for name, sign in (("positives", 1), ("negatives", -1)):
            sparse = batch[name]
            rows.append(batch_ids[sparse.indices[:, 0].numpy()])
            classes.append(sparse.values.numpy())
            values.append(np.full(sparse.values.shape[0], sign, np.int8))
        if "features" in batch:
            features.append(batch["features"].numpy())
    ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    where = os.path.join(folder, INDEX_FILE)
    if not np.array_equal(ids, np.arange(ids.size)):
        raise data.DataError(f"{folder}: example ids are not 0..N-1 in shard order ({where})")
    rows, classes, values = (np.concatenate(c) for c in (rows, classes, values))
    bad = (classes < 0) | (classes >= num_classes)
    if bad.any():
        raise data.DataError(
            f"{folder}: example id {rows[bad][0]} has class id {classes[bad][0]} outside "
            f"0..{num_classes - 1} ({where})"
        )
    order = np.lexsort((classes, rows))
    pair = rows[order] * num_classes + classes[order]
    same = np.flatnonzero(pair[1:] == pair[:-1])
    if same.size:
        row = rows[order][same[0]]
        raise data.DataError(
            f"{folder}: example id {row} lists class {index['label_names'][classes[order][same[0]]]} "
            "twice (positive and negative, or a repeat)"
        )
    labels = SparseLabels.from_entries(rows, classes, values, ids.size, num_classes)
    return data.MultiLabelData(
        labels=labels,
        label_names=tuple(index["label_names"]),
        features=np.concatenate(features) if features else None,
        records=(folder, tuple(index["shards"])) if index["inputs"] == "image" else None,
        source=f"tfrecord:{folder}",
        skipped=dict(index.get("skipped", {})),
    )
