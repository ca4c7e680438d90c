"""Trains a partial-label multi-label classifier.

  python tools/train.py --flagfile=flags/mlp.cfg \
      --train_data=mulan:../shared/data/mulan/yeast/yeast-train.arff \
      --test_data=mulan:../shared/data/mulan/yeast/yeast-test.arff \
      --method=kpartial --known_fraction=0.1 --seed=1 --epochs=40 --workdir=workdirs/yeast

Writes into --workdir: flags.txt (resolved flags), config.json, metrics.json, class_stats.csv,
network.keras, checkpoint.weights.h5, tensorboard/; with --export_name also a SavedModel under
savedmodels/<name>/.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from kpartial import label_pruning  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "train_data", "synthetic:train", "FMT:PATH, FMT in mulan, npz, coco, synthetic."
)
flags.DEFINE_string(
    "test_data", "synthetic:test", "FMT:PATH of the fully or partially annotated test set."
)
flags.DEFINE_enum(
    "method",
    "kpartial",
    ["kpartial", "ignore", "assume_negative"],
    "kpartial, or a baseline loss: ignore (masked BCE), assume_negative.",
)
flags.DEFINE_float(
    "known_fraction", 0.1, "Fraction of training labels kept (per entry, seeded).", upper_bound=1.0
)
flags.DEFINE_integer("seed", 1, "Seed of weights, shuffling and the partial-label simulation.")
flags.DEFINE_integer("epochs", 30, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "AdamW learning rate.")
flags.DEFINE_float("weight_decay", 1e-4, "AdamW weight decay.")
flags.DEFINE_list("hidden_units", ["512"], "MLP hidden layer widths.")
flags.DEFINE_float("dropout", 0.2, "MLP dropout.")
flags.DEFINE_enum(
    "jit_compile",
    "auto",
    ["auto", "true", "false"],
    "XLA: auto = on for GPU/TPU, off on CPU (measured slower there).",
)
flags.DEFINE_integer(
    "steps_per_execution",
    1,
    "Train steps per compiled call (fewer Python round trips on CPU).",
    lower_bound=1,
)
flags.DEFINE_string(
    "class_stats",
    "",
    "CSV label,positives,negatives,prior of an existing dataset; "
    "default: statistics of the training annotations.",
)
flags.DEFINE_float("loss_balance", 0.5, "kpartial loss: exponent beta of the positive odds weight.")
flags.DEFINE_float(
    "unknown_weight", 0.1, "kpartial loss: weight lambda of the prior term on unknowns."
)
flags.DEFINE_float("max_positive_weight", 50.0, "kpartial loss: cap of the positive weight.")
flags.DEFINE_integer(
    "pseudo_start_epoch", 10, "Epochs before the first pseudo-label refresh; -1 = off."
)
flags.DEFINE_integer("pseudo_every", 5, "Pseudo-label refresh period in epochs.", lower_bound=1)
flags.DEFINE_enum(
    "pseudo_mode", "prior", ["prior", "fixed"], "Per-class thresholds from the prior, or fixed."
)
flags.DEFINE_float("pseudo_positive_threshold", 0.5, "fixed: t+; prior: the floor of t+.")
flags.DEFINE_float("pseudo_negative_threshold", 0.05, "fixed: t-.")
flags.DEFINE_float("pseudo_negative_coverage", 0.1, "prior: share of expected negatives labelled.")
flags.DEFINE_float("pseudo_weight", 0.5, "Loss weight of a pseudo label relative to an annotation.")
flags.DEFINE_string(
    "prune_schedule",
    "",
    "EPOCH:FRACTION,... cumulative fraction of classes pruned "
    "after EPOCH epochs, e.g. 10:0.25,20:0.5; empty = no pruning.",
)
flags.DEFINE_enum(
    "prune_criterion", "fit_well", list(label_pruning.CRITERIA), "Which classes go first."
)
flags.DEFINE_string(
    "backbone", "mobilenet_v3_small", "Image backbone: resnet50 or mobilenet_v3_small."
)
flags.DEFINE_string("backbone_weights", "", "Local weights file for the image backbone (no top).")
flags.DEFINE_integer("image_size", 224, "Image side in pixels.", lower_bound=32)
flags.DEFINE_integer("eval_every", 5, "Test-set evaluation period in epochs (for TensorBoard).")
flags.DEFINE_string("workdir", None, "Output folder.")
flags.DEFINE_string("export_name", "", "If set, export a SavedModel to savedmodels/<name>/.")
flags.DEFINE_integer("verbose", 2, "Keras fit verbosity.")
flags.mark_flag_as_required("workdir")


def _check_prune_schedule(value):
    try:
        label_pruning.parse_prune_schedule(value)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


flags.register_validator("prune_schedule", _check_prune_schedule)
flags.register_validator("known_fraction", lambda f: f > 0, "must be in (0, 1]")
flags.register_validator("backbone_weights", lambda p: not p or os.path.isfile(p), "file not found")
flags.register_validator("class_stats", lambda p: not p or os.path.isfile(p), "file not found")
flags.register_validator(
    "hidden_units",
    lambda v: all(u.isdigit() and int(u) > 0 for u in v),
    "must be a comma-separated list of positive integers",
)


def config_from_flags():
    from kpartial import training

    return training.TrainConfig(
        train_data=FLAGS.train_data,
        test_data=FLAGS.test_data,
        method=FLAGS.method,
        known_fraction=FLAGS.known_fraction,
        seed=FLAGS.seed,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay,
        hidden_units=tuple(int(u) for u in FLAGS.hidden_units),
        dropout=FLAGS.dropout,
        jit_compile=FLAGS.jit_compile,
        steps_per_execution=FLAGS.steps_per_execution,
        class_stats=FLAGS.class_stats,
        loss_balance=FLAGS.loss_balance,
        unknown_weight=FLAGS.unknown_weight,
        max_positive_weight=FLAGS.max_positive_weight,
        pseudo_start_epoch=FLAGS.pseudo_start_epoch,
        pseudo_every=FLAGS.pseudo_every,
        pseudo_mode=FLAGS.pseudo_mode,
        pseudo_positive_threshold=FLAGS.pseudo_positive_threshold,
        pseudo_negative_threshold=FLAGS.pseudo_negative_threshold,
        pseudo_negative_coverage=FLAGS.pseudo_negative_coverage,
        pseudo_weight=FLAGS.pseudo_weight,
        prune_schedule=label_pruning.parse_prune_schedule(FLAGS.prune_schedule),
        prune_criterion=FLAGS.prune_criterion,
        backbone=FLAGS.backbone,
        backbone_weights=FLAGS.backbone_weights,
        image_size=FLAGS.image_size,
        eval_every=FLAGS.eval_every,
        workdir=FLAGS.workdir,
        verbose=FLAGS.verbose,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from kpartial import data, export, training

    os.makedirs(FLAGS.workdir, exist_ok=True)
    with open(os.path.join(FLAGS.workdir, "flags.txt"), "w") as f:
        f.write(
            "".join(f"{flag.serialize()}\n" for flag in FLAGS.get_flags_for_module(sys.argv[0]))
        )
    config = config_from_flags()
    try:
        training.run(config)
    except data.DataError as e:
        raise app.UsageError(str(e)) from None
    if FLAGS.export_name:
        path = export.export_workdir(FLAGS.workdir, os.path.join("savedmodels", FLAGS.export_name))
        print(f"exported SavedModel to {path}")


if __name__ == "__main__":
    app.run(main)
