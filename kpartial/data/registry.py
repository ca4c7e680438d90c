"""Format names -> readers, and loading a dataset from a ``"FMT:PATH"`` spec.

Readers are looked up by format name in :data:`READERS`, which other modules may extend::

    data = load_spec("mulan:/data/yeast/yeast-train.arff")
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable

from kpartial.data.cleaning import drop_unlabelled
from kpartial.data.cleaning import verify_images as _verify_images
from kpartial.data.container import BadInput, DataError, MultiLabelData

# Format name -> reader, or "module:function" for readers imported on first use.
READERS: dict[str, Callable[..., MultiLabelData] | str] = {
    "mulan": "kpartial.data.readers.mulan:read_mulan",
    "npz": "kpartial.data.readers.npz:read_npz",
    "coco": "kpartial.data.readers.coco:read_coco",
    "synthetic": "kpartial.data.readers.synthetic:read_synthetic",
    "openimages": "kpartial.data.readers.openimages:read_openimages",
    "voc": "kpartial.data.readers.voc:read_voc",
    "nuswide": "kpartial.data.readers.nuswide:read_nuswide",
    "cub": "kpartial.data.readers.cub:read_cub",
    "meka": "kpartial.data.readers.meka:read_meka",
    "moleculenet": "kpartial.data.readers.moleculenet:read_moleculenet",
    "manifest": "kpartial.data.readers.image_list:read_image_list",
    "tfrecord": "kpartial.tfrecords:read_tfrecords",
}


def parse_data_spec(spec: str) -> tuple[str, str]:
    """Splits a ``"FMT:PATH"`` spec into ``(fmt, path)``.

    Args:
        spec: Format name, a colon, then the path (split at the first colon).

    Raises:
        DataError: If there is no colon, the path is empty or FMT is unknown.
    """
    fmt, sep, path = spec.partition(":")
    fmt = fmt.strip().lower()
    if not sep or not path:
        raise DataError(
            f"data spec {spec!r} must look like FMT:PATH with FMT one of {_known_formats()}"
        )
    if fmt not in READERS:
        raise DataError(
            f"data spec {spec!r}: unknown format {fmt!r}; known formats: {_known_formats()}"
        )
    return fmt, path


def load(fmt: str, path: str, on_bad_input: str = "error", **options) -> MultiLabelData:
    """Loads a dataset with the reader registered for ``fmt``.

    After reading, rows without any known label and classes without any known label are bad
    input: an error naming the first one, or with ``on_bad_input="skip"`` dropped and counted in
    ``MultiLabelData.skipped``.

    Args:
        fmt: Key of :data:`READERS` (looked up at call time, so later
            registrations are honoured).
        path: Passed to the reader.
        on_bad_input: ``"error"`` or ``"skip"``; passed on to readers that take it.
        **options: Reader-specific keyword arguments.

    Raises:
        DataError: If ``fmt`` is unknown, an option is not accepted by the
            reader, or the reader rejects the data.
    """
    reader = reader_for(fmt, path)
    bad = BadInput(on_bad_input)
    if "on_bad_input" in inspect.signature(reader).parameters:
        options = {**options, "on_bad_input": on_bad_input}
    try:
        inspect.signature(reader).bind(path, **options)
    except TypeError as e:  # Checked up front so TypeErrors inside readers are not masked.
        raise DataError(f"format {fmt!r} ({path}): bad options {sorted(options)}: {e}") from None
    data = drop_unlabelled(reader(path, **options), bad)
    if data.num_examples == 0 or data.num_classes == 0:
        # Nothing to train or evaluate on: say so here, not as a shape error deep in training.
        what = "examples" if data.num_examples == 0 else "classes"
        skipped = f" after skipping {data.skipped}" if data.skipped else ""
        raise DataError(f"{data.source or f'{fmt}:{path}'}: no {what}{skipped}")
    return data


def reader_for(fmt: str, path: str = "") -> Callable[..., MultiLabelData]:
    """The reader function of ``fmt`` (imports lazily registered ``"module:function"`` entries)."""
    reader = READERS.get(fmt)
    if reader is None:
        raise DataError(
            f"unknown data format {fmt!r} for {path}; known formats: {_known_formats()}"
        )
    if isinstance(reader, str):
        module, _, name = reader.partition(":")
        reader = getattr(importlib.import_module(module), name)
    return reader


def _known_formats() -> str:
    return ", ".join(sorted(READERS))


def parse_options(text):
    """ "key=value,key=value" -> dict; values become int, float or bool when they read as one.

    A comma starts a new option only before `name=`, so a value may itself be a comma list:
    "task_columns=NR-AR,SR-p53,featurizer=morgan".
    """
    options = {}
    parts = re.split(r",(?=\s*[A-Za-z_]\w*=)", text)
    for item in filter(None, (part.strip() for part in parts)):
        key, sep, value = item.partition("=")
        value = value.strip()
        if not sep or not key.strip():
            raise ValueError(f"reader option {item!r} must look like key=value")
        for convert in (int, float):
            try:
                value = convert(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        options[key.strip()] = value
    return options


def load_spec(spec, options="", on_bad_input="error", verify_images=False) -> MultiLabelData:
    """Loads the dataset of a ``"FMT:PATH"`` spec: parse it, read it, optionally check its images.

    Args:
        spec: ``"FMT:PATH"`` (see `parse_data_spec`).
        options: Reader options, as ``"key=value,..."`` text (see `parse_options`) or a dict.
        on_bad_input: ``"error"`` or ``"skip"``, for the reader and the image check alike.
        verify_images: Decode every image once (`verify_images`), so a corrupt one is named now.

    Raises:
        DataError: On a bad spec or bad input data; ValueError on malformed option text.
    """
    fmt, path = parse_data_spec(spec)
    if isinstance(options, str):
        options = parse_options(options)
    loaded = load(fmt, path, on_bad_input=on_bad_input, **options)
    return _verify_images(loaded, on_bad_input) if verify_images else loaded


def check_same_inputs(train, test):
    """Raises DataError (naming both sources) unless train and test have the same kind of inputs
    and, for feature data, the same number of features."""
    width = lambda d: None if d.features is None else d.features.shape[1]
    if (train.features is None) != (test.features is None):
        kinds = ["images" if d.features is None else "features" for d in (train, test)]
        raise DataError(
            f"train {train.source} has {kinds[0]} but test {test.source} has {kinds[1]}"
        )
    if width(train) != width(test):
        raise DataError(
            f"train {train.source} has {width(train)} features but test {test.source} has "
            f"{width(test)}: they must agree (e.g. a label missing from one label file is read "
            "as a feature)"
        )


def align_classes(test, label_names, spec):
    """`test` restricted to and ordered by `label_names` (e.g. a train split chose fewer classes).

    Raises:
      DataError: if a training class is not among the test set's classes.
    """
    if test.label_names == tuple(label_names):
        return test
    column = {name: k for k, name in enumerate(test.label_names)}
    missing = [name for name in label_names if name not in column]
    if missing:
        raise DataError(
            f"{spec}: {len(missing)} training classes are not classes of the test set "
            f"(e.g. {missing[:3]}); train and test have different classes "
            f"({len(label_names)} vs {test.num_classes})"
        )
    return test.take_classes([column[name] for name in label_names])
