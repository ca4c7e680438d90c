"""Steps between reading and training: drop unlabelled rows and classes, check images, split."""

from __future__ import annotations

import dataclasses

import numpy as np

from kpartial.data.container import BadInput, DataError, MultiLabelData
from kpartial.sparse_labels import SparseLabels


def drop_unlabelled(data: MultiLabelData, bad: BadInput) -> MultiLabelData:
    """Reports rows and classes without any known label to `bad`, and drops them when skipping."""
    labels = data.labels
    if isinstance(labels, SparseLabels):
        row_known = labels.row_lengths() > 0
        class_known = (labels.positives_per_class() + labels.negatives_per_class()) > 0
    else:
        row_known = (labels != 0).any(axis=1)
        class_known = (labels != 0).any(axis=0)
    if not class_known.all():
        empty = np.flatnonzero(~class_known)
        bad.report(
            "class without any known label (empty class)",
            f"{data.source}: class {data.label_names[empty[0]]!r}",
            count=empty.size,
        )
        data = data.take_classes(np.flatnonzero(class_known))
        return drop_unlabelled(data, bad)  # dropping classes can leave rows without labels
    if not row_known.all():
        empty = np.flatnonzero(~row_known)
        bad.report(
            "row without any known label",
            f"{data.source}: row {empty[0]} (0-based example)",
            count=empty.size,
        )
        data = data.take(np.flatnonzero(row_known))
    return data.with_skipped(bad.counts) if bad.counts else data


def verify_images(data: MultiLabelData, on_bad_input: str = "error", threads: int = 8):
    """Decodes every image of `data` once (Pillow), so a corrupt file is named before training.

    TensorFlow's decoder fails mid-epoch without the file's name; this check reports a missing,
    empty, truncated or non-image file as bad input (error naming the file, or dropped and counted
    under "skip"). Feature data and TFRecord data are returned unchanged.
    """
    if data.image_paths is None:
        return data
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def problem(path):
        try:
            with Image.open(path) as image:
                image.load()  # full decode: truncated files fail here
            return None
        except FileNotFoundError:
            return "missing image file"
        except Exception as e:  # Pillow raises many types for damaged files  # noqa: BLE001
            return f"corrupt image ({type(e).__name__}: {e})"

    with ThreadPoolExecutor(threads) as pool:
        problems = list(pool.map(problem, data.image_paths))
    bad_rows = [r for r, p in enumerate(problems) if p]
    if not bad_rows:
        return data
    bad = BadInput(on_bad_input)
    for row in bad_rows:
        reason = problems[row].split(" (")[0]
        bad.report(
            reason, f"{data.image_paths[row]} ({data.source}, example {row}): {problems[row]}"
        )
    keep = np.setdiff1d(np.arange(data.num_examples), bad_rows)
    return data.take(keep).with_skipped(bad.counts)


def split(data: MultiLabelData, test_fraction: float, seed: int):
    """(train, test): a seeded random split of the examples, test getting ``test_fraction``."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(data.num_examples)
    num_test = round(test_fraction * data.num_examples)
    if num_test == 0 or num_test == data.num_examples:
        raise DataError(
            f"{data.source}: test_fraction {test_fraction} of {data.num_examples} examples "
            "leaves an empty split"
        )
    tag = f"split seed {seed}, test fraction {test_fraction}"
    train = data.take(np.sort(order[num_test:]), f"{data.source} ({tag}: train)")
    # Records skipped while reading the one file are counted once, with the training part.
    test = dataclasses.replace(
        data.take(np.sort(order[:num_test]), f"{data.source} ({tag}: test)"), skipped={}
    )
    return train, test
