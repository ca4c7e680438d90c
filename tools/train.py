r"""Trains a partial-label multi-label classifier.

  python tools/train.py --flagfile=flags/mlp.cfg \
      --train_data=mulan:../shared/data/mulan/yeast/yeast-train.arff \
      --test_data=mulan:../shared/data/mulan/yeast/yeast-test.arff \
      --method=kpartial --known_fraction=0.1 --seed=1 --epochs=40 --workdir=workdirs/yeast

Writes into --workdir: flags.txt (resolved flags, usable as a flagfile), config.json,
history.json, metrics.json (last: the run finished), class_stats.csv, network.keras,
ap_by_frequency.png, checkpoint/ (the training state after every epoch), tensorboard/ (with
--auto_tune's two candidates: checkpoint/ and tensorboard/ in auto_tune/<candidate>/, each a run
of its own, and the chosen one's artifacts in the workdir); with --export_name also a SavedModel
under savedmodels/<name>/. A workdir that holds a run is refused
unless --resume (continue it from its last checkpoint) or --overwrite (replace kpartial's
artifacts in it). With --strategy=multi_worker, start the same command on every worker, each with
its TF_CONFIG: only the chief writes the workdir and the export. Flags are generated from `kpartial.config` (tools/train_flags.py); presets live in flags/*.cfg.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli
import train_flags
from absl import app, flags

FLAGS = flags.FLAGS
GROUPS = train_flags.GROUPS


def config_from_flags(**overrides):
    """The `Config` of the flags of the same names, with `overrides` of some fields."""
    values = {name: FLAGS[name].value for name in train_flags.CONFIG_FLAGS}
    values.update({name: FLAGS[name].value for name in train_flags.config_lib.RULE_OPTION_FLAGS})
    return train_flags.config_from_values(values, sys.stdout.isatty(), **overrides)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is empty: give the folder the run writes into")
    resolved = "".join(
        f"{flag.serialize()}\n"
        for group in GROUPS
        for flag in FLAGS.get_flags_for_module(group)
        if flag.name not in train_flags.RUN_MODE_FLAGS and flag.value is not None
    )
    export_path = FLAGS.export_dir or (
        os.path.join(cli.EXPORT_ROOT, FLAGS.export_name) if FLAGS.export_name else ""
    )
    cli.start_tensorflow()  # after the flags are parsed; the config's rules import kpartial
    from kpartial import distribution, export, training

    config = cli.config_or_flag_error(config_from_flags)

    with cli.one_line_errors():
        # First: a multi-worker strategy must exist before any other TensorFlow op runs.
        runtime = config.runtime
        is_chief = distribution.placement(runtime.strategy, runtime.peer_timeout).is_chief
        export_path = export_path if is_chief else ""  # the chief exports; workers write nothing
        if export_path:  # refuse before training, not after it
            export.check_target(
                export_path, FLAGS.overwrite, FLAGS.workdir if FLAGS.resume else None
            )
        result = training.run(
            config, resume=FLAGS.resume, overwrite=FLAGS.overwrite, files={"flags.txt": resolved}
        )
        if not is_chief:
            print(f"worker {result['worker']} done; the chief writes the run into {FLAGS.workdir}")
        if export_path:
            path = export.export_workdir(
                FLAGS.workdir, export_path, FLAGS.overwrite, replace_own=FLAGS.resume
            )
            print(f"workdir {FLAGS.workdir}; exported SavedModel to {path}")


if __name__ == "__main__":
    cli.run_with_grouped_help(main, GROUPS)
