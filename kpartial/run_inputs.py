"""What a run reads from the user's files, read and checked before anything is written.

`read` loads the training and test data (`load_data`), the training labels the run may see (as
given, or thinned by a seeded simulation), the validation part (held-out training examples with
their known labels, or a validation set of its own) and the class statistics of the labels the
run trains on. Every check that data can fail (a missing file, a bad record, a loss that cannot
keep its per-example state, a batch that does not split over the replicas) runs here, so a run
that stops at bad input leaves nothing in its workdir.
"""

import dataclasses
import os
from typing import NamedTuple

import numpy as np

from kpartial import class_stats, data, label_pruning, losses, simulate, sparse_labels

# The DataConfig fields `load_data` reads: runs that agree on them can share loaded data.
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

# LL-Cp rewrites a growing share of all N x C entries for good, so its corrections are a dense int8
# [N, C] table (a sparse store would cost 8 bytes per corrected entry, more than the table once an
# eighth is corrected). It is refused, before anything is built, beyond this share of the
# machine's memory; pseudo labels, pruning and every other loss keep no N x C state.
MAX_DENSE_MEMORY_SHARE = 0.5


class RunInputs(NamedTuple):
    """Everything a run reads from the user's files, read before anything is written."""

    train: data.MultiLabelData  # the examples trained on (their labels: the full truth)
    test: data.MultiLabelData
    known: object  # the training labels the run may see: int8 [N, C] or SparseLabels
    stats: class_stats.ClassStatistics
    # Held-out training examples with the labels the run may see (partial), or None.
    validation: object = None
    # For reports only: the test labels the training labels' simulation would have kept (the
    # entries a test set annotated the same way would show), or None for labels as given.
    simulated_test: object = None


def hidden_truth(config, inputs):
    """The training examples' full labels where the run hid some of them (`known_fraction` < 1 or
    a simulation), for the techniques' monitoring lines only; None for labels as given."""
    simulated = config.data.known_fraction < 1.0 or bool(config.data.simulation)
    return inputs.train.labels if simulated else None


def held_out(inputs, datasets):
    """(the validation dataset, its known labels), or None without a validation split."""
    if inputs.validation is None:
        return None
    return datasets.validation, inputs.validation.labels


def read(config, placement, datasets=None, log=print):
    """The run's `RunInputs`.

    Args:
      config: the run's `kpartial.config.Config`.
      placement: the run's `distribution.Placement` (the batch must split over its replicas).
      datasets: `load_data(config)` when the caller already has it.
      log: prints one line.

    Raises:
      DataError: bad input data.
      ValueError: a method that cannot run with this data or placement.
    """
    cfg = config.data
    train, test = datasets if datasets is not None else load_data(config)
    known = training_labels(config, train, log)
    validation = None
    if cfg.validation_data:
        validation = load_validation_data(config, train)
    elif cfg.validation_fraction:
        train, validation, known = split_validation(train, known, config)
    stats = class_statistics(config, known, train)
    _check_learnable(config, train, stats, validation)
    loss = losses.get(config.loss.method, stats, **config.loss.parsed_options)
    if loss.needs_example_state:
        _check_dense_state(config, train, loss.name)
        if placement.replicas > 1:
            raise ValueError(
                f"--method={config.loss.method} writes per-example corrections inside each train "
                "step, which tf.distribute cannot keep identical across replicas; use one "
                "device (--strategy=one_device) or another method"
            )
    batch = min(config.runtime.batch_size, train.num_examples)
    if batch % placement.replicas:
        raise ValueError(
            f"--batch_size={config.runtime.batch_size} (the global batch) is not a multiple of "
            f"the {placement.replicas} replicas of --strategy={config.runtime.strategy}"
        )
    return RunInputs(train, test, known, stats, validation, simulated_test_labels(config, test))


def load_data(config):
    """(train, test) as the config says; test classes are aligned to train's."""
    cfg = config.data
    train = data.load_spec(
        cfg.train_data, cfg.train_data_options, cfg.on_bad_input, cfg.verify_images
    )
    if cfg.test_fraction:
        return data.split(train, cfg.test_fraction, cfg.split_seed)
    test_spec = cfg.test_data
    if not test_spec:
        if cfg.train_data != "synthetic:train":
            raise data.DataError(
                f"no test set for {cfg.train_data}: give test_data or test_fraction"
            )
        test_spec = "synthetic:test"
    return train, _load_like_train(config, test_spec, cfg.test_data_options, train)


def _load_like_train(config, spec, options, train):
    """Data `spec` read with the config's bad-input policy, checked to have the training data's
    inputs, with its classes aligned to the training data's."""
    cfg = config.data
    loaded = data.load_spec(spec, options, cfg.on_bad_input, cfg.verify_images)
    data.check_same_inputs(train, loaded)
    return data.align_classes(loaded, train.label_names, spec)


def training_labels(config, train, log=print):
    """The training labels the run may see: as given, or thinned by an explicit simulation.

    Labels are used as the data has them unless the config asks for a simulation (`simulation`
    or `known_fraction` < 1); thinning data that already has unknown entries is said in one line.
    """
    cfg = config.data
    if cfg.simulation:
        labels, _ = simulate.load(cfg.simulation, train)
        return labels
    if cfg.known_fraction >= 1.0:
        return train.labels
    known = train.num_known
    entries = train.num_examples * train.num_classes
    if known < entries:
        log(
            f"--known_fraction={cfg.known_fraction} thins labels that are already partial "
            f"({known} of {entries} entries known, {known / entries:.1%}): keeping about "
            f"{cfg.known_fraction:.0%} of them"
        )
    return simulate.keep_fraction(train.labels, cfg.known_fraction, config.runtime.seed)


def simulated_test_labels(config, test):
    """The test labels under the scheme that made the training labels, or None.

    Read from the simulation file's record (`simulate.save`) or `known_fraction`, for the report
    only: training never reads how its labels were simulated.
    """
    cfg = config.data
    if cfg.simulation:
        meta = simulate.read_meta(cfg.simulation)
        scheme, params, seed = meta["scheme"], meta["params"], meta["seed"]
    elif cfg.known_fraction < 1.0:
        scheme, params, seed = (
            "keep_fraction",
            {"fraction": cfg.known_fraction},
            config.runtime.seed,
        )
    else:
        return None
    return simulate.simulate(test.labels, scheme, seed, **params)


def load_validation_data(config, train):
    """`validation_data` with its labels as given (a simulation thins training labels only),
    classes aligned to the training data's; it replaces `validation_fraction`."""
    cfg = config.data
    return _load_like_train(config, cfg.validation_data, cfg.validation_data_options, train)


def split_validation(train, known, config):
    """(training part, validation part, the training part's known labels).

    A seeded `validation_fraction` of the training examples is held out; the validation part's
    labels are the ones the run may see (`known`), so it never reads a hidden label.
    """
    cfg = config.data
    if train.records is not None:
        raise data.DataError(
            f"{cfg.train_data}: --validation_fraction cannot hold out examples of TFRecord "
            "shards (they are streamed); write the validation examples to shards of their own "
            "and give them as --validation_data, or --validation_fraction=0 --select_epoch=last"
        )
    order = np.random.default_rng([cfg.split_seed, 1]).permutation(train.num_examples)
    size = round(cfg.validation_fraction * train.num_examples)
    if size == 0 or size == train.num_examples:
        raise data.DataError(
            f"{cfg.train_data}: --validation_fraction={cfg.validation_fraction} of "
            f"{train.num_examples} examples leaves an empty part"
        )
    rows, held_out = np.sort(order[size:]), np.sort(order[:size])
    tag = f"validation fraction {cfg.validation_fraction}, split seed {cfg.split_seed}"
    validation = train.take(held_out, f"{train.source} ({tag}: validation)")
    validation = validation.with_labels(sparse_labels.take_rows(known, held_out))
    validation = dataclasses.replace(validation, skipped={})
    return train.take(rows), validation, sparse_labels.take_rows(known, rows)


def class_statistics(config, known, train):
    """The `ClassStatistics` of the labels the run trains on (the priors of `class_stats` when
    given; whether every entry is annotated is the training labels' to say)."""
    counted = class_stats.ClassStatistics.from_labels(
        known, train.label_names, config.data.missing_labels
    )
    if config.data.class_stats:
        given = class_stats.ClassStatistics.from_csv(config.data.class_stats, train.label_names)
        return dataclasses.replace(given, complete=counted.complete)
    return counted


def _check_learnable(config, train, stats, validation):
    """Refuses, in one line naming the flag or file, inputs a run could only fail on later."""
    cfg = config.data
    if not (stats.positives.sum() + stats.negatives.sum()):
        raise data.DataError(
            f"{cfg.train_data}: no known training label is left (--known_fraction="
            f"{cfg.known_fraction}, --simulation={cfg.simulation or '-'}); keep more labels"
        )
    bad_names = [name for name in train.label_names if "\n" in name or "\r" in name]
    if bad_names:
        raise data.DataError(
            f"{cfg.train_data}: class name {bad_names[0]!r} holds a line break, which the "
            "exported label list cannot keep; rename the class"
        )
    if validation is not None and config.runtime.select_epoch == "best":
        counted = class_stats.ClassStatistics.from_labels(validation.labels, train.label_names)
        if not ((counted.positives > 0) & (counted.negatives > 0)).any():
            raise data.DataError(
                f"{cfg.validation_data or cfg.train_data}: the validation part "
                f"({validation.num_examples} examples) has no class with a known positive and a "
                "known negative, so val_map cannot choose an epoch; give a larger "
                "--validation_fraction or --validation_data, or --select_epoch=last"
            )
    if label_pruning.switched_on(config):
        schedule = label_pruning.schedule_of(config)
        last = schedule[-1][1] if schedule else 0.0
        if round(last * train.num_classes) >= train.num_classes:
            raise data.DataError(
                f"--prune_schedule: pruning {last:g} of the {train.num_classes} classes of "
                f"{cfg.train_data} would leave none active; prune a smaller share"
            )


def _physical_memory():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_dense_state(config, train, what):
    size = train.num_examples * train.num_classes  # int8 entries
    if size > MAX_DENSE_MEMORY_SHARE * _physical_memory():
        raise data.DataError(
            f"{config.data.train_data}: {what} keeps a dense int8 [N, C] table of its "
            f"corrections, and {train.num_examples} x {train.num_classes} "
            f"({size / 2**30:.1f} GiB) exceeds half of this machine's memory; use a method "
            "without per-example state"
        )
