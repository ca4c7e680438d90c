"""One training run, start to finish: data -> partial labels -> statistics -> model -> fit ->
metrics -> artifacts in the workdir. `tools/train.py` is a thin flag layer over `run`."""

import dataclasses
import json
import math
import os
import time
from typing import NamedTuple

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from kpartial import (
    auto_tune,
    checkpoints,
    class_stats,
    data,
    distribution,
    evaluation,
    input_sources,
    label_pruning,
    losses,
    models,
    pipeline,
    pseudo_labels,
    simulate,
    sparse_labels,
    workdir,
)
from kpartial.partial_model import EpochClock, PartialLabelModel

# The decision threshold of a class without a validated one of its own (and of cf1@0.5, of1@0.5).
DECISION_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on.

    `test_data` "" means: split `test_fraction` off `train_data` when it is > 0, else the embedded
    `synthetic:test` for `synthetic:train`. `*_data_options` are reader options "key=value,...".
    Training labels are used as the data gives them; `known_fraction` < 1 hides entries (a seeded
    simulation for fully annotated data), `simulation` is a file from `tools/simulate.py`.
    `verify_images` decodes every image once before training, so a corrupt one is named up front.

    `loss_options` are the loss's constructor arguments "key=value,..." (see
    `kpartial.losses.option_names`), e.g. "balance=0.5,unknown_weight=0.1" for `method="kpartial"`.

    `prune_schedule` is `label_pruning.parse_prune_schedule`'s output: ((epoch, fraction), ...)
    with each epoch a count, or a share of `epochs` (a float in (0, 1)).

    `pseudo_labels` and `pruning` are "auto" (on for `method="kpartial"` only, so the other methods
    run as published; kpartial's pseudo labels stay off where the annotation depends on the class
    or the label space is dense, see `kpartial.class_stats`), "on" (combine kpartial's pseudo
    labels / pruning with any loss) or "off".

    `strategy` is a name in `kpartial.distribution.STRATEGIES`; `batch_size` is the global batch,
    split evenly over the replicas.

    `validation_fraction` of the training examples (seeded by `split_seed`) are held out with the
    labels the run may see: every `eval_every` epochs they are evaluated (`val_map`, ...), and
    `select_epoch="best"` ends the run with the weights of the best `val_map` epoch; per-class
    decision thresholds are chosen on them. `validation_data` (FMT:PATH, with
    `validation_data_options`) gives a validation set of its own instead, e.g. Open Images'
    validation split or TFRecord shards (which cannot be split); its labels are used as given. The
    test set is evaluated once, at the end (`monitor_test` also evaluates it every `eval_every`
    epochs, for the logs only).

    `auto_tune` "auto" (kpartial with partial labels and a validation split: trains the loss with
    and without the focusing of the known negatives and keeps the better on validation, two runs),
    "on" (the same, refusing a config where it cannot) or "off"; see `kpartial.auto_tune`.
    """

    train_data: str = "synthetic:train"
    test_data: str = ""
    train_data_options: str = ""
    test_data_options: str = ""
    validation_data: str = ""
    validation_data_options: str = ""
    on_bad_input: str = "error"
    test_fraction: float = 0.0
    split_seed: int = 0
    simulation: str = ""
    verify_images: bool = True
    method: str = "kpartial"
    loss_options: str = ""
    known_fraction: float = 1.0
    seed: int = 1
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    hidden_units: tuple = (512,)
    dropout: float = 0.2
    jit_compile: str = "auto"
    steps_per_execution: int = 16
    class_stats: str = ""
    pseudo_labels: str = "auto"
    pseudo_start_epoch: int = 10
    pseudo_every: int = 5
    pseudo_mode: str = "prior"
    pseudo_positive_threshold: float = 0.5
    pseudo_negative_threshold: float = 0.05
    pseudo_negative_coverage: float = 0.1
    pseudo_weight: float = 0.5
    pseudo_max_positives: int = 16
    pseudo_min_precision: float = 0.0
    pruning: str = "auto"
    prune_schedule: tuple = ()
    prune_criterion: str = "fit_well"
    backbone: str = "mobilenet_v3_small"
    backbone_weights: str = ""
    image_size: int = 224
    eval_every: int = 1
    validation_fraction: float = 0.1
    select_epoch: str = "best"
    auto_tune: str = "auto"
    monitor_test: bool = False
    strategy: str = "auto"
    workdir: str = ""
    verbose: int = 0

    def __post_init__(self):
        if self.method not in losses.LOSSES:
            raise ValueError(f"method must be one of {tuple(losses.LOSSES)}, got {self.method!r}")
        for name in ("pseudo_labels", "pruning", "auto_tune"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise ValueError(f"{name} must be auto, on or off, got {getattr(self, name)!r}")
        if self.test_fraction and self.test_data:
            raise ValueError("give test_data or test_fraction, not both")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        data.BadInput(self.on_bad_input)  # validates the policy name
        for options in (
            self.train_data_options,
            self.test_data_options,
            self.validation_data_options,
        ):
            data.parse_options(options)
        for name in FINITE_FIELDS:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0.0 < self.known_fraction <= 1.0:
            raise ValueError(f"known_fraction must be in (0, 1], got {self.known_fraction}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.select_epoch not in ("best", "last"):
            raise ValueError(f"select_epoch must be best or last, got {self.select_epoch!r}")
        if self.select_epoch == "best" and not self.has_validation:
            raise ValueError(
                "select_epoch=best needs a validation split: give validation_fraction > 0 or "
                "validation_data, or select_epoch=last"
            )
        if self.strategy not in distribution.STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(distribution.STRATEGIES)}, got "
                f"{self.strategy!r}"
            )
        if self.jit_compile not in ("auto", "true", "false"):
            raise ValueError(f"jit_compile must be auto, true or false, got {self.jit_compile!r}")
        check_loss_options(self.method, self.loss_options)
        if self.auto_tune == "on" and auto_tune.config_error(self):
            raise ValueError(auto_tune.config_error(self))
        if self.uses_pruning:
            try:
                label_pruning.resolve_prune_schedule(self.prune_schedule, self.epochs)
            except ValueError as e:
                raise ValueError(f"prune_schedule: {e}") from None
        if self.pseudo_min_precision and not self.has_validation:
            raise ValueError(
                "pseudo_min_precision measures precision on the validation split: give "
                "validation_fraction > 0 or validation_data"
            )
        if self.pseudo_max_positives < 1:
            raise ValueError(f"pseudo_max_positives={self.pseudo_max_positives} must be >= 1")
        if self.uses_pseudo_labels and self.pseudo_start_epoch >= self.epochs:
            raise ValueError(
                f"pseudo_start_epoch={self.pseudo_start_epoch} is not before epochs={self.epochs}, "
                "so pseudo labels would never be used; lower it, or pseudo_labels=off"
            )

    @property
    def has_validation(self):
        return bool(self.validation_data or self.validation_fraction)

    @property
    def uses_pseudo_labels(self):
        return _switched_on(self.pseudo_labels, self.method) and self.pseudo_start_epoch >= 0

    @property
    def uses_pruning(self):
        return _switched_on(self.pruning, self.method) and bool(self.prune_schedule)


# Hyperparameters that must be finite and non-negative (NaN would pass any range check).
FINITE_FIELDS = (
    "test_fraction",
    "validation_fraction",
    "known_fraction",
    "learning_rate",
    "weight_decay",
    "dropout",
    "pseudo_positive_threshold",
    "pseudo_negative_threshold",
    "pseudo_negative_coverage",
    "pseudo_weight",
    "pseudo_min_precision",
)


def check_loss_options(method, text):
    """Builds the loss once on a one-class stand-in for the statistics, so an unknown option or a
    bad value is refused before any data is read."""
    options = data.parse_options(text)
    try:
        losses.get(method, _ONE_CLASS_STATISTICS, **options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"loss_options={text!r}: {e}") from None


_ONE_CLASS_STATISTICS = class_stats.ClassStatistics(
    ("class",), np.ones(1), np.ones(1), np.full(1, 0.5)
)


def _switched_on(setting, method):
    return setting == "on" or (setting == "auto" and method == "kpartial")


def resolve_jit_compile(setting):
    """auto = XLA on GPU/TPU only; on CPU it does not pay (benchmarks/results/cpu_speed.md)."""
    if setting == "auto":
        return bool(
            tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
        )
    return setting == "true"


# The TrainConfig fields `load_data` reads: runs that agree on them can share loaded data.
DATA_FIELDS = (
    "train_data",
    "test_data",
    "train_data_options",
    "test_data_options",
    "on_bad_input",
    "test_fraction",
    "split_seed",
    "verify_images",
)


def load_data(config):
    """(train, test) as the config says; test classes are aligned to train's."""
    train = data.load_spec(
        config.train_data, config.train_data_options, config.on_bad_input, config.verify_images
    )
    if config.test_fraction:
        return data.split(train, config.test_fraction, config.split_seed)
    test_spec = config.test_data
    if not test_spec:
        if config.train_data != "synthetic:train":
            raise data.DataError(
                f"no test set for {config.train_data}: give test_data or test_fraction"
            )
        test_spec = "synthetic:test"
    return train, _load_like_train(config, test_spec, config.test_data_options, train)


def _load_like_train(config, spec, options, train):
    """Data `spec` read with the config's bad-input policy, checked to have the training data's
    inputs, with its classes aligned to the training data's."""
    loaded = data.load_spec(spec, options, config.on_bad_input, config.verify_images)
    data.check_same_inputs(train, loaded)
    return data.align_classes(loaded, train.label_names, spec)


def training_labels(config, train, log=print):
    """The training labels the run may see: as given, or thinned by an explicit simulation.

    Labels are used as the data has them unless the config asks for a simulation (`simulation`
    or `known_fraction` < 1); thinning data that already has unknown entries is said in one line.
    """
    if config.simulation:
        labels, _ = simulate.load(config.simulation, train)
        return labels
    if config.known_fraction >= 1.0:
        return train.labels
    known = train.num_known
    entries = train.num_examples * train.num_classes
    if known < entries:
        log(
            f"--known_fraction={config.known_fraction} thins labels that are already partial "
            f"({known} of {entries} entries known, {known / entries:.1%}): keeping about "
            f"{config.known_fraction:.0%} of them"
        )
    return simulate.keep_fraction(train.labels, config.known_fraction, config.seed)


# LL-Cp rewrites a growing share of all N x C entries for good, so its corrections are a dense int8
# [N, C] table (a sparse store would cost 8 bytes per corrected entry, more than the table once an
# eighth is corrected). It is refused, before anything is built, beyond this share of the
# machine's memory; pseudo labels, pruning and every other loss keep no N x C state.
MAX_DENSE_MEMORY_SHARE = 0.5


def _physical_memory():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def build_network(config, train):
    if train.features is not None:
        return models.build_mlp(
            train.features.shape[1],
            train.num_classes,
            config.hidden_units,
            config.dropout,
            seed=config.seed,
        )
    return models.build_image_model(
        config.backbone,
        train.num_classes,
        (config.image_size, config.image_size),
        config.backbone_weights or None,
    )


def run(config, log=print, datasets=None, callbacks=(), resume=False, overwrite=False, files=None):
    """Trains, evaluates and writes artifacts into `config.workdir`; returns the metrics dict.

    Args:
      config: a `TrainConfig`.
      log: prints one line.
      datasets: `load_data(config)` when the caller already has it (runs only read it).
      callbacks: more Keras callbacks for `fit`; with `auto_tune` each candidate's `fit` gets the
        same objects in turn (a callback that keeps state across fits, e.g. a "best so far",
        sees both candidates).
      resume: continue the run in `config.workdir` from its last checkpoint; the config must be
        the one the run started with. A finished run is not trained again: its metrics are
        returned. A workdir without a run starts a new one.
      overwrite: replace a previous run in `config.workdir` (only kpartial's own artifacts are
        removed). Without `resume` or `overwrite`, a workdir holding a run is refused.
      files: {name: text} written into the workdir once it is claimed (e.g. the resolved flags).

    With several workers (`strategy="multi_worker"`), every worker calls `run` with the same
    config; only the chief claims and writes the workdir, which the others read (a resumed run's
    checkpoint) but never write. A worker that is not the chief returns its own few figures.

    Raises:
      WorkdirError: the workdir is unusable, in use, or holds a run and neither flag was given.
      DataError: bad input data.
    """
    # First: a multi-worker strategy must exist before any other TensorFlow op runs.
    strategy = distribution.make_strategy(config.strategy)
    if config.method == "kpartial" and config.auto_tune != "off":
        return _run_auto_tuned(config, log, datasets, callbacks, resume, overwrite, files, strategy)
    return _run_once(config, log, datasets, callbacks, resume, overwrite, files, strategy)


def _run_once(config, log, datasets, callbacks, resume, overwrite, files, strategy, inputs=None):
    """`run` of one training run (no `auto_tune`); `inputs` when they were read already."""
    if not config.workdir:
        inputs = inputs if inputs is not None else _inputs(config, datasets, log)
        return _train(config, log, inputs, callbacks, resuming=False)
    if not distribution.place(strategy).is_chief:
        return _run_worker(config, log, datasets, callbacks, resume, strategy, inputs)
    with workdir.claim(config.workdir, resume, overwrite, log) as resuming:
        if resuming:
            _check_resumable(config)
            if workdir.is_finished(config.workdir):
                return _finished_metrics(config, log)
        # Inputs first: a run that stops at bad input leaves nothing that blocks the next attempt.
        inputs = inputs if inputs is not None else _inputs(config, datasets, log)
        if not resuming:
            _write_run_files(config, files)
        return _train(config, log, inputs, callbacks, resuming)


def _run_auto_tuned(config, log, datasets, callbacks, resume, overwrite, files, strategy):
    """`kpartial.auto_tune`'s candidates, each a run of its own; or one run where it does not tune
    (its config.json then says auto_tune="off", the setting it ran with)."""
    datasets = datasets if datasets is not None else load_data(config)
    # Every input check first (as a single run does): bad input leaves nothing in the workdir.
    # The candidates differ only in their loss options, so they share these inputs.
    once = dataclasses.replace(config, auto_tune="off")
    inputs = _inputs(once, datasets, log)
    reason = auto_tune.off_because(config, inputs.stats, strategy)
    if reason:
        log(f"{reason}; training once")
        return _run_once(once, log, datasets, callbacks, resume, overwrite, files, strategy, inputs)

    def run_candidate(candidate, candidate_log, resuming):
        return _run_once(
            candidate, candidate_log, datasets, callbacks, resuming, False, {}, strategy, inputs
        )

    if not config.workdir:
        return auto_tune.tune(config, run_candidate, log, resuming=False)
    with workdir.claim(config.workdir, resume, overwrite, log) as resuming:
        if resuming:
            _check_resumable(config)
            if workdir.is_finished(config.workdir):
                return _finished_metrics(config, log)
        else:
            _write_run_files(config, files)
        return auto_tune.tune(config, run_candidate, log, resuming)


def _finished_metrics(config, log):
    log(f"--resume: {config.workdir} holds a finished run; nothing to train")
    with open(os.path.join(config.workdir, workdir.FINISHED)) as f:
        return json.load(f)


def _write_run_files(config, files):
    workdir.write_atomically(os.path.join(config.workdir, "config.json"), _config_json(config))
    for name, text in (files or {}).items():
        workdir.write_atomically(os.path.join(config.workdir, name), text)


def _run_worker(config, log, datasets, callbacks, resume, strategy, inputs=None):
    """A worker that is not the chief: trains its share, reads the chief's workdir, writes nothing.

    The chief claims the workdir at the same time; a worker resumes from the checkpoint there
    when `resume` is asked for and the run has one (else it starts, as the chief does).
    """
    resuming = resume and os.path.isfile(os.path.join(config.workdir, "config.json"))
    if resuming:
        _check_resumable(config)
        if workdir.is_finished(config.workdir):
            log(f"--resume: {config.workdir} holds a finished run; nothing to train")
            return {"worker": distribution.place(strategy).index, "finished": True}
    inputs = inputs if inputs is not None else _inputs(config, datasets, log)
    return _train(config, log, inputs, callbacks, resuming)


# TrainConfig fields that may differ between a run and its resumption: how it is run, not what
# it trains (a different strategy sums the same gradients in another order).
RESUME_MAY_CHANGE = ("verbose", "strategy")


# What a run whose config.json predates a field ran with (a run before auto_tune trained once).
STARTED_BEFORE_THEY_EXISTED = {"auto_tune": "off"}


def _config_json(config):
    return json.dumps(dataclasses.asdict(config), indent=2)


def _check_resumable(config):
    path = os.path.join(config.workdir, "config.json")
    if not os.path.isfile(path):
        raise workdir.WorkdirError(
            f"--resume: {config.workdir} has no config.json, so it is not a resumable run"
        )
    with open(path) as f:
        started = json.load(f)
    started = {**STARTED_BEFORE_THEY_EXISTED, **started}
    now = json.loads(_config_json(config))
    changed = [
        f"{name}={started.get(name)!r} -> {now[name]!r}"
        for name in now
        if name not in RESUME_MAY_CHANGE and started.get(name) != now[name]
    ]
    if changed:
        raise workdir.WorkdirError(
            f"--resume: the run in {config.workdir} was started with other settings "
            f"({'; '.join(changed)}); resume with the same flags, or --overwrite"
        )


class RunInputs(NamedTuple):
    """Everything a run reads from the user's files, read before anything is written."""

    train: data.MultiLabelData  # the examples trained on (their labels: the full truth)
    test: data.MultiLabelData
    known: object  # the training labels the run may see: int8 [N, C] or SparseLabels
    stats: class_stats.ClassStatistics
    # Held-out training examples with the labels the run may see (partial), or None.
    validation: object = None


def _inputs(config, datasets, log):
    """Data, training labels and class statistics: everything read from the user's files."""
    train, test = datasets if datasets is not None else load_data(config)
    known = training_labels(config, train, log)
    validation = None
    if config.validation_data:
        validation = load_validation_data(config, train)
    elif config.validation_fraction:
        train, validation, known = split_validation(train, known, config)
    stats = _class_statistics(config, known, train)
    loss = losses.get(config.method, stats, **data.parse_options(config.loss_options))
    if loss.needs_example_state:  # refused now, before the run writes anything
        _check_dense_state(config, train, loss.name)
        if distribution.make_strategy(config.strategy).num_replicas_in_sync > 1:
            raise ValueError(
                f"--method={config.method} writes per-example corrections inside each train "
                "step, which tf.distribute cannot keep identical across replicas; use one "
                "device (--strategy=one_device) or another method"
            )
    _check_global_batch(config, train)
    return RunInputs(train, test, known, stats, validation)


def load_validation_data(config, train):
    """`config.validation_data` with its labels as given (a simulation thins training labels only),
    classes aligned to the training data's; it replaces `validation_fraction`."""
    return _load_like_train(config, config.validation_data, config.validation_data_options, train)


def split_validation(train, known, config):
    """(training part, validation part, the training part's known labels).

    A seeded `config.validation_fraction` of the training examples is held out; the validation
    part's labels are the ones the run may see (`known`), so it never reads a hidden label.
    """
    if train.records is not None:
        raise data.DataError(
            f"{config.train_data}: --validation_fraction cannot hold out examples of TFRecord "
            "shards (they are streamed); write the validation examples to shards of their own "
            "and give them as --validation_data, or --validation_fraction=0 --select_epoch=last"
        )
    order = np.random.default_rng([config.split_seed, 1]).permutation(train.num_examples)
    size = round(config.validation_fraction * train.num_examples)
    if size == 0 or size == train.num_examples:
        raise data.DataError(
            f"{config.train_data}: --validation_fraction={config.validation_fraction} of "
            f"{train.num_examples} examples leaves an empty part"
        )
    rows, held_out = np.sort(order[size:]), np.sort(order[:size])
    tag = f"validation fraction {config.validation_fraction}, split seed {config.split_seed}"
    validation = train.take(held_out, f"{train.source} ({tag}: validation)")
    validation = validation.with_labels(sparse_labels.take_rows(known, held_out))
    validation = dataclasses.replace(validation, skipped={})
    return train.take(rows), validation, sparse_labels.take_rows(known, rows)


def _check_global_batch(config, train):
    replicas = distribution.make_strategy(config.strategy).num_replicas_in_sync
    batch = min(config.batch_size, train.num_examples)
    if batch % replicas:
        raise ValueError(
            f"--batch_size={config.batch_size} (the global batch) is not a multiple of the "
            f"{replicas} replicas of --strategy={config.strategy}"
        )


def _train(config, log, inputs, extra_callbacks, resuming):
    """Model -> datasets -> callbacks -> fit -> report -> artifacts."""
    keras.utils.set_random_seed(config.seed)
    strategy = distribution.make_strategy(config.strategy)
    place = distribution.place(strategy)
    _log_data(log, inputs, config)
    if strategy.num_replicas_in_sync > 1 or place.count > 1:
        log(
            f"strategy {type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas on "
            f"{place.count} worker(s), global batch {config.batch_size}; this is worker "
            f"{place.index}{' (chief: it writes the workdir)' if place.is_chief else ''}"
        )
    with strategy.scope():
        model = build_model(config, inputs.train, inputs.stats)
    backup, start_epoch = _checkpointing(config, model, resuming, log, place.is_chief)
    datasets = _datasets(config, inputs, model, strategy)
    if not place.is_chief:  # trains its share; the chief monitors, reports and writes
        callbacks = [EpochClock(), *_technique_callbacks(config, inputs, datasets, log)]
        callbacks += extra_callbacks
        train_seconds = _fit(config, model, datasets, callbacks, start_epoch)
        _log_digest(model, place, log)
        return {"worker": place.index, "train_seconds": round(train_seconds, 3)}
    epoch_log = evaluation.EpochLog(_in_workdir(config, "history.json"))
    if resuming:
        epoch_log.resume(start_epoch)
    monitoring, best = _monitoring_callbacks(config, inputs, datasets)
    if best is not None and resuming:
        best.resume(epoch_log.epochs)
    callbacks = [
        EpochClock(),
        *_technique_callbacks(config, inputs, datasets, log),
        *monitoring,
        *_output_callbacks(config, inputs.stats),
        *extra_callbacks,
        epoch_log,
        *([backup] if backup else []),  # last: the checkpoint holds everything the epoch changed
    ]
    train_seconds = _fit(config, model, datasets, callbacks, start_epoch)
    _log_digest(model, place, log)
    selected_epoch = config.epochs if best is None else best.restore(model)
    thresholds, chosen = _decision_thresholds(model, inputs, datasets)
    scores = evaluation.model_scores(model, datasets.test, datasets.test_labels)
    result = _report(config, model, scores, inputs, log, thresholds, chosen, selected_epoch)
    result.update(
        {
            "train_seconds": round(train_seconds, 3),
            "resumed_after_epoch": start_epoch if resuming else None,
            "history": epoch_log.epochs,
        }
    )
    if config.workdir:
        _write_outputs(config, model, inputs, scores, result, thresholds, chosen)
    return result


def _monitoring_callbacks(config, inputs, datasets):
    """(callbacks that evaluate the validation part, and the test set if asked, every
    `eval_every` epochs; the `BestEpoch` that selects on `val_map`, or None)."""
    callbacks, best = [], None
    if inputs.validation is not None:
        callbacks.append(
            evaluation.EvaluationCallback(
                datasets.validation,
                inputs.validation.labels,
                config.eval_every,
                config.epochs,
                prefix="val",
            )
        )
    if config.monitor_test:  # logs only: nothing below reads a test_* value
        callbacks.append(
            evaluation.EvaluationCallback(
                datasets.test, datasets.test_labels, config.eval_every, config.epochs
            )
        )
    if config.select_epoch == "best":
        path = _in_workdir(config, os.path.join("checkpoint", "best.weights.h5"))
        best = evaluation.BestEpoch("val_map", path)
        callbacks.append(best)
    return callbacks, best


# A class needs this many validation positives (and a negative) for a threshold of its own.
MIN_THRESHOLD_POSITIVES = 3


def _decision_thresholds(model, inputs, datasets):
    """(float32 [C] thresholds, bool [C] chosen on validation) of the selected weights."""
    num_classes = inputs.train.num_classes
    if inputs.validation is None:
        return np.full(num_classes, DECISION_THRESHOLD, np.float32), np.zeros(num_classes, bool)
    scores = evaluation.model_scores(model, datasets.validation, inputs.validation.labels)
    thresholds, chosen = scores.best_f1_thresholds(MIN_THRESHOLD_POSITIVES, DECISION_THRESHOLD)
    return thresholds.astype(np.float32), chosen


def _log_digest(model, place, log):
    if place.count > 1:  # the same digest on every worker: they hold the same model and state
        log(f"worker {place.index}: state digest {distribution.state_digest(model)}")


def _in_workdir(config, name):
    return os.path.join(config.workdir, name) if config.workdir else None


def _class_statistics(config, known, train):
    counted = class_stats.ClassStatistics.from_labels(known, train.label_names)
    if config.class_stats:
        # The file's priors; whether every entry is annotated is the training labels' to say.
        given = class_stats.ClassStatistics.from_csv(config.class_stats, train.label_names)
        return dataclasses.replace(given, complete=counted.complete)
    return counted


def _log_data(log, inputs, config):
    train, test, stats = inputs.train, inputs.test, inputs.stats
    num_known = int(stats.positives.sum() + stats.negatives.sum())
    if config.validation_data:
        log(
            f"validation: {inputs.validation.num_examples} examples of "
            f"{inputs.validation.source}, labels as given (epoch selection, thresholds)"
        )
    elif inputs.validation is not None:
        log(
            f"validation: {inputs.validation.num_examples} training examples held out with "
            "their known labels (epoch selection, thresholds); not trained on"
        )
    log(
        f"train {train.source}: {train.num_examples} examples, {train.num_classes} classes, "
        f"{num_known} known labels ({num_known / (train.num_examples * train.num_classes):.1%}); "
        f"test {test.source}: {test.num_examples} examples"
    )
    for split_name, counts in (("train", train.skipped), ("test", test.skipped)):
        for reason, count in counts.items():
            log(f"skipped {count} {split_name} records (on_bad_input=skip): {reason}")
    if stats.annotation and stats.depends_on_class:
        log(f"class statistics: {stats.annotation}")
    options = data.parse_options(config.loss_options)
    if config.method == "kpartial" and stats.complete and "negative_focusing" not in options:
        log(
            "every training entry is annotated: kpartial focuses its known negatives with gamma "
            f"{losses.COMPLETE_LABELS_NEGATIVE_FOCUSING:g} (ASL's), not 2 (kpartial.class_stats)"
        )


def build_model(config, train, stats):
    """The compiled `PartialLabelModel` of the run."""
    loss = losses.get(config.method, stats, **data.parse_options(config.loss_options))
    model = PartialLabelModel(
        build_network(config, train),
        train.num_examples,
        train.num_classes,
        loss,
        config.pseudo_weight,
        pseudo_labelling=_pseudo_labels_on(config, stats),
        max_pseudo_positives=config.pseudo_max_positives,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(config.learning_rate, config.weight_decay),
        jit_compile=resolve_jit_compile(config.jit_compile),
        steps_per_execution=steps_per_execution(config),
    )
    return model


def steps_per_execution(config):
    """`config.steps_per_execution`, or 1 with several replicas: Keras 3's multi-step loop fails
    under a multi-replica strategy (keras-team/keras#19246, open; seen with Keras 3.15 here)."""
    replicas = distribution.make_strategy(config.strategy).num_replicas_in_sync
    return config.steps_per_execution if replicas == 1 else 1


def _check_dense_state(config, train, what):
    size = train.num_examples * train.num_classes  # int8 entries
    if size > MAX_DENSE_MEMORY_SHARE * _physical_memory():
        raise data.DataError(
            f"{config.train_data}: {what} keeps a dense int8 [N, C] table of its corrections, and "
            f"{train.num_examples} x {train.num_classes} ({size / 2**30:.1f} GiB) exceeds half "
            "of this machine's memory; use a method without per-example state"
        )


def _checkpointing(config, model, resuming, log, is_chief=True):
    """(the checkpoint callback or None, epochs already done): restores a resumed run's state.

    Every worker restores from the chief's checkpoint; only the chief writes it.
    """
    if not config.workdir:
        return None, 0
    backup = checkpoints.ResumableBackup(os.path.join(config.workdir, "checkpoint"), is_chief)
    if not resuming:
        return backup, 0
    start_epoch = backup.restore(model)
    log(f"--resume: continuing {config.workdir} after epoch {start_epoch}")
    return backup, start_epoch


class _Datasets(NamedTuple):
    # Shuffled, augmented batches of one epoch per iteration; with several replicas, a
    # distributed dataset of each replica's share of the same global batches, all epochs in one
    # iteration of `steps_per_epoch` steps each.
    train: object
    steps_per_epoch: object  # int, or None: Keras reads the length of `train`
    train_inputs: tf.data.Dataset  # this worker's part of the training inputs, in example order
    test: tf.data.Dataset
    test_labels: object  # int8 [N, C] or SparseLabels: looked up per batch, never made dense
    validation: object  # the held-out examples' dataset, or None


def _datasets(config, inputs, model, strategy):
    image_size = (config.image_size, config.image_size)

    steps = None  # Keras counts the steps of a dataset with a known length
    if strategy.num_replicas_in_sync == 1:
        train = pipeline.training_dataset(
            inputs.train,
            inputs.known,
            config.batch_size,
            config.seed,
            image_size,
            epoch=model.epochs_done,  # read as each epoch starts: a resumed run continues
        )
    else:
        global_batch = min(config.batch_size, inputs.train.num_examples)

        start_epoch = int(model.epochs_done.numpy())

        def replica_shares(context):
            # This input pipeline's local replicas take consecutive shares of each global batch.
            replica_batch = context.get_per_replica_batch_size(global_batch)
            worker_share = global_batch // context.num_input_pipelines
            shard = input_sources.BatchShard(
                global_batch, context.input_pipeline_id * worker_share, worker_share
            )
            return pipeline.training_dataset(
                inputs.train,
                inputs.known,
                replica_batch,
                config.seed,
                image_size,
                epoch=start_epoch,
                shard=shard,
                epochs=config.epochs,
            )

        train = strategy.distribute_datasets_from_function(replica_shares)
        steps = pipeline.steps_per_epoch(inputs.train, global_batch)
    place = distribution.place(strategy)
    part = None if place.count == 1 else input_sources.WorkerPart(place.index, place.count)
    eval_batch_size = 1024 if inputs.train.features is not None else config.batch_size
    validation = None
    if inputs.validation is not None:
        validation = pipeline.evaluation_dataset(inputs.validation, eval_batch_size, image_size)
    return _Datasets(
        train,
        steps,
        pipeline.evaluation_dataset(inputs.train, eval_batch_size, image_size, part),
        pipeline.evaluation_dataset(inputs.test, eval_batch_size, image_size),
        inputs.test.labels,
        validation,
    )


def _pseudo_labels_off_because(config, stats):
    """Why `--pseudo_labels=auto` leaves kpartial's pseudo labels off ("" = it does not): the
    annotation depends on the class, or the label space is dense (see `kpartial.class_stats`)."""
    if config.pseudo_labels != "auto" or not config.uses_pseudo_labels:
        return ""
    if stats.depends_on_class:
        return (
            "the annotation depends on the class (see the class statistics line): the unknown "
            "entries' positive rate is only a lower bound there, and pseudo negatives would "
            "outnumber the annotations; --pseudo_labels=on refreshes anyway (pseudo negatives only)"
        )
    if stats.dense:
        return (
            f"the label space is dense (the unknown entries' mean positive rate "
            f"{np.mean(stats.unknown_priors):.2f} >= {class_stats.DENSE_LABEL_SPACE}): the "
            "unknown term already targets each class's rate, and pseudo positives by that quota "
            "add noise there; --pseudo_labels=on refreshes anyway"
        )
    return ""


def _pseudo_labels_on(config, stats):
    """Whether the run makes pseudo labels."""
    return config.uses_pseudo_labels and not _pseudo_labels_off_because(config, stats)


def _technique_callbacks(config, inputs, datasets, log):
    """Pseudo labels and label pruning, as the config switches them on."""
    train, stats = inputs.train, inputs.stats
    train_inputs = datasets.train_inputs
    callbacks = []
    if not (config.uses_pseudo_labels or config.uses_pruning):
        return callbacks
    off_because = _pseudo_labels_off_because(config, stats)
    if off_because:
        log(f"pseudo labels: off, because {off_because}")
    elif config.uses_pseudo_labels:
        simulated = config.known_fraction < 1.0 or bool(config.simulation)
        # The prior rule's quota is a rate among the unknown entries; with class-dependent
        # annotation that rate is only a lower bound, so no pseudo positives are made.
        rates = np.zeros_like(stats.priors) if stats.depends_on_class else stats.unknown_priors
        callbacks.append(
            pseudo_labels.PseudoLabelCallback(
                train_inputs,
                inputs.known,  # looked up per batch: sparse labels stay sparse
                config.pseudo_start_epoch,
                config.pseudo_every,
                config.pseudo_mode,
                rates,
                config.pseudo_positive_threshold,
                config.pseudo_negative_threshold,
                config.pseudo_negative_coverage,
                true_labels=train.labels if simulated else None,
                log=log,
                validation=None
                if inputs.validation is None
                else (datasets.validation, inputs.validation.labels),
                min_precision=config.pseudo_min_precision,
            )
        )
    if config.uses_pruning:
        callbacks.append(
            label_pruning.LabelPruningCallback(
                train_inputs,
                inputs.known,  # looked up per batch: sparse labels stay sparse
                label_pruning.resolve_prune_schedule(config.prune_schedule, config.epochs),
                config.prune_criterion,
                config.seed,
                log,
            )
        )
    return callbacks


def _output_callbacks(config, stats):
    if not config.workdir:
        return []
    stats.to_csv(os.path.join(config.workdir, "class_stats.csv"))
    return [keras.callbacks.TensorBoard(os.path.join(config.workdir, "tensorboard"))]


def _fit(config, model, datasets, callbacks, start_epoch):
    """Trains from `start_epoch` to `config.epochs`; returns the seconds it took."""
    started = time.perf_counter()
    model.fit(
        datasets.train,
        epochs=config.epochs,
        initial_epoch=start_epoch,
        steps_per_epoch=datasets.steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,
        verbose=config.verbose,
    )
    return time.perf_counter() - started


def _report(config, model, scores, inputs, log, thresholds, chosen, selected_epoch):
    """The run's metrics dict from the test set's `metrics.SparseScores`; logs the headline.

    CF1/OF1 use the per-class `thresholds` (chosen on the validation part where `chosen`, else
    0.5); `cf1@0.5` and `of1@0.5` are at 0.5 for every class.
    """
    train, test, stats = inputs.train, inputs.test, inputs.stats
    result = scores.evaluate(threshold=thresholds)
    at_half = scores.f1_scores(DECISION_THRESHOLD)
    result.update({"cf1@0.5": at_half["cf1"], "of1@0.5": at_half["of1"]})
    result.update(evaluation.sparse_ranking_metrics(scores, stats.positives, train.num_examples))
    validation = inputs.validation
    result["selection"] = {
        "select_epoch": config.select_epoch,
        "selected_epoch": selected_epoch,
        "validation_examples": 0 if validation is None else validation.num_examples,
        "thresholds_from_validation": int(chosen.sum()),
        "note": "the epoch and the thresholds were chosen on "
        + (
            f"the validation data {config.validation_data} (its labels)"
            if config.validation_data
            else "held-out training examples (their known labels)"
        )
        + "; the test set was evaluated once, after both were chosen",
    }
    result.update(
        {
            "method": config.method,
            "known_fraction": config.known_fraction,
            "seed": config.seed,
            "train_data": config.train_data,
            "test_data": config.test_data,
            "epochs": config.epochs,
            "jit_compile": resolve_jit_compile(config.jit_compile),
            "active_classes": int(model.active_classes.numpy().sum()),
            "note": "metrics count only annotated test entries; mAP over classes with >=1 positive "
            "and >=1 negative",
            "skipped_input": {"train": train.skipped, "test": test.skipped},
        }
    )
    labels_used = (
        f"simulation={config.simulation}" if config.simulation else f"known={config.known_fraction}"
    )
    log(
        f"{config.method} {labels_used} seed={config.seed}: "
        f"mAP={result['map']:.4f} CF1={result['cf1']:.4f} OF1={result['of1']:.4f} "
        f"({result['evaluated_classes']} classes, annotated test entries only; epoch "
        f"{selected_epoch} of {config.epochs}"
        + (", selected on validation" if config.select_epoch == "best" else "")
        + ")"
        + (f"; artifacts in {config.workdir}" if config.workdir else "")
    )
    return result


def _write_outputs(config, model, inputs, scores, result, thresholds, chosen):
    """The plot, then the artifacts (metrics.json last: it marks the run finished)."""
    stats = inputs.stats
    evaluation.write_ap_by_frequency(
        scores.per_class_average_precision(),
        stats.positives,
        config.workdir,
        dataset=inputs.test.source,
        method=f"{config.method}, known fraction {config.known_fraction}",
        mean_ap=result["map"],
    )
    validation_positives = np.zeros(len(chosen), np.int64)
    if inputs.validation is not None:
        validation_positives = class_stats.ClassStatistics.from_labels(
            inputs.validation.labels, inputs.train.label_names
        ).positives
    table = pd.DataFrame(
        {
            "label": list(inputs.train.label_names),
            "threshold": thresholds,
            "source": np.where(chosen, "validation F1", "default 0.5"),
            "validation_positives": validation_positives,
        }
    )
    workdir.write_atomically(
        os.path.join(config.workdir, "thresholds.csv"), table.to_csv(index=False)
    )
    write_artifacts(config, model, inputs.train.label_names, thresholds, result)


def write_artifacts(config, model, label_names, thresholds, result):
    """metrics.json (last: it marks the run finished), the network (network.keras), label assets."""
    path = config.workdir
    model.network.save(os.path.join(path, "network.keras"))
    workdir.write_atomically(
        os.path.join(path, "label_names.txt"), "".join(f"{name}\n" for name in label_names)
    )
    np.save(os.path.join(path, "thresholds.npy"), thresholds)
    workdir.write_json(os.path.join(path, "metrics.json"), result)
