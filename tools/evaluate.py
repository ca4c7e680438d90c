r"""Evaluates an exported SavedModel on a test set; counts only annotated test entries.

  python tools/evaluate.py --model=savedmodels/yeast \
      --test_data=mulan:../shared/data/mulan/yeast/yeast-test.arff --out=workdirs/yeast_eval

Reports `kpartial.evaluation.test_metrics` at the export's thresholds, as training's metrics.json
does: on the run's test set, the same mAP, CF1 and OF1. PSP@k needs the training counts an export
records; an export without them is evaluated without PSP@k, and says so. --out never replaces a
training run's metrics.json (a run's workdir is refused), and an earlier evaluation's only with
--overwrite.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # before TensorFlow is imported
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "SavedModel folder written by tools/export.py.")
flags.DEFINE_string("test_data", None, "FMT:PATH of the test set.")
flags.DEFINE_string("test_data_options", "", "Reader options key=value,... for --test_data.")
flags.DEFINE_enum(
    "on_bad_input", "error", ["error", "skip"], "error: stop at a bad record; skip: drop, count."
)
flags.DEFINE_string(
    "out", "", "If set, write metrics.json into this folder (never a training run's workdir)."
)
flags.DEFINE_bool(
    "overwrite", False, "Replace a metrics.json an earlier evaluation wrote in --out."
)
flags.DEFINE_integer("batch_size", 256, "Prediction batch size.", lower_bound=1)
flags.DEFINE_integer(
    "image_size", None, "Image side for image data; default: the size the model was exported at."
)
flags.mark_flags_as_required(["model", "test_data"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.start_tensorflow()
    from kpartial import export

    with cli.one_line_errors():
        result = export.evaluate_saved_model(
            FLAGS.model,
            FLAGS.test_data,
            FLAGS.batch_size,
            FLAGS.image_size,
            FLAGS.out or None,
            FLAGS.test_data_options,
            FLAGS.on_bad_input,
            FLAGS.overwrite,
        )
    for line in report_lines(result):
        print(line)
    if FLAGS.out:
        print(f"wrote {os.path.join(FLAGS.out, 'metrics.json')}")


def report_lines(result):
    """The console lines of an evaluation's `result` (`export.evaluate_saved_model`)."""
    ranking = " ".join(
        f"{name}={result[key]:.4f}"
        for name, key in (
            ("P@1", "p@1"),
            ("P@3", "p@3"),
            ("P@5", "p@5"),
            ("nDCG@3", "ndcg@3"),
            ("nDCG@5", "ndcg@5"),
            ("PSP@1", "psp@1"),
            ("PSP@3", "psp@3"),
            ("PSP@5", "psp@5"),
        )
        if key in result
    )
    headline = (
        f"mAP={result['map']:.4f} CF1={result['cf1']:.4f} OF1={result['of1']:.4f} over "
        f"{result['evaluated_classes']} classes and {result['annotated_entries']} annotated test "
        "entries (unannotated entries are not counted)"
    )
    f1 = (
        f"CF1/OF1 at the export's thresholds; at 0.5: CF1={result['cf1@0.5']:.4f} "
        f"OF1={result['of1@0.5']:.4f}; top-3: CF1={result['cf1@top3']:.4f} "
        f"OF1={result['of1@top3']:.4f}"
    )
    lines = [headline, f1, ranking]
    if "left_out" in result:
        lines.append(result["left_out"])
    return lines


if __name__ == "__main__":
    app.run(main)
