"""A Keras model whose train step reads pseudo labels and the active-class mask from variables.

The wrapped network is ordinary (features or images in, C logits out). What training changes about
the labels lives in non-trainable variables of this model, so compiled (and XLA-compiled) steps see
every update, and checkpoints (`save_weights`) carry them:

- `pseudo_labels` int8 [N, C]: labels the pseudo-label callback assigned to unknown entries,
  looked up by the example id the pipeline yields. Known labels always win.
- `active_classes` float32 [C]: 1 for classes still trained, 0 for pruned ones.
- `pseudo_thresholds` float32 [C]: the per-class t+ of the last pseudo-label refresh.
- `epochs_done` int32 []: epochs finished, so a checkpoint knows where a resumed run continues.

The loss's entry weight is `active_c * (pseudo_weight if the entry holds a pseudo label else 1)`:
a pruned class adds neither loss nor gradient, and pseudo labels can count less than annotations.
Because AdamW's momentum and decoupled weight decay would still move a pruned class's output unit,
the train step also restores the pruned columns of the network's `logits` layer after each update:
a pruned class's output weights stay exactly where pruning left them.
"""

import keras
import numpy as np
from keras import ops


class PartialLabelModel(keras.Model):
    """Trains `network` on partial labels with pseudo labels and label-space reduction.

    Batches are `({"x": inputs, "id": example_ids}, labels)` with labels int {+1, -1, 0}.

    Args:
      network: a Keras model mapping inputs to [B, C] logits. If it has a Dense layer named
        `logits` (as `kpartial.models` builds), pruned classes' output weights are frozen.
      num_examples: N, the training-set size (rows of `pseudo_labels`).
      num_classes: C.
      partial_loss: a `kpartial.losses.PartialLabelLoss`.
      pseudo_weight: loss weight of a pseudo-labelled entry relative to an annotated one.
      example_state: whether the model keeps per-example label state: the int8 [N, C]
        `pseudo_labels` table that pseudo labelling, label pruning and LL-Cp write. False leaves
        it out (a [1, C] placeholder keeps checkpoints uniform) for runs that use none of them,
        at a scale where it would not fit.
    """

    def __init__(
        self,
        network,
        num_examples,
        num_classes,
        partial_loss,
        pseudo_weight=1.0,
        example_state=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.network = network
        self.partial_loss = partial_loss
        self.pseudo_weight = float(pseudo_weight)
        self.example_state = bool(example_state)
        self.pseudo_labels = self.add_weight(
            shape=(num_examples if example_state else 1, num_classes),
            dtype="int8",
            initializer="zeros",
            trainable=False,
            name="pseudo_labels",
        )
        self.active_classes = self.add_weight(
            shape=(num_classes,), initializer="ones", trainable=False, name="active_classes"
        )
        self.pseudo_thresholds = self.add_weight(
            shape=(num_classes,),
            initializer=keras.initializers.Constant(0.5),
            trainable=False,
            name="pseudo_thresholds",
        )
        self.epochs_done = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False, name="epochs_done"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        # An epoch-aware loss (SPLC, LL-*) keeps its epoch in a variable; tracking it here puts it
        # in checkpoints.
        self.loss_epoch = getattr(partial_loss, "epoch", None)
        names = [layer.name for layer in network.layers]
        self.output_layer = network.get_layer("logits") if "logits" in names else None
        # The network is built and every variable of this model exists, so checkpoints can load
        # into a freshly constructed model.
        self.built = True

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            inputs = inputs["x"]
        return self.network(inputs, training=training)

    def resolve_labels(self, labels, example_ids):
        """Known labels win; unknown entries take the pseudo label of their example."""
        labels = ops.cast(labels, "int8")
        if not self.example_state:
            return labels
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

    def compute_partial_loss(self, inputs, labels, training, use_pseudo_labels=True):
        return self._forward(inputs, labels, training, use_pseudo_labels)[0]

    def _forward(self, inputs, labels, training, use_pseudo_labels=True):
        """(loss, resolved targets, logits) of one batch."""
        logits = self.network(inputs["x"], training=training)
        targets = self.resolve_labels(labels, inputs["id"]) if use_pseudo_labels else labels
        loss = self.partial_loss(targets, logits, sample_weight=self.entry_weights(labels, targets))
        if self.network.losses:
            loss = loss + ops.sum(self.network.losses)
        return loss, targets, logits

    def train_step(self, data):
        import tensorflow as tf  # the TF backend's train step needs a GradientTape

        inputs, labels = data
        with tf.GradientTape() as tape:
            loss, targets, logits = self._forward(inputs, labels, training=True)
        variables = self.network.trainable_variables
        frozen = self._output_weights()
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        active = ops.greater(self.active_classes, 0)
        for variable, before in frozen:
            variable.assign(ops.where(active, variable, before))
        self._apply_permanent_corrections(inputs["id"], targets, logits)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def _apply_permanent_corrections(self, example_ids, targets, logits):
        """LL-Cp: entries the loss corrects for good become +1 pseudo labels of their example."""
        corrections = getattr(self.partial_loss, "permanent_corrections", None)
        corrected = corrections(targets, logits) if corrections else None
        if corrected is None:
            return
        ids = ops.cast(example_ids, "int32")
        current = ops.take(self.pseudo_labels, ids, axis=0)
        rows = ops.where(ops.greater(corrected, 0), ops.ones_like(current), current)
        # In place (the TF variable behind the Keras one): a step writes B rows, not N.
        self.pseudo_labels.value.scatter_nd_update(ops.expand_dims(ids, -1), rows)

    def _output_weights(self):
        """(variable, value before the update) for the output layer's kernel and bias."""
        if self.output_layer is None:
            return []
        return [(v, ops.copy(v.value)) for v in self.output_layer.trainable_variables]

    def test_step(self, data):
        # Evaluation data has its own example ids, which index no training pseudo labels.
        inputs, labels = data
        loss = self.compute_partial_loss(inputs, labels, training=False, use_pseudo_labels=False)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


class EpochClock(keras.callbacks.Callback):
    """Keeps the model's sense of the epoch: goes first among a run's callbacks.

    At the start of epoch e it tells an epoch-aware loss (one with an `epoch` variable) the epoch,
    and reseeds every dropout-style random layer of the network from (its seed, e), so the random
    masks of epoch e do not depend on whether the run was resumed before it (Keras does not save
    seed-generator state in checkpoints). At the end it counts the epoch in `epochs_done`, which
    checkpoints carry.
    """

    def on_train_begin(self, logs=None):
        network = getattr(self.model, "network", self.model)
        self._seed_states = [v for v in network.variables if v.name == "seed_generator_state"]
        self._base_seeds = [int(v.numpy()[0]) for v in self._seed_states]

    def on_epoch_begin(self, epoch, logs=None):
        loss_epoch = getattr(self.model, "loss_epoch", None)
        if loss_epoch is not None:
            loss_epoch.assign(epoch)
        for state, base in zip(self._seed_states, self._base_seeds):
            state.assign(np.array([(base * 1_000_003 + epoch) % 2**31, 0], state.dtype))

    def on_epoch_end(self, epoch, logs=None):
        epochs_done = getattr(self.model, "epochs_done", None)
        if epochs_done is not None:
            epochs_done.assign(epoch + 1)


def predict_probabilities(model, dataset):
    """Sigmoid outputs of `model` on a finite, unshuffled, unaugmented dataset, as float32 [N, C]."""
    logits = model.predict(dataset, verbose=0)
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
