"""kpartial vs baselines on the Mulan sets, with a full-label reference and ablations.

For each dataset: kpartial, ignore and assume_negative at known fractions 0.1 and 0.3; BCE on full
labels (known fraction 1.0); at 0.1, kpartial without pseudo labels, without the statistics
(beta = lambda = 0), without only one of the two (beta = 0; lambda = 0), and without pruning.
Every variant of one (fraction, seed) trains on the identical simulated labels. Writes `results/mulan_<dataset>.csv` and `results/mulan.md`
(test mAP in %, mean ± std over seeds, annotated test entries only).

  python benchmarks/mulan_benchmark.py --datasets=yeast,enron,bibtex,corel5k --seeds=1,2,3
"""

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["yeast", "enron", "bibtex", "corel5k"], "Mulan datasets.")
flags.DEFINE_list("seeds", ["1", "2", "3"], "Seeds.")
flags.DEFINE_list("known_fractions", ["0.1", "0.3"], "Known fractions for the main comparison.")
flags.DEFINE_integer("epochs", 40, "Epochs per run.")
flags.DEFINE_string(
    "mulan_root",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mulan"),
    "Folder of the Mulan sets.",
)
flags.DEFINE_string("out_dir", os.path.join(os.path.dirname(__file__), "results"), "Output folder.")

FILES = tables.MULAN_FILES
ABLATIONS = {
    "kpartial w/o pseudo labels": {"pseudo_start_epoch": -1},
    "kpartial w/o statistics (beta = lambda = 0)": {"loss_options": "balance=0,unknown_weight=0"},
    "kpartial w/o positive weighting (beta = 0)": {"loss_options": "balance=0"},
    "kpartial w/o unknown term (lambda = 0)": {"loss_options": "unknown_weight=0"},
    "kpartial w/o pruning": {"prune_schedule": ()},
}


def _log(name, line):
    print(f"[{name}] {line}", flush=True)


def main(argv):
    del argv
    import pandas as pd

    from kpartial import comparison
    from kpartial.config import Config

    seeds = [int(s) for s in FLAGS.seeds]
    fractions = [float(f) for f in FLAGS.known_fractions]
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    sections = []
    for name in FLAGS.datasets:
        train_file, test_file = (os.path.join(FLAGS.mulan_root, f) for f in FILES[name])
        base = Config.from_flat(
            train_data=f"mulan:{train_file}",
            test_data=f"mulan:{test_file}",
            epochs=FLAGS.epochs,
            prune_schedule=((int(FLAGS.epochs * 0.75), 0.25),),
            eval_every=FLAGS.epochs,
        )
        log = functools.partial(_log, name)
        results = pd.concat(
            [
                comparison.compare(base, comparison.BASELINE_VARIANTS, fractions, seeds, log=log),
                comparison.compare(
                    base, {"BCE, full labels": {"method": "ignore"}}, [1.0], seeds, log=log
                ),
                comparison.compare(base, ABLATIONS, [fractions[0]], seeds, log=log),
            ],
            ignore_index=True,
        )
        results.insert(0, "dataset", name)
        results.to_csv(os.path.join(FLAGS.out_dir, f"mulan_{name}.csv"), index=False)
        seconds = results["train_seconds"].sum()
        sections.append(
            f"### {name}\n\n{comparison.summary_table(results)}\n\n"
            f"({len(results)} runs, {FLAGS.epochs} epochs each, {seconds:.0f} s of training)\n"
        )
        with open(os.path.join(FLAGS.out_dir, "mulan.md"), "w") as f:
            f.write(
                "Test mAP (%), mean ± std over seeds "
                + ",".join(FLAGS.seeds)
                + "; annotated test entries only.\n\n"
                + "\n".join(sections)
            )
        print(sections[-1], flush=True)


if __name__ == "__main__":
    app.run(main)
