"""One training run, start to finish, as one story.

    placement -> inputs (read and checked before anything is written) -> auto_tune's candidates
    -> claim the workdir -> model -> datasets -> callbacks (each technique adds its own) -> fit
    -> the selected epoch -> thresholds -> test report -> artifacts

The parts live in their own modules: the configuration in `kpartial.config`, the inputs in
`kpartial.run_inputs`, the workdir's run modes (new, resumed, finished, a worker's view) in
`kpartial.run_modes`, the report in `kpartial.report`; each technique (`kpartial.pseudo_labels`,
`kpartial.label_pruning`, `kpartial.auto_tune`) owns its switch and builds its callbacks.
`tools/train.py` is a thin flag layer over `run`.
"""

import math
import os
import time

import keras
import tensorflow as tf

from kpartial import (
    annotation_test,
    auto_tune,
    checkpoints,
    distribution,
    evaluation,
    label_pruning,
    losses,
    models,
    pipeline,
    pseudo_labels,
    report,
    run_inputs,
    run_modes,
    unknown_rates,
)
from kpartial.config import Config  # noqa: F401 (training.Config: the run's config)
from kpartial.partial_model import EpochClock, PartialLabelModel

load_data = run_inputs.load_data


def run(config, log=print, datasets=None, callbacks=(), resume=False, overwrite=False, files=None):
    """Trains, evaluates and writes artifacts into `config.workdir`; returns the metrics dict.

    Args:
      config: a `kpartial.config.Config`.
      log: prints one line.
      datasets: `load_data(config)` when the caller already has it (runs only read it).
      callbacks: more Keras callbacks for `fit`; with `auto_tune` each candidate's `fit` gets the
        same objects in turn (a callback that keeps state across fits sees both candidates).
      resume: continue the run in `config.workdir` from its last checkpoint; the config must be
        the one the run started with. A finished run is not trained again: its metrics are
        returned. A workdir without a run starts a new one.
      overwrite: replace a previous run in `config.workdir` (only kpartial's own artifacts are
        removed, and only after every input was read and checked). Without `resume` or
        `overwrite`, a workdir holding a run is refused.
      files: {name: text} written into the workdir once it is claimed (e.g. the resolved flags).

    With several workers (`strategy="multi_worker"`), every worker calls `run` with the same
    config; only the chief claims and writes the workdir, which the others read (a resumed run's
    checkpoint) but never write. A worker that is not the chief returns its own few figures.

    Raises:
      WorkdirError: the workdir is unusable, in use, or holds a run and neither flag was given.
      DataError: bad input data.
    """
    # First: a multi-worker strategy must exist before any other TensorFlow op runs.
    placement = distribution.placement(config.runtime.strategy, config.runtime.peer_timeout)
    inputs = run_inputs.read(config, placement, datasets, log)
    config, candidates = auto_tune.plan(config, inputs.stats, placement, log)

    def train_one(one, one_log, resume, overwrite=False, files=None):
        with run_modes.claimed(one, placement, resume, overwrite, files, one_log) as claim:
            if claim.finished is not None:
                return claim.finished
            return train(one, inputs, placement, callbacks, claim.resuming, one_log)

    if not candidates:
        return train_one(config, log, resume, overwrite, files)
    with run_modes.claimed(config, placement, resume, overwrite, files, log) as claim:
        if claim.finished is not None:
            return claim.finished
        return auto_tune.tune(
            config, lambda candidate, line: train_one(candidate, line, claim.resuming), log
        )


def train(config, inputs, placement, extra_callbacks=(), resuming=False, log=print):
    """One run of `config` on `inputs`: fit, select, report and (with a workdir) write."""
    keras.utils.set_random_seed(config.runtime.seed)
    report.log_inputs(log, inputs, config)
    _log_placement(config, placement, log)
    with placement.strategy.scope():
        model = build_model(config, inputs, placement)
    backup, start_epoch = _checkpointing(config, model, resuming, placement, log)
    # A pruned phase's pipeline yields its classes' labels alone; a run that never prunes, or
    # whose replicas share one iteration of all epochs, keeps all C.
    prunes_alone = placement.replicas == 1 and label_pruning.pruning_schedule(config)
    columns = model.training_label_columns() if prunes_alone else None
    datasets = pipeline.run_datasets(config, inputs, model.epochs_done, placement, columns)
    techniques = [
        *unknown_rates.callbacks(config, inputs, datasets, log),  # before the refresh it feeds
        *annotation_test.callbacks(config, inputs, datasets, log),  # likewise
        *pseudo_labels.callbacks(config, inputs, datasets, log),
        *label_pruning.callbacks(config, inputs, datasets, log),
    ]
    if not placement.is_chief:  # trains its share; the chief monitors, reports and writes
        callbacks = [EpochClock(), *techniques, *extra_callbacks]
        seconds = _fit(config, model, datasets, callbacks, start_epoch, log)
        _log_digest(model, placement, log)
        return {"worker": placement.place.index, "train_seconds": round(seconds, 3)}
    epoch_log = evaluation.EpochLog(_in_workdir(config, "history.json"))
    monitoring, best = _monitoring_callbacks(config, inputs, datasets)
    if resuming:
        epoch_log.resume(start_epoch)
        if best is not None:
            best.resume(epoch_log.epochs)
    callbacks = [
        EpochClock(),
        StopOnNonFiniteLoss(config),
        *techniques,
        *monitoring,
        *_output_callbacks(config, inputs.stats),
        *extra_callbacks,
        epoch_log,
        *([backup] if backup else []),  # last: the checkpoint holds everything the epoch changed
    ]
    seconds = _fit(config, model, datasets, callbacks, start_epoch, log)
    _log_digest(model, placement, log)
    selected_epoch = config.runtime.epochs if best is None else best.restore(model)
    thresholds, chosen = report.decision_thresholds(model, inputs, datasets.validation)
    scores = evaluation.model_scores(model, datasets.test, datasets.test_labels)
    result = report.test_report(
        config, model, scores, inputs, thresholds, chosen, selected_epoch, log
    )
    result.update(
        {
            "train_seconds": round(seconds, 3),
            "resumed_after_epoch": start_epoch if resuming else None,
            "history": epoch_log.epochs,
        }
    )
    if config.workdir:
        report.write_outputs(config, model, inputs, scores, result, thresholds, chosen)
    return result


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops the run at the first epoch whose training loss is not finite, in one line naming
    the epoch and the settings that usually cause it (Keras' `TerminateOnNaN` stops silently)."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            runtime = self.config.runtime
            raise ValueError(
                f"epoch {epoch + 1}: the training loss is {loss}; the run diverged. Likely "
                f"--learning_rate={runtime.learning_rate:g}, --weight_decay="
                f"{runtime.weight_decay:g} or --loss_options={self.config.loss.options or '-'} "
                "is too large"
            )


def resolve_jit_compile(setting):
    """auto = XLA on GPU/TPU only; on CPU it does not pay (benchmarks/README.md)."""
    if setting == "auto":
        return bool(
            tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
        )
    return setting == "true"


def resolve_mixed_precision(setting):
    """The network's Keras dtype policy: "mixed_bfloat16" (auto: where every GPU computes
    bfloat16 natively, compute capability 8.0 or newer) or "float32"."""
    if setting == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        capabilities = [
            tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0)
            for gpu in gpus
        ]
        on = bool(gpus) and min(capabilities) >= (8, 0)
    else:
        on = setting == "on"
    return "mixed_bfloat16" if on else "float32"


def build_network(config, train):
    """The network of `config.model` for `train`'s inputs: an MLP on features, else a backbone,
    in the dtype policy of `--mixed_precision` (its logits float32 either way)."""
    model = config.model
    with models.dtype_policy(resolve_mixed_precision(config.runtime.mixed_precision)):
        if train.features is not None:
            return models.build_mlp(
                train.features.shape[1],
                train.num_classes,
                model.hidden_units,
                model.dropout,
                seed=config.runtime.seed,
            )
        return models.build_image_model(
            model.backbone,
            train.num_classes,
            (model.image_size, model.image_size),
            model.backbone_weights or None,
        )


def build_model(config, inputs, placement):
    """The compiled `PartialLabelModel` of the run."""
    runtime = config.runtime
    measures_rates = unknown_rates.switched_on(config, inputs.stats)
    model = PartialLabelModel(
        build_network(config, inputs.train),
        inputs.train.num_examples,
        inputs.train.num_classes,
        losses.get(config.loss.method, inputs.stats, **config.loss.parsed_options),
        config.pseudo.weight,
        pseudo_labelling=pseudo_labels.is_on(config, inputs.stats),
        max_pseudo_positives=config.pseudo.max_positives,
        measures_unknown_rates=measures_rates or annotation_test.switched_on(config, inputs.stats),
        masked_until_rates_set=measures_rates,
        gathers_pruned_head=label_pruning.gathers_pruned_head(
            config, inputs.train.num_examples, inputs.train.num_classes, placement.replicas
        ),
    )
    # Keras 3's multi-step loop fails under a multi-replica strategy (keras-team/keras#19246).
    steps = 1
    if placement.replicas == 1:
        epoch_steps = pipeline.steps_per_epoch(inputs.train, runtime.batch_size)
        steps = execution_steps(runtime.steps_per_execution, epoch_steps)
    model.compile(
        optimizer=keras.optimizers.AdamW(runtime.learning_rate, runtime.weight_decay),
        jit_compile=resolve_jit_compile(runtime.jit_compile),
        steps_per_execution=steps,
    )
    return model


def execution_steps(configured, epoch_steps):
    """Train steps per compiled call: the largest divisor of the epoch's steps that is at most
    `configured`, so a call never runs past the end of an epoch (Keras' progress bar and batch
    callbacks would count steps beyond it, e.g. 16/5). The steps trained are the same."""
    return max(
        d for d in range(1, min(configured, max(epoch_steps, 1)) + 1) if epoch_steps % d == 0
    )


def _log_placement(config, placement, log):
    place = placement.place
    if placement.replicas > 1 or place.count > 1:
        log(
            f"strategy {type(placement.strategy).__name__}: {placement.replicas} replicas on "
            f"{place.count} worker(s), global batch {config.runtime.batch_size}; this is worker "
            f"{place.index}{' (chief: it writes the workdir)' if place.is_chief else ''}"
        )


def _checkpointing(config, model, resuming, placement, log):
    """(the checkpoint callback or None, epochs already done): restores a resumed run's state.

    Every worker restores from the chief's checkpoint; only the chief writes it.
    """
    if not config.workdir:
        return None, 0
    path = os.path.join(config.workdir, "checkpoint")
    backup = checkpoints.ResumableBackup(path, placement.is_chief)
    if not resuming:
        return backup, 0
    start_epoch = backup.restore(model)
    log(f"--resume: continuing {config.workdir} after epoch {start_epoch}")
    return backup, start_epoch


def _monitoring_callbacks(config, inputs, datasets):
    """(callbacks that evaluate the validation part, and the test set if asked, every
    `eval_every` epochs; the `BestEpoch` that selects on `val_map`, or None)."""
    runtime = config.runtime
    callbacks, best = [], None
    if inputs.validation is not None:
        callbacks.append(
            evaluation.EvaluationCallback(
                datasets.validation,
                inputs.validation.labels,
                runtime.eval_every,
                runtime.epochs,
                prefix="val",
            )
        )
    if runtime.monitor_test:  # logs only: nothing below reads a test_* value
        callbacks.append(
            evaluation.EvaluationCallback(
                datasets.test, datasets.test_labels, runtime.eval_every, runtime.epochs
            )
        )
    if runtime.select_epoch == "best":
        path = _in_workdir(config, os.path.join("checkpoint", "best.weights.h5"))
        best = evaluation.BestEpoch("val_map", path)
        callbacks.append(best)
    return callbacks, best


def _output_callbacks(config, stats):
    if not config.workdir:
        return []
    stats.to_csv(os.path.join(config.workdir, "class_stats.csv"))
    return [keras.callbacks.TensorBoard(os.path.join(config.workdir, "tensorboard"))]


def _fit(config, model, datasets, callbacks, start_epoch, log=print):
    """Trains from `start_epoch` to `epochs`; returns the seconds it took. `verbose=2` prints
    `EpochLine`s instead of Keras' per-epoch lines."""
    verbose = config.runtime.verbose
    if verbose == 2:
        callbacks = [*callbacks, EpochLine(log)]
    started = time.perf_counter()
    model.fit(
        datasets.train,
        epochs=config.runtime.epochs,
        initial_epoch=start_epoch,
        steps_per_epoch=datasets.steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,
        verbose=0 if verbose == 2 else verbose,
    )
    return time.perf_counter() - started


class EpochLine(keras.callbacks.Callback):
    """One short line per epoch: its number, steps, seconds, the loss, the validation figures and
    the active classes, integers as integers (every figure is in history.json and TensorBoard)."""

    SHOWN = ("loss", "val_map", "val_cf1", "val_of1", "test_map", "active_classes")

    def __init__(self, log=print):
        super().__init__()
        self.log = log

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        parts = [
            f"epoch {epoch + 1}/{self.params.get('epochs')}",
            f"{self.params.get('steps')} steps",
            f"{time.perf_counter() - self.started:.1f} s",
        ]
        for name in self.SHOWN:
            value = (logs or {}).get(name)
            if value is None:
                continue
            value = float(value)
            parts.append(f"{name} {int(value)}" if value.is_integer() else f"{name} {value:.4f}")
        self.log(" - ".join(parts))


def _log_digest(model, placement, log):
    if placement.place.count > 1:  # the same digest on every worker: they hold the same state
        log(f"worker {placement.place.index}: state digest {distribution.state_digest(model)}")


def _in_workdir(config, name):
    return os.path.join(config.workdir, name) if config.workdir else None
