"""Step time of every partial-label loss (value + gradient w.r.t. logits) relative to plain BCE.

Batch 256, 1k and 10k classes, 10% of entries known; each loss is a tf.function (XLA off, the CPU
default) timed over --steps calls after a warm-up. Writes a Markdown table.

  python benchmarks/loss_speed.py --out=benchmarks/results/loss_speed.md
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results/loss_speed.md", "Markdown table to write.")
flags.DEFINE_integer("steps", 50, "Timed calls per loss and size.")
flags.DEFINE_list("classes", ["1000", "10000"], "Label-space sizes.")
BATCH = 256


def step_seconds(loss, labels, logits, steps):
    import tensorflow as tf

    @tf.function
    def step(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = loss(labels, z)
        return value, tape.gradient(value, z)

    step(logits)
    start = time.perf_counter()
    for _ in range(steps):
        _value, grad = step(logits)
    grad.numpy()
    return (time.perf_counter() - start) / steps


def main(argv):
    del argv
    import keras
    import numpy as np
    import tensorflow as tf

    from kpartial import class_stats, losses, simulate

    sizes = [int(c) for c in FLAGS.classes]
    rows = {}
    for num_classes in sizes:
        rng = np.random.default_rng(0)
        full = np.where(rng.random((BATCH, num_classes)) < 0.02, 1, -1).astype(np.int8)
        labels = tf.constant(simulate.keep_fraction(full, 0.1, seed=0))
        logits = tf.constant(rng.normal(size=(BATCH, num_classes)).astype(np.float32))
        stats = class_stats.ClassStatistics.from_labels(full, [str(c) for c in range(num_classes)])
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        dense_targets = tf.cast(labels > 0, tf.float32)
        base = step_seconds(
            lambda y, z, bce=bce, t=dense_targets: bce(t, z), labels, logits, FLAGS.steps
        )
        rows.setdefault("keras BinaryCrossentropy (reference)", {})[num_classes] = (base, 1.0)
        for name in losses.LOSSES:
            seconds = step_seconds(losses.get(name, stats), labels, logits, FLAGS.steps)
            rows.setdefault(name, {})[num_classes] = (seconds, seconds / base)
            print(
                f"{name} C={num_classes}: {1e3 * seconds:.2f} ms ({seconds / base:.2f}x)",
                flush=True,
            )
    header = " | ".join(f"C={c}: ms (x BCE)" for c in sizes)
    lines = [
        (
            f"Loss value + gradient per step, batch {BATCH}, CPU ({os.cpu_count()} cores), "
            f"TensorFlow {tf.__version__}, mean of {FLAGS.steps} calls."
        ),
        "",
        f"| loss | {header} |",
        "|---|" + "---|" * len(sizes),
    ]
    for name, cells in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join(f"{1e3 * cells[c][0]:.2f} ({cells[c][1]:.2f}x)" for c in sizes)
            + " |"
        )
    tables.write_table(FLAGS.out, lines)


if __name__ == "__main__":
    app.run(main)
