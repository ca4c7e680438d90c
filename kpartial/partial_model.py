"""A Keras model whose train step reads pseudo labels and the active-class mask from variables.

The wrapped network is ordinary (features or images in, C logits out). What training changes about
the labels lives in non-trainable variables of this model, so compiled (and XLA-compiled) steps see
every update, and checkpoints (`save_weights`) carry them:

- `pseudo_labels` int8 [N, C]: labels the pseudo-label callback assigned to unknown entries,
  looked up by the example id the pipeline yields. Known labels always win.
- `active_classes` float32 [C]: 1 for classes still trained, 0 for pruned ones; passed to the loss
  as per-class weights, so pruned classes add neither loss nor gradient.

The loss's entry weight is `active_c * (pseudo_weight if the entry's label is a pseudo label else 1)`,
so pseudo labels can count less than annotations.
- `positive_thresholds` float32 [C]: decision thresholds exported with the model.
"""

import keras
import numpy as np
from keras import ops


class PartialLabelModel(keras.Model):
    """Trains `network` on partial labels with pseudo labels and label-space reduction.

    Batches are `({"x": inputs, "id": example_ids}, labels)` with labels int {+1, -1, 0}.

    Args:
      network: a Keras model mapping inputs to [B, C] logits.
      num_examples: N, the training-set size (rows of `pseudo_labels`).
      num_classes: C.
      partial_loss: a `kpartial.losses.PartialLabelLoss`.
      pseudo_weight: loss weight of a pseudo-labelled entry relative to an annotated one.
    """

    def __init__(
        self, network, num_examples, num_classes, partial_loss, pseudo_weight=1.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.network = network
        self.partial_loss = partial_loss
        self.pseudo_weight = float(pseudo_weight)
        self.pseudo_labels = self.add_weight(
            shape=(num_examples, num_classes),
            dtype="int8",
            initializer="zeros",
            trainable=False,
            name="pseudo_labels",
        )
        self.active_classes = self.add_weight(
            shape=(num_classes,), initializer="ones", trainable=False, name="active_classes"
        )
        self.positive_thresholds = self.add_weight(
            shape=(num_classes,),
            initializer=keras.initializers.Constant(0.5),
            trainable=False,
            name="positive_thresholds",
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.built = (
            True  # the network is built and every own variable exists: checkpoints can load
        )

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            inputs = inputs["x"]
        return self.network(inputs, training=training)

    def resolve_labels(self, labels, example_ids):
        """Known labels win; unknown entries take the pseudo label of their example."""
        labels = ops.cast(labels, "int8")
        pseudo = ops.take(self.pseudo_labels, ops.cast(example_ids, "int32"), axis=0)
        return ops.where(ops.not_equal(labels, 0), labels, pseudo)

    def entry_weights(self, labels, targets):
        """[B, C] loss weights: the active-class mask, times `pseudo_weight` on pseudo labels."""
        is_pseudo = ops.logical_and(
            ops.equal(ops.cast(labels, "int8"), 0), ops.not_equal(targets, 0)
        )
        return ops.expand_dims(self.active_classes, 0) * ops.where(
            is_pseudo, self.pseudo_weight, 1.0
        )

    def compute_partial_loss(self, inputs, labels, training):
        logits = self.network(inputs["x"], training=training)
        targets = self.resolve_labels(labels, inputs["id"])
        loss = self.partial_loss(targets, logits, sample_weight=self.entry_weights(labels, targets))
        if self.network.losses:
            loss = loss + ops.sum(self.network.losses)
        return loss

    def train_step(self, data):
        import tensorflow as tf  # the TF backend's train step needs a GradientTape

        inputs, labels = data
        with tf.GradientTape() as tape:
            loss = self.compute_partial_loss(inputs, labels, training=True)
        variables = self.network.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        inputs, labels = data
        self.loss_tracker.update_state(self.compute_partial_loss(inputs, labels, training=False))
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


def predict_probabilities(model, dataset):
    """Sigmoid outputs of `model` on a finite, unshuffled, unaugmented dataset, as float32 [N, C]."""
    logits = model.predict(dataset, verbose=0)
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
