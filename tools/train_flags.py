"""The flags of tools/train.py (and of tools/compare.py, which trains with them), in groups.

Each flag is defined with `module_name=` its group, so `--helpfull` lists it under the group and
`cli.run_with_grouped_help` shows the groups in `--helpshort`. Defaults are those of
`kpartial.training.TrainConfig`; the flag names are its field names.
"""

import functools
import os
import re

import cli
from absl import flags

cli.start_tensorflow()  # before kpartial imports it
from kpartial import data, distribution, label_pruning, losses, models, training

DATA, LOSS, PSEUDO, PRUNING, MODEL, RUNTIME, OUTPUT = GROUPS = (
    "data",
    "loss",
    "pseudo labels",
    "pruning",
    "model",
    "runtime",
    "output",
)
D = training.TrainConfig()  # the defaults


def _summary(name):
    """A few words on a registered loss: its class docstring's opening words."""
    loss = losses.LOSSES[name]
    mode = ", ".join(map(str, loss.args)) if isinstance(loss, functools.partial) else ""
    loss = getattr(loss, "func", loss)
    opening = " ".join((loss.__doc__ or "").split("\n\n")[0].split())
    words = re.split(r" \(|\. ", opening)[0].rstrip(".")
    return f"{name} ({', '.join(filter(None, (words, mode)))})" if words else name


flags.DEFINE_string(
    "train_data",
    D.train_data,
    f"FMT:PATH, FMT in {', '.join(sorted(data.READERS))}.",
    module_name=DATA,
)
flags.DEFINE_string(
    "test_data",
    D.test_data,
    "FMT:PATH of the test set; empty = --test_fraction of --train_data, or synthetic:test.",
    module_name=DATA,
)
flags.DEFINE_string(
    "train_data_options",
    D.train_data_options,
    "Reader options key=value,... for --train_data, e.g. split=train,min_count=100 (openimages).",
    module_name=DATA,
)
flags.DEFINE_string(
    "test_data_options", D.test_data_options, "Reader options for --test_data.", module_name=DATA
)
flags.DEFINE_string(
    "validation_data",
    D.validation_data,
    "FMT:PATH of a validation set of its own (labels as given), instead of "
    "--validation_fraction of the training examples; e.g. TFRecord shards, which cannot be split.",
    module_name=DATA,
)
flags.DEFINE_string(
    "validation_data_options",
    D.validation_data_options,
    "Reader options for --validation_data.",
    module_name=DATA,
)
flags.DEFINE_enum(
    "on_bad_input",
    D.on_bad_input,
    list(data.ON_BAD_INPUT),
    "error: stop at the first bad record (named by file and line); skip: drop bad records, count "
    "them and report the counts at the end (metrics.json skipped_input).",
    module_name=DATA,
)
flags.DEFINE_float(
    "test_fraction",
    D.test_fraction,
    "Share of --train_data held out as the test set (with --split_seed); 0 = use --test_data.",
    lower_bound=0,
    upper_bound=0.99,
    module_name=DATA,
)
flags.DEFINE_integer(
    "split_seed", D.split_seed, "Seed of the --test_fraction split.", module_name=DATA
)
flags.DEFINE_bool(
    "verify_images",
    D.verify_images,
    "Decode every image once before training, so a corrupt or missing one is reported by name "
    "(or skipped and counted with --on_bad_input=skip) instead of failing mid-epoch.",
    module_name=DATA,
)
flags.DEFINE_string(
    "simulation",
    D.simulation,
    "Partial labels saved by tools/simulate.py (replaces --known_fraction), so methods compare on "
    "identical labels.",
    module_name=DATA,
)
flags.DEFINE_float(
    "known_fraction",
    D.known_fraction,
    "Simulate partial labels: keep each given label with this probability (seeded), in (0, 1]; "
    "1 = use every label the data has.",
    module_name=DATA,
)
flags.DEFINE_string(
    "class_stats",
    D.class_stats,
    "CSV label,positives,negatives,prior of an existing dataset; default: statistics of the "
    "training annotations.",
    module_name=DATA,
)

flags.DEFINE_enum(
    "method",
    D.method,
    list(losses.LOSSES),
    "The loss (kpartial's own adds pseudo labels and pruning, see --pseudo_labels, --pruning): "
    + "; ".join(_summary(name) for name in losses.LOSSES)
    + ". Formulas: kpartial/losses.py.",
    module_name=LOSS,
)
flags.DEFINE_string(
    "loss_options",
    D.loss_options,
    "Options of the --method's loss, key=value,... (its constructor arguments), e.g. "
    "balance=0.5,unknown_weight=0.1,max_positive_weight=50 for kpartial; checked against the loss.",
    module_name=LOSS,
)

flags.DEFINE_enum(
    "auto_tune",
    D.auto_tune,
    ["auto", "on", "off"],
    "kpartial's focusing of the known negatives, chosen on the validation split: auto = train "
    "the loss with and without it and keep the better (2 runs; only with partial labels, a "
    "validation split and one worker, else said in one line); on = refuse where it cannot; "
    "off = one run of --loss_options as given.",
    module_name=LOSS,
)
flags.DEFINE_enum(
    "pseudo_labels",
    D.pseudo_labels,
    ["auto", "on", "off"],
    "Pseudo labels: auto = only with --method=kpartial, and not where the annotation depends "
    "on the class or the label space is dense (said in one line); on = with any --method.",
    module_name=PSEUDO,
)
flags.DEFINE_integer(
    "pseudo_start_epoch",
    D.pseudo_start_epoch,
    "Epochs before the first pseudo-label refresh, before --epochs; -1 = off.",
    module_name=PSEUDO,
)
flags.DEFINE_integer(
    "pseudo_every", D.pseudo_every, "Refresh period in epochs.", lower_bound=1, module_name=PSEUDO
)
flags.DEFINE_enum(
    "pseudo_mode",
    D.pseudo_mode,
    ["prior", "fixed"],
    "Per-class t+ from the prior, or fixed.",
    module_name=PSEUDO,
)
flags.DEFINE_float(
    "pseudo_positive_threshold",
    D.pseudo_positive_threshold,
    "fixed: t+; prior: the floor of t+.",
    lower_bound=0,
    upper_bound=1,
    module_name=PSEUDO,
)
flags.DEFINE_float(
    "pseudo_negative_threshold",
    D.pseudo_negative_threshold,
    "fixed: t-.",
    lower_bound=0,
    upper_bound=1,
    module_name=PSEUDO,
)
flags.DEFINE_float(
    "pseudo_negative_coverage",
    D.pseudo_negative_coverage,
    "prior: share of the expected negatives labelled.",
    lower_bound=0,
    upper_bound=1,
    module_name=PSEUDO,
)
flags.DEFINE_float(
    "pseudo_weight",
    D.pseudo_weight,
    "Loss weight of a pseudo label (annotation = 1).",
    lower_bound=0,
    module_name=PSEUDO,
)
flags.DEFINE_integer(
    "pseudo_max_positives",
    D.pseudo_max_positives,
    "Pseudo positives stored per example at most (the highest logits win; the rest are counted).",
    lower_bound=1,
    module_name=PSEUDO,
)
flags.DEFINE_float(
    "pseudo_min_precision",
    D.pseudo_min_precision,
    "If > 0: pseudo-label a class positive only above the lowest score at which its validation "
    "entries are positive at least this often (0 = no such check).",
    lower_bound=0.0,
    upper_bound=1.0,
    module_name=PSEUDO,
)

flags.DEFINE_enum(
    "pruning",
    D.pruning,
    ["auto", "on", "off"],
    "Label-space reduction: auto = only with --method=kpartial; on = with any --method.",
    module_name=PRUNING,
)
flags.DEFINE_string(
    "prune_schedule",
    "",
    "EPOCH:FRACTION,...: cumulative fraction of classes pruned after EPOCH epochs; a decimal "
    "EPOCH is a share of --epochs, e.g. 0.5:0.25,0.75:0.5 (or 20:0.25,30:0.5 of 40 epochs); "
    "empty = no pruning.",
    module_name=PRUNING,
)
flags.DEFINE_enum(
    "prune_criterion",
    D.prune_criterion,
    list(label_pruning.CRITERIA),
    "Which classes go first: fit_well = lowest balanced loss on their known labels; random.",
    module_name=PRUNING,
)

flags.DEFINE_list(
    "hidden_units", [str(u) for u in D.hidden_units], "MLP hidden layer widths.", module_name=MODEL
)
flags.DEFINE_float(
    "dropout", D.dropout, "MLP dropout.", lower_bound=0, upper_bound=0.99, module_name=MODEL
)
flags.DEFINE_enum(
    "backbone", D.backbone, list(models.BACKBONES), "Image backbone.", module_name=MODEL
)
flags.DEFINE_string(
    "backbone_weights", D.backbone_weights, "Local weights file of the backbone.", module_name=MODEL
)
flags.DEFINE_integer(
    "image_size", D.image_size, "Image side in pixels.", lower_bound=32, module_name=MODEL
)

flags.DEFINE_integer(
    "seed", D.seed, "Seed of weights, shuffling and the label simulation.", module_name=RUNTIME
)
flags.DEFINE_integer("epochs", D.epochs, "Training epochs.", lower_bound=1, module_name=RUNTIME)
flags.DEFINE_integer("batch_size", D.batch_size, "Batch size.", lower_bound=1, module_name=RUNTIME)
flags.DEFINE_float(
    "learning_rate", D.learning_rate, "AdamW learning rate.", lower_bound=0, module_name=RUNTIME
)
flags.DEFINE_float(
    "weight_decay", D.weight_decay, "AdamW weight decay.", lower_bound=0, module_name=RUNTIME
)
flags.DEFINE_enum(
    "jit_compile",
    D.jit_compile,
    ["auto", "true", "false"],
    "XLA; auto = on for GPU/TPU only.",
    module_name=RUNTIME,
)
flags.DEFINE_integer(
    "steps_per_execution",
    D.steps_per_execution,
    "Train steps per compiled call.",
    lower_bound=1,
    module_name=RUNTIME,
)
flags.DEFINE_enum(
    "strategy",
    D.strategy,
    list(distribution.STRATEGIES),
    "tf.distribute strategy: auto = mirrored with several GPUs, else one device; mirrored = every "
    "local GPU; multi_worker = one process per machine, each with its TF_CONFIG (--batch_size "
    "is the global batch).",
    module_name=RUNTIME,
)
flags.DEFINE_integer(
    "eval_every",
    D.eval_every,
    "Validation (and --monitor_test) evaluation period in epochs.",
    lower_bound=1,
    module_name=RUNTIME,
)
flags.DEFINE_float(
    "validation_fraction",
    D.validation_fraction,
    "Share of the training examples held out (seeded by --split_seed) with their known labels, "
    "for val_map monitoring, --select_epoch and per-class decision thresholds; 0 = none.",
    lower_bound=0.0,
    upper_bound=0.99,
    module_name=RUNTIME,
)
flags.DEFINE_enum(
    "select_epoch",
    D.select_epoch,
    ["best", "last"],
    "The weights the run ends with: those of the best val_map epoch, or of the last epoch.",
    module_name=RUNTIME,
)
flags.DEFINE_bool(
    "monitor_test",
    D.monitor_test,
    "Also evaluate the test set every --eval_every epochs (logged only: it never selects "
    "anything); without it the test set is evaluated once, at the end.",
    module_name=RUNTIME,
)
flags.DEFINE_enum(
    "verbose",
    "auto",
    ["auto", "0", "1", "2"],
    "Progress: 1 = Keras' progress bar, 2 = one line per epoch, 0 = none; auto = 1 on a terminal, "
    "2 into a file or pipe.",
    module_name=RUNTIME,
)

flags.DEFINE_string("workdir", None, "Output folder of the run.", module_name=OUTPUT)
flags.DEFINE_bool(
    "resume",
    False,
    "Continue the run in --workdir from its last checkpoint (same flags).",
    module_name=OUTPUT,
)
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace the run in --workdir (only kpartial's own artifacts are removed) and an existing "
    "kpartial export at the export target.",
    module_name=OUTPUT,
)
flags.DEFINE_string(
    "export_name",
    "",
    "If set, export a SavedModel to savedmodels/<name>/ (one folder name).",
    module_name=OUTPUT,
)
flags.DEFINE_string(
    "export_dir", "", "If set, export a SavedModel to this folder.", module_name=OUTPUT
)
flags.mark_flag_as_required("workdir")


def _check_prune_schedule(values):
    try:
        label_pruning.resolve_prune_schedule(
            label_pruning.parse_prune_schedule(values["prune_schedule"]), values["epochs"]
        )
    except ValueError as e:
        raise flags.ValidationError(f"--prune_schedule: {e}") from None
    return True


def _check_options(value):
    try:
        data.parse_options(value)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


def _check_loss_options(values):
    try:
        training.check_loss_options(values["method"], values["loss_options"])
    except ValueError as e:
        raise flags.ValidationError(f"--{e}") from None
    return True


flags.register_multi_flags_validator(["prune_schedule", "epochs"], _check_prune_schedule)
cli.validate_finite(*(f for f in training.FINITE_FIELDS if isinstance(getattr(D, f), float)))
cli.validate_export_name("export_name")
flags.register_multi_flags_validator(
    ["export_name", "export_dir"],
    lambda v: not (v["export_name"] and v["export_dir"]),
    "give --export_name or --export_dir, not both",
)
flags.register_multi_flags_validator(
    ["resume", "overwrite"],
    lambda v: not (v["resume"] and v["overwrite"]),
    "give --resume or --overwrite, not both",
)
flags.register_validator("known_fraction", lambda f: 0 < f <= 1, "must be in (0, 1]")
flags.register_validator("backbone_weights", lambda p: not p or os.path.isfile(p), "file not found")
flags.register_validator("class_stats", lambda p: not p or os.path.isfile(p), "file not found")
flags.register_validator("simulation", lambda p: not p or os.path.isfile(p), "file not found")
flags.register_multi_flags_validator(
    ["test_data", "test_fraction"],
    lambda v: not (v["test_data"] and v["test_fraction"]),
    "give --test_data or --test_fraction, not both",
)
flags.register_multi_flags_validator(["method", "loss_options"], _check_loss_options)
flags.register_multi_flags_validator(
    ["select_epoch", "validation_fraction", "validation_data"],
    lambda v: (
        not (v["select_epoch"] == "best" and not (v["validation_fraction"] or v["validation_data"]))
    ),
    "--select_epoch=best needs --validation_fraction > 0 or --validation_data (or give "
    "--select_epoch=last)",
)
flags.register_validator("train_data_options", _check_options)
flags.register_validator("test_data_options", _check_options)
flags.register_validator("validation_data_options", _check_options)
flags.register_validator(
    "hidden_units",
    lambda v: all(u.isdigit() and int(u) > 0 for u in v),
    "must be a comma-separated list of positive integers",
)
