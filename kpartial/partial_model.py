"""A Keras model whose train step reads pseudo labels and the active-class mask from variables.

The wrapped network is ordinary (features or images in, C logits out). What training changes about
the labels lives in non-trainable variables of this model, so compiled (and XLA-compiled) steps see
every update, and checkpoints (`save_weights`) carry them:

- `pseudo_positives` int32 [N, L] (only with pseudo labelling): each example's pseudo-positive
  classes (class + 1; 0 = empty slot), written by each refresh and read by example id: at most L
  per example, so the store grows with N x L, never N x C.
- `pseudo_thresholds`, `pseudo_negative_thresholds` float32 [C]: the per-class t+ and t-
  (probabilities) of the last refresh. t+ is a record (the store holds the entries above it); t-
  is applied online: each step, an unknown entry whose stop-gradient score is below t- counts as a
  negative (strictly, so ties stay unknown). They start at 1 and 0, the store empty: nothing is
  pseudo-labelled before the first refresh. Known labels always win.
- `corrected_labels` int8 [N, C], only for a loss that `needs_example_state` (LL-Cp): the +1
  labels its permanent corrections wrote, looked up by the example id the pipeline yields.
- `active_classes` float32 [C]: 1 for classes still trained, 0 for pruned ones.
- `unknown_rates` float32 [C] and `rates_measured` float32 [] (only when the run measures the
  unknown entries' positive rates, `kpartial.unknown_rates`, or tests how its labels went
  missing, `kpartial.annotation_test`): the rates u_c the loss's unknown term targets, and 1 once
  they are set (before, the loss is masked BCE, where the model is `masked_until_rates_set`).
- `epochs_done` int32 []: epochs finished, so a checkpoint knows where a resumed run continues.

The loss's entry weight is `active_c * (pseudo_weight if the entry holds a pseudo label else 1)`:
a pruned class adds neither loss nor gradient, and pseudo labels can count less than annotations.
Once classes are pruned, the train step computes the network's `logits` layer, the loss and the
head's optimizer update for the K active classes only ([B, K] and [D, K]): each pruning phase
copies the head's active columns, and their optimizer slots, into variables of its own
(`_HeadPhase`), updated by an optimizer of the same configuration, and writes them back after
every epoch (and before anything else reads the network: a refresh, pruning, evaluation, a
checkpoint). Pruned columns are never touched, so they keep their weights exactly and cost
nothing; the exported network still predicts every class. There is one train function (one
compilation) per phase. Where the pruned phases would skip less compute than a new train function
costs (a small head or few epochs left, `label_pruning.gathers_pruned_head`), the model is made
with `gathers_pruned_head=False`: the step keeps the full head, the mask weights the pruned
classes 0, and their head columns are put back after each update (`_FrozenColumns`), so they
keep their weights exactly too and one train function serves the whole run.

Callbacks change this state through the model's methods (`set_pseudo_labels`,
`clear_pseudo_labels`, `set_active_classes`), never by assigning the variables, so what a change
must also do (a new train function after pruning) happens in one place. `network_of(model)` is the
network that scores examples, for passes that predict outside the train step.
"""

import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kpartial import distribution, pipeline


class _HeadPhase:
    """The head's active columns as their own variables, with an optimizer of their own.

    A plain object, so Keras does not track its variables: checkpoints hold the full head, which
    `write_back` brings up to date.
    """

    def __init__(self, head, optimizer, class_ids, trainable_variables):
        self.main_optimizer, self.class_ids = optimizer, class_ids
        if not optimizer.built:  # as Keras builds it at the first step: on every trainable variable
            optimizer.build(trainable_variables)
        self.sources = head.trainable_variables  # kernel [D, C], bias [C]
        self.variables = [
            keras.Variable(ops.take(v, class_ids, axis=-1), name=f"active_{v.name}")
            for v in self.sources
        ]
        self.optimizer = type(optimizer).from_config(optimizer.get_config())
        self.optimizer.build(self.variables)
        self.optimizer.iterations.assign(optimizer.iterations)
        for source, phase in self._slot_pairs():
            phase.assign(ops.take(source, class_ids, axis=-1))

    def _slot_pairs(self):
        """(main optimizer slot of a head variable, the same slot of its active copy)."""
        pairs = []
        phase, main_optimizer = self.optimizer, self.main_optimizer
        for name, slots in vars(phase).items():
            main = getattr(main_optimizer, name, None)
            # Per-variable slots are lists parallel to the optimizer's variables (Keras' layout).
            if not (
                isinstance(slots, list)
                and isinstance(main, list)
                and len(slots) == len(phase._trainable_variables)
                and len(main) == len(main_optimizer._trainable_variables)
            ):
                continue
            for source, variable in zip(self.sources, self.variables):
                slot = slots[phase._get_variable_index(variable)]
                main_slot = main[main_optimizer._get_variable_index(source)]
                if isinstance(slot, keras.Variable) and tuple(slot.shape) == tuple(variable.shape):
                    pairs.append((main_slot, slot))
        return pairs

    def follow_learning_rate(self):
        """A callback may have changed the main optimizer's (non-schedule) learning rate."""
        if isinstance(self.main_optimizer._learning_rate, keras.Variable):
            self.optimizer.learning_rate.assign(self.main_optimizer.learning_rate)

    def logits(self, hidden):
        kernel = ops.cast(self.variables[0], hidden.dtype)
        logits = ops.matmul(hidden, kernel)
        if len(self.variables) > 1:
            logits = logits + ops.cast(self.variables[1], hidden.dtype)
        return logits

    def write_back(self):
        """The active columns (weights and optimizer slots) into the full head and its slots."""
        pairs = list(zip(self.sources, self.variables)) + self._slot_pairs()
        for full, active in pairs:
            values = full.numpy()
            values[..., self.class_ids] = active.numpy()
            full.assign(values)


class _FrozenColumns:
    """The head's values as of the last pruning, which the train step puts back into the pruned
    columns after each update: a zero gradient still moves them through the optimizer's momentum
    and weight decay. A plain object, so checkpoints do not hold it: the head's pruned columns
    in a checkpoint are these values already, and `hold` takes them again on a resume.
    """

    def __init__(self, head):
        self.sources = head.trainable_variables  # kernel [D, C], bias [C]
        self.values = [
            keras.Variable(v.numpy(), trainable=False, name=f"frozen_{v.name}")
            for v in self.sources
        ]

    def hold(self):
        """Takes the head's current values (a host copy: a read could alias the variable)."""
        for source, value in zip(self.sources, self.values):
            value.assign(source.numpy())

    def put_back(self, active):
        """Graph code: the columns of the classes not `active` (bool [C]) get their held values."""
        for source, value in zip(self.sources, self.values):
            source.assign(ops.where(active, source, value))


class PartialLabelModel(keras.Model):
    """Trains `network` on partial labels with pseudo labels and label-space reduction.

    Batches are `({"x": inputs, "id": example_ids}, labels)` with labels int {+1, -1, 0}.

    Args:
      network: a Keras model mapping inputs to [B, C] logits. If it has a Dense layer named
        `logits` (as `kpartial.models` builds), pruned classes' output weights are frozen.
      num_examples: N, the training-set size (rows of `corrected_labels`, LL-Cp only).
      num_classes: C.
      partial_loss: a `kpartial.losses.PartialLabelLoss`.
      pseudo_weight: loss weight of a pseudo-labelled (or corrected) entry relative to an
        annotated one.
      pseudo_labelling: whether the train step applies pseudo labels. False skips its [B, C]
        comparisons and keeps no store; the threshold variables exist either way.
      max_pseudo_positives: L, the store's pseudo-positive slots per example.
      measures_unknown_rates: whether the loss reads its unknown entries' rates from this
        model's variables (`set_unknown_rates`). Needs a loss that `reads_unknown_rates`.
      masked_until_rates_set: with `measures_unknown_rates`, whether the loss is masked BCE
        until the rates are set (`kpartial.unknown_rates`: the first epochs are the masked
        model that measures them). False: a callback sets them before the first step
        (`kpartial.annotation_test`), and the step reads the rates alone.
      gathers_pruned_head: True: a pruning gives the step the active head columns as variables
        of their own (`_HeadPhase`) in a new train function, so the pruned step's cost follows
        the active share. False: the step keeps the full head, weights the pruned classes 0
        and puts their head columns back after each update, so they stay frozen and no train
        function is rebuilt; for runs where the pruned classes' compute saved is less than a
        new train function costs (`label_pruning.gathers_pruned_head`). One replica only.
    """

    def __init__(
        self,
        network,
        num_examples,
        num_classes,
        partial_loss,
        pseudo_weight=1.0,
        pseudo_labelling=True,
        max_pseudo_positives=16,
        measures_unknown_rates=False,
        masked_until_rates_set=True,
        gathers_pruned_head=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.masked_until_rates_set = bool(masked_until_rates_set)
        self.gathers_pruned_head = bool(gathers_pruned_head)
        if measures_unknown_rates and not partial_loss.reads_unknown_rates:
            raise ValueError(f"{type(partial_loss).__name__} has no unknown term to measure for")
        self.network = network
        self.partial_loss = partial_loss
        self.pseudo_weight = float(pseudo_weight)
        self.pseudo_labelling = bool(pseudo_labelling)
        self.corrected_labels = None
        if partial_loss.needs_example_state:
            self.corrected_labels = self.add_weight(
                shape=(num_examples, num_classes),
                dtype="int8",
                initializer="zeros",
                trainable=False,
                name="corrected_labels",
            )
        self.pseudo_positives = None
        if self.pseudo_labelling:
            self.pseudo_positives = self.add_weight(
                shape=(num_examples, min(int(max_pseudo_positives), num_classes)),
                dtype="int32",
                initializer="zeros",
                trainable=False,
                name="pseudo_positives",
            )
        self.active_classes = self.add_weight(
            shape=(num_classes,), initializer="ones", trainable=False, name="active_classes"
        )
        self.pseudo_thresholds = self.add_weight(
            shape=(num_classes,), initializer="ones", trainable=False, name="pseudo_thresholds"
        )
        self.pseudo_negative_thresholds = self.add_weight(
            shape=(num_classes,),
            initializer="zeros",
            trainable=False,
            name="pseudo_negative_thresholds",
        )
        self.unknown_rates = self.rates_measured = None
        if measures_unknown_rates:
            self.unknown_rates = self.add_weight(
                shape=(num_classes,), initializer="zeros", trainable=False, name="unknown_rates"
            )
            self.rates_measured = self.add_weight(
                shape=(), initializer="zeros", trainable=False, name="rates_measured"
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
        # The head's input: a pruned train step multiplies it by the active columns only.
        self._features = None
        if self.output_layer is not None:
            self._features = keras.Model(network.inputs, self.output_layer.input)
        self._head_phase = None  # the current pruning phase's head, or None
        self._active_mask = None  # the active classes the train function was made for
        self._frozen_head = None  # without gathers_pruned_head: the pruned columns' values
        if not self.gathers_pruned_head and self.output_layer is not None:
            self._frozen_head = _FrozenColumns(self.output_layer)
        self._label_columns = None  # the training pipeline's classes (`training_label_columns`)
        # The network is built and every variable of this model exists, so checkpoints can load
        # into a freshly constructed model.
        self.built = True

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            inputs = inputs["x"]
        return self.network(inputs, training=training)

    # What callbacks change. They go through these methods rather than assigning the variables,
    # so the variables' meaning (and what a change must rebuild) is kept here.

    @property
    def pseudo_store_shape(self):
        """(N, L): the examples and the pseudo-positive slots per example of the store.

        Raises:
          ValueError: the model keeps no store (`pseudo_labelling=False`).
        """
        if self.pseudo_positives is None:
            raise ValueError(
                "this PartialLabelModel was made with pseudo_labelling=False: it keeps no pseudo "
                "labels"
            )
        return tuple(int(d) for d in self.pseudo_positives.shape)

    def set_pseudo_labels(self, positives, positive_thresholds, negative_thresholds):
        """Installs a refresh's pseudo labels; the next train steps apply them.

        The values go into variables the compiled train step reads, so no retrace is needed, and
        checkpoints carry them.

        Args:
          positives: int [N, L] store: each example's pseudo-positive classes (class + 1; 0 = an
            empty slot). Known labels still win over them.
          positive_thresholds: float [C] probabilities t+, kept as a record (the store already
            holds the entries above them).
          negative_thresholds: float [C] probabilities t-: each step, an unknown entry whose
            score is strictly below t-_c counts as a negative.

        Raises:
          ValueError: the model keeps no store, or an argument's shape is not the variable's.
        """
        writes = [
            ("positives", self.pseudo_positives, np.asarray(positives, np.int32)),
            ("positive_thresholds", self.pseudo_thresholds, np.asarray(positive_thresholds)),
            (
                "negative_thresholds",
                self.pseudo_negative_thresholds,
                np.asarray(negative_thresholds),
            ),
        ]
        _ = self.pseudo_store_shape  # refuses a model without a store
        for name, variable, value in writes:
            if value.shape != tuple(variable.shape):
                raise ValueError(f"{name} has shape {value.shape}, the model's is {variable.shape}")
        for _, variable, value in writes:
            variable.assign(value.astype(variable.dtype))

    def clear_pseudo_labels(self):
        """Back to no pseudo labels (as constructed): an empty store, t+ = 1 and t- = 0."""
        if self.pseudo_positives is not None:
            self.pseudo_positives.assign(np.zeros(self.pseudo_store_shape, np.int32))
        self.pseudo_thresholds.assign(np.ones(self.pseudo_thresholds.shape, np.float32))
        self.pseudo_negative_thresholds.assign(
            np.zeros(self.pseudo_negative_thresholds.shape, np.float32)
        )

    @property
    def unknown_rates_measured(self):
        """Whether the loss's unknown term is on with measured rates (False before
        `set_unknown_rates`, and for a model that does not measure them)."""
        return self.rates_measured is not None and float(self.rates_measured.numpy()) > 0

    def set_unknown_rates(self, rates):
        """The loss's unknown entries' rates u_c [C], and its full form, from the next step on.

        Raises:
          ValueError: the model does not measure rates, or `rates` is not C values in (0, 1).
        """
        if self.unknown_rates is None:
            raise ValueError("this PartialLabelModel was made with measures_unknown_rates=False")
        rates = np.asarray(rates, np.float32)
        if rates.shape != tuple(self.unknown_rates.shape) or not np.all((rates > 0) & (rates < 1)):
            raise ValueError(f"need {self.unknown_rates.shape[0]} rates in (0, 1)")
        self.unknown_rates.assign(rates)
        self.rates_measured.assign(1.0)

    @property
    def active_class_mask(self):
        """bool [C]: the classes still trained."""
        return self.active_classes.numpy() > 0

    def set_active_classes(self, mask):
        """Trains the classes of `mask` only, from the next step on.

        Writes `active_classes` (checkpointed) and, on a compiled model, builds the train function
        of the new active set at once (`make_train_function`: the pruned step's K is static); an
        uncompiled model builds it when `fit` starts.

        Args:
          mask: bool [C], True for the classes that stay active.

        Raises:
          ValueError: `mask` is not [C], or it leaves no class active.
        """
        mask = np.asarray(mask, bool)
        if mask.shape != tuple(self.active_classes.shape):
            raise ValueError(f"mask has shape {mask.shape}, not ({self.active_classes.shape[0]},)")
        if not mask.any():
            raise ValueError("at least one class must stay active")
        self.active_classes.assign(mask.astype(np.float32))
        if self.compiled:
            self.make_train_function()

    def resolve_labels(self, labels, logits, example_ids=None, class_ids=None):
        """Known labels win; then LL-Cp's corrections; then stored positives; then the online t-.

        Args:
          labels: int [B, K] annotations {+1, -1, 0}.
          logits: float [B, K] scores of the same entries (no gradient flows through the rule).
          example_ids: int [B] ids, to look up stored pseudo positives and LL-Cp's corrections.
          class_ids: int [K] the classes of the columns, when they are a subset of the C classes.
        """
        labels = ops.cast(labels, "int8")
        ids = None if example_ids is None else ops.cast(example_ids, "int32")
        if self.corrected_labels is not None and ids is not None:
            corrected = ops.take(self.corrected_labels, ids, axis=0)
            if class_ids is not None:
                corrected = ops.take(corrected, class_ids, axis=1)
            labels = ops.where(ops.not_equal(labels, 0), labels, corrected)
        if not self.pseudo_labelling:
            return labels
        lower = _logit(self._per_class(self.pseudo_negative_thresholds, class_ids))
        # int8 scalars: every select stays in the labels' dtype, with no cast over [B, K].
        one, zero = ops.ones((), "int8"), ops.zeros((), "int8")
        pseudo = ops.where(ops.less(ops.stop_gradient(logits), lower), -one, zero)
        if ids is not None:
            pseudo = ops.where(
                self._stored_positives(ids, class_ids, ops.shape(labels)), one, pseudo
            )
        return ops.where(ops.not_equal(labels, zero), labels, pseudo)

    def _stored_positives(self, ids, class_ids, shape):
        """bool [B, K]: the entries of rows `ids` that the store holds (columns `class_ids`)."""
        slots = ops.take(self.pseudo_positives, ids, axis=0)  # [B, L]: class + 1, or 0
        if class_ids is not None:  # class + 1 -> column + 1; a pruned class -> 0
            num_classes = self.pseudo_thresholds.shape[0]
            columns = ops.arange(1, ops.shape(class_ids)[0] + 1, dtype="int32")
            position = ops.scatter(ops.expand_dims(class_ids, -1), columns, (num_classes,))
            slots = ops.where(slots > 0, ops.take(position, ops.maximum(slots - 1, 0)), 0)
        rows = ops.broadcast_to(
            ops.expand_dims(ops.arange(shape[0], dtype="int32"), -1), ops.shape(slots)
        )
        # Empty slots point at column 0 with a 0 added: scatter sums, and a row's classes differ.
        index = ops.stack([rows, ops.maximum(slots - 1, 0)], axis=-1)
        hits = ops.scatter(
            ops.reshape(index, (-1, 2)), ops.reshape(ops.cast(slots > 0, "int32"), (-1,)), shape
        )
        return ops.greater(hits, 0)

    @staticmethod
    def _per_class(variable, class_ids):
        return variable if class_ids is None else ops.take(variable, class_ids)

    def entry_weights(self, labels, targets, class_ids=None):
        """Loss weights: the active-class mask [1, K], times `pseudo_weight` on the labels the
        model filled in ([B, K]; where it fills in none, the mask alone, so no pass over [B, K]
        is spent on it)."""
        active = ops.expand_dims(self._per_class(self.active_classes, class_ids), 0)
        if not self.pseudo_labelling and self.corrected_labels is None:
            return active
        # The targets differ from the annotations exactly where the model filled a label in.
        is_pseudo = ops.not_equal(targets, ops.cast(labels, targets.dtype))
        return ops.where(is_pseudo, self.pseudo_weight * active, active)

    def compute_partial_loss(self, inputs, labels, training, use_pseudo_labels=True):
        return self._forward(inputs, labels, training, use_pseudo_labels)[0]

    def _forward(
        self,
        inputs,
        labels,
        training,
        use_pseudo_labels=True,
        class_ids=None,
        labels_in_columns=False,
    ):
        """(loss, resolved targets, logits) of one batch; [B, K] when `class_ids` [K] is given.

        With `class_ids` the output layer computes only those columns (its kernel and bias are
        gathered), and labels, targets and weights are gathered to them before anything else;
        `labels_in_columns`: the labels hold those columns already (`training_label_columns`).
        """
        if class_ids is None:
            logits = self.network(inputs["x"], training=training)
        else:
            logits = self._active_logits(inputs["x"], class_ids, training)
            if not labels_in_columns:
                labels = ops.take(labels, class_ids, axis=1)
        targets = labels
        if use_pseudo_labels:
            targets = self.resolve_labels(labels, logits, inputs["id"], class_ids)
        weights = self.entry_weights(labels, targets, class_ids)
        partial_loss = self.partial_loss if class_ids is None else self._active_loss
        unknown = None
        if self.unknown_rates is not None:
            measured = self.rates_measured if self.masked_until_rates_set else None
            unknown = (measured, self._per_class(self.unknown_rates, class_ids))
        loss, replicas = distribution.replica_loss(
            partial_loss,
            partial_loss.sums(
                targets,
                logits,
                weights,
                unknown=unknown,
                annotations=labels if self.pseudo_labelling else None,
            ),
            ops.shape(logits)[0],
        )
        if self.network.losses:
            loss = loss + ops.sum(self.network.losses) / replicas
        return loss, targets, logits

    def _active_logits(self, x, class_ids, training):
        """[B, K] logits of the classes `class_ids`: the phase's head, or the gathered columns."""
        # The head's dtype (float32 under a mixed-precision policy), as the full head computes.
        hidden = ops.cast(self._features(x, training=training), self.output_layer.compute_dtype)
        if self._head_phase is not None:
            return self._head_phase.logits(hidden)
        head = self.output_layer
        kernel = ops.cast(ops.take(head.kernel, class_ids, axis=1), hidden.dtype)
        logits = ops.matmul(hidden, kernel)
        if head.use_bias:
            logits = logits + ops.cast(ops.take(head.bias, class_ids), hidden.dtype)
        return logits

    def _phase_class_ids(self):
        phase = self._head_phase
        return None if phase is None else ops.convert_to_tensor(phase.class_ids)

    # The steps are graph code written for tracing (no Python control flow on tensors), so Keras'
    # train and test functions call them unconverted: AutoGraph's conversion of the loss and the
    # pseudo-label code cost a small run more than its steps.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        inputs, labels = data
        phase, class_ids = self._head_phase, self._phase_class_ids()
        with tf.GradientTape() as tape:
            loss, targets, logits = self._forward(
                inputs,
                labels,
                True,
                class_ids=class_ids,
                labels_in_columns=self._label_columns is not None,
            )
        variables = self.network.trainable_variables
        phase_gradients = []
        if phase is not None:  # the phase's optimizer updates the head's active copy
            head = {id(v) for v in phase.sources}
            variables = [v for v in variables if id(v) not in head]
            gradients = tape.gradient(loss, variables + phase.variables)
            gradients, phase_gradients = gradients[: len(variables)], gradients[len(variables) :]
        else:
            gradients = tape.gradient(loss, variables)
        if variables:
            self.optimizer.apply_gradients(zip(gradients, variables))
        else:  # a network that is its head alone: the step still counts
            self.optimizer.iterations.assign_add(1)
        if self._frozen_head is not None:
            self._frozen_head.put_back(ops.greater(self.active_classes, 0.0))
        if phase is not None:
            # Each optimizer all-reduces its gradients across replicas; every replica must issue
            # the two collectives in the same order, so the phase's waits for the main update.
            with tf.control_dependencies([ops.convert_to_tensor(self.optimizer.iterations)]):
                phase_gradients = [tf.identity(g) for g in phase_gradients]
            phase.optimizer.apply_gradients(zip(phase_gradients, phase.variables))
        self._apply_permanent_corrections(inputs["id"], targets, logits, class_ids)
        self._track_loss(loss)
        return self._step_logs()

    def _track_loss(self, share):
        """The tracker averages its updates over replicas: each adds its share times R, so the
        mean is the global batch's loss."""
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        self.loss_tracker.update_state(share * replicas)

    def _step_logs(self):
        loss = self.loss_tracker.result()
        if distribution.place(self.distribute_strategy).count > 1:
            # Keras reduces a step's outputs across workers with a mean over axis 0 (Keras 3.15),
            # which a scalar does not have.
            loss = ops.reshape(loss, (1,))
        return {"loss": loss}

    def training_label_columns(self):
        """The `pipeline.LabelColumns` a training pipeline reads, so that a pruned phase's
        batches hold the active classes' labels alone ([B, K]) and the step gathers none; None
        where no phase gathers the head (`gathers_pruned_head`). For a pipeline that starts a new
        iteration each epoch (one replica), which Keras starts after the pruning callbacks."""
        if not self.gathers_pruned_head or self.output_layer is None:
            return None
        if self._label_columns is None:
            self._label_columns = pipeline.LabelColumns(self.active_classes.shape[0])
            if self._head_phase is not None:  # a phase made before the pipeline
                self._label_columns.set(self._head_phase.class_ids)
        return self._label_columns

    def make_train_function(self, force=False):
        """Keras's, rebuilt (one trace, one XLA compilation) whenever the active set changed.

        With classes pruned (and a `logits` layer) the train step computes the head, the loss and
        the head's update for the K active classes only, K static: each pruning phase has its own
        train function and `_HeadPhase`. Called by Keras as `fit` starts (after a resume restored
        `active_classes`) and by `set_active_classes`. Without `gathers_pruned_head` the step
        reads the active classes from their variable, and one train function serves every phase.
        """
        active = self.active_classes.numpy() > 0
        if not np.array_equal(active, self._active_mask):
            self._active_mask = active
            if self.gathers_pruned_head:
                self._enter_phase(active)
                force = True
            elif self._frozen_head is not None:
                self._frozen_head.hold()
        super().make_train_function(force=force)
        return self.train_function

    def _enter_phase(self, active):
        """The head's active columns as a `_HeadPhase` (none when every class is active), the
        pipeline's label columns and the loss of the active classes."""
        self.write_back_head()
        self._head_phase = None
        class_ids = None
        if self.output_layer is not None and not active.all():
            class_ids = np.flatnonzero(active).astype(np.int32)
            with self.distribute_strategy.scope():  # mirrored like the head it copies
                self._head_phase = _HeadPhase(
                    self.output_layer, self.optimizer, class_ids, self.trainable_variables
                )
        if self._label_columns is not None:
            self._label_columns.set(np.flatnonzero(active))
        self._active_loss = self._loss_for_classes(class_ids)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds the optimizer under the strategy's scope; every other variable exists already.

        Keras' version (TF backend, under a strategy) first takes a batch and reduces it across
        replicas to trace the model symbolically, which this model does not need, and which fails
        for a dict batch under `MultiWorkerMirroredStrategy` (seen with Keras 3.15).
        """
        del iterator, data_batch
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def write_back_head(self):
        """Brings the network's head up to date with the current phase (after every epoch)."""
        if self._head_phase is not None:
            self._head_phase.write_back()

    def fit(self, *args, callbacks=None, **kwargs):
        """Keras `fit`, with the head written back after every epoch, before other callbacks."""
        callbacks = [_HeadWriteBack(), *(callbacks or [])]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def _loss_for_classes(self, class_ids):
        """The partial loss of the classes `class_ids` alone: a loss with class priors gets theirs
        (and kpartial its unknown entries' rates)."""
        loss = self.partial_loss
        if class_ids is None or not loss.uses_priors:
            return loss
        config = loss.get_config()
        for key in ("priors", "unknown_priors"):
            if config.get(key) is not None:
                config[key] = np.asarray(config[key])[class_ids].tolist()
        return type(loss).from_config(config)

    def _apply_permanent_corrections(self, example_ids, targets, logits, class_ids=None):
        """LL-Cp: entries the loss corrects for good become +1 in `corrected_labels`.

        `targets` and `logits` are [B, K]; `class_ids` [K] names their classes when K < C.
        """
        corrections = getattr(self.partial_loss, "permanent_corrections", None)
        corrected = corrections(targets, logits) if corrections else None
        if corrected is None or self.corrected_labels is None:
            return
        ids = ops.cast(example_ids, "int32")
        current = ops.take(self.corrected_labels, ids, axis=0)
        corrected = ops.greater(corrected, 0)
        if class_ids is not None:  # back to all C columns; the others are not corrected
            corrected = ops.transpose(
                ops.scatter(
                    ops.expand_dims(ops.cast(class_ids, "int32"), -1),
                    ops.transpose(ops.cast(corrected, "int8")),
                    (current.shape[1], ops.shape(current)[0]),
                )
            )
            corrected = ops.greater(corrected, 0)
        rows = ops.where(corrected, ops.ones_like(current), current)
        # In place (the TF variable behind the Keras one): a step writes B rows, not N.
        self.corrected_labels.value.scatter_nd_update(ops.expand_dims(ids, -1), rows)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        # Evaluation data has its own example ids, which index no training pseudo labels. During a
        # phase the head's active copy is current (Keras validates before callbacks run).
        inputs, labels = data
        loss = self._forward(inputs, labels, False, False, class_ids=self._phase_class_ids())[0]
        self._track_loss(loss)
        return self._step_logs()

    @property
    def metrics(self):
        return [self.loss_tracker]


def network_of(model):
    """The network that scores examples: a `PartialLabelModel`'s `network`, any other model itself.

    Passes that predict (refreshes, pruning, evaluation) call the network directly, so they need
    neither the wrapper's dict inputs nor its train-step state.
    """
    return model.network if isinstance(model, PartialLabelModel) else model


class _HeadWriteBack(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if self.model._head_phase is not None:
            self.model._head_phase.follow_learning_rate()

    def on_epoch_end(self, epoch, logs=None):
        self.model.write_back_head()

    def on_train_end(self, logs=None):
        self.model.write_back_head()


class EpochClock(keras.callbacks.Callback):
    """Keeps the model's sense of the epoch: goes first among a run's callbacks.

    At the start of epoch e it tells an epoch-aware loss (one with an `epoch` variable) the epoch,
    and reseeds every dropout-style random layer of the network from (its seed, e), so the random
    masks of epoch e do not depend on whether the run was resumed before it (Keras does not save
    seed-generator state in checkpoints). At the end it counts the epoch in `epochs_done`, which
    checkpoints carry. It adds `epoch_seconds` to the epoch's logs: the epoch's wall time so far
    (the refresh and pruning that begin it included; the monitoring that ends it not).
    """

    def on_train_begin(self, logs=None):
        network = network_of(self.model)
        self._seed_states = [v for v in network.variables if v.name == "seed_generator_state"]
        self._base_seeds = [int(v.numpy()[0]) for v in self._seed_states]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()
        loss_epoch = getattr(self.model, "loss_epoch", None)
        if loss_epoch is not None:
            loss_epoch.assign(epoch)
        for state, base in zip(self._seed_states, self._base_seeds):
            state.assign(np.array([(base * 1_000_003 + epoch) % 2**31, 0], state.dtype))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._epoch_started
        epochs_done = getattr(self.model, "epochs_done", None)
        if epochs_done is not None:
            epochs_done.assign(epoch + 1)


def _logit(probability):
    """log(p / (1 - p)), +-inf at 1 and 0: a rule on logits equals the rule on probabilities."""
    return ops.log(probability) - ops.log1p(-probability)
