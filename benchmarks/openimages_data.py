"""Generated Open Images-format verified labels, shared by the scale benchmarks.

`generate` writes the published CSV format with labels drawn at random (a reader's load).
`generate_verified` draws images of a `LatentTruth` and verifies the candidates of a simulated
detector, so unknown entries hold the positives the detector missed and a run can be measured on
the verified test entries (as Open Images is) and on the full truth.
"""

import os
import statistics

import numpy as np


def generate(folder, num_images, num_classes, labels_per_image, seed=0, every_class=False):
    """Writes oidv7-class-descriptions.csv, oidv7-classes-trainable.txt and the train labels.

    With `every_class`, class k also gets a verified label on image k mod N, so that no class is
    empty even in a small split (the readers refuse an empty class).
    """
    import pandas as pd

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    mids = np.array([f"/m/{k:07x}" for k in range(num_classes)])
    pd.DataFrame(
        {"LabelName": mids, "DisplayName": [f"class {k}" for k in range(num_classes)]}
    ).to_csv(os.path.join(folder, "oidv7-class-descriptions.csv"), index=False)
    with open(os.path.join(folder, "oidv7-classes-trainable.txt"), "w") as f:
        f.write("".join(m + "\n" for m in mids))
    keys = np.unique(rng.integers(0, 2**63 - 1, size=num_images, dtype=np.int64)).astype(np.uint64)
    num_images = keys.size  # collisions are vanishingly rare; drop them if any
    per_image = np.maximum(1, rng.poisson(labels_per_image, num_images))
    # Zipf-like class frequencies; unique classes within an image.
    weights = 1.0 / np.arange(1, num_classes + 1) ** 0.8
    weights /= weights.sum()
    path = os.path.join(folder, "oidv7-train-annotations-human-imagelabels.csv")
    hex_digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    with open(path, "w") as f:
        f.write("ImageID,Source,LabelName,Confidence\n")
        for start in range(0, num_images, 200_000):
            stop = min(start + 200_000, num_images)
            counts = per_image[start:stop]
            rows = np.repeat(np.arange(start, stop), counts)
            classes = rng.choice(num_classes, size=rows.size, p=weights)
            if every_class and start == 0:
                rows = np.concatenate([rows, np.arange(num_classes) % stop])
                classes = np.concatenate([classes, np.arange(num_classes)])
            pairs = np.unique(rows.astype(np.int64) * num_classes + classes)
            rows, classes = pairs // num_classes, pairs % num_classes
            nibbles = (keys[rows][:, None] >> np.arange(60, -4, -4, dtype=np.uint64)) & np.uint64(
                15
            )
            ids = hex_digits[nibbles].view("S16").ravel().astype(str)
            confidence = (rng.random(rows.size) < 0.55).astype(int)
            pd.DataFrame(
                {
                    "ImageID": ids,
                    "Source": "verification",
                    "LabelName": mids[classes],
                    "Confidence": confidence,
                }
            ).to_csv(f, header=False, index=False)
    return path


# The latent truth behind `generate_verified`: LATENT_DIM shared factors make classes correlated;
# class frequencies follow a Zipf law from TOP_FREQUENCY down to MIN_FREQUENCY (about 2.8 true
# positives per image at 9.6k classes).
LATENT_DIM = 16
TOP_FREQUENCY = 0.1
MIN_FREQUENCY = 1e-4
ZIPF_EXPONENT = 0.8
ROWS_PER_CHUNK = 2048


class LatentTruth:
    """A latent truth for images: features that carry it and every class's true value.

    Image n has latent factors z_n ~ N(0, I_16). Class c is present when

        w_c . z_n + e_nc > b_c,   e_nc ~ N(0, 1),   w_c ~ N(0, I_16 / 16) * 2,

    with b_c set so that the class's frequency is f_c = max(0.1 / rank_c ** 0.8, 1e-4) (Zipf):
    classes whose w_c point the same way are correlated. The features are x_n = z_n A + noise
    (`features` dimensions), so a network can learn the truth from them.
    """

    def __init__(self, num_classes, features=32, seed=1234):
        rng = np.random.default_rng(seed)
        self.weights = rng.normal(size=(num_classes, LATENT_DIM)) * 2.0 / np.sqrt(LATENT_DIM)
        self.frequencies = np.maximum(
            TOP_FREQUENCY / np.arange(1, num_classes + 1) ** ZIPF_EXPONENT, MIN_FREQUENCY
        )
        scale = np.sqrt((self.weights**2).sum(1) + 1.0)
        normal = statistics.NormalDist()
        self.bias = scale * np.array([normal.inv_cdf(1 - f) for f in self.frequencies])
        self.mixing = rng.normal(size=(LATENT_DIM, features)) / np.sqrt(LATENT_DIM)

    def sample(self, num_images, rng):
        """(features float32 [N, D], z [N, 16]) of `num_images` new images."""
        z = rng.normal(size=(num_images, LATENT_DIM))
        x = z @ self.mixing + 0.3 * rng.normal(size=(num_images, self.mixing.shape[1]))
        return x.astype(np.float32), z

    def truth(self, z, rng):
        """bool [N, C]: the true labels of images with latent factors `z`."""
        scores = z @ self.weights.T + rng.standard_normal((len(z), len(self.bias)))
        return scores > self.bias


def generate_verified(num_images, truth, candidates=8.0, detector_auc=0.9, seed=0):
    """Images of a `LatentTruth` with Open Images-style verified labels.

    A simulated detector scores every class of every image (`kpartial.simulate.
    verified_candidates`'s detector: within a class its scores separate the true positives from
    the negatives with ROC AUC about `detector_auc`, and frequent classes are proposed more);
    each image verifies its top k_i ~ Poisson(candidates) classes, at least 1, and learns their
    true value. Every other entry is unknown, including the positives the detector ranked low.

    Returns:
      (features float32 [N, D], verified `SparseLabels`, true positives `SparseLabels`).
    """
    from kpartial.simulate import AUC_RANGE, AUC_SPREAD
    from kpartial.sparse_labels import SparseLabels

    rng = np.random.default_rng(seed)
    num_classes = len(truth.bias)
    auc = np.clip(detector_auc + rng.uniform(-AUC_SPREAD, AUC_SPREAD, num_classes), *AUC_RANGE)
    normal = statistics.NormalDist()
    separation = np.sqrt(2.0) * np.array([normal.inv_cdf(a) for a in auc])
    offset = np.log(truth.frequencies / (1 - truth.frequencies))
    features, verified, positives = [], [], []
    for start in range(0, num_images, ROWS_PER_CHUNK):
        size = min(ROWS_PER_CHUNK, num_images - start)
        x, z = truth.sample(size, rng)
        present = truth.truth(z, rng)
        scores = offset + separation * present + rng.standard_normal(present.shape)
        k = np.clip(rng.poisson(candidates, size), 1, num_classes)
        most = int(k.max())
        top = np.argpartition(-scores, most - 1, axis=1)[:, :most]  # the `most` best, unordered
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        top = np.take_along_axis(top, order, 1)
        chosen = np.zeros_like(present)
        np.put_along_axis(chosen, top, np.arange(most) < k[:, None], axis=1)
        values = np.where(present, 1, -1).astype(np.int8)
        features.append(x)
        verified.append(SparseLabels.from_dense(np.where(chosen, values, 0).astype(np.int8)))
        positives.append(SparseLabels.from_dense(present.astype(np.int8)))
    verified, positives = _stack(verified), _stack(positives)
    return np.concatenate(features), _every_class_verified(verified, positives, rng), positives


def _every_class_verified(verified, positives, rng):
    """A class the detector never proposed gets one verified entry on a random image (the
    readers refuse a class without any label)."""
    from kpartial.sparse_labels import SparseLabels

    num_rows, num_classes = verified.shape
    empty = np.flatnonzero(np.bincount(verified.classes, minlength=num_classes) == 0)
    if empty.size == 0:
        return verified
    rows = rng.integers(0, num_rows, empty.size)
    present = positives.take_rows(rows).to_dense()[np.arange(empty.size), empty] > 0
    keys = np.concatenate(
        [verified.rows() * num_classes + verified.classes, rows * num_classes + empty]
    )
    values = np.concatenate([verified.values, np.where(present, 1, -1).astype(np.int8)])
    keys, first = np.unique(keys, return_index=True)
    return SparseLabels.from_entries(
        keys // num_classes, keys % num_classes, values[first], num_rows, num_classes
    )


def _stack(parts):
    from kpartial.sparse_labels import SparseLabels

    offsets = np.cumsum([0] + [p.num_known for p in parts[:-1]])
    indptr = np.concatenate(
        [parts[0].indptr[:1]] + [p.indptr[1:] + o for p, o in zip(parts, offsets)]
    )
    return SparseLabels(
        indptr,
        np.concatenate([p.classes for p in parts]),
        np.concatenate([p.values for p in parts]),
        parts[0].num_classes,
    )


def full_truth(positives, rows):
    """Dense int8 [len(rows), C] truth (+1 present, -1 absent) of some images."""
    dense = positives.take_rows(rows).to_dense()
    return np.where(dense > 0, 1, -1).astype(np.int8)
