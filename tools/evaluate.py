r"""Evaluates an exported SavedModel on a test set; counts only annotated test entries.

  python tools/evaluate.py --model=savedmodels/yeast \
      --test_data=mulan:../shared/data/mulan/yeast/yeast-test.arff --out=workdirs/yeast_eval
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
flags.DEFINE_string("out", "", "If set, write metrics.json into this folder.")
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
        )
    print(
        f"mAP={result['map']:.4f} CF1={result['cf1']:.4f} OF1={result['of1']:.4f} over "
        f"{result['evaluated_classes']} classes and {result['annotated_entries']} annotated test "
        "entries (unannotated entries are not counted)"
    )
    if FLAGS.out:
        print(f"wrote {os.path.join(FLAGS.out, 'metrics.json')}")


if __name__ == "__main__":
    app.run(main)
