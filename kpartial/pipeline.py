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


def _epoch_seed(seed, epoch):
    """The [2] stateless seed of one epoch: its order and augmentation depend on (seed, epoch) only,
    so epoch k is the same whether or not the run was resumed before it."""
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])


def _epoch_order(num_examples, seed, epoch):
    """A permutation of 0..N-1 drawn from (seed, epoch)."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int32), _epoch_seed(seed, epoch)
    )


def _image_loader(image_size, augment_seed):
    """Maps `(epoch, position, {"path", "id", ...})` to the example with the decoded image as "x".

    The augmentation seed is (seed, epoch, position in the epoch), so an image gets a different
    crop every epoch while the run as a whole, resumed or not, stays reproducible.
    """
    size = tf.constant(image_size, tf.int32)

    def load(epoch, position, example):
        example = dict(example)
        image = _decode_image(example.pop("path"), size)
        if augment_seed is not None:
            image = _augment(image, size, _augment_seed(augment_seed, epoch, position))
        return {**example, "x": image}

    return load


def _augment_seed(seed, epoch, position):
    return tf.random.experimental.stateless_fold_in(_epoch_seed(seed, epoch), position)


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


def _record_examples(data, image_size, augment_seed, shuffle_seed, epoch=0):
    """`{"x", "id"}` of one epoch streamed from TFRecord shards (see kpartial.tfrecords).

    With `shuffle_seed`, the shard order is a permutation drawn from (seed, epoch) and records are
    shuffled in consecutive blocks of `SHUFFLE_BUFFER`, each by its own stateless permutation, so
    the epoch's order is a function of (seed, epoch) alone. `epoch` may be a tensor.
    """
    from kpartial import tfrecords

    folder, manifest = tfrecords.read_manifest(data.records[0])
    size = tf.constant(image_size, tf.int32)
    epoch_seed = None if shuffle_seed is None else _epoch_seed(shuffle_seed, epoch)
    records = tfrecords.record_dataset(folder, manifest, file_order_seed=epoch_seed)
    if shuffle_seed is not None:
        records = (
            # Only what training reads (the label lists are sparse and are looked up by id).
            records.map(lambda r: {k: r[k] for k in ("image", "key", "id")})
            .batch(SHUFFLE_BUFFER)
            .enumerate()
            .map(lambda block, rows: _permute_block(rows, epoch_seed, block))
            .unbatch()
        )

    def load(position, record):
        image = _decode_image_bytes(record["image"], record["key"], size)
        if augment_seed is not None:
            image = _augment(image, size, _augment_seed(augment_seed, epoch, position))
        return {"x": image, "id": tf.cast(record["id"], tf.int32)}

    return records.enumerate().map(load, num_parallel_calls=AUTOTUNE)


def _permute_block(rows, seed, block):
    count = tf.shape(next(iter(rows.values())))[0]
    order = tf.random.experimental.stateless_shuffle(
        tf.range(count), tf.random.experimental.stateless_fold_in(seed, block)
    )
    return {key: tf.gather(value, order) for key, value in rows.items()}


# Records are shuffled in blocks (plus shard order); paths and feature rows are shuffled fully.
SHUFFLE_BUFFER = 10_000


def steps_per_epoch(data, batch_size):
    """Training steps of one epoch (the incomplete last batch is dropped)."""
    return data.num_examples // min(batch_size, data.num_examples)


def _current_epoch(epoch):
    """A one-element dataset of the epoch: a constant, or the variable's value when iterated."""
    if isinstance(epoch, int):
        return tf.data.Dataset.from_tensors(tf.constant(epoch, tf.int64))
    variable = epoch if isinstance(epoch, tf.Variable) else epoch.value  # Keras -> tf.Variable
    return tf.data.Dataset.range(1).map(lambda _: tf.cast(variable.read_value(), tf.int64))


def training_dataset(data, labels, batch_size, seed, image_size=None, augment=True, epoch=0):
    """Shuffled batches of `({"x", "id"}, labels)`: one epoch each time the dataset is iterated.

    The epoch's order (and augmentation) is drawn from (seed, epoch) alone. `epoch` is an int, or
    a variable read each time an iteration starts: `PartialLabelModel.epochs_done`, which Keras
    has advanced when it starts iterating epoch e, so a run resumed at epoch k sees exactly the
    batches an uninterrupted run sees from epoch k on.

    Args:
      data: `kpartial.data.MultiLabelData` (features, image paths, or TFRecord shards).
      labels: int8 [N, C] partial labels for the same rows, or `SparseLabels`; looked up by id
        per batch, so sparse labels are never made dense beyond one batch.
      batch_size: examples per step; the last incomplete batch of an epoch is dropped so shapes are
        static (shuffling changes which examples fall in it).
      seed: shuffle and augmentation seed.
      image_size: (height, width) for image data.
      augment: random crop and flip for image data.
      epoch: the 0-based epoch (int), or a scalar integer variable holding it.
    """
    if labels.shape[0] != data.num_examples:
        raise ValueError(f"{labels.shape[0]} label rows for {data.num_examples} examples")
    batch_size = min(batch_size, data.num_examples)
    lookup = label_lookup(labels)
    epoch_range = _current_epoch(epoch)
    if data.features is not None:
        features = tf.constant(data.features)
        dataset = epoch_range.flat_map(
            lambda epoch: tf.data.Dataset.from_tensor_slices(
                _epoch_order(data.num_examples, seed, epoch)
            ).batch(batch_size, drop_remainder=True)
        ).map(
            lambda i: ({"x": tf.gather(features, i), "id": i}, lookup(i)),
            num_parallel_calls=AUTOTUNE,
        )
        return _with_known_length(dataset, data, batch_size)
    augment_seed = seed if augment else None
    if data.records is not None:

        def one_epoch(epoch):
            return _record_examples(data, image_size, augment_seed, seed, epoch).batch(
                batch_size, drop_remainder=True
            )

    else:
        examples = {k: tf.constant(v) for k, v in _path_examples(data, image_size).items()}
        loader = _image_loader(image_size, augment_seed)

        def one_epoch(epoch):
            # Shuffle ids, not decoded images, so nothing large is held.
            order = tf.data.Dataset.from_tensor_slices(_epoch_order(data.num_examples, seed, epoch))
            return (
                order.map(lambda i: {key: tf.gather(value, i) for key, value in examples.items()})
                .enumerate()
                .map(
                    lambda position, example: loader(epoch, position, example),
                    num_parallel_calls=AUTOTUNE,
                )
                .batch(batch_size, drop_remainder=True)
            )

    dataset = epoch_range.flat_map(one_epoch).map(
        lambda batch: (batch, lookup(batch["id"])), num_parallel_calls=AUTOTUNE
    )
    return _with_known_length(dataset, data, batch_size)


def _with_known_length(dataset, data, batch_size):
    # flat_map hides the length; Keras needs it for step counts, progress bars and loss means.
    steps = steps_per_epoch(data, batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(AUTOTUNE)


def evaluation_dataset(data, batch_size, image_size=None):
    """Batches of `{"x", "id"}` in example order, without augmentation."""
    if data.features is not None:
        dataset = tf.data.Dataset.from_tensor_slices(
            {"x": data.features, "id": np.arange(data.num_examples, dtype=np.int32)}
        )
    elif data.records is not None:
        dataset = _record_examples(data, image_size, augment_seed=None, shuffle_seed=None)
    else:
        examples = _path_examples(data, image_size)
        loader = _image_loader(image_size, augment_seed=None)
        dataset = (
            tf.data.Dataset.from_tensor_slices(examples)
            .enumerate()
            .map(
                lambda position, example: loader(0, position, example), num_parallel_calls=AUTOTUNE
            )
        )
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
