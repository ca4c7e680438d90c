"""One source per input kind: feature rows, image files, or images in TFRecord shards.

A source turns one kind of `MultiLabelData` input into tf.data batches of `{"x", "id"}`:
`training_batches` in the order drawn from an epoch's stateless seed, augmented, with the
incomplete last batch dropped (`complete(batch)` adds what a source loads per batch rather than
per example); `evaluation_batches` in example order, not augmented. `source_for`
picks the source of a dataset; `kpartial.pipeline` adds labels, epochs and the known length.
Images are read, decoded, resized and augmented in parallel (AUTOTUNE).
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from kpartial import tfrecords

AUTOTUNE = tf.data.AUTOTUNE

# Records are shuffled in blocks (plus shard order); paths and feature rows are shuffled fully.
SHUFFLE_BUFFER = 10_000


class BatchShard(NamedTuple):
    """One input pipeline's share of every global batch (data parallelism, `kpartial.distribution`).

    Of each global batch of `global_size` examples, in the epoch's order, the `size` examples from
    `offset` on; `training_batches` splits them into batches of its `batch_size`, one per local
    replica. Every pipeline draws the same epoch order, so the global batches are those of a
    single-device run, and each example is seen once per epoch.
    """

    global_size: int
    offset: int
    size: int

    def keeps(self, position, num_examples):
        """Whether the example at `position` of the epoch's order is this pipeline's (bool tensor).

        The incomplete last global batch is nobody's.
        """
        position = tf.cast(position, tf.int64)
        in_batch = position % self.global_size
        complete = position < num_examples // self.global_size * self.global_size
        return complete & (in_batch >= self.offset) & (in_batch < self.offset + self.size)


class WorkerPart(NamedTuple):
    """The examples whose id is `index` modulo `count`: one worker's part of an inference pass."""

    index: int
    count: int

    def ids(self, num_examples):
        return tf.range(self.index, num_examples, self.count, dtype=tf.int32)

    def keeps(self, example_id):
        return tf.equal(tf.cast(example_id, tf.int64) % self.count, self.index)


def source_for(data, image_size=None):
    """The source of `data`'s inputs: the one place that tells the input kinds apart.

    Args:
      data: `kpartial.data.MultiLabelData` (features, image paths, or TFRecord shards).
      image_size: (height, width) images are resized to; needed for image data.

    Raises:
      ValueError: `data` has no inputs, or is image data and `image_size` is not given.
    """
    if data.features is not None:
        return FeatureSource(data.features)
    if data.image_paths is None and data.records is None:
        raise ValueError(f"{data.source}: data has neither features nor image paths")
    if image_size is None:
        raise ValueError(f"{data.source}: image data needs an image_size")
    if data.records is not None:
        return RecordSource(data.records[0], image_size)
    return ImageFileSource(data.image_paths, image_size)


class FeatureSource:
    """Feature rows (float32 [N, D]) held in memory; never augmented."""

    def __init__(self, features):
        # One tensor, captured by every epoch's function instead of being copied into its graph.
        self._features = tf.constant(features)
        self.num_examples = int(features.shape[0])

    def training_batches(self, epoch_seed, batch_size, augment=True, shard=None):
        """One epoch's batches of `{"id"}` in the order drawn from `epoch_seed`.

        `complete` gathers their rows.

        Args:
          epoch_seed: the epoch's [2] stateless seed.
          batch_size: examples per batch; the incomplete last batch is dropped.
          augment: ignored (nothing to augment in a feature row).
          shard: a `BatchShard`: only its share of each global batch; None = every example.
        """
        del augment  # nothing to augment in a feature row
        ids = tf.data.Dataset.from_tensor_slices(_shuffled_ids(self.num_examples, epoch_seed))
        if shard is not None:
            ids = (
                ids.batch(shard.global_size, drop_remainder=True)
                .map(lambda batch: batch[shard.offset : shard.offset + shard.size])
                .unbatch()
            )
        return ids.batch(batch_size, drop_remainder=True).map(lambda i: {"id": i})

    def complete(self, batch):
        """Adds the rows of `batch["id"]` as "x".

        One gather per batch, in the pipeline's parallel map rather than in the epoch's dataset,
        which is built again every epoch.
        """
        return {**batch, "x": tf.gather(self._features, batch["id"])}

    def evaluation_batches(self, batch_size, part=None):
        """Batches of `{"x", "id"}` in example order (of a `WorkerPart`'s examples only)."""
        if part is None:
            examples = {"x": self._features, "id": tf.range(self.num_examples, dtype=tf.int32)}
        else:
            ids = part.ids(self.num_examples)
            examples = {"x": tf.gather(self._features, ids), "id": ids}
        return tf.data.Dataset.from_tensor_slices(examples).batch(batch_size)


class ImageFileSource:
    """Image files, one path per example, read and decoded when their batch is built."""

    def __init__(self, paths, image_size):
        self._paths = tf.constant(np.asarray(paths))
        self._image_size = image_size
        self.num_examples = len(paths)

    def training_batches(self, epoch_seed, batch_size, augment=True, shard=None):
        """One epoch's batches of `{"x", "id"}` in the order drawn from `epoch_seed` ([2]).

        With a `BatchShard`, only its share of each global batch (the others are never read).
        Arguments as for `FeatureSource.training_batches`; `augment` crops and flips.
        """
        # Shuffle ids, not decoded images, so nothing large is held.
        ids = tf.data.Dataset.from_tensor_slices(_shuffled_ids(self.num_examples, epoch_seed))
        examples = ids.map(lambda i: {"path": tf.gather(self._paths, i), "id": i})
        augment_seed = epoch_seed if augment else None
        keep = None if shard is None else lambda p: shard.keeps(p, self.num_examples)
        images = _images(examples, _read_file, self._image_size, augment_seed, keep)
        return images.batch(batch_size, drop_remainder=True)

    def complete(self, batch):
        return batch  # decoded while the epoch's examples were read

    def evaluation_batches(self, batch_size, part=None):
        """Batches of `{"x", "id"}` in example order (of a `WorkerPart`'s examples), unaugmented."""
        ids = (
            tf.range(self.num_examples, dtype=tf.int32)
            if part is None
            else part.ids(self.num_examples)
        )
        examples = {"path": tf.gather(self._paths, ids), "id": ids}
        examples = tf.data.Dataset.from_tensor_slices(examples)
        return _images(examples, _read_file, self._image_size, None).batch(batch_size)


class RecordSource:
    """Encoded images streamed from the TFRecord shards of a folder (see kpartial.tfrecords)."""

    def __init__(self, folder, image_size):
        self._folder, self._index = tfrecords.read_shard_index(folder)
        self._image_size = image_size

    def training_batches(self, epoch_seed, batch_size, augment=True, shard=None):
        """One epoch's batches of `{"x", "id"}` in an order drawn from `epoch_seed` ([2]).

        The shard order is a permutation drawn from the seed and records are shuffled in
        consecutive blocks of `SHUFFLE_BUFFER`, each by its own stateless permutation, so the
        epoch's order is a function of the seed alone. With a `BatchShard`, every pipeline reads
        the records in that order and decodes only its share of each global batch.
        """
        records = (
            tfrecords.record_dataset(self._folder, self._index, file_order_seed=epoch_seed)
            # Only what training reads (the label lists are sparse and are looked up by id).
            .map(lambda r: {k: r[k] for k in ("image", "key", "id")})
            .batch(SHUFFLE_BUFFER)
            .enumerate()
            .map(lambda block, rows: _permute_block(rows, epoch_seed, block))
            .unbatch()
        )
        augment_seed = epoch_seed if augment else None
        num_examples = int(self._index["num_examples"])
        keep = None if shard is None else lambda p: shard.keeps(p, num_examples)
        images = _images(records, _record_bytes, self._image_size, augment_seed, keep)
        return images.batch(batch_size, drop_remainder=True)

    def complete(self, batch):
        return batch  # decoded while the epoch's examples were read

    def evaluation_batches(self, batch_size, part=None):
        """Batches of `{"x", "id"}` in record (= example id) order, not augmented.

        With a `WorkerPart`, of its records only (the others are not decoded).
        """
        records = tfrecords.record_dataset(self._folder, self._index)
        if part is not None:
            records = records.filter(lambda record: part.keeps(record["id"]))
        return _images(records, _record_bytes, self._image_size, None).batch(batch_size)


def _shuffled_ids(num_examples, epoch_seed):
    """A permutation of 0..N-1 (int32) drawn from a [2] stateless seed."""
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int32), epoch_seed
    )


def _permute_block(rows, seed, block):
    count = tf.shape(next(iter(rows.values())))[0]
    order = tf.random.experimental.stateless_shuffle(
        tf.range(count), tf.random.experimental.stateless_fold_in(seed, block)
    )
    return {key: tf.gather(value, order) for key, value in rows.items()}


def _read_file(example):
    return tf.io.read_file(example["path"]), example["path"]


def _record_bytes(record):
    return record["image"], record["key"]


def _images(examples, encoded, image_size, augment_seed, keep=None):
    """Maps examples to `{"x": image, "id"}`; `encoded(example)` gives (bytes, name to report).

    With `augment_seed` ([2]), the example at position p of the epoch is augmented with the seed
    folded with p, so an image gets a different crop every epoch while the run as a whole,
    resumed or not, stays reproducible. `keep(p)` (bool tensor) selects the positions to decode:
    a shard's examples get the crops they get in a single-device run.
    """
    size = tf.constant(image_size, tf.int32)

    def load(position, example):
        image = _decode_image(*encoded(example), size)
        if augment_seed is not None:
            seed = tf.random.experimental.stateless_fold_in(augment_seed, position)
            image = _augment(image, size, seed)
        return {"x": image, "id": tf.cast(example["id"], tf.int32)}

    positioned = examples.enumerate()
    if keep is not None:
        positioned = positioned.filter(lambda position, _: keep(position))
    return positioned.map(load, num_parallel_calls=AUTOTUNE)


def _decode_image(contents, name, image_size):
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
    """Random resized crop (0.8-1 of each side) and horizontal flip; pixels stay in [0, 255]."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    scale = tf.random.stateless_uniform([], seeds[0], 0.8, 1.0)
    crop = tf.cast(tf.cast(image_size, tf.float32) * scale, tf.int32)
    image = tf.image.stateless_random_crop(image, tf.concat([crop, [3]], 0), seeds[1])
    image = tf.image.resize(image, image_size)
    return tf.image.stateless_random_flip_left_right(image, seeds[2])
