"""tf.data pipelines that carry partial labels {+1, -1, 0} and example ids.

Training batches are `({"x": inputs, "id": example_ids}, labels)`, shuffled with a seed and with
`drop_remainder=True` so every step has the same static shape (one XLA compilation). Evaluation
datasets yield only `{"x", "id"}` in example order, without augmentation.
Images are read, decoded, resized and augmented in parallel (AUTOTUNE) and prefetched.
"""

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def _decode_image(path, image_size):
    contents = tf.io.read_file(path)
    # Fail with the file's name for something that is not an image at all; decoding errors of a
    # damaged JPEG/PNG come from TensorFlow itself.
    header = tf.strings.substr(contents, 0, 4)
    is_image = tf.reduce_any(
        [tf.io.is_jpeg(contents), tf.equal(header, b"\x89PNG"), tf.equal(header, b"GIF8")]
    )
    with tf.control_dependencies([tf.debugging.Assert(is_image, ["not an image:", path])]):
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
    return {"path": list(data.image_paths), "id": ids}


def training_dataset(data, labels, batch_size, seed, image_size=None, augment=True):
    """Shuffled, repeated-per-epoch batches of `({"x", "id"}, labels)`.

    Args:
      data: `kpartial.data.MultiLabelData` (features or image paths).
      labels: int8 [N, C] partial labels for the same rows.
      batch_size: examples per step; the last incomplete batch of an epoch is dropped so shapes are
        static (shuffling changes which examples fall in it).
      seed: shuffle and augmentation seed.
      image_size: (height, width) for image data.
      augment: random crop and flip for image data.
    """
    if labels.shape[0] != data.num_examples:
        raise ValueError(f"{labels.shape[0]} label rows for {data.num_examples} examples")
    batch_size = min(batch_size, data.num_examples)
    if data.features is not None:
        ids = tf.data.Dataset.range(data.num_examples).shuffle(
            data.num_examples, seed=seed, reshuffle_each_iteration=True
        )
        features, labels_t = tf.constant(data.features), tf.constant(labels)
        dataset = ids.batch(batch_size, drop_remainder=True).map(
            lambda i: (
                {"x": tf.gather(features, i), "id": tf.cast(i, tf.int32)},
                tf.gather(labels_t, i),
            ),
            num_parallel_calls=AUTOTUNE,
        )
        return dataset.prefetch(AUTOTUNE)
    # Shuffle paths, not decoded images, so the shuffle buffer stays small.
    examples = {**_path_examples(data, image_size), "labels": labels}
    load = _image_loader(image_size, augment_seed=seed if augment else None)

    def load_with_labels(position, example):
        example = load(position, example)
        return {"x": example["x"], "id": example["id"]}, example["labels"]

    dataset = (
        tf.data.Dataset.from_tensor_slices(examples)
        .shuffle(data.num_examples, seed=seed, reshuffle_each_iteration=True)
        .enumerate()
        .map(load_with_labels, num_parallel_calls=AUTOTUNE)
    )
    return dataset.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def evaluation_dataset(data, batch_size, image_size=None):
    """Batches of `{"x", "id"}` in example order, without augmentation."""
    if data.features is not None:
        dataset = tf.data.Dataset.from_tensor_slices(
            {"x": data.features, "id": np.arange(data.num_examples, dtype=np.int32)}
        )
    else:
        dataset = (
            tf.data.Dataset.from_tensor_slices(_path_examples(data, image_size))
            .enumerate()
            .map(_image_loader(image_size, augment_seed=None), num_parallel_calls=AUTOTUNE)
        )
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
