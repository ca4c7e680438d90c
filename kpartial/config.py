"""The run's configuration: one frozen object, nested by concern, that checks itself.

`Config` holds seven parts: `data`, `loss`, `pseudo` (pseudo labels), `pruning`, `model`,
`runtime` and `output`. Every field carries its help text, and the name of the flag that sets it
(the field's name unless the part prefixes it, e.g. `pseudo.start_epoch` is `--pseudo_start_epoch`),
so `tools/train_flags.py` generates the command line from this module and flag names never change.
Enumerations are listed here (the methods, pseudo-label rules, pruning criteria, backbones and
strategies that kpartial's registries hold), so this module needs no TensorFlow.

Every rule is checked here, once, when a `Config` is made: a Python caller and the command line
get the same one-line `ValueError`, naming the flag, before anything is read or written. A rule
that spans parts (a validation split for `select_epoch=best`, a pruning schedule that fits the
epochs) is checked by `Config`; a technique's own rule by the technique's module.

`Config.flat()` is the flat {flag name: value} mapping written to a workdir's `config.json`;
`Config.from_flat()` reads it back, including the names of earlier versions (`RENAMED`), so a run
started before a field existed resumes as it ran.
"""

import dataclasses
import math
import os
from typing import Any

import numpy as np

from kpartial import class_stats, data

# The modules that implement the techniques import TensorFlow; this one does not (the command
# line is parsed from it before TensorFlow starts, see tools/cli.py), so they are imported where
# a rule needs them, and the names each of their registries holds are listed here
# (tests/test_config.py checks that every registry holds exactly these names).

SWITCH = ("auto", "on", "off")
# kpartial.losses.LOSSES: each method with the opening words of its loss's docstring.
METHODS = {
    "kpartial": (
        "kpartial's loss: prior-balanced BCE on known labels plus a prior-target term on "
        "unknown ones"
    ),
    "ignore": "Binary cross-entropy on known labels only",
    "assume_negative": "Binary cross-entropy that reads every unknown label as negative",
    "wan": "Weak assume-negative BCE",
    "an_ls": "Assume-negative BCE with label smoothing",
    "epr": "Expected positive regularisation",
    "focal": "Binary focal loss",
    "asl": "Asymmetric loss",
    "p_asl": "Partial / class-aware selective asymmetric loss",
    "hill": "Hill loss: focal-margin positives and a hill-shaped negative term",
    "splc": "Self-paced loss correction",
    "ll_r": "Large-loss modification, reject",
    "ll_ct": "Large-loss modification, temporary",
    "ll_cp": "Large-loss modification, permanent",
}
PSEUDO_RULES = ("prior", "fixed")  # kpartial.pseudo_label_rules.RULES
PRUNE_CRITERIA = ("fit_well", "random")  # kpartial.label_pruning.CRITERIA
BACKBONES = ("resnet50", "mobilenet_v3_small")  # kpartial.models.BACKBONES
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")  # kpartial.distribution


def option(default, help, *, flag=None, choices=None, low=None, high=None, low_open=False):
    """A config field: its default, help, flag name and checks.

    Args:
      default: the default value (an immutable one).
      help: one or two sentences for `--help`.
      flag: the flag's name, when it is not the part's prefix + the field's name.
      choices: the allowed values, or a function returning them (read from a registry).
      low, high: bounds of a number (inclusive; `low_open` makes the low bound exclusive). A
        bounded number must also be finite.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "low": low, "high": high}
    metadata["low_open"] = low_open
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(field):
    """The values a field allows, or None."""
    choices = field.metadata.get("choices")
    return tuple(choices() if callable(choices) else choices) if choices else None


class Part:
    """A part of the config: the fields' own checks, then `check()` for rules among them."""

    PREFIX = ""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_field(self, field)
        self.check()

    def check(self):
        pass

    @classmethod
    def flag_name(cls, field):
        return field.metadata.get("flag") or cls.PREFIX + field.name


def _check_field(part, field):
    value, name = getattr(part, field.name), part.flag_name(field)
    choices = choices_of(field)
    if choices is not None and value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    low, high = field.metadata.get("low"), field.metadata.get("high")
    if low is None and high is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if field.metadata["low_open"] else value < low)
    if too_low or (high is not None and value > high):
        lower = "(" if field.metadata["low_open"] else "["
        raise ValueError(
            f"{name} must be in {lower}{'-inf' if low is None else low}, "
            f"{'inf' if high is None else high}], got {value!r}"
        )


@dataclasses.dataclass(frozen=True)
class DataConfig(Part):
    """What is read: training, validation and test data, and which training labels are seen."""

    train_data: str = option(
        "synthetic:train", "FMT:PATH of the training data; FMT in the readers of kpartial.data."
    )
    test_data: str = option(
        "", "FMT:PATH of the test set; empty = --test_fraction of --train_data, or synthetic:test."
    )
    train_data_options: str = option(
        "", "Reader options key=value,... for --train_data, e.g. split=train,min_count=100."
    )
    test_data_options: str = option("", "Reader options for --test_data.")
    validation_data: str = option(
        "",
        "FMT:PATH of a validation set of its own (labels as given), instead of "
        "--validation_fraction of the training examples; e.g. TFRecord shards, which cannot be "
        "split.",
    )
    validation_data_options: str = option("", "Reader options for --validation_data.")
    on_bad_input: str = option(
        "error",
        "error: stop at the first bad record (named by file and line); skip: drop bad records, "
        "count them and report the counts (metrics.json skipped_input).",
        choices=data.ON_BAD_INPUT,
    )
    test_fraction: float = option(
        0.0,
        "Share of --train_data held out as the test set (with --split_seed); 0 = use --test_data.",
        low=0.0,
        high=0.99,
    )
    validation_fraction: float = option(
        0.1,
        "Share of the training examples held out (seeded by --split_seed) with their known "
        "labels, for val_map, --select_epoch and per-class decision thresholds; 0 = none.",
        low=0.0,
        high=0.99,
    )
    split_seed: int = option(0, "Seed of the --test_fraction and --validation_fraction splits.")
    verify_images: bool = option(
        True,
        "Decode every image once before training, so a corrupt or missing one is reported by name "
        "(or skipped and counted with --on_bad_input=skip) instead of failing mid-epoch.",
    )
    simulation: str = option(
        "",
        "Partial labels saved by tools/simulate.py (replaces --known_fraction), so methods "
        "compare on identical labels.",
    )
    known_fraction: float = option(
        1.0,
        "Simulate partial labels: keep each given label with this probability (seeded), in "
        "(0, 1]; 1 = use every label the data has.",
        low=0.0,
        high=1.0,
        low_open=True,
    )
    missing_labels: str = option(
        "tested",
        "How the unknown labels went missing, which sets the unknown entries' positive rate that "
        "kpartial's unknown term and pseudo-label quota use: tested = read from the annotation "
        "counts, then tested on the validation split at the first pseudo-label refresh "
        "(kpartial.annotation_test); counts = read from the counts only (kpartial.class_stats); "
        "measured = measured during the run by the network of its first epochs, which train "
        "masked BCE (kpartial.unknown_rates); at_random = at random within each class (the class "
        "prior; e.g. assays screened on different libraries); verified = people verified "
        "proposed classes (the class's known positives over all examples; e.g. Open Images).",
        choices=class_stats.MISSING_LABELS,
    )
    class_stats: str = option(
        "",
        "CSV label,positives,negatives,prior of an existing dataset; default: statistics of the "
        "training annotations.",
    )

    def check(self):
        if self.test_fraction and self.test_data:
            raise ValueError("give test_data or test_fraction, not both")
        for name in ("train_data_options", "test_data_options", "validation_data_options"):
            try:
                data.parse_options(getattr(self, name))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        for name in ("class_stats", "simulation"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ValueError(f"{name}: file not found: {path}")

    @property
    def has_validation(self):
        return bool(self.validation_data or self.validation_fraction)


# The loss is built once on a one-class stand-in for the statistics, so an unknown option or a bad
# value is refused before any data is read.


@dataclasses.dataclass(frozen=True)
class LossConfig(Part):
    """The loss (`--method`), its options, and the validation choice of kpartial's focusing."""

    method: str = option(
        "kpartial",
        "The loss; kpartial's own adds pseudo labels and pruning (see --pseudo_labels, "
        "--pruning). Formulas: kpartial/losses.py.",
        choices=tuple(METHODS),
    )
    options: str = option(
        "",
        "Options of the --method's loss, key=value,... (its constructor arguments), e.g. "
        "balance=0.5,unknown_weight=0.1 for kpartial; checked against the loss.",
        flag="loss_options",
    )
    auto_tune: str = option(
        "off",
        "kpartial's focusing of the known negatives: off = one run with the loss's focusing "
        "(negative_focusing, gamma 2); auto = train the loss with and without it and keep the "
        "better on the validation split (2 runs, twice the cost; only with partial labels, a "
        "validation split and one worker, else said in one line); on = as auto, refused where it "
        "cannot tune.",
        choices=SWITCH,
    )

    def check(self):
        options = data.parse_options(self.options)
        for name, value in options.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"loss_options: {name} must be a finite number, got {value}")
        from kpartial import losses

        one_class = class_stats.ClassStatistics(("class",), np.ones(1), np.ones(1), np.full(1, 0.5))
        try:
            losses.get(self.method, one_class, **options)
        except (TypeError, ValueError) as e:
            raise ValueError(f"loss_options={self.options!r}: {e}") from None

    @property
    def parsed_options(self):
        return data.parse_options(self.options)

    @property
    def has_techniques(self):
        """kpartial's own loss: the one `auto` switches pseudo labels, pruning and tuning on for."""
        return self.method == "kpartial"


@dataclasses.dataclass(frozen=True)
class PseudoLabelConfig(Part):
    """kpartial's pseudo labels (`kpartial.pseudo_labels`)."""

    PREFIX = "pseudo_"

    switch: str = option(
        "auto",
        "Pseudo labels: auto = only with --method=kpartial, and not where the annotation depends "
        "on the class or the label space is dense (said in one line); on = with any --method.",
        flag="pseudo_labels",
        choices=SWITCH,
    )
    start_epoch: float = option(
        0.33,
        "Epochs before the first pseudo-label refresh: a count (before --epochs), or a share of "
        "--epochs in (0, 1) that a short run skips if it falls after its last epoch; -1 = off.",
        low=-1,
    )
    every: int = option(5, "Refresh period in epochs.", low=1)
    mode: str = option(
        "prior",
        "The rule that sets each class's thresholds (kpartial.pseudo_label_rules.RULES).",
        choices=PSEUDO_RULES,
    )
    rule_options: str = option(
        "",
        "Options of the --pseudo_mode rule, key=value,... (its constructor arguments), e.g. "
        "negative_coverage=0.2 (prior) or positive_threshold=0.9,negative_threshold=0.01 "
        "(fixed); checked against the rule.",
    )
    weight: float = option(0.5, "Loss weight of a pseudo label (annotation = 1).", low=0.0)
    max_positives: int = option(
        16,
        "Pseudo positives stored per example at most (the highest logits win; the rest are "
        "counted).",
        low=1,
    )
    min_precision: float = option(
        0.0,
        "If > 0: pseudo-label a class positive only above the lowest score at which its "
        "validation entries are positive at least this often (0 = no such check).",
        low=0.0,
        high=1.0,
    )

    def check(self):
        start = self.start_epoch
        if isinstance(start, float) and start.is_integer():
            object.__setattr__(self, "start_epoch", int(start))
        elif not (isinstance(start, int) or 0 < start < 1):
            raise ValueError(
                f"pseudo_start_epoch must be a count of epochs, a share in (0, 1) or -1, got {start}"
            )
        from kpartial import pseudo_label_rules

        try:
            pseudo_label_rules.make_rule(self.mode, **data.parse_options(self.rule_options))
        except (TypeError, ValueError) as e:
            raise ValueError(f"pseudo_rule_options={self.rule_options!r}: {e}") from None


@dataclasses.dataclass(frozen=True)
class PruningConfig(Part):
    """Dynamic label-space reduction (`kpartial.label_pruning`)."""

    switch: str = option(
        "auto",
        "Label-space reduction: auto = only with --method=kpartial; on = with any --method.",
        flag="pruning",
        choices=SWITCH,
    )
    schedule: tuple = option(
        (),
        "EPOCH:FRACTION,...: cumulative fraction of classes pruned after EPOCH epochs; a decimal "
        "EPOCH is a share of --epochs, e.g. 0.5:0.25,0.75:0.5 (or 20:0.25,30:0.5 of 40 epochs); "
        "empty = no pruning.",
        flag="prune_schedule",
    )
    criterion: str = option(
        "fit_well",
        "Which classes go first: fit_well = lowest balanced loss on their known labels; random.",
        flag="prune_criterion",
        choices=PRUNE_CRITERIA,
    )

    def check(self):
        if isinstance(self.schedule, str):  # from a flag or a caller: parsed once, here
            from kpartial import label_pruning

            try:
                schedule = label_pruning.parse_prune_schedule(self.schedule)
            except ValueError as e:
                raise ValueError(f"prune_schedule: {e}") from None
            object.__setattr__(self, "schedule", schedule)
        else:
            object.__setattr__(self, "schedule", tuple(tuple(e) for e in self.schedule))


@dataclasses.dataclass(frozen=True)
class ModelConfig(Part):
    """The network: an MLP for feature data, a Keras Applications backbone for images."""

    hidden_units: tuple = option((512,), "MLP hidden layer widths.")
    dropout: float = option(0.2, "MLP dropout.", low=0.0, high=0.99)
    backbone: str = option("mobilenet_v3_small", "Image backbone.", choices=BACKBONES)
    backbone_weights: str = option("", "Local weights file of the backbone.")
    image_size: int = option(224, "Image side in pixels.", low=32)

    def check(self):
        units = tuple(int(u) if str(u).isdigit() else u for u in self.hidden_units)
        if not all(isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in units):
            raise ValueError(f"hidden_units must be positive integers, got {self.hidden_units!r}")
        object.__setattr__(self, "hidden_units", units)
        if self.backbone_weights and not os.path.isfile(self.backbone_weights):
            raise ValueError(f"backbone_weights: file not found: {self.backbone_weights}")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(Part):
    """How the run trains: seed, schedule, optimizer, compilation, distribution, evaluation."""

    seed: int = option(
        1, "Seed of weights, shuffling and the label simulation (>= 0).", low=0, high=2**31 - 1
    )
    epochs: int = option(30, "Training epochs.", low=1)
    batch_size: int = option(256, "Batch size (the global batch, split over replicas).", low=1)
    learning_rate: float = option(1e-3, "AdamW learning rate.", low=0.0)
    weight_decay: float = option(1e-4, "AdamW weight decay.", low=0.0)
    jit_compile: str = option(
        "auto", "XLA; auto = on for GPU/TPU only.", choices=("auto", "true", "false")
    )
    mixed_precision: str = option(
        "auto",
        "bfloat16 compute with float32 variables, logits, loss and metrics (Keras' "
        "mixed_bfloat16): auto = on where every GPU computes bfloat16 natively (compute "
        "capability 8.0 or newer), off elsewhere; on = also where it is slow (a CPU).",
        choices=SWITCH,
    )
    steps_per_execution: int = option(16, "Train steps per compiled call.", low=1)
    strategy: str = option(
        "auto",
        "tf.distribute strategy: auto = mirrored with several GPUs, else one device; mirrored = "
        "every local GPU; multi_worker = one process per machine, each with its TF_CONFIG "
        "(--batch_size is the global batch).",
        choices=STRATEGIES,
    )
    peer_timeout: float = option(
        600.0,
        "Seconds a multi_worker run waits for every worker of TF_CONFIG to start; then it stops "
        "with one line.",
        low=0.0,
        low_open=True,
    )
    eval_every: int = option(
        1, "Validation (and --monitor_test) evaluation period in epochs.", low=1
    )
    select_epoch: str = option(
        "best",
        "The weights the run ends with: those of the best val_map epoch, or of the last epoch.",
        choices=("best", "last"),
    )
    monitor_test: bool = option(
        False,
        "Also evaluate the test set every --eval_every epochs (logged only: it never selects "
        "anything); without it the test set is evaluated once, at the end.",
    )
    verbose: int = option(
        0,
        "Progress: 1 = Keras' progress bar, 2 = one line per epoch, 0 = none.",
        choices=(0, 1, 2),
    )


@dataclasses.dataclass(frozen=True)
class OutputConfig(Part):
    """Where the run writes."""

    workdir: str = option("", "Output folder of the run.")


PARTS = {
    "data": DataConfig,
    "loss": LossConfig,
    "pseudo": PseudoLabelConfig,
    "pruning": PruningConfig,
    "model": ModelConfig,
    "runtime": RuntimeConfig,
    "output": OutputConfig,
}

# Flags of earlier versions -> how they read now. The pseudo-label rule's options had flags of
# their own, passed to whichever rule ran (a rule ignored those it does not take).
RULE_OPTION_FLAGS = {
    "pseudo_positive_threshold": ("positive_threshold", 0.5),
    "pseudo_negative_threshold": ("negative_threshold", 0.05),
    "pseudo_negative_coverage": ("negative_coverage", 0.1),
}
# What a run whose config.json predates a field ran with (a run before auto_tune trained once).
STARTED_BEFORE_THEY_EXISTED = {"auto_tune": "off", "missing_labels": "counts"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run depends on; see the module docstring. Make one with `Config()` and
    parts, or from flat flag names with `Config.from_flat(epochs=3, method="ignore", ...)`."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    pseudo: PseudoLabelConfig = dataclasses.field(default_factory=PseudoLabelConfig)
    pruning: PruningConfig = dataclasses.field(default_factory=PruningConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)

    def __post_init__(self):
        if self.runtime.select_epoch == "best" and not self.data.has_validation:
            raise ValueError(
                "select_epoch=best needs a validation split: give validation_fraction > 0 or "
                "validation_data, or select_epoch=last"
            )
        if self.pseudo.min_precision and not self.data.has_validation:
            raise ValueError(
                "pseudo_min_precision measures precision on the validation split: give "
                "validation_fraction > 0 or validation_data"
            )
        from kpartial import auto_tune, label_pruning, pseudo_labels

        for technique in (auto_tune, pseudo_labels, label_pruning):
            error = technique.config_error(self)
            if error:
                raise ValueError(error)

    # Flat names: the flags, config.json and keyword construction.

    @staticmethod
    def fields():
        """(part name, part class, field) for every field, in flag order."""
        return [
            (name, part, field)
            for name, part in PARTS.items()
            for field in dataclasses.fields(part)
        ]

    @classmethod
    def from_flat(cls, **values):
        """The config of flat flag-named values (missing ones take their defaults).

        Raises:
          ValueError: an unknown name, or a value a rule refuses (one line naming the flag).
        """
        values = _upgrade(values)
        parts = {name: {} for name in PARTS}
        for name, part, field in cls.fields():
            flag = part.flag_name(field)
            if flag in values:
                parts[name][field.name] = values.pop(flag)
        if values:
            raise ValueError(f"unknown config fields: {', '.join(sorted(values))}")
        return cls(**{name: PARTS[name](**fields) for name, fields in parts.items()})

    def flat(self) -> dict[str, Any]:
        """{flag name: value}: what `config.json` holds (JSON types: tuples become lists)."""
        flat = {}
        for name, part, field in self.fields():
            value = getattr(getattr(self, name), field.name)
            flat[part.flag_name(field)] = _jsonable(value)
        return flat

    def replace(self, **values):
        """A copy with some flat-named values changed (checked like a new config)."""
        return Config.from_flat(**{**self.flat(), **values})

    @property
    def workdir(self):
        return self.output.workdir


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _upgrade(values):
    """Flat values of any version in today's names (see `RULE_OPTION_FLAGS`)."""
    values = {**values}
    if values.get("missing_labels") == "auto":  # the count rule's name before measuring existed
        values["missing_labels"] = "counts"
    from kpartial import pseudo_label_rules

    rule_options = data.parse_options(values.get("pseudo_rule_options", ""))
    takes = pseudo_label_rules.rule_option_names(values.get("pseudo_mode", "prior"))
    for flag, (option_name, default) in RULE_OPTION_FLAGS.items():
        value = values.pop(flag, None)
        if value is not None and value != default and option_name in takes:
            rule_options.setdefault(option_name, value)
    if rule_options:
        values["pseudo_rule_options"] = ",".join(f"{k}={v}" for k, v in rule_options.items())
    return values


def started_config(flat):
    """The config a workdir's `config.json` describes, as it ran (fields it predates take
    `STARTED_BEFORE_THEY_EXISTED`)."""
    return Config.from_flat(**{**STARTED_BEFORE_THEY_EXISTED, **flat})
