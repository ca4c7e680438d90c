"""tf.data pipelines that carry partial labels {+1, -1, 0} and example ids.

Training batches are `({"x": inputs, "id": example_ids}, labels)`, shuffled with a seed and with
`drop_remainder=True` so every step has the same static shape (one XLA compilation). Evaluation
datasets yield only `{"x", "id"}` in example order, without augmentation.
Images are read, decoded, resized and augmented in parallel (AUTOTUNE) and prefetched.
"""

import numpy as np
import tensorflow as tf

from kpartial.sparse_labels import SparseLabels

AUTOTUNE = tf.data.AUTOTUNE


def _decode_image(path, image_size):
    return _decode_image_bytes(tf.io.read_file(path), path, image_size)


def _decode_image_bytes(contents, name, image_size):
    """Decoded, resized float32 image; `name` (path or record key) is reported for a non-image."""
    # Fail with the file's name for something that is not an image at all; decoding errors of a
    # damaged JPEG/PNG come from TensorFlow itself.
    header = tf.strings.substr(contents, 0, 4)
    is_image = tf.reduce_any(
        [tf.io.is_jpeg(contents), tf.equal(header, b"\x89PNG"), tf.equal(header, b"GIF8")]
    )
    with tf.control_dependencies([tf.debugging.Assert(is_image, ["not an image:", name])]):
        contents = tf.identity(contents)
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.image.resize(tf.cast(image, tf.float32), image_size)


def _augment(image, image_size, seed):
    """Random resized crop (scale 0.64-1) and horizontal flip, per example; pixels stay in [0, 255]."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    scale = tf.random.stateless_uniform([], seeds[0], 0.8, 1.0)
    crop = tf.cast(tf.cast(image_size, tf.float32) * scale, tf.int32)
    image = tf.image.stateless_random_crop(image, tf.concat([crop, [3]], 0), seeds[1])
    image = tf.image.resize(image, image_size)
    return tf.image.stateless_random_flip_left_right(image, seeds[2])


def _image_loader(image_size, augment_seed):
    """Maps `(position, {"path", "id", ...})` to the example with the decoded image as "x".

    The augmentation seed is (seed, position in the shuffled epoch), so an image gets a different
    crop every epoch while the run as a whole stays reproducible.
    """
    size = tf.constant(image_size, tf.int32)

    def load(position, example):
        example = dict(example)
        image = _decode_image(example.pop("path"), size)
        if augment_seed is not None:
            image = _augment(image, size, tf.stack([tf.constant(augment_seed, tf.int64), position]))
        return {**example, "x": image}

    return load


def _path_examples(data, image_size):
    if data.image_paths is None:
        raise ValueError(f"{data.source}: data has neither features nor image paths")
    if image_size is None:
        raise ValueError(f"{data.source}: image data needs an image_size")
    ids = np.arange(data.num_examples, dtype=np.int32)
    return {"path": np.asarray(data.image_paths), "id": ids}


def label_lookup(labels):
    """A function mapping int ids [B] to their int8 [B, C] label rows.

    Dense labels are gathered; `SparseLabels` stay sparse in memory (one int32 per known label:
    class * 2 + is_positive) and only the batch is made dense.
    """
    if not isinstance(labels, SparseLabels):
        labels_t = tf.constant(np.asarray(labels, np.int8))
        return lambda ids: tf.gather(labels_t, ids)
    num_classes = labels.num_classes
    codes = tf.RaggedTensor.from_row_splits(
        tf.constant(labels.classes * 2 + (labels.values > 0), tf.int32),
        tf.constant(labels.indptr, tf.int64),
        validate=False,
    )

    def lookup(ids):
        rows = tf.gather(codes, ids)
        entries = rows.flat_values
        batch_rows = tf.cast(rows.value_rowids(), tf.int32)
        indices = tf.stack([batch_rows, entries // 2], axis=1)
        signs = tf.cast(entries % 2 * 2 - 1, tf.int8)
        shape = tf.stack([tf.shape(ids, out_type=tf.int32)[0], num_classes])
        return tf.scatter_nd(indices, signs, shape)

    return lookup


def _record_examples(data, image_size, augment_seed, shuffle_seed):
    """`(position, {"x", "id"})` streamed from TFRecord shards (see kpartial.tfrecords)."""
    from kpartial import tfrecords

    folder, manifest = tfrecords.read_manifest(data.records[0])
    size = tf.constant(image_size, tf.int32)
    records = tfrecords.record_dataset(folder, manifest, shuffle_files_seed=shuffle_seed)
    if shuffle_seed is not None:
        records = records.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=True)

    def load(position, record):
        image = _decode_image_bytes(record["image"], record["key"], size)
        if augment_seed is not None:
            image = _augment(image, size, tf.stack([tf.constant(augment_seed, tf.int64), position]))
        return {"x": image, "id": tf.cast(record["id"], tf.int32)}

    return records.enumerate().map(load, num_parallel_calls=AUTOTUNE)


# Records are shuffled in a buffer (plus shard order); paths and feature rows are shuffled fully.
SHUFFLE_BUFFER = 10_000


def training_dataset(data, labels, batch_size, seed, image_size=None, augment=True):
    """Shuffled, repeated-per-epoch batches of `({"x", "id"}, labels)`.

    Args:
      data: `kpartial.data.MultiLabelData` (features, image paths, or TFRecord shards).
      labels: int8 [N, C] partial labels for the same rows, or `SparseLabels`; looked up by id
        per batch, so sparse labels are never made dense beyond one batch.
      batch_size: examples per step; the last incomplete batch of an epoch is dropped so shapes are
        static (shuffling changes which examples fall in it).
      seed: shuffle and augmentation seed.
      image_size: (height, width) for image data.
      augment: random crop and flip for image data.
    """
    if labels.shape[0] != data.num_examples:
        raise ValueError(f"{labels.shape[0]} label rows for {data.num_examples} examples")
    batch_size = min(batch_size, data.num_examples)
    lookup = label_lookup(labels)
    if data.features is not None:
        ids = tf.data.Dataset.range(data.num_examples).shuffle(
            data.num_examples, seed=seed, reshuffle_each_iteration=True
        )
        features = tf.constant(data.features)
        dataset = ids.batch(batch_size, drop_remainder=True).map(
            lambda i: (
                {"x": tf.gather(features, i), "id": tf.cast(i, tf.int32)},
                lookup(tf.cast(i, tf.int32)),
            ),
            num_parallel_calls=AUTOTUNE,
        )
        return dataset.prefetch(AUTOTUNE)
    augment_seed = seed if augment else None
    if data.records is not None:
        examples = _record_examples(data, image_size, augment_seed, shuffle_seed=seed)
    else:
        # Shuffle paths, not decoded images, so the shuffle buffer stays small.
        examples = (
            tf.data.Dataset.from_tensor_slices(_path_examples(data, image_size))
            .shuffle(data.num_examples, seed=seed, reshuffle_each_iteration=True)
            .enumerate()
            .map(_image_loader(image_size, augment_seed), num_parallel_calls=AUTOTUNE)
        )
    dataset = examples.batch(batch_size, drop_remainder=True).map(
        lambda batch: (batch, lookup(batch["id"])), num_parallel_calls=AUTOTUNE
    )
    return dataset.prefetch(AUTOTUNE)


def evaluation_dataset(data, batch_size, image_size=None):
    """Batches of `{"x", "id"}` in example order, without augmentation."""
    if data.features is not None:
        dataset = tf.data.Dataset.from_tensor_slices(
            {"x": data.features, "id": np.arange(data.num_examples, dtype=np.int32)}
        )
    elif data.records is not None:
        dataset = _record_examples(data, image_size, augment_seed=None, shuffle_seed=None)
    else:
        dataset = (
            tf.data.Dataset.from_tensor_slices(_path_examples(data, image_size))
            .enumerate()
            .map(_image_loader(image_size, augment_seed=None), num_parallel_calls=AUTOTUNE)
        )
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
