"""CPU training speed: kpartial's training run vs a plain PyTorch loop, on one job.

The job (from the project's first measurement): a 512-unit MLP on 21.5k x 500 features, 22 labels,
10 epochs, batch 256, AdamW(1e-3), masked BCE with 10% of labels known. kpartial is timed through
`kpartial.training.run` (tf.data pipeline, PartialLabelModel, callbacks: what `tools/train.py`
runs), reading the fit time it reports; PyTorch is a hand-written loop over in-memory tensors.
Both are timed cold (tracing/compilation included), median of --repeats.

  python benchmarks/cpu_speed.py --out=benchmarks/results/cpu_speed.md
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results/cpu_speed.md", "Markdown table to write.")
flags.DEFINE_integer("repeats", 3, "Timed repetitions per variant (the median is reported).")

N, D, C, EPOCHS, BATCH = 21_500, 500, 22, 10, 256


def make_data(path):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = np.where(rng.random((N, C)) < 0.1, 1, -1).astype(np.int8)
    np.savez(path, x=x, y=y)
    return x, y


def time_kpartial(npz, **overrides):
    from kpartial import training
    from kpartial.config import Config

    config = Config.from_flat(
        train_data=f"npz:{npz}",
        test_data=f"npz:{npz}",
        method="ignore",
        known_fraction=0.1,
        epochs=EPOCHS,
        batch_size=BATCH,
        dropout=0.0,
        eval_every=EPOCHS,
    )

    return training.run(config.replace(**overrides), log=lambda line: None)["train_seconds"]


def time_torch(x, y):
    import numpy as np
    import torch

    from kpartial import simulate

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(D, 512), torch.nn.ReLU(), torch.nn.Linear(512, C))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    known = simulate.keep_fraction(y, 0.1, seed=1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(known.astype(np.float32))
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        order = torch.randperm(N, generator=generator)
        for s in range(N // BATCH):
            idx = order[s * BATCH : (s + 1) * BATCH]
            logits, labels = net(xt[idx]), yt[idx]
            mask = (labels != 0).float()
            loss = (
                torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, (labels > 0).float(), reduction="none"
                )
                * mask
            ).sum() / mask.sum().clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def main(argv):
    del argv
    import statistics

    import tensorflow as tf
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "job.npz")
        x, y = make_data(npz)
        variants = {
            "kpartial default (steps_per_execution=16, jit_compile=auto = off on CPU)": (
                lambda: time_kpartial(npz)
            ),
            "kpartial, steps_per_execution=1": lambda: time_kpartial(npz, steps_per_execution=1),
            "kpartial, jit_compile=true": lambda: time_kpartial(npz, jit_compile="true"),
            "kpartial, method=kpartial (its loss + pseudo labels from epoch 5)": (
                lambda: time_kpartial(npz, method="kpartial", pseudo_start_epoch=5)
            ),
            "PyTorch loop (same model, masked BCE)": lambda: time_torch(x, y),
        }
        runs = {name: [] for name in variants}
        for _ in range(FLAGS.repeats):  # interleaved, so a slower moment of the machine is shared
            for name, fn in variants.items():
                runs[name].append(fn())
                print(f"{name}: {runs[name][-1]:.2f} s", flush=True)
        seconds = {name: statistics.median(times) for name, times in runs.items()}
    torch_seconds = seconds["PyTorch loop (same model, masked BCE)"]
    lines = [
        (
            f"{os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, PyTorch {torch.__version__} "
            f"({torch.get_num_threads()} threads); {N} x {D} features, {C} labels, MLP 512, batch "
            f"{BATCH}, {EPOCHS} epochs, cold start; median of {FLAGS.repeats}."
        ),
        "",
        "| variant | seconds | ratio to PyTorch |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {s:.2f} | {s / torch_seconds:.2f} |" for name, s in seconds.items()]
    tables.write_table(FLAGS.out, lines)


if __name__ == "__main__":
    app.run(main)
