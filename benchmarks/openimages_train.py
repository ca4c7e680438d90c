"""End to end at Open Images shape: `tools/train.py` on generated verified labels, timed and measured.

For each size it draws images of a latent truth (`openimages_data.LatentTruth`: 9.6k correlated
classes with Zipf frequencies, 32 features that carry the truth) and verifies, per image, the top
~8 classes of a simulated detector (`openimages_data.generate_verified`, as Open Images' labels
were made), for the training images and a 30k-image test split, writes both as TFRecords
(`kpartial.tfrecords`; the first `--truth_images` test images also with their full truth), and
then runs, each in its own process:

- `tools/train.py --method=ignore`
- `tools/train.py --method=kpartial` with pseudo labels refreshed before epochs 2 and 3 and half of
  the classes pruned before epoch 3 (`--pseudo_start_epoch=1 --pseudo_every=1
  --prune_schedule=2:0.5`)

both with an MLP of 64 units, batch 256, 3 epochs and the test set evaluated once, at the end.
It reports the child's peak RSS (its VmHWM, read while it runs), each epoch's time from `history.json` (`epoch_seconds`,
which includes the refresh and pruning that begin it), the refresh and pruning times on their own,
the test mAP on the verified test entries (as Open Images reports it) and on the full truth, and the
fit to 9M images.

  python benchmarks/openimages_train.py --images=100000,300000,1000000 \
      --out=benchmarks/results/openimages_train.md
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tables
from absl import app, flags
from openimages_data import LatentTruth, full_truth, generate_verified

FLAGS = flags.FLAGS
flags.DEFINE_list("images", ["100000", "300000", "1000000"], "Training images per size.")
flags.DEFINE_integer("test_images", 30000, "Test images.")
flags.DEFINE_integer("truth_images", 2000, "Test images also evaluated on their full truth.")
flags.DEFINE_integer(
    "validation_images",
    0,
    "Held-out images verified like the training ones, given as --validation_data (0: none, so "
    "the default run cannot test how labels went missing and keeps the count rule's reading).",
)
flags.DEFINE_integer("classes", 9600, "Trainable classes.")
flags.DEFINE_integer("epochs", 3, "Training epochs.")
flags.DEFINE_list(
    "methods",
    ["ignore", "kpartial"],
    "Methods to run, or variants METHOD:FLAG=VALUE;FLAG=VALUE (tools/train.py flags), e.g. "
    "kpartial:missing_labels=verified.",
)
flags.DEFINE_bool("time_passes", True, "Time kpartial's refresh and pruning passes alone.")
flags.DEFINE_string("out", "benchmarks/results/openimages_train.md", "Markdown table to write.")
flags.DEFINE_multi_string("train_flag", [], "Extra tools/train.py flag for every run (ablations).")
flags.DEFINE_string("tmp", "", "Folder for the generated data (default: a temporary folder).")
flags.DEFINE_string("measure_passes", "", "Internal: time the passes of RECORDS,WORKDIR.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_IMAGES = 9_000_000
FEATURES = 32


def make_records(folder, num_images, truth, seed, truth_images=0):
    """Images of the latent truth with verified labels -> TFRecords in `folder/records`; with
    `truth_images`, also the first ones with their full truth in `folder/truth`.

    Returns (records, known labels, the share of true positives left unknown, truth records).
    """
    from kpartial import data, tfrecords

    features, verified, positives = generate_verified(num_images, truth, seed=seed)
    names = tuple(f"class {k}" for k in range(verified.num_classes))
    out = os.path.join(folder, "records")
    tfrecords.write_tfrecords(data.MultiLabelData(verified, names, features=features), out, 8)
    missed = 1 - verified.positives_per_class().sum() / positives.positives_per_class().sum()
    truth_out = ""
    if truth_images:
        rows = np.arange(min(truth_images, num_images))
        truth_out = os.path.join(folder, "truth")
        # Every entry known; mAP counts the classes with a true positive among these images.
        truth_data = data.MultiLabelData(
            full_truth(positives, rows), names, features=features[rows]
        )
        tfrecords.write_tfrecords(truth_data, truth_out, 1)
    return out, verified.num_known, float(missed), truth_out


def full_truth_map(workdir, truth_records):
    """The mAP of a run's network on images with their full truth."""
    import keras

    from kpartial import data, evaluation, pipeline

    truth = data.load_spec(f"tfrecord:{truth_records}")
    network = keras.saving.load_model(os.path.join(workdir, "network.keras"), compile=False)
    dataset = pipeline.evaluation_dataset(truth, 1024)
    return evaluation.model_scores(network, dataset, truth.labels).mean_average_precision()


DECISION = re.compile(r"labels tested|labels: not tested|pseudo labels|pruned \d+ classes")


def train(method, train_records, test_records, workdir, validation_records=""):
    """Runs tools/train.py; (peak RSS bytes, wall seconds, metrics.json)."""
    validation = f"--validation_data=tfrecord:{validation_records}" if validation_records else ""
    name, fields = tables.method_variant(method)
    command = [
        sys.executable,
        os.path.join(ROOT, "tools", "train.py"),
        f"--train_data=tfrecord:{train_records}",
        f"--test_data=tfrecord:{test_records}",
        validation or "--validation_fraction=0",
        "--select_epoch=last",
        *(f"--{key}={value}" for key, value in {"method": name, **fields}.items()),
        "--hidden_units=64",
        "--dropout=0",
        "--batch_size=256",
        f"--epochs={FLAGS.epochs}",
        f"--eval_every={FLAGS.epochs}",
        "--pseudo_start_epoch=1",
        "--pseudo_every=1",
        "--prune_schedule=2:0.5",
        "--jit_compile=auto",
        "--verbose=0",
        f"--workdir={workdir}",
        "--overwrite",
        *FLAGS.train_flag,
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    with open(workdir + ".log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _high_water_mark(process.pid))
            time.sleep(0.1)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{method} failed (status {process.returncode}); see {log.name}")
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    # What the run decided (its test of the labels, pseudo labels, pruning), kept with the row:
    # the log goes with the data folder.
    with open(log.name) as f:
        metrics["decisions"] = [line.strip() for line in f if DECISION.search(line)]
    return peak, seconds, metrics


def _high_water_mark(pid):
    """The peak RSS in bytes of process `pid` so far (VmHWM), 0 once it has gone.

    Not `wait4`'s ru_maxrss: Linux starts a child's with the high-water mark of the parent that
    spawned it, and this parent holds the generated data.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure_passes(records, workdir):
    """In a fresh process: one inference pass over the training records with the trained network
    (the forward pass batch by batch, summed; `predict` would keep an [N, C] array),
    one pseudo-label refresh pass, one fit_well pass (seconds of each one's second run: the first
    traces); prints one JSON line."""
    import keras

    from kpartial import data, label_pruning, losses, pipeline, pseudo_labels
    from kpartial.config import PseudoLabelConfig
    from kpartial.partial_model import PartialLabelModel

    train = data.load_spec(f"tfrecord:{records}")
    network = keras.saving.load_model(os.path.join(workdir, "network.keras"), compile=False)
    model = PartialLabelModel(network, train.num_examples, train.num_classes, losses.get("ignore"))
    dataset = pipeline.evaluation_dataset(train, 1024)
    priors = (train.labels.positives_per_class() + 1) / (
        train.labels.positives_per_class() + train.labels.negatives_per_class() + 2
    )
    settings = PseudoLabelConfig(start_epoch=0, every=1)  # the prior rule, coverage 0.1
    callback = pseudo_labels.PseudoLabelCallback(
        dataset, train.labels, settings, priors, log=lambda _: None
    )
    callback.set_model(model)
    import tensorflow as tf

    total = tf.Variable(0.0, dtype=tf.float64)

    @tf.function
    def inference(dataset):  # the forward pass alone: no [N, C] output is kept
        for batch in dataset:
            total.assign_add(
                tf.cast(tf.reduce_sum(network(batch["x"], training=False)), tf.float64)
            )

    passes = {
        "inference": lambda: inference(dataset),
        "refresh": callback.refresh,
        "fit_well": lambda: label_pruning.streamed_known_label_loss(model, dataset, train.labels),
    }
    result = {}
    for name, run in passes.items():
        times = []
        for _ in range(2):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        result[name] = times[-1]
    print("PASSES " + json.dumps(result), flush=True)


def time_passes(records, workdir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--measure_passes={records},{workdir}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("PASSES "))[7:])


def summarise(method, num_images, known, rss, seconds, metrics):
    history = metrics["history"]
    steps = [
        r["epoch_seconds"] - r.get("refresh_seconds", 0.0) - r.get("prune_seconds", 0.0)
        for r in history
    ]
    refresh = [r["refresh_seconds"] for r in history if "refresh_seconds" in r]
    prune = [r["prune_seconds"] for r in history if "prune_seconds" in r]
    return {
        "images": num_images,
        "known": known,
        "method": method,
        "peak_rss_gb": rss / 1e9,
        "epoch_s": [round(r["epoch_seconds"], 1) for r in history],
        "steps_s": [round(s, 1) for s in steps],
        "mean_epoch_s": float(np.mean([r["epoch_seconds"] for r in history])),
        "refresh_s": [round(s, 1) for s in refresh],
        "prune_s": [round(s, 1) for s in prune],
        "train_s": metrics["train_seconds"],
        "process_s": seconds,
        "map": metrics["map"],
        "decisions": metrics["decisions"],
    }


def fit_to_full(rows, key):
    """Least-squares a + b * images, evaluated at 9M."""
    x = np.array([r["images"] for r in rows], float)
    y = np.array([r[key] for r in rows], float)
    if len(x) < 2:
        return float("nan")
    b, a = np.polyfit(x, y, 1)
    return a + b * FULL_IMAGES


def main(argv):
    del argv
    if FLAGS.measure_passes:
        measure_passes(*FLAGS.measure_passes.split(","))
        return
    tmp = FLAGS.tmp or tempfile.mkdtemp(prefix="kpartial-oi-train-")
    results = []
    truth = LatentTruth(FLAGS.classes, FEATURES)
    test_dir = os.path.join(tmp, "test")
    test_records, _, test_missed, truth_records = make_records(
        test_dir, FLAGS.test_images, truth, seed=99, truth_images=FLAGS.truth_images
    )
    validation_records = ""
    if FLAGS.validation_images:
        validation_records, *_ = make_records(
            os.path.join(tmp, "validation"), FLAGS.validation_images, truth, seed=98
        )
    for num_images in (int(n) for n in FLAGS.images):
        folder = os.path.join(tmp, f"train_{num_images}")
        started = time.perf_counter()
        records, known, missed, _ = make_records(folder, num_images, truth, seed=0)
        print(
            f"{num_images} images: data in {time.perf_counter() - started:.0f} s; "
            f"{missed:.1%} of the true positives unverified",
            flush=True,
        )
        for method in FLAGS.methods:
            workdir = os.path.join(folder, "run_" + method.replace(":", "_").replace(";", "_"))
            rss, seconds, metrics = train(
                method, records, test_records, workdir, validation_records
            )
            row = summarise(method, num_images, known, rss, seconds, metrics)
            row["full_truth_map"] = full_truth_map(workdir, truth_records)
            row["positives_unverified"] = missed
            if method == "kpartial" and FLAGS.time_passes:
                try:
                    row["passes_s"] = time_passes(records, workdir)
                except subprocess.CalledProcessError as error:
                    print(f"passes failed: {error.stderr[-2000:]}", flush=True)
            print(json.dumps(row), flush=True)
            results.append(row)
        shutil.rmtree(os.path.join(folder, "records"))
    header = (
        "images",
        "known labels",
        "method",
        "peak RSS GB",
        "epoch s (each)",
        "of which refresh / pruning s",
        "kpartial epoch / ignore epoch",
        "test mAP, verified entries",
        f"mAP on the full truth ({FLAGS.truth_images} test images)",
    )
    by_size = {}
    for row in results:
        by_size.setdefault(row["images"], {})[row["method"]] = row
    lines = []
    for row in results:
        ignore = by_size[row["images"]].get("ignore")
        ratio = row["mean_epoch_s"] / ignore["mean_epoch_s"] if ignore else float("nan")
        lines.append(
            (
                f"{row['images']:,}",
                f"{row['known']:,}",
                row["method"],
                f"{row['peak_rss_gb']:.2f}",
                " / ".join(f"{s:.1f}" for s in row["epoch_s"]),
                (" / ".join(f"{s:.1f}" for s in row["refresh_s"] + row["prune_s"]) or "-"),
                f"{ratio:.2f}x",
                f"{100 * row['map']:.2f}",
                f"{100 * row['full_truth_map']:.2f}",
            )
        )
    extrapolated = []
    for method in FLAGS.methods:
        rows = [r for r in results if r["method"] == method]
        extrapolated.append(
            f"- `{method}` at 9M images (linear fit): peak RSS {fit_to_full(rows, 'peak_rss_gb'):.1f}"
            f" GB, epoch {fit_to_full(rows, 'mean_epoch_s'):.0f} s"
        )
    title = (
        "Open Images shape, end to end (`benchmarks/openimages_train.py`; 2 CPU cores, "
        f"{FLAGS.classes} classes, {FLAGS.test_images} test images, MLP 64, batch 256, "
        f"{FLAGS.epochs} epochs; kpartial refreshes pseudo labels before epochs 2 and 3 and prunes "
        "half of the classes before epoch 3). The images come from a latent truth (correlated "
        "classes, Zipf frequencies, features that carry the truth); each verified the top ~8 "
        "classes of a simulated detector (AUC about 0.9), so "
        f"{results[0]['positives_unverified']:.1%} of the training images' true positives are "
        f"unknown entries (test: {test_missed:.1%})"
    )
    table = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(line) + " |" for line in lines]
    passes = [r for r in results if "passes_s" in r]
    table += [
        "",
        (
            "One pass over the training set with the trained kpartial network (a fresh process; "
            "the second run of each, the first traces):"
        ),
        "",
        "| images | inference s | pseudo-label refresh s (x inference) | fit_well s (x inference) |",
        "|---|---|---|---|",
    ]
    for row in passes:
        p = row["passes_s"]
        table.append(
            f"| {row['images']:,} | {p['inference']:.1f} | {p['refresh']:.1f} "
            f"({p['refresh'] / p['inference']:.2f}x) | {p['fit_well']:.1f} "
            f"({p['fit_well'] / p['inference']:.2f}x) |"
        )
    tables.write_table(FLAGS.out, table + [""] + extrapolated)
    with open(os.path.splitext(FLAGS.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    app.run(main)
