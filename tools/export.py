r"""Exports a finished training run as a SavedModel with a `serve` signature.

python tools/export.py --workdir=workdirs/yeast --name=yeast      # -> savedmodels/yeast/
python tools/export.py --workdir=workdirs/yeast --export_dir=/srv/models/yeast

An existing target is refused unless --overwrite, and even then only a folder kpartial exported
is replaced.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # before TensorFlow is imported
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Workdir of a finished tools/train.py run.")
flags.DEFINE_string(
    "name", None, "Export name, one folder name (letters, digits, -, _, .): savedmodels/<name>/."
)
flags.DEFINE_string("export_dir", None, "Export to this folder instead of savedmodels/<name>.")
flags.DEFINE_bool("overwrite", False, "Replace an existing kpartial export at the target.")
flags.mark_flag_as_required("workdir")
cli.validate_export_name("name")
flags.register_multi_flags_validator(
    ["name", "export_dir"],
    lambda v: (v["name"] is None) != (v["export_dir"] is None),
    "give exactly one of --name and --export_dir",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.start_tensorflow()
    from kpartial import export

    path = FLAGS.export_dir or os.path.join(cli.EXPORT_ROOT, FLAGS.name)
    with cli.one_line_errors():
        path = export.export_workdir(FLAGS.workdir, path, FLAGS.overwrite)
    print(f"exported SavedModel to {path} (signature 'serve': x -> probabilities)")


if __name__ == "__main__":
    app.run(main)
