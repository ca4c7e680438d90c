"""Open Images-scale memory and throughput of reading and of the label pipeline.

Generates Open Images-shaped human-verified image-level labels (16-hex ImageIDs, ~8 verified
labels per image, class frequencies Zipf-like over --classes classes, 55% of verified labels
positive) at fractions of 9M images, as the published CSV files, then measures in a fresh process
per measurement:

- read: `kpartial.data.load("openimages", ..., with_images=False)` (pandas chunks -> SparseLabels):
  seconds, peak RSS above the interpreter + library baseline, bytes per known label held.
- pipeline: `kpartial.pipeline.training_dataset` over those sparse labels (labels looked up by id
  and made dense per batch of 256; a 16-float feature stands in for the image so that the label
  path is what is measured): one epoch, examples/s and peak RSS above baseline.

It also reruns the read with 10x the classes and the same number of known labels, to show that
memory follows known labels, not N x C. Writes a Markdown table and extrapolates to 9M images.

  python benchmarks/scale_benchmark.py --fractions=0.01,0.03,0.1 --out=benchmarks/results/scale.md
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tables
from absl import app, flags
from openimages_data import generate

FLAGS = flags.FLAGS
flags.DEFINE_list("fractions", ["0.01", "0.03", "0.1"], "Fractions of 9M images to generate.")
flags.DEFINE_integer("classes", 9600, "Trainable classes.")
flags.DEFINE_float("labels_per_image", 8.0, "Mean verified labels per image.")
flags.DEFINE_string("out", "benchmarks/results/scale.md", "Markdown table to write.")
flags.DEFINE_string("tmp", "", "Folder for the generated CSVs (default: a temporary folder).")
flags.DEFINE_string("measure", "", "Internal: run one measurement (read|pipeline|baseline).")
flags.DEFINE_string("folder", "", "Internal: the generated dataset folder.")

FULL_IMAGES = 9_000_000


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(kind, folder):
    """Runs in a fresh process; prints one JSON line."""
    import tensorflow as tf

    from kpartial import data, pipeline

    result = {}
    if kind == "baseline":
        result["peak_rss"] = peak_rss_bytes()
    else:
        started = time.perf_counter()
        dataset = data.load("openimages", folder, with_images=False, min_count=1)
        result["read_seconds"] = time.perf_counter() - started
        result["read_peak_rss"] = peak_rss_bytes()
        labels = dataset.labels
        result.update(
            examples=dataset.num_examples,
            classes=dataset.num_classes,
            known=labels.num_known,
            label_bytes=labels.nbytes,
        )
        if kind == "pipeline":
            features = np.zeros((dataset.num_examples, 16), np.float32)
            inputs = data.MultiLabelData(labels, dataset.label_names, features=features)
            batches = pipeline.training_dataset(inputs, labels, 256, seed=0)
            started, seen, positives = time.perf_counter(), 0, 0
            for batch, batch_labels in batches:
                seen += int(batch_labels.shape[0])
                positives += int(tf.reduce_sum(tf.cast(batch_labels > 0, tf.int32)))
            result["pipeline_seconds"] = time.perf_counter() - started
            result["pipeline_examples"] = seen
            result["pipeline_positives"] = positives
            result["pipeline_peak_rss"] = peak_rss_bytes()
    print("RESULT " + json.dumps(result))


def run_measurement(kind, folder):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--measure={kind}", f"--folder={folder}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{kind} on {folder} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv):
    del argv
    if FLAGS.measure:
        measure(FLAGS.measure, FLAGS.folder)
        return
    root = FLAGS.tmp or tempfile.mkdtemp(prefix="kpartial_scale_")
    baseline = run_measurement("baseline", "")["peak_rss"]
    rows = []
    settings = [(float(f), FLAGS.classes) for f in FLAGS.fractions]
    settings.append((float(FLAGS.fractions[0]), FLAGS.classes * 10))  # same labels, 10x classes
    for fraction, num_classes in settings:
        folder = os.path.join(root, f"f{fraction}_c{num_classes}")
        num_images = int(FULL_IMAGES * fraction)
        started = time.perf_counter()
        csv = generate(folder, num_images, num_classes, FLAGS.labels_per_image)
        generate_seconds = time.perf_counter() - started
        read = run_measurement("read", folder)
        piped = run_measurement("pipeline", folder)
        rows.append(
            {
                "fraction": fraction,
                "classes": num_classes,
                "csv_mb": os.path.getsize(csv) / 2**20,
                "generate_seconds": generate_seconds,
                **read,
                **{k: v for k, v in piped.items() if k.startswith("pipeline")},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    write_table(rows, baseline)


def write_table(rows, baseline):
    mb = 2**20
    lines = [
        "# Open Images-scale reading and label pipeline (2-core CPU VM)",
        "",
        (
            f"Generated Open Images-shaped human-verified labels ({FLAGS.labels_per_image:g} per image "
            'on average, Zipf-like class frequencies), read by `kpartial.data.load("openimages", ..., min_count=1, '
            "with_images=False)` into `SparseLabels`; the pipeline is one epoch of "
            "`kpartial.pipeline.training_dataset` (batch 256, labels looked up by id and made dense per "
            "batch). Peak RSS is above a baseline process that imports TensorFlow and kpartial "
            f"({baseline / mb:.0f} MB). `python benchmarks/scale_benchmark.py` regenerates this table."
        ),
        "",
        (
            "| images | classes | known labels | dense N x C int8 | CSV | read s | read peak RSS | "
            "label bytes held / known label | RSS of read / known label | pipeline examples/s | "
            "pipeline peak RSS |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n, c, k = r["examples"], r["classes"], r["known"]
        lines.append(
            f"| {n:,} | {c:,} | {k:,} | {n * c / 2**30:.1f} GB | {r['csv_mb']:.0f} MB | "
            f"{r['read_seconds']:.1f} | {(r['read_peak_rss'] - baseline) / mb:.0f} MB | "
            f"{r['label_bytes'] / k:.2f} | {(r['read_peak_rss'] - baseline) / k:.1f} | "
            f"{r['pipeline_examples'] / r['pipeline_seconds']:,.0f} | "
            f"{(r['pipeline_peak_rss'] - baseline) / mb:.0f} MB |"
        )
    main_rows = [r for r in rows if r["classes"] == FLAGS.classes]
    known = np.array([r["known"] for r in main_rows], float)
    rss = np.array([r["read_peak_rss"] - baseline for r in main_rows], float)
    pipe = np.array([r["pipeline_peak_rss"] - baseline for r in main_rows], float)
    full_known = FULL_IMAGES * FLAGS.labels_per_image
    lines.append("")
    if len(main_rows) >= 2:
        slope, intercept = np.polyfit(known, rss, 1)
        pslope, pintercept = np.polyfit(known, pipe, 1)
        lines += [
            (
                f"Linear fit of read peak RSS: {intercept / mb:.0f} MB + {slope:.1f} bytes x known "
                f"labels; extrapolated to 9M images x {FLAGS.labels_per_image:g} labels "
                f"({full_known / 1e6:.0f}M known): {(intercept + slope * full_known) / 2**30:.1f} GB. "
                f"Pipeline: {pintercept / mb:.0f} MB + {pslope:.1f} bytes x known labels -> "
                f"{(pintercept + pslope * full_known) / 2**30:.1f} GB. Labels held: "
                f"{main_rows[-1]['label_bytes'] / main_rows[-1]['known']:.2f} bytes per known label "
                f"-> {main_rows[-1]['label_bytes'] / main_rows[-1]['known'] * full_known / 2**30:.2f} "
                f"GB, against {FULL_IMAGES * FLAGS.classes / 2**30:.0f} GB for a dense int8 matrix."
            ),
            "",
        ]
    tables.write_table(FLAGS.out, lines)


if __name__ == "__main__":
    app.run(main)
