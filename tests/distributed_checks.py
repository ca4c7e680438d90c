"""Data-parallel checks on two logical CPU devices; run as a script by tests/test_distribution.py.

Logical devices must be configured before TensorFlow starts, so these checks run in a process of
their own and print one JSON object:

- "gradients": {case: max |update of a one-step SGD(1) under MirroredStrategy (2 replicas, each
  its half of the global batch) - the same step on one device|} for every loss that does not
  rank entries across the batch (LL-* and P-ASL do, among a replica's share of it),
  with pseudo labels and with a pruning phase; SGD with learning rate 1 makes the update the
  gradient itself. EPR's regulariser, a square of a batch mean, is exact too: the batch sums
  are all-reduced before it is taken.
- "batches": whether the two replicas' halves of the first global batch are the single-device
  batch (same ids, same labels).
- "replica_state": for a mirrored run with pseudo labels, pruning and an epoch-aware loss, at the
  start of every epoch (after the refresh or pruning that begins it) and at the end: the names of
  the variables whose replicas differ, and the number of replicas each kpartial state variable has.
- "resume": the mAP of an uninterrupted mirrored run and of one stopped after epoch 2 and resumed.
- "refusals": the errors of LL-Cp and of a global batch that the replicas do not divide.
"""

import json
import sys

import tensorflow as tf

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

from kpartial import class_stats, distribution, losses, pipeline, run_inputs, simulate, training
from kpartial.config import Config
from kpartial.partial_model import PartialLabelModel

BATCH = 64
# One strategy for the whole process, as in a run: strategies made separately would reuse the
# same collective keys in TensorFlow's one collective executor.
STATE = ("pseudo_positives", "pseudo_thresholds", "pseudo_negative_thresholds", "active_classes")


def _inputs():
    train, test = run_inputs.load_data(Config.from_flat())
    known = simulate.keep_fraction(train.labels, 0.3, 1)
    stats = class_stats.ClassStatistics.from_labels(known, train.label_names)
    return run_inputs.RunInputs(train, test, known, stats)


def _model(strategy, method, inputs, pseudo):
    train, stats = inputs.train, inputs.stats
    with strategy.scope():
        network = training.build_network(
            Config.from_flat(hidden_units=(16,), dropout=0.0, seed=0), train
        )
        model = PartialLabelModel(
            network,
            train.num_examples,
            train.num_classes,
            losses.get(method, stats),
            pseudo_weight=0.5,
            pseudo_labelling=pseudo,
        )
        model.compile(optimizer=keras.optimizers.SGD(1.0), steps_per_execution=1)
    return model


def _one_step(strategy, method, inputs, weights, pseudo, pruned):
    """The network's weights after one SGD(1) step on the first global batch under `strategy`."""
    model = _model(strategy, method, inputs, pseudo)
    model.network.set_weights(weights)
    num_classes = inputs.train.num_classes
    if pseudo:
        rng = np.random.default_rng(0)
        model.pseudo_negative_thresholds.assign(np.full(num_classes, 0.4, np.float32))
        store = rng.integers(0, num_classes + 1, size=model.pseudo_positives.shape)
        model.pseudo_positives.assign(store.astype(np.int32))
    if model.loss_epoch is not None:
        model.loss_epoch.assign(3)  # past warm-up: SPLC corrects, LL would select
    if pruned:
        active = np.ones(num_classes, np.float32)
        active[::3] = 0
        model.active_classes.assign(active)
    config = Config.from_flat(batch_size=BATCH, seed=5)
    datasets = pipeline.run_datasets(
        config,
        inputs,
        model.epochs_done,
        distribution.Placement(strategy, distribution.place(strategy)),
    )
    model.make_train_function()
    model.train_function(iter(datasets.train))
    model.write_back_head()
    return [v.numpy() for v in model.network.weights]


def gradient_differences(inputs):
    mirrored = distribution.make_strategy("mirrored")
    single = tf.distribute.get_strategy()
    weights = _model(single, "ignore", inputs, False).network.get_weights()
    cases = {}
    for method, constructor in losses.LOSSES.items():
        if getattr(constructor, "func", constructor).selects_across_batch:
            continue  # LL-*, P-ASL: each replica ranks its own share of the batch
        variants = [(method, False, False)]
        if method in ("kpartial", "splc"):
            variants += [(f"{method}+pseudo", True, False), (f"{method}+pseudo+pruned", True, True)]
        for case, pseudo, pruned in variants:
            before = [w.copy() for w in weights]
            one = _one_step(single, method, inputs, before, pseudo, pruned)
            two = _one_step(mirrored, method, inputs, before, pseudo, pruned)
            cases[case] = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
            update = max(float(np.max(np.abs(a - w))) for a, w in zip(one, weights))
            cases[f"{case} (update)"] = update
    return cases


def first_batches(inputs):
    """Whether the replicas' halves of the first global batch equal the one-device batch."""
    mirrored = distribution.make_strategy("mirrored")
    config = Config.from_flat(batch_size=BATCH, seed=5)
    single_model = _model(tf.distribute.get_strategy(), "ignore", inputs, False)
    one_device = tf.distribute.get_strategy()
    single = pipeline.run_datasets(
        config,
        inputs,
        single_model.epochs_done,
        distribution.Placement(one_device, distribution.place()),
    )
    (x, labels) = next(iter(single.train))
    model = _model(mirrored, "ignore", inputs, False)
    placement = distribution.Placement(mirrored, distribution.place(mirrored))
    (xs, label_parts) = next(
        iter(pipeline.run_datasets(config, inputs, model.epochs_done, placement).train)
    )
    ids = np.concatenate([t.numpy() for t in mirrored.experimental_local_results(xs["id"])])
    parts = mirrored.experimental_local_results(label_parts)
    return {
        "same_ids": bool(np.array_equal(ids, x["id"].numpy())),
        "same_labels": bool(np.array_equal(np.concatenate(parts), labels.numpy())),
        "replica_batch": int(parts[0].shape[0]),
    }


class ReadReplicas(keras.callbacks.Callback):
    """Compares every variable's replicas at each epoch's start (after the techniques) and end."""

    def __init__(self):
        super().__init__()
        self.differing, self.replicas, self.checks = set(), {}, 0

    def _check(self):
        model = self.model
        variables = [*model.variables, *model.optimizer.variables]
        if model._head_phase is not None:
            variables += [*model._head_phase.variables, *model._head_phase.optimizer.variables]
        for variable in variables:
            values = [v.numpy() for v in getattr(variable.value, "values", [variable.value])]
            if any(not np.array_equal(values[0], v) for v in values[1:]):
                self.differing.add(variable.path)
            if (
                variable.name in STATE
                or variable.name.endswith("_epoch")
                or "active_" in (variable.name)
            ):
                self.replicas[variable.name] = len(values)
        self.checks += 1

    def on_epoch_begin(self, epoch, logs=None):
        self._check()

    def on_train_end(self, logs=None):
        self._check()


def _config(**overrides):
    settings = {
        "strategy": "mirrored",
        "epochs": 5,
        "batch_size": BATCH * 4,
        "known_fraction": 0.3,
        "pseudo_start_epoch": 2,
        "pseudo_every": 2,
        "prune_schedule": ((3, 0.5),),
    }
    return Config.from_flat(**{**settings, **overrides})


def replica_state():
    reader = ReadReplicas()
    config = _config(method="splc", pseudo_labels="on", pruning="on")
    training.run(config, log=lambda line: None, callbacks=[reader])
    return {
        "differing": sorted(reader.differing),
        "replicas": reader.replicas,
        "checks": reader.checks,
    }


class Stop(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt  # a crash after the checkpoint of epoch 2


def resume(root):
    whole = training.run(_config(workdir=f"{root}/whole"), log=lambda line: None)
    stopped = _config(workdir=f"{root}/stopped")
    try:
        training.run(stopped, log=lambda line: None, callbacks=[Stop()])
    except KeyboardInterrupt:
        pass
    resumed = training.run(stopped, log=lambda line: None, resume=True)
    return {
        "whole": whole["map"],
        "resumed": resumed["map"],
        "resumed_after_epoch": resumed["resumed_after_epoch"],
    }


def refusals():
    messages = {}
    for name, config in {
        "ll_cp": _config(method="ll_cp"),
        "odd_batch": _config(batch_size=BATCH + 1),
    }.items():
        try:
            training.run(config, log=lambda line: None)
            messages[name] = None
        except ValueError as e:
            messages[name] = str(e)
    return messages


if __name__ == "__main__":
    inputs = _inputs()
    result = {
        "devices": len(tf.config.list_logical_devices("CPU")),
        "batches": first_batches(inputs),
        "gradients": gradient_differences(inputs),
        "replica_state": replica_state(),
        "resume": resume(sys.argv[1]),
        "refusals": refusals(),
    }
    print("RESULT " + json.dumps(result))
