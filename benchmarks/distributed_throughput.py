"""Training throughput (examples/s) of one worker against two, through tools/train.py.

Rows, each run in turn (never two at once, except the two workers of the two-worker row):
- 1 worker, the default strategy, `--steps_per_execution=16` (the default);
- 1 worker, `--steps_per_execution=1` (what every multi-replica run uses: keras-team/keras#19246);
- 2 workers, `--strategy=multi_worker` on 127.0.0.1, global batch = the same `--batch_size`.
Examples/s = (steps x global batch) / epoch_seconds of the epochs after the first (which compiles),
median over them; the epoch time includes the pseudo-label refreshes and pruning of its start.
Both workers share this machine's cores, so a speed-up is not expected here: the point is that the
cluster path runs, and what it costs. Each run also reports its test mAP.

  python benchmarks/distributed_throughput.py --out=benchmarks/results/distributed_throughput.md
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tables
from absl import app, flags

from tests.local_cluster import run_local_cluster

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results/distributed_throughput.md", "Markdown table.")
flags.DEFINE_string("dataset", "bibtex", "Mulan set under ../shared/data/mulan.")
flags.DEFINE_integer("epochs", 10, "Epochs per run.")
flags.DEFINE_integer("rounds", 3, "Rounds over the rows (interleaved); medians are reported.")
flags.DEFINE_integer("batch_size", 256, "Global batch.")
flags.DEFINE_integer("seed", 1, "Seed of every run.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")


def _flags(workdir):
    mulan = os.path.join(ROOT, "..", "shared", "data", "mulan", FLAGS.dataset)
    return [
        f"--train_data=mulan:{mulan}/{FLAGS.dataset}-train.arff",
        f"--test_data=mulan:{mulan}/{FLAGS.dataset}-test.arff",
        "--method=kpartial",
        "--known_fraction=0.3",
        f"--epochs={FLAGS.epochs}",
        f"--batch_size={FLAGS.batch_size}",
        f"--seed={FLAGS.seed}",
        "--pseudo_start_epoch=2",
        "--pseudo_every=2",
        "--prune_schedule=3:0.5",
        "--verbose=0",
        f"--workdir={workdir}",
    ]


def _throughput(workdir, wall):
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(workdir, "config.json")) as f:
        steps = _steps(json.load(f))
    seconds = [record["epoch_seconds"] for record in metrics["history"][1:]]
    return {
        "examples_per_second": steps * FLAGS.batch_size / statistics.median(seconds),
        "epoch_seconds": statistics.median(seconds),
        "wall_seconds": wall,
        "map": metrics["map"],
    }


def _steps(config):
    from kpartial import data

    train = data.load_spec(config["train_data"])
    return train.num_examples // FLAGS.batch_size


def _run(name, workdir, env):
    started = time.perf_counter()
    if name.startswith("2 workers"):
        command = [sys.executable, TRAIN, *_flags(workdir), "--strategy=multi_worker"]
        for status, output in run_local_cluster(command, 2, timeout=3600, env=env):
            if status != 0:
                raise RuntimeError(output[-3000:])
    else:
        command = [sys.executable, TRAIN, *_flags(workdir), *ROWS[name]]
        subprocess.run(command, env=env, check=True, capture_output=True)
    return _throughput(workdir, time.perf_counter() - started)


ROWS = {
    "1 worker, steps_per_execution=16": [],
    "1 worker, steps_per_execution=1": ["--steps_per_execution=1"],
    "2 workers (multi_worker, 127.0.0.1)": None,
}


def main(argv):
    del argv
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    measured = {name: [] for name in ROWS}
    with tempfile.TemporaryDirectory() as root:
        for round_index in range(FLAGS.rounds):
            for name in ROWS:
                workdir = os.path.join(root, f"{round_index}-{len(measured[name])}-{hash(name)}")
                measured[name].append(_run(name, workdir, env))
                print(round_index, name, measured[name][-1], flush=True)
    rows = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for name, runs in measured.items()
    }
    reference = rows["1 worker, steps_per_execution=16"]["examples_per_second"]
    lines = [
        f"# Throughput: 1 vs 2 workers ({FLAGS.dataset}, global batch {FLAGS.batch_size})",
        "",
        (
            f"`python benchmarks/distributed_throughput.py`: kpartial with pseudo labels and "
            f"pruning, {FLAGS.epochs} epochs, known fraction 0.3, one run at a time on this machine "
            f"({os.cpu_count()} cores, no GPU), rows interleaved over {FLAGS.rounds} rounds, "
            "medians; examples/s over the epochs after the first."
        ),
        "",
        "| run | examples/s | x the default | epoch s | wall s | test mAP |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['examples_per_second']:.0f} | "
            f"{row['examples_per_second'] / reference:.2f} | {row['epoch_seconds']:.2f} | "
            f"{row['wall_seconds']:.1f} | {row['map'] * 100:.2f} |"
        )
    tables.write_table(FLAGS.out, lines)
    with open(os.path.splitext(FLAGS.out)[0] + ".json", "w") as f:
        json.dump({"median": rows, "runs": measured}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
