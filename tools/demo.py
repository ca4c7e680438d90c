"""The demo: kpartial vs both baselines on an embedded imbalanced dataset; no external data.

Trains kpartial, ignore and assume_negative on the same simulated partial labels (10% known),
prints a comparison table, exports kpartial's model to savedmodels/demo/ and leaves TensorBoard
logs under workdirs/demo/<method>/.../tensorboard.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "workdirs/demo", "Where the runs write their artifacts.")
flags.DEFINE_string("export_dir", "savedmodels/demo", "Where kpartial's SavedModel goes.")
flags.DEFINE_integer("epochs", 30, "Epochs per run.", lower_bound=1)
flags.DEFINE_float("known_fraction", 0.1, "Fraction of training labels kept.")
flags.DEFINE_list("seeds", ["1"], "Seeds.")


def main(argv):
    del argv
    from kpartial import comparison, export, training

    # Prune a quarter of the classes after 70% of the epochs.
    base = training.TrainConfig(
        epochs=FLAGS.epochs, prune_schedule=((max(1, int(0.7 * FLAGS.epochs)), 0.25),)
    )
    seeds = [int(s) for s in FLAGS.seeds]
    # The demo's own folders: a second `make demo` replaces them (only kpartial's artifacts).
    results = comparison.compare(
        base, comparison.METHODS, [FLAGS.known_fraction], seeds, FLAGS.workdir, overwrite=True
    )
    os.makedirs(FLAGS.workdir, exist_ok=True)
    results.to_csv(os.path.join(FLAGS.workdir, "results.csv"), index=False)
    print("\nTest mAP (%), annotated test entries only:\n" + comparison.summary_table(results))
    kpartial_run = os.path.join(FLAGS.workdir, "kpartial", f"kf{FLAGS.known_fraction}_s{seeds[0]}")
    print(
        f"\nexported {export.export_workdir(kpartial_run, FLAGS.export_dir, overwrite=True)}; "
        f"TensorBoard: tensorboard --logdir {FLAGS.workdir}"
    )


if __name__ == "__main__":
    app.run(main)
