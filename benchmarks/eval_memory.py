"""Peak memory and seconds of one test-set evaluation: dense [N, C] arrays vs the stream.

A random MLP (--features inputs, --hidden units) scores a generated test set of --classes classes
with about --labels_per_example annotated labels per example (Zipf-like class frequencies, 55%
positive, held as `SparseLabels`). Each measurement runs in a fresh process and computes what a
training run reports at its end: `evaluate` (mAP, CF1/OF1, ...), the ranking metrics (P@k, nDCG@k,
PSP@k, top-3 F1) and the per-class AP of the plot.

- dense: what runs did before: `predict_probabilities` ([N, C] logits, float64 temporaries),
  `test.dense_labels()`, then `evaluate`, `ranking_metrics`, `per_class_average_precision` on the
  [N, C] arrays (the dense implementations, kept in tests/dense_reference.py).
- streaming: `evaluation.stream_scores` (batch by batch, labels looked up by id, only annotated
  entries kept), then the same metrics from `sparse_scores.SparseScores`.

Dense is skipped above --dense_max_examples (at 30k x 9.6k it needs more than the 24 GB of the
project's machine); its memory is then extrapolated from the largest measured size (linear in N).

  python benchmarks/eval_memory.py --examples=3000,6000,30000 --out=benchmarks/results/eval_memory.md
"""

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("examples", ["3000", "6000", "30000"], "Test-set sizes to measure.")
flags.DEFINE_integer("classes", 9600, "Classes.")
flags.DEFINE_float("labels_per_example", 8.0, "Mean annotated labels per test example.")
flags.DEFINE_integer("features", 32, "Input features of the random MLP.")
flags.DEFINE_integer("hidden", 64, "Hidden units of the random MLP.")
flags.DEFINE_integer("batch_size", 1024, "Evaluation batch size (what training uses).")
flags.DEFINE_integer("dense_max_examples", 6000, "Largest N at which dense is measured.")
flags.DEFINE_string("out", "benchmarks/results/eval_memory.md", "Markdown table to write.")
flags.DEFINE_string("measure", "", "Internal: run one measurement (dense|streaming|baseline).")
flags.DEFINE_integer("n", 0, "Internal: the test-set size of the measurement.")

GB = 2**30


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_test_set(num_examples, num_classes, labels_per_example, num_features, seed=0):
    """A `MultiLabelData` with random features and sparse Open Images-like annotated labels."""
    from kpartial import data
    from kpartial.sparse_labels import SparseLabels

    rng = np.random.default_rng(seed)
    per_example = np.maximum(1, rng.poisson(labels_per_example, num_examples))
    rows = np.repeat(np.arange(num_examples, dtype=np.int64), per_example)
    weights = 1.0 / np.arange(1, num_classes + 1) ** 0.8
    classes = rng.choice(num_classes, size=rows.size, p=weights / weights.sum())
    pairs = np.unique(rows * num_classes + classes)  # unique and sorted within a row
    rows, classes = pairs // num_classes, pairs % num_classes
    values = np.where(rng.random(rows.size) < 0.55, 1, -1)
    labels = SparseLabels.from_entries(rows, classes, values, num_examples, num_classes)
    features = rng.normal(size=(num_examples, num_features)).astype(np.float32)
    names = [f"class {k}" for k in range(num_classes)]
    return data.MultiLabelData(labels, names, features=features, source="eval_memory")


def measure(kind, num_examples):
    """Runs in a fresh process; prints one JSON line."""
    if kind == "baseline":
        import tensorflow as tf  # noqa: F401

        from kpartial import evaluation, metrics  # noqa: F401
        from tests import dense_reference

        print("RESULT " + json.dumps({"peak_rss": peak_rss_bytes()}))
        return
    from kpartial import evaluation, models, pipeline
    from tests import dense_reference

    test = make_test_set(num_examples, FLAGS.classes, FLAGS.labels_per_example, FLAGS.features)
    network = models.build_mlp(FLAGS.features, FLAGS.classes, (FLAGS.hidden,), 0.0, seed=0)
    dataset = pipeline.evaluation_dataset(test, FLAGS.batch_size)
    # Training positives stand-in for the propensities of PSP@k.
    positive_counts = test.labels.positives_per_class()
    before = peak_rss_bytes()
    started = time.perf_counter()
    if kind == "dense":
        probabilities = dense_reference.predict_probabilities(
            network, dataset.map(lambda batch: batch["x"])
        )
        labels = test.dense_labels()
        result = dense_reference.evaluate(labels, probabilities)
        result.update(
            dense_reference.ranking_metrics(labels, probabilities, positive_counts, num_examples)
        )
        per_class_ap = dense_reference.per_class_average_precision(labels, probabilities)
    else:
        scores = evaluation.stream_scores(
            lambda batch: network.predict_on_batch(batch["x"]), dataset, test.labels
        )
        result = scores.evaluate()
        result.update(evaluation.sparse_ranking_metrics(scores, positive_counts, num_examples))
        per_class_ap = scores.per_class_average_precision()
    result.update(
        seconds=time.perf_counter() - started,
        peak_rss=peak_rss_bytes(),
        rss_before=before,
        per_class_ap_sum=float(np.nansum(per_class_ap)),
    )
    print("RESULT " + json.dumps(result))


def run_measurement(kind, num_examples):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable,
        os.path.abspath(__file__),
        f"--measure={kind}",
        f"--n={num_examples}",
    ]
    command += [f"--{name}={getattr(FLAGS, name)}" for name in MEASUREMENT_FLAGS]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{kind} at N={num_examples} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


MEASUREMENT_FLAGS = ("classes", "labels_per_example", "features", "hidden", "batch_size")


def main(argv):
    del argv
    if FLAGS.measure:
        measure(FLAGS.measure, FLAGS.n)
        return
    baseline = run_measurement("baseline", 0)["peak_rss"]
    print(json.dumps({"baseline_peak_rss": baseline}), flush=True)
    rows = []
    for num_examples in map(int, FLAGS.examples):
        row = {"n": num_examples, "streaming": run_measurement("streaming", num_examples)}
        if num_examples <= FLAGS.dense_max_examples:
            row["dense"] = run_measurement("dense", num_examples)
        rows.append(row)
        print(json.dumps(row), flush=True)
    tables.write_table(FLAGS.out, table_lines(rows, baseline))


def table_lines(rows, baseline):
    measured = [row for row in rows if "dense" in row]
    largest = max(measured, key=lambda row: row["n"]) if measured else None
    lines = [
        "# Test-set evaluation: dense [N, C] vs streaming (2-core CPU VM)",
        "",
        (
            f"{FLAGS.classes} classes, about {FLAGS.labels_per_example:g} annotated labels per "
            f"example (SparseLabels), a random MLP {FLAGS.features} -> {FLAGS.hidden} -> "
            f"{FLAGS.classes}, batches of {FLAGS.batch_size}; evaluate + ranking metrics + "
            "per-class AP, as a run's end computes them. Peak RSS is above a process that imports "
            f"TensorFlow and kpartial ({baseline / GB:.2f} GB); seconds are the evaluation alone. "
            "`python benchmarks/eval_memory.py` regenerates this table."
        ),
        "",
        (
            "| test examples | annotated labels | dense peak RSS | dense s | streaming peak RSS | "
            "streaming s | mAP dense / streaming | P@1 dense / streaming |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        streaming, dense = row["streaming"], row.get("dense")
        if dense:
            dense_rss, dense_s = (
                f"{(dense['peak_rss'] - baseline) / GB:.2f} GB",
                f"{dense['seconds']:.1f}",
            )
            same = f"{dense['map']:.6f} / {streaming['map']:.6f}"
            p1 = f"{dense['p@1']:.6f} / {streaming['p@1']:.6f}"
        else:
            scale = row["n"] / largest["n"] if largest else float("nan")
            extrapolated = (
                (largest["dense"]["peak_rss"] - baseline) * scale if largest else float("nan")
            )
            dense_rss, dense_s = f"~{extrapolated / GB:.1f} GB (extrapolated)", "not run"
            same = f"- / {streaming['map']:.6f}"
            p1 = f"- / {streaming['p@1']:.6f}"
        lines.append(
            f"| {row['n']:,} | {streaming['annotated_entries']:,} | {dense_rss} | {dense_s} | "
            f"{(streaming['peak_rss'] - baseline) / GB:.2f} GB | {streaming['seconds']:.1f} | "
            f"{same} | {p1} |"
        )
    if measured:
        metric_names = [k for k in measured[0]["dense"] if k not in ("seconds", "peak_rss")]
        metric_names.remove("rss_before")
        gap = max(abs(r["dense"][k] - r["streaming"][k]) for r in measured for k in metric_names)
        agreement = (
            f"Where both ran, all {len(metric_names)} numbers (the metrics and the sum of the "
            f"per-class APs) agree to {gap:.1e}."
        )
        lines += ["", agreement]
    return lines


if __name__ == "__main__":
    app.run(main)
