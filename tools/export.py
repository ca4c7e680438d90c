"""Exports a finished training run as a SavedModel with a `serve` signature.

python tools/export.py --workdir=workdirs/yeast --name=yeast   # -> savedmodels/yeast/
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a finished tools/train.py run.")
flags.DEFINE_string("name", None, "Export name: writes savedmodels/<name>/.")
flags.DEFINE_string("export_root", "savedmodels", "Folder that holds the exports.")
flags.mark_flags_as_required(["workdir", "name"])


def main(argv):
    del argv
    from kpartial import export

    try:
        path = export.export_workdir(FLAGS.workdir, os.path.join(FLAGS.export_root, FLAGS.name))
    except ValueError as e:
        raise app.UsageError(f"--workdir: {e}") from None
    print(f"exported SavedModel to {path} (signature 'serve': x -> probabilities)")


if __name__ == "__main__":
    app.run(main)
