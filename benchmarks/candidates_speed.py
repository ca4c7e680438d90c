"""Time of a refresh's positive candidates per batch: gathered and sorted vs a top-k of the batch.

`kpartial.pseudo_label_rules.PositiveCandidates.add` ranks each row's unknown entries above the
floor. It gathers and sorts them where they are few, and takes a top-k over the whole batch where
more than `TOP_K_CANDIDATE_SHARE` of the entries lie above the floor. This script forces each way
on random logits with a given share above the floor (batch 1,024, 8 known entries per row, 16
slots) and reports the faster of three rounds of five calls; the two must agree exactly.

  python benchmarks/candidates_speed.py --out=benchmarks/results/candidates_speed.md
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results/candidates_speed.md", "Markdown table to write.")
flags.DEFINE_list("classes", ["159", "374", "1000", "9600"], "Label-space sizes.")
flags.DEFINE_list("above", ["0.0005", "0.002", "0.01", "0.03", "0.08"], "Shares above the floor.")
BATCH, KNOWN_PER_ROW, SLOTS = 1024, 8, 16


def _seconds(candidates, arguments):
    import tensorflow as tf

    add = tf.function(candidates.add, autograph=False)
    add(*arguments)  # trace
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(5):
            add(*arguments)
        rounds.append((time.perf_counter() - start) / 5)
    return min(rounds)


def main(argv):
    del argv
    import tensorflow as tf

    from kpartial import pseudo_label_rules

    rng = np.random.default_rng(0)
    lines = [
        (
            f"`PositiveCandidates.add`, batch {BATCH}, {KNOWN_PER_ROW} known entries per row, "
            f"{SLOTS} slots, CPU ({os.cpu_count()} cores), TensorFlow {tf.__version__}: ms per "
            "batch, the faster of 3 rounds of 5 calls."
        ),
        "",
        "| classes | share above the floor | gathered and sorted | top-k of the batch |",
        "|---|---|---|---|",
    ]
    for num_classes in [int(c) for c in FLAGS.classes]:
        for share in [float(s) for s in FLAGS.above]:
            logits = rng.normal(size=(BATCH, num_classes)).astype(np.float32)
            floor = float(np.quantile(logits, 1 - share))
            rows = np.repeat(np.arange(BATCH), KNOWN_PER_ROW)
            classes = np.concatenate(
                [rng.choice(num_classes, KNOWN_PER_ROW, replace=False) for _ in range(BATCH)]
            )
            arguments = (
                tf.range(BATCH),
                tf.constant(logits),
                tf.constant(np.stack([rows, classes], 1)),
            )
            seconds, results = {}, {}
            for way, forced_share in [("sorted", 1.0), ("top_k", 0.0)]:
                pseudo_label_rules.TOP_K_CANDIDATE_SHARE = forced_share
                candidates = pseudo_label_rules.PositiveCandidates(BATCH, SLOTS, floor)
                seconds[way] = _seconds(candidates, arguments)
                results[way] = (candidates.classes.numpy(), int(candidates.over_cap.numpy()))
            if not (
                np.array_equal(results["sorted"][0], results["top_k"][0])
                and results["sorted"][1] == results["top_k"][1]
            ):
                raise AssertionError(f"the two ways disagree at C={num_classes}, share {share}")
            line = (
                f"| {num_classes} | {share:.2%} | {1e3 * seconds['sorted']:.1f} | "
                f"{1e3 * seconds['top_k']:.1f} |"
            )
            print(line, flush=True)
            lines.append(line)
    tables.write_table(FLAGS.out, lines)


if __name__ == "__main__":
    app.run(main)
