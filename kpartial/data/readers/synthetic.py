"""The embedded demo dataset (``synthetic:train`` / ``synthetic:test``): an imbalanced multi-label
feature set, so the demo and tests need no external data."""

import numpy as np

from kpartial.data.container import DataError, MultiLabelData


def read_synthetic(path="train", **options) -> MultiLabelData:
    """The embedded demo dataset: ``synthetic:train`` or ``synthetic:test``."""
    if path not in ("train", "test"):
        raise DataError(f"synthetic:{path}: the split must be 'train' or 'test'")
    return make_imbalanced_features(split=path, **options)


def make_imbalanced_features(
    num_examples=4000, num_classes=40, num_features=64, seed=0, split="train"
):
    """Generates features from long-tailed labels: x = tanh(y @ prototypes) + noise.

    Class c is positive with probability 0.3 * (c + 1) ** -0.9 (from 30% down to about 1% for 40
    classes), independently per example. Each class owns a random prototype direction in feature
    space; the features mix the prototypes of an example's positive classes, squash them, and add
    Gaussian noise, so the classes are learnable but overlap.

    Args:
      num_examples: rows to draw.
      num_classes: classes in the long-tailed label space.
      num_features: feature dimension.
      seed: the prototypes depend only on `seed`; the rows also depend on `split`, so "train" and
        "test" share a task but not examples.
      split: "train" or "test".

    Returns:
      `MultiLabelData` with fully annotated labels in {+1, -1}.
    """
    task_rng = np.random.default_rng(seed)
    prototypes = task_rng.normal(0.0, 1.0, (num_classes, num_features)) / np.sqrt(num_features) * 6
    priors = 0.3 * np.arange(1, num_classes + 1, dtype=np.float64) ** -0.9
    split_offset = {"train": 1, "test": 2}[split]
    rng = np.random.default_rng([seed, split_offset])
    positive = rng.random((num_examples, num_classes)) < priors
    features = np.tanh(positive @ prototypes) + rng.normal(0.0, 0.6, (num_examples, num_features))
    return MultiLabelData(
        labels=np.where(positive, 1, -1).astype(np.int8),
        label_names=tuple(f"class_{c:02d}" for c in range(num_classes)),
        features=features.astype(np.float32),
        source=f"synthetic:{split}",
    )
