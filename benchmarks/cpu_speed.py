"""CPU training speed: kpartial's default step vs XLA vs a plain PyTorch loop, on one job.

The job (from the project's first measurement): a 512-unit MLP on 21.5k x 500 features, 22 labels,
10 epochs, batch 256, Adam(W). Each framework trains the same architecture on the same random data
with 10% of labels known (masked BCE), timed end to end after a one-epoch warm-up that pays for
tracing/compilation... except `xla_including_compile`, which times a cold start as a user sees it.

  python benchmarks/cpu_speed.py --out=benchmarks/results/cpu_speed.md
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results/cpu_speed.md", "Markdown table to write.")
flags.DEFINE_integer("repeats", 3, "Timed repetitions per variant (the median is reported).")

N, D, C, EPOCHS, BATCH = 21_500, 500, 22, 10, 256


def make_data():
    import numpy as np

    from kpartial import simulate

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = np.where(rng.random((N, C)) < 0.1, 1, -1).astype(np.int8)
    return x, simulate.keep_fraction(y, 0.1, seed=0)


def time_kpartial(x, y, jit_compile, include_compile=False, steps_per_execution=1):
    import keras

    from kpartial import data, losses, models, pipeline
    from kpartial.partial_model import PartialLabelModel

    keras.utils.set_random_seed(0)
    train = data.MultiLabelData(labels=y, label_names=tuple(map(str, range(C))), features=x)
    model = PartialLabelModel(
        models.build_mlp(D, C, (512,), dropout=0.0), N, C, losses.IgnoreUnknownBCE()
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    dataset = pipeline.training_dataset(train, y, BATCH, seed=0)
    if include_compile:
        start = time.perf_counter()
        model.fit(dataset, epochs=EPOCHS, verbose=0, shuffle=False)
        return time.perf_counter() - start
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    model.fit(dataset, epochs=EPOCHS, verbose=0, shuffle=False)
    return time.perf_counter() - start


def time_torch(x, y):
    import numpy as np
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(D, 512), torch.nn.ReLU(), torch.nn.Linear(512, C))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
    steps = N // BATCH

    def epoch(generator):
        order = torch.randperm(N, generator=generator)
        for s in range(steps):
            idx = order[s * BATCH : (s + 1) * BATCH]
            logits, labels = net(xt[idx]), yt[idx]
            known = (labels != 0).float()
            loss = (
                torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, (labels > 0).float(), reduction="none"
                )
                * known
            ).sum() / known.sum().clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    generator = torch.Generator().manual_seed(0)
    epoch(generator)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        epoch(generator)
    return time.perf_counter() - start


def main(argv):
    del argv
    import statistics

    import tensorflow as tf

    x, y = make_data()
    variants = {
        "kpartial default (jit_compile=auto -> off on CPU)": lambda: time_kpartial(x, y, False),
        "kpartial, steps_per_execution=8": lambda: time_kpartial(
            x, y, False, steps_per_execution=8
        ),
        "kpartial jit_compile=true (warm)": lambda: time_kpartial(x, y, True),
        "kpartial jit_compile=true, including compile": lambda: time_kpartial(x, y, True, True),
        "PyTorch loop (same model, masked BCE)": lambda: time_torch(x, y),
    }
    seconds = {}
    for name, fn in variants.items():
        seconds[name] = statistics.median(fn() for _ in range(FLAGS.repeats))
        print(f"{name}: {seconds[name]:.2f} s", flush=True)
    torch_seconds = seconds["PyTorch loop (same model, masked BCE)"]
    lines = [
        f"CPU: {os.cpu_count()} cores, TensorFlow {tf.__version__}; {N} x {D} features, {C} "
        f"labels, MLP 512, batch {BATCH}, {EPOCHS} epochs; median of {FLAGS.repeats}.",
        "",
        "| variant | seconds | ratio to PyTorch |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {s:.2f} | {s / torch_seconds:.2f} |" for name, s in seconds.items()]
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    with open(FLAGS.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
