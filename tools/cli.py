"""What the tools share: quiet start, flag checks, and errors as one line.

Imported by every tool before TensorFlow, so TensorFlow's C++ start-up lines stay off the
console unless TF_CPP_MIN_LOG_LEVEL says otherwise.
"""

import contextlib
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

EXPORT_ROOT = "savedmodels"


def validate_export_name(flag_name):
    """Registers a parse-time check that --flag_name is one folder name (or unset/empty)."""

    def check(name):
        if not name:
            return True
        from kpartial import export

        try:
            export.check_export_name(name)
        except export.ExportError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    flags.register_validator(flag_name, check)


def validate_finite(*flag_names):
    """Registers parse-time checks that each float flag is finite (NaN passes any bound check)."""
    for name in flag_names:
        flags.register_validator(
            name, lambda value: value is None or math.isfinite(value), "must be a finite number"
        )


@contextlib.contextmanager
def one_line_errors():
    """Bad data, a refused workdir or export target: the message alone, exit status 1.

    These are not usage errors, so the flag help is not printed in front of them. kpartial's
    `DataError`, `WorkdirError` and `ExportError` are all `ValueError`s.
    """
    try:
        yield
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
