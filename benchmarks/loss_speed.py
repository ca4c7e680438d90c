"""Step time of every partial-label loss (value + gradient w.r.t. logits) relative to plain BCE.

Batch 256, 1k and 10k classes, 10% of entries known (`--known_fraction`; Open Images has about
0.1%); each loss is a tf.function (XLA off, the CPU
default, unless --jit_compile) timed over --steps calls after a warm-up. Every one of --repeats rounds times BCE and then
each loss, so a ratio compares timings taken moments apart (on a shared machine the load drifts
between rounds); the table gives the median time and the median ratio with its range over rounds.
Writes a Markdown table.

  python benchmarks/loss_speed.py --out=benchmarks/results/loss_speed.md
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results/loss_speed.md", "Markdown table to write.")
flags.DEFINE_integer("steps", 50, "Timed calls per loss and size.")
flags.DEFINE_integer("repeats", 3, "Rounds of timing BCE and every loss; medians are reported.")
flags.DEFINE_list("losses", [], "Losses to time (default: every registered loss).")
flags.DEFINE_list("classes", ["1000", "10000"], "Label-space sizes.")
flags.DEFINE_float("known_fraction", 0.1, "Share of the entries that are annotated.")
flags.DEFINE_bool("jit_compile", False, "Compile each step with XLA (the GPU default).")
BATCH = 256


def step_seconds(loss, labels, logits, steps):
    import tensorflow as tf

    @tf.function(jit_compile=FLAGS.jit_compile)
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
    names = FLAGS.losses or list(losses.LOSSES)
    reference = "keras BinaryCrossentropy (reference)"
    rows = {}  # name -> size -> (median seconds, median ratio, min ratio, max ratio)
    for num_classes in sizes:
        rng = np.random.default_rng(0)
        full = np.where(rng.random((BATCH, num_classes)) < 0.02, 1, -1).astype(np.int8)
        partial = simulate.keep_fraction(full, FLAGS.known_fraction, seed=0)
        labels = tf.constant(partial)
        logits = tf.constant(rng.normal(size=(BATCH, num_classes)).astype(np.float32))
        # The statistics a run computes from its partial labels (so the loss has its defaults).
        stats = class_stats.ClassStatistics.from_labels(
            partial, [str(c) for c in range(num_classes)]
        )
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        dense_targets = tf.cast(labels > 0, tf.float32)
        timed = {reference: lambda y, z, bce=bce, t=dense_targets: bce(t, z)}
        timed |= {name: losses.get(name, stats) for name in names}
        seconds = {name: [] for name in timed}
        for _ in range(FLAGS.repeats):
            for name, loss in timed.items():
                seconds[name].append(step_seconds(loss, labels, logits, FLAGS.steps))
        for name, times in seconds.items():
            ratios = [t / base for t, base in zip(times, seconds[reference])]
            rows.setdefault(name, {})[num_classes] = (
                statistics.median(times),
                statistics.median(ratios),
                min(ratios),
                max(ratios),
            )
            print(
                f"{name} C={num_classes}: {1e3 * statistics.median(times):.2f} ms, x BCE "
                + " ".join(f"{r:.2f}" for r in ratios),
                flush=True,
            )
    header = " | ".join(f"C={c}: ms (x BCE, range)" for c in sizes)
    lines = [
        (
            f"Loss value + gradient per step, batch {BATCH}, CPU ({os.cpu_count()} cores), "
            f"TensorFlow {tf.__version__}, {FLAGS.known_fraction:.1%} of the entries known, XLA {'on' if FLAGS.jit_compile else 'off'}: median of "
            f"{FLAGS.repeats} rounds of {FLAGS.steps} "
            "calls; the ratio to BCE is the median of the per-round ratios, with their range."
        ),
        "",
        f"| loss | {header} |",
        "|---|" + "---|" * len(sizes),
    ]
    for name, cells in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{1e3 * cells[c][0]:.2f} ({cells[c][1]:.2f}x, {cells[c][2]:.2f}-{cells[c][3]:.2f})"
                for c in sizes
            )
            + " |"
        )
    tables.write_table(FLAGS.out, lines)


if __name__ == "__main__":
    app.run(main)
