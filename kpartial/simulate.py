"""Seeded partial-label simulation: hide labels of a fully annotated training set."""

import numpy as np


def keep_fraction(labels, known_fraction, seed):
    """Keeps each annotated entry independently with probability `known_fraction`.

    Entries that are not kept become 0 (unknown). Entries that were already unknown stay unknown.

    Args:
      labels: int array [N, C] in {+1, -1, 0}.
      known_fraction: probability in (0, 1] of keeping an annotated entry.
      seed: integer seed; the same seed and shape always hide the same entries.

    Returns:
      int8 array [N, C] with the hidden entries set to 0.
    """
    if not 0.0 < known_fraction <= 1.0:
        raise ValueError(f"known_fraction must be in (0, 1], got {known_fraction}")
    labels = np.asarray(labels, dtype=np.int8)
    if known_fraction == 1.0:
        return labels.copy()
    keep = np.random.default_rng(seed).random(labels.shape) < known_fraction
    return np.where(keep, labels, 0).astype(np.int8)
