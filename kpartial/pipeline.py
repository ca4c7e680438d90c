"""tf.data pipelines that carry partial labels {+1, -1, 0} and example ids.

Training batches are `({"x": inputs, "id": example_ids}, labels)`, shuffled with a seed and with
`drop_remainder=True` so every step has the same static shape (one XLA compilation). Evaluation
datasets yield only `{"x", "id"}` in example order, without augmentation. The inputs come from
the source of the data's input kind (kpartial.input_sources); this module adds the labels, the
epoch and the known length, and prefetches.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from kpartial import input_sources
from kpartial.sparse_labels import SparseLabels

AUTOTUNE = tf.data.AUTOTUNE


def label_lookup(labels, columns=None):
    """A function mapping int ids [B] to their int8 [B, C] label rows.

    Dense labels are gathered; `SparseLabels` stay sparse in memory (one int32 per known label:
    class * 2 + is_positive) and only the batch is made dense.

    Args:
      labels: int8 [N, C], or `SparseLabels`.
      columns: None, or a `LabelColumns`: the rows then hold its classes only, [B, K], read as
        each batch is made (a pruned phase's train step reads the active classes' labels alone).
    """
    num_classes = labels.shape[1]
    if not isinstance(labels, SparseLabels):
        labels_t = tf.constant(np.asarray(labels, np.int8))
        if columns is None:
            return lambda ids: tf.gather(labels_t, ids)

        def dense_lookup(ids):
            rows, class_ids = tf.gather(labels_t, ids), columns.class_ids.read_value()

            def some_columns():
                # Classes along the first axis: a gather of rows, several times faster than one
                # of columns (benchmarks/README.md, "Label pruning: step time").
                return tf.transpose(tf.gather(tf.transpose(rows), class_ids))

            return tf.cond(tf.size(class_ids) < num_classes, some_columns, lambda: rows)

        return dense_lookup
    codes = _label_codes(labels)

    def lookup(ids):
        rows = tf.gather(codes, ids)
        entries = rows.flat_values
        batch_rows = tf.cast(rows.value_rowids(), tf.int32)
        classes, width = entries // 2, num_classes
        if columns is not None:  # each class's column + 1, 0 for a class left out
            class_ids = columns.class_ids.read_value()
            width = tf.shape(class_ids)[0]
            column = tf.scatter_nd(
                tf.expand_dims(class_ids, -1), tf.range(1, width + 1), [num_classes]
            )
            classes = tf.gather(column, classes) - 1
            kept = classes >= 0
            entries, batch_rows, classes = (
                tf.boolean_mask(t, kept) for t in (entries, batch_rows, classes)
            )
        indices = tf.stack([batch_rows, classes], axis=1)
        signs = tf.cast(entries % 2 * 2 - 1, tf.int8)
        shape = tf.stack([tf.shape(ids, out_type=tf.int32)[0], width])
        return tf.scatter_nd(indices, signs, shape)

    return lookup


class LabelColumns:
    """The classes whose labels a training pipeline yields, in a variable it reads per batch.

    A pruned phase's train step computes the K active classes only; its pipeline then makes
    [B, K] label rows instead of [B, C] rows the step would gather from. Only where each epoch
    is a new iteration of the dataset (one replica: Keras starts it after the epoch's
    callbacks, which prune), so no batch made before a pruning reaches the step after it.
    """

    def __init__(self, num_classes):
        self.class_ids = tf.Variable(
            np.arange(num_classes, dtype=np.int32),
            trainable=False,
            shape=tf.TensorShape([None]),
            name="label_columns",
        )

    def set(self, class_ids):
        """The classes (int [K], ascending) of the batches made from now on."""
        self.class_ids.assign(np.asarray(class_ids, np.int32))


def known_entries_lookup(labels):
    """A function mapping int ids [B] to their known entries, int32 [K, 2] (row of the batch,
    class): where few labels are known, a pass that needs only where they are skips the dense
    [B, C] rows (`SparseLabels` are never made dense)."""
    if not isinstance(labels, SparseLabels):
        lookup = label_lookup(labels)
        return lambda ids: tf.cast(tf.where(tf.not_equal(lookup(ids), 0)), tf.int32)
    codes = _label_codes(labels)

    def lookup(ids):
        rows = tf.gather(codes, ids)
        return tf.stack([tf.cast(rows.value_rowids(), tf.int32), rows.flat_values // 2], axis=1)

    return lookup


def _label_codes(labels):
    """`SparseLabels` as a ragged int32 [N, None] of class * 2 + is_positive."""
    return tf.RaggedTensor.from_row_splits(
        tf.constant(labels.classes * 2 + (labels.values > 0), tf.int32),
        tf.constant(labels.indptr, tf.int64),
        validate=False,
    )


class PerBatch:
    """Runs `step(batch)` on every batch of a dataset: one compiled step per batch, called from
    Python, traced once (for the first dataset's batches, any batch size).

    Passes that predict outside the train step (refreshes, pruning, measurements) use it rather
    than one `tf.function` looping over the dataset: on CPU the network runs about 3x slower
    inside such a loop (benchmarks/README.md, "Measured unknown rates, and the default that
    trains once").
    """

    def __init__(self, step):
        self.step, self.compiled = step, None

    def __call__(self, dataset):
        if self.compiled is None:
            # Graph code written for tracing (no Python control flow on tensors): AutoGraph's
            # conversion of it would cost more than the passes of a small run.
            self.compiled = tf.function(
                self.step, input_signature=[dataset.element_spec], autograph=False
            )
        for batch in dataset:
            self.compiled(batch)


def steps_per_epoch(data, batch_size):
    """Training steps of one epoch (the incomplete last batch is dropped)."""
    return data.num_examples // min(batch_size, data.num_examples)


def _epoch_seed(seed, epoch):
    """The [2] stateless seed of one epoch.

    The epoch's order and augmentation depend on (seed, epoch) only, so epoch k is the same
    whether or not the run was resumed before it.
    """
    return tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])


def _current_epoch(epoch):
    """A one-element dataset of the epoch: a constant, or the variable's value when iterated."""
    if isinstance(epoch, int):
        return tf.data.Dataset.from_tensors(tf.constant(epoch, tf.int64))
    variable = epoch if isinstance(epoch, tf.Variable) else epoch.value  # Keras -> tf.Variable
    return tf.data.Dataset.range(1).map(lambda _: tf.cast(variable.read_value(), tf.int64))


def training_dataset(
    data,
    labels,
    batch_size,
    seed,
    image_size=None,
    augment=True,
    epoch=0,
    shard=None,
    epochs=None,
    columns=None,
):
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
      shard: an `input_sources.BatchShard`: this input pipeline's share of every global batch of
        the same order (data parallelism); `batch_size` is then the per-replica batch.
      epochs: if given, the dataset holds the epochs `epoch` (an int), ..., `epochs` - 1 back to
        back and is iterated once, by a caller that counts each epoch's steps (a distributed run:
        an epoch that ends by running out of data would leave one replica a step ahead).
      columns: a `LabelColumns` whose classes alone the label rows hold, or None (all C).
    """
    if labels.shape[0] != data.num_examples:
        raise ValueError(f"{labels.shape[0]} label rows for {data.num_examples} examples")
    batch_size = min(batch_size, data.num_examples)
    source = input_sources.source_for(data, image_size)
    lookup = label_lookup(labels, columns)
    if epochs is None:
        epoch_numbers = _current_epoch(epoch)
    else:
        epoch_numbers = tf.data.Dataset.range(epoch, epochs)
    batches = epoch_numbers.flat_map(
        lambda epoch: source.training_batches(
            _epoch_seed(seed, epoch), batch_size, augment, shard=shard
        )
    )
    dataset = batches.map(
        lambda batch: (source.complete(batch), lookup(batch["id"])), num_parallel_calls=AUTOTUNE
    )
    # flat_map hides the length; Keras needs it for step counts, progress bars and loss means.
    if shard is None:
        steps = steps_per_epoch(data, batch_size)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(AUTOTUNE)


def evaluation_dataset(data, batch_size, image_size=None, part=None):
    """Batches of `{"x", "id"}` in example order, without augmentation.

    Args:
      data: `kpartial.data.MultiLabelData`.
      batch_size: examples per batch (the last one may be smaller).
      image_size: (height, width) for image data.
      part: an `input_sources.WorkerPart`: that part's examples only; None = every example.
    """
    source = input_sources.source_for(data, image_size)
    return source.evaluation_batches(batch_size, part=part).prefetch(AUTOTUNE)


class RunDatasets(NamedTuple):
    """The datasets of one run."""

    # Shuffled, augmented batches of one epoch per iteration; with several replicas, a
    # distributed dataset of each replica's share of the same global batches, all epochs in one
    # iteration of `steps_per_epoch` steps each.
    train: object
    steps_per_epoch: object  # int, or None: Keras reads the length of `train`
    train_inputs: tf.data.Dataset  # this worker's part of the training inputs, in example order
    test: tf.data.Dataset
    test_labels: object  # int8 [N, C] or SparseLabels: looked up per batch, never made dense
    validation: object  # the held-out examples' dataset, or None


def run_datasets(config, inputs, epochs_done, placement, columns=None):
    """The `RunDatasets` of a run's `inputs` (`kpartial.run_inputs.RunInputs`).

    Args:
      config: the run's `kpartial.config.Config`.
      inputs: the run's inputs.
      epochs_done: the model's epoch counter variable; the training dataset reads it as each
        epoch starts, so a resumed run continues the shuffling where it stopped.
      placement: the run's `distribution.Placement`.
      columns: the model's `LabelColumns` (one replica), or None: training labels of all C.
    """
    runtime = config.runtime
    image_size = (config.model.image_size, config.model.image_size)
    steps = None  # Keras counts the steps of a dataset with a known length
    if placement.replicas == 1:
        train = training_dataset(
            inputs.train,
            inputs.known,
            runtime.batch_size,
            runtime.seed,
            image_size,
            epoch=epochs_done,
            columns=columns,
        )
    else:
        global_batch = min(runtime.batch_size, inputs.train.num_examples)
        start_epoch = int(epochs_done.numpy())

        def replica_shares(context):
            # This input pipeline's local replicas take consecutive shares of each global batch.
            replica_batch = context.get_per_replica_batch_size(global_batch)
            worker_share = global_batch // context.num_input_pipelines
            shard = input_sources.BatchShard(
                global_batch, context.input_pipeline_id * worker_share, worker_share
            )
            return training_dataset(
                inputs.train,
                inputs.known,
                replica_batch,
                runtime.seed,
                image_size,
                epoch=start_epoch,
                shard=shard,
                epochs=runtime.epochs,
            )

        train = placement.strategy.distribute_datasets_from_function(replica_shares)
        steps = steps_per_epoch(inputs.train, global_batch)
    place = placement.place
    part = None if place.count == 1 else input_sources.WorkerPart(place.index, place.count)
    eval_batch_size = 1024 if inputs.train.features is not None else runtime.batch_size
    validation = None
    if inputs.validation is not None:
        validation = evaluation_dataset(inputs.validation, eval_batch_size, image_size)
    return RunDatasets(
        train,
        steps,
        evaluation_dataset(inputs.train, eval_batch_size, image_size, part),
        evaluation_dataset(inputs.test, eval_batch_size, image_size),
        inputs.test.labels,
        validation,
    )
