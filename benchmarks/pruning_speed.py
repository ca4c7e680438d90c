"""Train-step time of the output layer + loss with a share of the classes pruned, vs unpruned.

The network is the head alone (512 input features -> C logits, `kpartial.models`' `logits` layer),
so the step is what pruning can shrink: the head's matmuls, the loss, and AdamW on the head.
Batch 256, `kpartial` loss, XLA off (the CPU default); each round times every pruned share in
turn, and the ratio to unpruned is the median of the per-round ratios.

  python benchmarks/pruning_speed.py --out=benchmarks/results/pruning_speed.md
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results/pruning_speed.md", "Markdown table to write.")
flags.DEFINE_integer("steps", 10, "Timed steps per share and size.")
flags.DEFINE_integer("repeats", 3, "Rounds over the shares; medians are reported.")
flags.DEFINE_list("classes", ["10000", "20000"], "Label-space sizes.")
flags.DEFINE_list("pruned", ["0", "0.25", "0.5", "0.9"], "Pruned shares (0 = the reference).")
BATCH, HIDDEN = 256, 512


def _model(num_classes, rng):
    import keras

    from kpartial import class_stats, losses
    from kpartial.partial_model import PartialLabelModel

    inputs = keras.Input((HIDDEN,), name="x")
    network = keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(inputs))
    labels = rng.choice(np.array([-1, 0, 0, 0, 1], np.int8), size=(BATCH, num_classes))
    stats = class_stats.ClassStatistics.from_labels(labels, [str(c) for c in range(num_classes)])
    model = PartialLabelModel(network, BATCH, num_classes, losses.get("kpartial", stats))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, 1e-4), jit_compile=False)
    return model, labels


def step_seconds(model, batch, active, steps):
    import tensorflow as tf

    model.set_active_classes(active > 0)
    train_function = model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    train_function(iterator)  # trace
    start = time.perf_counter()
    for _ in range(steps):
        logs = train_function(iterator)
    float(logs["loss"])
    return (time.perf_counter() - start) / steps


def main(argv):
    del argv
    import tensorflow as tf

    sizes, shares = [int(c) for c in FLAGS.classes], [float(s) for s in FLAGS.pruned]
    rows = {}  # share -> size -> (median seconds, median ratio, min ratio, max ratio)
    for num_classes in sizes:
        rng = np.random.default_rng(0)
        model, labels = _model(num_classes, rng)
        features = rng.normal(size=(BATCH, HIDDEN)).astype(np.float32)
        batch = ({"x": features, "id": np.arange(BATCH, dtype=np.int64)}, labels)
        order = rng.permutation(num_classes)
        seconds = {share: [] for share in shares}
        for _ in range(FLAGS.repeats):
            for share in shares:
                active = np.ones(num_classes, np.float32)
                active[order[: round(share * num_classes)]] = 0.0
                seconds[share].append(step_seconds(model, batch, active, FLAGS.steps))
        for share, times in seconds.items():
            ratios = [t / base for t, base in zip(times, seconds[shares[0]])]
            rows.setdefault(share, {})[num_classes] = (
                statistics.median(times),
                statistics.median(ratios),
                min(ratios),
                max(ratios),
            )
            print(
                f"C={num_classes} pruned {share:.0%}: {1e3 * statistics.median(times):.1f} ms, "
                + " ".join(f"{r:.2f}" for r in ratios),
                flush=True,
            )
    header = " | ".join(f"C={c}: ms (x unpruned, range)" for c in sizes)
    lines = [
        (
            f"Head ({HIDDEN} -> C) + kpartial loss + AdamW train step, batch {BATCH}, CPU "
            f"({os.cpu_count()} cores), TensorFlow {tf.__version__}, XLA off: median of "
            f"{FLAGS.repeats} rounds of {FLAGS.steps} steps."
        ),
        "",
        f"| pruned | {header} |",
        "|---|" + "---|" * len(sizes),
    ]
    for share, cells in rows.items():
        lines.append(
            f"| {share:.0%} | "
            + " | ".join(
                f"{1e3 * cells[c][0]:.1f} ({cells[c][1]:.2f}x, {cells[c][2]:.2f}-{cells[c][3]:.2f})"
                for c in sizes
            )
            + " |"
        )
    tables.write_table(FLAGS.out, lines)


if __name__ == "__main__":
    app.run(main)
