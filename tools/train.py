"""Trains a partial-label multi-label classifier.

  python tools/train.py --flagfile=flags/mlp.cfg \
      --train_data=mulan:../shared/data/mulan/yeast/yeast-train.arff \
      --test_data=mulan:../shared/data/mulan/yeast/yeast-test.arff \
      --method=kpartial --known_fraction=0.1 --seed=1 --epochs=40 --workdir=workdirs/yeast

Writes into --workdir: flags.txt (resolved flags, usable as a flagfile), config.json,
history.json, metrics.json (last: the run finished), class_stats.csv, network.keras,
checkpoint/ (the training state after every epoch), tensorboard/; with --export_name also a
SavedModel under savedmodels/<name>/. A workdir that holds a run is refused unless --resume
(continue it from its last checkpoint) or --overwrite (replace kpartial's artifacts in it).
Flag defaults are those of `kpartial.training.TrainConfig`; presets live in flags/*.cfg.
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import cli  # noqa: E402  (tools/cli.py: before TensorFlow is imported)
from kpartial import data, export, label_pruning, models, training  # noqa: E402

FLAGS = flags.FLAGS
D = training.TrainConfig()  # the defaults

flags.DEFINE_string(
    "train_data", D.train_data, f"FMT:PATH, FMT in {', '.join(sorted(data.READERS))}."
)
flags.DEFINE_string(
    "test_data",
    D.test_data,
    "FMT:PATH of the test set; empty = --test_fraction of --train_data, or synthetic:test.",
)
flags.DEFINE_string(
    "train_data_options",
    D.train_data_options,
    "Reader options key=value,... for --train_data, e.g. split=train,min_count=100 (openimages).",
)
flags.DEFINE_string("test_data_options", D.test_data_options, "Reader options for --test_data.")
flags.DEFINE_enum(
    "on_bad_input",
    D.on_bad_input,
    list(data.ON_BAD_INPUT),
    "error: stop at the first bad record (named by file and line); skip: drop bad records, count "
    "them and report the counts at the end (metrics.json skipped_input).",
)
flags.DEFINE_float(
    "test_fraction",
    D.test_fraction,
    "Share of --train_data held out as the test set (with --split_seed); 0 = use --test_data.",
    lower_bound=0,
    upper_bound=0.99,
)
flags.DEFINE_integer("split_seed", D.split_seed, "Seed of the --test_fraction split.")
flags.DEFINE_bool(
    "verify_images",
    D.verify_images,
    "Decode every image once before training, so a corrupt or missing one is reported by name "
    "(or skipped and counted with --on_bad_input=skip) instead of failing mid-epoch.",
)
flags.DEFINE_string(
    "simulation",
    D.simulation,
    "Partial labels saved by tools/simulate.py (replaces --known_fraction), so methods compare on "
    "identical labels.",
)
flags.DEFINE_enum(
    "method",
    D.method,
    list(training.METHODS),
    "kpartial, or another loss: ignore (masked BCE), assume_negative (unknown = negative), wan, "
    "an_ls, epr, focal, asl, p_asl, hill (see kpartial/losses.py).",
)
flags.DEFINE_float(
    "known_fraction",
    D.known_fraction,
    "Simulate partial labels: keep each given label with this probability (seeded), in (0, 1]; "
    "1 = use every label the data has.",
)
flags.DEFINE_integer("seed", D.seed, "Seed of weights, shuffling and the label simulation.")
flags.DEFINE_integer("epochs", D.epochs, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", D.batch_size, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", D.learning_rate, "AdamW learning rate.", lower_bound=0)
flags.DEFINE_float("weight_decay", D.weight_decay, "AdamW weight decay.", lower_bound=0)
flags.DEFINE_list("hidden_units", [str(u) for u in D.hidden_units], "MLP hidden layer widths.")
flags.DEFINE_float("dropout", D.dropout, "MLP dropout.", lower_bound=0, upper_bound=0.99)
flags.DEFINE_enum(
    "jit_compile", D.jit_compile, ["auto", "true", "false"], "XLA; auto = on for GPU/TPU only."
)
flags.DEFINE_integer(
    "steps_per_execution", D.steps_per_execution, "Train steps per compiled call.", lower_bound=1
)
flags.DEFINE_string(
    "class_stats",
    D.class_stats,
    "CSV label,positives,negatives,prior of an existing dataset; default: statistics of the "
    "training annotations.",
)
flags.DEFINE_string(
    "loss_options",
    D.loss_options,
    "Options of the --method's loss, key=value,... (its constructor arguments), e.g. "
    "balance=0.5,unknown_weight=0.1,max_positive_weight=50 for kpartial; checked against the loss.",
)
flags.DEFINE_enum(
    "pseudo_labels",
    D.pseudo_labels,
    ["auto", "on", "off"],
    "Pseudo labels: auto = only with --method=kpartial; on = with any --method.",
)
flags.DEFINE_enum(
    "pruning",
    D.pruning,
    ["auto", "on", "off"],
    "Label-space reduction: auto = only with --method=kpartial; on = with any --method.",
)
flags.DEFINE_integer(
    "pseudo_start_epoch",
    D.pseudo_start_epoch,
    "Epochs before the first pseudo-label refresh; -1 = off.",
)
flags.DEFINE_integer("pseudo_every", D.pseudo_every, "Refresh period in epochs.", lower_bound=1)
flags.DEFINE_enum(
    "pseudo_mode", D.pseudo_mode, ["prior", "fixed"], "Per-class t+ from the prior, or fixed."
)
flags.DEFINE_float(
    "pseudo_positive_threshold",
    D.pseudo_positive_threshold,
    "fixed: t+; prior: the floor of t+.",
    lower_bound=0,
    upper_bound=1,
)
flags.DEFINE_float(
    "pseudo_negative_threshold",
    D.pseudo_negative_threshold,
    "fixed: t-.",
    lower_bound=0,
    upper_bound=1,
)
flags.DEFINE_float(
    "pseudo_negative_coverage",
    D.pseudo_negative_coverage,
    "prior: share of the expected negatives labelled.",
    lower_bound=0,
    upper_bound=1,
)
flags.DEFINE_float(
    "pseudo_weight",
    D.pseudo_weight,
    "Loss weight of a pseudo label (annotation = 1).",
    lower_bound=0,
)
flags.DEFINE_string(
    "prune_schedule",
    "",
    "EPOCH:FRACTION,...: cumulative fraction of classes pruned after EPOCH epochs, e.g. "
    "10:0.25,20:0.5; empty = no pruning.",
)
flags.DEFINE_enum(
    "prune_criterion", D.prune_criterion, list(label_pruning.CRITERIA), "Which go first."
)
flags.DEFINE_enum("backbone", D.backbone, list(models.BACKBONES), "Image backbone.")
flags.DEFINE_string("backbone_weights", D.backbone_weights, "Local weights file of the backbone.")
flags.DEFINE_integer("image_size", D.image_size, "Image side in pixels.", lower_bound=32)
flags.DEFINE_integer("eval_every", D.eval_every, "Test evaluation period in epochs.", lower_bound=1)
flags.DEFINE_string("workdir", None, "Output folder of the run.")
flags.DEFINE_bool(
    "resume", False, "Continue the run in --workdir from its last checkpoint (same flags)."
)
flags.DEFINE_bool(
    "overwrite",
    False,
    "Replace the run in --workdir (only kpartial's own artifacts are removed) and an existing "
    "kpartial export at the export target.",
)
flags.DEFINE_string(
    "export_name", "", "If set, export a SavedModel to savedmodels/<name>/ (one folder name)."
)
flags.DEFINE_string("export_dir", "", "If set, export a SavedModel to this folder.")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity (0, 1, 2).")
flags.mark_flag_as_required("workdir")


def _check_prune_schedule(values):
    try:
        schedule = label_pruning.parse_prune_schedule(values["prune_schedule"])
    except ValueError as e:
        raise flags.ValidationError(f"--prune_schedule: {e}") from None
    late = [epoch for epoch, _ in schedule if epoch >= values["epochs"]]
    if late:
        raise flags.ValidationError(
            f"--prune_schedule: epoch {late[0]} is not before --epochs={values['epochs']}, so it "
            "would never prune"
        )
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


flags.register_multi_flags_validator(["method", "loss_options"], _check_loss_options)
flags.register_validator("train_data_options", _check_options)
flags.register_validator("test_data_options", _check_options)
flags.register_validator(
    "hidden_units",
    lambda v: all(u.isdigit() and int(u) > 0 for u in v),
    "must be a comma-separated list of positive integers",
)


def config_from_flags():
    """TrainConfig from the flags of the same names."""
    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(training.TrainConfig)}
    values["hidden_units"] = tuple(int(u) for u in values["hidden_units"])
    values["prune_schedule"] = label_pruning.parse_prune_schedule(values["prune_schedule"])
    return training.TrainConfig(**values)


# Flags of how to run, not of what is trained: not written to flags.txt, may change on --resume.
RUN_MODE_FLAGS = ("resume", "overwrite")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is empty: give the folder the run writes into")
    resolved = "".join(
        f"{flag.serialize()}\n"
        for flag in FLAGS.get_flags_for_module(sys.argv[0])
        if flag.name not in RUN_MODE_FLAGS
    )
    export_path = FLAGS.export_dir or (
        os.path.join(cli.EXPORT_ROOT, FLAGS.export_name) if FLAGS.export_name else ""
    )
    with cli.one_line_errors():
        if export_path:  # refuse before training, not after it
            export.check_target(export_path, FLAGS.overwrite)
        training.run(
            config_from_flags(),
            resume=FLAGS.resume,
            overwrite=FLAGS.overwrite,
            files={"flags.txt": resolved},
        )
        if export_path:
            path = export.export_workdir(FLAGS.workdir, export_path, FLAGS.overwrite)
            print(f"exported SavedModel to {path}")


if __name__ == "__main__":
    app.run(main)
