"""The demo: kpartial vs both baselines on an embedded imbalanced dataset; no external data.

Trains kpartial, ignore and assume_negative on the same simulated partial labels (10% known),
prints a comparison table, exports kpartial's model to savedmodels/demo/ and leaves TensorBoard
logs under workdirs/demo/<method>/.../tensorboard.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # before TensorFlow is imported
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "workdirs/demo", "Where the runs write their artifacts.")
flags.DEFINE_string("export_dir", "savedmodels/demo", "Where kpartial's SavedModel goes.")
flags.DEFINE_integer("epochs", 30, "Epochs per run.", lower_bound=1)
flags.DEFINE_float("known_fraction", 0.1, "Fraction of training labels kept, in (0, 1].")
flags.DEFINE_list("seeds", ["1"], "Seeds.")
flags.register_validator("known_fraction", lambda f: 0 < f <= 1, "must be in (0, 1]")
flags.register_validator(
    "seeds", lambda v: all(s.lstrip("-").isdigit() for s in v), "must be integers"
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.start_tensorflow()
    from kpartial import comparison, config, export

    seeds = [int(s) for s in FLAGS.seeds]
    with cli.one_line_errors():
        # Prune a quarter of the classes after 70% of the epochs.
        base = config.Config.from_flat(epochs=FLAGS.epochs, prune_schedule="0.7:0.25")
        # The demo's own folders: a second `make demo` replaces them (only kpartial's artifacts).
        results = comparison.compare(
            base,
            comparison.BASELINE_VARIANTS,
            [FLAGS.known_fraction],
            seeds,
            FLAGS.workdir,
            overwrite=True,
        )
        os.makedirs(FLAGS.workdir, exist_ok=True)
        results.to_csv(os.path.join(FLAGS.workdir, "results.csv"), index=False)
        print("\nTest mAP (%), annotated test entries only:\n" + comparison.summary_table(results))
        run = os.path.join(FLAGS.workdir, "kpartial", f"kf{FLAGS.known_fraction}_s{seeds[0]}")
        path = export.export_workdir(run, FLAGS.export_dir, overwrite=True)
    print(
        f"\nworkdirs under {FLAGS.workdir} (results.csv; TensorBoard: tensorboard --logdir "
        f"{FLAGS.workdir}); kpartial's SavedModel exported to {path}"
    )


if __name__ == "__main__":
    app.run(main)
