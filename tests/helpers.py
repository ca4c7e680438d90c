"""Constants and plain helpers that several test modules share (fixtures are in conftest.py)."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from kpartial import data
from kpartial.data.readers import synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Real datasets beside the checkout, read-only; tests that need them skip when they are absent.
SHARED_DATA = ROOT.parent / "shared" / "data"


# ----------------------------------------------------------------------------
# The tiny npz data of end-to-end runs: synthetic, long-tailed, fully annotated.

NUM_EXAMPLES, NUM_CLASSES, NUM_FEATURES = 600, 8, 16


def write_tiny_npz(path, split):
    """Writes the "train" or "test" split to `path`; returns its data spec "npz:PATH"."""
    d = synthetic.make_imbalanced_features(
        num_examples=NUM_EXAMPLES, num_classes=NUM_CLASSES, num_features=NUM_FEATURES, split=split
    )
    np.savez(path, x=d.features, y=d.labels, label_names=np.array(d.label_names))
    return f"npz:{path}"


# ----------------------------------------------------------------------------
# Writing small input files and matching the errors that name them.

# A valid 1x1 JPEG, made once with tf.io.encode_jpeg(tf.zeros([1, 1, 3], tf.uint8), quality=50);
# stored as bytes so these tests need not import TensorFlow.
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010101012c012c0000ffdb004300100b0c0e0c0a100e0d0e1211101318281a18161618"
    "3123251d283a333d3c3933383740485c4e404457453738506d51575f626768673e4d71797064785c656763ffdb00"
    "43011112121815182f1a1a2f63423842636363636363636363636363636363636363636363636363636363636363"
    "6363636363636363636363636363636363636363ffc00011080001000103012200021101031101ffc4001f000001"
    "0501010101010100000000000000000102030405060708090a0bffc400b510000201030302040305050404000001"
    "7d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25"
    "262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a8384"
    "85868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5"
    "d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffc4001f0100030101010101010101010000000000"
    "000102030405060708090a0bffc400b5110002010204040304070504040001027700010203110405213106124151"
    "0761711322328108144291a1b1c109233352f0156272d10a162434e125f11718191a262728292a35363738393a43"
    "4445464748494a535455565758595a636465666768696a737475767778797a82838485868788898a929394959697"
    "98999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8"
    "e9eaf2f3f4f5f6f7f8f9faffda000c03010002110311003f00f3fa28a2803fffd9"
)


def write(path, content):
    """Writes text or bytes to `path`, creating its folder; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def append(path, text):
    with open(path, "a") as f:
        f.write(text)


def esc(path):
    """`path` as a regular expression that matches it literally."""
    return re.escape(str(path))


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def raises_at(where, match, fn, *args, **kwargs):
    """Asserts fn raises a DataError whose message starts with `where` and contains `match`."""
    with pytest.raises(data.DataError, match=match) as info:
        fn(*args, **kwargs)
    assert str(info.value).startswith(f"{where}:"), str(info.value)


# A MEKA ARFF (labels first, one sparse row) and a MoleculeNet CSV (blank = unknown).
MEKA_FIRST = """% labels first
@relation 'Toy: -C 2'
@attribute l0 {0,1}
@attribute l1 numeric
@attribute f0 numeric
@attribute f1 numeric
@data
1,0,0.5,1.5
?,1,2,3
{0 1,3 7}
"""

MOLECULES = """smiles,A,B,mol_id
CCO,1,,m1
c1ccccc1,0,1.0,m2
CC(=O)O,,0,m3
"""


# ----------------------------------------------------------------------------
# Toy labels: the same 5 x 4 labels dense and in CSR form (sparse labels, simulations).

# Rows: several entries, one positive only, empty, negatives only, mixed.
DENSE = np.array(
    [
        [1, -1, 0, 1],
        [0, 0, 1, 0],
        [0, 0, 0, 0],
        [-1, 0, -1, 0],
        [0, 1, -1, -1],
    ],
    np.int8,
)
# The same labels written out by hand in CSR form.
INDPTR = [0, 3, 4, 4, 6, 9]
CLASSES = [0, 1, 3, 2, 0, 2, 1, 2, 3]
VALUES = [1, -1, 1, 1, -1, -1, 1, -1, -1]


# ----------------------------------------------------------------------------
# A toy dataset of 7 examples with 3 features and 3 classes (TFRecords, pipeline, data).

LABELS = np.array(
    [
        [1, -1, 0],
        [0, 0, 1],
        [-1, -1, -1],
        [0, 1, 0],
        [1, 0, -1],
        [-1, 1, 1],
        [0, -1, 0],
    ],
    np.int8,
)
NAMES = ("cat", "dog", "bird")


def feature_data(labels=LABELS):
    n = labels.shape[0]
    features = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 4
    return data.MultiLabelData(labels, NAMES, features=features, source="npz:/x/feat.npz")


def run_tool_in_subprocess(script, *args, timeout=300, tf_log_level="3"):
    """Runs tools/`script`; `tf_log_level` None leaves TF_CPP_MIN_LOG_LEVEL to tools/cli.py."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if tf_log_level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = tf_log_level
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / script), *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------
# The prior pseudo-label rule from its histograms alone (kpartial.pseudo_label_rules).


def prior_matched_thresholds(counts, priors, min_positive_probability, negative_coverage):
    """The prior rule's logit (t+, t-) [C] from the histograms alone: a reference for tests.

    A refresh takes t+ exactly from the positive candidates (`PositiveCandidates`); here it is the
    lowest bin edge at or above which at most floor(pi_c U_c) unknown entries lie, never below
    the floor (so it is at most one bin above the exact t+). t- is the package's
    (`prior_matched_negative_thresholds`), then at most t+. A class without unknown entries gets
    t+ = inf and t- = -inf. (Imports TensorFlow only when called.)
    """
    from kpartial import pseudo_label_rules

    counts = np.asarray(counts, np.int64)
    total = counts.sum(axis=1)
    # above[c, k]: entries in bins k.. (at or above edge k); above[:, NUM_BINS] = 0.
    above = total[:, None] - np.concatenate(
        [np.zeros((len(total), 1), np.int64), np.cumsum(counts, axis=1)], axis=1
    )
    priors = np.asarray(priors, np.float64)
    edges = np.concatenate([pseudo_label_rules.bin_edges()[:-1], [np.inf]])  # nothing above the top
    positive_edge = np.argmax(above <= (priors * total)[:, None], axis=1)
    with np.errstate(divide="ignore"):
        floor = np.log(min_positive_probability) - np.log1p(-min_positive_probability)
    positive = np.where(total == 0, np.inf, np.maximum(edges[positive_edge], floor))
    negative = pseudo_label_rules.prior_matched_negative_thresholds(
        counts, priors, negative_coverage
    )
    return positive, np.minimum(negative, positive)
