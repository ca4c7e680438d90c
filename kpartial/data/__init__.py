"""Multi-label datasets in memory: reading them by format name, cleaning and splitting them.

Every reader returns a :class:`MultiLabelData` whose labels are int8 with ``+1`` (positive),
``-1`` (negative) and ``0`` (unknown)::

    data = load_spec("mulan:/data/yeast/yeast-train.arff")

Modules: `container` (the dataset and the bad-input policy), `registry` (format names -> readers,
loading), `cleaning` (unlabelled rows/classes, image checks, splits), `files` and `arff` (file
parsers the readers share), `readers` (one module per format).
"""

from kpartial.data.cleaning import drop_unlabelled, split, verify_images
from kpartial.data.container import (
    NEGATIVE,
    ON_BAD_INPUT,
    POSITIVE,
    UNKNOWN,
    BadInput,
    DataError,
    MultiLabelData,
)
from kpartial.data.files import read_csv_table, read_npz_arrays
from kpartial.data.registry import (
    READERS,
    align_classes,
    check_same_inputs,
    load,
    load_spec,
    parse_data_spec,
    parse_options,
    reader_for,
)

__all__ = [
    "NEGATIVE",
    "ON_BAD_INPUT",
    "POSITIVE",
    "READERS",
    "UNKNOWN",
    "BadInput",
    "DataError",
    "MultiLabelData",
    "align_classes",
    "check_same_inputs",
    "drop_unlabelled",
    "load",
    "load_spec",
    "parse_data_spec",
    "parse_options",
    "read_csv_table",
    "read_npz_arrays",
    "reader_for",
    "split",
    "verify_images",
]
