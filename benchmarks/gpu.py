"""Train-step time on one GPU: the MLP and two backbones, XLA on/off, mixed precision on/off, with
half of the classes pruned or none.

Each cell builds the network (`kpartial.models`, random weights: nothing is downloaded), wraps it
in a `PartialLabelModel` with the `kpartial` loss and AdamW, compiles it, and times
`--steps` train steps on one in-memory batch after `--warmup` steps (tracing and XLA compilation
are not counted); the pruned column first sets half of the classes inactive, so the step trains
the head's active columns and [B, K] labels (`PartialLabelModel.set_active_classes`). Writes a
Markdown table. Sized to finish within 8 minutes on one GPU; CI never runs it, and nothing depends
on it. `--smoke` runs the same cells at toy sizes (any device), to check the script itself.

  python benchmarks/gpu.py --out=benchmarks/results/gpu.md
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results/gpu.md", "Markdown table to write.")
flags.DEFINE_list("networks", ["mlp", "mobilenet_v3_small", "resnet50"], "Networks to time.")
flags.DEFINE_integer("classes", 10000, "Label-space size C.")
flags.DEFINE_integer("steps", 30, "Timed train steps per cell.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing, XLA compilation).")
flags.DEFINE_bool("smoke", False, "Toy sizes: check the script on any device.")

# Network -> (batch size, input shape): the MLP on 512 features (hidden 512), backbones at 224 px.
SHAPES = {
    "mlp": (256, (512,)),
    "mobilenet_v3_small": (64, (224, 224, 3)),
    "resnet50": (64, (224, 224, 3)),
}
SMOKE_SHAPES = {
    "mlp": (16, (32,)),
    "mobilenet_v3_small": (4, (32, 32, 3)),
    "resnet50": (2, (32, 32, 3)),
}


def _network(name, shape, num_classes, policy):
    from kpartial import models

    with models.dtype_policy(policy):
        if name == "mlp":
            return models.build_mlp(shape[0], num_classes, (512,), dropout=0.0)
        return models.build_image_model(name, num_classes, shape[:2], None)


def step_ms(name, num_classes, xla, mixed, pruned, rng):
    """Milliseconds per train step of one cell."""
    import keras
    import tensorflow as tf

    from kpartial import class_stats, losses
    from kpartial.partial_model import PartialLabelModel

    batch_size, shape = (SMOKE_SHAPES if FLAGS.smoke else SHAPES)[name]
    keras.utils.clear_session()
    network = _network(name, shape, num_classes, "mixed_bfloat16" if mixed else "float32")
    labels = rng.choice(np.array([-1, 0, 0, 0, 0, 0, 0, 1], np.int8), (batch_size, num_classes))
    stats = class_stats.ClassStatistics.from_labels(labels, [str(c) for c in range(num_classes)])
    model = PartialLabelModel(network, batch_size, num_classes, losses.get("kpartial", stats))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, 1e-4), jit_compile=xla)
    x = rng.uniform(0, 255, (batch_size, *shape)).astype(np.float32)
    batch = ({"x": x, "id": np.arange(batch_size, dtype=np.int64)}, labels)
    active = np.ones(num_classes, bool)
    if pruned:
        active[rng.permutation(num_classes)[: num_classes // 2]] = False
    model.set_active_classes(active)
    train_function = model.make_train_function()
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    for _ in range(FLAGS.warmup):
        logs = train_function(iterator)
    float(logs["loss"])
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        logs = train_function(iterator)
    float(logs["loss"])  # waits for the device
    return 1e3 * (time.perf_counter() - start) / FLAGS.steps


def main(argv):
    del argv
    import tensorflow as tf

    num_classes = 100 if FLAGS.smoke else FLAGS.classes
    gpus = tf.config.list_physical_devices("GPU")
    device = (
        tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        if gpus
        else f"no GPU: CPU ({os.cpu_count()} cores)"
    )
    rng = np.random.default_rng(0)
    lines = [
        (
            f"kpartial train step (loss `kpartial`, AdamW), C = {num_classes}, {device}, "
            f"TensorFlow {tf.__version__}; ms per step over {FLAGS.steps} steps after "
            f"{FLAGS.warmup} untimed ones{' (--smoke: toy sizes)' if FLAGS.smoke else ''}."
        ),
        "",
        "| network (batch, input) | XLA | mixed precision | unpruned ms | 50% pruned ms | pruned / unpruned |",
        "|---|---|---|---|---|---|",
    ]
    started = time.perf_counter()
    for name in FLAGS.networks:
        batch_size, shape = (SMOKE_SHAPES if FLAGS.smoke else SHAPES)[name]
        for xla in (False, True):
            for mixed in (False, True):
                unpruned, pruned = (
                    step_ms(name, num_classes, xla, mixed, share, rng) for share in (False, True)
                )
                lines.append(
                    f"| {name} ({batch_size}, {'x'.join(map(str, shape))}) | "
                    f"{'on' if xla else 'off'} | {'bfloat16' if mixed else 'off'} | "
                    f"{unpruned:.2f} | {pruned:.2f} | {pruned / unpruned:.2f}x |"
                )
                print(lines[-1], f"({time.perf_counter() - started:.0f} s)", flush=True)
    lines += ["", f"Whole script: {time.perf_counter() - started:.0f} s."]
    tables.write_table(FLAGS.out, lines)


if __name__ == "__main__":
    app.run(main)
