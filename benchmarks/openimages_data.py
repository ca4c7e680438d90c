"""Generated Open Images-format human-verified labels, shared by the scale benchmarks."""

import os

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
