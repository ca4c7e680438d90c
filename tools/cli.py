"""What the tools share: a quiet start, flag checks, grouped help, and errors as one line.

Imported by every tool before TensorFlow. A tool starts TensorFlow with `start_tensorflow()`
(before importing kpartial), so TensorFlow's C++ start-up lines stay off the console unless
TF_CPP_MIN_LOG_LEVEL says otherwise; absl logging stays at WARNING unless --verbosity is given;
Python warnings raised inside TensorFlow and Keras are not shown unless Python's -W or
PYTHONWARNINGS asks for them.
"""

import contextlib
import errno
import importlib
import importlib.util
import os
import re
import sys
import tempfile
import types
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags

FLAGS = flags.FLAGS
EXPORT_ROOT = "savedmodels"

if not sys.warnoptions:
    warnings.filterwarnings(
        "ignore", module=r"(tensorflow|keras|tf_keras|absl|h5py|google\.protobuf)(\.|$)"
    )


def _warning_unless_verbosity_given():
    # absl raises an unset --verbosity to INFO after parsing; TensorFlow's INFO lines (SavedModel
    # assets, sharding callbacks) would then fill the console.
    if not FLAGS["verbosity"].present:
        FLAGS.verbosity = -1


app.call_after_init(_warning_unless_verbosity_given)

# A native log line: severity letter, date, time, thread id, file:line].
_NATIVE_LOG_LINE = re.compile(r"[IWEF]\d{4} [\d:.]+ +\d+ [^\]]+:\d+\] ")
# Written by a CUDA build of TensorFlow on every start on a machine without a GPU, at ERROR.
_NO_GPU = "failed call to cuInit"


def import_without_tensorflow(name):
    """`kpartial.<name>`, a module that needs no TensorFlow, imported without TensorFlow.

    `import kpartial` imports TensorFlow and Keras (it registers kpartial's Keras classes), and
    a submodule's import runs its package's `__init__` first. The flags are defined from
    `kpartial.config` and parsed before TensorFlow starts, so that a typo or --help is answered
    in about a second; so, before TensorFlow is imported, a bare stand-in takes the package's
    place while the submodule loads. The real package, imported later, finds the modules loaded
    this way and uses them.
    """
    if "kpartial" in sys.modules:
        return importlib.import_module(f"kpartial.{name}")
    stand_in = types.ModuleType("kpartial")
    stand_in.__path__ = list(importlib.util.find_spec("kpartial").submodule_search_locations)
    sys.modules["kpartial"] = stand_in
    try:
        return importlib.import_module(f"kpartial.{name}")
    finally:
        del sys.modules["kpartial"]


def start_tensorflow():
    """Imports TensorFlow and lists its devices with stderr filtered by TF_CPP_MIN_LOG_LEVEL.

    TensorFlow's C++ side writes its first lines before its logging is set up ("All log messages
    before absl::InitializeLog() is called are written to STDERR", then e.g. "Could not find cuda
    drivers"), so TF_CPP_MIN_LOG_LEVEL does not reach them. While TensorFlow starts, stderr goes
    to a file; afterwards what is at or above that level is written back. Safe to call again.
    """
    if "tensorflow" in sys.modules:
        return
    min_level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL") or 0)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # initialises the devices: their lines come now
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(_native_lines_to_show(lines, min_level)))


def _native_lines_to_show(lines, min_level):
    if min_level <= 0:
        return lines
    shown, keep = [], True
    for line in lines:
        if _NATIVE_LOG_LINE.match(line):
            keep = "IWEF".index(line[0]) >= min_level and _NO_GPU not in line
        elif line.startswith("WARNING: All log messages before absl::InitializeLog()"):
            continue
        # A line that is not a log line continues the one before it (cpu_feature_guard's does).
        if keep:
            shown.append(line)
    return shown


def run_with_grouped_help(main, modules):
    """`app.run(main)`, with --help/--helpshort listing the flags of each of `modules` apart.

    absl lists the flags a module defines under the module's name, but --helpshort shows only
    the main module's flags, in one list; the tools define their flags with `module_name=GROUP`
    (see tools/train_flags.py), and this replaces the two short-help flags by ones that show
    `FLAGS.module_help(group)` for each group.
    """
    app.define_help_flags()
    for name in ("help", "?", "helpshort"):
        delattr(FLAGS, name)
    flags.DEFINE_flag(_GroupedHelpFlag("help", "?", modules), module_name="absl.app")
    flags.DEFINE_flag(_GroupedHelpFlag("helpshort", None, modules), module_name="absl.app")
    app.run(main)


class _GroupedHelpFlag(flags.BooleanFlag):
    def __init__(self, name, short_name, modules):
        super().__init__(name, False, "show this help", short_name=short_name)
        self.modules = modules

    def parse(self, argument):
        if self._parse(argument):
            doc = sys.modules["__main__"].__doc__ or ""
            groups = "\n".join(FLAGS.module_help(module) for module in self.modules)
            print(f"{doc}\nflags:\n{groups}\n\nTry --helpfull to get a list of all flags.")
            sys.exit(1)  # as absl's --help


def validate_export_name(flag_name):
    """Registers a parse-time check that --flag_name is one folder name (or unset/empty)."""

    def check(name):
        if not name:
            return True
        start_tensorflow()
        from kpartial import export

        try:
            export.check_export_name(name)
        except export.ExportError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    flags.register_validator(flag_name, check)


def config_or_flag_error(make_config):
    """`make_config()`, or exit 1 with its `ValueError` as one flag-parsing line: the config's
    rules name the flag (see kpartial.config), as absl's own checks do."""
    try:
        return make_config()
    except ValueError as e:
        print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def one_line_errors():
    """Bad data, a refused workdir or export target: the message alone, exit status 1.

    These are not usage errors, so the flag help is not printed in front of them. kpartial's
    `DataError`, `WorkdirError` and `ExportError` are all `ValueError`s.
    """
    try:
        yield
    except (ValueError, OSError) as e:
        print(f"error: {_disk_full_line(e) or ' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # TensorFlow's data and disk errors only; the rest is raised again
        line = _disk_full_line(e) or _input_error_line(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)


def _disk_full_line(error):
    """One line for a write that found no space left (Python's, h5py's or TensorFlow's), or None."""
    if getattr(error, "errno", None) != errno.ENOSPC and "No space left on device" not in str(
        error
    ):
        return None
    where = getattr(error, "filename", None)
    return (
        f"no space left on device{f' writing {where}' if where else ''}: the files written "
        "before it are intact (the last checkpoint, an earlier export); free space and run "
        "again (--resume continues the run from its last checkpoint)"
    )


def _input_error_line(error):
    """One line for a TensorFlow error raised while reading the inputs (an image that does not
    decode, a damaged record), or None for any other error."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(
        error, (tf.errors.InvalidArgumentError, tf.errors.DataLossError)
    ):
        return None
    # TensorFlow's message: "Graph execution error:", where the op was defined, then the op's
    # own message, then its node name ("[[{{node ...}}]]"). The op's message is what to show.
    lines = [line.strip() for line in str(getattr(error, "message", error)).splitlines()]
    lines = [
        line
        for line in lines
        if line
        and not line.startswith(("File ", "[[", "Detected at node", "Graph execution error"))
        and not line.endswith("(most recent call last):")
    ]
    reason = lines[-1] if lines else type(error).__name__
    return (
        f"an input could not be read while training: {reason} (with --noverify_images, images "
        "are decoded only when their batch is built; --verify_images checks every one first)"
    )
